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
from pathlib import Path
from typing import Any

from circles.model.metrics import METRICS, latest_values, num
from circles.runs.directory import atomic_file, try_lock
from circles.sweep.spec import Point, Sweep

POINT = "point.json"  # written first: the point's identity (every setting), before anything trains
RESULT = "result.json"  # written last: a point with one is finished, failed or interrupted
LOG = "output.log"  # everything a point printed
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """SIGTERM or Ctrl-C stopped the sweep. A BaseException, so that the ``except Exception``
    around a point does not take it for that point failing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# this process: the signal that stopped it; a point runs
_state: dict[str, Any] = {"stopped": None, "running": False}


def _on_signal(signum: int, frame: Any) -> None:
    _state["stopped"] = _state["stopped"] or signum
    if not _state["running"] and multiprocessing.parent_process() is not None:
        raise SystemExit(128 + signum)  # an idle worker just ends
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and Ctrl-C raise :class:`Stopped` in this process. Lightning leaves
    a handler that is already set in place, and while a point trains its ``GracefulStopCallback``
    takes over, so the point stops after a step with a consistent ``last.ckpt``."""
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def holds_other_point(sweep: Sweep, point: Point) -> dict[str, Any] | None:
    """The identity recorded in the point's run directory when it is another point's (other
    settings under the same name, e.g. another sweep file with other ``fixed:`` settings into the
    same ``--out``); else None."""
    run_dir = sweep.run_dir(point)
    recorded = _json(run_dir / POINT) or {}
    # a directory from before point.json: its result's overrides are all there is to compare
    if not recorded:
        recorded = {
            "overrides": (_json(run_dir / RESULT) or {}).get("overrides", sweep.overrides(point))
        }
        return None if recorded["overrides"] == _plain(sweep.overrides(point)) else recorded
    return None if recorded == sweep.identity(point) else recorded


def check_no_other_points(sweep: Sweep, points: Sequence[Point]) -> None:
    """Refuse to run points whose run directories hold other points' work: nothing of it is ever
    deleted."""
    from circles.sweep.spec import SweepError

    others = [(p, found) for p in points if (found := holds_other_point(sweep, p)) is not None]
    if others:
        point, found = others[0]
        mine = sweep.identity(point)
        differ = sorted(
            k
            for k in set(mine["overrides"]) | set(found.get("overrides", {}))
            if mine["overrides"].get(k) != found.get("overrides", {}).get(k)
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


def read_result(sweep: Sweep, point: Point) -> dict[str, Any] | None:
    """The point's ``result.json``, if it has one and it is this point's (see
    :func:`holds_other_point`)."""
    result = _json(sweep.run_dir(point) / RESULT)
    return result if isinstance(result, dict) and holds_other_point(sweep, point) is None else None


def checked_result(sweep: Sweep, point: Point) -> dict[str, Any] | None:
    """:func:`read_result`, with a finished point whose ``last.ckpt`` has since gone missing or
    been damaged marked ``damaged`` (its numbers stand, its model does not: a re-run trains it
    again)."""
    result = read_result(sweep, point)
    if result is None or result.get("status") != "ok":
        return result
    damage = _damage(sweep.run_dir(point) / "checkpoints" / "last.ckpt")
    return (
        result
        if damage is None
        else {**result, "status": "damaged", "error": f"{point.name}: {damage}"}
    )


def _damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be loaded, or None when it is whole (a point killed while
    writing it keeps the previous one: checkpoints are replaced whole)."""
    from circles.errors import CirclesError
    from circles.runs.checkpoints import load_checkpoint_file

    try:
        load_checkpoint_file(checkpoint)
    except CirclesError as err:
        return str(err)
    return None


def is_finished(sweep: Sweep, point: Point) -> bool:
    """Whether the point has a successful result for its current settings and its checkpoint is
    whole (then it is skipped on a re-run)."""
    result = checked_result(sweep, point)
    return result is not None and result.get("status") == "ok"


def _plain(value: Any) -> Any:
    """JSON-ready plain data (jsonargparse Namespaces become dicts, tuples lists)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.as_dict() if hasattr(v, "as_dict") else str(v))
    )


_FD_STREAMS: list[Any] = []  # text streams over file descriptors 1 and 2, never closed


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send everything printed meanwhile (Python and C level, stdout and stderr) to the file
    ``path``.

    File descriptors 1 and 2 point at the file meanwhile, and ``sys.stdout``/``sys.stderr`` at
    streams over those descriptors, so a logging handler created meanwhile keeps a stream that
    stays open afterwards."""
    if not _FD_STREAMS:
        _FD_STREAMS.extend(
            open(fd, "w", buffering=1, closefd=False, errors="replace") for fd in (1, 2)
        )
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
    """The error a CLI printed before exiting (jsonargparse's ``error: ...``), from the point's
    log."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if "error:" in lines[i]), None)
    text = (
        " ".join(line.strip() for line in lines[start:])
        if start is not None
        else (lines[-1] if lines else "")
    )
    return text[:500] or "the command line exited without a message"


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
        result = checked_result(sweep, point)
        if result is None or result.get("status") != "ok":
            result = _run(sweep, point, result)
    finally:
        _state["running"] = False
        lock.close()
    if result["status"] == "interrupted":
        _state["stopped"] = _state["stopped"] or signal.SIGTERM
        raise Stopped(_state["stopped"])
    return result


def _run(sweep: Sweep, point: Point, earlier: dict[str, Any] | None) -> dict[str, Any]:
    """Train and test the point; ``earlier`` is its result from a previous attempt
    (:func:`checked_result`)."""
    from circles.cli import run_cli  # before the output goes to the log: handlers made at import
    from circles.errors import Interrupted, quiet_lightning

    run_dir = sweep.run_dir(point)
    args, last = _prepare(sweep, point, earlier)
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
        except SystemExit:  # jsonargparse printed why (a bad key or value) before exiting
            error = None
        except (Interrupted, Stopped) as err:
            _state["stopped"] = _state["stopped"] or err.signum
            result["status"] = "interrupted"
            error = f"stopped by {signal.Signals(err.signum).name}; " + (
                "continues from its last.ckpt when the sweep is run again"
                if last.is_file()
                else "starts again when the sweep is run again"
            )
        except Exception as err:  # noqa: BLE001 - one failing point must not stop the others
            traceback.print_exc()
            error = " ".join([f"{type(err).__name__}:", *str(err).split()])[:500].rstrip(":")
        else:
            error = ""
    if result["status"] != "ok":
        result["error"] = error or _error_line(run_dir / LOG)
    with atomic_file(run_dir / RESULT) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return result


def _prepare(sweep: Sweep, point: Point, earlier: dict[str, Any] | None) -> tuple[list[str], Path]:
    """The point's run directory made ready and its command line: a point stopped or killed
    earlier continues from its ``last.ckpt`` (if whole); any other attempt of it is removed.
    Returns the command line and where ``last.ckpt`` is."""
    run_dir = sweep.run_dir(point)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = (earlier is None or earlier["status"] == "interrupted") and _damage(last) is None
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # this point's own failed or unfinished attempt
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT).unlink(missing_ok=True)
    with atomic_file(run_dir / POINT) as f:
        f.write(json.dumps(sweep.identity(point), indent=2) + "\n")
    return sweep.cli_args(point) + ([f"--ckpt_path={last}"] if resume else []), last


def _outcome(sweep: Sweep, cli: Any) -> dict[str, Any]:
    """What a finished point's result records: the settings it trained with and its metrics (the
    best validation accuracy, the test's, the members)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    config = cli.config[cli.subcommand]
    checkpoint = cli.trainer.checkpoint_callback
    best = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
    tested = latest_values(cli.trainer.callback_metrics)
    metrics = {"val_acc_best": float(best) if best is not None else None}
    for m in METRICS:
        if m.sweep is not None and m.stage == "test":
            metrics[m.sweep] = tested.get(m.name)
    metrics["members"] = cli.model.members
    if sweep.regions:
        from circles.model.regions import enclosed_members

        metrics["enclosed"] = enclosed_members(cli.model, cli.datamodule)
    return {"settings": {key: _plain(config.get(key)) for key in sweep.keys}, "metrics": metrics}


def _init_process(threads: int) -> None:
    """Give this process its share of the CPUs and pay the imports once, before its first point."""
    import torch

    import circles.cli  # noqa: F401

    torch.set_num_threads(threads)


def _init_worker(threads: int) -> None:
    """A worker process: as :func:`_init_process`, stopped by SIGTERM and Ctrl-C like the sweep
    itself, and by its parent's end, however that came (``kill -9`` included)."""
    _init_process(threads)
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    parent = multiprocessing.parent_process()
    assert parent is not None, "a worker runs in a process the sweep started"
    threading.Thread(target=_stop_with, args=(parent.sentinel,), daemon=True).start()


def _stop_with(sentinel: int) -> None:
    """Once the parent process has ended: stop the point this worker runs (it saves its state and
    writes its result), then end the worker, which would otherwise wait for work forever."""
    from multiprocessing.connection import wait

    wait([sentinel])
    os.kill(os.getpid(), signal.SIGTERM)
    while _state["running"]:
        time.sleep(0.1)
    os._exit(128 + signal.SIGTERM)


def cpus() -> int:
    """CPUs this process may use: the SLURM task's ``--cpus-per-task`` if set, else its CPU
    affinity."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def describe(result: dict[str, Any]) -> str:
    """A point's result in one line: its metrics and train time, or its error."""
    if result["status"] != "ok":
        return f"{result['status'].upper()}: {result['error']}"
    m = result["metrics"]
    spread = f" ± {num(m['test_acc_std'])}" if m.get("test_acc_std") is not None else ""
    return (
        f"ok  val {num(m.get('val_acc_best'))}  test {num(m.get('test_acc'))}{spread}  Bayes "
        f"{num(m.get('bayes_acc'))}  gap {num(m.get('bayes_gap'))}  {result['train_s']:.1f} s"
    )


def run_points(sweep: Sweep, points: Sequence[Point], jobs: int = 1) -> list[dict[str, Any]]:
    """Run the unfinished ``points`` (``jobs`` at a time in spawned worker processes, in this one
    for 1) and print one line per point; finished points are skipped. Returns the results of the
    points run now.

    SIGTERM or Ctrl-C stops the whole sweep: every worker is signalled, the running points end as
    ``interrupted`` (to continue from their ``last.ckpt`` on the next run), no further point
    starts, and :class:`Stopped` is raised once every worker has ended."""
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
    threads = max(1, cpus() // jobs)
    print(
        f"Running {len(todo)} of {len(points)} points, {jobs} at a time, {threads} torch "
        f"thread(s) each, into {sweep.out}",
        flush=True,
    )

    def report(result: dict[str, Any] | None) -> None:
        if result is None:  # the process was stopped before the point started
            return
        results.append(result)
        done = f"[{len(results):{len(str(len(todo)))}d}/{len(todo)}]"
        print(f"{done} {result['name']}  {describe(result)}", flush=True)

    with stop_on_signals():
        if jobs == 1:
            _init_process(threads)
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
    """Run ``todo`` in ``jobs`` spawned worker processes, reporting each result as it comes; on
    :class:`Stopped`, signal every worker and wait for them to save and end."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    try:
        futures = {pool.submit(run_point, sweep, point): point for point in todo}
        for future in as_completed(futures):
            report(_result_of(future, futures[future]))
    except Stopped:
        for signum in SIGNALS:  # stopping already: wait for the workers to save and end
            signal.signal(signum, signal.SIG_IGN)
        for worker in multiprocessing.active_children():
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def _result_of(future: Any, point: Point) -> dict[str, Any] | None:
    """A worker's result for ``point``; a failed point's if the worker process died (killed, out
    of memory)."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - whatever ended the worker
        error = f"worker process failed: {type(err).__name__}: {err}"
        return {"index": point.index, "name": point.name, "status": "failed", "error": error}
