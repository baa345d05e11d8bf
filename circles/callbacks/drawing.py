"""What DecisionBoundaryCallback draws: the model over a grid of the data's points, as panels, a
TensorBoard frame (with the hidden units, the network and the layers' maps where asked) and the
run's PNG. Imported at the first picture, not at start-up."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import numpy as np

from circles.callbacks.summary import weights_text
from circles.contracts import classifier, trainer_data
from circles.model.metrics import accuracy_text, latest_values
from circles.pictures.figures import boundary_figure
from circles.pictures.frames import boundary_image, vote_key
from circles.pictures.grids import grid_axes, grid_boundaries, grid_layers, grid_predictions
from circles.pictures.layers import layers_picture
from circles.pictures.network import network_image, neuron_pictures
from circles.pictures.notes import MEMBER_LINES, draws_lines, picture_notes
from circles.pictures.panels import BoundaryPanel
from circles.runs.directory import save_figure

# the points of each stage drawn, and the grid over them
Grid = tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def data_grid(trainer: pl.Trainer, stages: tuple[str, ...], resolution: int) -> Grid | None:
    """The points of ``stages`` and a grid over their extent; None before the data is set up."""
    found = [(stage, trainer_data(trainer).points(stage)) for stage in stages]
    sets = {stage: (p[0].cpu().numpy(), p[1].cpu().numpy()) for stage, p in found if p}
    if len(sets) < len(stages):
        return None
    return sets, grid_axes(np.concatenate([x for x, _ in sets.values()]), resolution)


def panels(pl_module: pl.LightningModule, grid: Grid) -> list[BoundaryPanel]:
    """The model over ``grid``, one panel per stage."""
    sets, (xs, ys) = grid
    model = classifier(pl_module)
    probs, votes = grid_predictions(model, xs, ys)
    lines = grid_boundaries(model, xs, ys, MEMBER_LINES) if draws_lines(model) else None
    return [
        BoundaryPanel.of(
            name.capitalize(), xs, ys, probs, x, y, max_points=2000, votes=votes, boundaries=lines
        )
        for name, (x, y) in sets.items()
    ]


def frame(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    drawn: list[BoundaryPanel],
    step: int,
    test: bool,
    show_probability: bool,
) -> np.ndarray:
    """The frame of ``drawn`` under a header: the epoch (or the test's weights) and its
    accuracies."""
    model = classifier(pl_module)
    data = trainer_data(trainer)
    what = f"test set, {weights_text(trainer, pl_module)}" if test else f"epoch {step}"
    stages = ("test",) if test else ("train", "val")
    header = f"{what}   {accuracy_text(latest_values(trainer.callback_metrics), stages, '   ')}"
    split = model.num_classes == 2 and any(p.split_vote for p in drawn)  # members who disagree
    key = vote_key(400, model.members, data.class_legend()[1]) if split else None
    return boundary_image(
        drawn,
        show_probability,
        header=header.rstrip(),
        note="; ".join(picture_notes(model, data)),
        classes=data.class_legend(),
        key=key,
    )


def write_units(
    writer: Any, pl_module: pl.LightningModule, grid: Grid, step: int, neurons: bool, network: bool
) -> None:
    """Each hidden layer's units over the plane (``neurons/layer_N``, in tens for a wider layer:
    :func:`neuron_pictures`) and the network with its weights (``network/weights``)."""
    model = classifier(pl_module)
    layers = grid_layers(model, *grid[1])
    if neurons:
        for i, layer in enumerate(layers[1:-1], start=1):
            for tag, image in neuron_pictures(layer, i, step).items():
                writer.add_image(tag, image, global_step=step, dataformats="HWC")
    if network:
        weights = [w.detach().float().cpu().numpy() for w in model.layer_weights()]
        image = network_image(layers, weights, model.feature_names, header=f"epoch {step}")
        writer.add_image("network/weights", image, global_step=step, dataformats="HWC")


def write_layers(writer: Any, pl_module: pl.LightningModule, grid: Grid, step: int) -> None:
    """What each hidden layer does to the plane and the training points (``layers/plane``)."""
    x, y = grid[0]["train"]
    header = f"epoch {step}: what each hidden layer does to the plane and the training points"
    image = layers_picture(classifier(pl_module), x, y, grid[1], header)
    writer.add_image("layers/plane", image, global_step=step, dataformats="HWC")


def save_png(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    drawn: list[BoundaryPanel],
    path: str,
    title: str,
    show_probability: bool,
) -> None:
    """The picture with matplotlib, axes and all, under ``title`` and the picture's notes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = trainer_data(trainer)
    notes = picture_notes(classifier(pl_module), data)
    figure = boundary_figure(
        drawn,
        show_probability,
        title="\n".join([title, *notes]),
        classes=data.class_legend(),
        probability_label=data.probability_label(),
    )
    save_figure(figure, path, dpi=80)
