"""The data: the chapter's make_circles (or another playground set), split and batched in memory for Lightning."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch

from circles.datasets import DEFAULT_CLASSES, GENERATORS, TWO_CLASSES, Dataset
from circles.errors import ConfigError, check
from circles.features import Feature, check_features

Batch = tuple[torch.Tensor, ...]
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
MAX_NOISE = 1e30  # beyond it points leave float32's range (3.4e38) or lose every digit of the shape


def derived_seed(seed: int, stream: int) -> int:
    """An independent seed for another draw from the same process (``stream`` 1 is the test set)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


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
                detail = f"It has no header: its first line is data ({','.join(header)}). Add the line {','.join(columns)} first."
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
                  known: Optional[tuple[int, Optional[list[str]]]] = None) -> tuple[torch.Tensor, int, Optional[list[str]]]:
    """Class indices (as floats) for a file's labels, the number of classes and their names. Integer labels are
    classes 0..C-1, each present, and have no names; other labels are names, classes in sorted order. ``known`` is the
    training file's (classes, names), so that a test file takes its classes: it may lack some, not add any."""
    numeric = [label.lstrip("-").isdigit() for label in labels]
    if known is None and any(numeric) and not all(numeric):
        number = next(label for label, n in zip(labels, numeric) if n)
        name = next(label for label, n in zip(labels, numeric) if not n)
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
                          f"It has {len(y)} points, per class {counts}; split {' / '.join(f'{f:g}' for f in fractions)} "
                          f"(training / validation{' / test' if need > 2 else ''}) needs at least {need} points of "
                          f"each class and {len(counts)} points (one per class) in each part. Add points, or change "
                          "val_fraction or test_fraction.")
    parts, rest_x, rest_y = [], x, y
    for size in sizes[:0:-1]:  # the last part first; training keeps what is left
        try:
            rest_x, part_x, rest_y, part_y = train_test_split(rest_x, rest_y, test_size=size, random_state=seed,
                                                              stratify=rest_y)
        except ValueError as err:
            raise ConfigError("path", "a CSV file with enough points of each class for the split", str(path),
                              f"{err}") from None
        parts.insert(0, (part_x, part_y))
    return [(rest_x, rest_y), *parts]


class TensorBatches:
    """Batches sliced from tensors that already sit on the training device, one shard per DDP rank.

    No DataLoader and no per-sample ``__getitem__``: with ``batch_size=None`` the whole shard is one batch
    (for one process: the tensors themselves), otherwise each epoch draws a permutation seeded by
    ``(seed, epoch)`` on the tensors' device and slices it. Training shards (``drop_remainder=True``) have
    equal sizes on every rank, so every rank takes the same number of steps; evaluation shards cover every
    point exactly once.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: Optional[int] = None,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_remainder: bool = False,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        n = len(tensors[0])
        if drop_remainder:
            per_rank = n // world_size
            self.start, self.stop = rank * per_rank, (rank + 1) * per_rank
        else:
            bounds = np.linspace(0, n, world_size + 1).round().astype(int)
            self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])

    @property
    def num_samples(self) -> int:
        """Points this rank sees per epoch."""
        return self.stop - self.start

    def __len__(self) -> int:
        return math.ceil(self.num_samples / (self.batch_size or max(self.num_samples, 1)))

    def __iter__(self) -> Iterator[Batch]:
        if self.num_samples == 0:  # more ranks than evaluation points
            return
        size = self.batch_size or self.num_samples
        if not self.shuffle:
            for i in range(self.start, self.stop, size):
                yield tuple(t[i : min(i + size, self.stop)] for t in self.tensors)
            return
        device = self.tensors[0].device
        generator = torch.Generator(device=device)
        generator.manual_seed(derived_seed(self.seed, 1000 + self.epoch()))
        order = torch.randperm(len(self.tensors[0]), generator=generator, device=device)[self.start : self.stop]
        for i in range(0, self.num_samples, size):
            index = order[i : i + size]
            yield tuple(t[index] for t in self.tensors)


def _minimum_samples(val_fraction: float) -> int:
    """Smallest n_samples for which both sides of the split get at least two points."""
    n = 4
    while math.ceil(val_fraction * n) < 2 or n - math.ceil(val_fraction * n) < 2:
        n += 1
    return n


class CirclesDataModule(pl.LightningDataModule):
    """Two noisy concentric circles (scikit-learn's ``make_circles``), split into training and validation points,
    plus an independent test draw; or another set of TensorFlow Playground or the course (``dataset``); or the
    labelled points of a CSV file (``path``), split into training, validation and test parts.

    The defaults are the chapter's data: ``make_circles(1000, noise=0.03, random_state=42)`` split by
    ``train_test_split(test_size=0.2, random_state=42)`` into 800 training and 200 validation points.
    """

    def __init__(
        self,
        n_samples: int = 1000,
        noise: float = 0.03,
        factor: float = 0.8,
        val_fraction: float = 0.2,
        seed: int = 42,
        batch_size: Optional[int] = None,
        test_samples: int = 10_000,
        predict_path: Optional[str] = None,
        dataset: Dataset = "circles",
        features: Sequence[Feature] = ("x1", "x2"),
        classes: Optional[int] = None,
        path: Optional[str] = None,
        test_path: Optional[str] = None,
        test_fraction: float = 0.2,
    ) -> None:
        """
        Args:
            n_samples: Points drawn for training plus validation (half on each circle).
            noise: Standard deviation of the Gaussian noise added to every coordinate.
            factor: Radius of the inner circle relative to the outer one (which has radius 1).
            val_fraction: Fraction of the ``n_samples`` points held out for validation.
            seed: Seed of the draw and of the split; the test draw and the shuffling derive their seeds from it.
            batch_size: Points per training step; ``None`` trains on the whole training set at every step
                (full batch, the chapter's choice).
            test_samples: Size of the test set, a fresh draw from the same distribution.
            predict_path: CSV file with ``x1,x2`` columns to predict on; ``None`` predicts on the test set.
            dataset: Which point set: ``circles`` (the chapter's), ``moons``, ``xor``, ``gaussians``, ``spiral``, or
                ``blobs`` (the course's multi-class set; ``noise`` is its clusters' standard deviation).
            features: What the model sees of each point, from x1, x2, x1_sq, x2_sq, x1_x2, sin_x1, sin_x2; the
                points themselves stay in the (x1, x2) plane, so pictures and predictions do too.
            classes: How many classes ``gaussians``, ``spiral`` and ``blobs`` have (``null``: 2, blobs 4); the
                model's output layer follows it.
            path: CSV file of your own points, with a header naming the columns ``x1``, ``x2`` and ``label`` (others
                are ignored). Labels are integers 0..C-1 or class names (classes in sorted order). It replaces the
                generated data: ``dataset``, ``n_samples``, ``noise``, ``factor`` and ``test_samples`` are unused.
            test_path: CSV file of test points for ``path``'s classes; ``null`` holds out ``test_fraction`` of
                ``path`` instead.
            test_fraction: Fraction of ``path``'s points held out for testing when there is no ``test_path``; the
                split into training, validation and test parts is stratified and seeded by ``seed``.
        """
        super().__init__()
        check(isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0,
              "noise", "a finite number >= 0", noise)
        check(noise <= MAX_NOISE, "noise", f"at most {MAX_NOISE:g}", noise,
              "The points are float32 numbers, which end at 3.4e38; noise this large leaves nothing of the shape.")
        check(0 < factor < 1, "factor", "strictly between 0 and 1 (the inner radius relative to the outer)", factor)
        check(0 < val_fraction < 1, "val_fraction", "strictly between 0 and 1", val_fraction)
        minimum = _minimum_samples(val_fraction)
        check(n_samples >= minimum, "n_samples", f"an integer >= {minimum}", n_samples,
              f"With val_fraction={val_fraction} smaller draws leave fewer than 2 training or validation points.")
        check(0 <= seed < 2**32, "seed", "an integer from 0 to 2**32 - 1", seed)
        check(batch_size is None or batch_size >= 1, "batch_size",
              "a positive integer, or null for full-batch training", batch_size)
        check(test_samples >= 1, "test_samples", "a positive integer", test_samples)
        check(dataset in GENERATORS, "dataset", f"one of {list(GENERATORS)}", dataset)
        check(classes is None or (isinstance(classes, int) and classes >= 2), "classes",
              "an integer >= 2, or null for the dataset's own number", classes)
        check(classes in (None, 2) or dataset not in TWO_CLASSES, "classes", f"2 for dataset {dataset}", classes,
              "Only gaussians, spiral and blobs take another number of classes.")
        holds_out = path is not None and test_path is None
        check(0 < test_fraction < 1 and (val_fraction + test_fraction < 1 or not holds_out), "test_fraction",
              f"strictly between 0 and 1 - val_fraction ({1 - val_fraction:g})", test_fraction)
        check(test_path is None or path is not None, "test_path", "null unless path is given", test_path,
              "Generated data draws its own test points.")
        check_features(features)
        features = list(features)  # saved as the model saves it: Lightning merges the two hparams
        self.save_hyperparameters()
        self.dataset = dataset
        self.classes = classes
        self.num_classes = classes or DEFAULT_CLASSES.get(dataset, 2)
        self.class_names: Optional[list[str]] = None
        self.path, self.test_path, self.test_fraction = path, test_path, test_fraction
        self.features = features
        self.n_samples = n_samples
        self.noise = noise
        self.factor = factor
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.test_samples = test_samples
        self.predict_path = predict_path
        self.train_x = self.train_y = self.val_x = self.val_y = None
        self.test_x = self.test_y = self.predict_x = None
        if path is not None:
            self._read_files()

    def _read_files(self) -> None:
        """Read ``path`` (and ``test_path``) and split them, so that a bad file stops the command before it starts."""
        x, labels = read_labelled_csv(self.path, "path")
        y, self.num_classes, self.class_names = encode_labels(labels, "path", self.path)
        check(self.classes in (None, self.num_classes), "classes", f"null or {self.num_classes} (the classes in path)",
              self.classes)
        fractions = [1 - self.val_fraction, self.val_fraction]
        if self.test_path is None:
            fractions = [1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction]
        parts = split_file(x, y, fractions, self.seed, self.path)
        (self.train_x, self.train_y), (self.val_x, self.val_y) = parts[:2]
        if self.test_path is None:
            self.test_x, self.test_y = parts[2]
        else:
            test_x, test_labels = read_labelled_csv(self.test_path, "test_path")
            self.test_y = encode_labels(test_labels, "test_path", self.test_path,
                                        known=(self.num_classes, self.class_names))[0]
            self.test_x = test_x

    def describe(self) -> str:
        """Where the training, validation and test points come from, in one line."""
        sizes = f"{len(self.train_x)} training, {len(self.val_x)} validation" if self.train_x is not None else ""
        if self.path is None:
            what = f"{self.dataset} (noise {self.noise:g}{f', {self.num_classes} classes' if self.num_classes > 2 else ''})"
            split = f"{sizes} points; " if sizes else ""
            return f"{what}: {split}test: a fresh draw of {self.test_samples} points"
        classes = ", ".join(self.class_names) if self.class_names else f"0..{self.num_classes - 1}"
        test = (f"test: {self.test_path} ({len(self.test_x)} points)" if self.test_path else
                f"test: {len(self.test_x)} points held out of it")
        return (f"{self.path} ({self.num_classes} classes: {classes}): {sizes} points (stratified split, seed "
                f"{self.seed}); {test}")

    def bayes_accuracy(self) -> Optional[float]:
        """The best accuracy any classifier can reach on this data, where it is known exactly (not for a file)."""
        if self.path is not None:
            return None
        from circles.datasets import bayes_accuracy

        return bayes_accuracy(self.dataset, self.noise, self.factor, self.num_classes, self.seed)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the classes' names (a data file's label for each class index)."""
        return {"num_classes": self.num_classes, "class_names": self.class_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        names = state_dict.get("class_names")
        if state_dict.get("num_classes", self.num_classes) != self.num_classes or names != self.class_names:
            raise ConfigError("path", f"a file with the classes the network was trained on: {names or 'unnamed'} "
                              f"({state_dict.get('num_classes')} classes)", self.path,
                              f"Its classes are {self.class_names or 'unnamed'} ({self.num_classes}).")

    def _draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return GENERATORS[self.dataset](n, self.noise, seed, factor=self.factor, classes=self.num_classes,
                                        layout_seed=self.seed)

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.val_x is None:
            from sklearn.model_selection import train_test_split

            x, y = self._draw(self.n_samples, self.seed)
            self.train_x, self.val_x, self.train_y, self.val_y = train_test_split(
                x, y, test_size=self.val_fraction, random_state=self.seed
            )
        if stage in ("test", "predict") and self.test_x is None:
            self.test_x, self.test_y = self._draw(self.test_samples, derived_seed(self.seed, 1))
        if stage == "predict" and self.predict_x is None:
            self.predict_x = read_points_csv(self.predict_path) if self.predict_path else self.test_x
        device = self._device()
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "predict_x"):
            tensor = getattr(self, name)
            if tensor is not None and tensor.device != device:
                setattr(self, name, tensor.to(device))

    def _batches(self, tensors: tuple[torch.Tensor, ...], train: bool = False, shard: bool = True) -> TensorBatches:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None and shard else (0, 1)
        if train and len(tensors[0]) < world:
            raise ConfigError("n_samples", f"large enough to give each of the {world} processes a training point",
                              self.n_samples)
        return TensorBatches(
            tensors,
            batch_size=self.batch_size,
            shuffle=train and (self.batch_size is not None or world > 1),  # DDP: each epoch other points drop out
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=rank,
            world_size=world,
            drop_remainder=train,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches((self.train_x, self.train_y), train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches((self.val_x, self.val_y))

    def test_dataloader(self) -> TensorBatches:
        return self._batches((self.test_x, self.test_y))

    def predict_dataloader(self) -> TensorBatches:
        return self._batches((self.predict_x,), shard=False)
