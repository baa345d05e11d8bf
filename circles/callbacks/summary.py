"""The run's own account of itself on the console: what an evaluation measured, where a fit's
files are, and each member's numbers in ``members.csv``."""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from typing_extensions import override

from circles.bayes import accuracy_interval
from circles.contracts import classifier, trainer_callbacks, trainer_data
from circles.model.metrics import latest_values
from circles.pictures.notes import collapse_lines
from circles.runs.directory import BOUNDARY_PNG, BOUNDARY_TEST_PNG, MEMBERS_CSV, atomic_file
from circles.runs.logger import tensorboard_command, tensorboard_of


class RunSummary(Callback):
    """The run's own account of itself. After ``validate`` and ``test`` (the fit's own test
    included): the numbers, on what points and from the weights of which epoch, beside the best
    accuracy possible where it is known. At the end of fit (also one stopped by SIGTERM or
    Ctrl-C), where everything is: the best checkpoint and its score, where the points came from,
    the run directory, the decision-boundary picture and the TensorBoard command; while ``hold``
    is set (the command line's test after fit follows), these lines wait for :meth:`flush`. With
    several members, ``members.csv`` in the run directory after fit and after test: per member
    its seed and accuracies."""

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
            lines.append(
                f"Best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}"
                f"  ({os.path.normpath(checkpoint.best_model_path)})"
            )
        model = classifier(pl_module)
        data = trainer_data(trainer)
        collapsed = collapse_lines(model, model.feature_names, data.class_legend())
        if collapsed:
            member = " (member 0's)" if model.members > 1 else ""
            lines.append(f"No activation, so the layers are one affine map{member}:")
            lines += [f"  {line}" for line in collapsed]
        # why the fit ended before max_epochs: each EarlyStopping that stopped it
        lines += [
            f"Stopped after epoch {callback.stopped_epoch} of {trainer.max_epochs} by "
            "EarlyStopping: "
            + " ".join(
                callback.stopping_reason_message.replace("Signaling Trainer to stop.", "").split()
            )
            for callback in trainer_callbacks(trainer)
            if isinstance(callback, EarlyStopping)
            and callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED
            and callback.stopping_reason_message
        ]
        lines += [f"Data: {data.describe()}", f"Run directory: {os.path.normpath(run_dir)}"]
        lines += _picture_line(run_dir, BOUNDARY_PNG)
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
        if trainer.state.fn == "validate":
            self._evaluated(trainer, pl_module, "val")

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_members(trainer, pl_module, trainer.log_dir)
        self._evaluated(trainer, pl_module, "test")

    def _evaluated(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """What an evaluation measured, and where its own run went (its folder, in its trained
        run's ``evaluations``; not for the fit's own test, whose run the end of fit names)."""
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        lines = evaluation_lines(trainer, pl_module, stage)
        if not self.hold and run_dir is not None:
            lines.append(f"Run directory: {os.path.normpath(run_dir)}")
            lines += _picture_line(run_dir, BOUNDARY_TEST_PNG) if stage == "test" else []
        print("\n".join(lines), flush=True)

    @staticmethod
    def _write_members(
        trainer: pl.Trainer, pl_module: pl.LightningModule, run_dir: str | None
    ) -> None:
        table = classifier(pl_module).member_table()
        if table is None or run_dir is None or not trainer.is_global_zero:
            return
        os.makedirs(run_dir, exist_ok=True)
        rows = [
            ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)
            for row in zip(*table.values(), strict=True)
        ]
        with atomic_file(os.path.join(run_dir, MEMBERS_CSV)) as f:
            f.write("".join(f"{line}\n" for line in [",".join(table), *rows]))


def _picture_line(run_dir: str, name: str) -> list[str]:
    """The line naming the decision-boundary picture ``name`` in ``run_dir``, if it is there."""
    picture = os.path.join(run_dir, name)
    return [f"Decision boundary: {os.path.normpath(picture)}"] if os.path.isfile(picture) else []


def evaluation_lines(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> list[str]:
    """What ``validate`` or ``test`` measured, in the digits that mean something: accuracy (with
    several members its spread and the ensemble's), loss, the points and weights it is of; for
    ``test``, the best accuracy possible where it is known, and whether it lies outside the
    accuracy's 95% interval (:func:`accuracy_interval`: the measurement's sampling error)."""
    values = latest_values(trainer.callback_metrics)
    acc = values.get(f"{stage}/acc")
    if acc is None:
        return []
    points = trainer_data(trainer).points(stage)
    n = len(points[0]) if points is not None else 0
    name = {"val": "Validation", "test": "Test"}[stage]
    # the members' spread (see circles.model.metrics.spread) and their ensemble's
    spread = (
        f" (mean of {classifier(pl_module).members} seeds, std {values[f'{stage}/acc_std']:.4f}, "
        f"from {values[f'{stage}/acc_min']:.4f} to {values[f'{stage}/acc_max']:.4f})"
        if f"{stage}/acc_std" in values
        else ""
    ) + (
        f", their ensemble {values[f'{stage}/acc_ensemble']:.4f}"
        if f"{stage}/acc_ensemble" in values
        else ""
    )
    lines = [
        f"{name}: acc {acc:.4f}{spread}, loss {values[f'{stage}/loss']:.5f} on {n:,} points, "
        f"{weights_text(trainer, pl_module)}"
    ]
    if (
        stage == "val"
        and trainer.ckpt_path
        and os.path.basename(str(trainer.ckpt_path)).startswith("best")
    ):
        lines.append(
            "  best.ckpt holds the first epoch that reached the best val/acc; later epochs can "
            "lower the loss at the same accuracy (last.ckpt)."
        )
    bayes = values.get("test/bayes_acc") if stage == "test" else None
    if bayes is not None and n:
        low, high = accuracy_interval(acc, n)
        interval = f"the 95% interval of {n:,} test points: {low:.4f} to {high:.4f}"
        verdict = (
            f"within the sampling error ({interval})"
            if low <= bayes <= high
            else f"short of the best possible by more than the sampling error ({interval})"
            if bayes > high
            else f"above it by more than the sampling error ({interval}): the test points are not "
            "of the distribution it is computed for"
        )
        lines.append(f"  Bayes-optimal acc {bayes:.4f}: gap {bayes - acc:+.4f}, {verdict}")
    return lines


def weights_text(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    """Which weights an evaluation used: ``weights of epoch 99 (last.ckpt)``, or of the fit that
    just ended."""
    epoch = classifier(pl_module).weights_epoch
    source = os.path.basename(str(trainer.ckpt_path)) if trainer.ckpt_path else "the end of the fit"
    return f"weights of epoch {epoch if epoch is not None else '?'} ({source})"
