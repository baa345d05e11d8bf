"""Decision-boundary pictures: predict a model over a grid, then draw it with matplotlib (the PNGs; TensorBoard's
frames are drawn into arrays by :mod:`circles.frames`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from circles.contracts import Classifier

ArrayLike = np.ndarray | torch.Tensor

# matplotlib's RdYlBu is a linear interpolation of these ColorBrewer colours; class 0 is red, class 1 blue.
_RDYLBU = np.array([
    (165, 0, 38), (215, 48, 39), (244, 109, 67), (253, 174, 97), (254, 224, 144), (255, 255, 191),
    (224, 243, 248), (171, 217, 233), (116, 173, 209), (69, 117, 180), (49, 54, 149),
], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RDYLBU)), _RDYLBU[:, c]) for c in range(3)],
                axis=1)
_FILL_ALPHA = 0.7  # the chapter's contourf alpha
_POINT_LUT = _LUT.round().astype(np.uint8)
_FILL_LUT = (_FILL_ALPHA * _LUT + (1 - _FILL_ALPHA) * 255).round().astype(np.uint8)
# More than two classes: matplotlib's tab10, one colour per class (cycled beyond ten).
_TAB10 = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], dtype=np.uint8)


def class_colours(classes: int) -> np.ndarray:
    """The colour of each class, ``(C, 3)`` uint8, in every picture: RdYlBu's red and blue for two classes (the
    chapter's), tab10 for more."""
    return np.stack([_POINT_LUT[0], _POINT_LUT[255]]) if classes == 2 else _TAB10[np.arange(classes) % len(_TAB10)]


def _numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def grid_axes(points: ArrayLike, resolution: int = 101, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The chapter's grid: ``resolution`` values per axis spanning the points' extent +- ``margin``."""
    p = _numpy(points)
    (x0, y0), (x1, y1) = p[:, :2].min(axis=0) - margin, p[:, :2].max(axis=0) + margin
    return np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)


@contextlib.contextmanager
def _inference(model: object) -> Iterator[torch.device]:
    """Evaluation mode and inference mode for the duration; an ``nn.Module`` is then left exactly as found:
    same device, same train/eval flags, gradients untouched. Yields the device to put inputs on."""
    device = torch.device("cpu")
    modes: list[tuple[torch.nn.Module, bool]] = []
    if isinstance(model, torch.nn.Module):
        device = next(model.parameters(), torch.empty(0)).device
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
    try:
        with torch.inference_mode():
            yield device
    finally:
        for module, training in modes:
            module.training = training


def _grid_points(xs: np.ndarray, ys: np.ndarray, device: torch.device) -> torch.Tensor:
    xx, yy = np.meshgrid(xs, ys)
    return torch.from_numpy(np.column_stack([xx.ravel(), yy.ravel()])).float().to(device)


def grid_predictions(model: Classifier | Callable[[torch.Tensor], torch.Tensor], xs: np.ndarray,
                     ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over the grid, each ``(len(ys), len(xs))`` with row i at ``ys[i]``: the probability of class 1 and the share of
    members that vote for class 1 (probability > 0.5); for a model of C > 2 classes, each ``(len(ys), len(xs), C)``:
    every class's probability and share of the votes. A :class:`circles.contracts.Classifier` (K members) gives their
    mean probability and the share of the K votes; any other callable on ``(N, 2)`` points gives its probability (of
    its logit) and its 0/1 vote. One batched forward pass on the model's own device under inference mode; the model
    is left as found."""
    from circles.contracts import Classifier

    with _inference(model) as device:
        points = _grid_points(xs, ys, device)
        if isinstance(model, Classifier):
            member_probs = model.member_probabilities(points).float()
        else:
            member_probs = torch.sigmoid(model(points).reshape(1, -1).float())
        probs = member_probs.mean(0).cpu().numpy()
        if member_probs.dim() == 2:
            votes = (member_probs > 0.5).float().mean(0).cpu().numpy()
        else:  # more than two classes: per class, the share of members whose most probable class it is
            classes = member_probs.shape[-1]
            votes = torch.nn.functional.one_hot(member_probs.argmax(-1), classes).float().mean(0).cpu().numpy()
    return probs.reshape(len(ys), len(xs), *probs.shape[1:]), votes.reshape(len(ys), len(xs), *votes.shape[1:])


def grid_layers(model: Classifier, xs: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
    """Every layer's output over the grid, the inputs first and the logits last (the model's ``layer_outputs``),
    each ``(units, len(ys), len(xs))``; the model is left as found."""
    with _inference(model) as device:
        layers = model.layer_outputs(_grid_points(xs, ys, device))
        return [a.float().cpu().numpy().T.reshape(-1, len(ys), len(xs)) for a in layers]


def grid_boundaries(model: Classifier, xs: np.ndarray, ys: np.ndarray, members: int = 16) -> np.ndarray:
    """Each member's probability of class 1 less one half over the grid, ``(K, len(ys), len(xs))`` for the first
    ``members`` of them: zero on each member's own boundary. (Two classes.)"""
    with _inference(model) as device:
        probs = model.member_probabilities(_grid_points(xs, ys, device))[:members].float().cpu().numpy()
    return probs.reshape(len(probs), len(ys), len(xs)) - 0.5


@dataclass
class BoundaryPanel:
    """One picture: the model's probabilities over a grid and the points drawn on top. ``votes`` is the share of
    members voting for class 1 (0 or 1 for a single network; see :func:`grid_predictions`): the class view colours
    it, so with several members the colour shows where they disagree."""

    title: str
    xs: np.ndarray
    ys: np.ndarray
    probs: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    votes: np.ndarray
    boundaries: np.ndarray | None = None  # (K, ny, nx): functions whose zero sets are drawn, one per member

    @property
    def num_classes(self) -> int:
        return 2 if self.probs.ndim == 2 else self.probs.shape[-1]

    @property
    def split_vote(self) -> bool:
        """Whether the members disagree anywhere on the grid (never, for a single network)."""
        return bool(((self.votes > 0) & (self.votes < 1)).any())

    @classmethod
    def of(cls, title: str, xs: np.ndarray, ys: np.ndarray, probs: np.ndarray, points: ArrayLike,
           labels: ArrayLike, max_points: int | None = None, votes: np.ndarray | None = None,
           boundaries: np.ndarray | None = None) -> BoundaryPanel:
        """A panel of at most ``max_points`` of the points (a fixed sample); without ``votes``, a single network's;
        ``boundaries``: each member's decision function over the grid, whose zero line is drawn."""
        points, labels = _numpy(points)[:, :2], _numpy(labels)
        if max_points is not None and len(points) > max_points:
            keep = np.random.default_rng(0).choice(len(points), max_points, replace=False)
            points, labels = points[keep], labels[keep]
        if votes is None:
            votes = (probs > 0.5).astype(np.float64) if probs.ndim == 2 else np.eye(probs.shape[-1])[probs.argmax(-1)]
        return cls(title, xs, ys, probs, points, labels, votes, boundaries)


def boundary_figure(panels: Sequence[BoundaryPanel], show_probability: bool = False, ncols: int | None = None,
                    title: str | None = None, panel_size: float = 6.0, classes: Sequence[str] = (),
                    probability_label: str = "P(class 1)", one_key: bool = False) -> Figure:
    """The chapter's picture as a matplotlib Figure: per panel the predicted class as a filled RdYlBu contour
    (alpha 0.7) with the points scattered on top; with ``show_probability`` a second row shows the probability
    as a continuous map with the 0.5 contour drawn and a colour bar titled ``probability_label``. ``classes`` names
    the classes in a legend below the panels. A panel of members who disagree carries the key of its shares of
    votes; with ``one_key``, one key below all panels serves them all."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    rows_per_panel = 2 if show_probability else 1
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows * rows_per_panel), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows * rows_per_panel, ncols, squeeze=False))
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, panel in enumerate(panels):
        row, col = divmod(i, ncols)
        views = [("class", axes[row * rows_per_panel, col])]
        if show_probability:
            views.append(("probability", axes[row * rows_per_panel + 1, col]))
        for view, ax in views:
            ax.set_visible(True)
            if panel.num_classes > 2:
                _draw_classes(ax, panel, view)
            elif view == "class":
                _draw_votes(fig, ax, panel, classes[1] if len(classes) == 2 else "class 1", not one_key)
            else:
                image = ax.pcolormesh(panel.xs, panel.ys, panel.probs, cmap="RdYlBu", vmin=0, vmax=1,
                                      alpha=_FILL_ALPHA, shading="auto")
                ax.contour(panel.xs, panel.ys, panel.probs, levels=[0.5], colors="k", linewidths=1.5)
                fig.colorbar(image, ax=ax, label=probability_label)
                ax.set_title(f"{panel.title}: probability")
            for function in panel.boundaries if panel.boundaries is not None and view == "class" else []:
                ax.contour(panel.xs, panel.ys, function, levels=[0], colors="k", linewidths=1)
            if panel.num_classes == 2:
                ax.scatter(panel.points[:, 0], panel.points[:, 1], c=panel.labels, s=40, cmap="RdYlBu", vmin=0,
                           vmax=1)
            ax.set_xlim(panel.xs.min(), panel.xs.max())
            ax.set_ylim(panel.ys.min(), panel.ys.max())
    if title:
        fig.suptitle(title)
    if one_key and any(p.split_vote and p.num_classes == 2 for p in panels):
        _vote_key(fig, axes, classes[1] if len(classes) == 2 else "class 1")
    if classes:
        colours = class_colours(len(classes)) / 255
        handles = [Patch(color=colour, label=name) for name, colour in zip(classes, colours, strict=True)]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(classes), frameon=False)
    return fig


def _draw_votes(fig: Figure, ax: Axes, panel: BoundaryPanel, voting: str, key: bool) -> None:
    """The class view of two classes: each point's class, or with members who disagree the share of them voting
    ``voting``, in eleven steps and with its key (``key``)."""
    levels = np.linspace(0, 1, 11) if panel.split_vote else None
    shares = ax.contourf(panel.xs, panel.ys, panel.votes, levels=levels, cmap="RdYlBu", alpha=_FILL_ALPHA)
    if panel.split_vote and key:
        fig.colorbar(shares, ax=ax, label=f"share of the members voting {voting}")
    ax.set_title(panel.title)


def _vote_key(fig: Figure, axes: np.ndarray, voting: str) -> None:
    """One key of the shares of votes below the panels."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    faded = ListedColormap(_FILL_LUT / 255)  # the fill's colours: RdYlBu at alpha 0.7 on white
    fig.colorbar(ScalarMappable(Normalize(0, 1), faded), ax=list(axes.ravel()), location="bottom", shrink=0.5,
                 aspect=40, label=f"colour: the share of a run's seeds voting {voting}\nblack lines: each seed's "
                                  "boundary (no activation)")


def _draw_classes(ax: Axes, panel: BoundaryPanel, view: str) -> None:
    """One view of a panel of more than two classes on a matplotlib axes: the same fill as the TensorBoard frames,
    the edges between the most probable classes (probability view) and the points in their classes' colours."""
    fill, region = panel_fill(panel, view)
    extent = (panel.xs.min(), panel.xs.max(), panel.ys.min(), panel.ys.max())
    ax.imshow(fill, extent=extent, aspect="auto", interpolation="nearest")
    if view == "probability":
        ax.contour(panel.xs, panel.ys, np.flipud(region), levels=np.arange(panel.num_classes) + 0.5, colors="k",
                   linewidths=1.5)
    ax.set_title(panel.title if view == "class" else f"{panel.title}: probability of the most probable class")
    colours = class_colours(panel.num_classes)[panel.labels.astype(np.intp)] / 255
    ax.scatter(panel.points[:, 0], panel.points[:, 1], c=colours, s=40, edgecolors="white", linewidths=0.4)


def _lut_index(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.intp)


def fill_colours(values: np.ndarray) -> np.ndarray:
    """The fill's RdYlBu colour (alpha 0.7 on white) of values in [0, 1]: uint8, one more axis of 3."""
    return _FILL_LUT[_lut_index(values)]


def signed_colours(values: np.ndarray) -> np.ndarray:
    """RdYlBu at full strength for values in [-1, 1]: red -1, yellow-white 0, blue +1 (the neuron tiles')."""
    return _POINT_LUT[_lut_index(0.5 + 0.5 * values)]


def panel_fill(panel: BoundaryPanel, view: str) -> tuple[np.ndarray, np.ndarray]:
    """The filled grid of a view, ``(len(ys), len(xs), 3)`` uint8 with row 0 at the top (largest y), and the region
    whose edge the probability view draws (``(len(ys), len(xs))`` class indices). Two classes: RdYlBu at the share of
    votes for class 1 (class view) or at the probability (its edge: 0.5). More: the colour of the class most members
    vote for, or of the most probable class, faded towards white as that share or probability falls to 1/C."""
    probs, votes = np.flipud(panel.probs), np.flipud(panel.votes)
    if probs.ndim == 2:
        return fill_colours(votes if view == "class" else probs), (probs > 0.5).astype(np.intp)
    share = votes if view == "class" else probs
    winner, classes = share.argmax(-1), share.shape[-1]
    strength = np.clip((share.max(-1) - 1 / classes) / (1 - 1 / classes), 0, 1)
    faded = view == "probability" or panel.split_vote  # a single network's votes are 0 or 1: the classes, solid
    alpha = (_FILL_ALPHA * (strength if faded else np.ones_like(strength)))[..., None]
    fill = alpha * class_colours(classes)[winner] + (1 - alpha) * 255
    return fill.round().astype(np.uint8), probs.argmax(-1)


