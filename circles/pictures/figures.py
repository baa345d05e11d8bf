"""The matplotlib pictures (the PNGs): the chapter's decision-boundary figure, and the
learning-rate finder's curve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
from circles.pictures.panels import _FILL_ALPHA, _FILL_LUT, BoundaryPanel, class_colours, panel_fill


def boundary_figure(
    panels: Sequence[BoundaryPanel],
    show_probability: bool = False,
    ncols: int | None = None,
    title: str | None = None,
    panel_size: float = 6.0,
    classes: Sequence[str] = (),
    probability_label: str = "P(class 1)",
    one_key: bool = False,
) -> Figure:
    """The chapter's picture as a matplotlib Figure: per panel the predicted class as a filled
    RdYlBu contour (alpha 0.7) with the points scattered on top; with ``show_probability`` a
    second row shows the probability as a continuous map with the 0.5 contour drawn and a colour
    bar titled ``probability_label``. ``classes`` names the classes in a legend below the panels.
    A panel of members who disagree carries the key of its shares of votes; with ``one_key``, one
    key below all panels serves them all."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    rows_per_panel = 2 if show_probability else 1
    fig = Figure(
        figsize=(panel_size * ncols, panel_size * nrows * rows_per_panel), layout="constrained"
    )
    axes = np.atleast_2d(fig.subplots(nrows * rows_per_panel, ncols, squeeze=False))
    for ax in axes.ravel():
        ax.set_visible(False)
    voting = classes[1] if len(classes) == 2 else "class 1"
    for i, panel in enumerate(panels):
        row, col = divmod(i, ncols)
        for j, view in enumerate(["class", "probability"][:rows_per_panel]):
            ax = axes[row * rows_per_panel + j, col]
            _draw_view(fig, ax, panel, view, voting, probability_label, key=not one_key)
    if title:
        fig.suptitle(title)
    lines = any(p.boundaries is not None for p in panels)  # only a linear network's are drawn
    if one_key and any(p.split_vote and p.num_classes == 2 for p in panels):
        fig.colorbar(  # in the fill's colours: RdYlBu at alpha 0.7 on white
            ScalarMappable(Normalize(0, 1), ListedColormap(_FILL_LUT / 255)),
            ax=list(axes.ravel()),
            location="bottom",
            shrink=0.5,
            aspect=40,
            label=f"colour: the share of a run's seeds voting {voting}"
            + ("\nblack lines: each seed's boundary (no activation)" if lines else ""),
        )
    if classes:
        colours = class_colours(len(classes)) / 255
        fig.legend(
            handles=[Patch(color=c, label=name) for name, c in zip(classes, colours, strict=True)],
            loc="outside lower center",
            ncols=len(classes),
            frameon=False,
        )
    return fig


def _draw_view(
    fig: Figure,
    ax: Axes,
    panel: BoundaryPanel,
    view: str,
    voting: str,
    probability_label: str,
    key: bool,
) -> None:
    """One view of a panel: the classes (or, with members who disagree, their shares of the vote
    for ``voting``, with its ``key``) or the probability, each member's boundary of a linear model,
    and the points."""
    ax.set_visible(True)
    if panel.num_classes > 2:
        _draw_classes(ax, panel, view)
    elif view == "class":  # each point's class, or the share of the members voting ``voting``
        levels = np.linspace(0, 1, 11) if panel.split_vote else None
        shares = ax.contourf(
            panel.xs, panel.ys, panel.votes, levels=levels, cmap="RdYlBu", alpha=_FILL_ALPHA
        )
        if panel.split_vote and key:
            fig.colorbar(shares, ax=ax, label=f"share of the members voting {voting}")
        ax.set_title(panel.title)
    else:
        image = ax.pcolormesh(
            panel.xs,
            panel.ys,
            panel.probs,
            cmap="RdYlBu",
            vmin=0,
            vmax=1,
            alpha=_FILL_ALPHA,
            shading="auto",
        )
        ax.contour(panel.xs, panel.ys, panel.probs, levels=[0.5], colors="k", linewidths=1.5)
        fig.colorbar(image, ax=ax, label=probability_label)
        ax.set_title(f"{panel.title}: probability")
    for function in panel.boundaries if panel.boundaries is not None and view == "class" else []:
        ax.contour(panel.xs, panel.ys, function, levels=[0], colors="k", linewidths=1)
    if panel.num_classes == 2:
        ax.scatter(
            panel.points[:, 0],
            panel.points[:, 1],
            c=panel.labels,
            s=40,
            cmap="RdYlBu",
            vmin=0,
            vmax=1,
        )
    ax.set_xlim(panel.xs.min(), panel.xs.max())
    ax.set_ylim(panel.ys.min(), panel.ys.max())


def _draw_classes(ax: Axes, panel: BoundaryPanel, view: str) -> None:
    """One view of a panel of more than two classes on a matplotlib axes: the same fill as the
    TensorBoard frames, the edges between the most probable classes (probability view) and the
    points in their classes' colours."""
    fill, region = panel_fill(panel, view)
    extent = (panel.xs.min(), panel.xs.max(), panel.ys.min(), panel.ys.max())
    ax.imshow(fill, extent=extent, aspect="auto", interpolation="nearest")
    if view == "probability":
        ax.contour(
            panel.xs,
            panel.ys,
            np.flipud(region),
            levels=np.arange(panel.num_classes) + 0.5,
            colors="k",
            linewidths=1.5,
        )
    ax.set_title(
        panel.title if view == "class" else f"{panel.title}: probability of the most probable class"
    )
    colours = class_colours(panel.num_classes)[panel.labels.astype(np.intp)] / 255
    ax.scatter(
        panel.points[:, 0], panel.points[:, 1], c=colours, s=40, edgecolors="white", linewidths=0.4
    )


def finder_figure(
    lrs: np.ndarray, losses: np.ndarray, suggested: float | None, configured: list[float]
) -> Any:
    """The loss over the learning rates, the steepest fall and the configured rate marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)")
    if suggested is not None:
        ax.axvline(suggested, color="#d73027", label=f"steepest fall: {suggested:.3g}")
    for lr in configured:
        ax.axvline(lr, color="#4575b4", linestyle="--", label=f"this run's: {lr:g}")
    ax.legend()
    return figure
