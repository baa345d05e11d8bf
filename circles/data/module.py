"""CirclesDataModule: generated point sets or your own file, split and batched in memory for
Lightning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from circles.data.batches import Points, TensorBatches, shard
from circles.data.files import check_file_features, read_points_csv
from circles.data.generated import DATASETS, Dataset, Generated
from circles.data.pointfile import PointFile
from circles.errors import check
from circles.features import Feature, check_features, check_finite_features
from circles.ranges import Classes, Count, Fraction, Samples, Seed, Size


def _check_source(dataset: str, path: str | None, test_path: str | None) -> None:
    """The points come from a file (``path``, ``test_path``) or are generated (``dataset``), not
    both: a setting of the other kind would be ignored."""
    check(
        test_path is None or path is not None,
        "test_path",
        "null unless path is given",
        test_path,
        "Generated data draws its own test points.",
    )
    check(
        path is None or dataset == "circles",
        "dataset",
        "left out when path is given (the points are the file's)",
        dataset,
        "Give path or dataset, not both.",
    )


class CirclesDataModule(pl.LightningDataModule):
    """Two noisy concentric circles (scikit-learn's ``make_circles``) split into training and
    validation points, and a fresh test draw; or another generated set (``dataset``); or the
    labelled points of a CSV file (``path``). The defaults are the chapter's: ``make_circles(1000,
    noise=0.03, random_state=42)``, 800 training and 200 validation points."""

    train_x: torch.Tensor | None = None  # each stage's points and labels, once read or drawn
    train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    predict_x: torch.Tensor | None = None

    def __init__(
        self,
        n_samples: Samples = 1000,
        noise: Size = 0.03,
        factor: Fraction = 0.8,
        val_fraction: Fraction = 0.2,
        seed: Seed = 42,
        batch_size: Count | None = None,
        test_samples: Samples = 10_000,
        predict_path: str | None = None,
        dataset: Dataset = "circles",
        features: Sequence[Feature] = ("x1", "x2"),
        classes: Classes | None = None,
        path: str | None = None,
        test_path: str | None = None,
        test_fraction: Fraction = 0.2,
    ) -> None:
        """
        Args:
            n_samples: Generated data: points drawn for training plus validation.
            noise: Generated data: standard deviation of the Gaussian noise on every coordinate.
            factor: Generated data: the inner circle's radius relative to the outer one's (1).
            val_fraction: Fraction of the points held out for validation.
            seed: Seed of the draws and of the split; the test draw and the shuffling derive theirs
                from it.
            batch_size: Points per training step; ``None`` trains on the whole training set at
                every step (full batch, the chapter's choice).
            test_samples: Generated data: size of the test set, a fresh draw.
            predict_path: CSV file with ``x1,x2`` columns to predict on; ``None``: the test set.
            dataset: Which generated set: {datasets}.
            features: What the model sees of a point, from x1, x2, x1_sq, x2_sq, x1_x2, sin_x1,
                sin_x2 (pictures and predictions stay in the (x1, x2) plane).
            classes: How many classes the generated set has (``null``: its own number).
            path: Your own points: a CSV file whose header names ``x1``, ``x2`` and ``label``
                (integers 0..C-1 or class names, sorted); generated data's settings are unused.
            test_path: CSV file of test points for ``path``'s classes; ``null`` holds out
                ``test_fraction`` of ``path`` instead.
            test_fraction: Fraction of ``path``'s points held out for testing without
                ``test_path`` (the split is stratified and seeded by ``seed``).
        """
        super().__init__()
        _check_source(dataset, path, test_path)
        check_features(features)
        features = list(features)  # saved as the model saves it: Lightning merges the two hparams
        self.save_hyperparameters()
        self.generated = Generated(
            dataset, n_samples, noise, factor, classes, test_samples, val_fraction, seed
        )
        self.file = (
            PointFile(path, test_path, test_fraction, val_fraction, seed, classes, features)
            if path
            else None
        )
        self.source: PointFile | Generated = self.file or self.generated
        self.num_classes = int(self.source.num_classes)
        self.class_names = self.file.class_names if self.file else None
        self.features = features
        self.batch_size = batch_size
        self.seed = seed
        self.predict_path = predict_path
        if self.file is not None:
            (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = (
                self.file.parts
            )

    def points(self, stage: str) -> Points | None:
        """The points and labels of ``train``, ``val`` or ``test``, once set up."""
        x, y = getattr(self, f"{stage}_x"), getattr(self, f"{stage}_y")
        return (x, y) if x is not None else None

    def describe(self) -> str:
        """Where the training, validation and test points come from, in one line."""
        if self.train_x is None or self.val_x is None:
            return self.source.describe("")
        return self.source.describe(f"{len(self.train_x)} training, {len(self.val_x)} validation")

    def class_legend(self) -> tuple[str, ...]:
        """What the pictures' legend calls each class."""
        return self.source.class_legend()

    def probability_label(self) -> str:
        """What a two-class picture's probability view shows: ``P(inner circle)``."""
        return self.source.probability_label()

    def bayes_accuracy(self) -> float | None:
        """The best accuracy any classifier can reach on generated data (a file's: None)."""
        return self.source.bayes_accuracy()

    @override
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the classes and their names and, for your own points, each
        file's resolved path, fingerprint and size and the held-out points' fingerprint."""
        return {
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "files": self.file.record if self.file is not None else {},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """This data is what a checkpoint's network can take: its classes, and with a file,
        :meth:`PointFile.check_trained_on`."""
        if self.file is not None:
            self.file.check_trained_on(state_dict)
        check(
            state_dict.get("num_classes", self.num_classes) == self.num_classes,
            "classes",
            f"the network's {state_dict.get('num_classes')} classes",
            self.num_classes,
        )

    @override
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.val_x is None:
            (self.train_x, self.train_y), (self.val_x, self.val_y) = self.generated.fit_split()
        if stage in ("test", "predict") and self.test_x is None:
            self.test_x, self.test_y = self.generated.test_split()
        if stage == "predict" and self.predict_x is None:
            self.predict_x = (
                predict_points(self.predict_path, self.features)
                if self.predict_path
                else self.test_x
            )
        file = self.file is not None
        field, where = ("path", self.hparams["path"]) if file else ("noise", self.generated.noise)
        for points in (self.train_x, self.val_x, self.test_x):
            if points is not None:
                check_finite_features(self.features, points, field, where)
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
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
    """The points of a ``predict_path`` file, read and checked: the features the network sees of
    each are finite."""
    points = read_points_csv(path)
    check_file_features(features, points, "predict_path", path, labelled=False)
    return points


CirclesDataModule.__init__.__doc__ = (CirclesDataModule.__init__.__doc__ or "").replace(
    "{datasets}", "; ".join(f"``{spec.name}``: {spec.about}" for spec in DATASETS.values())
)
