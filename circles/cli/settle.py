"""What the command line settles between parsing and building: the checkpoint ``ckpt_path`` names
(``best``, ``last``, ``hpc``), read safely; where the run goes and what it is called; the data an
evaluation's checkpoint was trained on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from circles.errors import ConfigError
from circles.runs.checkpoints import (
    RUN_KEY,
    load_lightning_checkpoint,
    resolve_checkpoint,
    run_of_checkpoint,
)
from circles.runs.directory import EVALUATIONS
from circles.runs.logger import DEFAULT_RUNS
from circles.runs.names import label_of
from circles.runs.record import model_refusal, settle_data
from circles.runs.slurm import hpc_resume


def settle_config(cli: Any) -> dict[str, Any] | None:
    """Settle in ``cli.config`` what depends on other settings: ``ckpt_path best|last|hpc``
    becomes a file, whose model LightningCLI's way (the checkpoint's hyperparameters over the
    config's, as it does for a file given by name); where the run goes and its name; the data the
    checkpoint was trained on. Returns the checkpoint, loaded safely, if there is one."""
    subcommand = cli.subcommand
    config = cli.config[subcommand]
    path = _checkpoint_path(config, subcommand)
    checkpoint = load_lightning_checkpoint(path) if path is not None else {}
    named = path is not None and str(path) != config.get("ckpt_path")  # best, last or hpc
    if named:
        config.ckpt_path = str(path)
        hparams = {
            k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k != "_instantiator"
        }
        cli.config = cli.parser.parse_object({subcommand: {"model": hparams}}, cli.config)
        config = cli.config[subcommand]
    _settle_run(config, subcommand, path if named else None, checkpoint.get(RUN_KEY))
    settle_data(config.get("data"), subcommand, checkpoint)
    return checkpoint or None


def _checkpoint_path(config: Namespace, subcommand: str) -> Path | None:
    """The checkpoint file ``ckpt_path`` names (``best``/``last``: the newest run's of the model the
    config describes; ``hpc``: a SLURM requeue's, :func:`circles.runs.slurm.hpc_resume`); None for
    a fit from scratch. Evaluations need one."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path == "" or (ckpt_path is None and subcommand != "fit"):
        raise ConfigError(  # "" would be read as the folder "."
            "ckpt_path",
            f"given for {subcommand}: 'best', 'last' or a checkpoint file"
            if ckpt_path is None
            else "'best', 'last' or a checkpoint file",
            ckpt_path,
            f"Without one, {subcommand} would evaluate an untrained network."
            if ckpt_path is None
            else "",
        )
    hpc = hpc_resume(config.trainer.get("default_root_dir") or ".", ckpt_path)
    return (
        hpc
        if hpc is not None or not ckpt_path
        # best|last: the newest run's of the model the config describes
        else resolve_checkpoint(
            ckpt_path, _runs_root(config), lambda file: model_refusal(file, subcommand, config)
        )
    )


def _settle_run(
    config: Namespace, subcommand: str, named: Path | None, written_by: str | None
) -> None:
    """The run's directory: the logger's folder defaults to ``trainer.default_root_dir``; ``fit``
    from ``best``/``last`` (``named``) continues in that run's directory, from an hpc checkpoint
    in the run that wrote it (``written_by``, unless a version is given); a new run is named by
    what it does;
    without a logger the run still gets its directory from the logger's allocator
    (:class:`circles.runs.logger.RunDirectory`, no TensorBoard events); evaluations go with the
    run that trained their checkpoint."""
    root = config.trainer.get("default_root_dir") or "."
    if config.trainer.get("logger") is False:
        config.trainer.logger = Namespace(
            class_path="circles.runs.logger.RunDirectory",
            init_args=Namespace(save_dir=root, name=DEFAULT_RUNS, version=None, label=""),
        )
    logger = _run_logger_args(config)
    if logger is None:
        return
    logger.save_dir = logger.get("save_dir") or root
    path = Path(config.ckpt_path) if config.get("ckpt_path") else None
    run = run_of_checkpoint(named) if named is not None and subcommand == "fit" else None
    if subcommand == "fit" and path is not None and path.name.startswith("hpc_ckpt_"):
        run = None if logger.get("version") is not None else written_by
    if run is not None:
        logger.version = run
    if subcommand != "fit" and logger.get("version") is None:
        _place_evaluation(logger, path)
    if logger.get("version") is None and not logger.get("label") and "label" in logger:
        elsewhere = path is not None and run_of_checkpoint(path) is None
        label = f"{subcommand}-{path.stem}" if elsewhere and path is not None else subcommand
        # in a run's evaluations folder the run names what it evaluated; elsewhere, the file
        logger.label = label_of(config.as_dict()) if subcommand == "fit" else label


def _place_evaluation(logger: Namespace, checkpoint: Path | None) -> None:
    """Validate, test and predict runs go with the run that trained their checkpoint, in its
    ``evaluations`` folder (``0003-relu-.../evaluations/0000-test``) with their TensorBoard events
    in that run (so TensorBoard's run list stays the fits), or for a checkpoint from elsewhere in
    the runs' own ``evaluations`` folder; their scalars apart from the fits' curves. A run this
    process may not write into (a read-only copy of the runs) keeps the evaluation in
    ``trainer.default_root_dir``'s runs instead."""
    run = checkpoint.parent.parent if checkpoint is not None else Path("?")
    if checkpoint is not None and run_of_checkpoint(checkpoint) and os.access(run, os.W_OK):
        logger.save_dir = logger.events_dir = str(run)
        logger.name = EVALUATIONS
    else:
        logger.name = f"{logger.get('name', DEFAULT_RUNS)}/{EVALUATIONS}"
    logger.evaluation = True


def _run_logger_args(config: Namespace) -> Namespace | None:
    """The ``init_args`` of the configured logger, if it is one that keeps runs in
    ``save_dir/name/version``."""
    logger = config.trainer.get("logger")
    return logger.get("init_args") if isinstance(logger, Namespace) else None


def _runs_root(config: Namespace) -> Path:
    """The folder that holds the run directories: ``<save_dir>/<name>``."""
    logger = _run_logger_args(config) or Namespace()
    save_dir = logger.get("save_dir") or config.trainer.get("default_root_dir") or "."
    return Path(save_dir) / logger.get("name", DEFAULT_RUNS)
