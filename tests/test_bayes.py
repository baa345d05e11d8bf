"""Tests for circles.bayes: exact Bayes-optimal accuracy on make_circles."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from circles.bayes import bayes_accuracy, bayes_threshold


# Monte Carlo estimates (2M points) for factor=0.8.
@pytest.mark.parametrize(
    "noise, expected", [(0.03, 0.9996), (0.05, 0.9772), (0.1, 0.8406), (0.2, 0.6893)]
)
def test_reference_values(noise, expected):
    assert bayes_accuracy(noise) == pytest.approx(expected, abs=5e-4)
    assert bayes_accuracy(noise, 0.8) == bayes_accuracy(noise)


@pytest.mark.parametrize(
    "noise, factor", [(0.03, 0.8), (0.1, 0.8), (0.2, 0.5), (0.05, 0.3), (0.3, 0.6)]
)
def test_matches_monte_carlo_on_make_circles(noise, factor):
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=400_000, noise=noise, factor=factor, random_state=0)
    pred = (np.hypot(X[:, 0], X[:, 1]) < bayes_threshold(noise, factor)).astype(y.dtype)
    assert np.mean(pred == y) == pytest.approx(bayes_accuracy(noise, factor), abs=2e-3)


def test_threshold_is_where_the_rice_densities_cross():
    from scipy.stats import rice

    for noise, factor in [(0.05, 0.8), (0.2, 0.5), (1.0, 0.3)]:
        t = bayes_threshold(noise, factor)
        assert factor < t
        inner = rice.logpdf(t, factor / noise, scale=noise)
        outer = rice.logpdf(t, 1.0 / noise, scale=noise)
        assert inner == pytest.approx(outer, abs=1e-9)

        # and the threshold is optimal: moving it either way loses accuracy
        def acc(s, noise=noise, factor=factor):
            return 0.5 * rice.cdf(s, factor / noise, scale=noise) + 0.5 * rice.sf(
                s, 1 / noise, scale=noise
            )

        assert acc(t) == pytest.approx(bayes_accuracy(noise, factor), abs=1e-15)
        assert acc(t) > max(acc(t - 1e-3), acc(t + 1e-3))


def test_zero_noise_is_perfect():
    assert bayes_accuracy(0.0) == 1.0
    assert bayes_accuracy(0, factor=0.3) == 1.0
    assert bayes_threshold(0.0, 0.8) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"noise": -1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"noise": float("inf")}, "noise"),
        ({"noise": 0.1, "factor": 0.0}, "factor"),
        ({"noise": 0.1, "factor": 1.0}, "factor"),
        ({"noise": 0.1, "factor": 1.5}, "factor"),
        ({"noise": 0.1, "factor": -0.2}, "factor"),
    ],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bayes_accuracy(**kwargs)
    with pytest.raises(ValueError, match=name):
        bayes_threshold(kwargs["noise"], kwargs.get("factor", 0.8))


@pytest.mark.parametrize("factor", [0.3, 0.5, 0.8, 0.95])
def test_accuracy_decreases_with_noise(factor):
    noises = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 60)])
    acc = np.array([bayes_accuracy(n, factor) for n in noises])
    assert np.all(np.diff(acc) <= 0)
    below_one = acc < 1.0
    assert np.all(np.diff(acc[below_one]) < 0)  # strictly, once it is not exactly 1.0
    assert acc[0] == 1.0 and 0.5 < acc[-1] < 0.51


@pytest.mark.parametrize("noise", [1e-300, 1e-10, 1e-4, 1.0, 5.0, 1e3, 1e4, 1e8, 1e300])
@pytest.mark.parametrize("factor", [1e-12, 0.3, 0.8, 1 - 1e-6])
def test_extreme_noise_is_finite(noise, factor):
    acc = bayes_accuracy(noise, factor)
    t = bayes_threshold(noise, factor)
    assert 0.5 <= acc <= 1.0
    assert math.isfinite(t) and t > factor * (1 - 1e-12)
    if noise >= 1e3 and factor <= 0.8:  # densities cross near sqrt(2) * noise
        assert t / noise == pytest.approx(math.sqrt(2), rel=1e-6)


def test_huge_b_fallback_matches_scipy_rice():
    # below noise 1e-5 scipy's rice.cdf is replaced by quadrature: check continuity at the switch
    f = 1 - 1e-5
    lo, hi = bayes_accuracy(1e-5, f), bayes_accuracy(1e-5 * (1 + 1e-12), f)
    assert lo == pytest.approx(hi, abs=1e-10)
    assert lo == pytest.approx(0.6914624612688111, abs=1e-12)  # mpmath, 40 digits


@pytest.mark.parametrize("classes, sigma", [(4, 1.5), (3, 0.4), (5, 2.5)])
def test_nearest_centre_accuracy_matches_monte_carlo_on_blobs(classes, sigma):
    """Computed (a one-dimensional integral per class), not sampled; checked against 1,000,000
    sampled points."""
    import numpy as np

    from circles.bayes import nearest_centre_accuracy
    from circles.data.generated import blob_centres

    centres = blob_centres(classes, 42)
    exact = nearest_centre_accuracy(centres, sigma)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, size=1_000_000)
    points = centres[labels] + rng.normal(0, sigma, size=(len(labels), 2))
    nearest = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    sampled = (nearest == labels).mean()
    assert exact == pytest.approx(
        sampled, abs=4 * (sampled * (1 - sampled) / len(labels)) ** 0.5 + 1e-4
    )


def test_nearest_centre_accuracy_of_two_centres_is_the_normal_cdf():
    import math

    from circles.bayes import nearest_centre_accuracy

    for sigma in (0.1, 0.5, 2.0):  # the line halfway between centres 2 apart: Phi(1 / sigma)
        assert nearest_centre_accuracy([[-1, 0], [1, 0]], sigma) == pytest.approx(
            0.5 * (1 + math.erf(1 / sigma / math.sqrt(2))), abs=1e-9
        )
    assert nearest_centre_accuracy([[0, 0], [3, 4]], 0.0) == 1.0


def test_the_accuracy_interval_is_wilsons():
    from circles.bayes import accuracy_interval

    # 10 of 10: not "exactly 1"
    assert accuracy_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert accuracy_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert accuracy_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


@given(st.integers(min_value=1, max_value=100_000), st.data())
def test_the_accuracy_interval_holds_the_measurement_and_never_shrinks_to_a_point(n, data):
    from circles.bayes import accuracy_interval

    right = data.draw(st.integers(min_value=0, max_value=n))
    low, high = accuracy_interval(right / n, n)
    assert 0 <= low <= right / n <= high <= 1
    assert high - low > 0
    # 99%: wider, around the same measurement
    wider_low, wider_high = accuracy_interval(right / n, n, z=2.58)
    assert wider_low <= low and high <= wider_high


@given(
    centres=st.lists(
        st.tuples(st.integers(-6, 6), st.integers(-6, 6)), min_size=2, max_size=12, unique=True
    ),
    sigma=st.sampled_from([0.3, 1.0, 3.0]),
)
def test_a_cell_bounded_by_its_delaunay_neighbours_has_the_mass_of_one_bounded_by_all(
    centres, sigma
):
    """1000 blob classes once took minutes (every centre against every other); only the
    neighbours bound a cell: the same mass to 1e-9, on lattices (cocircular, collinear) too."""
    from circles.bayes import cell_mass, nearest_centre_accuracy

    c = np.asarray(centres, dtype=float)
    everyone = sum(
        cell_mass(c, k, np.delete(np.arange(len(c)), k), sigma) for k in range(len(c))
    ) / len(c)
    assert nearest_centre_accuracy(c, sigma) == pytest.approx(everyone, abs=1e-9)
