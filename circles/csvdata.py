"""The one reader of outside point files: CSV with a header naming x1, x2 (and label), checked line by line."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from circles.errors import ConfigError

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _csv_rows(path: Path, field: str, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """The data rows of a CSV file whose header names ``columns`` (others are ignored), with their line numbers;
    a UTF-8 byte-order mark and Windows line ends are fine. Errors name the config option ``field``."""
    names = " and ".join([", ".join(columns[:-1]), columns[-1]]) if len(columns) > 1 else columns[0]
    if not path.is_file():
        raise ConfigError(field, f"an existing CSV file with {','.join(columns)} columns", str(path))
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        if len(header) == 1 and ";" in header[0]:
            raise ConfigError(field, "a CSV file separated by commas", str(path),
                              f"Its header is separated by semicolons ({header[0]!r}); save it with commas.")
        missing = [c for c in columns if c not in header]
        if missing:
            if not header:
                detail = "The file is empty."
            elif all(_is_number(h) for h in header[:2]):
                detail = (f"It has no header: its first line is data ({','.join(header)}). Add the line "
                          f"{','.join(columns)} first.")
            else:
                detail = f"Its header has {header} and lacks {missing}."
            raise ConfigError(field, f"a CSV file whose header names the columns {names}", str(path), detail)
        yield from enumerate(reader, start=2)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _point(row: dict[str, str], line: int, field: str, path: Path) -> tuple[float, float]:
    """A row's (x1, x2), checked to be numbers the model can take."""
    where = f"Line {line} has x1={row['x1']!r}, x2={row['x2']!r}."
    try:
        point = (float(row["x1"]), float(row["x2"]))
    except (TypeError, ValueError):
        raise ConfigError(field, "a CSV file of numbers in the x1 and x2 columns", str(path), where) from None
    if not all(math.isfinite(v) for v in point):
        raise ConfigError(field, "a CSV file of finite numbers (no nan or inf)", str(path), where)
    if not all(abs(v) <= FLOAT32_MAX for v in point):
        raise ConfigError(field, f"a CSV file of numbers the model can take (float32: at most {FLOAT32_MAX:.3g} "
                          "in size)", str(path), where)
    return point


def read_points_csv(path: str | Path, field: str = "predict_path") -> torch.Tensor:
    """Points to predict on from a CSV file with ``x1`` and ``x2`` columns (others are ignored)."""
    path = Path(path)
    rows = [_point(row, line, field, path) for line, row in _csv_rows(path, field, ("x1", "x2"))]
    if not rows:
        raise ConfigError(field, "a CSV file with at least one point", str(path), "It has no data rows.")
    return torch.tensor(rows, dtype=torch.float32)


def read_labelled_csv(path: str | Path, field: str = "path") -> tuple[torch.Tensor, list[str]]:
    """Labelled points from a CSV file with ``x1``, ``x2`` and ``label`` columns (others are ignored): the points
    ``(N, 2)`` and each point's label as written."""
    path = Path(path)
    points, labels = [], []
    for line, row in _csv_rows(path, field, ("x1", "x2", "label")):
        points.append(_point(row, line, field, path))
        label = (row["label"] or "").strip()
        if not label:
            raise ConfigError(field, "a CSV file with a label on every line", str(path), f"Line {line} has none.")
        labels.append(label)
    if not points:
        raise ConfigError(field, "a CSV file with labelled points", str(path), "It has no data rows.")
    return torch.tensor(points, dtype=torch.float32), labels


def encode_labels(labels: Sequence[str], field: str, path: str | Path,
                  known: tuple[int, list[str] | None] | None = None) -> tuple[torch.Tensor, int, list[str] | None]:
    """Class indices (as floats) for a file's labels, the number of classes and their names. Integer labels are
    classes 0..C-1, each present, and have no names; other labels are names, classes in sorted order. ``known`` is the
    training file's (classes, names), so that a test file takes its classes: it may lack some, not add any."""
    numeric = [label.lstrip("-").isdigit() for label in labels]
    if known is None and any(numeric) and not all(numeric):
        number = next(label for label, n in zip(labels, numeric, strict=True) if n)
        name = next(label for label, n in zip(labels, numeric, strict=True) if not n)
        raise ConfigError(field, "a CSV file whose labels are all class names or all integers 0..C-1", str(path),
                          f"It mixes numbers ({number!r}) with names ({name!r}).")
    if known is not None:
        classes, names = known
        index = {name: k for k, name in enumerate(names)} if names else {str(k): k for k in range(classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ConfigError(field, f"a CSV file of the training data's classes {list(index)}", str(path),
                              f"It has other labels: {unknown[:5]}.")
        return torch.tensor([index[label] for label in labels], dtype=torch.float32), classes, names
    if len(set(labels)) < 2:
        raise ConfigError(field, "a CSV file with at least two classes", str(path),
                          f"Every point has the label {labels[0]!r}.")
    if all(numeric):
        values = sorted({int(label) for label in labels})
        if values != list(range(len(values))):
            raise ConfigError(field, "a CSV file whose integer labels are 0..C-1, each present", str(path),
                              f"Its labels are {values[:12]}{' ...' if len(values) > 12 else ''}.")
        classes, names, y = len(values), None, [int(label) for label in labels]
    else:
        names = sorted(set(labels))
        index = {name: k for k, name in enumerate(names)}
        classes, y = len(names), [index[label] for label in labels]
    return torch.tensor(y, dtype=torch.float32), classes, names
