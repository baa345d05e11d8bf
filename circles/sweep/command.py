"""The sweep runner's command line: ``python -m circles.sweep`` / ``circles-sweep``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence

from circles.sweep.spec import Point, Sweep, SweepError, load_sweep

OPTIONS = (
    ("--config", {"required": True, "help": "the sweep file (YAML)"}),
    ("--out", {"help": "sweep directory (default: sweeps/<sweep file stem>)"}),
    (
        "--jobs",
        {"type": int, "default": 1, "help": "points run in parallel, each in its own process"},
    ),
    ("--point", {"type": int, "help": "run only the point with this index (one SLURM array task)"}),
    (
        "--list",
        {"action": "store_true", "help": "print the points, one per line: index, name, settings"},
    ),
    ("--report", {"action": "store_true", "help": "only rebuild the summary and boundaries.png"}),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sweep from the command line; returns the exit status (0: every point ok, 1: some
    failed or missing, or a file could not be written, 2: a bad sweep file or option, 130/143:
    stopped by Ctrl-C/SIGTERM)."""
    from circles.sweep import __doc__ as doc

    parser = argparse.ArgumentParser(prog="circles-sweep", description=doc.split("\n", 1)[0])
    for option, settings in OPTIONS:
        parser.add_argument(option, **settings)
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise SweepError(f"--jobs must be at least 1, got {args.jobs}.")
        sweep = load_sweep(args.config, args.out)
        if args.point is not None and not 0 <= args.point < len(sweep.points):
            raise SweepError(
                f"--point must be an index from 0 to {len(sweep.points) - 1} "
                f"({len(sweep.points)} points), got {args.point}."
            )
        if args.list:
            print("\n".join(f"{p.index}\t{p.name}\t{json.dumps(p.settings)}" for p in sweep.points))
            return 0
        points = sweep.points if args.point is None else [sweep.points[args.point]]
        if not args.report:
            from circles.sweep.runner import check_no_other_points

            check_no_other_points(sweep, points)
        sweep.out.mkdir(parents=True, exist_ok=True)
    except SweepError as err:
        print(f"circles-sweep: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out is a file, or under a folder that cannot be written
        print(
            f"circles-sweep: error: --out {sweep.out} cannot hold the sweep: "
            f"{err.strerror or err}.",
            file=sys.stderr,
        )
        return 2
    try:
        return _run(sweep, points, args)
    except OSError as err:  # a full disk, a folder that stopped being writable
        from circles.errors import os_error_text

        print(f"circles-sweep: error: {os_error_text(err)}", file=sys.stderr)
        return 1


def _run(sweep: Sweep, points: list[Point], args: argparse.Namespace) -> int:
    """Run the points (unless ``--report``), then, for a whole sweep, write and name its report."""
    from circles.runs.logger import tensorboard_command
    from circles.sweep.report import write_report
    from circles.sweep.runner import Stopped, checked_result, run_points

    start = time.perf_counter()
    try:
        if args.point is not None:
            return int(any(r["status"] != "ok" for r in run_points(sweep, points)))
        if not args.report:
            run_points(sweep, points, args.jobs)
    except Stopped as stop:
        interrupted = [
            p.name for p in points if checked_result(sweep, p).get("status") == "interrupted"
        ]
        print(
            "circles-sweep: stopped by "
            + (
                "Ctrl-C (SIGINT)"
                if stop.signum == signal.SIGINT
                else signal.Signals(stop.signum).name
            )
            + (
                f"; interrupted: {', '.join(interrupted)} (run the same command again to continue "
                "them from their last.ckpt and run the rest)"
                if interrupted
                else "; run the same command again to run the rest"
            )
            + ". The summary was not rebuilt (--report rebuilds it).",
            file=sys.stderr,
            flush=True,
        )
        return 128 + stop.signum
    rows = write_report(sweep)
    bad = [f"{row['point']} ({row['status']})" for row in rows if row["status"] != "ok"]
    print(
        f"\n{len(rows) - len(bad)} of {len(rows)} points finished"
        + (f"; not ok: {', '.join(bad)}" if bad else "")
        + f". Wall time {time.perf_counter() - start:.1f} s."
    )
    picture, layers = sweep.out / "boundaries.png", sweep.out / "layers.png"
    print(
        f"Summary: {sweep.out / 'summary.md'} and {sweep.out / 'summary.csv'}"
        + (f"; boundaries: {picture}" if picture.is_file() else " (no finished point to draw)")
        + (f"; layers: {layers}" if sweep.layers and layers.is_file() else "")
        + f"\nCompare the runs: {tensorboard_command(str(sweep.out))}"
    )
    return int(bool(bad))
