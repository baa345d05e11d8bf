"""Your own points: the one reader of outside point files (CSV with a header naming x1, x2 and
label, checked line by line and bounded in size), and a labelled file split into training,
validation and test parts."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from circles.data.batches import Points
from circles.errors import ConfigError, check
from circles.ranges import MAX_CLASSES, MAX_POINTS

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


MAX_FILE_BYTES = 1 << 30  # 1 GiB: beyond it a point file is not what this project reads


MAX_FIELD = 1000  # characters in one field: a number or a class name is far shorter


NUMBER = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE | re.ASCII
)


INTEGER = re.compile(r"-?\d+", re.ASCII)


BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    # UTF-32 LE's mark begins like UTF-16 LE's
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _refuse(field: str, allowed: str, path: Path, detail: str) -> ConfigError:
    return ConfigError(field, allowed, str(path), detail)


def read_text(path: Path, field: str, what: str) -> str:
    """The file's text: UTF-8 with or without a byte-order mark, or UTF-16/UTF-32 with one;
    ``what`` says what the file should be, for the error of a missing one. Refuses another
    encoding naming the line and the byte."""
    if not path.is_file():
        raise _refuse(field, f"an existing {what}", path, "")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _refuse(
            field,
            f"a CSV file of at most {MAX_FILE_BYTES >> 20} MiB",
            path,
            f"It has {size / (1 << 20):,.0f} MiB.",
        )
    data = path.read_bytes()
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), "utf-8")
    allowed = "a CSV file in UTF-8 (or UTF-16/32 with a byte-order mark)"
    if encoding == "utf-8" and b"\x00" in data[:1000]:
        raise _refuse(
            field,
            allowed,
            path,
            "It holds NUL bytes: UTF-16 without a byte-order mark? Save it as UTF-8.",
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _refuse(
            field,
            allowed,
            path,
            f"Line {line} has the byte 0x{data[err.start]:02x}, which is not "
            f"{encoding.upper()}; save it as UTF-8.",
        ) from None


def _rows(path: Path, field: str, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """The data rows of a CSV file whose header names ``columns`` (others are ignored) as those
    columns' fields, with the line each ends on; blank lines are skipped. Errors name the config
    option ``field``."""
    names = " and ".join([", ".join(columns[:-1]), columns[-1]]) if len(columns) > 1 else columns[0]
    reader = csv.reader(
        io.StringIO(
            read_text(path, field, f"CSV file with {','.join(columns)} columns"), newline=""
        )
    )
    try:
        header = [h.strip() for h in next(reader, [])]
        _check_header(header, columns, names, field, path)
        where = [header.index(c) for c in columns]
        for row in reader:
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) < len(header):
                raise _refuse(
                    field,
                    f"a CSV file with the header's {len(header)} fields on every line",
                    path,
                    f"Line {reader.line_num} has {len(row)}.",
                )
            if max(len(f) for f in row) > MAX_FIELD:
                raise _refuse(
                    field,
                    f"a CSV file of fields of at most {MAX_FIELD} characters",
                    path,
                    f"Line {reader.line_num} has one of {max(len(f) for f in row):,}.",
                )
            yield reader.line_num, [row[i].strip() for i in where]
    except csv.Error as err:  # a field beyond the csv module's own limit (131,072), a stray quote
        if "field larger than field limit" in str(err):
            raise _refuse(
                field,
                f"a CSV file of fields of at most {MAX_FIELD} characters",
                path,
                f"Line {reader.line_num} has one of over {csv.field_size_limit():,}.",
            ) from None
        raise _refuse(field, "a CSV file", path, f"Line {reader.line_num}: {err}.") from None


def _check_header(
    header: list[str], columns: tuple[str, ...], names: str, field: str, path: Path
) -> None:
    if len(header) == 1 and ";" in header[0]:
        raise _refuse(
            field,
            "a CSV file separated by commas",
            path,
            f"Its header is separated by semicolons ({header[0][:80]!r}); save it with commas.",
        )
    twice = sorted({c for c in columns if header.count(c) > 1})
    if twice:
        raise _refuse(
            field,
            f"a CSV file whose header names each of {names} once",
            path,
            f"Its header has {', '.join(twice)} {max(header.count(c) for c in twice)} times.",
        )
    missing = [c for c in columns if c not in header]
    if missing:
        if not header:
            detail = "The file is empty."
        elif all(NUMBER.fullmatch(h) for h in header[:2]):
            detail = (
                f"It has no header: its first line is data ({','.join(header)[:80]}). Add the line "
                f"{','.join(columns)} first."
            )
        else:
            detail = f"Its header has {[h[:40] for h in header[:12]]} and lacks {missing}."
        raise _refuse(field, f"a CSV file whose header names the columns {names}", path, detail)


def _number(text: str, line: int, name: str, field: str, path: Path) -> float:
    """A coordinate written as a plain decimal number (``1_000``, other digits and hex are
    refused)."""
    if not NUMBER.fullmatch(text):
        raise _refuse(
            field,
            "a CSV file of numbers in the x1 and x2 columns",
            path,
            f"Line {line} has {name}={text!r}.",
        )
    value = float(text)
    if not math.isfinite(value):
        raise _refuse(
            field,
            "a CSV file of finite numbers (no nan or inf)",
            path,
            f"Line {line} has {name}={text!r}.",
        )
    if abs(value) > FLOAT32_MAX:
        raise _refuse(
            field,
            "a CSV file of numbers the model can take "
            f"(float32: at most {FLOAT32_MAX:.3g} in size)",
            path,
            f"Line {line} has {name}={text!r}.",
        )
    return value


def _read(path: Path, field: str, labelled: bool) -> tuple[torch.Tensor, list[str]]:
    columns = ("x1", "x2", "label") if labelled else ("x1", "x2")
    x1 = array("d")
    x2 = array("d")
    labels = []
    seen = dict[str, str]()
    for line, fields in _rows(path, field, columns):
        if len(x1) == MAX_POINTS:
            raise _refuse(
                field,
                f"a CSV file of at most {MAX_POINTS:,} points",
                path,
                f"Line {line} is one more.",
            )
        x1.append(_number(fields[0], line, "x1", field, path))
        x2.append(_number(fields[1], line, "x2", field, path))
        if labelled:
            if not fields[2]:
                raise _refuse(
                    field, "a CSV file with a label on every line", path, f"Line {line} has none."
                )
            labels.append(seen.setdefault(fields[2], fields[2]))
    if not x1:
        raise _refuse(
            field,
            f"a CSV file with {'labelled points' if labelled else 'at least one point'}",
            path,
            "It has no data rows.",
        )
    return torch.from_numpy(np.stack([np.frombuffer(x1), np.frombuffer(x2)], axis=1)), labels


def check_file_features(
    features: Sequence[str], x: torch.Tensor, field: str, path: str | Path, labelled: bool
) -> None:
    """Refuse a file (``x`` in its lines' order) with points whose ``features`` leave float32's
    range (``x1_sq`` of 1e20 is inf), naming the line of the first of them."""
    from circles.features import nonfinite_rows

    bad = nonfinite_rows(features, x)
    if not len(bad):
        return
    i = int(bad[0])
    columns = ("x1", "x2", "label") if labelled else ("x1", "x2")
    line = next(n for k, (n, _) in enumerate(_rows(Path(path), field, columns)) if k == i)
    raise _refuse(
        field,
        "a CSV file of points whose features are finite float32 numbers",
        Path(path),
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
    x, labels = _read(Path(path), field, labelled=True)
    return x.float(), labels


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
    path = Path(path)
    distinct = sorted(set(labels))
    integers = [label for label in distinct if INTEGER.fullmatch(label)]
    if known is not None:
        classes, names = known
        index = (
            {name: k for k, name in enumerate(names)}
            if names
            else {label: int(label) for label in integers if 0 <= int(label) < classes}
        )
        unknown = [label for label in distinct if label not in index]
        if unknown:
            allowed = names or [str(k) for k in range(classes)]
            raise _refuse(
                field,
                f"a CSV file of the training data's classes {allowed}",
                path,
                f"It has other labels: {unknown[:5]}.{_not_integers(unknown, names)}",
            )
        return torch.tensor([index[label] for label in labels], dtype=torch.float32), classes, names
    numbers = [label for label in distinct if NUMBER.fullmatch(label) and label not in integers]
    if integers and numbers:
        raise _refuse(
            field,
            "a CSV file whose labels are integers 0..C-1 (or all class names)",
            path,
            f"It has {numbers[0]!r}, a number but not an integer.{_not_integers(numbers, None)}",
        )
    if integers and len(integers) < len(distinct):
        name = next(label for label in distinct if label not in integers)
        raise _refuse(
            field,
            "a CSV file whose labels are all class names or all integers 0..C-1",
            path,
            f"It mixes numbers ({integers[0]!r}) with names ({name!r}).",
        )
    values = sorted({int(label) for label in integers})
    if len(distinct) < 2 or (integers and len(values) < 2):
        raise _refuse(
            field,
            "a CSV file with at least two classes",
            path,
            f"Every point has the label {distinct[0]!r}.",
        )
    if integers and values != list(range(len(values))):
        raise _refuse(
            field,
            "a CSV file whose integer labels are 0..C-1, each present",
            path,
            f"Its labels are {values[:12]}{' ...' if len(values) > 12 else ''}.",
        )
    index = (
        {label: int(label) for label in integers}
        if integers
        else {n: k for k, n in enumerate(distinct)}
    )
    classes, names = (len(values), None) if integers else (len(distinct), distinct)
    if classes > MAX_CLASSES:
        raise _refuse(
            field, f"a CSV file of at most {MAX_CLASSES} classes", path, f"It has {classes}."
        )
    return torch.tensor([index[label] for label in labels], dtype=torch.float32), classes, names


def _not_integers(labels: Sequence[str], names: list[str] | None) -> str:
    """A hint for labels such as ``1.0`` where the classes are integers: write them as integers."""
    whole = [label for label in labels if NUMBER.fullmatch(label) and float(label).is_integer()]
    if names or not whole:
        return ""
    return f" Write {whole[0]!r} as {int(float(whole[0]))}: integer labels name the classes."


def _rows_of(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Labelled points as rows of their float32 bits ``(N, 3)``: equal rows for equal points and
    labels."""
    return np.concatenate(
        [x.numpy().astype("<f4").view("<i4"), y.numpy().astype("<f4").view("<i4")[:, None]], axis=1
    )


def content_order(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The order that sorts labelled points by their content (x1, x2, label): a file's rows in
    any order come out the same, so whatever is split from them does not depend on how the file
    was ordered."""
    rows = _rows_of(x, y)
    return torch.from_numpy(np.lexsort(rows.T[::-1]).astype(np.int64))


def fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A digest of labelled points as a set: the same for the same points and labels in any
    order."""
    rows = _rows_of(x, y)
    return hashlib.sha256(rows[np.lexsort(rows.T[::-1])].tobytes()).hexdigest()[:16]


def split_file(
    x: torch.Tensor, y: torch.Tensor, fractions: Sequence[float], seed: int, path: str | Path
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A file's points split into parts of the given ``fractions`` (training first, it takes the
    rest), seeded and stratified: every part has each class in the file's proportions, as near as
    whole points allow."""
    from sklearn.model_selection import train_test_split

    counts = torch.bincount(y.long()).tolist()
    sizes = [len(y) - sum(round(f * len(y)) for f in fractions[1:])] + [
        round(f * len(y)) for f in fractions[1:]
    ]
    need = len(fractions)
    if min(counts) < need or min(sizes) < len(counts):
        raise ConfigError(
            "path",
            "a CSV file with enough points for the split",
            str(path),
            f"It has {len(y)} points, per class {counts}; split "
            f"{' / '.join(f'{f:g}' for f in fractions)}"
            " "
            f"(training / validation{' / test' if need > 2 else ''}) needs at least {need} points "
            "of "
            f"each class and {len(counts)} points (one per class) in each part. Add points, or "
            "change "
            "val_fraction or test_fraction.",
        )
    parts: list[Points] = []
    rest_x = x
    rest_y = y
    for size in sizes[:0:-1]:  # the last part first; training keeps what is left
        try:
            rest_x, part_x, rest_y, part_y = train_test_split(
                rest_x, rest_y, test_size=size, random_state=seed, stratify=rest_y
            )
        except ValueError as err:
            raise ConfigError(
                "path",
                "a CSV file with enough points of each class for the split",
                str(path),
                f"{err}",
            ) from None
        parts.insert(0, (part_x, part_y))
    return [(rest_x, rest_y), *parts]


@dataclass
class PointFile:
    """Your own labelled points: the settings (checked when made) and the file read and split,
    with a ``test_path`` file as the test points or else ``test_fraction`` of ``path`` held out."""

    path: str
    test_path: str | None
    test_fraction: float
    val_fraction: float
    seed: int
    classes: int | None
    features: Sequence[str] = ("x1", "x2")  # what the network sees of each point
    num_classes: int = field(init=False)
    class_names: list[str] | None = field(init=False)
    parts: list[Points] = field(init=False)
    # per file setting: what trained (see :meth:`record_of`)
    record: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        holds_out = self.test_path is None
        check(
            0 < self.test_fraction < 1
            and (self.val_fraction + self.test_fraction < 1 or not holds_out),
            "test_fraction",
            f"strictly between 0 and 1 - val_fraction ({1 - self.val_fraction:g})",
            self.test_fraction,
        )
        x, labels = read_labelled_csv(self.path, "path")
        check_file_features(self.features, x, "path", self.path, labelled=True)
        y, self.num_classes, self.class_names = encode_labels(labels, "path", self.path)
        check(
            self.classes in (None, self.num_classes),
            "classes",
            f"null or {self.num_classes} (the classes in path)",
            self.classes,
        )
        order = content_order(x, y)  # the split follows the points, not the order of the lines
        x = x[order]
        y = y[order]
        fractions = [1 - self.val_fraction, self.val_fraction] + (
            [self.test_fraction] if holds_out else []
        )
        fractions[0] -= sum(fractions[2:])
        self.parts = split_file(x, y, fractions, self.seed, self.path)
        self.record = {"path": self.record_of(self.path, x, y)}
        if self.test_path is not None:
            test_x, test_labels = read_labelled_csv(self.test_path, "test_path")
            check_file_features(self.features, test_x, "test_path", self.test_path, labelled=True)
            known = (self.num_classes, self.class_names)
            test_y = encode_labels(test_labels, "test_path", self.test_path, known=known)[0]
            self.parts.append((test_x, test_y))
            self.record["test_path"] = self.record_of(self.test_path, test_x, test_y)
        self.record["path"]["held_out"] = fingerprint(*self.parts[2])

    @staticmethod
    def record_of(path: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """What a checkpoint keeps of a file it was trained with: where it is (resolved, so
        ``./a.csv`` and ``a.csv`` are one file, whatever the working directory later) and what it
        held (:func:`fingerprint`, points)."""
        return {
            "resolved": str(Path(path).resolve()),
            "fingerprint": fingerprint(x, y),
            "points": len(y),
        }

    def check_trained_on(self, state: dict[str, Any]) -> None:
        """Refuse this file for a network trained on other classes (``state``: the data state a
        checkpoint holds), or if it is a file the network was trained with (the same resolved
        path) whose content has changed since: its split would hold other points out. Another
        file altogether is the user's choice (the CLI notes it for test, refuses it for a resumed
        fit: :func:`circles.checkpoints.resume_conflicts`)."""
        names = state.get("class_names")
        classes = state.get("num_classes", self.num_classes)
        if classes != self.num_classes or names != self.class_names:
            raise ConfigError(
                "path",
                f"a file with the classes the network was trained on: {names or 'unnamed'} "
                f"({classes} classes)",
                self.path,
                f"Its classes are {self.class_names or 'unnamed'} ({self.num_classes}).",
            )
        for key, was in (state.get("files") or {}).items():
            now = self.record.get(key)
            if (
                now is None
                or now["resolved"] != was.get("resolved")
                or now["fingerprint"] == was.get("fingerprint")
            ):
                continue
            raise ConfigError(
                key,
                "the file the checkpoint was trained on, unchanged",
                getattr(self, key),
                f"{now['resolved']} has changed since ({was.get('points')} points then, "
                f"{now['points']} "
                "now, other content): its held-out points would not be the ones held out in "
                "training. "
                "Restore the file, or give the points to test with --data.test_path.",
            )

    def class_legend(self) -> tuple[str, ...]:
        return (
            tuple(self.class_names)
            if self.class_names
            else tuple(f"class {k}" for k in range(self.num_classes))
        )

    def probability_label(self) -> str:
        return (
            f"P({self.class_names[1]})"
            if self.class_names and self.num_classes == 2
            else "P(class 1)"
        )

    def bayes_accuracy(self) -> float | None:
        return None  # the distribution behind a file is unknown

    def describe(self, sizes: str) -> str:
        classes = ", ".join(self.class_names) if self.class_names else f"0..{self.num_classes - 1}"
        test_x = self.parts[2][0]
        test = (
            f"test: {self.test_path} ({len(test_x)} points)"
            if self.test_path
            else f"test: {len(test_x)} points held out of it"
        )
        return (
            f"{self.path} ({self.num_classes} classes: {classes}): {sizes} points (stratified "
            "split, seed "
            f"{self.seed}); {test}"
        )
