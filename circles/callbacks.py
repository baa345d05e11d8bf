"""Lightning callbacks of a circles run: checkpoints, the chapter's progress line, the end-of-fit summary,
predictions and decision boundaries."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from circles.contracts import classifier, trainer_callbacks, trainer_data
from circles.errors import check
from circles.files import atomic_file
from circles.logger import tensorboard_command, tensorboard_of
from circles.metrics import accuracy_text
from circles.plotting import Animation, BoundaryPanel, boundary_figure, boundary_image, grid_axes, grid_predictions


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
    """The run's own account of itself. At the end of fit (also one stopped by SIGTERM or Ctrl-C), where everything
    is: the best checkpoint and its score, where the points came from, the run directory, the decision-boundary
    picture and the TensorBoard command. With several members, ``members.csv`` in the run directory after fit and
    after test: per member its seed and accuracies."""

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
        lines.append(f"Data: {trainer_data(trainer).describe()}")
        lines.append(f"Run directory: {os.path.normpath(run_dir)}")
        boundary = next((cb for cb in trainer_callbacks(trainer) if isinstance(cb, DecisionBoundaryCallback)), None)
        if boundary is not None and boundary.png_path:
            lines.append(f"Decision boundary: {os.path.normpath(boundary.png_path)}")
        tensorboard = tensorboard_of(trainer.loggers)
        if tensorboard is not None:
            lines.append(f"Open it in TensorBoard: {tensorboard_command(tensorboard.root_dir)}")
        print("\n".join(lines), flush=True)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_members(trainer, pl_module, trainer.log_dir)

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


class ChapterProgressPrinter(Callback):
    """Prints the chapter's progress line every ``every_n_epochs`` epochs:
    ``Epoch: 20 | Train loss: 0.69326 | Train accuracy: 49.50% | Val loss: 0.69888 | Val accuracy: 43.50%``."""

    def __init__(self, every_n_epochs: int | None = None) -> None:
        """
        Args:
            every_n_epochs: Print at epochs 0, N, 2N, ...; ``null`` prints nothing.
        """
        check(every_n_epochs is None or every_n_epochs >= 1, "every_n_epochs",
              "a positive integer, or null to print nothing", every_n_epochs)
        self.every_n_epochs = every_n_epochs

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or trainer.current_epoch % self.every_n_epochs:
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


class DecisionBoundaryCallback(Callback):
    """Shows what the model learned: its decision boundary over the data, in TensorBoard and as a PNG.

    Every ``every_n_epochs`` epochs (epoch 0 included) and at the end of fit, the Train | Val picture is written
    to TensorBoard under ``decision_boundary/train_val`` at ``global_step = epoch``; ``test`` writes
    ``decision_boundary/test``. These frames are drawn straight from the prediction grid (no matplotlib); the
    last picture of a fit is also saved with matplotlib, axes and all, as ``decision_boundary.png`` in the run
    directory (``decision_boundary_test.png`` after ``test``), and the frames of the fit as an animation,
    ``decision_boundary.gif``. With ``show_neurons`` every frame also shows each hidden unit's output over the
    plane, one image per layer (``neurons/layer_1``, ...). Runs on rank zero only.
    """

    TAG = "decision_boundary"

    def __init__(self, every_n_epochs: int = 50, resolution: int = 101, show_probability: bool = False,
                 show_neurons: bool = False, gif: bool = True) -> None:
        """
        Args:
            every_n_epochs: Epochs between two TensorBoard frames.
            resolution: Grid points per axis over the data's extent +- 0.1.
            show_probability: Add the probability view (the probability, its 0.5 contour drawn) under the class view.
            show_neurons: Also write, per hidden layer, a tile per unit showing its output over the plane.
            gif: At the end of fit, save the frames as ``decision_boundary.gif`` (at most 100, evenly spaced).
        """
        check(every_n_epochs >= 1, "every_n_epochs", "a positive integer", every_n_epochs)
        check(resolution >= 2, "resolution", "an integer >= 2", resolution)
        self.every_n_epochs, self.resolution, self.gif = every_n_epochs, resolution, gif
        self.show_probability, self.show_neurons = show_probability, show_neurons
        self.frames = Animation(max_frames=100)
        self.run_dir: str | None = None
        self.png_path: str | None = None
        self._grids: dict[str, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]] = {}
        self._last_frame_epoch: int | None = None
        self._warned = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.run_dir = trainer.log_dir  # collective under DDP: every rank must ask, not only rank zero

    def _panels(self, trainer: pl.Trainer, pl_module: pl.LightningModule, group: str,
                stages: tuple[str, ...]) -> list[BoundaryPanel] | None:
        """The model over the grid of ``stages``' points (made the first time), one panel per stage; None before the
        data is set up."""
        if group not in self._grids:
            found = {stage: trainer_data(trainer).points(stage) for stage in stages}
            if any(points is None for points in found.values()):
                return None
            sets = {stage: (x.cpu().numpy(), y.cpu().numpy()) for stage, (x, y) in found.items()}  # type: ignore[misc]
            axes = grid_axes(np.concatenate([x for x, _ in sets.values()]), self.resolution)
            self._grids[group] = (sets, axes)
        sets, (xs, ys) = self._grids[group]
        probs, votes = grid_predictions(pl_module, xs, ys)
        return [BoundaryPanel.of(name.capitalize(), xs, ys, probs, x, y, max_points=2000, votes=votes)
                for name, (x, y) in sets.items()]

    def _writer(self, trainer: pl.Trainer) -> Any:
        tensorboard = tensorboard_of(trainer.loggers)
        if tensorboard is not None:
            return tensorboard.experiment
        if not self._warned:
            rank_zero_warn("DecisionBoundaryCallback: no TensorBoard logger, so no frames are logged; "
                           "the PNG is still saved in the run directory.")
            self._warned = True
        return None

    @staticmethod
    def _members_note(pl_module: pl.LightningModule) -> str:
        model = classifier(pl_module)
        if model.members == 1:
            return ""
        if model.num_classes == 2:
            return f"colour: share of the {model.members} members voting class 1"
        return f"colour: the class most of the {model.members} members vote for, paler where they disagree"

    def _frame(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel], tag: str,
               step: int) -> np.ndarray:
        """The frame of ``panels`` under a header (the epoch and its accuracies), written to TensorBoard."""
        what, stages = ("test set, weights of epoch", ("test",)) if tag == "test" else ("epoch", ("train", "val"))
        header = f"{what} {step}   {accuracy_text(classifier(pl_module).epoch_metrics, stages, '   ')}".rstrip()
        data = trainer_data(trainer)
        image = boundary_image(panels, self.show_probability, header=header, note=self._members_note(pl_module),
                               classes=data.class_legend())
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_image(f"{self.TAG}/{tag}", image, global_step=step, dataformats="HWC")
            if self.show_neurons and tag != "test":
                self._write_neurons(writer, pl_module, step)
        return image

    def _write_neurons(self, writer: Any, pl_module: pl.LightningModule, step: int) -> None:
        from circles.plotting import grid_activations, neuron_image

        for i, layer in enumerate(grid_activations(classifier(pl_module), *self._grids["fit"][1]), start=1):
            image = neuron_image(layer, header=f"epoch {step}, hidden layer {i}")
            writer.add_image(f"neurons/layer_{i}", image, global_step=step, dataformats="HWC")

    def _fit_frame(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel],
                   epoch: int) -> None:
        image = self._frame(trainer, pl_module, panels, "train_val", epoch)
        self._last_frame_epoch = epoch
        if self.gif:
            self.frames.add(image)

    def _save_png(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel], name: str,
                  title: str) -> str:
        path = os.path.join(str(self.run_dir), name)
        os.makedirs(str(self.run_dir), exist_ok=True)
        note = self._members_note(pl_module)
        data = trainer_data(trainer)
        figure = boundary_figure(panels, self.show_probability, title=f"{title} ({note})" if note else title,
                                 classes=data.class_legend(), probability_label=data.probability_label())
        figure.savefig(path, dpi=80)
        return path

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        panels = self._panels(trainer, pl_module, "fit", ("train", "val"))
        if panels is not None:
            self._fit_frame(trainer, pl_module, panels, epoch)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch - 1
        panels = self._panels(trainer, pl_module, "fit", ("train", "val")) if trainer.is_global_zero else None
        if epoch < 0 or panels is None:
            return
        if self._last_frame_epoch != epoch:
            self._fit_frame(trainer, pl_module, panels, epoch)
        if self.gif and len(self.frames) > 1:
            self.frames.save(os.path.join(str(self.run_dir), "decision_boundary.gif"))
        accuracy = accuracy_text(classifier(pl_module).epoch_metrics, ("train", "val"), ", ")
        title = f"Epoch {epoch}: {accuracy}"
        self.png_path = self._save_png(trainer, pl_module, panels, "decision_boundary.png", title)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        panels = self._panels(trainer, pl_module, "test", ("test",)) if trainer.is_global_zero else None
        if panels is None:
            return
        self._frame(trainer, pl_module, panels, "test", max(trainer.current_epoch - 1, 0))
        accuracy = classifier(pl_module).epoch_metrics.get("test/acc")
        title = f"Test set: acc {accuracy:.4f}" if accuracy is not None else "Test set"
        self._save_png(trainer, pl_module, panels, "decision_boundary_test.png", title)
