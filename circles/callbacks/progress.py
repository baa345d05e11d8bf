"""The chapter's progress line during fit."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.model.metrics import latest_values
from circles.ranges import Count


class ChapterProgressPrinter(Callback):
    """Prints the chapter's progress line every ``every_n_epochs`` epochs and at the last one:
    ``Epoch: 20 | Train loss: 0.69326 | Train accuracy: 49.50% | Val loss: 0.69888 | Val
    accuracy: 43.50%``."""

    def __init__(self, every_n_epochs: Count | None = 10) -> None:
        """
        Args:
            every_n_epochs: Print at epochs 0, N, 2N, ... and at the last epoch; ``null`` prints
                nothing.
        """
        self.every_n_epochs = every_n_epochs
        self._epoch: int | None = None  # the last epoch trained, and the last one printed
        self._printed: int | None = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch = trainer.current_epoch
        last = self._epoch + 1 == trainer.max_epochs
        if self.every_n_epochs is not None and (last or self._epoch % self.every_n_epochs == 0):
            self._print(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fit that a callback stopped early (EarlyStopping decides after this callback's
        ``on_train_epoch_end``) ends with its last epoch's line too."""
        if self.every_n_epochs is not None and self._epoch not in (None, self._printed):
            self._print(trainer, pl_module)

    def _print(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = latest_values(trainer.callback_metrics)
        stages = [
            f"{label} loss: {metrics[f'{stage}/loss']:.5f}"
            f" | {label} accuracy: {100 * metrics[f'{stage}/acc']:.2f}%"
            for stage, label in (("train", "Train"), ("val", "Val"))
            if f"{stage}/loss" in metrics
        ]
        pl_module.print(" | ".join([f"Epoch: {self._epoch}", *stages]))
        self._printed = self._epoch
