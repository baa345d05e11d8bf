"""What each hidden layer does to the plane: the maps are the layers' own outputs (a 2-unit layer
as it is, a wider one in its principal plane), one panel per layer, written per frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circles.model.classifier import CirclesClassifier
from circles.pictures.layers import PANEL, layer_maps, layers_image
from circles.pictures.panels import class_colours

from helpers import read_events

EXTENT = (-1.2, 1.2, -1.2, 1.2)


def points(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2))
    return x, (np.hypot(*x.T) < 0.6).astype(int)


@pytest.mark.parametrize("hidden", [[2, 2], [1, 5], [10, 3, 2]])
def test_each_layers_map_is_its_own_output_in_the_plane_the_docstring_names(hidden):
    torch.manual_seed(3)
    model = CirclesClassifier(hidden_sizes=hidden)
    x, _ = points()
    maps = layer_maps(model, x, EXTENT)
    assert len(maps) == len(hidden) + 1
    np.testing.assert_array_equal(maps[0].points, x)
    with torch.no_grad():
        outputs = [o.double().numpy() for o in model.layer_outputs(torch.from_numpy(x).float())]
    for layer_map, out in zip(maps[1:], outputs[1:-1], strict=True):
        units = out.shape[1]
        if units == 2:
            np.testing.assert_allclose(layer_map.points, out, rtol=0, atol=1e-12)
        elif units == 1:
            np.testing.assert_allclose(layer_map.points[:, 0], out[:, 0], rtol=0, atol=1e-12)
            assert not layer_map.points[:, 1].any()
        else:
            # the plane of largest spread: its variance is the top two eigenvalues' sum
            centred = out - out.mean(0)
            top = np.sort(np.linalg.eigvalsh(centred.T @ centred))[-2:].sum()
            assert (layer_map.points**2).sum() == pytest.approx(top, rel=1e-9)
            assert "principal directions" in layer_map.axes
        assert layer_map.lines.shape[0] == 2 * 11 and layer_map.lines.shape[2] == 2


@pytest.mark.parametrize("width", [1, 2, 5])
def test_a_layer_that_maps_every_point_to_one_spot_says_so(width):
    """A dead layer (no unit fires on any point) draws a single dot: its panel says why."""
    x, _ = points()
    axes = {}
    for bias in (-100.0, 100.0):  # every unit off everywhere; every unit on everywhere
        torch.manual_seed(0)
        model = CirclesClassifier(hidden_sizes=[width, width])
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim == 2:  # the stacked biases: (members, units)
                    parameter.fill_(bias)
        axes[bias] = [m.axes for m in layer_maps(model, x, EXTENT)[1:]]
    assert axes[-100.0] == ["every point at one spot: no unit tells them apart"] * 2
    assert not any("one spot" in a for a in axes[100.0])


def test_the_picture_has_a_panel_per_layer_with_both_classes_in_each():
    torch.manual_seed(0)
    model = CirclesClassifier(hidden_sizes=[8, 8])
    x, y = points()
    image = layers_image(layer_maps(model, x, EXTENT), y, 2, "epoch 0")
    assert image.dtype == np.uint8 and image.shape[1] == 3 * (PANEL + 8)
    red, blue = (tuple(c) for c in class_colours(2))
    for column in range(3):
        panel = image[-PANEL:, column * (PANEL + 8) : (column + 1) * (PANEL + 8)]
        colours = {tuple(c) for c in panel.reshape(-1, 3)}
        assert red in colours and blue in colours, column


def test_show_layers_writes_the_layers_picture_at_every_frame(run_cli):
    run = run_cli(
        "fit",
        "--trainer.max_epochs=5",
        "--data.n_samples=200",
        "--data.test_samples=20",
        "--model.hidden_sizes=[3, 2]",
        "--boundary.every_n_epochs=2",
        "--boundary.show_layers=true",
        "--boundary.resolution=20",
    )
    ea = read_events(run)
    images = ea.Images("layers/plane")
    assert [i.step for i in images] == [0, 2, 4]
    assert images[-1].width == 3 * (PANEL + 8)
