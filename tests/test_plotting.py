"""Tests for circles.plotting (grid predictions, array and matplotlib pictures) and the
DecisionBoundaryCallback."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from circles.data.module import CirclesDataModule
from circles.model.classifier import CirclesClassifier
from circles.pictures.figures import boundary_figure
from circles.pictures.frames import (
    BODY,
    HEADER,
    SIDE_WIDTH,
    boundary_image,
    text_block,
    vote_key,
)
from circles.pictures.grids import grid_axes, grid_predictions
from circles.pictures.network import (
    KEY_WIDTH,
    NEGATIVE,
    NETWORK_HEIGHT,
    POSITIVE,
    network_image,
    neuron_image,
)
from circles.pictures.panels import BoundaryPanel

from helpers import run_if

# the tests share a trained model and a fresh interpreter's imports: one test process takes them all
pytestmark = pytest.mark.xdist_group("plotting")


def predict_grid(model, xs, ys):
    """The probability of class 1 over the grid."""
    return grid_predictions(model, xs, ys)[0]


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))


def rdylbu(value: float) -> np.ndarray:
    """matplotlib's own RdYlBu colour at ``value``, as 0-255 RGB."""
    import matplotlib

    return np.array(matplotlib.colormaps["RdYlBu"](value)[:3]) * 255


def filled(value: float) -> np.ndarray:
    """The chapter's fill: RdYlBu at alpha 0.7 over white."""
    return 0.7 * rdylbu(value) + 0.3 * 255


def separable_by_a_line(points: np.ndarray, labels: np.ndarray) -> bool:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = LogisticRegression(C=1e10, max_iter=10_000).fit(points, labels)
    return classifier.score(points, labels) == 1.0


def grid_points(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xx, yy = np.meshgrid(xs, ys)
    return np.column_stack([xx.ravel(), yy.ravel()])


# ---------------------------------------------------------------------------------------------- predict_grid


def module_state(model: nn.Module) -> dict:
    return {
        "device": {name: p.device for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {
            name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()
        },
        "grad_id": {
            name: None if p.grad is None else id(p.grad) for name, p in model.named_parameters()
        },
        "weights": {name: p.detach().clone() for name, p in model.named_parameters()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    for key in ("device", "training", "requires_grad", "grad_id"):
        assert before[key] == after[key], key
    for key in ("grad", "weights"):
        for name, value in before[key].items():
            if value is None:
                assert after[key][name] is None, f"{key} of {name}"
            else:
                assert torch.equal(value, after[key][name]), f"{key} of {name}"


def prepared_model(train: bool) -> nn.Module:
    torch.manual_seed(0)
    model = CirclesClassifier(hidden_sizes=[8, 8])
    model.train(train)
    model.net.activation.train(not train)  # mixed modes: a submodule that differs from its parent
    model.net.weights[0].requires_grad_(False)
    model.net.weights[-1].grad = torch.randn_like(model.net.weights[-1])  # an existing gradient
    return model


@pytest.mark.parametrize("train", [True, False])
def test_predict_grid_leaves_a_module_exactly_as_found(train):
    model = prepared_model(train)
    before = module_state(model)
    assert before["training"][""] is train and before["training"]["net.activation"] is (not train)
    probs = predict_grid(model, np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    assert probs.shape == (4, 5)
    assert_same_state(before, module_state(model))


def test_predict_grid_restores_modes_when_the_forward_pass_fails():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        predict_grid(model, np.zeros(2), np.zeros(2))
    assert model.training and model.layer.training


def test_predict_grid_evaluates_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.Dropout(0.9), nn.Linear(32, 1)).train()
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-2, 2, 7)
    first, second = predict_grid(model, xs, ys), predict_grid(model, xs, ys)
    assert np.array_equal(first, second)  # no dropout noise
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = (
            torch.sigmoid(model(torch.from_numpy(grid_points(xs, ys)).float()))
            .numpy()
            .reshape(7, 6)
        )
    np.testing.assert_allclose(first, expected, atol=1e-6)


def test_predict_grid_shape_and_orientation():
    xs, ys = np.array([-2.0, 0.0, 1.0]), np.array([-3.0, -1.0, 0.5, 2.0])
    by_y = predict_grid(lambda p: p[:, 1], xs, ys)
    assert by_y.shape == (len(ys), len(xs))
    np.testing.assert_allclose(by_y, np.repeat(sigmoid(ys)[:, None], len(xs), axis=1), atol=1e-6)
    by_x = predict_grid(lambda p: p[:, 0], xs, ys)
    np.testing.assert_allclose(by_x, np.repeat(sigmoid(xs)[None, :], len(ys), axis=0), atol=1e-6)
    # An (N, 1) output is accepted as well.
    np.testing.assert_allclose(predict_grid(lambda p: p[:, 1:2], xs, ys), by_y, atol=1e-6)


def test_predict_grid_is_one_batched_forward_pass_over_every_grid_point():
    calls = []

    def model(p):
        calls.append(p.clone())
        return p.sum(dim=1)

    xs, ys = np.linspace(0, 1, 3), np.linspace(5, 6, 2)
    predict_grid(model, xs, ys)
    assert len(calls) == 1
    assert calls[0].dtype == torch.float32 and calls[0].shape == (6, 2)
    assert {tuple(r) for r in calls[0].tolist()} == {(float(x), float(y)) for x in xs for y in ys}


def test_predict_grid_on_a_module_without_parameters():
    class Column(nn.Module):
        def forward(self, p):
            return p[:, 1]

    model = Column().train()
    probs = predict_grid(model, np.array([0.0, 1.0]), np.array([-1.0, 1.0]))
    np.testing.assert_allclose(probs[:, 0], sigmoid([-1.0, 1.0]), atol=1e-6)
    assert model.training


@run_if(cuda=True)
def test_predict_grid_keeps_a_cuda_model_on_its_device():
    torch.manual_seed(0)
    model = CirclesClassifier().cuda().train()
    xs, ys = np.linspace(-1, 1, 9), np.linspace(-1, 1, 8)
    probs = predict_grid(model, xs, ys)
    assert all(p.device.type == "cuda" for p in model.parameters()) and model.training
    cpu = predict_grid(model.cpu(), xs, ys)
    np.testing.assert_allclose(probs, cpu, atol=1e-5)


def test_grid_axes_span_the_points_plus_margin():
    points = torch.tensor([[-1.0, 2.0], [3.0, -4.0], [0.0, 0.0]])
    xs, ys = grid_axes(points)
    assert len(xs) == len(ys) == 101
    assert xs[0] == pytest.approx(-1.1) and xs[-1] == pytest.approx(3.1)
    assert ys[0] == pytest.approx(-4.1) and ys[-1] == pytest.approx(2.1)
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)
    xs, ys = grid_axes(points.numpy(), resolution=7, margin=0.5)
    assert len(xs) == 7 and xs[0] == pytest.approx(-1.5) and ys[-1] == pytest.approx(2.5)


# ---------------------------------------------------------------------------------------------- what models draw


@pytest.fixture(scope="module")
def trained_relu():
    """A ReLU classifier trained to fit the chapter's training data (Adam, full batch)."""
    dm = CirclesDataModule()
    dm.setup("fit")
    torch.manual_seed(0)
    model = CirclesClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        loss = nn.functional.binary_cross_entropy_with_logits(model(dm.train_x), dm.train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = ((model(dm.train_x) > 0).float() == dm.train_y).float().mean().item()
    return model, dm, accuracy


def test_trained_relu_model_puts_the_centre_inside_and_the_corners_outside(trained_relu):
    model, dm, accuracy = trained_relu
    assert accuracy > 0.95
    centre = predict_grid(model, np.array([0.0]), np.array([0.0]))
    assert centre.shape == (1, 1) and centre[0, 0] > 0.5
    xs, ys = grid_axes(dm.train_x, resolution=41)
    probs = predict_grid(model, xs, ys)
    for corner in (probs[0, 0], probs[0, -1], probs[-1, 0], probs[-1, -1]):
        assert corner < 0.5
    # The grid holds the model's own probabilities at the grid points.
    with torch.no_grad():
        expected = (
            torch.sigmoid(model(torch.from_numpy(grid_points(xs, ys)).float()))
            .numpy()
            .reshape(41, 41)
        )
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    # A circle is not a half-plane.
    assert not separable_by_a_line(grid_points(xs, ys), probs.ravel() > 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_model_draws_a_half_plane(seed):
    torch.manual_seed(seed)
    model = CirclesClassifier(activation="none")
    with torch.no_grad():  # move the boundary into the middle of the grid
        model.net.biases[-1] -= model(torch.tensor([[0.013, 0.007]]))
    xs, ys = np.linspace(-1.2, 1.2, 41), np.linspace(-1.2, 1.2, 41)
    labels = predict_grid(model, xs, ys).ravel() > 0.5
    assert 0.05 < labels.mean() < 0.95
    assert separable_by_a_line(grid_points(xs, ys), labels)


# ---------------------------------------------------------------------------------------------- boundary_image


def half_panel(title="P", nx=21, ny=11, points=None, labels=None) -> BoundaryPanel:
    """Class 1 (blue) above y = 0, class 0 (red) below."""
    xs, ys = np.linspace(-1, 1, nx), np.linspace(-1, 1, ny)
    probs = np.repeat((ys > 0).astype(np.float64)[:, None], nx, axis=1)
    points = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64)
    labels = np.zeros(len(points)) if labels is None else np.asarray(labels, dtype=np.float64)
    return BoundaryPanel.of(title, xs, ys, probs, points, labels)


@pytest.mark.parametrize("scale, gap", [(1, 0), (2, 4), (3, 5)])
def test_boundary_image_size(scale, gap):
    panels = [half_panel("Train"), half_panel("Val")]
    image = boundary_image(panels, scale=scale, gap=gap, labels=False)
    assert image.dtype == np.uint8
    assert image.shape == (11 * scale, 2 * 21 * scale + gap, 3)
    with_probability = boundary_image(
        panels, show_probability=True, scale=scale, gap=gap, labels=False
    )
    assert with_probability.shape == (2 * 11 * scale + gap, 2 * 21 * scale + gap, 3)
    one = boundary_image(panels[:1], scale=scale, gap=gap, labels=False)
    assert one.shape == (11 * scale, 21 * scale, 3)


def test_boundary_image_colours_classes_red_and_blue_with_north_up():
    scale, gap = 3, 5
    image = boundary_image([half_panel(), half_panel()], scale=scale, gap=gap, labels=False).astype(
        float
    )
    top, bottom = image[1], image[-2]  # y = +1 is the top row, y = -1 the bottom row
    for row in (top, bottom):
        assert np.all(row[21 * scale : 21 * scale + gap] == 255)  # white gap between the panels
    for panel in (slice(0, 21 * scale), slice(21 * scale + gap, None)):
        blue, red = top[panel], bottom[panel]
        assert np.all(blue[:, 2] > blue[:, 0]) and np.all(red[:, 0] > red[:, 2])
        np.testing.assert_allclose(blue, np.broadcast_to(filled(1.0), blue.shape), atol=2)
        np.testing.assert_allclose(red, np.broadcast_to(filled(0.0), red.shape), atol=2)


def test_boundary_image_draws_the_points_in_their_class_colour():
    scale = 4
    # A class-1 point deep in the red half, at x = 0.5, y = -0.5.
    plain = boundary_image([half_panel()], scale=scale, point_radius=2, labels=False).astype(float)
    dotted = boundary_image(
        [half_panel(points=[[0.5, -0.5]], labels=[1])], scale=scale, point_radius=2, labels=False
    ).astype(float)
    changed = np.argwhere(np.any(plain != dotted, axis=2))
    assert len(changed) > 1
    height, width = plain.shape[:2]
    row, col = changed.mean(axis=0)
    assert row == pytest.approx(0.75 * (height - 1), abs=3)  # y = -0.5 is three quarters down
    assert col == pytest.approx(0.75 * (width - 1), abs=3)  # x = 0.5 is three quarters across
    for r, c in changed:
        np.testing.assert_allclose(dotted[r, c], rdylbu(1.0), atol=2)
    # A class-0 point there is drawn too, in full red (darker than the fill).
    red_dot = boundary_image(
        [half_panel(points=[[0.5, -0.5]], labels=[0])], scale=scale, labels=False
    ).astype(float)
    r, c = changed[len(changed) // 2]
    np.testing.assert_allclose(red_dot[r, c], rdylbu(0.0), atol=2)


def test_boundary_image_probability_row_marks_the_half_way_line():
    scale, gap = 2, 4
    image = boundary_image(
        [half_panel()], show_probability=True, scale=scale, gap=gap, labels=False
    )
    height = 11 * scale
    classes, probability = image[:height], image[height + gap :]
    assert np.all(image[height : height + gap] == 255)
    black = np.all(probability == 0, axis=2)
    assert black.any() and not np.all(classes == 0, axis=2).any()
    rows = np.unique(np.argwhere(black)[:, 0])
    # The 0.5 line sits between y = 0 (class 0) and the first y > 0, i.e. mid-image.
    assert np.all(np.abs(rows - height / 2) <= scale)


def test_frames_are_labelled_with_a_header_the_legend_and_panel_titles():
    panels = [half_panel("Train"), half_panel("Val")]
    bare = boundary_image(panels, scale=10, labels=False)
    labelled = boundary_image(
        panels, scale=10, header="epoch 7   train acc 0.5", note="colour: share of 4 members"
    )
    header, body = HEADER + 6, BODY + 6  # a line of each size
    assert labelled.shape[1] == bare.shape[1] == 2 * 210 + 4
    # header, legend, note, the panels' titles
    assert labelled.shape[0] == bare.shape[0] + header + 3 * body
    # the first panel, under its title
    np.testing.assert_array_equal(labelled[-bare.shape[0] :, :210], bare[:, :210])
    strips = labelled[: labelled.shape[0] - bare.shape[0]]
    dark = np.all(strips < 120, axis=2)
    for top, size in (
        (0, header),
        (header, body),
        (header + body, body),
        (header + 2 * body, body),
    ):
        assert dark[top : top + size].sum() > 20, top  # each a line of text
    legend = strips[header : header + body].reshape(-1, 3)
    for colour in (rdylbu(0.0), rdylbu(1.0)):  # the two classes' dots, in the points' colours
        assert np.any(np.all(np.abs(legend - colour) <= 2, axis=1))


def test_text_longer_than_a_frame_goes_on_more_lines_and_nothing_is_cut_off():
    words = "test set, weights of epoch 99 (last.ckpt)   test acc 0.9997"
    one = text_block(1000, [(words, None)])
    wrapped = text_block(202, [(words, None)])
    assert one.shape[0] == BODY + 6 and wrapped.shape[0] >= 2 * (BODY + 6)
    ink = np.all(wrapped < 120, axis=2)
    # the same text, all of it
    assert ink.sum() == pytest.approx(np.all(one < 120, axis=2).sum(), rel=0.1)
    assert not ink[:, -3:].any()  # nothing runs into the right edge
    legend = text_block(202, [(f"class {k}", (0, 0, 255)) for k in range(6)])
    assert legend.shape[0] >= 2 * (BODY + 6) and not np.all(legend < 120, axis=2)[:, -3:].any()


@pytest.mark.parametrize("units", [1, 9, 10, 11, 64])
def test_every_neuron_picture_is_shown_at_three_fifths_of_its_size_or_more(units):
    """TensorBoard's image card shows a picture at most 215 pixels high (and about 408 wide): a
    layer's units over the chapter's grid of 101 points come ten to a picture, each small enough
    to be shown at 3/5 of its size or more, so its 17-pixel captions read at 10 or more; every
    unit is in one of them, numbered as in the layer."""
    from circles.pictures.network import neuron_pictures

    layer = np.random.default_rng(units).normal(size=(units, 101, 101))
    pictures = neuron_pictures(layer, 2, 7)
    assert len(pictures) == -(-units // 10)
    for image in pictures.values():
        height, width = image.shape[:2]
        assert min(1, 215 / height, 408 / width) >= 0.6, (height, width)
    if units > 10:
        assert list(pictures)[1] == f"neurons/layer_2_units_11-{min(units, 20)}"
        np.testing.assert_array_equal(
            pictures["neurons/layer_2_units_1-10"],
            neuron_image(layer[:10], header="epoch 7, hidden layer 2, units 1-10"),
        )
    else:
        assert list(pictures) == ["neurons/layer_2"]


def test_neuron_tiles_are_numbered_and_dead_units_marked():
    flat = np.zeros((1, 5, 5))
    ramp = np.tile(np.linspace(-2.0, 1.0, 5), (5, 1))[None]
    image = neuron_image(np.concatenate([ramp, flat]), scale=2)
    tiles = image[-(10 + BODY + 6) :]  # the row of tiles under the key
    assert image.shape[1] == 320  # two tiles of 10 pixels, 4 apart, under words 320 wide
    assert (tiles[:, 2 * 10 + 4 :] == 255).all()  # white right of them
    # -2, the ramp's largest magnitude: full red
    np.testing.assert_allclose(tiles[5, 0], rdylbu(0.0), atol=2)
    assert np.all(tiles[10:, :10] < 120, axis=2).any()  # "1: ±2" under the first tile
    wide = neuron_image(np.concatenate([ramp, flat]), scale=16)
    label = wide[-(BODY + 6) :, 84:164]  # under the flat unit's tile, 80 pixels wide
    assert np.array_equal(label, text_block(80, [("2: dead", None)]))
    assert not np.array_equal(label, text_block(80, [("2: ±0", None)]))


def test_a_members_boundary_is_drawn_as_a_one_pixel_line_where_it_lies():
    """A linear model's panel carries each member's decision function; the frame draws where each
    crosses zero: black pixels on the line x1 - 0.5 x2 + 0.1 = 0, one pixel thick, and none
    without it."""
    xs = ys = np.linspace(-1, 1, 21)
    grid_x, grid_y = np.meshgrid(xs, ys)
    line = grid_x - 0.5 * grid_y + 0.1
    probs = (line > 0).astype(np.float64)
    scale = 10
    plain = boundary_image(
        [BoundaryPanel.of("T", xs, ys, probs, np.zeros((0, 2)), np.zeros(0))],
        scale=scale,
        labels=False,
    )
    drawn = boundary_image(
        [
            BoundaryPanel.of(
                "T", xs, ys, probs, np.zeros((0, 2)), np.zeros(0), boundaries=line[None]
            )
        ],
        scale=scale,
        labels=False,
    )
    assert not np.all(plain == 0, axis=2).any()
    rows, cols = np.nonzero(np.all(drawn == 0, axis=2))
    size = len(xs) * scale
    # pixel centres in the plane, north up
    x, y = (
        -1 + 2 * cols / (size - 1),
        1 - 2 * rows / (size - 1),
    )
    assert len(rows) >= size  # it spans the picture
    assert np.abs(x - 0.5 * y + 0.1).max() <= 2.5 * 2 / size  # on the line, within a pixel or two
    per_row = np.bincount(rows)
    assert per_row[per_row > 0].max() <= 3  # thin: a line, not the grid's steps


def test_a_picture_of_members_carries_the_key_of_its_colours():
    key = vote_key(400, 16, "inner circle (1)")
    fill = key[2:12, 4:294].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(fill[0], filled(0.0), atol=2)  # none of them: the fill of class 0
    np.testing.assert_allclose(fill[-1], filled(1.0), atol=2)  # all: class 1's
    assert np.all(key[14:] < 120, axis=2).any()  # its counts and what they count
    panels = [half_panel("Train")]
    with_key = boundary_image(panels, scale=10, header="epoch 3", key=key)
    assert (
        with_key.shape[0]
        == boundary_image(panels, scale=10, header="epoch 3").shape[0] + key.shape[0]
    )


def test_the_network_picture_has_a_tile_per_unit_links_as_weights_and_dead_units_marked():
    ramp = np.tile(np.linspace(-1.0, 1.0, 30), (30, 1))
    outputs = [np.stack([ramp, ramp.T]), np.stack([ramp, np.zeros_like(ramp), -ramp]), ramp[None]]
    weights = [np.array([[1.0, 0.0], [0.5, -0.5], [-1.0, 0.2]]), np.array([[2.0, 0.0, -0.1]])]
    image = network_image(outputs, weights, ["x1", "x2"])
    network = image[:, : image.shape[1] - KEY_WIDTH - 12]  # the words right of it
    pixels = network.reshape(-1, 3).astype(int)
    blue, red = np.array(POSITIVE), np.array(NEGATIVE)
    assert (np.abs(pixels - blue).sum(1) < 60).sum() > 100 and (
        np.abs(pixels - red).sum(1) < 60
    ).sum() > 50
    alive = network_image(
        [outputs[0], np.stack([ramp, ramp, -ramp]), outputs[2]], weights, ["x1", "x2"]
    )
    # a dead unit is crossed out in red; links are translucent
    marked = np.argwhere(np.all(network == red, axis=2))
    assert len(marked) > 10 and not np.all(alive == red, axis=2).any()
    # on the hidden layer's tile: the middle one of three columns, its second unit
    width = network.shape[1]
    assert width / 3 < marked[:, 1].min() and marked[:, 1].max() < 2 * width / 3
    assert network.shape[0] / 3 < marked[:, 0].mean() < 2 * network.shape[0] / 3
    wide = network_image(
        [np.repeat(ramp[None], 20, axis=0), np.repeat(ramp[None], 40, axis=0), ramp[None]],
        [np.ones((40, 20)), np.ones((1, 40))],
        [f"f{i}" for i in range(20)],
    )
    # at most NETWORK_UNITS tiles a column, and as high as TensorBoard's card can show readably
    assert wide.shape[0] <= NETWORK_HEIGHT + 2 * (BODY + 10)
    assert image.shape[0] <= NETWORK_HEIGHT + 2 * (BODY + 10)


def test_boundary_panel_subsamples_points():
    points = np.stack([np.arange(100.0), -np.arange(100.0)], axis=1)
    labels = np.arange(100) % 2
    panel = BoundaryPanel.of(
        "T", np.arange(2.0), np.arange(2.0), np.zeros((2, 2)), points, labels, max_points=10
    )
    assert panel.points.shape == (10, 2)
    index = panel.points[:, 0].astype(int)
    assert len(set(index)) == 10
    assert np.array_equal(panel.points[:, 1], -panel.points[:, 0]) and np.array_equal(
        panel.labels, index % 2
    )
    tensors = BoundaryPanel.of(
        "T",
        np.arange(2.0),
        np.arange(2.0),
        np.zeros((2, 2)),
        torch.from_numpy(points),
        torch.from_numpy(labels),
    )
    assert isinstance(tensors.points, np.ndarray) and len(tensors.points) == 100


# ---------------------------------------------------------------------------------------------- boundary_figure


def titled_axes(figure):
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]


def test_boundary_figure_has_one_axes_per_panel_and_saves_a_png(tmp_path):
    import matplotlib.image
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    open_figures = plt.get_fignums()
    points = [[0.5, 0.5], [-0.5, -0.5]]
    panels = [half_panel("Train", points=points, labels=[1, 0]), half_panel("Val")]
    figure = boundary_figure(panels, panel_size=2.0)
    assert isinstance(figure, Figure)
    # not registered with pyplot: nothing leaks in long runs
    assert plt.get_fignums() == open_figures
    axes = titled_axes(figure)
    assert [ax.get_title() for ax in axes] == ["Train", "Val"]
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 2
    scattered = [c.get_offsets() for c in axes[0].collections if len(c.get_offsets()) == 2]
    assert scattered and np.allclose(np.asarray(scattered[0]), points)
    assert axes[0].get_xlim() == pytest.approx((-1, 1)) and axes[0].get_ylim() == pytest.approx(
        (-1, 1)
    )

    path = tmp_path / "boundary.png"
    figure.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[:2] == (100, 200)


def test_boundary_figure_with_probability_has_a_second_row(tmp_path):
    import matplotlib.image

    panels = [half_panel("Train"), half_panel("Val")]
    figure = boundary_figure(panels, show_probability=True, panel_size=2.0, title="Epoch 3")
    axes = titled_axes(figure)
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 4
    assert "Train" in titles and "Val" in titles
    class_axes = [ax for ax in axes if ax.get_title() in ("Train", "Val")]
    probability_axes = [ax for ax in axes if ax not in class_axes]
    assert len(class_axes) == len(probability_axes) == 2
    lowest_class_row = min(ax.get_position().y0 for ax in class_axes)
    assert all(ax.get_position().y1 <= lowest_class_row + 1e-6 for ax in probability_axes)
    assert figure.get_suptitle() == "Epoch 3"
    path = tmp_path / "boundary.png"
    figure.savefig(path, dpi=50)
    assert matplotlib.image.imread(path).shape[:2] == (200, 200)


def test_boundary_figure_names_the_classes_in_their_colours():
    from circles.pictures.panels import class_colours

    figure = boundary_figure(
        [half_panel("Train")], panel_size=2.0, classes=("outer circle (0)", "inner circle (1)")
    )
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "outer circle (0)",
        "inner circle (1)",
    ]
    colours = [
        tuple(np.round(np.asarray(patch.get_facecolor()[:3]) * 255))
        for patch in legend.get_patches()
    ]
    assert colours == [tuple(float(c) for c in colour) for colour in class_colours(2)]
    assert not boundary_figure([half_panel("Train")], panel_size=2.0).legends


@pytest.mark.parametrize("linear", [False, True])
def test_the_shared_key_names_black_lines_only_where_they_are_drawn(linear):
    """The sweep's picture: one key for every run's seeds; its black lines are the seeds'
    boundaries of a linear network, so a picture of ReLU runs does not speak of them."""
    import dataclasses

    panel = half_panel("2x2")
    votes = np.where(panel.votes > 0, 0.5, 0.0)  # half the seeds vote class 1 above y = 0
    boundaries = np.stack([panel.probs - 0.5] * 2) if linear else None
    panel = dataclasses.replace(panel, votes=votes, boundaries=boundaries)
    figure = boundary_figure([panel], panel_size=2.0, one_key=True)
    (label,) = [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel()]
    assert label.startswith("colour: the share of a run's seeds voting class 1")
    assert ("black lines" in label) == linear


# ---------------------------------------------------------------------------------------------- imports


_TRACE = """
import builtins, json, sys
importers = []
original = builtins.__import__
def tracing(name, globals=None, *args, **kwargs):
    importer = (globals or {}).get('__name__', '?')
    if name.split('.')[0] == 'matplotlib' and importer.split('.')[0] not in ('matplotlib', 'mpl_toolkits'):
        importers.append(importer)
    return original(name, globals, *args, **kwargs)
builtins.__import__ = tracing
import circles.callbacks, circles.pictures.grids, circles.pictures.frames, circles.model, circles.data
print(json.dumps({"loaded": 'matplotlib' in sys.modules, "importers": sorted(set(importers))}))
"""


@pytest.fixture(scope="module")
def callbacks_import():
    """What ``import circles.callbacks`` (and so plotting, model and data) does about matplotlib,
    in a fresh interpreter: whether matplotlib ends up loaded, and which modules ran an ``import
    matplotlib...``."""
    import json

    out = subprocess.run([sys.executable, "-c", _TRACE], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_circles_plotting_does_not_import_matplotlib():
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import circles.pictures.grids, circles.pictures.frames, sys; assert 'matplotlib' not in sys.modules",
        ],
        check=True,
    )


@pytest.mark.slow
def test_circles_code_never_imports_matplotlib_at_import_time(callbacks_import):
    """Every import statement that names matplotlib is traced back to the module running it: none
    is circles'."""
    culprits = [m for m in callbacks_import["importers"] if m.split(".")[0] == "circles"]
    assert not culprits


# ---------------------------------------------------------------------------------------------- the callback


@pytest.mark.slow
def test_decision_boundary_callback_logs_frames_and_saves_pngs(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from circles.callbacks.boundary import DecisionBoundaryCallback

    modes = []

    class ModeProbe(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            modes.append(pl_module.training)

    torch.manual_seed(0)
    boundary = DecisionBoundaryCallback(every_n_epochs=2, resolution=21)
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(tmp_path, name="tb"),
        callbacks=[boundary, ModeProbe()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    dm = CirclesDataModule(n_samples=60, test_samples=50)
    model = CirclesClassifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
        trainer.test(model, datamodule=dm)
    assert modes == [True] * 4  # the frames leave the model training

    run_dir = trainer.log_dir
    for name in ("decision_boundary.png", "decision_boundary_test.png"):
        with open(f"{run_dir}/{name}", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    events = EventAccumulator(run_dir, size_guidance={"images": 0})
    events.Reload()
    frames = events.Images("decision_boundary/train_val")
    # every 2 epochs from 0, and the last epoch
    assert [frame.step for frame in frames] == [
        0,
        2,
        3,
    ]
    # a 21-point grid drawn 10x: two panels (and their 4-pixel gap) make a frame of 400 or more
    side = 21 * 10
    # the text above
    assert frames[0].width == 2 * side + 4 and frames[0].height > side + HEADER + 2 * BODY
    test_frames = events.Images("test/decision_boundary")
    # one panel: drawn 15x (300 pixels or more), its words in a column right of it
    assert len(test_frames) == 1 and test_frames[0].width == 21 * 15 + 4 + SIDE_WIDTH


@pytest.mark.parametrize("members", [1, 3])
def test_a_linear_frame_says_its_boundary_in_two_lines_at_most(members):
    """The card TensorBoard shows a frame in is 215 pixels high: the linear model's note (its
    equation with one member) may add two lines to a ReLU model's frame, no more."""
    from circles.pictures.notes import picture_notes

    data = CirclesDataModule(n_samples=100)
    data.setup("fit")
    linear = CirclesClassifier(activation="none", members=members)
    relu = CirclesClassifier(members=members)
    notes = picture_notes(linear, data)
    if members == 1:
        collapsed = linear.collapsed()
        w, b = collapsed[0][0][0].tolist(), float(collapsed[1][0][0])
        (note,) = notes
        equation = re.search(r"(\S+)\*x1 ([+-]) (\S+)\*x2 ([+-]) (\S+) = 0$", note)
        assert equation is not None, note
        w1, sign2, w2, sign0, b0 = equation.groups()
        np.testing.assert_allclose(
            [float(w1), float(sign2 + w2), float(sign0 + b0)], [*w, b], rtol=5e-3
        )
    else:
        assert "each member's boundary is a straight line (black)" in notes[-1]
    panels = [half_panel("Train"), half_panel("Val")]
    heights = [
        boundary_image(panels, header="epoch 3", note="; ".join(picture_notes(m, data))).shape[0]
        for m in (relu, linear)
    ]
    assert heights[1] - heights[0] <= 2 * (BODY + 6)


# The box TensorBoard's image card draws a picture in (measured in Chromium, 1440 pixels wide):
# a picture is scaled to fit it, so its 17-pixel text shows at 17 times this share.
CARD = (390, 215)


def shown_share(image: np.ndarray) -> float:
    return min(CARD[0] / image.shape[1], CARD[1] / image.shape[0], 1.0)


def test_every_picture_tensorboard_shows_fits_its_card_at_three_fifths_or_more():
    """At three fifths of its size a picture's text is 10 pixels or more: readable on the card,
    without opening it (the network picture was shown at 0.28, the test frame at 0.39)."""
    from circles.pictures.grids import grid_layers
    from circles.pictures.layers import layer_maps, layers_image

    torch.manual_seed(0)
    model = CirclesClassifier()  # the chapter's 10x10
    xs, ys = grid_axes(np.array([[-1.2, -1.2], [1.2, 1.2]]), 101)
    panels = [half_panel("Train", nx=101, ny=101), half_panel("Val", nx=101, ny=101)]
    header = "test set, weights of epoch 999 (the end of the fit)   test acc 0.8788"
    layers = grid_layers(model, xs, ys)
    weights = [w.detach().numpy() for w in model.layer_weights()]
    points = np.random.default_rng(0).uniform(-1, 1, (200, 2))
    pictures = {
        "frame": boundary_image(panels, header="epoch 999   train acc 0.8637   val acc 0.8700"),
        "test frame": boundary_image(panels[:1], header=header, note="no activation, " * 6),
        "network": network_image(layers, weights, ["x1", "x2"], header="epoch 999"),
        "neurons": neuron_image(layers[1], header="epoch 999, hidden layer 1"),
        "layers": layers_image(
            layer_maps(model, points, (-1.2, 1.2, -1.2, 1.2)),
            np.arange(200) % 2,
            2,
            "epoch 999: what each hidden layer does to the plane and the training points",
        ),
    }
    small = {name: round(shown_share(p), 2) for name, p in pictures.items() if shown_share(p) < 0.6}
    assert not small, f"shown at under three fifths of their size on TensorBoard's card: {small}"
