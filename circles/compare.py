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
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import numpy as np
import yaml
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.cli import CirclesCLI, run_cli
from circles.contracts import classifier, trainer_data
from circles.errors import (
    REPORT_CONTEXT,
    CirclesError,
    ConfigError,
    Interrupted,
    quiet_destructors,
    quiet_lightning,
    report,
)
from circles.pictures.lesson_page import RunRecord, last_epoch_figure, page_html
from circles.runs.directory import (
    BOUNDARY_TEST_PNG,
    CONFIG,
    InputError,
    atomic_file,
    save_figure,
    try_lock,
)
from circles.runs.logger import DEFAULT_RUNS, tensorboard_of
from circles.runs.record import flattened

# the page's pictures of a run, as a compare's fit writes them into its TensorBoard events
COMPARE_TAGS = ("compare/boundary", "compare/network", "compare/layers")
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
    """Writes what the comparison page shows of a run into its TensorBoard events (rank zero), at
    the :func:`pictured` epochs and its last (``COMPARE_TAGS``), so that the page, read back from
    the run's directory (:func:`record_of_run`), is the same on the fit and on any compare that
    shows the run again."""

    _grid: tuple[np.ndarray, np.ndarray] | None = None  # the grid of the first picture

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if tensorboard_of(trainer.loggers) is None:
            raise ConfigError(
                "trainer.logger",
                "a TensorBoard logger in a compare: its page is read from the runs' events",
                type(trainer.logger).__name__ if trainer.logger else False,
            )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At a pictured epoch, the boundary over the validation points as the TensorBoard frames
        draw it (a linear model's lines too), the network's units over the plane and its weights,
        and what each hidden layer does to the plane and the training points (the network and the
        layers the first member's)."""
        from circles.pictures.frames import render_panel
        from circles.pictures.grids import grid_axes, grid_boundaries, grid_layers, grid_predictions
        from circles.pictures.layers import layers_picture
        from circles.pictures.network import network_image
        from circles.pictures.notes import MEMBER_LINES, draws_lines
        from circles.pictures.panels import BoundaryPanel

        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        if not trainer.is_global_zero or not (pictured(epoch) or last or trainer.should_stop):
            return
        val, train = trainer_data(trainer).points("val"), trainer_data(trainer).points("train")
        assert val is not None and train is not None  # validation has run by the epoch's end
        x, y = (t.cpu().numpy() for t in val)
        self._grid = self._grid or grid_axes(x, 101)
        model = classifier(pl_module)
        probs, votes = grid_predictions(model, *self._grid)
        lines = grid_boundaries(model, *self._grid, MEMBER_LINES) if draws_lines(model) else None
        panel = BoundaryPanel.of("", *self._grid, probs, x, y, votes=votes, boundaries=lines)
        weights = [w.detach().float().cpu().numpy() for w in model.layer_weights()]
        network = network_image(grid_layers(model, *self._grid), weights, model.feature_names)
        x, y = (t.cpu().numpy() for t in train)
        layers = layers_picture(model, x, y, self._grid, f"epoch {epoch}")
        writer = tensorboard_of(trainer.loggers).experiment  # type: ignore[union-attr]
        for tag, image in zip(
            COMPARE_TAGS, (render_panel(panel, "class", 2, 2), network, layers), strict=True
        ):
            writer.add_image(tag, image, global_step=epoch, dataformats="HWC")


def run_config(config: str, extra: Sequence[str], out: Path, fresh: bool = False) -> RunRecord:
    """Fit one config through the command line (its test follows), with a :class:`RunRecorder`;
    its record. Unless ``fresh``, a finished run of its settings (:func:`finished_run`) is shown
    from what it wrote instead, and the output says so."""
    with quiet_lightning():
        token = REPORT_CONTEXT.set(f"{config}: ")  # the errors say which config failed
        try:
            run = None if fresh else finished_run(config, extra, out)
            record = record_of_run(run, Path(config).stem) if run is not None else RunRecord()
            if record.pictures:  # else the page needs the boundaries a fit draws
                print(
                    f"{config}: shown from {run}, a finished run of its settings (--fresh trains "
                    "it anew)",
                    flush=True,
                )
                return record
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
                    " The page was not written; run the compare again: it shows the runs that "
                    "finished and fits the others anew."
                )
            report(text, err.kind)
            raise SystemExit(err.exit_code) from None
        finally:
            REPORT_CONTEXT.reset(token)
    record = record_of_run(Path(str(cli.trainer.log_dir)), Path(config).stem)
    if not record.pictures:
        raise ConfigError(
            "trainer.max_epochs",
            "at least 1 in a compare: its page shows each run over its epochs",
            cli.trainer.max_epochs,
            f"{config} trained none.",
        )
    return record


class _Parsed(BaseException):  # noqa: N818 - a result, past LightningCLI and its error handling
    """The settings :class:`_ParseOnly` read (:func:`fit_settings`)."""


class _ParseOnly(CirclesCLI):
    """The command line's parser on a fit's arguments, building nothing (no seed set, no run)."""

    @override
    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        raise _Parsed(fit_settings(yaml.safe_load(parser.dump(self.config, skip_none=False))))


# where a run went, not what it trained (the logger's options change no number either)
PLACEMENT = ("config", "ckpt_path", "weights_only", "trainer.default_root_dir", "trainer.logger")


def fit_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A fit's resolved config (as its ``config.yaml`` has it) flat, less ``PLACEMENT`` and
    compare's own recorder: two runs with equal settings train the same numbers."""
    flat = {k: v for k, v in flattened(config).items() if not k.startswith(PLACEMENT)}
    recorded = flat.get("trainer.callbacks.") or []
    return flat | {
        "trainer.callbacks.": [c for c in recorded if "RunRecorder" not in str(c)] or None
    }


def finished_run(config: str, extra: Sequence[str], out: Path) -> Path | None:
    """The newest run in ``out``'s runs, then in the working folder's (``lightning_logs``), that
    trained what a fit of ``config`` with ``extra`` would and finished (its fit was tested: it
    drew the test's picture); None if there is none. The settings are read as the command line
    reads them (every default resolved), and nothing is built."""
    try:
        run_cli(args=["--config", config, *extra], run=False, cli=_ParseOnly)
    except _Parsed as parsed:
        wanted = parsed.args[0]
    roots = [
        root for root in dict.fromkeys([out / DEFAULT_RUNS, Path(DEFAULT_RUNS)]) if root.is_dir()
    ]
    return next(
        (
            run
            for run in [run for root in roots for run in sorted(root.iterdir(), reverse=True)]
            if (run / BOUNDARY_TEST_PNG).is_file()
            and (run / CONFIG).is_file()
            and fit_settings(yaml.safe_load((run / CONFIG).read_text()) or {}) == wanted
        ),
        None,
    )


def record_of_run(run_dir: Path, name: str | None = None) -> RunRecord:
    """A run already trained, read back from its directory as TensorBoard shows it: its curves
    and final numbers, and as its pictures the decision-boundary frames it wrote (with its network
    and its layers' maps where ``boundary.show_network`` and ``boundary.show_layers`` wrote
    them)."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from circles.callbacks.boundary import DecisionBoundaryCallback
    from circles.model.metrics import METRICS

    record = RunRecord(name=name or run_dir.name)
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    for metric in METRICS:
        if metric.tag not in events.Tags()["scalars"]:
            continue
        points = [(event.step, event.value) for event in events.Scalars(metric.tag)]
        if metric.curve:
            record.curves[metric.name] = points
        else:
            record.final[metric.name] = points[-1][1]
    config = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    record.members = int(((config or {}).get("model") or {}).get("members") or 1)
    # a compare's fit wrote the page's own pictures; any other run, its TensorBoard frames
    tags = (
        COMPARE_TAGS
        if COMPARE_TAGS[0] in events.Tags()["images"]
        else (DecisionBoundaryCallback.TAG, "network/weights", "layers/plane")
    )
    for tag, kept in zip(tags, (record.pictures, record.networks, record.layers), strict=True):
        if tag in events.Tags()["images"]:
            kept.update(
                {
                    image.step: np.asarray(
                        Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")
                    )
                    for image in events.Images(tag)
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
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="train every config, even where a finished run of its settings is in OUT's runs or "
        "./lightning_logs (without it such a run is shown from what it wrote)",
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
    lock = try_lock(out / ".lock")  # one compare writes a page at a time (it makes out too)
    if lock is None:
        raise InputError(
            f"{out} is being written by another compare (pid {(out / '.lock').read_text().strip()}"
            "): its page would replace this one's. Wait for it to end, or give another --out."
        )
    with lock:
        records = [trained.get(c) or run_config(c, extra, out, args.fresh) for c in args.configs]
        # the slider page, self-contained (circles.pictures.lesson_page), and the last epoch
        text = page_html(records)
        png = out / "compare.png"
        save_figure(last_epoch_figure(records), png, dpi=80)
        page = out / "compare.html"
        with atomic_file(page, encoding="utf-8") as f:
            f.write(text)
    print(f"\nComparison: {page}  (opens offline in any browser)\nPicture: {png}", flush=True)
    return 0
