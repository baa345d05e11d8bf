"""Your own labelled points, read from a file and split into training, validation and test
parts, seeded and stratified, with what a checkpoint keeps of each file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from circles.data.files import check_file_features, encode_labels, read_labelled_csv
from circles.errors import ConfigError, check


def _content_order(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts labelled points by their content (x1, x2, label), so that a file's
    rows in any order come out the same, and the points as rows of their float32 bits ``(N, 3)``:
    equal rows for equal points and labels."""
    rows = np.column_stack([x.numpy(), y.numpy()]).astype("<f4").view("<i4")
    return np.lexsort(rows.T[::-1]).astype(np.int64), rows


def fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A digest of labelled points as a set: the same for the same points and labels in any
    order."""
    order, rows = _content_order(x, y)
    return hashlib.sha256(rows[order].tobytes()).hexdigest()[:16]


def split_file(
    x: torch.Tensor, y: torch.Tensor, fractions: Sequence[float], seed: int, path: str | Path
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A file's points split into parts of the given ``fractions`` (training first, it takes the
    rest), seeded and stratified: every part has each class in the file's proportions, as near as
    whole points allow."""
    from sklearn.model_selection import train_test_split

    counts = torch.bincount(y.long()).tolist()
    sizes = [round(f * len(y)) for f in fractions[1:]]
    check(
        min(counts) >= len(fractions) and min(len(y) - sum(sizes), *sizes) >= len(counts),
        "path",
        "a CSV file with enough points for the split",
        str(path),
        f"It has {len(y)} points, per class {counts}; split "
        f"{' / '.join(f'{f:g}' for f in fractions)} (training / validation"
        f"{' / test' if len(fractions) > 2 else ''}) needs at least {len(fractions)} points of "
        "each class and "
        f"{len(counts)} points (one per class) in each part. Add points, or change val_fraction "
        "or test_fraction.",
    )
    parts = [(x, y)]
    for size in reversed(sizes):  # the last part first; training keeps what is left
        try:
            rest_x, part_x, rest_y, part_y = train_test_split(
                *parts[0], test_size=size, random_state=seed, stratify=parts[0][1]
            )
        except ValueError as err:
            raise ConfigError(
                "path",
                "a CSV file with enough points of each class for the split",
                str(path),
                f"{err}",
            ) from None
        parts[:1] = [(rest_x, rest_y), (part_x, part_y)]
    return parts


@dataclass
class PointFile:
    """Your own labelled points: the settings (checked when made) and the file read and split,
    with a ``test_path`` file as the test points or else ``test_fraction`` of ``path`` held out.

    Made, it has the file's ``num_classes`` and ``class_names`` (None for integer labels), its
    ``parts`` (training, validation and test points) and, per file setting, the ``record`` of
    what trained (see :meth:`record_of`)."""

    path: str
    test_path: str | None
    test_fraction: float
    val_fraction: float
    seed: int
    classes: int | None
    features: Sequence[str] = ("x1", "x2")  # what the network sees of each point

    def __post_init__(self) -> None:
        held_out = [self.test_fraction] if self.test_path is None else []
        check(
            0 < self.test_fraction < 1
            and (self.val_fraction + self.test_fraction < 1 or not held_out),
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
        order = torch.from_numpy(_content_order(x, y)[0])  # the split follows the points' content
        x, y = x[order], y[order]
        fractions = [1 - self.val_fraction - sum(held_out), self.val_fraction, *held_out]
        self.parts = split_file(x, y, fractions, self.seed, self.path)
        self.record = {"path": self.record_of(self.path, x, y)}
        if self.test_path is not None:
            test_x, test_labels = read_labelled_csv(self.test_path, "test_path")
            check_file_features(self.features, test_x, "test_path", self.test_path, labelled=True)
            test_y = encode_labels(
                test_labels, "test_path", self.test_path, (self.num_classes, self.class_names)
            )[0]
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
        fit: :func:`circles.runs.record.resume_conflicts`)."""
        names = state.get("class_names")
        classes = state.get("num_classes", self.num_classes)
        check(
            classes == self.num_classes and names == self.class_names,
            "path",
            f"a file with the classes the network was trained on: {names or 'unnamed'} "
            f"({classes} classes)",
            self.path,
            f"Its classes are {self.class_names or 'unnamed'} ({self.num_classes}).",
        )
        for key, was in (state.get("files") or {}).items():
            now = self.record.get(key)
            if (
                now is not None
                and now["resolved"] == was.get("resolved")
                and now["fingerprint"] != was.get("fingerprint")
            ):
                raise ConfigError(
                    key,
                    "the file the checkpoint was trained on, unchanged",
                    getattr(self, key),
                    f"{now['resolved']} has changed since ({was.get('points')} points then, "
                    f"{now['points']} now, other content): its held-out points would not be the "
                    "ones held out in training. Restore the file, or give the points to test with "
                    "--data.test_path.",
                )

    def class_legend(self) -> tuple[str, ...]:
        return tuple(self.class_names or (f"class {k}" for k in range(self.num_classes)))

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
        test = (
            f"test: {self.test_path} ({len(self.parts[2][0])} points)"
            if self.test_path
            else f"test: {len(self.parts[2][0])} points held out of it"
        )
        return (
            f"{self.path} ({self.num_classes} classes: {classes}): {sizes} points (stratified "
            f"split, seed {self.seed}); {test}"
        )
