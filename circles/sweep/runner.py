"""Running a sweep's points: each an ordinary CLI run in its own run directory, in parallel
worker processes, resumable, and stopped whole by SIGTERM or Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from circles.cli import run_cli  # before a point's output goes to its log: handlers made at import
from circles.errors import CirclesError, Interrupted, os_error_text, quiet_lightning
from circles.model.metrics import METRICS, latest_values, num
from circles.model.regions import enclosed_members
from circles.runs.checkpoints import load_checkpoint_file
from circles.runs.directory import atomic_file, try_lock
from circles.sweep.spec import Point, Sweep, SweepError

POINT = "point.json"  # written first: the point's identity (every setting), before anything trains
RESULT = "result.json"  # written last: a point with one is finished, failed or interrupted
LOG = "output.log"  # everything a point printed
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: the terminal closed


class Stopped(BaseException):
    """SIGTERM or Ctrl-C (its number: ``signum``) stopped the sweep. A BaseException, so that the
    ``except Exception`` around a point does not take it for that point failing."""

    @property
    def signum(self) -> int:
        return self.args[0]


# this process: the signal that stopped it; a point runs
_state: dict[str, Any] = {"stopped": None, "running": False}


def _on_signal(signum: int, frame: Any) -> None:
    _state["stopped"] = _state["stopped"] or signum
    if not _state["running"] and multiprocessing.parent_process() is not None:
        raise SystemExit(128 + signum)  # an idle worker just ends
    raise Stopped(signum)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """JSON-ready plain data (jsonargparse Namespaces become dicts, tuples lists)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.as_dict() if hasattr(v, "as_dict") else str(v))
    )


def holds_other_point(sweep: Sweep, point: Point) -> dict[str, Any] | None:
    """The identity recorded in the point's run directory when it is another point's (other
    settings under the same name, e.g. another sweep file with other ``fixed:`` settings into the
    same ``--out``); else None."""
    recorded = _json(sweep.run_dir(point) / POINT)
    return None if recorded in (None, sweep.identity(point)) else recorded


def check_no_other_points(sweep: Sweep, points: Sequence[Point]) -> None:
    """Refuse to run points whose run directories hold other points' work: nothing of it is ever
    deleted."""
    if others := [(p, found) for p in points if (found := holds_other_point(sweep, p)) is not None]:
        point, found = others[0]
        mine, theirs = sweep.identity(point), found.get("overrides", {})
        differ = sorted(
            k for k in {**mine["overrides"], **theirs} if mine["overrides"].get(k) != theirs.get(k)
        )
        if (
            found.get("base_sha256", mine["base_sha256"]) != mine["base_sha256"]
            or found.get("base") != mine["base"]
        ):
            differ.insert(0, f"base config {found.get('base')}")
        raise SweepError(
            f"{sweep.run_dir(point)} holds another point's run (differing: {', '.join(differ)})"
            + (f", and {len(others) - 1} more point(s) do too" if len(others) > 1 else "")
            + "; nothing was run. Give this sweep its own --out, or remove those runs."
        )


def _damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be loaded, or None when it is whole (a point killed while
    writing it keeps the previous one: checkpoints are replaced whole)."""
    try:
        load_checkpoint_file(checkpoint)
    except CirclesError as err:
        return str(err)
    return None


def checked_result(sweep: Sweep, point: Point) -> dict[str, Any]:
    """The point's ``result.json`` if it has one and it is this point's (see
    :func:`holds_other_point`), else {}; a finished point whose ``last.ckpt`` has since gone
    missing or been damaged is marked ``damaged`` (its numbers stand, its model does not: a
    re-run trains it again)."""
    result = _json(sweep.run_dir(point) / RESULT)
    if not isinstance(result, dict) or holds_other_point(sweep, point) is not None:
        return {}
    damage = result.get("status") == "ok" and _damage(
        sweep.run_dir(point) / "checkpoints" / "last.ckpt"
    )
    return {**result, "status": "damaged", "error": f"{point.name}: {damage}"} if damage else result


def is_finished(sweep: Sweep, point: Point) -> bool:
    """Whether the point has a successful result for its current settings and its checkpoint is
    whole (then it is skipped on a re-run)."""
    return checked_result(sweep, point).get("status") == "ok"


# text streams over file descriptors 1 and 2, never closed
_FD_STREAMS = [open(fd, "w", buffering=1, closefd=False, errors="replace") for fd in (1, 2)]


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send everything printed meanwhile (Python and C level, stdout and stderr) to the file
    ``path``: file descriptors 1 and 2 point at it, and ``sys.stdout``/``sys.stderr`` at streams
    over those descriptors, so a logging handler created meanwhile keeps a stream that stays open
    afterwards."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    try:
        with contextlib.redirect_stdout(_FD_STREAMS[0]), contextlib.redirect_stderr(_FD_STREAMS[1]):
            yield
    finally:
        for fd, old in zip((1, 2), saved, strict=True):
            _FD_STREAMS[fd - 1].flush()
            os.dup2(old, fd)
            os.close(old)


def run_point(sweep: Sweep, point: Point) -> dict[str, Any] | None:
    """Fit the point through the CLI (which tests the final weights into the same run), and write
    its ``result.json``.

    A point interrupted earlier (stopped, or killed before it wrote a result) continues from its
    ``last.ckpt``; any other earlier attempt of this point in the run directory is removed first
    (another point's is never: see :func:`check_no_other_points`). Never raises for a failing
    point: the result says ``failed`` with the error, and ``output.log`` has the rest. A signal
    ends the point with status ``interrupted`` (its state in ``last.ckpt`` once training had
    started) and raises :class:`Stopped`; a process that was stopped runs no further points
    (returns None)."""
    if _state["stopped"]:
        return None
    lock = try_lock(sweep.out / ".locks" / point.name)
    if lock is None:  # one writer per run directory: two sweeps into one --out share the work
        return {
            "index": point.index,
            "name": point.name,
            "status": "busy",
            "error": "another sweep process is running this point",
        }
    _state["running"] = True
    try:
        # again under the lock: another sweep may have finished it
        if (result := checked_result(sweep, point)).get("status") != "ok":
            result = _run(sweep, point, result)
    finally:
        _state["running"] = False
        lock.close()
    if result["status"] == "interrupted":  # _run noted the signal
        raise Stopped(_state["stopped"])
    return result


def _run(sweep: Sweep, point: Point, earlier: dict[str, Any]) -> dict[str, Any]:
    """Train and test the point; ``earlier`` is its result from a previous attempt
    (:func:`checked_result`). A point stopped or killed earlier continues from its ``last.ckpt``
    (if whole); any other attempt of it is removed."""
    run_dir = sweep.run_dir(point)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = earlier.get("status") in (None, "interrupted") and _damage(last) is None
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # this point's own failed or unfinished attempt
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT).unlink(missing_ok=True)
    with atomic_file(run_dir / POINT) as f:
        f.write(json.dumps(sweep.identity(point), indent=2) + "\n")
    args = sweep.cli_args(point) + ([f"--ckpt_path={last}"] if resume else [])
    result: dict[str, Any] = {
        "index": point.index,
        "name": point.name,
        "status": "failed",
        "error": None,
        "overrides": _plain(sweep.overrides(point)),
        "settings": {},
        "metrics": {},
        "train_s": None,
        "args": args,
    }
    start = time.perf_counter()
    with _output_to(run_dir / LOG):
        try:
            with quiet_lightning():
                cli = run_cli(args)  # fit, then the test of its final weights
            result["train_s"] = time.perf_counter() - start
            result.update(_outcome(sweep, cli), status="ok")
        except SystemExit as err:  # the command line raises its errors: not for a point's input
            result["error"] = f"the command line exited with status {err.code}"
        except (Interrupted, Stopped) as err:
            _state["stopped"] = _state["stopped"] or err.signum
            result.update(
                status="interrupted",
                error=f"stopped by {signal.Signals(err.signum).name}; "
                + (
                    "continues from its last.ckpt when the sweep is run again"
                    if last.is_file()
                    else "starts again when the sweep is run again"
                ),
            )
        except Exception as err:  # noqa: BLE001 - one failing point must not stop the others
            traceback.print_exc()
            # a full disk names its file
            text = (
                os_error_text(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
            )
            result["error"] = " ".join(text.split())[:500].rstrip(":")
    with atomic_file(run_dir / RESULT) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return result


def _outcome(sweep: Sweep, cli: Any) -> dict[str, Any]:
    """What a finished point's result records: the settings it trained with and its metrics (the
    best validation accuracy, the test's, the members)."""
    best = getattr(cli.trainer.checkpoint_callback, "best_model_score", None)
    tested = latest_values(cli.trainer.callback_metrics)
    metrics = {
        "val_acc_best": float(best) if best is not None else None,
        **{
            m.sweep: tested.get(m.name)
            for m in METRICS
            if m.sweep is not None and m.stage == "test"
        },
        "members": cli.model.members,
    }
    if sweep.regions:
        try:
            metrics["enclosed"] = enclosed_members(cli.model, cli.datamodule)
        except CirclesError as err:  # said on the point's line
            metrics["no_regions"] = str(err)
    return {
        "settings": {key: _plain(cli.config[cli.subcommand].get(key)) for key in sweep.keys},
        "metrics": metrics,
    }


def _init_worker(threads: int) -> None:
    """A worker process the sweep started: its share of the CPUs, stopped by SIGTERM and Ctrl-C
    like the sweep itself, and by its parent's end, however that came (``kill -9`` included)."""
    torch.set_num_threads(threads)
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    threading.Thread(
        target=_stop_with, args=(multiprocessing.parent_process(),), daemon=True
    ).start()


def _stop_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Once the parent process has ended: stop the point this worker runs (it saves its state and
    writes its result), then end the worker, which would otherwise wait for work forever."""
    parent.join()
    os.kill(os.getpid(), signal.SIGTERM)
    while _state["running"]:
        time.sleep(0.1)
    os._exit(128 + signal.SIGTERM)


def describe(result: dict[str, Any]) -> str:
    """A point's result in one line: its metrics and train time, or its error."""
    if result["status"] != "ok":
        return f"{result['status'].upper()}: {result['error']}"
    m = result["metrics"]
    return (
        f"ok  val {num(m.get('val_acc_best'))}  test {num(m.get('test_acc'))}"
        + (f" ± {num(m['test_acc_std'])}" if m.get("test_acc_std") is not None else "")
        + f"  Bayes {num(m.get('bayes_acc'))}  gap {num(m.get('bayes_gap'))}"
        + f"  {result['train_s']:.1f} s"
        + (f"  (no exact regions: {m['no_regions']})" if m.get("no_regions") else "")
    )


def run_points(sweep: Sweep, points: Sequence[Point], jobs: int = 1) -> list[dict[str, Any]]:
    """Run the unfinished ``points`` (``jobs`` at a time in spawned worker processes, in this one
    for 1, sharing the CPUs: SLURM's ``--cpus-per-task`` if set, else the CPU affinity) and print
    one line per point; finished points are skipped. Returns the results of the points run now.

    SIGTERM or Ctrl-C stops the whole sweep: every worker is signalled, the running points end as
    ``interrupted`` (to continue from their ``last.ckpt`` on the next run), no further point
    starts, and :class:`Stopped` is raised once every worker has ended. Lightning leaves these
    handlers in place; while a point trains its ``GracefulStopCallback`` takes over, so the point
    stops after a step with a consistent ``last.ckpt``."""
    todo = [point for point in points if not is_finished(sweep, point)]
    for point in (point for point in points if point not in todo):
        print(f"[skip] {point.name}: finished earlier", flush=True)
    if not todo:
        return []
    jobs = min(jobs, len(todo))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = (
        int(slurm)
        if slurm.isdigit()
        else len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )
    threads = max(1, cpus // jobs)
    print(
        f"Running {len(todo)} of {len(points)} points, {jobs} at a time, {threads} torch "
        f"thread(s) each, into {sweep.out}",
        flush=True,
    )
    results: list[dict[str, Any]] = []

    def report(result: dict[str, Any] | None) -> None:
        if result is not None:  # None: the process was stopped before the point started
            results.append(result)
            print(
                f"[{len(results):{len(str(len(todo)))}d}/{len(todo)}] {result['name']}  "
                f"{describe(result)}",
                flush=True,
            )

    with contextlib.ExitStack() as restore:
        for signum in SIGNALS:
            restore.callback(signal.signal, signum, signal.signal(signum, _on_signal))
        if jobs == 1:
            torch.set_num_threads(threads)
            _state["stopped"] = None
            for point in todo:
                report(run_point(sweep, point))
        else:
            _run_in_workers(sweep, todo, jobs, threads, report)
    return results


def _run_in_workers(
    sweep: Sweep,
    todo: Sequence[Point],
    jobs: int,
    threads: int,
    report: Callable[[dict[str, Any] | None], None],
) -> None:
    """Run ``todo`` in ``jobs`` spawned worker processes, reporting each result as it comes (a
    failed point's if its worker process died: killed, out of memory); on :class:`Stopped`,
    signal every worker and wait for them to save and end."""
    with ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        try:
            futures = {pool.submit(run_point, sweep, point): point for point in todo}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - whatever ended the worker
                    result = {
                        "index": futures[future].index,
                        "name": futures[future].name,
                        "status": "failed",
                        "error": f"worker process failed: {type(err).__name__}: {err}",
                    }
                report(result)
        except Stopped:
            for signum in SIGNALS:  # stopping already: wait for the workers to save and end
                signal.signal(signum, signal.SIG_IGN)
            for worker in multiprocessing.active_children():
                worker.terminate()  # SIGTERM
            pool.shutdown(wait=True, cancel_futures=True)
            raise
