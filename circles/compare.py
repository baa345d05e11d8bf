"""The lesson side by side: ``circles compare CONFIG [CONFIG ...]`` trains each config through the
command line and writes one self-contained HTML page (every picture inside it, so it opens offline
in any browser) with the decision boundaries side by side under one epoch slider, the train and val
curves overlaid, and the final numbers with their spread over the members and the best accuracy
possible; and the same at the last epoch as one PNG::

    circles compare configs/linear.yaml configs/relu.yaml configs/improved.yaml
    circles compare configs/linear.yaml configs/relu.yaml --model.members 16 --out lesson

Options after the configs (``--model.members 16``, ``--trainer.max_epochs 300``) go to every run.
The runs are ordinary runs, in ``OUT/lightning_logs`` (TensorBoard shows them too); the page is
``OUT/compare.html``, the picture ``OUT/compare.png``."""

from __future__ import annotations

import argparse
import contextlib
import html
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.contracts import classifier, trainer_callbacks, trainer_data
from circles.errors import (
    REPORT_CONTEXT,
    CirclesError,
    ConfigError,
    Interrupted,
    quiet_destructors,
    report,
)
from circles.model.metrics import latest_values, num
from circles.runs.directory import RunInUse, atomic_file, save_figure, try_lock

# pictures of a run over its epochs; the page's slider takes the union of the runs' epochs
FRAMES_PER_RUN = 40
MAX_SLIDER = 60  # slider positions at most (each is a picture of the whole figure inside the page)


@dataclass
class RunRecord:
    """What a compared run showed: its curves every epoch, its boundary over the validation
    points at some epochs, its final numbers."""

    name: str = ""
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    pictures: dict[int, np.ndarray] = field(default_factory=dict)
    # the network, as TensorFlow Playground draws it
    networks: dict[int, np.ndarray] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    members: int = 1
    classes: tuple[str, ...] = ()

    def picture_at(
        self, epoch: int, pictures: dict[int, np.ndarray] | None = None
    ) -> tuple[int, np.ndarray]:
        """The latest picture (of ``pictures``: the boundaries unless given) at or before
        ``epoch`` (the first one before it starts, the last one after it ends)."""
        pictures = self.pictures if pictures is None else pictures
        epochs = sorted(pictures)
        shown = max((e for e in epochs if e <= epoch), default=epochs[0])
        return shown, pictures[shown]


class RunRecorder(Callback):
    """Keeps what the comparison page shows of a run (rank zero): every epoch its published
    curves, at about ``FRAMES_PER_RUN`` epochs its decision boundary over the validation points,
    and after the test its results."""

    def __init__(self) -> None:
        self.record = RunRecord()
        self._every = 1
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._every = max(1, (trainer.max_epochs or FRAMES_PER_RUN) // FRAMES_PER_RUN)
        self.record.members = classifier(pl_module).members
        self.record.classes = trainer_data(trainer).class_legend()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        values = latest_values(trainer.callback_metrics)
        for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
            if name in values:
                self.record.curves.setdefault(name, []).append((epoch, values[name]))
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        if epoch % self._every == 0 or last or trainer.should_stop:
            self.record.pictures[epoch] = self._picture(trainer, pl_module)
            self.record.networks[epoch] = self._network(pl_module)

    def _picture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> np.ndarray:
        """The boundary over the validation points, as the TensorBoard frames draw it (a linear
        model's lines too)."""
        from circles.pictures.frames import render_panel
        from circles.pictures.grids import grid_axes, grid_boundaries, grid_predictions
        from circles.pictures.notes import MEMBER_LINES, draws_lines
        from circles.pictures.panels import BoundaryPanel

        points = trainer_data(trainer).points("val")
        assert points is not None  # validation has run by the end of a training epoch
        x = points[0].cpu().numpy()
        y = points[1].cpu().numpy()
        if self._grid is None:
            self._grid = grid_axes(x, 101)
        model = classifier(pl_module)
        probs, votes = grid_predictions(model, *self._grid)
        lines = grid_boundaries(model, *self._grid, MEMBER_LINES) if draws_lines(model) else None
        return render_panel(
            BoundaryPanel.of("", *self._grid, probs, x, y, votes=votes, boundaries=lines),
            "class",
            2,
            2,
        )

    def _network(self, pl_module: pl.LightningModule) -> np.ndarray:
        """The network's units over the plane and its weights (the first member's)."""
        from circles.pictures.grids import grid_layers
        from circles.pictures.network import network_image

        assert self._grid is not None  # the boundary's picture made it
        model = classifier(pl_module)
        weights = [w.detach().float().cpu().numpy() for w in model.layer_weights()]
        return network_image(grid_layers(model, *self._grid), weights, model.feature_names)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The best val acc, kept when the fit ends: a fit without its test has it too."""
        self._keep_final(trainer, "val/acc_best")

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._keep_final(trainer, "test/")

    def _keep_final(self, trainer: pl.Trainer, prefix: str) -> None:
        values = latest_values(trainer.callback_metrics)
        self.record.final.update({k: v for k, v in values.items() if k.startswith(prefix)})


def title_of(record: RunRecord) -> str:
    """What a run's column is headed with: its config and its test accuracy (with its spread over
    the members)."""
    acc = record.final.get("test/acc")
    std = record.final.get("test/acc_std")
    spread = f" ± {std:.3f} ({record.members} seeds)" if std is not None else ""
    return f"{record.name}\ntest acc {acc:.3f}{spread}" if acc is not None else record.name


def _figure(records: Sequence[RunRecord]) -> tuple[Any, Any]:
    """The comparison's figure and a function that shows it at an epoch: a boundary per run
    above, the accuracy and the loss curves of all runs below, the epoch marked on them."""
    from matplotlib.figure import Figure

    columns = max(2, len(records))
    figure = Figure(figsize=(3.2 * columns, 11.5), layout="constrained")
    grid = figure.add_gridspec(3, columns * 2, height_ratios=[1.15, 1.75, 1])
    pictures = [figure.add_subplot(grid[0, 2 * i : 2 * i + 2]) for i in range(len(records))]
    networks = [figure.add_subplot(grid[1, 2 * i : 2 * i + 2]) for i in range(len(records))]
    curves = [figure.add_subplot(grid[2, :columns]), figure.add_subplot(grid[2, columns:])]
    images = []
    marks = []
    for ax, drawn, record in [
        *((a, "pictures", r) for a, r in zip(pictures, records, strict=True)),
        *((a, "networks", r) for a, r in zip(networks, records, strict=True)),
    ]:
        images.append(
            ax.imshow(record.picture_at(0, getattr(record, drawn))[1], interpolation="antialiased")
        )
        ax.set_axis_off()
    for ax, metric, label in ((curves[0], "acc", "accuracy"), (curves[1], "loss", "loss")):
        _draw_curves(ax, records, metric, label)
        marks.append(ax.axvline(0, color="0.5", linewidth=1))
    curves[0].legend(fontsize=7, loc="lower right")

    def show(epoch: int) -> None:
        for ax, image, record in zip(pictures, images, records, strict=False):
            shown, picture = record.picture_at(epoch)
            image.set_data(picture)
            ax.set_title(f"{title_of(record)}\nepoch {shown}", fontsize=9)
        for image, record in zip(images[len(records) :], records, strict=True):
            image.set_data(record.picture_at(epoch, record.networks)[1])
        for mark in marks:
            mark.set_xdata([epoch, epoch])

    return figure, show


def _draw_curves(ax: Any, records: Sequence[RunRecord], metric: str, label: str) -> None:
    """Every run's train (dashed) and val (solid) curve of ``metric`` in its own colour; for the
    accuracy of runs on one data set, its Bayes-optimal limit."""
    for i, record in enumerate(records):
        for stage, style in (("train", "--"), ("val", "-")):
            points = record.curves.get(f"{stage}/{metric}", [])
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    style,
                    color=f"C{i}",
                    linewidth=1.4,
                    label=f"{record.name} ({stage})",
                )
    bayes = {
        record.final["test/bayes_acc"] for record in records if "test/bayes_acc" in record.final
    }
    if metric == "acc" and len(bayes) == 1:
        ax.axhline(bayes.pop(), color="k", linewidth=0.8, linestyle=":", label="Bayes-optimal")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)


def slider_epochs(records: Sequence[RunRecord]) -> list[int]:
    """The epochs the page's slider goes through: every run's pictures' epochs, at most
    ``MAX_SLIDER`` of them evenly taken, the first and the last always."""
    epochs = sorted({e for record in records for e in record.pictures})
    if len(epochs) <= MAX_SLIDER:
        return epochs
    keep = np.unique(np.linspace(0, len(epochs) - 1, MAX_SLIDER).round().astype(int))
    return [epochs[i] for i in keep]


def numbers_table(records: Sequence[RunRecord]) -> str:
    """The final numbers as an HTML table: best val acc, test acc with its spread and interval,
    the Bayes gap."""
    rows = []
    for record in records:
        f = record.final
        spread = (
            f" ± {num(f.get('test/acc_std'), 3)} (95% interval ± {num(f.get('test/acc_ci95'), 3)}, "
            f"from {num(f.get('test/acc_min'), 3)} to {num(f.get('test/acc_max'), 3)})"
            if "test/acc_std" in f
            else ""
        )
        cells = [
            record.name,
            str(record.members),
            num(f.get("val/acc_best")),
            num(f.get("test/acc")) + spread,
            num(f.get("test/bayes_acc")),
            num(f.get("test/bayes_gap")),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("config", "seeds", "best val acc", "test acc", "Bayes-optimal acc", "gap to it")
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


# matplotlib's player takes its buttons' icons from a font on the web; the page is to open offline:
# plain symbols.
ICONS = {
    "fa fa-minus": "\u2212",
    "fa fa-plus": "+",
    "fa fa-fast-backward": "\u25c2\u25c2",
    "fa fa-step-backward": "\u25c2",
    "fa fa-play fa-flip-horizontal": "\u25c0",
    "fa fa-pause": "\u25ae\u25ae",
    "fa fa-play": "\u25b6",
    "fa fa-step-forward": "\u25b8",
    "fa fa-fast-forward": "\u25b8\u25b8",
}


def offline(player: str) -> str:
    """The player's HTML with nothing fetched from elsewhere: no stylesheet link, its icons as
    symbols."""
    player = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*">', "", player)
    for icon, symbol in ICONS.items():
        player = player.replace(f'<i class="{icon}"></i>', symbol)
    return player


def write_page(records: Sequence[RunRecord], out: Path) -> tuple[Path, Path]:
    """``compare.html`` (the slider page, self-contained) and ``compare.png`` (the last epoch) in
    ``out``."""
    import matplotlib
    from matplotlib.animation import FuncAnimation

    figure, show = _figure(records)
    epochs = slider_epochs(records)
    animation = FuncAnimation(figure, lambda i: show(epochs[i]), frames=len(epochs), interval=150)
    # a few MB, not tens
    with matplotlib.rc_context({"animation.frame_format": "jpeg", "savefig.dpi": 72}):
        player = offline(animation.to_jshtml(fps=8, default_mode="once"))
    show(epochs[-1])
    png = out / "compare.png"
    save_figure(figure, png, dpi=80)
    names = ", ".join(record.name for record in records)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>circles: {html.escape(names)}</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: left; }}</style></head><body>
<h1>{html.escape(names)}</h1>
<p>Each picture is a run's decision boundary over its validation points (the colour of the class it
predicts; with several seeds, the share of them voting each class); under it the network as
TensorFlow Playground draws it (its first seed's): each unit's output over the plane, joined by
links as wide as their weights, blue positive, red negative. The slider moves every run to the same
epoch (a run that has ended shows its last). Below: accuracy and loss of every run, train dashed,
val solid.</p>
{numbers_table(records)}
{player}
</body></html>
"""
    page_path = out / "compare.html"
    with atomic_file(page_path, encoding="utf-8") as f:
        f.write(page)
    return page_path, png


@contextlib.contextmanager
def _reported_as(context: str) -> Iterator[None]:
    """Errors while inside (parsing, building, fitting, a CirclesError on its way up) say
    ``context`` first: which of the configs failed."""
    token = REPORT_CONTEXT.set(context)
    try:
        yield
    except CirclesError as err:
        text = str(err)
        if isinstance(err, Interrupted):  # a fit's own way on (--ckpt_path last) is not compare's
            quiet_destructors()
            text = re.sub(r" To continue, .*$", "", text) + (
                " The page was not written; run the compare again to fit every config anew."
            )
        report(text, err.kind)
        raise SystemExit(err.exit_code) from None
    finally:
        REPORT_CONTEXT.reset(token)


def run_config(config: str, extra: Sequence[str], out: Path) -> RunRecord:
    """Fit one config through the command line (its test follows), with a :class:`RunRecorder`;
    its record."""
    from circles.cli import CirclesCLI
    from circles.cli.reporting import quiet_lightning

    with quiet_lightning(), _reported_as(f"{config}: "):
        cli = CirclesCLI(
            args=[
                "fit",
                "--config",
                config,
                *extra,
                f"--trainer.default_root_dir={out}",
                "--trainer.callbacks+=circles.compare.RunRecorder",
            ]
        )
    (recorder,) = [cb for cb in trainer_callbacks(cli.trainer) if isinstance(cb, RunRecorder)]
    recorder.record.name = Path(config).stem
    if not recorder.record.pictures:
        raise ConfigError(
            "trainer.max_epochs",
            "at least 1 in a compare: its page shows each run over its epochs",
            cli.trainer.max_epochs,
            f"{config} trained none.",
        )
    return recorder.record


class _Parser(argparse.ArgumentParser):
    """Its errors as the command line's: one ``circles: error:`` line, exit status 2."""

    @override
    def error(self, message: str) -> NoReturn:
        from circles.errors import report

        report(f"compare: {message}")
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``circles compare CONFIG [CONFIG ...] [--out DIR] [options for every run]``; returns the
    exit status."""
    parser = _Parser(
        prog="circles compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "configs", nargs="+", help="the configs to train and compare, in the page's order"
    )
    parser.add_argument(
        "--out", default="compare", help="folder of the runs, the page and the picture"
    )
    args, extra = parser.parse_known_args(argv)
    missing = [c for c in args.configs if not os.path.isfile(c)]
    if missing:
        parser.error(f"no such config file: {', '.join(missing)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = try_lock(out / ".lock")  # one compare writes a page at a time
    if lock is None:
        raise RunInUse(
            f"{out} is being written by another compare (pid {(out / '.lock').read_text().strip()}"
            "): its page would replace this one's. Wait for it to end, or give another --out."
        )
    with lock:
        records = [run_config(config, extra, out) for config in args.configs]
        page, png = write_page(records, out)
    print(f"\nComparison: {page}  (opens offline in any browser)\nPicture: {png}", flush=True)
    return 0
