"""Input features of a point (x1, x2), as TensorFlow Playground offers them: the input layer of
the network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from circles.errors import check

Feature = Literal["x1", "x2", "x1_sq", "x2_sq", "x1_x2", "sin_x1", "sin_x2"]
FEATURES = {
    "x1": lambda x: x[:, 0],
    "x2": lambda x: x[:, 1],
    "x1_sq": lambda x: x[:, 0] ** 2,
    "x2_sq": lambda x: x[:, 1] ** 2,
    "x1_x2": lambda x: x[:, 0] * x[:, 1],
    "sin_x1": lambda x: torch.sin(x[:, 0]),
    "sin_x2": lambda x: torch.sin(x[:, 1]),
}


def check_features(features: Sequence[str]) -> None:
    check(
        len(features) > 0
        and all(f in FEATURES for f in features)
        and len(set(features)) == len(features),
        "features",
        f"a non-empty list of distinct names from {list(FEATURES)}",
        list(features),
    )


class FeatureMap(nn.Module):
    """The input layer of TensorFlow Playground: points (N, 2) in the (x1, x2) plane -> the
    chosen features (N, F). No parameters; for ``[x1, x2]`` it passes the points through
    untouched."""

    def __init__(self, features: Sequence[str]) -> None:
        super().__init__()
        check_features(features)
        self.features = list(features)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.features == ["x1", "x2"]
        return x if plain else torch.stack([FEATURES[f](x) for f in self.features], dim=1)


def nonfinite_rows(features: Sequence[str], x: torch.Tensor) -> torch.Tensor:
    """The indices of the points ``(N, 2)`` some of whose ``features`` leave float32's range."""
    if list(features) == ["x1", "x2"]:
        return torch.zeros(0, dtype=torch.long)
    values = FeatureMap(features)(x.float())
    return (~torch.isfinite(values)).any(dim=1).nonzero().flatten()


def check_finite_features(
    features: Sequence[str], x: torch.Tensor, field: str, where: object
) -> None:
    """Refuse points whose features leave float32's range (``x1_sq`` of 1e20 is inf): the network
    would give nan for them. Names the first of them by their place among the points (1 is the
    first) and coordinates. (Points as read or drawn are finite: only products and squares can
    leave the range.)"""
    bad = nonfinite_rows(features, x)
    if len(bad):
        i = int(bad[0])
        check(
            False,
            field,
            "points whose features are finite float32 numbers",
            where,
            f"{len(bad):,} of its {len(x):,} points are not, the first point {i + 1} = "
            f"({float(x[i, 0]):g}, "
            f"{float(x[i, 1]):g}) with features {list(features)}.",
        )
