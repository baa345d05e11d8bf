"""The network drawn into arrays: each hidden unit's output over the plane as a tile, and the
whole network as TensorFlow Playground draws it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from circles.pictures.frames import BODY, HEADER, TEXT, _font, joined, text_block
from circles.pictures.panels import signed_colours


def neuron_image(
    activations: np.ndarray,
    scale: int = 1,
    gap: int = 4,
    ncols: int = 5,
    header: str | None = None,
    first: int = 1,
) -> np.ndarray:
    """One hidden layer as an ``(H, W, 3)`` uint8 image: a tile per unit, ``ncols`` per row,
    showing its output over the grid in the same colours (blue positive, red negative,
    yellow-white 0), each tile scaled by its own largest magnitude, so the shape each neuron has
    learned is visible whatever its size. Under each tile its unit number (from ``first``) and
    that magnitude; a unit whose output is the same everywhere is marked ``dead`` (a ReLU that
    never fires)."""
    peak = np.abs(activations.reshape(len(activations), -1)).max(axis=1)
    dead = constant_units(activations)
    values = activations / np.where(peak > 0, peak, 1)[:, None, None]
    tiles = np.repeat(np.repeat(signed_colours(np.flip(values, axis=1)), scale, axis=1), scale, 2)
    cells = [
        np.concatenate(
            [
                tile,
                text_block(
                    tile.shape[1],
                    [(f"{first + i}: dead" if dead[i] else f"{first + i}: ±{peak[i]:.2g}", None)],
                )[: BODY + 6],
            ]
        )
        for i, tile in enumerate(tiles)
    ]
    ncols = min(ncols, len(cells))
    rows = [joined(cells[i : i + ncols], axis=1, gap=gap) for i in range(0, len(cells), ncols)]
    out = joined(rows, axis=0, gap=gap)
    key = (
        "under each unit: its largest |output|; each tile on its own scale (blue +, red -, pale 0)"
    )
    width = max(out.shape[1], 320)  # a narrow layer's words on a few lines still
    return joined(
        [
            *([text_block(width, [(header, None)], size=HEADER)] if header else []),
            text_block(width, [(key, None)]),
            out,
        ],
        axis=0,
    )


# units in one picture of a layer's: two rows of five, about 320 pixels high, which TensorBoard's
# card (215 pixels high) shows at 2/3 of its size, its 17-pixel captions at 11
NEURON_UNITS = 10


def neuron_pictures(layer: np.ndarray, number: int, step: int) -> dict[str, np.ndarray]:
    """Hidden layer ``number``'s units over the plane (:func:`neuron_image`) by TensorBoard tag:
    ``neurons/layer_N``; a layer of more than ``NEURON_UNITS`` units as one picture per ten of
    them, ``neurons/layer_N_units_11-20``, so that every picture is shown large enough to read."""
    pictures = {}
    for a in range(0, len(layer), NEURON_UNITS):
        last = min(a + NEURON_UNITS, len(layer))
        units = f"units {a + 1}-{last}" if len(layer) > NEURON_UNITS else ""
        tag = f"neurons/layer_{number}" + (f"_{units.replace(' ', '_')}" if units else "")
        pictures[tag] = neuron_image(
            layer[a:last],
            header=f"epoch {step}, hidden layer {number}" + (f", {units}" if units else ""),
            first=a + 1,
        )
    return pictures


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

    font = _font(BODY)
    shown = [min(len(o), NETWORK_UNITS) for o in outputs]
    margin = int(max(font.getlength(name) for name in inputs[: shown[0]])) + 12  # the names
    top = BODY + 10  # a column's title above its tiles
    # room under the columns for how many units are not drawn
    bottom = (BODY + 6) * any(len(o) > n for o, n in zip(outputs, shown, strict=True))
    # the tallest column NETWORK_HEIGHT high: its tiles smaller the more units it has
    step = min(NETWORK_TILE + 8, NETWORK_HEIGHT // max(shown))
    tile = step - max(4, step // 6)
    width = margin + len(shown) * tile + (len(shown) - 1) * NETWORK_SPAN + 24
    height = top + max(shown) * step + bottom

    def place(layer: int, unit: int) -> tuple[int, int]:
        """The top left corner of a unit's tile: a column per layer, its units centred in it."""
        column = top + (max(shown) - shown[layer]) * step // 2
        return margin + layer * (tile + NETWORK_SPAN), column + unit * step

    image = Image.new("RGB", (width, height), "white")
    overlay = _links(weights, shown, place, tile, (width, height))
    image.paste(overlay, (0, 0), overlay)
    draw = ImageDraw.Draw(image)
    titles = ["inputs", *(f"layer {i}" for i in range(1, len(outputs) - 1)), "output"]
    for layer, maps in enumerate(outputs):
        x, _ = place(layer, 0)
        draw.text((x + tile // 2, 4), titles[layer], fill=TEXT, font=font, anchor="mt")
        dead = constant_units(maps) & (0 < layer < len(outputs) - 1)  # hidden units only
        for unit in range(shown[layer]):
            peak = float(np.abs(maps[unit]).max()) or 1.0
            x, y = place(layer, unit)
            colours = Image.fromarray(signed_colours(np.flipud(maps[unit]) / peak))
            image.paste(colours.resize((tile, tile)), (x, y))
            outline = NEGATIVE if dead[unit] else (120, 120, 120)
            draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=outline)
            if dead[unit]:
                draw.line((x, y, x + tile - 1, y + tile - 1), fill=NEGATIVE, width=2)
                draw.line((x, y + tile - 1, x + tile - 1, y), fill=NEGATIVE, width=2)
            if layer == 0:
                draw.text((x - 6, y + tile // 2), inputs[unit], fill=TEXT, font=font, anchor="rm")
        if len(maps) > shown[layer]:
            more = f"+{len(maps) - shown[layer]}"
            draw.text((x + tile // 2, height - bottom + 4), more, fill=TEXT, font=font, anchor="mt")
    return joined([np.asarray(image), _network_key(header)], axis=1, gap=12)


def _links(
    weights: Sequence[np.ndarray],
    shown: list[int],
    place: Callable[[int, int], tuple[int, int]],
    tile: int,
    size: tuple[int, int],
) -> Any:
    """A transparent layer with a link per weight between the tiles ``place`` puts: as wide as
    its size (relative to the layer's largest), coloured by its sign."""
    from PIL import Image, ImageDraw

    overlay = Image.new("RGBA", size, (255, 255, 255, 0))
    links = ImageDraw.Draw(overlay)
    for layer, weight in enumerate(weights):
        largest = float(np.abs(weight).max()) or 1.0
        for j in range(shown[layer + 1]):
            for i in range(shown[layer]):
                w = float(weight[j, i])
                (x0, y0), (x1, y1) = place(layer, i), place(layer + 1, j)
                colour = (*(POSITIVE if w > 0 else NEGATIVE), int(60 + 160 * abs(w) / largest))
                links.line(
                    (x0 + tile, y0 + tile // 2, x1, y1 + tile // 2),
                    fill=colour,
                    width=max(1, round(5 * abs(w) / largest)),
                )
    return overlay


def _network_key(header: str | None) -> np.ndarray:
    """``header`` and what the network picture's colours mean."""
    return np.concatenate(
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
