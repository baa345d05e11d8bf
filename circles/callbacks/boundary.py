"""DecisionBoundaryCallback: what the model learned, as pictures: TensorBoard frames during fit
and test, the PNG and the GIF of a fit, the hidden units and the network."""

from __future__ import annotations

import math
import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from circles.contracts import classifier
from circles.errors import check
from circles.model.metrics import accuracy_text, latest_values
from circles.ranges import Count, Resolution
from circles.runs.directory import BOUNDARY_GIF, BOUNDARY_PNG, BOUNDARY_TEST_PNG, atomic_file
from circles.runs.logger import tensorboard_of

GRID_VALUES = 1 << 25  # values per grid picture (128 MiB of float32)


class DecisionBoundaryCallback(Callback):
    """What the model learned, as pictures: its decision boundary over the data.

    Every ``every_n_epochs`` epochs (epoch 0 included) and at the end of fit, the Train | Val
    frame goes to TensorBoard (``decision_boundary/train_val`` at step = epoch; ``test`` writes
    ``test/decision_boundary``, an evaluation's test ``evaluation/decision_boundary``); a linear
    model's frame draws each member's line and says the affine map the layers are. A fit's last
    picture is saved as ``decision_boundary.png`` in the run directory
    (``decision_boundary_test.png`` after ``test``), its frames as ``decision_boundary.gif``.
    Rank zero draws."""

    TAG = "decision_boundary/train_val"
    TEST_TAG = "test/decision_boundary"
    EVALUATION_TAG = "evaluation/decision_boundary"

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
        self.frames: Any = None  # the fit's frames for the GIF (an Animation), from the first
        self.run_dir: str | None = None
        self.png_path: str | None = None
        self._grids: dict[str, Any] = {}  # per group of stages: its points and the grid over them
        self._last_frame_epoch: int | None = None

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
            self._animation().load(gif)

    def _panels(self, trainer: pl.Trainer, pl_module: pl.LightningModule, group: str) -> Any:
        """On rank zero, the model over the grid of the ``group``'s points (``fit``: train and
        val, ``test``), one panel per stage; None before the data is set up."""
        if self._grids.get(group) is None and trainer.is_global_zero:
            stages = ("test",) if group == "test" else ("train", "val")
            self._grids[group] = _drawing().data_grid(trainer, stages, self.resolution)
        grid = self._grids.get(group)
        return _drawing().panels(pl_module, grid) if grid and trainer.is_global_zero else None

    def _frame(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, panels: list[Any], step: int
    ) -> None:
        """Draw the frame of ``panels`` and write it to TensorBoard with the extras asked for; a
        fit's joins the GIF's frames."""
        drawing = _drawing()
        test = trainer.state.fn == "test"
        image = drawing.frame(trainer, pl_module, panels, step, test, self.show_probability)
        tensorboard = tensorboard_of(trainer.loggers)
        layered = not test and bool(classifier(pl_module).layer_weights())  # not one's own net
        if tensorboard is None:
            rank_zero_warn(
                "DecisionBoundaryCallback: no TensorBoard logger, so no frames; PNGs only."
            )
        else:
            writer = tensorboard.experiment
            evaluation = test and getattr(tensorboard, "evaluation", False)
            tag = self.EVALUATION_TAG if evaluation else self.TEST_TAG if test else self.TAG
            writer.add_image(tag, image, step, dataformats="HWC")
            if (self.show_neurons or self.show_network) and layered:
                drawing.write_units(
                    writer,
                    pl_module,
                    self._grids["fit"],
                    step,
                    self.show_neurons,
                    self.show_network,
                )
            if self.show_layers and layered:
                drawing.write_layers(writer, pl_module, self._grids["fit"], step)
        if not test:
            self._last_frame_epoch = step
            if self.gif:
                self._animation().add(image)

    def _animation(self) -> Any:
        if self.frames is None:
            from circles.pictures import frames

            self.frames = frames.Animation(max_frames=100)
        return self.frames

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        panels = self._panels(trainer, pl_module, "fit")
        if panels is not None:
            self._frame(trainer, pl_module, panels, epoch)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The fit's last frame, its GIF and its picture: at the fit's end, after the final
        checkpoint (``on_train_end``), so that a picture that cannot be written loses no
        training."""
        epoch = trainer.current_epoch - 1
        panels = self._panels(trainer, pl_module, "fit")
        if epoch < 0 or panels is None:
            return
        if self._last_frame_epoch != epoch:
            self._frame(trainer, pl_module, panels, epoch)
        if self.gif and self.frames is not None and len(self.frames) > 1:
            with atomic_file(os.path.join(str(self.run_dir), BOUNDARY_GIF), "wb") as f:
                self.frames.save(f)
        values = latest_values(trainer.callback_metrics)
        title = f"Epoch {epoch}: {accuracy_text(values, ('train', 'val'), ', ')}"
        self.png_path = os.path.join(str(self.run_dir), BOUNDARY_PNG)
        _drawing().save_png(trainer, pl_module, panels, self.png_path, title, self.show_probability)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        panels = self._panels(trainer, pl_module, "test")
        if panels is None:
            return
        epoch = classifier(pl_module).weights_epoch
        self._frame(trainer, pl_module, panels, epoch if epoch is not None else 0)
        accuracy = latest_values(trainer.callback_metrics).get("test/acc")
        title = "Test set" + (f": acc {accuracy:.4f}" if accuracy is not None else "")
        title += f", weights of epoch {epoch}" if epoch is not None else ""
        path = os.path.join(str(self.run_dir), BOUNDARY_TEST_PNG)
        _drawing().save_png(trainer, pl_module, panels, path, title, self.show_probability)


def _drawing() -> Any:
    """The drawing code, imported at the first picture."""
    from circles.callbacks import drawing

    return drawing
