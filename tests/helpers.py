"""Helpers shared by the test modules (pytest puts this folder on the import path, and so does
running a test module as a script)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from circles.commands import main

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SLURM_OPT_IN = (
    "SLURM tests are opt-in: set CIRCLES_TEST_SLURM=1 to run them on a local cluster of two nodes "
    "(needs root; installs SLURM with apt-get when missing); .ci/run sets it"
)
CONFIGS = REPO / "configs"

# Quiet, fast settings for runs that only need to exercise the machinery.
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# a few epochs' worth
SMALL = [
    "--data.n_samples=100",
    "--data.test_samples=20",
    "--boundary.every_n_epochs=1000",
]
# a run that only has to exist
TINY = [
    "--trainer.max_epochs=2",
    "--data.n_samples=60",
    "--data.test_samples=20",
]


# ------------------------------------------------------------------------------- what a test needs


def run_if(
    *, cuda: bool = False, chromium: bool = False, slurm: bool = False
) -> pytest.MarkDecorator:
    """Skip a test, saying why, unless this machine has what it needs: a CUDA device, Debian's
    Chromium with Playwright (the browser tests), a local SLURM cluster it may start (opt-in,
    root, SLURM or apt-get to install it)."""
    missing = []
    if cuda and not torch.cuda.is_available():
        missing.append("a CUDA device")
    if chromium and not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM} (Debian's chromium; .ci/run installs it)")
    if chromium and importlib.util.find_spec("playwright") is None:
        missing.append("Playwright (pip install -e '.[test]')")
    if slurm and os.environ.get("CIRCLES_TEST_SLURM") != "1":
        missing.append(SLURM_OPT_IN)
    elif slurm and os.geteuid() != 0:
        missing.append("root, to start slurmctld, slurmd and the nodes' network namespaces")
    elif slurm and shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        missing.append("SLURM, or apt-get to install it")
    return pytest.mark.skipif(bool(missing), reason="needs " + "; ".join(missing))


# ------------------------------------------------------------------------------------------------- the CLI


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(
    argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, merge_output: bool = False
) -> Iterator[subprocess.Popen]:
    """``argv`` started in a process group of its own, its output captured (stderr into stdout
    with ``merge_output``). Leaving the block kills whatever is left of the group (DDP ranks,
    sweep workers) and reaps the process, so nothing it started outlives the test."""
    # A process inherits an ignored Ctrl-C (a shell starts its background jobs so, and Lightning
    # ignores Ctrl-C once it has handled one) and Python then keeps ignoring it: the process
    # starts with Python's own handler instead, as from a terminal.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            start_new_session=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stdout is not None and process.stdout.closed:  # the test read it all
            process.wait()
        else:
            process.communicate()


def train_py(
    *args: str, cwd: Path, env: dict[str, str] | None = None, merge_output: bool = False
) -> contextlib.AbstractContextManager[subprocess.Popen]:
    """``python train.py ARGS`` in a process group of its own (see :func:`started`)."""
    return started([sys.executable, str(REPO / "train.py"), *args], cwd, env, merge_output)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (a condition that can never hold again, such as a file
    from a process that has ended, includes that process's end: no clock decides)."""
    while not condition():
        time.sleep(0.02)


def processes() -> Iterator[tuple[int, str, dict[str, str], list[str]]]:
    """Every process of this machine one may read (Linux /proc): ``(pid, name, environment,
    command line)``."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            comm = (proc / "comm").read_text().strip()
            environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        yield int(proc.name), comm, dict(kv.split("=", 1) for kv in environ if "=" in kv), cmdline


def exit_status(*args: str) -> int:
    """``python train.py ARGS`` run in-process, quietly; returns the exit status."""
    try:
        main(
            [*args, *QUIET]
            if args and args[0] in ("fit", "validate", "test", "predict")
            else list(args)
        )
    except SystemExit as exit_info:
        return 0 if exit_info.code is None else exit_info.code
    return 0


@contextlib.contextmanager
def inside(directory: Path) -> Iterator[None]:
    """The working directory is ``directory`` while inside (for module-scoped fixtures, which
    cannot use the per-test working directory)."""
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(cwd)


def fit_in(directory: Path, *args: str) -> Path:
    """``fit ARGS`` run inside ``directory``; returns the directory's ``lightning_logs``."""
    with inside(directory):
        assert exit_status("fit", *args) == 0
    return directory / "lightning_logs"


def run_dir(runs: Path, n: int = 0) -> Path:
    """Run directory number ``n`` (with its label: ``0000-relu-10x10-sgd0.1-e1000-circles``) in
    ``runs``."""
    (found,) = [p for p in runs.iterdir() if p.name == f"{n:04d}" or p.name.startswith(f"{n:04d}-")]
    return found


def evaluation_dirs(runs: Path) -> list[Path]:
    """Every validate, test and predict run under ``runs`` (in a run's ``evaluations`` folder, or
    the runs' own), in the order they were made."""
    found = [p for p in [*runs.glob("*/evaluations/*"), *runs.glob("evaluations/*")] if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def run_names(runs: Path) -> list[str]:
    """The number part (``0003``) of every run directory in ``runs``, in order."""
    return sorted(
        p.name.split("-")[0] for p in runs.iterdir() if p.is_dir() and p.name[:4].isdigit()
    )


def error_lines(text: str) -> list[str]:
    """The lines of ``text`` (a captured stderr) that start with ``circles: error:``."""
    return [line for line in text.splitlines() if line.startswith("circles: error:")]


# ------------------------------------------------------------------------------- TensorBoard, via TensorBoard


def read_events(run_dir: Path) -> EventAccumulator:
    """The run directory's own TensorBoard events (images, hyperparameters) as TensorBoard reads
    them."""
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    ea.Reload()
    return ea


def _metric(tag: str) -> str:
    """The metric name of a scalar TensorBoard shows as ``tag`` (:func:`scalar_tag`'s inverse:
    ``curves/loss_train`` is ``train/loss``; any other tag, an evaluation's
    ``evaluation/test_acc`` too, is its name)."""
    group, _, rest = tag.partition("/")
    what, _, stage = rest.rpartition("_")
    return f"{stage}/{what}" if group == "curves" else tag


def scalar_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run as TensorBoard shows it, by metric name (``train/loss``):
    ``{name: [(step, value), ...]}``."""
    ea = read_events(run_dir)
    return {
        _metric(tag): [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]
    }


def scalar_values(run_dir: Path, name: str) -> list[float]:
    """The values of one metric of the run (``val/acc``), in step order as TensorBoard shows
    them."""
    return [value for _, value in scalar_history(run_dir)[name]]


def final_scalar(run_dir: Path, name: str) -> float:
    """The last value of one metric of the run."""
    return scalar_history(run_dir)[name][-1][1]


# ------------------------------------------------------------------------------ TensorBoard, the raw files


def _scalar_events(run_dir: Path) -> Iterator[tuple[str, int, float]]:
    """Every scalar written to the run's event files, as ``(metric name, step, value)``, oldest
    file first, unfiltered."""
    files = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3]))
    for path in files:
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    yield _metric(value.tag), event.step, value.simple_value


def written_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's event files exactly as written, ``{name: [(step, value),
    ...]}``, repeats kept."""
    values: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in _scalar_events(run_dir):
        values.setdefault(tag, []).append((step, value))
    return values


def scalars_by_step(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the run's event files, ``{name: {step: value}}``; a later file's value
    wins for a step logged twice (the epochs a resumed run repeats)."""
    values: dict[str, dict[int, float]] = {}
    for tag, step, value in _scalar_events(run_dir):
        values.setdefault(tag, {})[step] = value
    return values


# -------------------------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: Path) -> dict:
    """A checkpoint file loaded on the CPU with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the run's ``checkpoints/last.ckpt``."""
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


class Payload:
    """Unpickling this calls ``os.makedirs(marker)``: if the marker exists, a checkpoint's
    payload ran. (``os`` is pure Python, so the global is named ``os.makedirs`` on every Python;
    ``open`` is ``io.open`` or ``_io.open``.)"""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def quiet_trainer(**kwargs: object) -> pl.Trainer:
    """A plain Lightning Trainer on the CPU that writes nothing and prints nothing (no logger, no
    checkpoints, no callbacks); ``kwargs`` add to or replace its options."""
    options: dict[str, object] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[],
    )
    options.update(kwargs)
    return pl.Trainer(**options)  # type: ignore[arg-type]
