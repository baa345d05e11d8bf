"""The data: the chapter's make_circles (or another playground set), split and batched in memory for Lightning."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch

from circles.datasets import GENERATORS, Dataset
from circles.errors import ConfigError, check
from circles.features import Feature, check_features

Batch = tuple[torch.Tensor, ...]
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
MAX_NOISE = 1e30  # beyond it points leave float32's range (3.4e38) or lose every digit of the shape


def derived_seed(seed: int, stream: int) -> int:
    """An independent seed for another draw from the same process (``stream`` 1 is the test set)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def read_points_csv(path: str | Path) -> torch.Tensor:
    """Points to predict on from a CSV file with ``x1`` and ``x2`` columns (others are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("predict_path", "an existing CSV file with x1,x2 columns", str(path))
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("x1", "x2") if c not in columns]
        if missing:
            raise ConfigError(
                "predict_path", "a CSV file whose header names the columns x1 and x2",
                str(path), f"Its header has {columns} and lacks {missing}." if columns else "The file is empty.",
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                point = (float(row["x1"]), float(row["x2"]))
            except (TypeError, ValueError):
                raise ConfigError(
                    "predict_path", "a CSV file of numbers in the x1 and x2 columns", str(path),
                    f"Line {line} has x1={row['x1']!r}, x2={row['x2']!r}.",
                ) from None
            if not all(math.isfinite(v) for v in point):
                raise ConfigError(
                    "predict_path", "a CSV file of finite numbers (no nan or inf)", str(path),
                    f"Line {line} has x1={row['x1']!r}, x2={row['x2']!r}.",
                )
            if not all(abs(v) <= FLOAT32_MAX for v in point):
                raise ConfigError(
                    "predict_path", f"a CSV file of numbers the model can take (float32: at most {FLOAT32_MAX:.3g} "
                    "in size)", str(path), f"Line {line} has x1={row['x1']!r}, x2={row['x2']!r}.",
                )
            rows.append(point)
    if not rows:
        raise ConfigError("predict_path", "a CSV file with at least one point", str(path), "It has no data rows.")
    return torch.tensor(rows, dtype=torch.float32)


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
    plus an independent test draw; or another two-class set of TensorFlow Playground (``dataset``).

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
            dataset: Which point set: ``circles`` (the chapter's), ``moons``, ``xor``, ``gaussians``, ``spiral``.
            features: What the model sees of each point, from x1, x2, x1_sq, x2_sq, x1_x2, sin_x1, sin_x2; the
                points themselves stay in the (x1, x2) plane, so pictures and predictions do too.
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
        check_features(features)
        features = list(features)  # saved as the model saves it: Lightning merges the two hparams
        self.save_hyperparameters()
        self.dataset = dataset
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

    def _draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return GENERATORS[self.dataset](n, self.noise, seed, factor=self.factor)

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_x is None:
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
