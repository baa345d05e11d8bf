"""The network drawn into arrays: each hidden unit's output over the plane as a tile, and the
whole network as TensorFlow Playground draws it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from circles.pictures.frames import BODY, HEADER, TEXT, _fit_width, _font, text_block
from circles.pictures.panels import signed_colours


def neuron_image(
    activations: np.ndarray, scale: int = 1, gap: int = 4, ncols: int = 5, header: str | None = None
) -> np.ndarray:
    """One hidden layer as an ``(H, W, 3)`` uint8 image: a tile per unit, ``ncols`` per row,
    showing its output over the grid in the same colours (blue positive, red negative,
    yellow-white 0), each tile scaled by its own largest magnitude, so the shape each neuron has
    learned is visible whatever its size. Under each tile its unit number and that magnitude; a
    unit whose output is the same everywhere is marked ``dead`` (a ReLU that never fires)."""
    units, height, width = activations.shape
    flat = activations.reshape(units, -1)
    peak = np.abs(flat).max(axis=1)
    dead = constant_units(activations)
    values = activations / np.where(peak > 0, peak, 1)[:, None, None]
    tiles = signed_colours(np.flip(values, axis=1))
    tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
    ncols = min(ncols, units)
    nrows = -(-units // ncols)
    th = height * scale
    tw = width * scale
    label = BODY + 6
    out = np.full(
        (nrows * (th + label + gap) - gap, ncols * (tw + gap) - gap, 3), 255, dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        top = r * (th + label + gap)
        left = c * (tw + gap)
        out[top : top + th, left : left + tw] = tile
        text = f"{i + 1}: dead" if dead[i] else f"{i + 1}: ±{peak[i]:.2g}"
        out[top + th : top + th + label, left : left + tw] = _fit_width(
            text_block(tw, [(text, None)]), tw
        )[:label]
    key = (
        "under each unit: its largest |output|; each tile on its own scale (blue +, red -, pale 0)"
    )
    lines = [
        *([text_block(out.shape[1], [(header, None)], size=HEADER)] if header else []),
        text_block(out.shape[1], [(key, None)]),
    ]
    return np.concatenate([*lines, out], axis=0)


def constant_units(activations: np.ndarray) -> np.ndarray:
    """Which of the ``(units, ...)`` outputs are the same everywhere (a ReLU that never fires
    over the plane)."""
    flat = activations.reshape(len(activations), -1)
    peak = np.abs(flat).max(axis=1)
    return flat.max(axis=1) - flat.min(axis=1) <= 1e-6 * np.maximum(peak, 1)


# pixels: the height the units of the tallest column share, the most a unit's tile takes of it
# and the room between columns; units drawn per layer at most. TensorBoard's card shows a picture
# 215 pixels high: this one is about 330, so its 17-pixel text shows at about 11.
NETWORK_HEIGHT = 300
NETWORK_TILE = 40
NETWORK_SPAN = 70
NETWORK_UNITS = 10
KEY_WIDTH = 180  # the column of words right of the network


# RdYlBu's blue and red, as in the tiles
POSITIVE = (49, 54, 149)
NEGATIVE = (215, 48, 39)


@dataclass(frozen=True)
class _Layout:
    """Where the network picture puts each unit: a column per layer, ``shown[l]`` units of layer
    ``l`` centred in it, the tallest column ``NETWORK_HEIGHT`` high (its tiles smaller the more
    units it has); ``margin`` left of the first column for the inputs' names."""

    shown: list[int]
    margin: int
    top: int = BODY + 10  # a column's title above its tiles
    bottom: int = 0  # room under the columns for how many units are not drawn

    @property
    def step(self) -> int:
        return min(NETWORK_TILE + 8, NETWORK_HEIGHT // max(self.shown))

    @property
    def tile(self) -> int:
        return self.step - max(4, self.step // 6)

    @property
    def size(self) -> tuple[int, int]:
        layers = len(self.shown)
        width = self.margin + layers * self.tile + (layers - 1) * NETWORK_SPAN + 24
        return width, self.top + max(self.shown) * self.step + self.bottom

    def place(self, layer: int, unit: int) -> tuple[int, int]:
        column = self.top + (max(self.shown) - self.shown[layer]) * self.step // 2
        return self.margin + layer * (self.tile + NETWORK_SPAN), column + unit * self.step


def network_image(
    outputs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    inputs: Sequence[str],
    header: str | None = None,
) -> np.ndarray:
    """The network as TensorBoard Playground draws it, as an ``(H, W, 3)`` uint8 image: a column
    of tiles per layer (the inputs, each hidden layer, the output), each tile that unit's output
    over the plane on its own scale (blue +, red -), dead units crossed out in red; between
    columns a link per weight, as wide as its size (relative to the layer's largest) and coloured
    by its sign; right of it ``header`` and what the colours mean. ``outputs``: per layer
    ``(units, ny, nx)``; ``weights``: per layer ``(out, in)``; ``inputs``: the input features'
    names. At most ``NETWORK_UNITS`` units of a layer are drawn."""
    from PIL import Image, ImageDraw

    shown = [min(len(o), NETWORK_UNITS) for o in outputs]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = max(measure.textlength(name, font=_font(BODY)) for name in inputs[: shown[0]])
    truncated = any(len(o) > n for o, n in zip(outputs, shown, strict=True))
    layout = _Layout(shown, margin=int(names) + 12, bottom=(BODY + 6) * truncated)
    width, height = layout.size
    image = Image.new("RGB", (width, height), "white")
    overlay = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    _draw_links(ImageDraw.Draw(overlay), weights, layout)
    image.paste(overlay, (0, 0), overlay)
    _draw_units(image, outputs, inputs, layout)
    key = np.concatenate(
        [
            *([text_block(KEY_WIDTH, [(header, None)], size=HEADER)] if header else []),
            *(
                text_block(KEY_WIDTH, [(words, None)])
                for words in (
                    "links: as wide as |weight| (of the layer's largest); blue +, red -",
                    "tiles: each unit's output over the plane, on its own scale",
                    "crossed out: a dead unit (the same output everywhere)",
                )
            ),
        ]
    )
    tall = max(height, key.shape[0])
    network = np.pad(np.asarray(image), ((0, tall - height), (0, 0), (0, 0)), constant_values=255)
    key = np.pad(key, ((0, tall - key.shape[0]), (12, 0), (0, 0)), constant_values=255)
    return np.concatenate([network, key], axis=1)


def _draw_links(links: Any, weights: Sequence[np.ndarray], layout: _Layout) -> None:
    """A line per weight between the units it joins, as wide and as opaque as its size relative to
    its layer's largest, blue positive, red negative."""
    tile = layout.tile
    for layer, weight in enumerate(weights):
        largest = float(np.abs(weight).max()) or 1.0
        for j in range(layout.shown[layer + 1]):
            for i in range(layout.shown[layer]):
                w = float(weight[j, i])
                (x0, y0), (x1, y1) = layout.place(layer, i), layout.place(layer + 1, j)
                colour = (*(POSITIVE if w > 0 else NEGATIVE), int(60 + 160 * abs(w) / largest))
                width = max(1, round(5 * abs(w) / largest))
                links.line(
                    (x0 + tile, y0 + tile // 2, x1, y1 + tile // 2), fill=colour, width=width
                )


def _draw_units(
    image: Any, outputs: Sequence[np.ndarray], inputs: Sequence[str], layout: _Layout
) -> None:
    """Each column's title, each unit's tile (an input's name left of it, a dead unit crossed
    out), and how many units of a layer are not drawn."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(image)
    font = _font(BODY)
    tile = layout.tile
    titles = ["inputs", *(f"layer {i}" for i in range(1, len(outputs) - 1)), "output"]
    for layer, maps in enumerate(outputs):
        x, _ = layout.place(layer, 0)
        draw.text((x + tile // 2, 4), titles[layer], fill=TEXT, font=font, anchor="mt")
        hidden = 0 < layer < len(outputs) - 1
        dead = constant_units(maps) if hidden else np.zeros(len(maps), bool)
        for unit in range(layout.shown[layer]):
            peak = float(np.abs(maps[unit]).max()) or 1.0
            colours = signed_colours(np.flipud(maps[unit]) / peak)
            x, y = layout.place(layer, unit)
            image.paste(Image.fromarray(colours).resize((tile, tile)), (x, y))
            outline = NEGATIVE if dead[unit] else (120, 120, 120)
            draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=outline)
            if dead[unit]:
                draw.line((x, y, x + tile - 1, y + tile - 1), fill=NEGATIVE, width=2)
                draw.line((x, y + tile - 1, x + tile - 1, y), fill=NEGATIVE, width=2)
            if layer == 0:
                draw.text((x - 6, y + tile // 2), inputs[unit], fill=TEXT, font=font, anchor="rm")
        if len(maps) > layout.shown[layer]:
            more = f"+{len(maps) - layout.shown[layer]}"
            bottom = layout.size[1] - layout.bottom + 4
            draw.text((x + tile // 2, bottom), more, fill=TEXT, font=font, anchor="mt")
