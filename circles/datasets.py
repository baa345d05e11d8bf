"""Two-class point sets in the plane (TensorFlow Playground's and the chapter's), each a seeded function of (n, noise).

Every generator returns float32 points ``(n, 2)`` and labels ``(n,)`` in {0, 1}, half of each class (one more of
one class when n is odd), shuffled, spanning roughly [-1.5, 1.5] so one learning rate suits all.
``noise`` is the standard deviation of Gaussian noise added to each coordinate.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import numpy as np
import torch

Dataset = Literal["circles", "moons", "xor", "gaussians", "spiral"]
LINEARLY_SEPARABLE = {"gaussians"}


def _finish(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = rng.permutation(len(y))
    return torch.from_numpy(x[order]).float(), torch.from_numpy(y[order]).float()


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) >= (n + 1) // 2).astype(np.float64)


def circles(n: int, noise: float, seed: int, factor: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_circles``, unchanged: the outer circle (radius 1) is class 0, the inner one class 1."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def moons(n: int, noise: float, seed: int, factor: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_moons``, centred: two interleaved half circles."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return torch.from_numpy(x - [0.5, 0.25]).float(), torch.from_numpy(y).float()


def xor(n: int, noise: float, seed: int, factor: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points in the four quadrants (kept 0.05 off the axes); class 1 where x1 * x2 < 0."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    magnitude = rng.uniform(0.05, 1.0, size=(n, 2))
    signs = rng.choice([-1.0, 1.0], size=n)
    quadrant = np.stack([signs, np.where(y == 1, -signs, signs)], axis=1)
    x = magnitude * quadrant + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


def gaussians(n: int, noise: float, seed: int, factor: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two round Gaussian blobs (std 0.25) centred at (-0.5, -0.5) (class 0) and (0.5, 0.5) (class 1)."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    centres = np.where(y[:, None] == 1, 0.5, -0.5)
    x = centres + rng.normal(0, 0.25, size=(n, 2)) + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


def spiral(n: int, noise: float, seed: int, factor: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved arms of a spiral (1.75 turns each), the second rotated by half a turn."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    t = rng.uniform(0, 1, size=n)
    angle = 1.75 * 2 * math.pi * t + math.pi * y
    x = np.stack([t * np.sin(angle), t * np.cos(angle)], axis=1) * 1.2 + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


GENERATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "circles": circles, "moons": moons, "xor": xor, "gaussians": gaussians, "spiral": spiral,
}


def bayes_accuracy(dataset: str, noise: float, factor: float = 0.8) -> Optional[float]:
    """The best accuracy any classifier can reach on ``dataset``, where it is known exactly; else None."""
    if dataset == "circles":
        from circles.bayes import bayes_accuracy as circles_bayes

        return circles_bayes(noise, factor)
    if dataset == "gaussians":
        return bayes_accuracy_gaussians(noise)
    return None


def bayes_accuracy_gaussians(noise: float) -> float:
    """Exact Bayes-optimal accuracy of ``gaussians``: the optimal boundary is the line x1 + x2 = 0, at distance
    sqrt(0.5) from each centre, so accuracy = Phi(sqrt(0.5) / sigma) with sigma^2 = 0.25^2 + noise^2."""
    sigma = math.hypot(0.25, noise)
    return 0.5 * (1 + math.erf(math.sqrt(0.5) / sigma / math.sqrt(2)))
