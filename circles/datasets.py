"""Point sets in the plane (the chapter's, TensorFlow Playground's, the course's blobs), each a seeded function of
(n, noise).

Every generator returns float32 points ``(n, 2)`` and labels ``(n,)`` in 0..C-1 (as floats), about n / C of each
class (balanced; the first classes get one more when C does not divide n), shuffled. All but ``blobs`` span roughly
[-1.5, 1.5] so one learning rate suits all; ``noise`` is the standard deviation of Gaussian noise added to each
coordinate (for ``blobs``, the clusters' standard deviation, as scikit-learn's ``cluster_std``). ``circles``, ``moons``
and ``xor`` have two classes; ``gaussians`` and ``spiral`` take any number (``classes``); ``blobs`` defaults to four.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import numpy as np
import torch

Dataset = Literal["circles", "moons", "xor", "gaussians", "spiral", "blobs"]
LINEARLY_SEPARABLE = {"gaussians", "blobs"}
TWO_CLASSES = {"circles", "moons", "xor"}  # the others take ``classes``
DEFAULT_CLASSES = {"blobs": 4}  # the course's four blobs; every other set: 2


def _finish(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = rng.permutation(len(y))
    return torch.from_numpy(x[order]).float(), torch.from_numpy(y[order]).float()


def _labels(n: int, classes: int = 2) -> np.ndarray:
    return np.floor(np.arange(n) * classes / n).astype(np.float64)


def circles(n: int, noise: float, seed: int, factor: float = 0.8, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_circles``, unchanged: the outer circle (radius 1) is class 0, the inner one class 1."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def moons(n: int, noise: float, seed: int, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_moons``, centred: two interleaved half circles."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return torch.from_numpy(x - [0.5, 0.25]).float(), torch.from_numpy(y).float()


def xor(n: int, noise: float, seed: int, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points in the four quadrants (kept 0.05 off the axes); class 1 where x1 * x2 < 0."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    magnitude = rng.uniform(0.05, 1.0, size=(n, 2))
    signs = rng.choice([-1.0, 1.0], size=n)
    quadrant = np.stack([signs, np.where(y == 1, -signs, signs)], axis=1)
    x = magnitude * quadrant + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


def gaussian_centres(classes: int) -> np.ndarray:
    """The centres of ``gaussians``: (-0.5, -0.5) and (0.5, 0.5) for two classes, else evenly around a circle of
    radius sqrt(0.5) (the same distance from the origin)."""
    if classes == 2:
        return np.array([[-0.5, -0.5], [0.5, 0.5]])
    angles = 2 * math.pi * np.arange(classes) / classes + math.pi / 4
    return math.sqrt(0.5) * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def gaussians(n: int, noise: float, seed: int, classes: int = 2, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Round Gaussian blobs (std 0.25), one per class, at :func:`gaussian_centres`."""
    rng = np.random.default_rng(seed)
    y = _labels(n, classes)
    x = gaussian_centres(classes)[y.astype(int)] + rng.normal(0, 0.25, size=(n, 2)) + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


def spiral(n: int, noise: float, seed: int, classes: int = 2, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved arms of a spiral (1.75 turns each), one per class, arm k rotated by k / classes of a turn."""
    rng = np.random.default_rng(seed)
    y = _labels(n, classes)
    t = rng.uniform(0, 1, size=n)
    angle = 1.75 * 2 * math.pi * t + 2 * math.pi * y / classes
    x = np.stack([t * np.sin(angle), t * np.cos(angle)], axis=1) * 1.2 + rng.normal(0, noise, size=(n, 2))
    return _finish(x, y, rng)


def blob_centres(classes: int, layout_seed: int) -> np.ndarray:
    """The centres scikit-learn's ``make_blobs(centers=classes, random_state=layout_seed)`` draws (uniform in
    [-10, 10] per coordinate, before any point)."""
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=classes, n_features=2, centers=classes, random_state=layout_seed,
                      return_centers=True)[2]


def blobs(n: int, noise: float, seed: int, classes: int = 4, layout_seed: Optional[int] = None,
          **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The course's multi-class set: scikit-learn's ``make_blobs(n, n_features=2, centers=classes,
    cluster_std=noise, random_state=seed)``, unchanged when ``seed`` is the ``layout_seed``; another seed (the test
    draw) keeps the layout's centres and draws new points around them."""
    from sklearn.datasets import make_blobs

    layout_seed = seed if layout_seed is None else layout_seed
    centres = classes if seed == layout_seed else blob_centres(classes, layout_seed)
    x, y = make_blobs(n_samples=n, n_features=2, centers=centres, cluster_std=noise, random_state=seed)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


GENERATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "circles": circles, "moons": moons, "xor": xor, "gaussians": gaussians, "spiral": spiral, "blobs": blobs,
}


def bayes_accuracy(dataset: str, noise: float, factor: float = 0.8, classes: int = 2,
                   layout_seed: int = 42) -> Optional[float]:
    """The best accuracy any classifier can reach on ``dataset``, where it is known exactly; else None."""
    if dataset == "circles":
        from circles.bayes import bayes_accuracy as circles_bayes

        return circles_bayes(noise, factor)
    if dataset == "gaussians":
        if classes == 2:
            return bayes_accuracy_gaussians(noise)
        from circles.bayes import nearest_centre_accuracy

        return nearest_centre_accuracy(gaussian_centres(classes), math.hypot(0.25, noise))
    if dataset == "blobs":
        from circles.bayes import nearest_centre_accuracy

        return nearest_centre_accuracy(blob_centres(classes, layout_seed), noise)
    return None


def bayes_accuracy_gaussians(noise: float) -> float:
    """Exact Bayes-optimal accuracy of ``gaussians``: the optimal boundary is the line x1 + x2 = 0, at distance
    sqrt(0.5) from each centre, so accuracy = Phi(sqrt(0.5) / sigma) with sigma^2 = 0.25^2 + noise^2."""
    sigma = math.hypot(0.25, noise)
    return 0.5 * (1 + math.erf(math.sqrt(0.5) / sigma / math.sqrt(2)))
