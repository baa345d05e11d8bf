"""The run's checkpoints: ``best.ckpt`` on the monitored metric and a ``last.ckpt`` that really
holds the last state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from circles.contracts import trainer_callbacks
from circles.errors import ConfigError
from circles.model.training import TrainingDiverged
from circles.ranges import Count
from circles.runs.logger import TensorBoardRunLogger

PENDING = ".last.ckpt.pending"  # in the checkpoints folder: a last.ckpt waiting for its events


def flush_loggers(trainer: pl.Trainer) -> None:
    """Every logger's events to disk (a kill -9 after this loses none of them)."""
    for logger in trainer.loggers:
        logger.flush() if isinstance(logger, TensorBoardRunLogger) else logger.save()


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
        mode: Literal["min", "max"] = "max",
        filename: str | None = "best",
        last_every_n_epochs: Count = 50,
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
        super().__init__(
            monitor=monitor,
            mode=mode,
            filename=filename,
            save_on_train_epoch_end=save_on_train_epoch_end,
            **{**kwargs, "save_last": False},
        )
        self.last_every_n_epochs = last_every_n_epochs
        self.last_saved_step: int | None = None  # the global step that last.ckpt holds
        self._pending = False  # a last.ckpt written beside its place (PENDING), not yet in it
        self._stage: str | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """A callback that stops on a validation metric has one to read (without validation
        batches Lightning would fail at the end of the first epoch)."""
        stopper = next(
            (
                c
                for c in trainer_callbacks(trainer)
                if isinstance(c, EarlyStopping) and c.monitor.startswith("val/")
            ),
            None,
        )
        if stage == "fit" and trainer.limit_val_batches == 0 and stopper is not None:
            raise ConfigError(
                "trainer.limit_val_batches",
                f"above 0 while EarlyStopping stops on {stopper.monitor}, which validation "
                "measures",
                trainer.limit_val_batches,
                "Give validation batches, or leave the EarlyStopping config out.",
            )
        super().setup(trainer, pl_module, stage)
        self._stage = stage

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # validate/test/predict only read the weights; their run has no checkpoints
        if self._stage not in ("validate", "test", "predict"):
            super().load_state_dict(state_dict)

    def write_last(self, trainer: pl.Trainer, publish: bool = True) -> None:
        """Write ``last.ckpt`` for the trainer's current state, unless it already holds it. With
        ``publish`` false the file is written beside it and put in its place by
        :meth:`publish_last` (at the next epoch's start: see :meth:`on_train_epoch_end`)."""
        if trainer.fast_dev_run or trainer.sanity_checking:  # type: ignore[attr-defined]
            return
        if self.last_saved_step == trainer.global_step:
            if publish:
                self.publish_last(trainer)
            return
        self.last_model_path = self._path(self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        flush_loggers(trainer)  # the logs reach the checkpoint's state before the file exists
        trainer.save_checkpoint(
            self.last_model_path if publish else self._path(PENDING), self.save_weights_only
        )
        self.last_saved_step = trainer.global_step
        self._pending = not publish
        if publish and trainer.is_global_zero:  # a newer state than the one waiting
            Path(self._path(PENDING)).unlink(missing_ok=True)

    def publish_last(self, trainer: pl.Trainer) -> None:
        """The ``last.ckpt`` written beside its place put there, after the loggers' events are
        flushed."""
        if not self._pending:
            return
        self._pending = False
        flush_loggers(trainer)
        if trainer.is_global_zero:
            os.replace(self._path(PENDING), self.last_model_path)

    def _path(self, name: str) -> str:
        return os.path.join(str(self.dirpath), name)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every ``last_every_n_epochs`` epochs, ``last.ckpt`` of this epoch's end, put in place
        at the next epoch's start: Lightning hands the loggers an epoch's training values only
        after the callbacks' ``on_train_epoch_end``, and a ``last.ckpt`` on disk before them
        would, after a kill -9 right then, continue a run whose curves miss that epoch."""
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self.write_last(trainer, publish=False)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.publish_last(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Instead of ``ModelCheckpoint``'s own (which saves ``last.ckpt`` only with
        ``save_last``): the final state."""
        self.write_last(trainer)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Fit's state on Ctrl-C or SIGTERM (after any other error, the last epoch's end that was
        waiting to be put in place; a diverged fit's error names the checkpoints kept from before
        it); validate, test and predict have none to save (only fit writes checkpoints: a test
        run's last.ckpt would become the newest run's, for ``--ckpt_path last``)."""
        if self._stage != "fit" or self.dirpath is None:
            return
        self.publish_last(trainer)  # a good epoch's end, whatever went wrong after it
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.write_last(trainer)
        paths = (self.best_model_path, self.last_model_path)
        written = [os.path.normpath(p) for p in paths if p and os.path.isfile(p)]
        if isinstance(exception, TrainingDiverged) and written:
            exception.notes.append(f"Checkpoints from before the divergence: {', '.join(written)}.")

    def holds_current_state(self, trainer: pl.Trainer) -> bool:
        """Whether ``last.ckpt`` exists and holds the trainer's current step."""
        return (
            not self._pending
            and self.last_saved_step == trainer.global_step
            and os.path.isfile(self.last_model_path)
        )
