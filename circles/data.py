"""The data: generated point sets or your own file, split and batched in memory for Lightning, one shard per rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from circles.batches import TensorBatches, derived_seed, shard
from circles.csvdata import content_order, encode_labels, fingerprint, read_labelled_csv, read_points_csv
from circles.datasets import DATASETS, Dataset, DatasetSpec, dataset_help
from circles.errors import ConfigError, check
from circles.features import Feature, check_features, check_finite_features

Batch = tuple[torch.Tensor, ...]
Points = tuple[torch.Tensor, torch.Tensor]
MAX_NOISE = 1e30  # beyond it points leave float32's range (3.4e38) or lose every digit of the shape


def split_file(x: torch.Tensor, y: torch.Tensor, fractions: Sequence[float], seed: int, path: str | Path
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A file's points split into parts of the given ``fractions`` (training first, it takes the rest), seeded and
    stratified: every part has each class in the file's proportions, as near as whole points allow."""
    from sklearn.model_selection import train_test_split

    counts = torch.bincount(y.long()).tolist()
    sizes = [len(y) - sum(round(f * len(y)) for f in fractions[1:])] + [round(f * len(y)) for f in fractions[1:]]
    need = len(fractions)
    if min(counts) < need or min(sizes) < len(counts):
        raise ConfigError("path", "a CSV file with enough points for the split", str(path),
                          f"It has {len(y)} points, per class {counts}; split {' / '.join(f'{f:g}' for f in fractions)}"
                          " "
                          f"(training / validation{' / test' if need > 2 else ''}) needs at least {need} points of "
                          f"each class and {len(counts)} points (one per class) in each part. Add points, or change "
                          "val_fraction or test_fraction.")
    parts: list[Points] = []
    rest_x, rest_y = x, y
    for size in sizes[:0:-1]:  # the last part first; training keeps what is left
        try:
            rest_x, part_x, rest_y, part_y = train_test_split(rest_x, rest_y, test_size=size, random_state=seed,
                                                              stratify=rest_y)
        except ValueError as err:
            raise ConfigError("path", "a CSV file with enough points of each class for the split", str(path),
                              f"{err}") from None
        parts.insert(0, (part_x, part_y))
    return [(rest_x, rest_y), *parts]


def _minimum_samples(val_fraction: float) -> int:
    """Smallest n_samples for which both sides of the split get at least two points."""
    n = 4
    while math.ceil(val_fraction * n) < 2 or n - math.ceil(val_fraction * n) < 2:
        n += 1
    return n


@dataclass(frozen=True)
class Generated:
    """The settings of a generated point set (checked when made), and its draws: ``n_samples`` points split into
    training and validation, and an independent test draw of ``test_samples``."""

    dataset: str
    n_samples: int
    noise: float
    factor: float
    classes: int | None
    test_samples: int
    val_fraction: float
    seed: int

    def __post_init__(self) -> None:
        noise, classes = self.noise, self.classes
        check(isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0,
              "noise", "a finite number >= 0", noise)
        check(noise <= MAX_NOISE, "noise", f"at most {MAX_NOISE:g}", noise,
              "The points are float32 numbers, which end at 3.4e38; noise this large leaves nothing of the shape.")
        check(0 < self.factor < 1, "factor", "strictly between 0 and 1 (the inner radius relative to the outer)",
              self.factor)
        minimum = _minimum_samples(self.val_fraction)
        check(self.n_samples >= minimum, "n_samples", f"an integer >= {minimum}", self.n_samples,
              f"With val_fraction={self.val_fraction} smaller draws leave fewer than 2 training or validation points.")
        check(self.test_samples >= 1, "test_samples", "a positive integer", self.test_samples)
        check(self.dataset in DATASETS, "dataset", f"one of {list(DATASETS)}", self.dataset)
        check(classes is None or (isinstance(classes, int) and classes >= 2), "classes",
              "an integer >= 2, or null for the dataset's own number", classes)
        takes = [name for name, spec in DATASETS.items() if spec.any_classes]
        check(classes in (None, self.spec.classes) or self.spec.any_classes, "classes",
              f"{self.spec.classes} for dataset {self.dataset}", classes,
              f"Only {', '.join(takes)} take another number of classes.")

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def num_classes(self) -> int:
        return self.classes or self.spec.classes

    def draw(self, n: int, seed: int) -> Points:
        return self.spec.generate(n, self.noise, seed, factor=self.factor, classes=self.num_classes,
                                  layout_seed=self.seed)

    def fit_split(self) -> tuple[Points, Points]:
        """The chapter's draw and split: ``train_test_split(test_size=val_fraction, random_state=seed)``."""
        from sklearn.model_selection import train_test_split

        x, y = self.draw(self.n_samples, self.seed)
        train_x, val_x, train_y, val_y = train_test_split(x, y, test_size=self.val_fraction, random_state=self.seed)
        return (train_x, train_y), (val_x, val_y)

    def test_split(self) -> Points:
        return self.draw(self.test_samples, derived_seed(self.seed, 1))

    def bayes_accuracy(self) -> float | None:
        bayes = self.spec.bayes
        return bayes(self.noise, self.factor, self.num_classes, self.seed) if bayes is not None else None

    def describe(self, sizes: str) -> str:
        what = f"{self.dataset} (noise {self.noise:g}{f', {self.num_classes} classes' if self.num_classes > 2 else ''})"
        return f"{what}: {f'{sizes} points; ' if sizes else ''}test: a fresh draw of {self.test_samples} points"

    def class_legend(self) -> tuple[str, ...]:
        return self.spec.legend(self.num_classes)

    def probability_label(self) -> str:
        return self.spec.probability_label(self.num_classes)


@dataclass
class PointFile:
    """Your own labelled points: the settings (checked when made) and the file read and split, with a
    ``test_path`` file as the test points or else ``test_fraction`` of ``path`` held out."""

    path: str
    test_path: str | None
    test_fraction: float
    val_fraction: float
    seed: int
    classes: int | None
    num_classes: int = field(init=False)
    class_names: list[str] | None = field(init=False)
    parts: list[Points] = field(init=False)
    record: dict[str, dict[str, Any]] = field(init=False)  # per file setting: what trained (see :meth:`record_of`)

    def __post_init__(self) -> None:
        holds_out = self.test_path is None
        check(0 < self.test_fraction < 1 and (self.val_fraction + self.test_fraction < 1 or not holds_out),
              "test_fraction", f"strictly between 0 and 1 - val_fraction ({1 - self.val_fraction:g})",
              self.test_fraction)
        x, labels = read_labelled_csv(self.path, "path")
        y, self.num_classes, self.class_names = encode_labels(labels, "path", self.path)
        check(self.classes in (None, self.num_classes), "classes",
              f"null or {self.num_classes} (the classes in path)", self.classes)
        order = content_order(x, y)  # the split follows the points, not the order of the lines
        x, y = x[order], y[order]
        fractions = [1 - self.val_fraction, self.val_fraction] + ([self.test_fraction] if holds_out else [])
        fractions[0] -= sum(fractions[2:])
        self.parts = split_file(x, y, fractions, self.seed, self.path)
        self.record = {"path": self.record_of(self.path, x, y)}
        if self.test_path is not None:
            test_x, test_labels = read_labelled_csv(self.test_path, "test_path")
            known = (self.num_classes, self.class_names)
            test_y = encode_labels(test_labels, "test_path", self.test_path, known=known)[0]
            self.parts.append((test_x, test_y))
            self.record["test_path"] = self.record_of(self.test_path, test_x, test_y)
        self.record["path"]["held_out"] = fingerprint(*self.parts[2])

    @staticmethod
    def record_of(path: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """What a checkpoint keeps of a file it was trained with: where it is (resolved, so ``./a.csv`` and ``a.csv``
        are one file, whatever the working directory later) and what it held (:func:`fingerprint`, points)."""
        return {"resolved": str(Path(path).resolve()), "fingerprint": fingerprint(x, y), "points": len(y)}

    def check_trained_on(self, state: dict[str, Any]) -> None:
        """Refuse this file for a network trained on other classes (``state``: the data state a checkpoint holds),
        or if it is a file the network was trained with (the same resolved path) whose content has changed since:
        its split would hold other points out. Another file altogether is the user's choice (the CLI notes it for
        test, refuses it for a resumed fit: :func:`circles.checkpoints.resume_conflicts`)."""
        names, classes = state.get("class_names"), state.get("num_classes", self.num_classes)
        if classes != self.num_classes or names != self.class_names:
            raise ConfigError("path", f"a file with the classes the network was trained on: {names or 'unnamed'} "
                              f"({classes} classes)", self.path,
                              f"Its classes are {self.class_names or 'unnamed'} ({self.num_classes}).")
        for key, was in (state.get("files") or {}).items():
            now = self.record.get(key)
            if now is None or now["resolved"] != was.get("resolved") or now["fingerprint"] == was.get("fingerprint"):
                continue
            raise ConfigError(key, "the file the checkpoint was trained on, unchanged", getattr(self, key),
                              f"{now['resolved']} has changed since ({was.get('points')} points then, {now['points']} "
                              "now, other content): its held-out points would not be the ones held out in training. "
                              "Restore the file, or give the points to test with --data.test_path.")

    def class_legend(self) -> tuple[str, ...]:
        return tuple(self.class_names) if self.class_names else tuple(f"class {k}" for k in range(self.num_classes))

    def probability_label(self) -> str:
        return f"P({self.class_names[1]})" if self.class_names and self.num_classes == 2 else "P(class 1)"

    def bayes_accuracy(self) -> float | None:
        return None  # the distribution behind a file is unknown

    def describe(self, sizes: str) -> str:
        classes = ", ".join(self.class_names) if self.class_names else f"0..{self.num_classes - 1}"
        test_x = self.parts[2][0]
        test = (f"test: {self.test_path} ({len(test_x)} points)" if self.test_path else
                f"test: {len(test_x)} points held out of it")
        return (f"{self.path} ({self.num_classes} classes: {classes}): {sizes} points (stratified split, seed "
                f"{self.seed}); {test}")


class CirclesDataModule(pl.LightningDataModule):
    """Two noisy concentric circles (scikit-learn's ``make_circles``), split into training and validation points,
    plus an independent test draw; or another generated set (``dataset``); or the labelled points of a CSV file
    (``path``), split into training, validation and test parts.

    The defaults are the chapter's data: ``make_circles(1000, noise=0.03, random_state=42)`` split by
    ``train_test_split(test_size=0.2, random_state=42)`` into 800 training and 200 validation points.
    """

    train_x: torch.Tensor | None = None  # each stage's points and labels, once read or drawn
    train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    predict_x: torch.Tensor | None = None

    def __init__(
        self,
        n_samples: int = 1000,
        noise: float = 0.03,
        factor: float = 0.8,
        val_fraction: float = 0.2,
        seed: int = 42,
        batch_size: int | None = None,
        test_samples: int = 10_000,
        predict_path: str | None = None,
        dataset: Dataset = "circles",
        features: Sequence[Feature] = ("x1", "x2"),
        classes: int | None = None,
        path: str | None = None,
        test_path: str | None = None,
        test_fraction: float = 0.2,
    ) -> None:
        """
        Args:
            n_samples: Generated data: points drawn for training plus validation (about as many of each class).
            noise: Generated data: standard deviation of the Gaussian noise added to every coordinate.
            factor: Generated data: radius of the inner circle relative to the outer one (which has radius 1).
            val_fraction: Fraction of the points held out for validation.
            seed: Seed of the draws and of the split; the test draw and the shuffling derive their seeds from it.
            batch_size: Points per training step; ``None`` trains on the whole training set at every step
                (full batch, the chapter's choice).
            test_samples: Generated data: size of the test set, a fresh draw from the same distribution.
            predict_path: CSV file with ``x1,x2`` columns to predict on; ``None`` predicts on the test set.
            dataset: Which generated set: {datasets}.
            features: What the model sees of each point, from x1, x2, x1_sq, x2_sq, x1_x2, sin_x1, sin_x2; the
                points themselves stay in the (x1, x2) plane, so pictures and predictions do too.
            classes: How many classes the generated set has (``null``: its own number); the model's output layer
                follows it.
            path: Your own points: a CSV file with a header naming the columns ``x1``, ``x2`` and ``label`` (others
                are ignored). Labels are integers 0..C-1 or class names (classes in sorted order). It replaces the
                generated data: ``dataset``, ``n_samples``, ``noise``, ``factor`` and ``test_samples`` are unused.
            test_path: CSV file of test points for ``path``'s classes; ``null`` holds out ``test_fraction`` of
                ``path`` instead.
            test_fraction: Fraction of ``path``'s points held out for testing when there is no ``test_path``; the
                split into training, validation and test parts is stratified and seeded by ``seed``.
        """
        super().__init__()
        check(0 < val_fraction < 1, "val_fraction", "strictly between 0 and 1", val_fraction)
        check(0 <= seed < 2**32, "seed", "an integer from 0 to 2**32 - 1", seed)
        check(batch_size is None or batch_size >= 1, "batch_size",
              "a positive integer, or null for full-batch training", batch_size)
        check(test_path is None or path is not None, "test_path", "null unless path is given", test_path,
              "Generated data draws its own test points.")
        check_features(features)
        features = list(features)  # saved as the model saves it: Lightning merges the two hparams
        self.save_hyperparameters()
        self.generated = Generated(dataset, n_samples, noise, factor, classes, test_samples, val_fraction, seed)
        self.file = PointFile(path, test_path, test_fraction, val_fraction, seed, classes) if path else None
        self.source: PointFile | Generated = self.file or self.generated
        self.num_classes = self.source.num_classes
        self.class_names = self.file.class_names if self.file else None
        self.features, self.batch_size, self.seed, self.predict_path = features, batch_size, seed, predict_path
        if self.file is not None:
            (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = self.file.parts

    def points(self, stage: str) -> Points | None:
        """The points and labels of ``train``, ``val`` or ``test``, once set up (see :mod:`circles.contracts`)."""
        x, y = getattr(self, f"{stage}_x"), getattr(self, f"{stage}_y")
        return (x, y) if x is not None else None

    def describe(self) -> str:
        """Where the training, validation and test points come from, in one line."""
        sizes = (f"{len(self.train_x)} training, {len(self.val_x)} validation"
                 if self.train_x is not None and self.val_x is not None else "")
        return self.source.describe(sizes)

    def class_legend(self) -> tuple[str, ...]:
        """What the pictures' legend calls each class: a file's labels, a generated set's names, else ``class k``."""
        return self.source.class_legend()

    def probability_label(self) -> str:
        """What a two-class picture's probability view shows: ``P(inner circle)``, ``P(<class 1's label>)``."""
        return self.source.probability_label()

    def bayes_accuracy(self) -> float | None:
        """The best accuracy any classifier can reach on this data, where it is known exactly (not for a file)."""
        return self.source.bayes_accuracy()

    @override
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the classes' names (a data file's label for each class index) and, for your own
        points, each file's resolved path, fingerprint and size and the fingerprint of the held-out points."""
        return {"num_classes": self.num_classes, "class_names": self.class_names,
                "files": self.file.record if self.file is not None else {}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check that this data is what a checkpoint's network (its data state, ``state_dict``) can take: its number
        of classes, and with a file, :meth:`PointFile.check_trained_on`."""
        if self.file is not None:
            self.file.check_trained_on(state_dict)
        check(state_dict.get("num_classes", self.num_classes) == self.num_classes, "classes",
              f"the network's {state_dict.get('num_classes')} classes", self.num_classes)

    @override
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.val_x is None:
            (self.train_x, self.train_y), (self.val_x, self.val_y) = self.generated.fit_split()
        if stage in ("test", "predict") and self.test_x is None:
            self.test_x, self.test_y = self.generated.test_split()
        if stage == "predict" and self.predict_x is None:
            self.predict_x = predict_points(self.predict_path, self.features) if self.predict_path else self.test_x
        field, where = ("path", self.hparams["path"]) if self.file is not None else ("noise", self.generated.noise)
        for points in (self.train_x, self.val_x, self.test_x):
            if points is not None:
                check_finite_features(self.features, points, field, where)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "predict_x"):
            tensor = getattr(self, name)
            if tensor is not None and tensor.device != device:
                setattr(self, name, tensor.to(device))

    @override
    def train_dataloader(self) -> TensorBatches:
        return shard(self, (self.train_x, self.train_y), train=True)

    @override
    def val_dataloader(self) -> TensorBatches:
        return shard(self, (self.val_x, self.val_y))

    @override
    def test_dataloader(self) -> TensorBatches:
        return shard(self, (self.test_x, self.test_y))

    @override
    def predict_dataloader(self) -> TensorBatches:
        return shard(self, (self.predict_x,), ranks=False)


def predict_points(path: str, features: Sequence[str]) -> torch.Tensor:
    """The points of a ``predict_path`` file, read and checked: the features the network sees of each are finite."""
    points = read_points_csv(path)
    check_finite_features(features, points, "predict_path", path)
    return points


CirclesDataModule.__init__.__doc__ = (CirclesDataModule.__init__.__doc__ or "").replace("{datasets}", dataset_help())
