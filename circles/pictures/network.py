"""The network drawn into arrays: each hidden unit's output over the plane as a tile, and the whole network as
TensorFlow Playground draws it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from circles.pictures.frames import BODY, HEADER, TEXT, _fit_width, _font, text_block
from circles.pictures.panels import signed_colours


def neuron_image(activations: np.ndarray, scale: int = 1, gap: int = 4, ncols: int = 4,
                 header: str | None = None) -> np.ndarray:
    """One hidden layer as an ``(H, W, 3)`` uint8 image: a tile per unit, ``ncols`` per row, showing its output over
    the grid in the same colours (blue positive, red negative, yellow-white 0), each tile scaled by its own largest
    magnitude, so the shape each neuron has learned is visible whatever its size. Under each tile its unit number and
    that magnitude; a unit whose output is the same everywhere is marked ``dead`` (a ReLU that never fires)."""
    units, height, width = activations.shape
    flat = activations.reshape(units, -1)
    peak = np.abs(flat).max(axis=1)
    dead = dead_units(activations)
    values = activations / np.where(peak > 0, peak, 1)[:, None, None]
    tiles = signed_colours(np.flip(values, axis=1))
    tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
    ncols = min(ncols, units)
    nrows = -(-units // ncols)
    th, tw = height * scale, width * scale
    label = BODY + 6
    out = np.full((nrows * (th + label + gap) - gap, ncols * (tw + gap) - gap, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        top, left = r * (th + label + gap), c * (tw + gap)
        out[top : top + th, left : left + tw] = tile
        text = f"{i + 1}: dead" if dead[i] else f"{i + 1}: ±{peak[i]:.2g}"
        out[top + th : top + th + label, left : left + tw] = _fit_width(text_block(tw, [(text, None)]), tw)[:label]
    key = "under each unit: its largest |output|; each tile on its own scale (blue +, red -, pale 0)"
    lines = [*([text_block(out.shape[1], [(header, None)], size=HEADER)] if header else []),
             text_block(out.shape[1], [(key, None)])]
    return np.concatenate([*lines, out], axis=0)


def dead_units(activations: np.ndarray) -> np.ndarray:
    """Which of the ``(units, ...)`` outputs are the same everywhere (a ReLU that never fires over the plane)."""
    flat = activations.reshape(len(activations), -1)
    peak = np.abs(flat).max(axis=1)
    return flat.max(axis=1) - flat.min(axis=1) <= 1e-6 * np.maximum(peak, 1)


NETWORK_TILE, NETWORK_GAP, NETWORK_SPAN, NETWORK_UNITS = 36, 8, 90, 12  # pixels; units drawn per layer at most


POSITIVE, NEGATIVE = (49, 54, 149), (215, 48, 39)  # RdYlBu's blue and red, as in the tiles


def network_image(outputs: Sequence[np.ndarray], weights: Sequence[np.ndarray], inputs: Sequence[str],
                  header: str | None = None) -> np.ndarray:
    """The network as TensorBoard Playground draws it, as an ``(H, W, 3)`` uint8 image: a column of tiles per layer
    (the inputs, each hidden layer, the output), each tile that unit's output over the plane on its own scale (blue +,
    red -), dead units marked; between columns a link per weight, as wide as its size (relative to the layer's
    largest) and coloured by its sign. ``outputs``: per layer ``(units, ny, nx)``; ``weights``: per layer ``(out,
    in)``; ``inputs``: the input features' names. At most ``NETWORK_UNITS`` units of a layer are drawn."""
    from PIL import Image, ImageDraw

    tile, gap, span = NETWORK_TILE, NETWORK_GAP, NETWORK_SPAN
    shown = [min(len(o), NETWORK_UNITS) for o in outputs]
    titles = ["inputs", *(f"layer {i}" for i in range(1, len(outputs) - 1)), "output"]
    label, top = BODY + 6, BODY + 10
    margin = 30  # room for a column's title wider than its tiles
    height = top + max(shown) * (tile + label + gap)
    width = 2 * margin + len(outputs) * tile + (len(outputs) - 1) * span
    image = Image.new("RGB", (width, height), "white")
    overlay = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    draw, links = ImageDraw.Draw(image), ImageDraw.Draw(overlay)

    def place(layer: int, unit: int) -> tuple[int, int]:
        column = top + (max(shown) - shown[layer]) * (tile + label + gap) // 2
        return margin + layer * (tile + span), column + unit * (tile + label + gap)

    for layer, weight in enumerate(weights):
        largest = float(np.abs(weight).max()) or 1.0
        for j in range(shown[layer + 1]):
            for i in range(shown[layer]):
                w = float(weight[j, i])
                (x0, y0), (x1, y1) = place(layer, i), place(layer + 1, j)
                colour = (*(POSITIVE if w > 0 else NEGATIVE), int(60 + 160 * abs(w) / largest))
                links.line((x0 + tile, y0 + tile // 2, x1, y1 + tile // 2), fill=colour,
                           width=max(1, round(5 * abs(w) / largest)))
    image.paste(overlay, (0, 0), overlay)
    font = _font(BODY)
    for layer, maps in enumerate(outputs):
        x, _ = place(layer, 0)
        draw.text((x + tile // 2, 4), titles[layer], fill=TEXT, font=font, anchor="mt")
        dead = dead_units(maps) if 0 < layer < len(outputs) - 1 else np.zeros(len(maps), bool)
        for unit in range(shown[layer]):
            peak = float(np.abs(maps[unit]).max()) or 1.0
            picture = Image.fromarray(signed_colours(np.flipud(maps[unit]) / peak)).resize((tile, tile))
            x, y = place(layer, unit)
            image.paste(picture, (x, y))
            draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=(120, 120, 120))
            name = inputs[unit] if layer == 0 else "dead" if dead[unit] else ""
            draw.text((x + tile // 2, y + tile + 2), name, fill=NEGATIVE if dead[unit] else TEXT, font=font,
                      anchor="mt")
        if len(maps) > shown[layer]:
            draw.text((x + tile // 2, height - label), f"+{len(maps) - shown[layer]}", fill=TEXT, font=font,
                      anchor="mt")
    key = "links: width = |weight| (of the layer's largest), blue +, red -; tiles: each unit's output over the plane"
    lines = [*([text_block(width, [(header, None)], size=HEADER)] if header else []), text_block(width, [(key, None)])]
    return np.concatenate([*lines, np.asarray(image)], axis=0)
