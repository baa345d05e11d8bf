"""The one reader of outside point files (CSV with a header naming x1, x2 and label, checked line
by line and bounded in size) and of their labels as classes."""

from __future__ import annotations

import codecs
import csv
import io
import re
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from circles.errors import ConfigError, check
from circles.features import nonfinite_rows
from circles.ranges import MAX_CLASSES, MAX_POINTS

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


MAX_FILE_BYTES = 1 << 30  # 1 GiB: beyond it a point file is not what this project reads


MAX_FIELD = 1000  # characters in one field: a number or a class name is far shorter


NUMBER = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE | re.ASCII
)


BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    # UTF-32 LE's mark begins like UTF-16 LE's
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _rows(path: Path, field: str, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """The data rows of a CSV file whose header names ``columns`` (others are ignored) as those
    columns' fields, with the line each ends on; blank lines are skipped. The file is UTF-8 with
    or without a byte-order mark, or UTF-16/UTF-32 with one: another encoding is refused naming
    the line and the byte. Errors name the config option ``field``."""
    check(
        path.is_file(), field, f"an existing CSV file with {','.join(columns)} columns", str(path)
    )
    size = path.stat().st_size
    check(
        size <= MAX_FILE_BYTES,
        field,
        f"a CSV file of at most {MAX_FILE_BYTES >> 20} MiB",
        str(path),
        f"It has {size / (1 << 20):,.0f} MiB.",
    )
    data = path.read_bytes()
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), "utf-8")
    allowed = "a CSV file in UTF-8 (or UTF-16/32 with a byte-order mark)"
    check(
        encoding != "utf-8" or b"\x00" not in data[:1000],
        field,
        allowed,
        str(path),
        "It holds NUL bytes: UTF-16 without a byte-order mark? Save it as UTF-8.",
    )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            field,
            allowed,
            str(path),
            f"Line {line} has the byte 0x{data[err.start]:02x}, which is not {encoding.upper()}; "
            "save it as UTF-8.",
        ) from None
    names = f"{', '.join(columns[:-1])} and {columns[-1]}"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        check(
            len(header) != 1 or ";" not in header[0],
            field,
            "a CSV file separated by commas",
            str(path),
            f"Its header is separated by semicolons ({''.join(header)[:80]!r}); save it with "
            "commas.",
        )
        twice = sorted({c for c in columns if header.count(c) > 1})
        check(
            not twice,
            field,
            f"a CSV file whose header names each of {names} once",
            str(path),
            f"Its header has {', '.join(twice)} {max(map(header.count, columns))} times.",
        )
        missing = [c for c in columns if c not in header]
        check(
            not missing,
            field,
            f"a CSV file whose header names the columns {names}",
            str(path),
            "The file is empty."
            if not header
            else f"It has no header: its first line is data ({','.join(header)[:80]}). Add the "
            f"line {','.join(columns)} first."
            if all(NUMBER.fullmatch(h) for h in header[:2])
            else f"Its header has {[h[:40] for h in header[:12]]} and lacks {missing}.",
        )
        where = [header.index(c) for c in columns]
        for row in reader:
            if not any(f.strip() for f in row):
                continue
            if len(row) < len(header):
                raise ConfigError(
                    field,
                    f"a CSV file with the header's {len(header)} fields on every line",
                    str(path),
                    f"Line {reader.line_num} has {len(row)}.",
                )
            if max(map(len, row)) > MAX_FIELD:
                raise ConfigError(
                    field,
                    f"a CSV file of fields of at most {MAX_FIELD} characters",
                    str(path),
                    f"Line {reader.line_num} has one of {max(map(len, row)):,}.",
                )
            yield reader.line_num, [row[i].strip() for i in where]
    except csv.Error as err:  # a field beyond the csv module's own limit (131,072)
        raise ConfigError(
            field,
            f"a CSV file of fields of at most {MAX_FIELD} characters"
            if "field larger than field limit" in str(err)
            else "a CSV file",
            str(path),
            f"Line {reader.line_num} has one of over {csv.field_size_limit():,}."
            if "field larger than field limit" in str(err)
            else f"Line {reader.line_num}: {err}.",
        ) from None


def _read(path: Path, field: str, labelled: bool) -> tuple[torch.Tensor, list[str]]:
    """A file's points ``(N, 2)``, float32 if ``labelled`` (as the data trains) else float64, and
    with ``labelled`` each point's label as written. Coordinates are plain decimal numbers
    (``1_000``, other digits and hex are refused) that float32 holds."""
    points = array("d")
    labels: list[str] = []
    seen: dict[str, str] = {}  # one string for each label, however many points have it
    for count, (line, fields) in enumerate(
        _rows(path, field, ("x1", "x2", "label")[: 2 + labelled])
    ):
        if count == MAX_POINTS:
            raise ConfigError(
                field,
                f"a CSV file of at most {MAX_POINTS:,} points",
                str(path),
                f"Line {line} is one more.",
            )
        for name, text in (("x1", fields[0]), ("x2", fields[1])):
            value = float(text) if NUMBER.fullmatch(text) else None
            if value is None or not abs(value) <= FLOAT32_MAX:
                raise ConfigError(
                    field,
                    "a CSV file of numbers in the x1 and x2 columns"
                    if value is None
                    else "a CSV file of finite numbers (no nan or inf)"
                    if not np.isfinite(value)
                    else "a CSV file of numbers the model can take "
                    f"(float32: at most {FLOAT32_MAX:.3g} in size)",
                    str(path),
                    f"Line {line} has {name}={text!r}.",
                )
            points.append(value)
        if labelled:
            if not fields[2]:
                raise ConfigError(
                    field,
                    "a CSV file with a label on every line",
                    str(path),
                    f"Line {line} has none.",
                )
            labels.append(seen.setdefault(fields[2], fields[2]))
    check(
        len(points) > 0,
        field,
        f"a CSV file with {'labelled points' if labelled else 'at least one point'}",
        str(path),
        "It has no data rows.",
    )
    x = np.array(points, dtype=np.float32 if labelled else np.float64).reshape(-1, 2)
    return torch.from_numpy(x), labels


def check_file_features(
    features: Sequence[str], x: torch.Tensor, field: str, path: str | Path, labelled: bool
) -> None:
    """Refuse a file (``x`` in its lines' order) with points whose ``features`` leave float32's
    range (``x1_sq`` of 1e20 is inf), naming the line of the first of them."""
    bad = nonfinite_rows(features, x)
    if len(bad):
        i = int(bad[0])
        columns = ("x1", "x2", "label")[: 2 + labelled]
        line = next(n for k, (n, _) in enumerate(_rows(Path(path), field, columns)) if k == i)
        raise ConfigError(
            field,
            "a CSV file of points whose features are finite float32 numbers",
            str(Path(path)),
            f"{len(bad):,} of its {len(x):,} points are not, the first on line {line}: "
            f"({float(x[i, 0]):g}, {float(x[i, 1]):g}) with features {list(features)}.",
        )


def read_points_csv(path: str | Path, field: str = "predict_path") -> torch.Tensor:
    """Points to predict on from a CSV file with ``x1`` and ``x2`` columns (others are ignored),
    as float64 numbers: ``predictions.csv`` writes each back as the number it read (the network
    takes them in its own dtype)."""
    return _read(Path(path), field, labelled=False)[0]


def read_labelled_csv(path: str | Path, field: str = "path") -> tuple[torch.Tensor, list[str]]:
    """Labelled points from a CSV file with ``x1``, ``x2`` and ``label`` columns (others are
    ignored): the points ``(N, 2)``, float32 as the data trains, and each point's label as
    written."""
    return _read(Path(path), field, labelled=True)


def encode_labels(
    labels: Sequence[str],
    field: str,
    path: str | Path,
    known: tuple[int, list[str] | None] | None = None,
) -> tuple[torch.Tensor, int, list[str] | None]:
    """Class indices (as floats) for a file's labels, the number of classes and their names.
    Integer labels are classes 0..C-1, each present, and have no names (``01`` is class 1); other
    labels are names, classes in sorted order. ``known`` is the training file's (classes, names),
    so that a test file takes its classes: it may lack some, not add any."""
    distinct = sorted(set(labels))
    integers = [label for label in distinct if re.fullmatch(r"-?\d+", label, re.ASCII)]
    if known is None:
        others = [label for label in distinct if label not in integers]
        numbers = [label for label in others if NUMBER.fullmatch(label)]
        if integers and others:
            raise ConfigError(
                field,
                "a CSV file whose labels are integers 0..C-1 (or all class names)"
                if numbers
                else "a CSV file whose labels are all class names or all integers 0..C-1",
                str(Path(path)),
                f"It has {numbers[0]!r}, a number but not an integer.{_not_integers(numbers, None)}"
                if numbers
                else f"It mixes numbers ({integers[0]!r}) with names ({others[0]!r}).",
            )
        values = sorted({int(label) for label in integers})
        classes = len(values) if integers else len(distinct)
        check(
            classes >= 2,
            field,
            "a CSV file with at least two classes",
            str(Path(path)),
            f"Every point has the label {distinct[0]!r}.",
        )
        check(
            values == list(range(len(values))),
            field,
            "a CSV file whose integer labels are 0..C-1, each present",
            str(Path(path)),
            f"Its labels are {values[:12]}{' ...' if len(values) > 12 else ''}.",
        )
        check(
            classes <= MAX_CLASSES,
            field,
            f"a CSV file of at most {MAX_CLASSES} classes",
            str(Path(path)),
            f"It has {classes}.",
        )
        known = (classes, None if integers else distinct)
    classes, names = known
    index = (
        {name: k for k, name in enumerate(names)}
        if names
        else {label: int(label) for label in integers if 0 <= int(label) < classes}
    )
    unknown = [label for label in distinct if label not in index]
    check(
        not unknown,
        field,
        f"a CSV file of the training data's classes {names or [str(k) for k in range(classes)]}",
        str(Path(path)),
        f"It has other labels: {unknown[:5]}.{_not_integers(unknown, names)}",
    )
    return torch.tensor([index[label] for label in labels], dtype=torch.float32), classes, names


def _not_integers(labels: Sequence[str], names: list[str] | None) -> str:
    """A hint for labels such as ``1.0`` where the classes are integers: write them as integers."""
    whole = [label for label in labels if NUMBER.fullmatch(label) and float(label).is_integer()]
    return (
        f" Write {whole[0]!r} as {int(float(whole[0]))}: integer labels name the classes."
        if whole and not names
        else ""
    )
