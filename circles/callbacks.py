"""Lightning callbacks of a circles run: checkpoints, the chapter's progress line, the run's summary and its
predictions (the pictures: :mod:`circles.boundary`)."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from circles.bayes import accuracy_interval
from circles.boundary import DecisionBoundaryCallback, collapse_lines, weights_text
from circles.contracts import classifier, trainer_callbacks, trainer_data
from circles.errors import check
from circles.files import atomic_file
from circles.logger import tensorboard_command, tensorboard_of


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` on the monitored metric, plus a ``last.ckpt`` that really holds the last state.

    ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also saves a top-k checkpoint, so
    after the best epoch it stops moving. Here ``last.ckpt`` is written every ``last_every_n_epochs`` epochs, at
    the end of fit and when fit is interrupted (Ctrl-C, SIGTERM), and never when training failed (a diverged
    model must not replace the last good one). Nothing is written in epochs where nothing changed.
    """

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
            last_every_n_epochs: Interval of ``last.ckpt`` writes during fit (resume points after a hard kill).
            save_on_train_epoch_end: Check ``monitor`` at the end of the training epoch instead of after validation.
            **kwargs: Other ``ModelCheckpoint`` arguments (``save_last`` is managed here).
        """
        check(last_every_n_epochs >= 1, "last_every_n_epochs", "a positive integer", last_every_n_epochs)
        kwargs.pop("save_last", None)
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=False,
                         save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)
        self.last_every_n_epochs = last_every_n_epochs
        self.last_saved_step: int | None = None  # the global step that last.ckpt holds
        self._stage: str | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._stage == "fit":  # validate/test/predict only read the weights; their run has no checkpoints
            super().load_state_dict(state_dict)

    def write_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for the trainer's current state, unless it already holds it."""
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # set by the Trainer, not declared
        if fast_dev_run or trainer.sanity_checking or self.last_saved_step == trainer.global_step:
            return
        path = os.path.join(str(self.dirpath), self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        self.last_model_path = path
        for logger in trainer.loggers:  # the logs reach the checkpoint's state before the file exists (kill -9)
            logger.save()
        trainer.save_checkpoint(path, self.save_weights_only)
        self.last_saved_step = trainer.global_step

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self.write_last(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Instead of ``ModelCheckpoint``'s own (which saves ``last.ckpt`` only with ``save_last``): the final state."""
        self.write_last(trainer)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Fit's state on Ctrl-C or SIGTERM; validate, test and predict have none to save (only fit writes
        checkpoints: a test run's last.ckpt would become the newest run's, for ``--ckpt_path last``)."""
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


class RunSummary(Callback):
    """The run's own account of itself. After ``validate`` and ``test`` (the fit's own test included): the numbers,
    on what points and from the weights of which epoch, beside the best accuracy possible where it is known. At the
    end of fit (also one stopped by SIGTERM or Ctrl-C), where everything is: the best checkpoint and its score, where
    the points came from, the run directory, the decision-boundary picture and the TensorBoard command; while
    ``hold`` is set (the command line's test after fit follows), these lines wait for :meth:`flush`. With several
    members, ``members.csv`` in the run directory after fit and after test: per member its seed and accuracies."""

    def __init__(self) -> None:
        self.hold = False
        self._pending: list[str] = []

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        self._write_members(trainer, pl_module, run_dir)
        if not trainer.is_global_zero or run_dir is None:
            return
        lines = [""]
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
            lines.append(f"Best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}"
                         f"  ({os.path.normpath(checkpoint.best_model_path)})")
        model, data = classifier(pl_module), trainer_data(trainer)
        collapsed = collapse_lines(model, model.feature_names, data.class_legend())
        if collapsed:
            lines.append("No activation, so the layers are one affine map" + (" (member 0's)" if model.members > 1
                                                                             else "") + ":")
            lines += [f"  {line}" for line in collapsed]
        lines.append(f"Data: {data.describe()}")
        lines.append(f"Run directory: {os.path.normpath(run_dir)}")
        boundary = next((cb for cb in trainer_callbacks(trainer) if isinstance(cb, DecisionBoundaryCallback)), None)
        if boundary is not None and boundary.png_path:
            lines.append(f"Decision boundary: {os.path.normpath(boundary.png_path)}")
        tensorboard = tensorboard_of(trainer.loggers)
        if tensorboard is not None:
            lines.append(f"Open it in TensorBoard: {tensorboard_command(tensorboard.root_dir)}")
        self._pending = lines
        if not self.hold:
            self.flush()

    def flush(self) -> None:
        """Print the end-of-fit lines held back."""
        if self._pending:
            print("\n".join(self._pending), flush=True)
        self._pending = []

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and trainer.is_global_zero:
            print("\n".join(evaluation_lines(trainer, pl_module, "val")), flush=True)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_members(trainer, pl_module, trainer.log_dir)
        if trainer.is_global_zero:
            print("\n".join(evaluation_lines(trainer, pl_module, "test")), flush=True)

    @staticmethod
    def _write_members(trainer: pl.Trainer, pl_module: pl.LightningModule, run_dir: str | None) -> None:
        table = classifier(pl_module).member_table()
        if table is None or run_dir is None or not trainer.is_global_zero:
            return
        os.makedirs(run_dir, exist_ok=True)
        with atomic_file(os.path.join(run_dir, "members.csv")) as f:
            f.write(",".join(table) + "\n")
            for row in zip(*table.values(), strict=True):
                f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")


def evaluation_lines(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> list[str]:
    """What ``validate`` or ``test`` measured, in the digits that mean something: accuracy (with several members its
    spread and the ensemble's), loss, the points and weights it is of; for ``test``, the best accuracy possible where
    it is known, and whether it lies outside the accuracy's 95% interval (:func:`accuracy_interval`: the
    measurement's sampling error)."""
    model, data = classifier(pl_module), trainer_data(trainer)
    values, points = model.epoch_metrics, data.points(stage)
    n = len(points[0]) if points is not None else 0
    acc = values.get(f"{stage}/acc")
    if acc is None:
        return []
    name = {"val": "Validation", "test": "Test"}[stage]
    if model.members > 1:
        spread = (f" (mean of {model.members} seeds, std {values.get(f'{stage}/acc_std', 0):.4f}, from "
                  f"{values.get(f'{stage}/acc_min', acc):.4f} to {values.get(f'{stage}/acc_max', acc):.4f})")
        if f"{stage}/acc_ensemble" in values:
            spread += f", their ensemble {values[f'{stage}/acc_ensemble']:.4f}"
    else:
        spread = ""
    lines = [f"{name}: acc {acc:.4f}{spread}, loss {values[f'{stage}/loss']:.5f} on {n:,} points, "
             f"{weights_text(trainer, pl_module)}"]
    if stage == "val" and trainer.ckpt_path and os.path.basename(str(trainer.ckpt_path)).startswith("best"):
        lines.append("  best.ckpt holds the first epoch that reached the best val/acc; later epochs can lower the "
                     "loss at the same accuracy (last.ckpt).")
    bayes = values.get("test/bayes_acc") if stage == "test" else None
    if bayes is not None and n:
        low, high = accuracy_interval(acc, n)
        interval = f"the 95% interval of {n:,} test points: {low:.4f} to {high:.4f}"
        verdict = (f"within the sampling error ({interval})" if low <= bayes <= high else
                   f"short of the best possible by more than the sampling error ({interval})" if bayes > high else
                   f"above it by more than the sampling error ({interval}): the test points are not of the "
                   "distribution it is computed for")
        lines.append(f"  Bayes-optimal acc {bayes:.4f}: gap {bayes - acc:+.4f}, {verdict}")
    return lines


class ChapterProgressPrinter(Callback):
    """Prints the chapter's progress line every ``every_n_epochs`` epochs and at the last one:
    ``Epoch: 20 | Train loss: 0.69326 | Train accuracy: 49.50% | Val loss: 0.69888 | Val accuracy: 43.50%``."""

    def __init__(self, every_n_epochs: int | None = 10) -> None:
        """
        Args:
            every_n_epochs: Print at epochs 0, N, 2N, ... and at the last epoch; ``null`` prints nothing.
        """
        check(every_n_epochs is None or every_n_epochs >= 1, "every_n_epochs",
              "a positive integer, or null to print nothing", every_n_epochs)
        self.every_n_epochs = every_n_epochs

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if self.every_n_epochs is None or trainer.current_epoch % self.every_n_epochs and not last:
            return
        metrics = classifier(pl_module).epoch_metrics
        line = f"Epoch: {trainer.current_epoch}"
        for stage, label in (("train", "Train"), ("val", "Val")):
            if f"{stage}/loss" in metrics:
                line += (f" | {label} loss: {metrics[f'{stage}/loss']:.5f}"
                         f" | {label} accuracy: {100 * metrics[f'{stage}/acc']:.2f}%")
        pl_module.print(line)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (``x1,x2,probability,label``: the probability of class 1, or with more than two
    classes of the predicted one; with several members ``probability`` is their mean and ``probability_std`` their
    spread; the label is the class's name when the data names its classes) into the run directory after
    ``predict``."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.path: str | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict":
            self.path = os.path.join(str(trainer.log_dir), "predictions.csv")  # log_dir is collective: every rank asks

    @override
    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        if not trainer.is_global_zero or self.path is None:
            return
        x = torch.cat([points for points, _ in predictions]).cpu()
        probs = torch.cat([p for _, p in predictions], dim=1).cpu()  # (K, N) or (K, N, C)
        mean = probs.mean(0)
        label = (mean > 0.5).long() if mean.dim() == 1 else mean.argmax(-1)
        columns = [x[:, 0], x[:, 1], mean if mean.dim() == 1 else mean.gather(-1, label[:, None])[:, 0]]
        if len(probs) > 1:  # the members' spread of that probability
            std = probs.std(0)
            columns.append(std if std.dim() == 1 else std.gather(-1, label[:, None])[:, 0])
        names = trainer_data(trainer).class_names
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_file(self.path) as f:
            f.write("x1,x2,probability," + ("probability_std," if len(probs) > 1 else "") + "label\n")
            for *values, k in zip(*(c.tolist() for c in columns), label.tolist(), strict=True):
                f.write("".join(f"{v:.6g}," for v in values) + f"{names[k] if names else k}\n")
        print(f"Predictions written to {self.path}", flush=True)
