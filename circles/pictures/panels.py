"""One picture's content (a model's probabilities over a grid, the points on top) and the colours
every picture draws it in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circles.pictures.grids import ArrayLike, _numpy

# matplotlib's RdYlBu is a linear interpolation of these ColorBrewer colours; class 0 is red, class
# 1 blue.
_RDYLBU = np.array(
    [
        (165, 0, 38),
        (215, 48, 39),
        (244, 109, 67),
        (253, 174, 97),
        (254, 224, 144),
        (255, 255, 191),
        (224, 243, 248),
        (171, 217, 233),
        (116, 173, 209),
        (69, 117, 180),
        (49, 54, 149),
    ],
    dtype=np.float64,
)


_LUT = np.stack(
    [
        np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RDYLBU)), _RDYLBU[:, c])
        for c in range(3)
    ],
    axis=1,
)


_FILL_ALPHA = 0.7  # the chapter's contourf alpha


_POINT_LUT = _LUT.round().astype(np.uint8)


_FILL_LUT = (_FILL_ALPHA * _LUT + (1 - _FILL_ALPHA) * 255).round().astype(np.uint8)


# More than two classes: matplotlib's tab10, one colour per class (cycled beyond ten).
_TAB10 = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


def class_colours(classes: int) -> np.ndarray:
    """The colour of each class, ``(C, 3)`` uint8, in every picture: RdYlBu's red and blue for
    two classes (the chapter's), tab10 for more."""
    return (
        np.stack([_POINT_LUT[0], _POINT_LUT[255]])
        if classes == 2
        else _TAB10[np.arange(classes) % len(_TAB10)]
    )


@dataclass
class BoundaryPanel:
    """One picture: the model's probabilities over a grid and the points drawn on top. ``votes``
    is the share of members voting for class 1 (0 or 1 for a single network; see
    :func:`grid_predictions`): the class view colours it, so with several members the colour
    shows where they disagree."""

    title: str
    xs: np.ndarray
    ys: np.ndarray
    probs: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    votes: np.ndarray
    # (K, ny, nx): functions whose zero sets are drawn, one per member
    boundaries: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return 2 if self.probs.ndim == 2 else self.probs.shape[-1]

    @property
    def split_vote(self) -> bool:
        """Whether the members disagree anywhere on the grid (never, for a single network)."""
        return bool(((self.votes > 0) & (self.votes < 1)).any())

    @classmethod
    def of(
        cls,
        title: str,
        xs: np.ndarray,
        ys: np.ndarray,
        probs: np.ndarray,
        points: ArrayLike,
        labels: ArrayLike,
        max_points: int | None = None,
        votes: np.ndarray | None = None,
        boundaries: np.ndarray | None = None,
    ) -> BoundaryPanel:
        """A panel of at most ``max_points`` of the points (a fixed sample); without ``votes``, a
        single network's; ``boundaries``: each member's decision function over the grid, whose
        zero line is drawn."""
        points = _numpy(points)[:, :2]
        labels = _numpy(labels)
        if max_points is not None and len(points) > max_points:
            keep = np.random.default_rng(0).choice(len(points), max_points, replace=False)
            points = points[keep]
            labels = labels[keep]
        if votes is None:
            votes = (
                (probs > 0.5).astype(np.float64)
                if probs.ndim == 2
                else np.eye(probs.shape[-1])[probs.argmax(-1)]
            )
        return cls(title, xs, ys, probs, points, labels, votes, boundaries)


def _lut_index(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.intp)


def fill_colours(values: np.ndarray) -> np.ndarray:
    """The fill's RdYlBu colour (alpha 0.7 on white) of values in [0, 1]: uint8, one more axis of
    3."""
    return _FILL_LUT[_lut_index(values)]


def signed_colours(values: np.ndarray) -> np.ndarray:
    """RdYlBu at full strength for values in [-1, 1]: red -1, yellow-white 0, blue +1 (the neuron
    tiles')."""
    return _POINT_LUT[_lut_index(0.5 + 0.5 * values)]


def panel_fill(panel: BoundaryPanel, view: str) -> tuple[np.ndarray, np.ndarray]:
    """The filled grid of a view, ``(len(ys), len(xs), 3)`` uint8 with row 0 at the top (largest
    y), and the region whose edge the probability view draws (``(len(ys), len(xs))`` class
    indices). Two classes: RdYlBu at the share of votes for class 1 (class view) or at the
    probability (its edge: 0.5). More: the colour of the class most members vote for, or of the
    most probable class, faded towards white as that share or probability falls to 1/C."""
    probs = np.flipud(panel.probs)
    votes = np.flipud(panel.votes)
    if probs.ndim == 2:
        return fill_colours(votes if view == "class" else probs), (probs > 0.5).astype(np.intp)
    share = votes if view == "class" else probs
    winner = share.argmax(-1)
    classes = share.shape[-1]
    strength = np.clip((share.max(-1) - 1 / classes) / (1 - 1 / classes), 0, 1)
    # a single network's votes are 0 or 1: the classes, solid
    faded = view == "probability" or panel.split_vote
    alpha = (_FILL_ALPHA * (strength if faded else np.ones_like(strength)))[..., None]
    fill = alpha * class_colours(classes)[winner] + (1 - alpha) * 255
    return fill.round().astype(np.uint8), probs.argmax(-1)
