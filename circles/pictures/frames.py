"""TensorBoard's decision-boundary frames drawn straight into arrays (no matplotlib, milliseconds
each), and the frames of a fit as an animation. Sized for TensorBoard's image cards: about 400
pixels wide and text of 17 to 20 pixels, which a card shows at about four fifths of its size."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from circles.pictures.panels import BoundaryPanel, class_colours, panel_fill

if TYPE_CHECKING:
    from PIL import ImageFont

Colour = tuple[int, int, int]


TEXT: Colour = (40, 40, 40)


# pixels a frame of panels is at least wide: a panel of a 101-point grid is drawn 4x, two 2x
FRAME_WIDTH = 400
# a frame of one panel (the test's) draws it about 300 pixels wide (a 101-point grid 3x) with its
# words in a column right of it: TensorBoard's card, 215 pixels high, shows it at two thirds of
# its size, not two fifths
SIDE_PANEL = 300
SIDE_WIDTH = 200


# font sizes: the header line, every other line (shown at about 16 and 13 pixels)
HEADER = 20
BODY = 17


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at ``size`` pixels, loaded once."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_block(
    width: int, items: Sequence[tuple[str, Colour | None]], size: int = BODY
) -> np.ndarray:
    """A white ``(H, width, 3)`` block with ``items`` (``(text, dot colour or None)``) written
    left to right, on as many lines as they need: an item that does not fit goes to the next
    line, a text longer than a line is broken at its spaces. Nothing is cut off."""
    from PIL import Image, ImageDraw

    font = _font(size)
    line = size + 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed: list[list[tuple[int, str, Colour | None]]] = [[]]
    x = 4
    for text, dot in items:
        for word_line in _broken(text, width - 8 - (14 if dot else 0), font, measure):
            extent = (14 if dot else 0) + int(measure.textlength(word_line, font=font))
            if x > 4 and x + extent > width - 4:
                placed.append([])
                x = 4
            placed[-1].append((x, word_line, dot))
            dot = None  # a broken text's dot goes with its first line
            x += extent + 14
    image = Image.new("RGB", (width, line * len(placed)), "white")
    draw = ImageDraw.Draw(image)
    for row, entries in enumerate(placed):
        middle = row * line + line // 2
        for left, text, dot in entries:
            if dot is not None:
                draw.ellipse((left, middle - 5, left + 10, middle + 5), fill=dot)
                left += 14
            draw.text((left, middle), text, fill=TEXT, font=font, anchor="lm")
    return np.asarray(image)


def _broken(
    text: str, width: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, measure: object
) -> list[str]:
    """``text`` broken at spaces into pieces at most ``width`` pixels wide (a single word may be
    wider)."""
    pieces = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        too_wide = measure.textlength(candidate, font=font) > width  # type: ignore[attr-defined]
        if current and too_wide:
            pieces.append(current)
            candidate = word
        current = candidate
    return [*pieces, current]


def _disc_offsets(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dy**2 + dx**2 <= radius**2 + radius
    return np.stack([dy[keep], dx[keep]], axis=1)


def _edges(region: np.ndarray) -> np.ndarray:
    """Where a ``(H, W)`` array of regions changes from one pixel to the next."""
    edge = np.zeros(region.shape, dtype=bool)
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    return edge


def _zero_lines(functions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Where each of the ``(K, ny, nx)`` functions over the grid (row 0 at the smallest y)
    crosses zero, at a ``(height, width)`` picture's resolution: the grid is interpolated
    bilinearly (exact for a function that is affine in x1 and x2: a straight line stays
    straight), so lines are one pixel thick, not steps of the grid."""
    grid = torch.from_numpy(np.ascontiguousarray(np.flip(functions, axis=1), dtype=np.float32))[
        :, None
    ]
    fine = torch.nn.functional.interpolate(
        grid, size=(height, width), mode="bilinear", align_corners=True
    )[:, 0]
    return (
        np.logical_or.reduce([_edges(f > 0) for f in fine.numpy()])
        if len(fine)
        else np.zeros((height, width), bool)
    )


def render_panel(panel: BoundaryPanel, view: str, scale: int, point_radius: int) -> np.ndarray:
    """One view of a panel, ``scale`` pixels per grid point: the fill, the probability view's
    edge, each member's own boundary where the panel carries them (``panel.boundaries``), then
    the points."""
    fill, region = panel_fill(panel, view)
    rgb = np.repeat(np.repeat(fill, scale, axis=0), scale, axis=1)
    height, width = rgb.shape[:2]
    if view == "probability":
        rgb[_edges(np.repeat(np.repeat(region, scale, axis=0), scale, axis=1))] = 0
    if panel.boundaries is not None:
        rgb[_zero_lines(panel.boundaries, height, width)] = 0
    x0 = panel.xs[0]
    x1 = panel.xs[-1]
    y0 = panel.ys[0]
    y1 = panel.ys[-1]
    cols = np.rint((panel.points[:, 0] - x0) / (x1 - x0) * (width - 1)).astype(np.intp)
    rows = np.rint((y1 - panel.points[:, 1]) / (y1 - y0) * (height - 1)).astype(np.intp)
    offsets = _disc_offsets(point_radius)
    r = (rows[:, None] + offsets[None, :, 0]).ravel()
    c = (cols[:, None] + offsets[None, :, 1]).ravel()
    colours = np.repeat(
        class_colours(panel.num_classes)[panel.labels.astype(np.intp)], len(offsets), axis=0
    )
    keep = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    rgb[r[keep], c[keep]] = colours[keep]
    return rgb


def vote_key(width: int, members: int, class_name: str) -> np.ndarray:
    """The colour key of a frame whose colour is the share of ``members`` voting for
    ``class_name``: the fill's colours from none of them to all, with the counts at its ends."""
    from PIL import Image, ImageDraw

    from circles.pictures.panels import fill_colours

    bar_width = min(width - 8, 290)
    line = BODY + 6
    image = Image.new("RGB", (width, 14 + line), "white")
    image.paste(
        Image.fromarray(np.repeat(fill_colours(np.linspace(0, 1, bar_width))[None], 10, axis=0)),
        (4, 2),
    )
    draw = ImageDraw.Draw(image)
    font = _font(BODY)
    draw.text((4, 14 + line // 2), "0", fill=TEXT, font=font, anchor="lm")
    draw.text(
        (4 + bar_width // 2, 14 + line // 2),
        f"members voting {class_name}",
        fill=TEXT,
        font=font,
        anchor="mm",
    )
    draw.text((4 + bar_width, 14 + line // 2), str(members), fill=TEXT, font=font, anchor="rm")
    return np.asarray(image)


def boundary_image(
    panels: Sequence[BoundaryPanel],
    show_probability: bool = False,
    scale: int | None = None,
    point_radius: int = 2,
    gap: int = 4,
    header: str | None = None,
    note: str = "",
    classes: Sequence[str] = ("outer circle (0)", "inner circle (1)"),
    labels: bool = True,
    key: np.ndarray | None = None,
) -> np.ndarray:
    """The picture of ``boundary_figure`` drawn into an ``(H, W, 3)`` uint8 array, panels side by
    side (a probability row below with ``show_probability``), at least ``FRAME_WIDTH`` wide
    unless ``scale`` is given; with ``labels``, each panel under its title, and on top
    ``header``, the classes' legend, ``note`` and ``key`` (a colour key, see :func:`vote_key`);
    one panel has its words right of it instead (``SIDE_WIDTH`` wide), its key under it. For
    TensorBoard's frames."""
    beside = labels and len(panels) == 1
    if scale is None:
        wide = SIDE_PANEL if beside else FRAME_WIDTH
        scale = max(2, -(-wide // sum(len(p.xs) for p in panels)))
    rows = [
        _panel_row(panels, view, scale, point_radius, gap, labels)
        for view in (["class", "probability"] if show_probability else ["class"])
    ]
    width = max(r.shape[1] for r in rows)
    out: list[np.ndarray] = []
    words = _words(SIDE_WIDTH if beside else width, header, note, classes) if labels else []
    if not beside:
        out += words
    out += [_fit_width(key, width)] if key is not None and labels else []
    for i, image in enumerate(rows):
        if i:
            out.append(np.full((gap, width, 3), 255, dtype=np.uint8))
        out.append(
            np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
        )
    if not beside:
        return np.concatenate(out, axis=0)
    left = np.concatenate(out, axis=0)
    right = np.concatenate(words, axis=0)
    height = max(left.shape[0], right.shape[0])
    return np.concatenate(
        [
            np.pad(left, ((0, height - left.shape[0]), (0, gap), (0, 0)), constant_values=255),
            np.pad(right, ((0, height - right.shape[0]), (0, 0), (0, 0)), constant_values=255),
        ],
        axis=1,
    )


def _panel_row(
    panels: Sequence[BoundaryPanel],
    view: str,
    scale: int,
    point_radius: int,
    gap: int,
    labels: bool,
) -> np.ndarray:
    """One view of the panels side by side, each under its title with ``labels``."""
    tiles = []
    for p in panels:
        tile = render_panel(p, view, scale, point_radius)
        title = p.title if view == "class" else f"{p.title}: P(class 1), line at 0.5"
        tiles.append(
            np.concatenate([text_block(tile.shape[1], [(title, None)]), tile]) if labels else tile
        )
    height = max(t.shape[0] for t in tiles)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(
        [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in row],
        axis=1,
    )


def _words(width: int, header: str | None, note: str, classes: Sequence[str]) -> list[np.ndarray]:
    """A frame's words ``width`` wide: ``header``, the classes' legend, ``note``."""
    colours = class_colours(len(classes))
    legend: list[tuple[str, Colour | None]] = [
        (name, (int(r), int(g), int(b))) for name, (r, g, b) in zip(classes, colours, strict=True)
    ]
    return [
        *([text_block(width, [(header, None)], size=HEADER)] if header else []),
        text_block(width, legend),
        *([text_block(width, [(note, None)])] if note else []),
    ]


def _fit_width(image: np.ndarray, width: int) -> np.ndarray:
    return np.pad(
        image[:, :width], ((0, 0), (0, max(0, width - image.shape[1])), (0, 0)), constant_values=255
    )


class Animation:
    """Frames ``(H, W, 3)`` uint8 for an animated GIF, at most ``max_frames`` evenly spaced over
    however many come: past the limit every other frame is dropped and the intake slows to match."""

    def __init__(self, max_frames: int = 100) -> None:
        self.max_frames = max_frames
        self.frames: list[np.ndarray] = []
        self._stride = 1
        self._offered = 0

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, frame: np.ndarray) -> None:
        if self._offered % self._stride == 0:
            self.frames.append(frame)
            if len(self.frames) > self.max_frames:
                self.frames = self.frames[::2]
                self._stride = self._stride * 2
        self._offered += 1

    def load(self, path: str) -> None:
        """Start from the frames of a GIF this animation saved before (a fit that goes on adds to
        them)."""
        from PIL import Image, ImageSequence

        with Image.open(path) as gif:
            self.frames = [
                np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)
            ]
        self._offered = len(self.frames)

    def save(self, path: Any, seconds_per_frame: float = 0.15) -> None:
        """The frames as a looping GIF, the last one held for a second (frames of other sizes
        padded white)."""
        from PIL import Image

        height = max(f.shape[0] for f in self.frames)
        width = max(f.shape[1] for f in self.frames)
        padded = [
            np.pad(
                f, ((0, height - f.shape[0]), (0, width - f.shape[1]), (0, 0)), constant_values=255
            )
            for f in self.frames
        ]
        images = [
            Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
            for f in padded
        ]
        durations = [round(seconds_per_frame * 1000)] * (len(images) - 1) + [1000]
        images[0].save(
            path,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,
            optimize=True,
        )
