"""Sweeps: a grid of ordinary CLI runs, in parallel and resumable, compared in one table and one picture.

``python -m circles.sweep --config configs/sweeps/task.yaml [--jobs N] [--out DIR]`` (or ``circles-sweep``).
A sweep file names a base config and a grid over any CLI config keys in dotted form::

    base: ../relu.yaml                   # relative to this file, the working directory or the repository
    fixed:                               # overrides for every point
      data.test_samples: 100000
    grid:                                # one mapping: its cartesian product; a list of mappings: their union
      - model.activation: [none, relu]
        model.hidden_sizes: [[10], [10, 10]]
      - optimizer.class_path: [torch.optim.Adam]
        optimizer.init_args.lr: [0.01]
    columns: 4                           # optional: panels per row in boundaries.png

Every point is ``CirclesCLI(args=["fit", "--config", base, "--key=value", ...])`` followed by ``test`` of its
``checkpoints/last.ckpt`` on the same trainer, logged into its own run directory ``DIR/runs/<point name>`` (so
``tensorboard --logdir DIR`` compares the points in its HPARAMS tab). A point's ``result.json`` is written last;
a point that has one with status ``ok`` and the same settings is skipped when the sweep is run again. A failing
point is reported and the others go on; the exit status is 1 if any point failed. ``DIR/summary.csv``,
``DIR/summary.md`` and ``DIR/boundaries.png`` compare all points.

On a cluster, ``--list`` prints the points with their index, ``--point I`` runs only point I (one per SLURM
array task, see ``scripts/slurm/sweep_array.sbatch``) and ``--report`` rebuilds the outputs from finished points.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

RUNS = "runs"  # the TensorBoard logger's ``name``: run directories are DIR/runs/<point name>
RESULT = "result.json"  # written last: a point with one is finished
LOG = "output.log"  # everything a point printed
SWEEP_KEYS = {"base", "fixed", "grid", "columns"}
METRICS = ("val_acc_best", "test_acc", "bayes_acc", "bayes_gap")

# Name parts of well-known keys, in the order they appear in a point's name; other keys follow as ``<last><value>``.
_NAME_ORDER = ("data.dataset", "model.activation", "model.hidden_sizes", "optimizer.class_path", "optimizer.init_args.lr",
               "trainer.max_epochs", "data.noise", "data.factor", "data.n_samples", "seed_everything", "data.seed")
_PREFIX = {"data.dataset": "", "optimizer.init_args.lr": "lr", "trainer.max_epochs": "e", "data.noise": "n", "data.factor": "f",
           "data.n_samples": "N", "seed_everything": "s", "data.seed": "d"}
_HEADER = {"model.hidden_sizes": "hidden", "optimizer.class_path": "optimizer", "optimizer.init_args.lr": "lr",
           "trainer.max_epochs": "epochs", "seed_everything": "seed"}


class SweepError(ValueError):
    """A sweep file or command line that cannot be run; the message says what to change."""


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its index, its name (also its run directory) and the overrides of its grid."""

    index: int
    name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: the base config, the fixed overrides, the points and where their runs go."""

    path: Path
    base: Path
    fixed: dict[str, Any]
    points: list[Point]
    keys: list[str]  # every key some grid varies, in order of first appearance
    out: Path
    columns: Optional[int] = None

    def run_dir(self, point: Point) -> Path:
        """The point's run directory (its TensorBoard logger's ``log_dir``)."""
        return self.out / RUNS / point.name

    def overrides(self, point: Point) -> dict[str, Any]:
        """Everything the point sets on top of the base config: the fixed overrides, then its grid values."""
        return {**self.fixed, **point.settings}

    def cli_args(self, point: Point) -> list[str]:
        """The point's command line: ``fit`` with the base config, its overrides and its own run directory."""
        overrides = self.overrides(point)
        keys = sorted(overrides, key=lambda k: not k.endswith("class_path"))  # a class before its init_args
        return ["fit", "--config", str(self.base), *(f"--{k}={_cli_value(overrides[k])}" for k in keys),
                f"--trainer.logger.init_args.save_dir={self.out}", f"--trainer.logger.init_args.name={RUNS}",
                f"--trainer.logger.init_args.version={point.name}"]


def _cli_value(value: Any) -> str:
    """A value as jsonargparse reads it back: strings as they are, everything else as JSON (lists, null, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def _short(value: Any) -> str:
    """A compact, file-name-safe rendering of a value: ``[10, 10]`` -> ``10x10``, ``torch.optim.SGD`` -> ``SGD``."""
    if isinstance(value, (list, tuple)):
        text = "x".join(_short(v) for v in value) if value else "0"
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, str) and value.count(".") >= 1 and value.split(".")[-1][:1].isupper():
        text = value.rsplit(".", 1)[-1]  # a class path
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+]", "_", text)


def point_name(index: int, settings: dict[str, Any], width: int) -> str:
    """``03-relu-10x10-sgd0.1-e1000-n0.03``: the index, then the point's settings, well-known keys first."""
    keys = [k for k in _NAME_ORDER if k in settings] + [k for k in settings if k not in _NAME_ORDER]
    parts = []
    for key in keys:
        value = settings[key]
        if key == "model.activation":
            parts.append("linear" if value == "none" else _short(value))
        elif key == "model.hidden_sizes":
            parts.append(_short(value) if value else "nohidden")
        elif key == "optimizer.class_path":
            lr = settings.get("optimizer.init_args.lr")
            parts.append(_short(value).lower() + ("" if lr is None else _short(lr)))
        elif key == "optimizer.init_args.lr":
            if "optimizer.class_path" not in settings:
                parts.append("lr" + _short(value))
        else:
            parts.append(_PREFIX.get(key, key.rsplit(".", 1)[-1]) + _short(value))
    return "-".join([f"{index:0{width}d}", *parts])


def _resolve_base(base: Any, sweep_path: Path) -> Path:
    """The base config: absolute, or relative to the sweep file, the working directory or the repository."""
    if not isinstance(base, str) or not base:
        raise SweepError(f"{sweep_path}: 'base' must name a config file, got {base!r}.")
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(base)] if Path(base).is_absolute() else [sweep_path.parent / base, Path(base), repo / base]
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.normpath(candidate))
    raise SweepError(f"{sweep_path}: base config {base!r} not found (looked at {', '.join(map(str, candidates))}).")


def _dotted_mapping(value: Any, what: str, sweep_path: Path) -> dict[str, Any]:
    """``value`` checked to be a mapping of dotted config keys (``None`` is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SweepError(f"{sweep_path}: {what} must be a mapping of dotted config keys, got {value!r}.")
    return value


def load_sweep(path: str | Path, out: Optional[str | Path] = None) -> Sweep:
    """Parse a sweep file into its points; ``out`` defaults to ``sweeps/<file stem>`` in the working directory."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} not found.")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(SWEEP_KEYS)}.")
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; a sweep file has {sorted(SWEEP_KEYS)} "
                         "(config keys go under 'fixed' or 'grid').")
    base = _resolve_base(spec.get("base"), path)
    fixed = _dotted_mapping(spec.get("fixed"), "'fixed'", path)
    grids = spec.get("grid")
    grids = grids if isinstance(grids, list) else [grids]
    combos: list[dict[str, Any]] = []
    keys: list[str] = []
    for i, grid in enumerate(grids):
        grid = _dotted_mapping(grid, f"grid {i}", path)
        if not grid:
            raise SweepError(f"{path}: grid {i} names no config keys.")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{path}: grid {i}: {key} must be a non-empty list of values, got {values!r} "
                                 f"(a list value is itself listed: [[10, 10]]; one value for all points goes in 'fixed').")
            keys += [key] if key not in keys else []
        combos += [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    seen: set[str] = set()
    unique = []
    for combo in combos:  # the union of the sub-grids: a point listed twice runs once
        identity = json.dumps(combo, sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            unique.append(combo)
    if not unique:
        raise SweepError(f"{path}: the grid has no points.")
    columns = spec.get("columns")
    if columns is not None and (not isinstance(columns, int) or columns < 1):
        raise SweepError(f"{path}: 'columns' must be a positive integer, got {columns!r}.")
    width = max(2, len(str(len(unique) - 1)))
    points = [Point(i, point_name(i, combo, width), combo) for i, combo in enumerate(unique)]
    return Sweep(path, base, fixed, points, keys, Path(out) if out is not None else Path("sweeps") / path.stem, columns)


# -- running points ----------------------------------------------------------------------------------------------


def read_result(sweep: Sweep, point: Point) -> Optional[dict[str, Any]]:
    """The point's ``result.json``, if it has one for its current overrides (a stale one counts as none)."""
    path = sweep.run_dir(point) / RESULT
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("overrides") == _plain(sweep.overrides(point)) else None


def is_finished(sweep: Sweep, point: Point) -> bool:
    """Whether the point has a successful result for its current settings (and is skipped on a re-run)."""
    result = read_result(sweep, point)
    return result is not None and result.get("status") == "ok"


def _plain(value: Any) -> Any:
    """JSON-ready plain data (jsonargparse Namespaces become dicts, tuples lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.as_dict() if hasattr(v, "as_dict") else str(v)))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


_FD_STREAMS: list[Any] = []  # text streams over file descriptors 1 and 2, never closed


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send everything printed meanwhile (Python and C level, stdout and stderr) to the file ``path``.

    File descriptors 1 and 2 point at the file meanwhile, and ``sys.stdout``/``sys.stderr`` at streams over those
    descriptors, so a logging handler created meanwhile keeps a stream that stays open afterwards.
    """
    if not _FD_STREAMS:
        _FD_STREAMS.extend(open(fd, "w", buffering=1, closefd=False, errors="replace") for fd in (1, 2))
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        with contextlib.redirect_stdout(_FD_STREAMS[0]), contextlib.redirect_stderr(_FD_STREAMS[1]):
            yield
    finally:
        for stream in _FD_STREAMS:
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _error_line(log: Path) -> str:
    """The error a CLI printed before exiting (jsonargparse's ``error: ...``), from the point's log."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if "error:" in lines[i]), None)
    text = " ".join(line.strip() for line in lines[start:]) if start is not None else (lines[-1] if lines else "")
    return text[:500] or "the command line exited without a message"


def run_point(sweep: Sweep, point: Point) -> dict[str, Any]:
    """Fit the point through the CLI, test its ``last.ckpt`` into the same run, and write its ``result.json``.

    An earlier, unfinished or failed attempt in the run directory is removed first. Never raises for a failing
    point (KeyboardInterrupt aside): the result says ``failed`` with the error, and ``output.log`` has the rest.
    """
    run_dir = sweep.run_dir(point)
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished or stale attempt
    run_dir.mkdir(parents=True)
    result: dict[str, Any] = {"index": point.index, "name": point.name, "status": "failed", "error": None,
                              "overrides": _plain(sweep.overrides(point)), "settings": {}, "metrics": {},
                              "train_s": None, "test_s": None, "args": sweep.cli_args(point)}
    from circles.cli import CirclesCLI  # before the output goes to the log: logging handlers are made at import

    start = time.perf_counter()
    with _output_to(run_dir / LOG):
        try:
            with warnings.catch_warnings():  # passing ``args`` while sys.argv has the sweep's own options is the point
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                cli = CirclesCLI(args=result["args"])
            result["train_s"] = time.perf_counter() - start
            config = cli.config[cli.subcommand]
            result["settings"] = {key: _plain(config.get(key)) for key in sweep.keys}
            best = cli.trainer.checkpoint_callback.best_model_score
            metrics = {"val_acc_best": float(best) if best is not None else None}
            start = time.perf_counter()
            (tested,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False,
                                         ckpt_path=str(run_dir / "checkpoints" / "last.ckpt"))
            result["test_s"] = time.perf_counter() - start
            for name, tag in (("test_acc", "test/acc"), ("bayes_acc", "test/bayes_acc"),
                              ("bayes_gap", "test/bayes_gap"), ("test_loss", "test/loss")):
                metrics[name] = float(tested[tag]) if tag in tested else None
            result["metrics"] = metrics
            result["status"] = "ok"
        except SystemExit:  # jsonargparse printed why (a bad key or value) before exiting
            error = None
        except Exception as err:  # noqa: BLE001 - one failing point must not stop the others
            traceback.print_exc()
            error = " ".join([f"{type(err).__name__}:", *str(err).split()])[:500].rstrip(":")
        else:
            error = ""
    if result["status"] != "ok":
        result["error"] = error or _error_line(run_dir / LOG)
    _write_json(run_dir / RESULT, result)
    return result


def _init_worker(threads: int) -> None:
    """Give a worker process its share of the CPUs and pay the imports once, before its first point."""
    import torch

    import circles.cli  # noqa: F401

    torch.set_num_threads(threads)


def _cpus() -> int:
    """CPUs this process may use: the SLURM task's ``--cpus-per-task`` if set, else its CPU affinity."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _describe(result: dict[str, Any]) -> str:
    """A point's result in one line: its metrics and train time, or its error."""
    if result["status"] != "ok":
        return f"FAILED: {result['error']}"
    m = result["metrics"]
    return (f"ok  val {_num(m.get('val_acc_best'))}  test {_num(m.get('test_acc'))}  Bayes {_num(m.get('bayes_acc'))}"
            f"  gap {_num(m.get('bayes_gap'))}  {result['train_s']:.1f} s")


def run_points(sweep: Sweep, points: Sequence[Point], jobs: int = 1) -> list[dict[str, Any]]:
    """Run the unfinished ``points`` (``jobs`` at a time in spawned worker processes, in this one for 1) and
    print one line per point; finished points are skipped. Returns the results of the points run now."""
    todo = []
    for point in points:
        if is_finished(sweep, point):
            print(f"[skip] {point.name}: finished earlier", flush=True)
        else:
            todo.append(point)
    results: list[dict[str, Any]] = []
    if not todo:
        return results
    jobs = max(1, min(jobs, len(todo)))
    threads = max(1, _cpus() // jobs)
    print(f"Running {len(todo)} of {len(points)} points, {jobs} at a time, {threads} torch thread(s) each, "
          f"into {sweep.out}", flush=True)

    def report(result: dict[str, Any]) -> None:
        results.append(result)
        print(f"[{len(results):{len(str(len(todo)))}d}/{len(todo)}] {result['name']}  {_describe(result)}", flush=True)

    if jobs == 1:
        _init_worker(threads)
        for point in todo:
            report(run_point(sweep, point))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_point, sweep, point): point for point in todo}
        for future in as_completed(futures):
            point = futures[future]
            try:
                report(future.result())
            except Exception as err:  # noqa: BLE001 - the worker process died (killed, out of memory)
                report({"index": point.index, "name": point.name, "status": "failed",
                        "error": f"worker process failed: {type(err).__name__}: {err}"})
    return results


# -- the report --------------------------------------------------------------------------------------------------


def _num(value: Optional[float], digits: int = 4) -> str:
    """A number with ``digits`` decimals; empty for a missing one."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def collect(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per point of the sweep: its settings, metrics, train time and status (``missing`` if not run)."""
    rows = []
    for point in sweep.points:
        result = read_result(sweep, point) or {}
        overrides = sweep.overrides(point)
        settings = {key: result.get("settings", {}).get(key, overrides.get(key)) for key in sweep.keys}
        rows.append({"index": point.index, "point": point.name, "settings": settings,
                     "metrics": result.get("metrics") or {}, "train_s": result.get("train_s"),
                     "status": result.get("status", "missing"), "error": result.get("error") or ""})
    return rows


def write_csv(rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """``summary.csv``: one row per point, settings under their dotted keys (lists as JSON)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "point", *keys, *METRICS, "train_s", "status", "error"])
        for row in rows:
            settings = [json.dumps(row["settings"][k]) if isinstance(row["settings"][k], list) else
                        ("" if row["settings"][k] is None else row["settings"][k]) for k in keys]
            writer.writerow([row["index"], row["point"], *settings, *(_num(row["metrics"].get(m)) for m in METRICS),
                             _num(row["train_s"], 1), row["status"], row["error"]])


def _cell(key: str, value: Any) -> str:
    """A setting in the Markdown table: ``[10, 10]`` -> ``10x10``, ``torch.optim.SGD`` -> ``SGD``."""
    if value is None:
        return ""
    if key == "model.hidden_sizes" and isinstance(value, list):
        return "x".join(map(str, value)) if value else "none"
    return _short(value) if isinstance(value, (list, str)) and key.endswith("class_path") else str(value)


def markdown_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The summary as a Markdown table, plus the error of every failed point below it."""
    header = ["#", *(_HEADER.get(k, k.rsplit(".", 1)[-1]) for k in keys), "best val acc", "test acc", "Bayes acc",
              "gap", "train s", "status"]
    align = ["---:", *("---" for _ in keys), *("---:" for _ in range(5)), "---"]  # text left, numbers right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        m = row["metrics"]
        cells = [str(row["index"]), *(_cell(k, row["settings"][k]) for k in keys),
                 *(_num(m.get(name)) for name in METRICS), _num(row["train_s"], 1), row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        lines += ["", "Failed points:", ""] + [f"- `{row['point']}`: {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def draw_boundaries(sweep: Sweep, rows: list[dict[str, Any]], path: Path, dpi: int = 60, colors: int = 48) -> int:
    """``boundaries.png``: one decision-boundary panel per finished point over its validation points, titled
    with its name and test accuracy; a small palette PNG. Returns the number of panels."""
    import io

    import matplotlib
    from PIL import Image

    from circles.data import CirclesDataModule
    from circles.model import CirclesClassifier
    from circles.plotting import BoundaryPanel, boundary_figure, grid_axes, predict_grid

    panels = []
    for row in rows:
        if row["status"] != "ok":
            continue
        checkpoint = sweep.out / RUNS / row["point"] / "checkpoints" / "last.ckpt"
        model = CirclesClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                       compile_mode=None)
        data = CirclesDataModule.load_from_checkpoint(checkpoint, weights_only=True)
        data.setup("fit")
        xs, ys = grid_axes(data.val_x, resolution=101)
        parts = row["point"].split("-")
        half = (len(parts) + 2) // 2
        bayes = row["metrics"].get("bayes_acc")
        title = (f"{' '.join(parts[:half])}\n{' '.join(parts[half:])}\n"
                 f"test {_num(row['metrics'].get('test_acc'))}" + (f" (Bayes {_num(bayes)})" if bayes else ""))
        panels.append(BoundaryPanel.of(title, xs, ys, predict_grid(model, xs, ys), data.val_x, data.val_y))
    if not panels:
        path.unlink(missing_ok=True)
        return 0
    columns = sweep.columns or min(len(panels), math.ceil(math.sqrt(len(panels))))
    with matplotlib.rc_context({"axes.titlesize": 10, "xtick.labelsize": 7, "ytick.labelsize": 7}):
        figure = boundary_figure(panels, ncols=columns, panel_size=3.0,
                                 title=f"{sweep.path.name}: decision boundaries over each run's validation points")
        for axes in figure.axes:
            for points in axes.collections[1:]:  # the scatter drawn over the class regions
                points.set_sizes([6])
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return len(panels)


def write_report(sweep: Sweep) -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``summary.md`` and ``boundaries.png`` into the sweep directory from the points'
    results; returns the rows."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    rows = collect(sweep)
    write_csv(rows, sweep.keys, sweep.out / "summary.csv")
    done = sum(row["status"] == "ok" for row in rows)
    text = (f"# Sweep {sweep.path.name}\n\nBase config `{sweep.base}`; {len(rows)} points, {done} finished. "
            "Accuracies are fractions; gap = Bayes acc - test acc; train s = wall time of the fit command.\n\n"
            + markdown_table(rows, sweep.keys))
    tmp = sweep.out / f".summary.md.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, sweep.out / "summary.md")
    draw_boundaries(sweep, rows, sweep.out / "boundaries.png")
    return rows


# -- command line ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """The sweep runner's options."""
    parser = argparse.ArgumentParser(prog="circles-sweep", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", required=True, help="the sweep file (YAML)")
    parser.add_argument("--out", help="sweep directory (default: sweeps/<sweep file stem>)")
    parser.add_argument("--jobs", type=int, default=1, help="points run in parallel, each in its own process")
    parser.add_argument("--point", type=int, help="run only the point with this index (one SLURM array task)")
    parser.add_argument("--list", action="store_true", help="print the points, one per line: index, name, settings")
    parser.add_argument("--report", action="store_true", help="only rebuild the summary and boundaries.png")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a sweep from the command line; returns the exit status (0: every point ok, 1: some failed or
    missing, 2: a bad sweep file or option)."""
    args = _parser().parse_args(argv)
    try:
        if args.jobs < 1:
            raise SweepError(f"--jobs must be at least 1, got {args.jobs}.")
        sweep = load_sweep(args.config, args.out)
        if args.point is not None and not 0 <= args.point < len(sweep.points):
            raise SweepError(f"--point must be an index from 0 to {len(sweep.points) - 1} "
                             f"({len(sweep.points)} points), got {args.point}.")
    except SweepError as err:
        print(f"circles-sweep: error: {err}", file=sys.stderr)
        return 2
    if args.list:
        for point in sweep.points:
            print(f"{point.index}\t{point.name}\t{json.dumps(point.settings)}")
        return 0
    start = time.perf_counter()
    if args.point is not None:
        results = run_points(sweep, [sweep.points[args.point]])
        return int(any(r["status"] != "ok" for r in results))
    if not args.report:
        run_points(sweep, sweep.points, args.jobs)
    rows = write_report(sweep)
    bad = [row for row in rows if row["status"] != "ok"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} points finished"
          + (f"; not ok: {', '.join(row['point'] + ' (' + row['status'] + ')' for row in bad)}" if bad else "")
          + f". Wall time {time.perf_counter() - start:.1f} s.")
    print(f"Summary: {sweep.out / 'summary.md'} and {sweep.out / 'summary.csv'}; "
          f"boundaries: {sweep.out / 'boundaries.png'}\nCompare the runs: tensorboard --logdir {sweep.out}")
    return int(bool(bad))


if __name__ == "__main__":
    raise SystemExit(main())
