"""The class-1 region of a piecewise-linear network in a box of the plane, exactly: the box cut
into the convex pieces on which the network is one affine map, and from them whether that region
reaches the box's edge.

A ReLU network (or leaky ReLU, or none) is affine on each cell of the arrangement its units cut
the plane into. Cutting the box unit by unit, layer by layer, gives those cells as convex
polygons, each with the affine map the logit is on it. On a cell the class-1 part (logit > 0) is
the cell clipped by one half-plane, so its area is exact; along the box's edge the logit is affine
between cell corners, so it is positive somewhere on the edge exactly when it is at some corner
there. No grid is involved: a corridor of any width is found (up to float64 rounding), where a
grid misses any narrower than its cell. Networks whose hidden layers are all at most 2 wide
cannot enclose a region (Beise, Cruz and Schroeder 2018; Johnson 2019): every piece of their
class-1 region reaches the box's edge; wider ones can."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from circles.errors import check
from circles.model.networks import StackedMLP

BOX = 50.0  # half-width of the default box: 50 times the outer circle's radius
_EDGE = 1e-9  # relative: a corner this close to the box's side lies on it
# relative to the box's area: a piece this small is rounding (three copies of one corner)
_SLIVER = 1e-12


@dataclass(frozen=True)
class Region:
    """One network's class-1 region inside the box ``[-box, box]^2``: the convex ``parts`` it is
    made of (one per affine piece of the box that holds some), which connected ``component`` each
    belongs to, and which components reach the box's edge."""

    box: float
    pieces: int  # affine pieces of the box
    parts: tuple[np.ndarray, ...]  # corners (M, 2) of each class-1 part
    component: tuple[int, ...]  # each part's connected component, 0 .. components - 1
    touching: frozenset[int]  # the components that reach the box's edge

    def holding(self, points: np.ndarray) -> set[int]:
        """The components that hold some of ``points`` ``(N, 2)``."""
        parts = zip(self.parts, self.component, strict=True)
        return {component for part, component in parts if _inside(part, points).any()}

    def bounded_around(self, points: np.ndarray) -> bool:
        """Whether the region holds some of ``points`` and every component that does stays off the
        box's edge (for circles' inner class: the region the network draws around it is closed)."""
        held = self.holding(points)
        return bool(held) and not held & self.touching


def _inside(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which of ``points`` lie in the convex polygon (corners in either order; its edges and
    corners included, to float64 rounding)."""
    edges = np.roll(corners, -1, axis=0) - corners
    rel = points[None, :, :] - corners[:, None, :]
    cross = edges[:, None, 0] * rel[..., 1] - edges[:, None, 1] * rel[..., 0]
    tol = 1e-12 * float(np.abs(corners).max()) ** 2
    return (cross >= -tol).all(0) | (cross <= tol).all(0)


def _share_edge(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Whether two convex polygons share a stretch of boundary longer than ``tol`` (lying on one
    line within ``tol``): an edge of ``a`` along which two consecutive corners of ``b`` lie."""
    for p, q in zip(a, np.roll(a, -1, axis=0), strict=True):
        d = q - p
        length = float(np.hypot(*d))
        if length <= tol:
            continue
        rel = b - p
        off = np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / length  # distance from the line
        along = (rel @ d) / length
        on = off <= tol
        # consecutive corners of b on the line: an edge of b along this edge of a
        spans = (
            sorted((along[i], along[(i + 1) % len(b)]))
            for i in np.flatnonzero(on & np.roll(on, -1))
        )
        if any(min(hi, length) - max(lo, 0.0) > tol for lo, hi in spans):
            return True
    return False


def _components(parts: list[np.ndarray], tol: float) -> list[int]:
    """Each part's connected component: parts that share a stretch of edge are joined."""
    from scipy.cluster.hierarchy import DisjointSet

    joined = DisjointSet(range(len(parts)))
    low = np.array([part.min(0) for part in parts]).reshape(-1, 2) - tol
    high = np.array([part.max(0) for part in parts]).reshape(-1, 2) + tol
    for i in range(len(parts)):
        near = ((low[i + 1 :] <= high[i]) & (high[i + 1 :] >= low[i])).all(1)
        for j in (np.flatnonzero(near) + i + 1).tolist():
            if not joined.connected(i, j) and _share_edge(parts[i], parts[j], tol):
                joined.merge(i, j)
    roots = [joined[i] for i in range(len(parts))]
    numbers = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [numbers[r] for r in roots]


def _clip(corners: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The part of a convex polygon where an affine function (``values`` at its corners) is >= 0:
    one pass of Sutherland-Hodgman against a half-plane."""
    out = []
    for i in range(len(corners)):
        j = (i + 1) % len(corners)
        if values[i] >= 0:
            out.append(corners[i])
        if (values[i] > 0 > values[j]) or (values[i] < 0 < values[j]):
            t = values[i] / (values[i] - values[j])
            out.append(corners[i] + t * (corners[j] - corners[i]))
    return np.array(out).reshape(-1, 2)


def _area(corners: np.ndarray) -> float:
    """The area of a polygon by the shoelace formula (0 for fewer than three corners)."""
    if len(corners) < 3:
        return 0.0
    x, y = corners[:, 0], corners[:, 1]
    twice = x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]
    return 0.5 * abs(float(twice))


def _cut(
    corners: np.ndarray, a: np.ndarray, c: np.ndarray, slope: float, sliver: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A convex polygon cut where each unit of the layer ``x -> a @ x + c`` (``a`` ``(units, 2)``,
    ``c`` ``(units,)``) changes sign: its parts of area more than ``sliver``, each with every
    unit's slope there (1 where the unit is positive, the activation's ``slope`` where it is
    negative), so the next layer is one affine map on each."""
    parts = [(corners, np.ones(len(c)))]
    for unit in range(len(c)):
        cut = []
        for whole_part, scale in parts:
            values = whole_part @ a[unit] + c[unit]
            for sign, unit_slope in ((1.0, 1.0), (-1.0, slope)):
                side = sign * values
                # a unit that is 0 on the whole part goes to its positive side only
                if (side <= 0).all() and (sign < 0 or (side < 0).any()):
                    continue
                whole = (side >= 0).all()
                part = whole_part if whole else _clip(whole_part, side)
                if whole or _area(part) > sliver:
                    cut.append((part, np.where(np.arange(len(c)) == unit, unit_slope, scale)))
        parts = cut
    return parts


def class_one_region(
    layers: Sequence[tuple[np.ndarray, np.ndarray]], slope: float, box: float = BOX
) -> Region:
    """The class-1 region (logit > 0) inside ``[-box, box]^2`` of the network whose layers are
    ``(weight (out, in), bias (out,))``, input side first, one logit out, and whose activation
    after every hidden layer is the identity on positive numbers and ``slope`` times a negative
    one (0 for ReLU, 1 for none)."""
    check(box > 0, "box", "a positive number", box)
    square = np.array([[-box, -box], [box, -box], [box, box], [-box, box]], dtype=np.float64)
    sliver = _SLIVER * (2 * box) ** 2
    pieces = [(square, *layers[0])]
    for weight, bias in layers[1:]:
        pieces = [
            (part, weight @ (scale[:, None] * a), weight @ (scale * c) + bias)
            for corners, a, c in pieces
            for part, scale in _cut(corners, a, c, slope, sliver)
        ]
    parts, touches = [], []
    on_edge = box * (1 - _EDGE)
    for corners, a, c in pieces:
        logit = corners @ a[0] + c[0]
        if (logit > 0).any():
            part = _clip(corners, logit)
            if _area(part) > sliver:
                parts.append(part)
                edge = (np.abs(corners) >= on_edge).any(axis=1)
                touches.append(bool((logit[edge] > 0).any()))
    component = _components(parts, box * _EDGE * 10)
    touching = frozenset(c for c, t in zip(component, touches, strict=True) if t)
    return Region(box, len(pieces), tuple(parts), tuple(component), touching)


def member_regions(
    net: StackedMLP, features: Sequence[str], num_classes: int, box: float = BOX
) -> list[Region]:
    """Each member's class-1 region in ``[-box, box]^2`` (see :func:`class_one_region`), for a
    two-class network that sees the plane as it is (features ``[x1, x2]``: crosses such as
    ``x1_sq`` are not piecewise linear in the plane) and whose activation is piecewise linear:
    ReLU (slope 0 on negative numbers), a leaky ReLU (its own) or none (1)."""
    check(
        list(features) == ["x1", "x2"],
        "data.features",
        "[x1, x2] (the plane as it is) for exact regions",
        list(features),
    )
    check(num_classes == 2, "num_classes", "2 for a class-1 region", num_classes)
    module = net.activation
    slopes = {nn.ReLU: 0.0, nn.Identity: 1.0, nn.LeakyReLU: getattr(module, "negative_slope", 0)}
    check(
        type(module) in slopes,
        "model.activation",
        "relu, leaky_relu or none (piecewise linear) for exact regions",
        type(module).__name__,
    )
    layers = [
        [
            (w[k].detach().double().cpu().numpy(), b[k].detach().double().cpu().numpy())
            for w, b in zip(net.weights, net.biases, strict=True)
        ]
        for k in range(net.members)
    ]
    return [class_one_region(member, float(slopes[type(module)]), box) for member in layers]


def enclosed_members(model: Any, data: Any) -> int | None:
    """How many of the model's members enclose their class-1 training points: the class-1 region
    around them inside the default box (:data:`BOX`) stays off the box's edge; None where the data
    has no training points. Raises :class:`CirclesError` (why) where regions are not exact (an
    activation that is not piecewise linear, crossed features, more than two classes)."""
    points = data.points("train")
    if points is None:
        return None
    regions = member_regions(model.net, model.feature_names, model.num_classes)
    x, y = points
    inner = x[y == 1].detach().double().cpu().numpy()
    return sum(region.bounded_around(inner) for region in regions)
