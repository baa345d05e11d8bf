"""Exact Bayes-optimal accuracy of scikit-learn's ``make_circles(noise, factor)``.

Each class is a circle (outer radius 1 -> label 0, inner radius ``factor`` ->
label 1, equal priors 1/2) plus isotropic Gaussian noise of std ``noise`` per
coordinate, so a point's radius ``r`` is Rice-distributed with ``nu`` = circle
radius and ``sigma`` = noise (``scipy.stats.rice(b=nu/sigma, scale=sigma)``).
The likelihood ratio of the two Rice densities is monotone in ``r``, so the
optimal rule is "predict inner (1) iff r < t" with ``t`` the unique radius at
which the two densities are equal, and the Bayes accuracy is
``0.5 * P(r < t | inner) + 0.5 * P(r > t | outer)``.

scipy is imported inside the functions so ``import circles`` stays fast.
"""

import contextlib
import math
from collections.abc import Sequence
from functools import cache

import numpy as np

__all__ = ["bayes_threshold", "bayes_accuracy", "nearest_centre_accuracy"]


def _check(noise, factor):
    noise, factor = float(noise), float(factor)
    if not 0.0 <= noise < math.inf:
        raise ValueError(f"noise must be >= 0 (and finite), got {noise}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be in the open interval (0, 1), got {factor}")
    return noise, factor


def _log_density_diff(r, noise, f):
    """``rice.logpdf(r, factor/noise, scale=noise) - rice.logpdf(r, 1/noise, scale=noise)``.

    Written out because scipy's ``rice.logpdf`` is ``log(pdf)`` and underflows to
    -inf (giving nan differences) at small noise.  With x = r/noise**2 it is
    (1-f^2)/(2 noise^2) + log I0(f x) - log I0(x); log I0 goes through ``i0e``
    (no overflow), or through its Taylor series for tiny x (no cancellation).
    """
    from scipy.special import i0e

    s2 = noise * noise
    x = r / s2
    if x < 1e-3:  # log I0(y) = y^2/4 - y^4/64 + y^6/576 + O(y^8)
        x2 = x * x
        return (1 - f) * (1 + f) / (2 * s2) + (
            -(1 - f**2) * x2 / 4 + (1 - f**4) * x2**2 / 64 - (1 - f**6) * x2**3 / 576
        )
    # same thing with log I0(y) = log i0e(y) + y, and the linear terms combined exactly
    return (1 - f) * (1 + f - 2 * r) / (2 * s2) + math.log(i0e(f * x)) - math.log(i0e(x))


@cache
def bayes_threshold(noise: float, factor: float) -> float:
    """Radius t of the Bayes-optimal rule: predict inner (label 1) iff ``r < t``.

    t is accurate to ~1e-15 relative except where noise >> 1 and factor -> 1 (the two
    densities are then nearly identical, t is ill-conditioned and the accuracy is 0.5).
    """
    from scipy.optimize import brentq

    noise, factor = _check(noise, factor)
    mid = (1.0 + factor) / 2.0
    if noise == 0.0:
        return mid
    if noise >= 1e4:  # series solution t^2 = 2 s^2 + (1+f^2)/4 + O(s^-2), exact in float here
        return noise * math.sqrt(2.0 + (1.0 + factor * factor) / (4.0 * noise * noise))
    # The difference d(r) is strictly decreasing, and since f^0.5 <= i0e(x)/i0e(f x) <= 1,
    #   t lies in [mid, mid + c/2] with c = noise^2 log(1/f) / (1-f).
    c = noise * noise * math.log(1.0 / factor) / (1.0 - factor)
    if mid + c / 2 == mid:  # noise so small that t == mid to double precision
        return mid
    # d(0) = (1-f^2)/(2 noise^2) > 0 and d(1 + c) <= -(1-f)^2/(2 noise^2) - log(1/f)/2 < 0,
    # so [0, 1 + c] always brackets the root (with a wide margin at both ends).
    return brentq(_log_density_diff, 0.0, 1.0 + c, args=(noise, factor), xtol=1e-15, maxiter=500)


@cache
def bayes_accuracy(noise: float, factor: float = 0.8) -> float:
    """Exact Bayes-optimal accuracy on ``make_circles(noise=noise, factor=factor)``."""
    from scipy.stats import rice

    noise, factor = _check(noise, factor)
    if noise == 0.0:
        return 1.0
    t = bayes_threshold(noise, factor)
    # Rayleigh-tail bound on the error, P(|noise vector| > a) = exp(-a^2 / (2 noise^2)):
    # if it is below half an ulp of 1.0 the accuracy is 1.0 in double precision
    # (this also avoids scipy's nan at huge b = nu/noise).
    zi = (t - factor) / noise
    zo = (1.0 - t) / noise
    if 0.5 * math.exp(-zi * zi / 2) + 0.5 * math.exp(-zo * zo / 2) < 1e-17:
        return 1.0
    if noise > 1e-5:  # P(r < t | inner) and P(r > t | outer)
        return float(
            0.5 * rice.cdf(t, factor / noise, scale=noise)
            + 0.5 * rice.sf(t, 1.0 / noise, scale=noise)
        )
    # scipy's rice.cdf (chndtr) returns nan for b = nu/noise beyond ~3e5
    return 0.5 * _p_inside(t, factor, noise) + 0.5 * (1.0 - _p_inside(t, 1.0, noise))


def _p_inside(t, nu, noise):
    """P(|(nu, 0) + noise * (u, v)| < t) for u, v ~ N(0, 1): the Rice cdf, by 1-D quadrature.

    For each u the allowed v form an interval; |u| > 40 has probability < 1e-300.
    """
    from scipy.integrate import quad
    from scipy.special import ndtr

    def integrand(u):
        w = math.sqrt(max(t * t - (noise * u) ** 2, 0.0))
        hi = (t - nu) / noise - noise * u * u / (t + w)  # = (w - nu) / noise, cancellation-free
        return math.exp(-u * u / 2) / math.sqrt(2 * math.pi) * (ndtr(hi) - ndtr((-w - nu) / noise))

    lim = min(t / noise, 40.0)
    return quad(integrand, -lim, lim, epsabs=1e-15, epsrel=1e-13, limit=200)[0]


def nearest_centre_accuracy(centres: Sequence[Sequence[float]] | np.ndarray, sigma: float) -> float:
    """Exact Bayes-optimal accuracy for classes that are round Gaussians of the same ``sigma``
    with equal priors around ``centres`` (K, 2): the optimal rule is the nearest centre, so the
    accuracy is the mean over classes of the Gaussian mass of the class's Voronoi cell. A 2-D
    Gaussian puts mass ``1 - exp(-r^2 / (2 sigma^2))`` within radius r of its centre, so the mass
    of a cell that is star-shaped around the centre (a Voronoi cell is convex) is ``(1 / 2 pi) *
    integral over directions theta of (1 - exp(-r(theta)^2 / (2 sigma^2)))``, where r(theta) is
    the distance to the cell's edge in that direction: a one-dimensional integral, computed to
    ~1e-10 by quadrature between the angles where the nearest edge changes (no sampling). Only a
    centre's Delaunay neighbours bound its cell, so a cell costs the same for 10 classes or 1000."""
    from scipy.spatial import Delaunay, QhullError

    c = np.asarray(centres, dtype=np.float64)
    if sigma <= 0:
        return 1.0
    # the centres whose bisector can bound a cell: its Delaunay neighbours, or every other centre
    # where there is no triangulation (fewer than 4 centres, or all on one line)
    neighbours = [np.delete(np.arange(len(c)), k) for k in range(len(c))]
    if len(c) >= 4:
        with contextlib.suppress(QhullError):
            indptr, indices = Delaunay(c).vertex_neighbor_vertices
            neighbours = [indices[indptr[k] : indptr[k + 1]] for k in range(len(c))]
    return sum(cell_mass(c, k, neighbours[k], sigma) for k in range(len(c))) / len(c)


def cell_mass(c: np.ndarray, k: int, neighbours: np.ndarray, sigma: float) -> float:
    """The Gaussian mass (``sigma``) of centre ``k``'s nearest-centre cell, bounded by the
    bisectors with ``neighbours`` (indices into ``c``)."""
    from scipy.integrate import quad

    others = c[neighbours] - c[k]  # d_j: the other centres, seen from centre k
    # the bisector of k and j: points x with x . d_j = |d_j|^2 / 2
    half = (others**2).sum(axis=1) / 2

    def mass(theta: float) -> float:
        along = others @ np.array([math.cos(theta), math.sin(theta)])
        r = np.where(along > 0, half / np.where(along > 0, along, 1), np.inf).min()
        return 1.0 if not np.isfinite(r) else -math.expm1(-r * r / (2 * sigma * sigma))

    # the cell's corners, where the nearest edge changes (the integrand's kinks): the points
    # where two bisectors meet that no other bisector cuts off
    i, j = np.triu_indices(len(others), 1)
    pairs = np.stack([others[i], others[j]], axis=1)
    meet = np.abs(np.linalg.det(pairs)) >= 1e-12
    corners = np.linalg.solve(pairs[meet], np.stack([half[i], half[j]], axis=1)[meet, :, None])[
        ..., 0
    ]
    kept = np.all(corners @ others.T <= half + 1e-9 * (1 + np.abs(half)), axis=1)
    kinks = sorted(
        {math.atan2(d[1], d[0]) % (2 * math.pi) for d in others}
        | {math.atan2(y, x) % (2 * math.pi) for x, y in corners[kept]}
        | {0.0, 2 * math.pi}
    )
    return sum(
        quad(mass, a, b, epsabs=1e-12, epsrel=1e-12, limit=200)[0]
        for a, b in zip(kinks, kinks[1:], strict=False)
        if b > a
    ) / (2 * math.pi)


def accuracy_interval(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% (``z`` = 1.96) Wilson score interval of an accuracy ``acc`` measured on ``n``
    points: where the true accuracy lies, by the measurement. Unlike the normal approximation
    ``acc ± z·sqrt(acc(1-acc)/n)`` it does not shrink to nothing at 0 or 1: 10 of 10 points right
    leaves 0.72 to 1."""
    if n <= 0:
        raise ValueError(f"n must be at least 1, got {n}")
    shrink = 1 + z * z / n
    centre = (acc + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    # holds acc, rounding or not
    return max(0.0, min(acc, centre - half)), min(1.0, max(acc, centre + half))
