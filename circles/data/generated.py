"""Generated point sets in the plane (the chapter's, TensorFlow Playground's, the course's blobs),
declared once in a registry, and the settings of a generated draw.

Every generator returns float32 points ``(n, 2)`` and labels ``(n,)`` in 0..C-1 (as floats),
about n / C of each class (balanced; the first classes get one more when C does not divide n),
shuffled. All but ``blobs`` span roughly [-1.5, 1.5] so one learning rate suits all; ``noise`` is
the standard deviation of Gaussian noise added to each coordinate (for ``blobs``, the clusters'
standard deviation, as scikit-learn's ``cluster_std``). ``circles``, ``moons`` and ``xor`` have
two classes; ``gaussians`` and ``spiral`` take any number (``classes``); ``blobs`` defaults to
four."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from circles.bayes import bayes_accuracy, nearest_centre_accuracy
from circles.data.batches import Points, derived_seed
from circles.errors import check


def _points(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and labels as float32 tensors, shuffled by ``rng`` if given."""
    order = slice(None) if rng is None else rng.permutation(len(y))
    return torch.from_numpy(x[order]).float(), torch.from_numpy(y[order]).float()


def _labels(n: int, classes: int = 2) -> np.ndarray:
    return np.floor(np.arange(n) * classes / n).astype(np.float64)


def circles(
    n: int, noise: float, seed: int, factor: float = 0.8, **_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_circles``, unchanged: the outer circle (radius 1) is class 0, the
    inner one class 1."""
    from sklearn.datasets import make_circles

    return _points(*make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed))


def moons(n: int, noise: float, seed: int, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``make_moons``, centred: two interleaved half circles."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return _points(x - [0.5, 0.25], y)


def xor(n: int, noise: float, seed: int, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points in the four quadrants (kept 0.05 off the axes); class 1 where x1 * x2 < 0."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    magnitude = rng.uniform(0.05, 1.0, size=(n, 2))
    signs = rng.choice([-1.0, 1.0], size=n)
    quadrant = np.stack([signs, np.where(y == 1, -signs, signs)], axis=1)
    x = magnitude * quadrant + rng.normal(0, noise, size=(n, 2))
    return _points(x, y, rng)


def gaussian_centres(classes: int) -> np.ndarray:
    """The centres of ``gaussians``: (-0.5, -0.5) and (0.5, 0.5) for two classes, else evenly
    around a circle of radius sqrt(0.5) (the same distance from the origin)."""
    if classes == 2:
        return np.array([[-0.5, -0.5], [0.5, 0.5]])
    angles = 2 * math.pi * np.arange(classes) / classes + math.pi / 4
    return math.sqrt(0.5) * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def gaussians(
    n: int, noise: float, seed: int, classes: int = 2, **_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round Gaussian blobs (std 0.25), one per class, at :func:`gaussian_centres`."""
    rng = np.random.default_rng(seed)
    y = _labels(n, classes)
    x = (
        gaussian_centres(classes)[y.astype(int)]
        + rng.normal(0, 0.25, size=(n, 2))
        + rng.normal(0, noise, size=(n, 2))
    )
    return _points(x, y, rng)


def spiral(
    n: int, noise: float, seed: int, classes: int = 2, **_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved arms of a spiral (1.75 turns each), one per class, arm k rotated by k /
    classes of a turn."""
    rng = np.random.default_rng(seed)
    y = _labels(n, classes)
    t = rng.uniform(0, 1, size=n)
    angle = 1.75 * 2 * math.pi * t + 2 * math.pi * y / classes
    x = np.stack([t * np.sin(angle), t * np.cos(angle)], axis=1) * 1.2 + rng.normal(
        0, noise, size=(n, 2)
    )
    return _points(x, y, rng)


def blob_centres(classes: int, layout_seed: int) -> np.ndarray:
    """The centres scikit-learn's ``make_blobs(centers=classes, random_state=layout_seed)`` draws
    (uniform in [-10, 10] per coordinate, before any point)."""
    from sklearn.datasets import make_blobs

    return make_blobs(
        n_samples=classes,
        n_features=2,
        centers=classes,
        random_state=layout_seed,
        return_centers=True,
    )[2]


def blobs(
    n: int, noise: float, seed: int, classes: int = 4, layout_seed: int | None = None, **_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """The course's multi-class set: scikit-learn's ``make_blobs(n, n_features=2,
    centers=classes, cluster_std=noise, random_state=seed)``, unchanged when ``seed`` is the
    ``layout_seed``; another seed (the test draw) keeps the layout's centres and draws new points
    around them."""
    from sklearn.datasets import make_blobs

    centres = classes if layout_seed in (None, seed) else blob_centres(classes, layout_seed)
    return _points(
        *make_blobs(
            n_samples=n, n_features=2, centers=centres, cluster_std=noise, random_state=seed
        )
    )


def bayes_accuracy_gaussians(noise: float) -> float:
    """Exact Bayes-optimal accuracy of ``gaussians``: the optimal boundary is the line x1 + x2 =
    0, at distance sqrt(0.5) from each centre, so accuracy = Phi(sqrt(0.5) / sigma) with sigma^2
    = 0.25^2 + noise^2."""
    sigma = math.hypot(0.25, noise)
    return 0.5 * (1 + math.erf(math.sqrt(0.5) / sigma / math.sqrt(2)))


# (noise, factor, classes, layout seed)
BayesAccuracy = Callable[[float, float, int, int], float | None]


@dataclass(frozen=True)
class DatasetSpec:
    """A generated point set, declared once: everything the data module, the pictures and the
    help text say of it."""

    name: str
    # (n, noise, seed, factor=, classes=, layout_seed=)
    generate: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    about: str  # what it is, for --help
    classes: int = 2  # its number of classes unless ``data.classes`` says otherwise
    any_classes: bool = False  # whether ``data.classes`` may set another number
    # what the pictures call its classes (two-class sets); else ``class k``
    class_names: tuple[str, ...] = ()
    bayes: BayesAccuracy | None = None  # its exact Bayes-optimal accuracy, where known


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "circles",
            circles,
            "the chapter's two concentric circles (scikit-learn's make_circles)",
            class_names=("outer circle", "inner circle"),
            bayes=lambda noise, factor, classes, layout_seed: bayes_accuracy(noise, factor),
        ),
        DatasetSpec("moons", moons, "two interleaved half circles (make_moons)"),
        DatasetSpec("xor", xor, "the four quadrants, class 1 where x1 * x2 < 0"),
        DatasetSpec(
            "gaussians",
            gaussians,
            "one round Gaussian blob per class",
            any_classes=True,
            bayes=lambda noise, factor, classes, layout_seed: (
                bayes_accuracy_gaussians(noise)
                if classes == 2
                else nearest_centre_accuracy(gaussian_centres(classes), math.hypot(0.25, noise))
            ),
        ),
        DatasetSpec("spiral", spiral, "one arm of a spiral per class", any_classes=True),
        DatasetSpec(
            "blobs",
            blobs,
            "the course's multi-class blobs (make_blobs; noise is their cluster_std)",
            classes=4,
            any_classes=True,
            # cached: asked for the run's settings and again by its test
            bayes=functools.cache(
                lambda noise, factor, classes, layout_seed: nearest_centre_accuracy(
                    blob_centres(classes, layout_seed), noise
                )
            ),
        ),
    )
}


if TYPE_CHECKING:
    Dataset = str
else:
    Dataset = Literal[tuple(DATASETS)]  # the choices the command line offers and checks


@dataclass(frozen=True)
class Generated:
    """The settings of a generated point set (checked when made), and its draws: ``n_samples``
    points split into training and validation, and an independent test draw of ``test_samples``."""

    dataset: str
    n_samples: int
    noise: float
    factor: float
    classes: int | None
    test_samples: int
    val_fraction: float
    seed: int

    def __post_init__(self) -> None:
        """What the settings' ranges (their types) cannot say: how many points the split needs,
        and which datasets take another number of classes."""
        minimum = 4  # the smallest draw whose split leaves two points on each side
        while (
            math.ceil(self.val_fraction * minimum) < 2
            or minimum - math.ceil(self.val_fraction * minimum) < 2
        ):
            minimum += 1
        check(
            self.n_samples >= minimum,
            "n_samples",
            f"an integer >= {minimum}",
            self.n_samples,
            f"With val_fraction={self.val_fraction} smaller draws leave fewer than 2 training or "
            "validation points.",
        )
        check(
            self.classes in (None, self.spec.classes) or self.spec.any_classes,
            "classes",
            f"{self.spec.classes} for dataset {self.dataset}",
            self.classes,
            f"Only {', '.join(name for name, spec in DATASETS.items() if spec.any_classes)} take "
            "another number of classes.",
        )

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def num_classes(self) -> int:
        return self.classes or self.spec.classes

    def draw(self, n: int, seed: int) -> Points:
        return self.spec.generate(
            n, self.noise, seed, factor=self.factor, classes=self.num_classes, layout_seed=self.seed
        )

    def fit_split(self) -> tuple[Points, Points]:
        """The chapter's draw and split: ``train_test_split(test_size=val_fraction,
        random_state=seed)``."""
        from sklearn.model_selection import train_test_split

        train_x, val_x, train_y, val_y = train_test_split(
            *self.draw(self.n_samples, self.seed),
            test_size=self.val_fraction,
            random_state=self.seed,
        )
        return (train_x, train_y), (val_x, val_y)

    def test_split(self) -> Points:
        return self.draw(self.test_samples, derived_seed(self.seed, 1))

    def bayes_accuracy(self) -> float | None:
        bayes = self.spec.bayes
        return (
            None if bayes is None else bayes(self.noise, self.factor, self.num_classes, self.seed)
        )

    def describe(self, sizes: str) -> str:
        classes = f", {self.num_classes} classes" if self.num_classes > 2 else ""
        drawn = f"{sizes} points; " if sizes else ""
        return (
            f"{self.dataset} (noise {self.noise:g}{classes}): {drawn}test: a fresh draw of "
            f"{self.test_samples} points"
        )

    def class_legend(self) -> tuple[str, ...]:
        """The pictures' name of each class: ``outer circle (0)``, ``class 2``."""
        names = self.spec.class_names
        return tuple(
            f"{names[k]} ({k})" if len(names) == self.num_classes else f"class {k}"
            for k in range(self.num_classes)
        )

    def probability_label(self) -> str:
        """What the probability view of a two-class picture shows: ``P(inner circle)``, ``P(class
        1)``."""
        names = self.spec.class_names
        return f"P({names[1]})" if names and self.num_classes == 2 else "P(class 1)"
