"""Run directories and the files in them: claimed atomically, written atomically, checkpoints loaded safely."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from circles.errors import CirclesError, ConfigError

DEFAULT_RUNS = "lightning_logs"  # the logger's ``name``: runs go to <default_root_dir>/lightning_logs/version_N


class CheckpointError(CirclesError):
    """A checkpoint file that cannot or must not be loaded."""

    exit_code = 2


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; when the block ends without an error, flush it to disk and
    rename it to ``path`` in one step. A reader, a crash or ``kill -9`` sees the old file or the new one, never half
    of one, and no temporary file is left behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- checkpoints --------------------------------------------------------------------------------------------------


def load_checkpoint_file(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing, corrupt or unsafe file.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a checkpoint carrying a
    pickled object is refused before any of its code can run.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", "an existing checkpoint file, 'best' or 'last'", str(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe is None:
            raise _unreadable(path, "it does not unpickle as tensors and plain data") from None
        raise CheckpointError(
            f"Refused to load {path}: it holds a Python object ({unsafe.group(1)}) that could run code when "
            "unpickled, so loading it with weights_only=True rejected it and nothing in it ran. Checkpoints written "
            "by this project hold only tensors and plain data; do not load this file unless you made it."
        ) from None
    except Exception as err:  # a torn or foreign file fails in many ways: zip, EOF, key, OS errors
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else "no detail"
        raise _unreadable(path, f"{type(err).__name__}: {first}") from None


def _unreadable(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"Cannot read checkpoint {path}: it is truncated, corrupt or not a PyTorch checkpoint ({detail}). Use "
        "another checkpoint, e.g. the run's checkpoints/best.ckpt or checkpoints/last.ckpt."
    )


def load_lightning_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """A checkpoint file checked to be one Lightning wrote (weights and the version that wrote them)."""
    checkpoint = load_checkpoint_file(path)
    missing = [k for k in ("state_dict", "pytorch-lightning_version") if not isinstance(checkpoint, dict)
               or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this project: it holds no "
                              f"{' or '.join(missing)}. Use a run's checkpoints/best.ckpt or checkpoints/last.ckpt.")
    return checkpoint


def find_run_checkpoint(runs_root: Union[str, Path], which: str) -> Optional[Path]:
    """The ``checkpoints/<which>.ckpt`` of the most recently written run under ``runs_root``, if any."""
    candidates = [p for p in Path(runs_root).glob(f"*/checkpoints/{which}.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def resolve_checkpoint(ckpt_path: str, runs_root: Union[str, Path]) -> Path:
    """``best``/``last`` -> the newest run's ``checkpoints/best.ckpt``/``last.ckpt`` under ``runs_root``; a path as is."""
    if ckpt_path not in ("best", "last"):
        return Path(ckpt_path)
    found = find_run_checkpoint(runs_root, ckpt_path)
    if found is None:
        raise ConfigError("ckpt_path", "a checkpoint file, or 'best'/'last' of an earlier run", ckpt_path,
                          f"No run under {os.path.normpath(runs_root)} has checkpoints/{ckpt_path}.ckpt.")
    return found


def run_of_checkpoint(path: Path) -> Optional[str]:
    """The run directory's name for ``<run>/checkpoints/<file>.ckpt``, else None."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else None


def checkpoint_mismatch(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """Where the weight shapes of a checkpoint differ from a model's (the first three), or None if they fit."""
    if found == expected:
        return None
    differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    details = [f"{k} (checkpoint {found[k]}, model {expected[k]})" if k in found and k in expected
               else f"{k} (only in the {'checkpoint' if k in found else 'model'})" for k in differ[:3]]
    return ", ".join(details) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint with :func:`atomic_file`, so a reader (or a resume after ``kill -9``) never sees half a
    file; loads with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: Any, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


# -- run directories ----------------------------------------------------------------------------------------------


def claim_version(root: Union[str, Path]) -> int:
    """Create the next free ``root/version_N`` with an atomic ``mkdir`` and return N: runs started at the same moment
    get distinct directories (listing the folder, as Lightning's logger does, races)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[len("version_"):]) for p in root.glob("version_*") if p.name[len("version_"):].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def event_file_writer(writer: Any) -> Any:
    """The event-file writer of a ``torch.utils.tensorboard.SummaryWriter``, reopened if the writer was closed.

    ``SummaryWriter`` has no public way to write one ``Summary`` holding several scalars, or an hparams session
    record: ``add_scalars`` makes a writer, and a run in TensorBoard, per tag (pytorch/pytorch#32651), and Lightning's
    own ``TensorBoardLogger.log_hyperparams`` calls this same private method (lightning/pytorch/loggers/tensorboard.py).
    It also reopens the event file after ``close()``, which matters because Lightning finalizes the loggers on
    SLURM's SIGUSR1 while training goes on until the job is requeued. ``tests/test_runs.py`` fails loudly if either
    library changes it.
    """
    return writer._get_file_writer()


def _hparam_value(value: Any) -> Union[int, float, str, bool]:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class TensorBoardRunLogger(TensorBoardLogger):
    """TensorBoard logger for ``<save_dir>/<name>/version_N`` run directories.

    - Claims ``version_N`` with an atomic ``mkdir`` (:func:`claim_version`) the first time the run's directory is
      asked for, so a run that fails before that leaves no empty directory.
    - Writes all scalars of a ``log_metrics`` call as one TensorBoard event (Lightning writes one per scalar).
    - Records hyperparameters for TensorBoard's HPARAMS tab without declaring a fixed metric list, so every
      scalar the run logs (``val/acc_best``, ``test/acc``, ...) shows up there as a metric column.
    """

    def __init__(
        self,
        save_dir: Optional[str] = None,
        name: str = DEFAULT_RUNS,
        version: Optional[Union[int, str]] = None,
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: Folder that holds the ``name`` folder of runs; ``null`` is the trainer's ``default_root_dir``
                (the working directory unless set).
            name: Folder of runs inside ``save_dir``; ``tensorboard --logdir <save_dir>/<name>`` shows them all.
            version: Run to write into (``3`` or ``"version_3"``); ``null`` claims the next free ``version_N``.
            default_hp_metric: Log Lightning's placeholder ``hp_metric``; not needed here.
        """
        super().__init__(save_dir if save_dir is not None else ".", name=name, version=version,
                         default_hp_metric=default_hp_metric, **kwargs)
        self._run_version = version
        self._hparams_session_written = True  # nothing to write until hyperparameters arrive

    @property
    def version(self) -> Union[int, str]:
        """The run's version: the one given, else (on rank zero, the first time it is asked for) the claimed one."""
        if self._run_version is None:
            self._run_version = claim_version(self.root_dir) if rank_zero_only.rank == 0 else super().version
        return self._run_version

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """All scalars of a call in one TensorBoard event (Lightning writes one event per scalar, ~4x the cost)."""
        self._write_hparams_session()
        if self._prefix or not all(isinstance(v, (int, float, torch.Tensor)) for v in metrics.values()):
            return super().log_metrics(metrics, step)
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()]
        event_file_writer(self.experiment).add_summary(Summary(value=values), step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Optional[dict[str, Any]] = None, step: Optional[int] = None) -> None:
        super().log_hyperparams(params, metrics, step)
        self._hparams_session_written = metrics is not None  # with metrics, Lightning wrote the session itself

    def _write_hparams_session(self) -> None:
        """TensorBoard keeps the first session record of a run, so it is written once, with every hyperparameter
        collected, just before the first metrics; no metric list is declared, so every scalar becomes a column."""
        if self._hparams_session_written or not self.hparams:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = {key: _hparam_value(value) for key, value in dict(self.hparams).items() if not key.startswith("_")}
        _, session_start, _ = hparams(flat, {})
        event_file_writer(self.experiment).add_summary(session_start)
        self._hparams_session_written = True

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_hparams_session()
        super().finalize(status)


def data_difference(trained_on: Mapping[str, Any], data: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Say so when a checkpoint was trained on other data than a run will use (not an error: testing a model on
    noisier data is a fair question), so that ``test --ckpt_path best`` after a moons run is not taken for a result
    on moons."""
    keys = ("dataset", "noise", "factor", "n_samples", "val_fraction", "seed")
    differ = [k for k in keys if data is not None and k in trained_on and data.get(k) != trained_on[k]]
    if not differ:
        return None
    return ("the checkpoint was trained on " + ", ".join(f"data.{k}={trained_on[k]!r}" for k in differ)
            + "; this run uses " + ", ".join(f"{data.get(k)!r}" for k in differ)
            + " (pass the run's config.yaml with --config to use its data).")
