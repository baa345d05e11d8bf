"""The run's checkpoints: ``best.ckpt`` on the monitored metric and a ``last.ckpt`` that really
holds the last state."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from circles.errors import check
from circles.runs.logger import TensorBoardRunLogger


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` on the monitored metric, plus a ``last.ckpt`` that really holds the last state.

    ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also saves a top-k
    checkpoint, so after the best epoch it stops moving. Here ``last.ckpt`` is written every
    ``last_every_n_epochs`` epochs, at the end of fit and when fit is interrupted (Ctrl-C,
    SIGTERM), and never when training failed (a diverged model must not replace the last good
    one). Nothing is written in epochs where nothing changed."""

    def __init__(
        self,
        monitor: str | None = "val/acc",
        mode: str = "max",
        filename: str | None = "best",
        last_every_n_epochs: int = 50,
        save_on_train_epoch_end: bool | None = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            monitor: Metric whose best value selects ``best.ckpt``.
            mode: ``max`` or ``min``: which direction of ``monitor`` is better.
            filename: Name of the best checkpoint, without ``.ckpt``.
            last_every_n_epochs: Interval of ``last.ckpt`` writes during fit (resume points after a
                hard kill).
            save_on_train_epoch_end: Check ``monitor`` at the end of the training epoch instead of
                after validation.
            **kwargs: Other ``ModelCheckpoint`` arguments (``save_last`` is managed here).
        """
        check(
            last_every_n_epochs >= 1,
            "last_every_n_epochs",
            "a positive integer",
            last_every_n_epochs,
        )
        kwargs.pop("save_last", None)
        super().__init__(
            monitor=monitor,
            mode=mode,
            filename=filename,
            save_last=False,
            save_on_train_epoch_end=save_on_train_epoch_end,
            **kwargs,
        )
        self.last_every_n_epochs = last_every_n_epochs
        self.last_saved_step: int | None = None  # the global step that last.ckpt holds
        self._stage: str | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # validate/test/predict only read the weights; their run has no checkpoints
        if self._stage not in ("validate", "test", "predict"):
            super().load_state_dict(state_dict)

    def write_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for the trainer's current state, unless it already holds it."""
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # the Trainer sets it
        if fast_dev_run or trainer.sanity_checking or self.last_saved_step == trainer.global_step:
            return
        path = os.path.join(str(self.dirpath), self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        self.last_model_path = path
        # the logs reach the checkpoint's state before the file exists (kill -9)
        for logger in trainer.loggers:  # the logs reach the checkpoint's state before it exists
            logger.flush() if isinstance(logger, TensorBoardRunLogger) else logger.save()
        trainer.save_checkpoint(path, self.save_weights_only)
        self.last_saved_step = trainer.global_step

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self.write_last(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Instead of ``ModelCheckpoint``'s own (which saves ``last.ckpt`` only with
        ``save_last``): the final state."""
        self.write_last(trainer)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Fit's state on Ctrl-C or SIGTERM; validate, test and predict have none to save (only
        fit writes checkpoints: a test run's last.ckpt would become the newest run's, for
        ``--ckpt_path last``)."""
        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if stopped and self._stage == "fit" and self.dirpath is not None:
            self.write_last(trainer)

    def written(self) -> list[str]:
        """The best and the last checkpoint files that exist."""
        paths = (self.best_model_path, self.last_model_path)
        return [os.path.normpath(p) for p in paths if p and os.path.isfile(p)]

    def holds_current_state(self, trainer: pl.Trainer) -> bool:
        """Whether ``last.ckpt`` exists and holds the trainer's current step."""
        return self.last_saved_step == trainer.global_step and os.path.isfile(self.last_model_path)
