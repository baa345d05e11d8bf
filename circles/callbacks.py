"""Lightning callbacks of a circles run: checkpoints, the chapter's progress line, predictions, decision boundaries."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from circles.errors import Interrupted, check
from circles.plotting import (
    BoundaryPanel, boundary_figure, boundary_image, grid_activations, grid_axes, grid_predictions, neuron_image, save_gif,
)
from circles.runs import atomic_file


TENSORBOARD_IMAGES = 10_000  # frames kept per tag by the printed tensorboard command (TensorBoard's default: 10)


def _latest_metrics(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    """The epoch's metrics: the module's own (CirclesClassifier keeps them as floats), else Lightning's."""
    return getattr(pl_module, "epoch_metrics", None) or trainer.callback_metrics


def _accuracies(metrics: Any, stages: tuple[str, ...], separator: str) -> str:
    """``train acc 0.865<separator>val acc 0.870``: the stages' accuracies that ``metrics`` holds."""
    return separator.join(f"{stage} acc {float(metrics[f'{stage}/acc']):.3f}" for stage in stages
                          if f"{stage}/acc" in metrics)


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
        save_on_train_epoch_end: Optional[bool] = False,
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
        self.last_saved_step: Optional[int] = None  # the global step that last.ckpt holds
        self._stage: Optional[str] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._stage == "fit":  # validate/test/predict only read the weights; their run has no checkpoints
            super().load_state_dict(state_dict)

    def write_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for the trainer's current state, unless it already holds it."""
        if trainer.fast_dev_run or trainer.sanity_checking or self.last_saved_step == trainer.global_step:
            return
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        self.last_model_path = path
        for logger in trainer.loggers:  # the logs reach the checkpoint's state before the file exists (kill -9)
            logger.save()
        trainer.save_checkpoint(path, self.save_weights_only)
        self.last_saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self.write_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write_last(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and self.dirpath is not None:
            self.write_last(trainer)

    def holds_current_state(self, trainer: pl.Trainer) -> bool:
        """Whether ``last.ckpt`` exists and holds the trainer's current step."""
        return self.last_saved_step == trainer.global_step and os.path.isfile(self.last_model_path)


class GracefulStopCallback(Callback):
    """SIGTERM (a scheduler ending the job) and the first Ctrl-C stop fit cleanly, on every rank together: the
    signal only sets a flag; after each training step the ranks agree on it (one tiny reduce under DDP) and fit
    stops the way early stopping does, so ``on_train_end`` writes a consistent ``last.ckpt``. ``signal`` then says
    which signal stopped it. A second Ctrl-C interrupts at once.

    While training runs it stands in for Lightning's SIGTERM handler, which broadcasts from inside the handler and
    so deadlocks a DDP run whenever the signal lands during another collective (a metric's all-gather, say). For
    the same reason it defers Lightning's SLURM requeue handler (SIGUSR1: save the hpc checkpoint, with a barrier,
    and requeue the job): the signal sets a flag, and the ranks run that handler together after the step in which
    they agreed on it.
    ``validate``, ``test`` and ``predict`` have no state to save: there the signal stops the loop at once (Lightning's
    own handler only notes a SIGTERM outside fit, and predict would go on to write its file).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    REQUEUE = getattr(signal, "SIGUSR1", None)  # SLURM's warning before the end of a job's time

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.requeue = False
        self._previous: dict[int, Any] = {}

    def _install(self, handler: Any) -> None:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous = {s: signal.signal(s, handler) for s in self.SIGNALS}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signal, self.requeue = None, False
        self._install(self._on_signal)
        if self.REQUEUE is not None and self._previous and callable(signal.getsignal(self.REQUEUE)):
            self._previous[self.REQUEUE] = signal.signal(self.REQUEUE, self._on_requeue_signal)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self.requeue = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @staticmethod
    def _stop_now(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt if signum == signal.SIGINT else SIGTERMException

    def _evaluation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # fit's validation keeps fit's handler
            self._install(self._stop_now)

    def _evaluation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._restore()

    on_validation_start = on_test_start = on_predict_start = _evaluation_start
    on_validation_end = on_test_end = on_predict_end = _evaluation_end

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop, requeue = self.signal is not None, self.requeue
        if trainer.world_size > 1:  # one reduce for both flags: a rank that saw a signal decides for all
            flags = torch.tensor([stop, requeue], dtype=torch.float32, device=pl_module.device)
            stop, requeue = (trainer.strategy.reduce(flags, reduce_op="sum") > 0).tolist()
        if requeue:
            self.requeue = False
            self._previous[self.REQUEUE](self.REQUEUE, None)
        if stop:
            self.signal = self.signal or signal.SIGTERM  # a rank stopped because another one was signalled
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def interruption(trainer: Optional[pl.Trainer], subcommand: str, signum: int) -> Interrupted:
    """The error that reports a subcommand stopped by ``signum``; for ``fit``, where its state was saved."""
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    if subcommand != "fit":
        return Interrupted(signum, f"{subcommand} interrupted by {name}.")
    checkpoint = trainer.checkpoint_callback if trainer is not None else None
    if not isinstance(checkpoint, RunCheckpoint) or not checkpoint.holds_current_state(trainer):
        return Interrupted(signum, f"fit interrupted by {name} before it could write a checkpoint.")
    return Interrupted(
        signum, f"fit interrupted by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}; the state at "
        f"the interruption is saved in {os.path.normpath(checkpoint.last_model_path)}. To continue, run the same "
        "command with --ckpt_path last.")


def class_legend(data: Any) -> tuple[str, ...]:
    """What the pictures' legend calls each class: the circles by name, a data file's classes by their labels, else
    ``class k``."""
    if getattr(data, "dataset", None) == "circles" and getattr(data, "num_classes", 2) == 2:
        return ("outer circle (0)", "inner circle (1)")
    names = getattr(data, "class_names", None)
    return tuple(names) if names else tuple(f"class {k}" for k in range(getattr(data, "num_classes", 2)))


def tensorboard_command(logdir: str) -> str:
    """The command that shows ``logdir`` in TensorBoard with every decision-boundary frame on the slider (TensorBoard
    keeps 10 images per tag unless told otherwise)."""
    return f"tensorboard --logdir {os.path.normpath(logdir)} --samples_per_plugin images={TENSORBOARD_IMAGES}"


class RunSummary(Callback):
    """At the end of fit (also one stopped by SIGTERM or Ctrl-C), where everything is: the best checkpoint and its
    score, where the training, validation and test points came from, the run directory, the decision-boundary
    picture and the TensorBoard command."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        lines = [""]
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_score is not None:
            lines.append(f"Best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}"
                         f"  ({os.path.normpath(checkpoint.best_model_path)})")
        if hasattr(trainer.datamodule, "describe"):
            lines.append(f"Data: {trainer.datamodule.describe()}")
        lines.append(f"Run directory: {os.path.normpath(run_dir)}")
        boundary = next((cb for cb in trainer.callbacks if isinstance(cb, DecisionBoundaryCallback)), None)
        if boundary is not None and boundary.png_path:
            lines.append(f"Decision boundary: {os.path.normpath(boundary.png_path)}")
        if isinstance(trainer.logger, TensorBoardLogger):
            lines.append(f"Open it in TensorBoard: {tensorboard_command(trainer.logger.root_dir)}")
        print("\n".join(lines), flush=True)


class MembersTable(Callback):
    """With several members, ``members.csv`` in the run directory: per member its seed, its last and best validation
    accuracy, and after ``test`` its test accuracy."""

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        if getattr(pl_module, "members", 1) == 1 or not trainer.is_global_zero:
            return
        columns = {"member": range(pl_module.members), "seed": pl_module.member_seeds.tolist(),
                   "val_acc": pl_module.member_val_acc.tolist(), "val_acc_best": pl_module.member_val_acc_best.tolist()}
        if pl_module.member_test_acc is not None and trainer.state.fn == TrainerFn.TESTING:
            columns["test_acc"] = pl_module.member_test_acc.tolist()
        os.makedirs(run_dir, exist_ok=True)
        with atomic_file(os.path.join(run_dir, "members.csv")) as f:
            f.write(",".join(columns) + "\n")
            for row in zip(*columns.values()):
                f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)


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
        metrics = _latest_metrics(trainer, pl_module)
        line = f"Epoch: {trainer.current_epoch}"
        for stage, label in (("train", "Train"), ("val", "Val")):
            if f"{stage}/loss" in metrics:
                line += (f" | {label} loss: {float(metrics[f'{stage}/loss']):.5f}"
                         f" | {label} accuracy: {100 * float(metrics[f'{stage}/acc']):.2f}%")
        pl_module.print(line)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (``x1,x2,probability,label``: the probability of class 1, or with more than two
    classes of the predicted one; with several members ``probability`` is their mean and ``probability_std`` their
    spread; the label is the class's name when the data names its classes) into the run directory after
    ``predict``."""

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
        binary = getattr(pl_module, "num_classes", 2) == 2
        spread = getattr(pl_module, "members", 1) > 1  # the members' probabilities: their standard deviation too
        names = getattr(trainer.datamodule, "class_names", None)
        with atomic_file(self.path) as f:
            f.write("x1,x2,probability," + ("probability_std," if spread else "") + "label\n")
            for x1, x2, p, *rest in rows.tolist():
                label = int(p > 0.5) if binary else int(rest.pop())
                label_text = names[label] if names else str(label)
                f.write(f"{x1:.6g},{x2:.6g},{p:.6g}," + "".join(f"{v:.6g}," for v in rest) + f"{label_text}\n")
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
    MAX_GIF_FRAMES = 100

    def __init__(self, every_n_epochs: int = 50, resolution: int = 101, show_probability: bool = False,
                 show_neurons: bool = False, gif: bool = True) -> None:
        """
        Args:
            every_n_epochs: Epochs between two TensorBoard frames.
            resolution: Grid points per axis over the data's extent +- 0.1.
            show_probability: Add the probability view (sigmoid output, 0.5 contour drawn) under the class view.
            show_neurons: Also write, per hidden layer, a tile per unit showing its output over the plane.
            gif: At the end of fit, save the frames as ``decision_boundary.gif`` (at most 100, evenly spaced).
        """
        check(every_n_epochs >= 1, "every_n_epochs", "a positive integer", every_n_epochs)
        check(resolution >= 2, "resolution", "an integer >= 2", resolution)
        self.every_n_epochs = every_n_epochs
        self.resolution = resolution
        self.show_probability = show_probability
        self.show_neurons = show_neurons
        self.gif = gif
        self.frames: list[np.ndarray] = []
        self._frame_stride = 1
        self.run_dir: Optional[str] = None
        self.png_path: Optional[str] = None
        self.gif_path: Optional[str] = None
        self._sets: dict[str, tuple[Any, Any]] = {}
        self._axes: dict[str, tuple[Any, Any]] = {}
        self._last_frame_epoch: Optional[int] = None
        self._frame_index = 0
        self._warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.run_dir = trainer.log_dir  # collective under DDP: every rank must ask, not only rank zero

    def _point_sets(self, trainer: pl.Trainer, names: tuple[str, ...]) -> Optional[dict[str, tuple[Any, Any]]]:
        data = trainer.datamodule
        if not all(getattr(data, f"{name}_x", None) is not None for name in names):
            return None
        return {name: (getattr(data, f"{name}_x").cpu().numpy(), getattr(data, f"{name}_y").cpu().numpy())
                for name in names}

    def _tensorboard(self, trainer: pl.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if not self._warned:
            rank_zero_warn("DecisionBoundaryCallback: no TensorBoard logger, so no frames are logged; "
                           "the PNG is still saved in the run directory.")
            self._warned = True
        return None

    def _panels(self, pl_module: pl.LightningModule, group: str) -> list[BoundaryPanel]:
        xs, ys = self._axes[group]
        probs, votes = grid_predictions(pl_module, xs, ys)
        return [BoundaryPanel.of(name.capitalize(), xs, ys, probs, x, y, max_points=2000, votes=votes)
                for name, (x, y) in self._sets[group].items()]

    @staticmethod
    def _header(trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str, step: int) -> str:
        """What the frame shows: the epoch and the accuracies of that moment."""
        if tag == "test":
            what, accuracy = "test set, weights of epoch", _accuracies(trainer.callback_metrics, ("test",), "   ")
        else:
            what, accuracy = "epoch", _accuracies(_latest_metrics(trainer, pl_module), ("train", "val"), "   ")
        return f"{what} {step}   {accuracy}".rstrip()

    @staticmethod
    def _members_note(pl_module: pl.LightningModule) -> str:
        members = getattr(pl_module, "members", 1)
        if members == 1:
            return ""
        if getattr(pl_module, "num_classes", 2) == 2:
            return f"colour: share of the {members} members voting class 1"
        return f"colour: the class most of the {members} members vote for, paler where they disagree"

    def _write_frame(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel], tag: str,
                     step: int) -> np.ndarray:
        image = boundary_image(panels, self.show_probability, header=self._header(trainer, pl_module, tag, step),
                               note=self._members_note(pl_module), classes=class_legend(trainer.datamodule))
        writer = self._tensorboard(trainer)
        if writer is not None:
            writer.add_image(f"{self.TAG}/{tag}", image, global_step=step, dataformats="HWC")
        return image

    def _write_neurons(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        writer = self._tensorboard(trainer)
        if writer is None or not hasattr(pl_module, "hidden_activations"):
            return
        for i, layer in enumerate(grid_activations(pl_module, *self._axes["fit"]), start=1):
            image = neuron_image(layer, header=f"epoch {step}, hidden layer {i}")
            writer.add_image(f"neurons/layer_{i}", image, global_step=step, dataformats="HWC")

    def _fit_frame(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel],
                   epoch: int) -> None:
        image = self._write_frame(trainer, pl_module, panels, "train_val", epoch)
        if self.show_neurons:
            self._write_neurons(trainer, pl_module, epoch)
        self._last_frame_epoch = epoch
        if self.gif and self._frame_index % self._frame_stride == 0:
            self.frames.append(image)
            if len(self.frames) > self.MAX_GIF_FRAMES:  # keep every other frame and slow down the intake
                self.frames, self._frame_stride = self.frames[::2], self._frame_stride * 2
        self._frame_index += 1

    def _save_png(self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[BoundaryPanel], name: str,
                  title: str) -> str:
        path = os.path.join(self.run_dir, name)
        os.makedirs(self.run_dir, exist_ok=True)
        note = self._members_note(pl_module)
        figure = boundary_figure(panels, self.show_probability, title=f"{title} ({note})" if note else title,
                                 classes=class_legend(trainer.datamodule))
        figure.savefig(path, dpi=80)
        return path

    def _prepare(self, trainer: pl.Trainer, group: str, names: tuple[str, ...]) -> bool:
        if group not in self._sets:
            sets = self._point_sets(trainer, names)
            if sets is None:
                return False
            self._sets[group] = sets
            self._axes[group] = grid_axes(np.concatenate([x for x, _ in sets.values()]), self.resolution)
        return True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or epoch % self.every_n_epochs or not self._prepare(trainer, "fit", ("train", "val")):
            return
        self._fit_frame(trainer, pl_module, self._panels(pl_module, "fit"), epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch - 1
        if not trainer.is_global_zero or epoch < 0 or not self._prepare(trainer, "fit", ("train", "val")):
            return
        panels = self._panels(pl_module, "fit")
        if self._last_frame_epoch != epoch:
            self._fit_frame(trainer, pl_module, panels, epoch)
        if self.gif and len(self.frames) > 1:
            self.gif_path = os.path.join(self.run_dir, "decision_boundary.gif")
            save_gif(self.frames, self.gif_path)
        accuracy = _accuracies(_latest_metrics(trainer, pl_module), ("train", "val"), ", ")
        self.png_path = self._save_png(trainer, pl_module, panels, "decision_boundary.png", f"Epoch {epoch}: {accuracy}")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self._prepare(trainer, "test", ("test",)):
            return
        panels = self._panels(pl_module, "test")
        step = max(trainer.current_epoch - 1, 0)
        self._write_frame(trainer, pl_module, panels, "test", step)
        accuracy = trainer.callback_metrics.get("test/acc")
        title = f"Test set: acc {float(accuracy):.4f}" if accuracy is not None else "Test set"
        self._save_png(trainer, pl_module, panels, "decision_boundary_test.png", title)


class BayesOptimalCallback(Callback):
    """After ``test``, how close the model is to the best any classifier can do on this data: logs
    ``test/bayes_acc`` (the exact Bayes-optimal accuracy of the data's distribution: make_circles at its noise and
    factor, or the two Gaussians) and ``test/bayes_gap = test/bayes_acc - test/acc``. Does nothing for data
    without a known optimum."""

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        metrics = getattr(pl_module, "test_metrics", None)
        bayes = data.bayes_accuracy() if metrics is not None and hasattr(data, "bayes_accuracy") else None
        if bayes is None:
            return
        test_acc = float(metrics.acc.compute().mean())  # of the members; cached: the module's compute() reuses it
        pl_module.log_dict({"test/bayes_acc": bayes, "test/bayes_gap": bayes - test_acc})
