"""The exact class-1 region of a ReLU network: its area and reach against a dense grid, a corridor
no grid sees, and the width theorem (hidden layers at most 2 wide never enclose a region; trained
wider ones that solve circles do)."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circles.data.module import CirclesDataModule
from circles.errors import CirclesError
from circles.model.classifier import CirclesClassifier
from circles.model.regions import Region, _area, class_one_region, member_regions

from helpers import quiet_trainer

# 1 - relu(x) - relu(-x/2 + .866y) - relu(-x/2 - .866y): positive inside a triangle around 0
TRIANGLE = [
    (np.array([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]]), np.zeros(3)),
    (-np.ones((1, 3)), np.array([1.0])),
]


def area(region: Region) -> float:
    return sum(_area(part) for part in region.parts)


def components(region: Region) -> int:
    return len(set(region.component))


def all_reach_edge(region: Region) -> bool:
    """Every piece of the region reaches the box's edge (true of an empty region)."""
    return set(region.component) <= region.touching


def logits(layers, points: np.ndarray, slope: float = 0.0) -> np.ndarray:
    """The network's logit at ``points`` ``(N, 2)``, the plain way."""
    h = points
    for i, (weight, bias) in enumerate(layers):
        h = h @ weight.T + bias
        if i < len(layers) - 1:
            h = np.where(h > 0, h, slope * h)
    return h[:, 0]


def grid(box: float, n: int) -> np.ndarray:
    axis = np.linspace(-box, box, n)
    return np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)


def random_layers(data: st.DataObject, widths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    number = st.floats(-3, 3, allow_nan=False, width=32)
    sizes = [2, *widths, 1]
    return [
        (
            np.array(data.draw(st.lists(number, min_size=o * i, max_size=o * i))).reshape(o, i),
            np.array(data.draw(st.lists(number, min_size=o, max_size=o))),
        )
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def test_a_triangle_is_bounded_its_area_exact_and_moved_out_of_the_box_it_reaches_the_edge():
    region = class_one_region(TRIANGLE, 0.0, box=2.0)
    inside = logits(TRIANGLE, grid(2.0, 801)) > 0
    assert components(region) == 1 and not region.touching
    assert region.bounded_around(np.zeros((1, 2)))
    assert area(region) == pytest.approx(inside.mean() * 16, rel=0.01)
    assert not region.bounded_around(np.array([[1.9, 1.9]]))  # outside: holds nothing
    small_box = class_one_region(TRIANGLE, 0.0, box=0.5)  # the triangle pokes out of it
    assert small_box.touching and not small_box.bounded_around(np.zeros((1, 2)))


def test_a_corridor_between_two_grid_rows_is_found():
    """Positive only where |y - 0.5| < 0.001: a 101-point grid of [-50, 50]^2 (rows at whole
    numbers) has no point in it; the exact region finds it, reaching both sides of the box."""
    corridor = [
        (np.array([[0.0, 1.0], [0.0, -1.0]]), np.array([-0.5, 0.5])),
        (-np.ones((1, 2)), np.array([1e-3])),
    ]
    assert not (logits(corridor, grid(50.0, 101)) > 0).any()
    region = class_one_region(corridor, 0.0)
    assert area(region) == pytest.approx(100 * 2e-3, rel=1e-6)
    assert components(region) == 1 and region.touching == {0}


@settings(max_examples=60)
@given(data=st.data(), widths=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_the_exact_region_holds_every_positive_grid_point_and_reaches_the_edge_where_the_grid_does(
    data, widths
):
    layers = random_layers(data, widths)
    region = class_one_region(layers, 0.0, box=4.0)
    points = grid(4.0, 81)
    positive = points[logits(layers, points) > 0]
    if len(positive):
        assert area(region) > 0
        assert region.holding(positive)
    else:
        assert area(region) < 16 * (2 * 4 / 80) * 4  # at most a strip one cell wide around the box
    edge = positive[(np.abs(positive) == 4.0).any(1)]
    if len(edge):
        assert region.touching
    cell = (8 / 80) ** 2
    assert abs(area(region) - len(positive) / len(points) * 64) <= 64 * 0.1 + cell


@settings(max_examples=150)
@given(data=st.data(), depth=st.integers(1, 8), width=st.sampled_from([1, 2]))
def test_no_network_at_most_2_wide_encloses_a_region_whatever_its_depth_and_weights(
    data, depth, width
):
    """Beise, Cruz and Schroeder (2018), Johnson (2019): every connected piece of the class-1
    region of a network whose hidden layers are at most as wide as its input (2) is unbounded,
    so it reaches the edge of any box it meets; through the model's own stacked network."""
    model = CirclesClassifier(hidden_sizes=[width] * depth)
    layers = random_layers(data, [width] * depth)
    with torch.no_grad():
        for (w, b), weight, bias in zip(layers, model.net.weights, model.net.biases, strict=True):
            weight.copy_(torch.from_numpy(w).unsqueeze(0))
            bias.copy_(torch.from_numpy(b).unsqueeze(0))
    (region,) = member_regions(model.net, ["x1", "x2"], 2, box=50.0)
    assert all_reach_edge(region), region


def test_only_piecewise_linear_networks_on_the_plain_plane_are_taken():
    with pytest.raises(CirclesError, match="model.activation"):
        member_regions(CirclesClassifier(activation="tanh").net, ["x1", "x2"], 2)
    with pytest.raises(CirclesError, match="data.features"):
        member_regions(CirclesClassifier().net, ["x1_sq", "x2_sq"], 2)
    leaky = CirclesClassifier(activation="leaky_relu", hidden_sizes=[3])
    assert member_regions(leaky.net, ["x1", "x2"], 2)[0].pieces >= 1


def trained(hidden: list[int], members: int = 8) -> tuple[CirclesClassifier, CirclesDataModule]:
    """``members`` networks trained at once on the chapter's circles (Adam, lr 0.05, 300 full-batch
    epochs) and tested."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pl.seed_everything(42, verbose=False)
    model = CirclesClassifier(hidden_sizes=hidden, members=members)
    model.configure_optimizers = lambda: torch.optim.Adam(model.parameters(), lr=0.05)  # type: ignore[method-assign]
    data = CirclesDataModule(test_samples=2000)
    trainer = quiet_trainer(max_epochs=300, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    return model, data


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [[4, 4], [8, 8]])
def test_trained_networks_wider_than_2_that_solve_circles_enclose_the_inner_circle(hidden):
    model, data = trained(hidden)
    assert model.member_test_acc is not None
    solved = (model.member_test_acc >= data.bayes_accuracy() - 0.01).tolist()
    assert sum(solved) >= 2, model.member_test_acc
    x, y = data.points("train")
    inner = x[y == 1].double().numpy()
    regions = member_regions(model.net, ["x1", "x2"], 2)
    assert [r.bounded_around(inner) for r, s in zip(regions, solved, strict=True) if s] == [
        True
    ] * sum(solved)


@pytest.mark.slow
def test_trained_networks_2_wide_never_enclose_it_and_never_solve_circles():
    model, data = trained([2, 2])
    assert model.member_test_acc is not None
    assert model.member_test_acc.max() < 0.9
    assert all(all_reach_edge(r) for r in member_regions(model.net, ["x1", "x2"], 2))
