"""Files a run writes: atomic replacement, exclusive locks and the one allocator of run
directories."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from circles.errors import InputError

PathLike = str | Path


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; when the block ends without an error,
    flush it to disk and rename it to ``path`` in one step. A reader, a crash or ``kill -9`` sees
    the old file or the new one, never half of one, and no temporary file is left behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        # name the file, not its temporary twin
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(figure: Any, path: PathLike, **kwargs: Any) -> None:
    """A matplotlib figure saved as ``path`` (its format from the suffix), whole or not at all
    (:func:`atomic_file`)."""
    with atomic_file(path, "wb") as f:
        figure.savefig(f, format=Path(path).suffix.lstrip(".").lower(), **kwargs)


def try_lock(path: PathLike) -> IO[Any] | None:
    """Take an exclusive ``flock`` on the file ``path`` (created if missing) and return the open
    file that holds it, or None if another process holds it. The lock ends when the file is
    closed or the process ends, however it ends."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def lock_run_dir(run_dir: PathLike) -> IO[Any]:
    """Hold ``run_dir/.lock`` while this process writes the run: a second process that would
    write into the same run (two resumes of one run, a run given the version of a running one) is
    refused instead of interleaving its curves and checkpoints with the first one's."""
    if lock := try_lock(Path(run_dir) / ".lock"):
        return lock
    raise InputError(
        f"{os.path.normpath(run_dir)} is being written by another process (pid "
        f"{(Path(run_dir) / '.lock').read_text().strip() or '?'}); "
        "one process writes a run at a time. Wait for it to end, or start a new run."
    )


# What a run directory holds besides its TensorBoard events (each written by the part named).
# the resolved config that repeats the run (circles.runs.checkpoints.RunConfig)
CONFIG = "config.yaml"
# best.ckpt and last.ckpt (Lightning's folder; circles.callbacks.checkpoint)
CHECKPOINTS = "checkpoints"
# callbacks.boundary
BOUNDARY_PNG = "decision_boundary.png"
BOUNDARY_TEST_PNG = "decision_boundary_test.png"
BOUNDARY_GIF = "decision_boundary.gif"  # the frames of a fit (callbacks.boundary)
# per member its seed and accuracies, with several members (callbacks.summary)
MEMBERS_CSV = "members.csv"
PREDICTIONS_CSV = "predictions.csv"  # predict's output (callbacks.predictions)
LR_FIND_PNG = "lr_find.png"  # the learning-rate finder's curve (callbacks.lr_finder)
# the folder of validate, test and predict runs, inside the runs: out of the fits' way
EVALUATIONS = "evaluations"


def run_name(number: int, label: str = "") -> str:
    """``0003-<label>``: four digits first, so the runs sort in the order they were made
    (TensorBoard sorts names as text), then what the run does, so names differ where
    TensorBoard's cards cut them off."""
    return f"{number:04d}" + (f"-{label}" if label else "")


def claim_version(root: PathLike, label: str = "") -> str:
    """Create the next free ``root/NNNN-<label>`` (:func:`run_name`) and return its name. The
    number is chosen and the directory made under an exclusive lock on the folder ``root``
    itself, so runs started at the same moment get distinct numbers whatever their labels (an
    atomic ``mkdir`` alone keeps apart only equal names, and listing the folder, as Lightning's
    logger does, races)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = os.open(root, os.O_RDONLY)
    try:
        # released when closed, or when the process ends however it ends
        fcntl.flock(folder, fcntl.LOCK_EX)
        # the number after the highest run directory's (``0003-relu-10x10-...``; earlier
        # releases: ``version_3-...``)
        numbers = [
            re.fullmatch(r"(?:version_)?(\d+)(-.*)?", p.name) for p in root.iterdir() if p.is_dir()
        ]
        version = max((int(m.group(1)) for m in numbers if m), default=-1) + 1
        while True:
            name = run_name(version, label)
            try:
                (root / name).mkdir()
                return name
            except FileExistsError:
                version += 1
    finally:
        os.close(folder)
