"""Where a command's run goes and what it is called, settled from the parsed config before
anything is built."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from circles.cli.checks import check_hyperparameters
from circles.cli.slurm import hpc_checkpoint
from circles.data.module import CirclesDataModule
from circles.errors import ConfigError, note
from circles.model.classifier import CirclesClassifier
from circles.runs.checkpoints import (
    JOB_KEY,
    RUN_KEY,
    data_difference,
    load_checkpoint_file,
    load_lightning_checkpoint,
    resolve_checkpoint,
    run_of_checkpoint,
    slurm_job,
)
from circles.runs.directory import CHECKPOINTS, CONFIG, EVALUATIONS, run_name
from circles.runs.logger import DEFAULT_RUNS
from circles.runs.names import run_label, short, shortened

DATA_STATE = CirclesDataModule.__qualname__  # the key of the data module's state in a checkpoint


def settle_runs_and_checkpoint(
    config: Namespace, subcommand: str
) -> tuple[Path, dict[str, Any]] | None:
    """Settle in ``config`` what depends on other settings: ``ckpt_path best|last`` becomes the
    newest run's file (:func:`_checkpoint_path`); where the run goes and what it is called
    (:func:`_settle_run`); the data the checkpoint was trained on (:func:`_settle_data`). Returns
    the checkpoint's path and the checkpoint, loaded safely, if there is one."""
    path = _checkpoint_path(config, subcommand)
    checkpoint = load_lightning_checkpoint(path) if path is not None else {}
    _settle_run(config, subcommand, path, checkpoint.get(RUN_KEY))
    if path is None:
        return None
    config.ckpt_path = str(path)
    check_hyperparameters(path, checkpoint.get("hyper_parameters") or {})
    if subcommand != "fit":
        _check_model_options(config, path, checkpoint.get("hyper_parameters") or {})
    _settle_data(config, subcommand, checkpoint)
    return path, checkpoint


def _checkpoint_path(config: Namespace, subcommand: str) -> Path | None:
    """The checkpoint file ``ckpt_path`` names (``best``/``last``: the newest run's; ``hpc``: the
    hpc checkpoint in ``trainer.default_root_dir``); None for a fit from scratch. Evaluations need
    one. A fit in a SLURM job resumes from an hpc checkpoint only its own job wrote (a requeue),
    through the same checks as any checkpoint: Lightning would restore any it finds."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None and subcommand != "fit":
        raise ConfigError(
            "ckpt_path",
            f"given for {subcommand}: 'best', 'last' or a checkpoint file",
            None,
            f"Without one, {subcommand} would evaluate an untrained network.",
        )
    root = Path(config.trainer.get("default_root_dir") or ".")
    hpc = hpc_checkpoint(root)
    if ckpt_path == "hpc" and hpc is None:
        raise ConfigError(
            "ckpt_path",
            "'hpc' only where a SLURM requeue saved one (hpc_ckpt_N.ckpt in "
            "trainer.default_root_dir)",
            ckpt_path,
            "There is none; give 'last' or a checkpoint file.",
        )
    if ckpt_path == "hpc":
        return hpc
    if ckpt_path is None and hpc is not None and slurm_job() is not None:
        return _own_hpc_checkpoint(hpc)
    if ckpt_path is None:
        return None
    return resolve_checkpoint(ckpt_path, _runs_root(config))


def _own_hpc_checkpoint(hpc: Path) -> Path:
    """``hpc`` if this SLURM job wrote it (the job was requeued and resumes); refused otherwise."""
    job = slurm_job()
    written_by = load_checkpoint_file(hpc).get(JOB_KEY) if hpc.is_file() else None
    if written_by == job:
        return hpc
    who = f"SLURM job {written_by}" if written_by else "a job that did not record itself"
    raise ConfigError(
        "trainer.default_root_dir",
        f"a folder without another job's hpc checkpoint for SLURM job {job}",
        str(hpc.parent),
        f"It holds {hpc.name}, written by {who}: Lightning would restore it into this run. Give "
        f"--ckpt_path {hpc} to continue that run (its settings are checked as any checkpoint's), "
        "or another --trainer.default_root_dir.",
    )


def _settle_run(
    config: Namespace, subcommand: str, path: Path | None, written_by: str | None
) -> None:
    """The run's directory: the logger's folder defaults to ``trainer.default_root_dir``; ``fit``
    from ``best``/``last`` continues in that run's directory, from an hpc checkpoint in the run
    that wrote it (``written_by``, unless a version is given); a new run is named by what it does;
    without a logger the run still gets its directory from the logger's allocator
    (:class:`circles.runs.logger.RunDirectory`, no TensorBoard events); evaluations go with the
    run that trained their checkpoint."""
    logger = _run_logger_args(config)
    if logger is not None and logger.get("save_dir") is None:
        logger.save_dir = config.trainer.get("default_root_dir") or "."
    named = subcommand == "fit" and path is not None and str(path) != config.get("ckpt_path")
    run = run_of_checkpoint(path) if named and path is not None else None
    if subcommand == "fit" and path is not None and path.name.startswith("hpc_ckpt_"):
        run = None if logger is None or logger.get("version") is not None else written_by
    if run is not None and logger is not None:
        logger.version = run
    if logger is not None and logger.get("version") is None and not logger.get("label"):
        logger.label = _run_label(config, subcommand, path)
    if config.trainer.get("logger") is False:
        label = _run_label(config, subcommand, path) if run is None else ""
        directory = Namespace(
            save_dir=config.trainer.get("default_root_dir") or ".",
            name=DEFAULT_RUNS,
            version=run,
            label=label,
        )
        config.trainer.logger = Namespace(
            class_path="circles.runs.logger.RunDirectory", init_args=directory
        )
        logger = directory
    if subcommand != "fit" and logger is not None and logger.get("version") is None:
        _place_evaluation(logger, path)
    if subcommand == "fit" and path is None and logger is not None:
        _check_new_run(logger)


def _check_new_run(logger: Namespace) -> None:
    """A fit from scratch into a run directory named by hand (``version``) that already holds a
    run would replace its checkpoints and config and mix its curves with the new ones."""
    version = logger.get("version")
    if version is None:
        return
    name = run_name(version) if isinstance(version, int) else str(version)
    run = Path(logger.get("save_dir") or ".") / logger.get("name", DEFAULT_RUNS) / name
    held = sorted(
        p.name for p in [run / CONFIG, *(run / CHECKPOINTS).glob("*.ckpt")] if p.is_file()
    )
    if held:
        raise ConfigError(
            "trainer.logger.init_args.version",
            "a run directory that holds no run yet, for a fit from scratch",
            version,
            f"{run} holds a run ({', '.join(held)}). Continue it with --ckpt_path "
            f"{run / CHECKPOINTS / 'last.ckpt'}, or give a new version.",
        )


def _settle_data(config: Namespace, subcommand: str, checkpoint: dict[str, Any]) -> None:
    """The data of an evaluation follows the checkpoint's file when it names none, and differing
    data gets a note (fit refuses it: :func:`circles.runs.checkpoints.resume_conflicts`); the
    network's inputs are the features it was trained on, whatever the command says."""
    data = config.get("data")
    if data is None:
        return
    trained_on = checkpoint.get("datamodule_hyper_parameters") or {}
    files = (checkpoint.get(DATA_STATE) or {}).get("files") or {}
    if subcommand != "fit" and data.get("path") is None:
        _adopt_trained_file(data, trained_on, files)
    text = data_difference(trained_on, data, files)
    if text and subcommand != "fit":
        note(text, beside_result=True)
    features = (checkpoint.get("hyper_parameters") or {}).get("features")
    if features and list(data.features) != list(features):
        data.features = list(features)


# How the network runs, not what it is: an evaluation takes them from its own command
RUNTIME_MODEL_OPTIONS = ("compile_mode",)


def _check_model_options(config: Namespace, path: Path, trained: Mapping[str, Any]) -> None:
    """An evaluation runs the network its checkpoint holds (LightningCLI puts the checkpoint's
    model settings in place of the config's): a model setting given otherwise than both its
    default and the checkpoint's is refused, not dropped."""
    model = config.get("model")
    if not isinstance(model, Namespace):
        return
    defaults = inspect.signature(CirclesClassifier.__init__).parameters
    for name, value in model.as_dict().items():
        if name in RUNTIME_MODEL_OPTIONS:
            continue
        default = defaults[name].default if name in defaults else None
        if name in trained and not _same(value, default) and not _same(value, trained[name]):
            raise ConfigError(
                f"model.{name}",
                f"left out or {_plain(trained[name])!r} (the checkpoint's, {path.name})",
                _plain(value),
                "An evaluation runs the network the checkpoint holds; to evaluate another, "
                "train it with fit.",
            )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _place_evaluation(logger: Namespace, checkpoint: Path | None) -> None:
    """Validate, test and predict runs go with the run that trained their checkpoint, in its
    ``evaluations`` folder (``0003-relu-.../evaluations/0000-test``), or for a checkpoint from
    elsewhere in the runs' own ``evaluations`` folder: never among the fits, and their scalars
    apart from the fits' curves. A run this process may not write into (a read-only copy of the
    runs) keeps the evaluation in ``trainer.default_root_dir``'s runs instead."""
    run = checkpoint.parent.parent if checkpoint is not None else None
    writable = run is not None and os.access(run, os.W_OK)
    if checkpoint is not None and run_of_checkpoint(checkpoint) is not None and writable:
        logger.save_dir = str(run)
        logger.name = EVALUATIONS
    else:
        logger.name = f"{logger.get('name', DEFAULT_RUNS)}/{EVALUATIONS}"
    logger.evaluation = True


# Generated-data settings: given otherwise than the checkpoint's, they say the user chose generated
# data to test on.
GENERATED = ("dataset", "classes", "noise", "factor", "n_samples", "test_samples")


def _adopt_trained_file(
    data: Namespace, trained_on: dict[str, Any], files: dict[str, dict[str, Any]]
) -> None:
    """Test, validate and predict on the file the checkpoint trained with (its classes, its
    held-out points), found by the resolved path the checkpoint recorded, unless the command
    names generated data that the checkpoint's settings do not (then that data is what it asked
    for)."""
    if not trained_on.get("path") or any(
        k in trained_on and data.get(k) != trained_on[k] for k in GENERATED
    ):
        return
    # its classes and held-out points
    for key in ("path", "test_path", "val_fraction", "test_fraction", "seed"):
        data[key] = trained_on.get(key, data.get(key))
    for key, record in files.items():
        data[key] = record.get("resolved", data[key])


def _run_label(config: Namespace, subcommand: str, checkpoint: Path | None) -> str:
    """What a new run does, for its directory's name: ``relu-10x10-sgd0.1-e1000-circles`` for
    ``fit`` (the model first: what runs differ in most, where TensorBoard's cards cut names off);
    the subcommand for the others (and the checkpoint's name, for one that is not in a run
    directory)."""
    # in a run's evaluations folder the run names what it evaluated; elsewhere, the file
    if subcommand != "fit":
        from_elsewhere = checkpoint is not None and run_of_checkpoint(checkpoint) is None
        return (
            f"{subcommand}-{checkpoint.stem}"
            if from_elsewhere and checkpoint is not None
            else subcommand
        )
    optimizer = (
        config.get("optimizer") if isinstance(config.get("optimizer"), Namespace) else Namespace()
    )
    dataset = Path(config.data.path).stem if config.data.get("path") else config.data.dataset
    if not config.data.get("path") and config.data.get("classes") not in (None, 2):
        dataset += str(config.data.classes)  # spiral3: a three-arm spiral
    settings = {
        "model.activation": config.model.activation,
        "model.hidden_sizes": list(config.model.hidden_sizes),
        "optimizer.class_path": optimizer.get("class_path"),
        "optimizer.init_args.lr": (optimizer.get("init_args") or Namespace()).get("lr"),
        "trainer.max_epochs": config.trainer.max_epochs,
    }
    if config.model.get("members", 1) > 1:
        settings["model.members"] = config.model.members
    label = "-".join(
        [run_label({k: v for k, v in settings.items() if v is not None}), *_callback_parts(config)]
    )
    return shortened(f"{label}-{short(dataset)}")


# callbacks that change what a run is, as their part of its name: a run stopped early or preceded
# by the learning-rate finder is told apart from the plain one
_CALLBACK_PARTS = {"EarlyStopping": "earlystop", "LearningRateReport": "lrfind"}


def _callback_names(trainer: Any) -> list[str]:
    """The class names of the configured ``trainer.callbacks``, in order."""
    callbacks = trainer.get("callbacks") if trainer is not None else None
    if not isinstance(callbacks, list):
        return []
    paths = [c.get("class_path") if isinstance(c, Mapping | Namespace) else None for c in callbacks]
    return [str(path).rsplit(".", 1)[-1] for path in paths if path]


def _callback_parts(config: Namespace) -> list[str]:
    return [
        _CALLBACK_PARTS[n] for n in _callback_names(config.get("trainer")) if n in _CALLBACK_PARTS
    ]


def run_hyperparameters(config: Mapping[str, Any], bayes: float | None = None) -> dict[str, Any]:
    """The run's settings that the model's and data's hyperparameters leave out: seed, epochs,
    the optimizer and the settings of it that were chosen (not its defaults); with ``bayes``, the
    best accuracy possible on the data."""
    trainer = config.get("trainer") or {}
    hparams: dict[str, Any] = {
        "seed_everything": config.get("seed_everything"),
        "max_epochs": trainer.get("max_epochs"),
    }
    optimizer = config.get("optimizer")
    if isinstance(optimizer, Mapping) and optimizer.get("class_path"):
        module, name = optimizer["class_path"].rsplit(".", 1)
        defaults = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        hparams["optimizer"] = name
        hparams.update(
            {
                f"optimizer.{k}": v
                for k, v in (optimizer.get("init_args") or {}).items()
                if k not in defaults or not _same(v, defaults[k].default)
            }
        )
    callbacks = _callback_names(trainer)
    if callbacks:  # e.g. EarlyStopping: max_epochs is then a limit, not what was trained
        hparams["callbacks"] = ", ".join(callbacks)
    hparams["bayes_acc"] = f"{bayes:.4f}" if bayes is not None else "unknown"
    return hparams


def _same(value: Any, default: Any) -> bool:
    """A setting equals its default, a list as the tuple it stands for (``betas: [0.9, 0.999]``)."""
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return bool(value == default)


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
