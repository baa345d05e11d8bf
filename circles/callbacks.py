"""Lightning callbacks of a circles run: checkpoints, the chapter's progress line, predictions, decision boundaries."""

from __future__ import annotations

import os
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from circles.errors import check


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` on the monitored metric, plus a ``last.ckpt`` that really holds the last state.

    ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also saves a top-k checkpoint, so
    after the best epoch it stops moving. Here ``last.ckpt`` is written every ``last_every_n_epochs`` epochs, at
    the end of fit and when fit is interrupted (Ctrl-C, SIGTERM), and never when training failed (a diverged
    model must not replace the last good one). Nothing is written in epochs where nothing changed.
    """

    def __init__(
        self,
        monitor: Optional[str] = "val/acc",
        mode: str = "max",
        filename: Optional[str] = "best",
        last_every_n_epochs: int = 50,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            monitor: Metric whose best value selects ``best.ckpt``.
            mode: ``max`` or ``min``: which direction of ``monitor`` is better.
            filename: Name of the best checkpoint, without ``.ckpt``.
            last_every_n_epochs: Interval of ``last.ckpt`` writes during fit (resume points after a hard kill).
            **kwargs: Other ``ModelCheckpoint`` arguments.
        """
        check(last_every_n_epochs >= 1, "last_every_n_epochs", "a positive integer", last_every_n_epochs)
        kwargs.pop("save_last", None)
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=False, **kwargs)
        self.last_every_n_epochs = last_every_n_epochs
        self._last_saved_step: Optional[int] = None

    def write_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for the trainer's current state, unless it already holds it."""
        if trainer.fast_dev_run or trainer.sanity_checking or self._last_saved_step == trainer.global_step:
            return
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        self.last_model_path = path
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self.write_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write_last(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and self.dirpath is not None:
            self.write_last(trainer)


class ChapterProgressPrinter(Callback):
    """Prints the chapter's progress line every ``every_n_epochs`` epochs:
    ``Epoch: 20 | Train loss: 0.69326 | Train accuracy: 49.50% | Val loss: 0.69888 | Val accuracy: 43.50%``."""

    def __init__(self, every_n_epochs: Optional[int] = None) -> None:
        """
        Args:
            every_n_epochs: Print at epochs 0, N, 2N, ...; ``null`` prints nothing.
        """
        check(every_n_epochs is None or every_n_epochs >= 1, "every_n_epochs",
              "a positive integer, or null to print nothing", every_n_epochs)
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or trainer.current_epoch % self.every_n_epochs:
            return
        metrics = trainer.callback_metrics
        line = f"Epoch: {trainer.current_epoch}"
        for stage, label in (("train", "Train"), ("val", "Val")):
            if f"{stage}/loss" in metrics:
                line += (f" | {label} loss: {float(metrics[f'{stage}/loss']):.5f}"
                         f" | {label} accuracy: {100 * float(metrics[f'{stage}/acc']):.2f}%")
        pl_module.print(line)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (``x1,x2,probability,label``) into the run directory after ``predict``."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.path: Optional[str] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict":
            self.path = os.path.join(trainer.log_dir, "predictions.csv")  # log_dir is collective: every rank asks

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        rows = torch.cat(predictions).cpu()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            f.write("x1,x2,probability,label\n")
            for x1, x2, p in rows.tolist():
                f.write(f"{x1:.6g},{x2:.6g},{p:.6g},{int(p > 0.5)}\n")
