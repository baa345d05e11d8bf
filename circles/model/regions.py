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

from circles.errors import CirclesError, check
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

    @property
    def area(self) -> float:
        return sum(_area(part) for part in self.parts)

    @property
    def components(self) -> int:
        return len(set(self.component))

    @property
    def all_reach_edge(self) -> bool:
        """Whether every piece of the region reaches the box's edge (true of an empty region)."""
        return set(self.component) <= self.touching

    def holding(self, points: np.ndarray) -> set[int]:
        """The components that hold some of ``points`` ``(N, 2)``."""
        found = set()
        for part, component in zip(self.parts, self.component, strict=True):
            if component not in found and _inside(part, points).any():
                found.add(component)
        return found

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
        both = on & np.roll(on, -1)
        for i in np.flatnonzero(both):
            lo, hi = sorted((along[i], along[(i + 1) % len(b)]))
            if min(hi, length) - max(lo, 0.0) > tol:
                return True
    return False


def _components(parts: list[np.ndarray], tol: float) -> list[int]:
    """Each part's connected component: parts that share a stretch of edge are joined."""
    parent = list(range(len(parts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    low = np.array([part.min(0) for part in parts]).reshape(-1, 2) - tol
    high = np.array([part.max(0) for part in parts]).reshape(-1, 2) + tol
    for i in range(len(parts)):
        near = ((low[i + 1 :] <= high[i]) & (high[i + 1 :] >= low[i])).all(1)
        for j in (np.flatnonzero(near) + i + 1).tolist():
            if root(i) != root(j) and _share_edge(parts[i], parts[j], tol):
                parent[root(i)] = root(j)
    roots = [root(i) for i in range(len(parts))]
    numbers = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [numbers[r] for r in roots]


@dataclass
class _Piece:
    """A convex polygon (corners ``(M, 2)``, in order) and the affine map ``x -> a @ x + c`` of
    the current layer's units (``a`` ``(units, 2)``, ``c`` ``(units,)``) on it; ``scale`` is
    each unit's slope on it once the units have cut it."""

    corners: np.ndarray
    a: np.ndarray
    c: np.ndarray
    scale: np.ndarray


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


def _cut(piece: _Piece, unit: int, slope: float, sliver: float) -> list[_Piece]:
    """The piece cut where ``unit`` changes sign: its positive part (the unit's slope 1) and its
    negative part (the activation's ``slope``), each only where its area is more than
    ``sliver``."""
    values = piece.corners @ piece.a[unit] + piece.c[unit]
    parts = []
    for sign, unit_slope in ((1.0, 1.0), (-1.0, slope)):
        side = sign * values
        # a unit that is 0 on the whole piece goes to its positive side only
        if (side <= 0).all() and (sign < 0 or (side < 0).any()):
            continue
        whole = (side >= 0).all()
        corners = piece.corners if whole else _clip(piece.corners, side)
        if whole or _area(corners) > sliver:
            scale = piece.scale.copy()
            scale[unit] = unit_slope
            parts.append(_Piece(corners, piece.a, piece.c, scale))
    return parts


def _next_layer(
    pieces: list[_Piece], slope: float, weight: np.ndarray, bias: np.ndarray, sliver: float
) -> list[_Piece]:
    """The current layer's units cut the pieces one by one; on each part every unit is the
    identity or ``slope`` times itself, so the next layer's units are one affine map there."""
    for unit in range(len(pieces[0].c)):
        pieces = [part for piece in pieces for part in _cut(piece, unit, slope, sliver)]
    return [
        _Piece(
            p.corners,
            weight @ (p.scale[:, None] * p.a),
            weight @ (p.scale * p.c) + bias,
            np.ones(len(bias)),
        )
        for p in pieces
    ]


def class_one_region(
    layers: Sequence[tuple[np.ndarray, np.ndarray]], slope: float, box: float = BOX
) -> Region:
    """The class-1 region (logit > 0) inside ``[-box, box]^2`` of the network whose layers are
    ``(weight (out, in), bias (out,))``, input side first, one logit out, and whose activation
    after every hidden layer is the identity on positive numbers and ``slope`` times a negative
    one (0 for ReLU, 1 for none)."""
    check(box > 0, "box", "a positive number", box)
    square = np.array([[-box, -box], [box, -box], [box, box], [-box, box]], dtype=np.float64)
    weight, bias = layers[0]
    pieces = [_Piece(square, weight, bias, np.ones(len(bias)))]
    sliver = _SLIVER * (2 * box) ** 2
    for next_weight, next_bias in layers[1:]:
        pieces = _next_layer(pieces, slope, next_weight, next_bias, sliver)
    parts, touches = [], []
    on_edge = box * (1 - _EDGE)
    for piece in pieces:
        logit = piece.corners @ piece.a[0] + piece.c[0]
        if (logit > 0).any():
            part = _clip(piece.corners, logit)
            if _area(part) > sliver:
                parts.append(part)
                edge = (np.abs(piece.corners) >= on_edge).any(axis=1)
                touches.append(bool((logit[edge] > 0).any()))
    component = _components(parts, box * _EDGE * 10)
    touching = frozenset(c for c, t in zip(component, touches, strict=True) if t)
    return Region(box, len(pieces), tuple(parts), tuple(component), touching)


def member_layers(net: StackedMLP, member: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Member ``member``'s layers as float64 arrays ``(weight, bias)``, input side first."""
    return [
        (w[member].detach().double().cpu().numpy(), b[member].detach().double().cpu().numpy())
        for w, b in zip(net.weights, net.biases, strict=True)
    ]


def negative_slope(net: StackedMLP) -> float:
    """The slope of the network's activation on negative numbers: 0 for ReLU, a leaky ReLU's own,
    1 without one; refused for an activation that is not piecewise linear."""
    module = net.activation
    slopes = {nn.ReLU: 0.0, nn.Identity: 1.0}
    if isinstance(module, nn.LeakyReLU):
        return float(module.negative_slope)
    check(
        type(module) in slopes,
        "model.activation",
        "relu, leaky_relu or none (piecewise linear) for exact regions",
        type(module).__name__,
    )
    return slopes[type(module)]


def member_regions(
    net: StackedMLP, features: Sequence[str], num_classes: int, box: float = BOX
) -> list[Region]:
    """Each member's class-1 region in ``[-box, box]^2`` (see :func:`class_one_region`), for a
    two-class network that sees the plane as it is (features ``[x1, x2]``: crosses such as
    ``x1_sq`` are not piecewise linear in the plane)."""
    check(
        list(features) == ["x1", "x2"],
        "data.features",
        "[x1, x2] (the plane as it is) for exact regions",
        list(features),
    )
    check(num_classes == 2, "num_classes", "2 for a class-1 region", num_classes)
    slope = negative_slope(net)
    return [class_one_region(member_layers(net, k), slope, box) for k in range(net.members)]


def enclosed_members(model: Any, data: Any) -> int | None:
    """How many of the model's members enclose their class-1 training points: the class-1 region
    around them inside the default box (:data:`BOX`) stays off the box's edge. None where regions
    are not exact (an activation that is not piecewise linear, crossed features, more than two
    classes) or the data has no training points."""
    points = data.points("train")
    if points is None:
        return None
    try:
        regions = member_regions(model.net, model.feature_names, model.num_classes)
    except CirclesError:  # what member_regions refuses has no exact region
        return None
    x, y = points
    inner = x[y == 1].detach().double().cpu().numpy()
    return sum(region.bounded_around(inner) for region in regions)
