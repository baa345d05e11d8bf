"""What each hidden layer does to the plane: the grid's lines and the training points as the layer
maps them, one panel per layer (the first member's network), as an ``(H, W, 3)`` image.

A 2-unit layer is drawn as it is (unit 1 across, unit 2 up). A wider layer is drawn in the plane
of its two principal directions over the training points (the two orthonormal directions along
which the layer spreads them most, by SVD of its centred outputs; each direction's sign chosen so
its largest component is positive), a projection recomputed for each picture from the weights it
shows; a 1-unit layer is drawn on one axis. ReLU's folds show as lines bent onto the axes; a
network that separates the rings pulls them apart layer by layer, and a 2-wide one cannot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from circles.contracts import Classifier
from circles.pictures.frames import BODY, HEADER, TEXT, joined, text_block
from circles.pictures.grids import model_inference
from circles.pictures.panels import class_colours

PANEL = 180  # pixels of a panel's side
LINES = 11  # grid lines per direction over the data's extent
STEPS = 201  # points along each grid line
GRID: tuple[int, int, int] = (170, 170, 170)


@dataclass(frozen=True)
class LayerMap:
    """One layer's picture: the grid's lines ``(lines, steps, 2)`` and the points ``(N, 2)`` in
    the panel's two coordinates, and what those coordinates are."""

    title: str
    lines: np.ndarray
    points: np.ndarray
    axes: str


def layer_maps(
    model: Classifier, points: np.ndarray, extent: tuple[float, float, float, float]
) -> list[LayerMap]:
    """The input plane and each hidden layer of ``model`` (its ``layer_outputs``), each as the
    grid lines over ``extent`` (x0, x1, y0, y1) and the ``points`` ``(N, 2)`` it maps them to."""
    x0, x1, y0, y1 = extent
    t = np.linspace(0, 1, STEPS)
    levels = np.linspace(0, 1, LINES)
    across = [np.stack([x0 + t * (x1 - x0), np.full(STEPS, y0 + v * (y1 - y0))], 1) for v in levels]
    up = [np.stack([np.full(STEPS, x0 + v * (x1 - x0)), y0 + t * (y1 - y0)], 1) for v in levels]
    grid = np.concatenate(across + up)
    everything = torch.from_numpy(np.concatenate([grid, points])).float()
    with model_inference(model) as device:
        outputs = [o.double().cpu().numpy() for o in model.layer_outputs(everything.to(device))]
    maps = [LayerMap("the plane", grid.reshape(-1, STEPS, 2), points, "x1 across, x2 up")]
    for i, layer in enumerate(outputs[1:-1], start=1):
        on_points = layer[len(grid) :]
        units = layer.shape[1]
        if units == 1:
            mapped, axes = np.concatenate([layer, np.zeros_like(layer)], 1), "its unit across"
        elif units == 2:
            mapped, axes = layer, "unit 1 across, unit 2 up"
        else:  # the two principal directions over the points (signs fixed), by SVD
            mean = on_points.mean(0)
            _, singular, vt = np.linalg.svd(on_points - mean, full_matrices=False)
            directions = vt[:2].T
            flip = np.sign(directions[np.abs(directions).argmax(0), [0, 1]])
            mapped = (layer - mean) @ (directions * np.where(flip == 0, 1, flip))
            total = float((singular**2).sum())
            share = float((singular[:2] ** 2).sum()) / total if total > 0 else 1.0
            axes = f"its 2 principal directions ({share:.0%} of the spread)"
        if np.ptp(on_points, axis=0).max() <= 1e-9:
            axes = "every point at one spot: no unit tells them apart"
        maps.append(
            LayerMap(
                f"layer {i}: {units} unit{'s' * (units > 1)}",
                mapped[: len(grid)].reshape(-1, STEPS, 2),
                mapped[len(grid) :],
                axes,
            )
        )
    return maps


def _panel(layer: LayerMap, labels: np.ndarray, classes: int) -> np.ndarray:
    """One layer's panel: the grid's lines in grey, then the points in their classes' colours,
    scaled to fill the panel."""
    from PIL import Image, ImageDraw

    everything = np.concatenate([layer.lines.reshape(-1, 2), layer.points])
    low, high = everything.min(0), everything.max(0)
    scaled = (everything - low) / np.where(high - low > 1e-12, high - low, 1.0)
    margin = 8
    pixels = np.stack(
        [
            margin + scaled[:, 0] * (PANEL - 2 * margin),
            PANEL - margin - scaled[:, 1] * (PANEL - 2 * margin),
        ],
        1,
    )
    lines = pixels[: layer.lines.shape[0] * layer.lines.shape[1]].reshape(layer.lines.shape)
    image = Image.new("RGB", (PANEL, PANEL), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for line in lines:
        draw.line([tuple(p) for p in line.tolist()], fill=GRID, width=1)
    colours = class_colours(classes)
    points = pixels[len(pixels) - len(layer.points) :]
    for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=tuple(int(c) for c in colours[int(label)]))
    draw.rectangle((0, 0, PANEL - 1, PANEL - 1), outline=TEXT)
    return np.asarray(image)


def layers_picture(
    model: Classifier,
    points: np.ndarray,
    labels: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    header: str,
) -> np.ndarray:
    """What each hidden layer of ``model`` does to the plane (its grid lines over the extent of
    ``grid``'s axes) and to ``points``, as one picture under ``header``."""
    xs, ys = grid
    maps = layer_maps(model, points, (xs[0], xs[-1], ys[0], ys[-1]))
    return layers_image(maps, labels, model.num_classes, header)


def layers_image(
    maps: Sequence[LayerMap], labels: np.ndarray, classes: int, header: str
) -> np.ndarray:
    """The layers' panels side by side, each titled with its layer and its axes, under
    ``header``; the panels' tops in one line."""
    titles = [text_block(PANEL, [(m.title, None), (m.axes, None)], size=BODY) for m in maps]
    panels = [_panel(layer, labels, classes) for layer in maps]
    body = np.concatenate([joined(titles, axis=1, gap=8), joined(panels, axis=1, gap=8)])
    body = np.pad(body, ((0, 0), (4, 4), (0, 0)), constant_values=255)
    top = text_block(body.shape[1], [(header, None)], size=HEADER)
    return np.concatenate([top, body])
