"""The lesson side by side: ``circles compare CONFIG [CONFIG ...]`` trains each config through the
command line and writes one self-contained HTML page (every picture inside it, so it opens offline
in any browser) with the decision boundaries side by side under one epoch slider, the train and val
curves overlaid, and the final numbers with their spread over the members and the best accuracy
possible; and the same at the last epoch as one PNG::

    circles compare configs/linear.yaml configs/relu.yaml configs/improved.yaml
    circles compare configs/linear.yaml configs/relu.yaml --model.members 16 --out lesson

Options after the configs (``--model.members 16``, ``--trainer.max_epochs 300``) go to every run.
The runs are ordinary runs, in ``OUT/lightning_logs`` (TensorBoard shows them too); the page is
``OUT/compare.html``, the picture ``OUT/compare.png``. A run directory in place of a config is not
trained again: the page shows what it wrote (its curves, its numbers, its TensorBoard frames)::

    circles compare lightning_logs/0000-relu-10x10-sgd0.1-e1000-circles configs/improved.yaml"""

from __future__ import annotations

import argparse
import html
import io
import os
import re
from collections.abc import Sequence
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
from circles.pictures.lesson_page import RunRecord, draw_curves, page_html
from circles.runs.directory import InputError, atomic_file, save_figure, try_lock

# after the first ten epochs, a run is pictured at these times each power of ten
PICTURED_LEADS = (10, 12, 15, 20, 25, 30, 40, 50, 60, 80)


def pictured(epoch: int) -> bool:
    """Whether a compared run is pictured at ``epoch`` (besides its last): each of the first ten,
    then 10, 12, 15, 20, 25, 30, 40, 50, 60 and 80 times each power of ten (10, 12, 15, ..., 80,
    100, 120, ...). Every run is pictured at the same epochs, whatever its length, more often
    early, when its boundary moves most: about 30 pictures in 1000 epochs."""
    if epoch < 10:
        return epoch >= 0
    scale = 10 ** (len(str(epoch)) - 2)
    lead, rest = divmod(epoch, scale)
    return rest == 0 and lead in PICTURED_LEADS


class RunRecorder(Callback):
    """Keeps what the comparison page shows of a run (rank zero): every epoch its published
    curves, at the :func:`pictured` epochs and its last its pictures, and after the test its
    results."""

    def __init__(self) -> None:
        self.record = RunRecord()
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record.members = classifier(pl_module).members

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The curves; at a pictured epoch, the boundary over the validation points as the
        TensorBoard frames draw it (a linear model's lines too), the network's units over the plane
        and its weights, and what each hidden layer does to the plane and the training points (the
        network and the layers the first member's)."""
        from circles.pictures.frames import render_panel
        from circles.pictures.grids import grid_axes, grid_boundaries, grid_layers, grid_predictions
        from circles.pictures.layers import layers_picture
        from circles.pictures.network import network_image
        from circles.pictures.notes import MEMBER_LINES, draws_lines
        from circles.pictures.panels import BoundaryPanel

        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        values = latest_values(trainer.callback_metrics)
        for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
            if name in values:
                self.record.curves.setdefault(name, []).append((epoch, values[name]))
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        if not (pictured(epoch) or last or trainer.should_stop):
            return
        val, train = trainer_data(trainer).points("val"), trainer_data(trainer).points("train")
        assert val is not None and train is not None  # validation has run by the epoch's end
        x, y = (t.cpu().numpy() for t in val)
        self._grid = self._grid or grid_axes(x, 101)
        model = classifier(pl_module)
        probs, votes = grid_predictions(model, *self._grid)
        lines = grid_boundaries(model, *self._grid, MEMBER_LINES) if draws_lines(model) else None
        panel = BoundaryPanel.of("", *self._grid, probs, x, y, votes=votes, boundaries=lines)
        self.record.pictures[epoch] = render_panel(panel, "class", 2, 2)
        weights = [w.detach().float().cpu().numpy() for w in model.layer_weights()]
        outputs = grid_layers(model, *self._grid)
        self.record.networks[epoch] = network_image(outputs, weights, model.feature_names)
        x, y = (t.cpu().numpy() for t in train)
        self.record.layers[epoch] = layers_picture(model, x, y, self._grid, f"epoch {epoch}")

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The best val acc, kept when the fit ends: a fit without its test has it too."""
        self.on_test_end(trainer, pl_module, "val/acc_best")

    @override
    def on_test_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str = "test/"
    ) -> None:
        """Keeps the final numbers whose names start with ``prefix``: the test's."""
        values = latest_values(trainer.callback_metrics)
        self.record.final.update({k: v for k, v in values.items() if k.startswith(prefix)})


def final_line(record: RunRecord) -> str:
    """A run's final result in one line: its test accuracy (with its spread over the members) and
    its best validation accuracy."""
    f = record.final
    parts = []
    if "test/acc" in f:
        spread = (
            f" ± {f['test/acc_std']:.3f} ({record.members} seeds)" if "test/acc_std" in f else ""
        )
        parts.append(f"test acc {f['test/acc']:.3f}{spread}")
    if "val/acc_best" in f:
        parts.append(f"best val acc {f['val/acc_best']:.3f}")
    return ", ".join(parts) or "not tested"


def _figure(records: Sequence[RunRecord]) -> Any:
    """The comparison at each run's last epoch as one figure: a boundary per run above its
    network, the accuracy and the loss curves of all runs below."""
    from matplotlib.figure import Figure

    columns = max(2, len(records))
    figure = Figure(figsize=(3.2 * columns, 11.5), layout="constrained")
    grid = figure.add_gridspec(3, columns * 2, height_ratios=[1.15, 1.75, 1])
    for i, record in enumerate(records):
        last = max(record.pictures)
        top = figure.add_subplot(grid[0, 2 * i : 2 * i + 2])
        top.imshow(record.pictures[last], interpolation="antialiased")
        top.set_title(f"{record.name}, epoch {last}\n{final_line(record)}", fontsize=9)
        below = figure.add_subplot(grid[1, 2 * i : 2 * i + 2])
        if record.networks:
            below.imshow(record.networks[max(record.networks)], interpolation="antialiased")
        for ax in (top, below):
            ax.set_axis_off()
    accuracy = figure.add_subplot(grid[2, :columns])
    draw_curves(accuracy, records, "acc", "accuracy")
    accuracy.legend(fontsize=7, loc="lower right")
    draw_curves(figure.add_subplot(grid[2, columns:]), records, "loss", "loss")
    return figure


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
    heads = ("run", "seeds", "best val acc", "test acc", "Bayes-optimal acc", "gap to it")
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr>{''.join(rows)}</table>"


def run_config(config: str, extra: Sequence[str], out: Path) -> RunRecord:
    """Fit one config through the command line (its test follows), with a :class:`RunRecorder`;
    its record."""
    from circles.cli import run_cli
    from circles.errors import quiet_lightning

    with quiet_lightning():
        token = REPORT_CONTEXT.set(f"{config}: ")  # the errors say which config failed
        try:
            cli = run_cli(
                args=[
                    "fit",
                    "--config",
                    config,
                    *extra,
                    f"--trainer.default_root_dir={out}",
                    "--trainer.callbacks+=circles.compare.RunRecorder",
                ]
            )
        except CirclesError as err:
            text = str(err)
            if isinstance(err, Interrupted):  # a fit's own way on (--ckpt_path) is not compare's
                quiet_destructors()
                text = re.sub(r" To continue, .*$", "", text) + (
                    " The page was not written; run the compare again to fit every config anew."
                )
            report(text, err.kind)
            raise SystemExit(err.exit_code) from None
        finally:
            REPORT_CONTEXT.reset(token)
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


def record_of_run(run_dir: Path) -> RunRecord:
    """A run already trained, read back from its directory as TensorBoard shows it: its curves
    and final numbers, and as its pictures the decision-boundary frames it wrote (with its network
    and its layers' maps where ``boundary.show_network`` and ``boundary.show_layers`` wrote
    them)."""
    import yaml
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from circles.callbacks.boundary import DecisionBoundaryCallback
    from circles.model.metrics import METRICS, STAGES
    from circles.runs.directory import CONFIG

    def events(sub: str = "") -> Any:
        return EventAccumulator(str(run_dir / sub), size_guidance={"images": 0, "scalars": 0})

    record = RunRecord(name=run_dir.name)
    stages = {stage: events(stage).Reload() for stage in STAGES if (run_dir / stage).is_dir()}
    for metric in METRICS:
        found = stages.get(metric.stage)
        if found is None or metric.tag not in found.Tags()["scalars"]:
            continue
        points = [(event.step, event.value) for event in found.Scalars(metric.tag)]
        if metric.curve and metric.stage != "test":
            record.curves[metric.name] = points
        else:
            record.final[metric.name] = points[-1][1]
    config = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    record.members = int(((config or {}).get("model") or {}).get("members") or 1)
    root = events().Reload()
    for tag, kept in (
        (DecisionBoundaryCallback.TAG, record.pictures),
        ("network/weights", record.networks),
        ("layers/plane", record.layers),
    ):
        if tag in root.Tags()["images"]:
            kept.update(
                {
                    image.step: np.asarray(
                        Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")
                    )
                    for image in root.Images(tag)
                }
            )
    return record


class _Parser(argparse.ArgumentParser):
    """Its errors as the command line's: one ``circles: error:`` line, exit status 2."""

    @override
    def error(self, message: str) -> NoReturn:
        report(f"compare: {message}")
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``circles compare CONFIG_OR_RUN [...] [--out DIR] [options for every config's run]``;
    returns the exit status."""
    parser = _Parser(
        prog="circles compare",
        description=__doc__.split("\n\n")[0].replace("``", "").rstrip(":") + ".",
        epilog="\n\n".join(__doc__.replace("``", "").split("\n\n")[1:]).replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "configs",
        nargs="+",
        metavar="CONFIG_OR_RUN",
        help="in the page's order: configs to train, or run directories already trained (shown "
        "from what they wrote: their curves, numbers and TensorBoard frames)",
    )
    parser.add_argument(
        "--out", default="compare", help="folder of the runs, the page and the picture"
    )
    args, extra = parser.parse_known_args(argv)
    runs = [c for c in args.configs if os.path.isdir(c)]
    for wrong, problem in (
        (
            [c for c in args.configs if not os.path.exists(c)],
            "no such config file or run directory",
        ),
        (
            [r for r in runs if not list(Path(r).glob("events.out.tfevents.*"))],
            "not a run directory (no TensorBoard events in it)",
        ),
    ):
        if wrong:
            parser.error(f"{problem}: {', '.join(wrong)}")
    if extra and len(runs) == len(args.configs):
        parser.error(
            f"{' '.join(extra)}: options go to the configs' runs, and there is none (a run "
            "directory is shown as it was trained)"
        )
    trained = {run: record_of_run(Path(run)) for run in runs}
    unseen = [run for run, record in trained.items() if not record.pictures]
    if unseen:
        parser.error(
            f"no decision-boundary frames in the TensorBoard events of {', '.join(unseen)}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = try_lock(out / ".lock")  # one compare writes a page at a time
    if lock is None:
        raise InputError(
            f"{out} is being written by another compare (pid {(out / '.lock').read_text().strip()}"
            "): its page would replace this one's. Wait for it to end, or give another --out."
        )
    with lock:
        records = [trained[c] if c in trained else run_config(c, extra, out) for c in args.configs]
        # the slider page, self-contained (circles.pictures.lesson_page), and the last epoch
        text = page_html(records, numbers_table(records), [final_line(r) for r in records])
        png = out / "compare.png"
        save_figure(_figure(records), png, dpi=80)
        page = out / "compare.html"
        with atomic_file(page, encoding="utf-8") as f:
            f.write(text)
    print(f"\nComparison: {page}  (opens offline in any browser)\nPicture: {png}", flush=True)
    return 0
