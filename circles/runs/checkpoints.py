"""Checkpoints: loaded safely (checked to be one this project wrote before anything is built from
it), written whole, resolved from ``best``/``last``."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from circles.errors import ConfigError, InputError
from circles.runs.directory import CONFIG, atomic_file


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing, corrupt or unsafe
    file.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a checkpoint
    carrying a pickled object is refused before any of its code can run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", "an existing checkpoint file, 'best' or 'last'", str(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a torn or foreign file fails in many ways: zip, EOF, key, OS errors
        # torch names the global either way: "Unsupported global: GLOBAL io.open" (a module it
        # allows in part) or "unsupported GLOBAL os.makedirs whose module os is blocked"
        unpickling = isinstance(err, pickle.UnpicklingError)
        if unpickling and (unsafe := re.search(r"\bGLOBAL ([\w.]+)", str(err))):
            raise InputError(
                f"Refused to load {path}: it holds a Python object ({unsafe.group(1)}) that could "
                "run code when unpickled, so loading it with weights_only=True rejected it and "
                "nothing in it ran. Checkpoints written by this project hold only tensors and "
                "plain data; do not load this file unless you made it."
            ) from None
        detail = (
            "it does not unpickle as tensors and plain data"
            if unpickling
            else f"{type(err).__name__}: "
            + (str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else "no detail")
        )
        raise InputError(
            f"Cannot read checkpoint {path}: it is truncated, corrupt or not a PyTorch checkpoint "
            f"({detail}). Use another checkpoint, e.g. the run's checkpoints/best.ckpt or "
            "checkpoints/last.ckpt."
        ) from None


def load_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file checked to be one Lightning wrote for this project before anything is
    built from it: its weights a mapping of names to tensors, the version that wrote it a
    version, its hyperparameters, the data's state and the run's record mappings (their values
    are checked where they are used)."""
    checkpoint = load_checkpoint_file(path)
    if missing := [
        k
        for k in ("state_dict", "pytorch-lightning_version")
        if not isinstance(checkpoint, dict) or k not in checkpoint
    ]:
        raise InputError(
            f"{path} is not a Lightning checkpoint of this project: it holds no "
            f"{' or '.join(missing)}. Use a run's checkpoints/best.ckpt or checkpoints/last.ckpt."
        )
    checks = (_weights_problem, _version_problem, _records_problem, _config_problem)
    if wrong := next((problem for check in checks if (problem := check(checkpoint))), None):
        raise InputError(
            f"{path} is not a checkpoint this project wrote: {wrong}. Use a run's "
            "checkpoints/best.ckpt or checkpoints/last.ckpt."
        )
    return checkpoint


def _weights_problem(checkpoint: dict[str, Any]) -> str | None:
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        return f"its state_dict is a {type(state).__name__}, not a mapping of names to tensors"
    finite = all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    return None if finite else "its weights are not all finite numbers"


def _version_problem(checkpoint: dict[str, Any]) -> str | None:
    """Lightning reads the version as text when it migrates the checkpoint, and would migrate it
    from a layout this project never wrote if it were older than 2.0."""
    from packaging.version import InvalidVersion, Version

    written_by = checkpoint["pytorch-lightning_version"]
    if not isinstance(written_by, str):
        return (
            f"its pytorch-lightning_version is the {type(written_by).__name__} "
            f"{str(written_by)[:40]}, not a version"
        )
    written_by = written_by[:40]
    try:
        return (
            f"Lightning {written_by} wrote it, older than the 2.x this project was written for"
            if Version(written_by) < Version("2.0")
            else None
        )
    except InvalidVersion:
        return f"its pytorch-lightning_version is {written_by!r}"


def _records_problem(checkpoint: dict[str, Any]) -> str | None:
    """The hyperparameters and the data's state are mappings; the classes a number and as many
    names (or none)."""
    for key in ("hyper_parameters", "datamodule_hyper_parameters", "CirclesDataModule"):
        if key in checkpoint and not isinstance(checkpoint[key], dict):
            return f"its {key} is a {type(checkpoint[key]).__name__}, not a mapping"
    data = checkpoint.get("CirclesDataModule") or {}
    classes, names = data.get("num_classes", 2), data.get("class_names")
    if type(classes) is not int or not (
        names is None or isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        return "its data state's classes are not a number and a list of names"
    if names is not None and len(names) != classes:
        return f"its data state names {len(names)} classes of its {classes}"
    if names is not None and len(set(names)) != len(names):
        return "its data state names a class twice"
    network = (checkpoint.get("hyper_parameters") or {}).get("num_classes", classes)
    if type(network) is not int:
        return f"its network's classes are the {type(network).__name__} {str(network)[:40]}"
    if "num_classes" in data and network != classes:
        return f"its network has {network} classes and its data state {classes}"
    files = data.get("files", {})
    return None if isinstance(files, dict) else "its data state's files are not a mapping"


def _config_problem(checkpoint: dict[str, Any]) -> str | None:
    import yaml

    text = checkpoint.get(CONFIG_KEY, "{}")
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        config = None
    return (
        None if isinstance(config, dict) else "its record of the run's config is not a YAML mapping"
    )


def resolve_checkpoint(
    ckpt_path: str, runs_root: str | Path, refusal: Callable[[Path], str | None]
) -> Path:
    """``best``/``last`` -> ``checkpoints/best.ckpt``/``last.ckpt`` of the newest run under
    ``runs_root`` that has one (the most recently written) holding the model the command asks for
    (``refusal`` says why a file does not, or None); a path as is. Without one, the error names
    the newest run's, ready to paste."""
    if ckpt_path not in ("best", "last"):
        return Path(ckpt_path)
    files = sorted(
        (p for p in Path(runs_root).glob(f"*/checkpoints/{ckpt_path}.ckpt") if p.is_file()),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    # newest first, each file read only until one holds the model
    if (ours := next((p for p in files if refusal(p) is None), None)) is not None:
        return ours
    raise ConfigError(
        "ckpt_path",
        "a checkpoint file, or 'best'/'last' of an earlier run of this model",
        ckpt_path,
        f"No run under {os.path.normpath(runs_root)} has checkpoints/{ckpt_path}.ckpt"
        + (
            f" of the model this config describes (the newest run's: {refusal(files[0])}); give "
            f"its config and file to use it, --config {files[0].parent.parent / CONFIG} "
            f"--ckpt_path {files[0]}, or start a new run without --ckpt_path."
            if files
            else "."
        ),
    )


def run_of_checkpoint(path: Path) -> str | None:
    """The run directory's name for ``<run>/checkpoints/<file>.ckpt``, else None."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint with :func:`atomic_file`, so a reader (or a resume after ``kill -9``)
    never sees half a file; loads with ``weights_only=True`` only."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)

    @override
    def load_checkpoint(
        self, path: Any, map_location: Callable | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


CONFIG_KEY = "circles_config"  # the run's config.yaml, as text, inside every checkpoint
JOB_KEY = "circles_slurm_job"  # the SLURM job that wrote a checkpoint (None outside one)
RUN_KEY = "circles_run"  # the name of the run directory of the fit that wrote a checkpoint
