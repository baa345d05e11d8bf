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
    placed: list[list[tuple[int, str, Colour | None]]] = [[]]
    x = 4
    for text, dot in items:
        for word_line in _broken(text, width - 8 - (14 if dot else 0), font):
            extent = (14 if dot else 0) + int(font.getlength(word_line))
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


def _broken(text: str, width: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> list[str]:
    """``text`` broken at spaces into pieces at most ``width`` pixels wide (a single word may be
    wider)."""
    pieces = [""]
    for word in text.split(" "):
        candidate = f"{pieces[-1]} {word}" if pieces[-1] else word
        if pieces[-1] and font.getlength(candidate) > width:
            pieces.append(word)
        else:
            pieces[-1] = candidate
    return pieces


def joined(images: Sequence[np.ndarray], axis: int = 1, gap: int = 0) -> np.ndarray:
    """``(H, W, 3)`` images side by side (``axis`` 1) or one under another (``axis`` 0), ``gap``
    white pixels apart, each padded white at its bottom or its right to the largest."""
    across = max(image.shape[1 - axis] for image in images)
    padded = []
    for i, image in enumerate(images):
        ends = [across - image.shape[1 - axis]] * 2
        ends[axis] = gap if i < len(images) - 1 else 0
        padded.append(np.pad(image, ((0, ends[0]), (0, ends[1]), (0, 0)), constant_values=255))
    return np.concatenate(padded, axis=axis)


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
    span = np.arange(-point_radius, point_radius + 1)
    dy, dx = np.nonzero(span[:, None] ** 2 + span**2 <= point_radius**2 + point_radius)
    xs, ys, points = panel.xs, panel.ys, panel.points
    cols = np.rint((points[:, 0] - xs[0]) / (xs[-1] - xs[0]) * (width - 1)).astype(np.intp)
    rows = np.rint((ys[-1] - points[:, 1]) / (ys[-1] - ys[0]) * (height - 1)).astype(np.intp)
    r = (rows[:, None] + dy - point_radius).ravel()
    c = (cols[:, None] + dx - point_radius).ravel()
    colours = np.repeat(
        class_colours(panel.num_classes)[panel.labels.astype(np.intp)], len(dy), axis=0
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
    for x, text, anchor in (
        (4, "0", "lm"),
        (4 + bar_width // 2, f"members voting {class_name}", "mm"),
        (4 + bar_width, str(members), "rm"),
    ):
        draw.text((x, 14 + line // 2), text, fill=TEXT, font=_font(BODY), anchor=anchor)
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
        scale = max(
            2, -(-(SIDE_PANEL if beside else FRAME_WIDTH) // sum(len(p.xs) for p in panels))
        )
    rows = [
        joined([_titled(p, view, scale, point_radius, labels) for p in panels], axis=1, gap=gap)
        for view in (["class", "probability"] if show_probability else ["class"])
    ]
    width = max(r.shape[1] for r in rows)
    words = []
    if labels:  # header, the classes' legend, note
        column = SIDE_WIDTH if beside else width
        legend: list[tuple[str, Colour | None]] = [
            (name, (int(r), int(g), int(b)))
            for name, (r, g, b) in zip(classes, class_colours(len(classes)), strict=True)
        ]
        words = [text_block(column, [(header, None)], size=HEADER)] if header else []
        words += [
            text_block(column, legend),
            *([text_block(column, [(note, None)])] if note else []),
        ]
    keys = [] if key is None or not labels else [key[:, :width]]  # joined pads a narrower one

    left = joined([*([] if beside else words), *keys, joined(rows, axis=0, gap=gap)], axis=0)
    return joined([left, np.concatenate(words)], axis=1, gap=gap) if beside else left


def _titled(
    panel: BoundaryPanel, view: str, scale: int, point_radius: int, labels: bool
) -> np.ndarray:
    """One view of a panel, under its title with ``labels``."""
    tile = render_panel(panel, view, scale, point_radius)
    title = panel.title if view == "class" else f"{panel.title}: P(class 1), line at 0.5"
    return np.concatenate([text_block(tile.shape[1], [(title, None)]), tile]) if labels else tile


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
        images = [
            Image.fromarray(
                np.pad(
                    f,
                    ((0, height - f.shape[0]), (0, width - f.shape[1]), (0, 0)),
                    constant_values=255,
                )
            ).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
            for f in self.frames
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
