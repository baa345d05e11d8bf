"""Inside the training: histograms of the weights and gradients, dead ReLU units, the
learning-rate finder's report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circles.callbacks.lr_finder import FINDER_BETA, finder_curve, steepest_descent

from helpers import read_events, scalar_history

TINY = [
    "--trainer.max_epochs=4",
    "--data.n_samples=100",
    "--data.test_samples=50",
    "--boundary.every_n_epochs=100",
]


def lightning_smoothed(losses: list[float]) -> list[float]:
    """What Lightning's finder records for these losses, step after step (see
    tests/test_upstream.py)."""
    average, recorded = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = FINDER_BETA * average + (1 - FINDER_BETA) * loss
        recorded.append(average / (1 - FINDER_BETA ** (step + 1)))
    return recorded


def test_the_finders_curve_is_the_running_average_of_the_loss_from_its_first_step():
    flat = finder_curve(
        {"lr": list(np.geomspace(1e-4, 10, 50)), "loss": lightning_smoothed([0.693] * 50)}
    )[1]
    # a flat loss stays flat (Lightning's rises from 0.35)
    np.testing.assert_allclose(flat, 0.693, rtol=1e-12)
    assert lightning_smoothed([0.693] * 50)[0] == pytest.approx(0.693 / (1 + FINDER_BETA))


def test_the_steepest_fall_is_found_on_the_log_scale_of_the_rates():
    lrs = np.geomspace(1e-4, 10, 100)
    losses = 0.7 - 0.2 / (1 + np.exp(-3 * (np.log10(lrs) + 1)))  # falls fastest at lr 0.1
    assert steepest_descent(lrs, losses) == pytest.approx(0.1, rel=0.15)
    assert steepest_descent(lrs, np.full(100, 0.7) + lrs) is None  # it never falls
    assert steepest_descent(lrs[:5], losses[:5]) is None  # too few steps past the first ten


def test_histograms_of_weights_and_gradients_and_the_dead_units_of_each_layer(run_cli):
    run = run_cli(
        "fit",
        *TINY,
        "--weights.histograms_every_n_epochs=2",
        "--weights.dead_units_every_n_epochs=1",
    )
    events = read_events(run)
    assert set(events.Tags()["histograms"]) == {
        f"{kind}/layer_{i}" for kind in ("weights", "gradients") for i in (1, 2, 3)
    }
    assert [e.step for e in events.Histograms("weights/layer_1")] == [0, 2]
    first = events.Histograms("weights/layer_1")[0].histogram_value
    # the 10x2 first layer's weights, both signs
    assert first.num == 20 and first.min < 0 < first.max
    dead = scalar_history(run)
    assert [step for step, _ in dead["train/dead_units_1"]] == [0, 1, 2, 3]
    assert all(0 <= value <= 10 for _, value in dead["train/dead_units_2"])
    tanh = run_cli("fit", *TINY, "--model.activation=tanh", "--weights.dead_units_every_n_epochs=1")
    assert "train/dead_units_1" not in scalar_history(tanh)  # only a ReLU dies


def test_a_unit_that_never_fires_is_counted_dead():
    from circles.model.classifier import CirclesClassifier

    torch.manual_seed(0)
    model = CirclesClassifier(hidden_sizes=[4, 3], members=2)
    with torch.no_grad():
        model.net.biases[0][0] = 100.0  # member 0: every first-layer unit fires on every point
        model.net.biases[0][1] = -100.0  # member 1: none fires on any
    assert model.dead_units(torch.rand(50, 2) * 2 - 1)[0] == 2.0  # the members' mean: (0 + 4) / 2
    assert CirclesClassifier(activation="tanh").dead_units(torch.rand(5, 2)) == []


@pytest.mark.parametrize("epochs", [3, 120])
def test_the_learning_rate_finder_reports_its_suggestion_and_the_configured_rate(
    run_cli, capsys, epochs
):
    """Its whole span, whatever the fit's epochs (a fit of 30 once stopped it at lr 0.03), and
    then the fit as configured."""
    from circles.callbacks.lr_finder import LearningRateReport

    run = run_cli(
        "fit",
        *TINY,
        f"--trainer.max_epochs={epochs}",
        "--trainer.callbacks+=circles.callbacks.LearningRateReport",
    )
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("Learning-rate finder (")]
    assert line.startswith("Learning-rate finder (100 steps from 0.0001 to 10)")
    assert "  this run trains with lr 0.1" in out and (run / "lr_find.png").is_file()
    assert "-lrfind-" in run.name  # told apart from the plain run
    (picture,) = read_events(run).Images("lr_find")  # in TensorBoard too
    assert picture.width > 300 and picture.height > 200
    suggested = float(line.rsplit(" ", 1)[1])
    caution = [line for line in out.splitlines() if "was tried for one step only" in line]
    assert len(caution) == (1 if suggested >= 1.0 else 0), out
    # the fit itself starts from epoch 0, as without it
    epochs_trained = [epoch for epoch, _ in scalar_history(run)["train/loss"]]
    assert epochs_trained == list(range(epochs))
    assert LearningRateReport().span == (1e-4, 10.0)
