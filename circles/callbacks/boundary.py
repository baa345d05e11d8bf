"""DecisionBoundaryCallback: what the model learned, as pictures: TensorBoard frames during fit
and test, the PNG and the GIF of a fit, the hidden units and the network."""

from __future__ import annotations

import math
import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from circles.callbacks.summary import weights_text
from circles.contracts import classifier, trainer_data
from circles.errors import check
from circles.model.metrics import accuracy_text, latest_values
from circles.pictures.figures import boundary_figure
from circles.pictures.frames import Animation, boundary_image, vote_key
from circles.pictures.grids import grid_axes, grid_boundaries, grid_layers, grid_predictions
from circles.pictures.layers import layers_picture
from circles.pictures.network import network_image, neuron_image
from circles.pictures.notes import MEMBER_LINES, draws_lines, picture_notes
from circles.pictures.panels import BoundaryPanel
from circles.ranges import Count, Resolution
from circles.runs.directory import (
    BOUNDARY_GIF,
    BOUNDARY_PNG,
    BOUNDARY_TEST_PNG,
    atomic_file,
    save_figure,
)
from circles.runs.logger import tensorboard_of

GRID_VALUES = 1 << 25  # values per grid picture (128 MiB of float32)


class DecisionBoundaryCallback(Callback):
    """Shows what the model learned: its decision boundary over the data, in TensorBoard and as a
    PNG.

    Every ``every_n_epochs`` epochs (epoch 0 included) and at the end of fit, the Train | Val
    picture is written to TensorBoard under ``decision_boundary/train_val`` at ``global_step =
    epoch``; ``test`` writes ``test/decision_boundary`` (after the fit's frames on TensorBoard's
    page). A model without an activation is drawn with its boundary line, each member's, and the
    frame gives the affine map the layers are. The last picture of a fit is also saved with
    matplotlib, axes and all, as ``decision_boundary.png`` in the run directory
    (``decision_boundary_test.png`` after ``test``), and the frames of the fit as
    ``decision_boundary.gif``. With ``show_neurons`` every frame also shows each hidden unit's
    output over the plane (``neurons/layer_1``, ...), with ``show_network`` the network with its
    weights (``network/weights``), with ``show_layers`` each hidden layer's map of the plane
    (``layers/plane``). Runs on rank zero only."""

    TAG = "decision_boundary/train_val"
    TEST_TAG = "test/decision_boundary"

    def __init__(
        self,
        every_n_epochs: Count = 50,
        resolution: Resolution = 101,
        show_probability: bool = False,
        show_neurons: bool = False,
        show_network: bool = False,
        show_layers: bool = False,
        gif: bool = True,
    ) -> None:
        """
        Args:
            every_n_epochs: Epochs between two TensorBoard frames.
            resolution: Grid points per axis over the data's extent +- 0.1.
            show_probability: Add the probability view (the probability, its 0.5 contour drawn)
                under the class view.
            show_neurons: Also write, per hidden layer, a tile per unit showing its output over the
                plane.
            show_network: Also write the network as TensorFlow Playground draws it: its units' tiles
                joined by links as wide as their weights.
            show_layers: Also write what each hidden layer does to the plane: the grid's lines and
                the training points as the layer maps them (``layers/plane``; a 2-unit layer as
                it is, a wider one in its two principal directions).
            gif: At the end of fit, save the frames as ``decision_boundary.gif`` (at most 100,
                evenly spaced).
        """
        self.every_n_epochs = every_n_epochs
        self.resolution = resolution
        self.gif = gif
        self.show_probability = show_probability
        self.show_neurons = show_neurons
        self.show_network = show_network
        self.show_layers = show_layers
        self.frames = Animation(max_frames=100)
        self.run_dir: str | None = None
        self.png_path: str | None = None
        self._grids: dict[str, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]] = {}
        self._last_frame_epoch: int | None = None
        self._warned = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        classes = classifier(pl_module).num_classes
        most = math.isqrt(GRID_VALUES // classes)
        check(
            self.resolution <= most,
            "resolution",
            f"at most {most:,} for {classes:,} classes (the grid keeps each class's probability "
            f"and votes at every point: at most {GRID_VALUES:,} values)",
            self.resolution,
        )
        # collective under DDP: every rank must ask, not only rank zero
        self.run_dir = trainer.log_dir

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fit that goes on in its run (``--ckpt_path``) keeps the frames the run drew before:
        the GIF shows the whole fit."""
        gif = os.path.join(str(self.run_dir), BOUNDARY_GIF)
        if self.gif and trainer.ckpt_path and trainer.is_global_zero and os.path.isfile(gif):
            self.frames.load(gif)

    def _panels(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        group: str,
        stages: tuple[str, ...],
    ) -> list[BoundaryPanel] | None:
        """The model over the grid of ``stages``' points (made the first time), one panel per
        stage; None before the data is set up."""
        if group not in self._grids:
            found = [(stage, trainer_data(trainer).points(stage)) for stage in stages]
            sets = {stage: (p[0].cpu().numpy(), p[1].cpu().numpy()) for stage, p in found if p}
            if len(sets) < len(stages):
                return None
            axes = grid_axes(np.concatenate([x for x, _ in sets.values()]), self.resolution)
            self._grids[group] = (sets, axes)
        sets, (xs, ys) = self._grids[group]
        model = classifier(pl_module)
        probs, votes = grid_predictions(model, xs, ys)
        lines = grid_boundaries(model, xs, ys, MEMBER_LINES) if draws_lines(model) else None
        return [
            BoundaryPanel.of(
                name.capitalize(),
                xs,
                ys,
                probs,
                x,
                y,
                max_points=2000,
                votes=votes,
                boundaries=lines,
            )
            for name, (x, y) in sets.items()
        ]

    def _writer(self, trainer: pl.Trainer) -> Any:
        tensorboard = tensorboard_of(trainer.loggers)
        if tensorboard is not None:
            return tensorboard.experiment
        if not self._warned:
            rank_zero_warn(
                "DecisionBoundaryCallback: no TensorBoard logger, so no frames are logged; "
                "the PNG is still saved in the run directory."
            )
            self._warned = True
        return None

    def _frame(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        panels: list[BoundaryPanel],
        tag: str,
        step: int,
    ) -> np.ndarray:
        """The frame of ``panels`` under a header (the epoch and its accuracies), written to
        TensorBoard."""
        model = classifier(pl_module)
        data = trainer_data(trainer)
        test = tag == self.TEST_TAG
        what = f"test set, {weights_text(trainer, pl_module)}" if test else f"epoch {step}"
        stages = ("test",) if test else ("train", "val")
        header = f"{what}   {accuracy_text(latest_values(trainer.callback_metrics), stages, '   ')}"
        split = model.num_classes == 2 and any(p.split_vote for p in panels)  # members who disagree
        key = vote_key(400, model.members, data.class_legend()[1]) if split else None
        image = boundary_image(
            panels,
            self.show_probability,
            header=header.rstrip(),
            note="; ".join(picture_notes(model, data)),
            classes=data.class_legend(),
            key=key,
        )
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_image(tag, image, global_step=step, dataformats="HWC")
            layered = not test and bool(model.layer_weights())  # not a network of one's own
            if (self.show_neurons or self.show_network) and layered:
                self._write_units(writer, pl_module, step)
            if self.show_layers and layered:
                self._write_layers(writer, trainer, pl_module, step)
        return image

    def _write_units(self, writer: Any, pl_module: pl.LightningModule, step: int) -> None:
        model = classifier(pl_module)
        layers = grid_layers(model, *self._grids["fit"][1])
        if self.show_neurons:
            for i, layer in enumerate(layers[1:-1], start=1):
                image = neuron_image(layer, header=f"epoch {step}, hidden layer {i}")
                writer.add_image(f"neurons/layer_{i}", image, global_step=step, dataformats="HWC")
        if self.show_network:
            weights = [w.detach().float().cpu().numpy() for w in model.layer_weights()]
            image = network_image(layers, weights, model.feature_names, header=f"epoch {step}")
            writer.add_image("network/weights", image, global_step=step, dataformats="HWC")

    def _write_layers(
        self, writer: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int
    ) -> None:
        sets, grid = self._grids["fit"]
        x, y = sets["train"]
        header = f"epoch {step}: what each hidden layer does to the plane and the training points"
        image = layers_picture(classifier(pl_module), x, y, grid, header)
        writer.add_image("layers/plane", image, global_step=step, dataformats="HWC")

    def _fit_frame(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        panels: list[BoundaryPanel],
        epoch: int,
    ) -> None:
        image = self._frame(trainer, pl_module, panels, self.TAG, epoch)
        self._last_frame_epoch = epoch
        if self.gif:
            self.frames.add(image)

    def _save_png(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        panels: list[BoundaryPanel],
        name: str,
        title: str,
    ) -> str:
        path = os.path.join(str(self.run_dir), name)
        os.makedirs(str(self.run_dir), exist_ok=True)
        data = trainer_data(trainer)
        notes = picture_notes(classifier(pl_module), data)
        figure = boundary_figure(
            panels,
            self.show_probability,
            title="\n".join([title, *notes]),
            classes=data.class_legend(),
            probability_label=data.probability_label(),
        )
        save_figure(figure, path, dpi=80)
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
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The fit's last frame, its GIF and its picture: at the fit's end, after the final
        checkpoint (``on_train_end``), so that a picture that cannot be written loses no
        training."""
        epoch = trainer.current_epoch - 1
        panels = (
            self._panels(trainer, pl_module, "fit", ("train", "val"))
            if trainer.is_global_zero
            else None
        )
        if epoch < 0 or panels is None:
            return
        if self._last_frame_epoch != epoch:
            self._fit_frame(trainer, pl_module, panels, epoch)
        if self.gif and len(self.frames) > 1:
            with atomic_file(os.path.join(str(self.run_dir), BOUNDARY_GIF), "wb") as f:
                self.frames.save(f)
        values = latest_values(trainer.callback_metrics)
        title = f"Epoch {epoch}: {accuracy_text(values, ('train', 'val'), ', ')}"
        self.png_path = self._save_png(trainer, pl_module, panels, BOUNDARY_PNG, title)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        panels = (
            self._panels(trainer, pl_module, "test", ("test",)) if trainer.is_global_zero else None
        )
        if panels is None:
            return
        epoch = classifier(pl_module).weights_epoch
        self._frame(trainer, pl_module, panels, self.TEST_TAG, epoch if epoch is not None else 0)
        accuracy = latest_values(trainer.callback_metrics).get("test/acc")
        title = "Test set" + (f": acc {accuracy:.4f}" if accuracy is not None else "")
        title += f", weights of epoch {epoch}" if epoch is not None else ""
        self._save_png(trainer, pl_module, panels, BOUNDARY_TEST_PNG, title)
