"""Run directories and checkpoint files: claimed atomically, written atomically, loaded safely."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from circles.errors import CirclesError, ConfigError


class CheckpointError(CirclesError):
    """A checkpoint file that cannot or must not be loaded."""

    exit_code = 2


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder and renames it into place, so a reader (or a
    resume after ``kill -9``) never sees half a file; loads with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: Any, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


def _hparam_value(value: Any) -> Union[int, float, str, bool]:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class TensorBoardRunLogger(TensorBoardLogger):
    """TensorBoard logger for ``<save_dir>/<name>/version_N`` run directories.

    - Claims ``version_N`` with an atomic ``mkdir``: runs started at the same moment get distinct directories
      (Lightning's logger picks N by listing the folder, which races).
    - Records hyperparameters for TensorBoard's HPARAMS tab without declaring a fixed metric list, so every
      scalar the run logs (``val/acc_best``, ``test/acc``, ...) shows up there as a metric column.
    """

    def __init__(
        self,
        save_dir: str = ".",
        name: str = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: Folder that holds the ``name`` folder of runs.
            name: Folder of runs inside ``save_dir``; ``tensorboard --logdir <save_dir>/<name>`` shows them all.
            version: Run to write into (``3`` or ``"version_3"``); ``None`` claims the next free ``version_N``.
            default_hp_metric: Log Lightning's placeholder ``hp_metric``; not needed here.
        """
        super().__init__(save_dir, name=name, version=version, default_hp_metric=default_hp_metric, **kwargs)
        self._hparams_session_written = True  # nothing to write until hyperparameters arrive

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:
            return version  # unused: Lightning broadcasts rank zero's directories
        root = Path(self.root_dir)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (root / f"version_{version}").mkdir()
                return version
            except FileExistsError:
                version += 1

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """All scalars of a call in one TensorBoard event (Lightning writes one event per scalar, ~4x the cost)."""
        self._write_hparams_session()
        if self._prefix or not all(isinstance(v, (int, float, torch.Tensor)) for v in metrics.values()):
            return super().log_metrics(metrics, step)
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()]
        # _get_file_writer reopens the event file after finalize, as add_scalar does: on SLURM's SIGUSR1 Lightning
        # finalizes the loggers, saves hpc_ckpt and requeues, and training goes on until the job is stopped.
        self.experiment._get_file_writer().add_summary(Summary(value=values), step)

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
        self.experiment._get_file_writer().add_summary(session_start)
        self._hparams_session_written = True

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_hparams_session()
        super().finalize(status)


def find_run_checkpoint(runs_root: Union[str, Path], which: str) -> Optional[Path]:
    """The ``checkpoints/<which>.ckpt`` of the most recently written run under ``runs_root``, if any."""
    candidates = [p for p in Path(runs_root).glob(f"*/checkpoints/{which}.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None
