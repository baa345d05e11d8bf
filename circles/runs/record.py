"""What a run records of itself: its config, as ``config.yaml`` in the run directory and inside
every checkpoint, so that ``--config <run>/config.yaml`` repeats the run and a resume can tell
what changed; and which data a checkpoint was trained on."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import SaveConfigCallback
from typing_extensions import override

from circles.errors import ConfigError, InputError, note
from circles.model.classifier import CirclesClassifier
from circles.runs.checkpoints import CONFIG_KEY, JOB_KEY, RUN_KEY, load_lightning_checkpoint
from circles.runs.directory import CHECKPOINTS, CONFIG, atomic_file
from circles.runs.names import same
from circles.runs.slurm import slurm_job

# What a resumed fit must train with as the run did: what the model is, what it learns from and how
# it steps.
TRAINED_WITH = ("seed_everything", "model", "data")
FREE_ON_RESUME = ("data.predict_path", "data.test_samples")  # evaluation only


class RunConfig(SaveConfigCallback):
    """The run's ``config.yaml``: the command's resolved config less what ties it to this run
    (``ckpt_path``, the logger's ``version`` and ``label``), so ``--config <run>/config.yaml``
    repeats the run, in a new run directory. Every checkpoint carries the same text, so a resume can
    tell what changed (:meth:`check_fit`).

    Unlike Lightning's own saver, ``fit`` writes it when training starts, so a fit that ends
    before (a refused resume, a bad file) leaves the run's record as it was, and a resumed fit
    rewrites it with what it changed (e.g. ``trainer.max_epochs``)."""

    def __init__(
        self, parser: Any, config: Any, config_filename: str = CONFIG, **kwargs: Any
    ) -> None:
        """
        Args:
            parser: The parser of the subcommand (LightningCLI passes it).
            config: The subcommand's config (LightningCLI passes it).
            config_filename: The file's name in the run directory.
            **kwargs: LightningCLI's other options for its config saver (``overwrite``,
                ``multifile``): unused, the file is always replaced whole.
        """
        config = config.clone()
        if "ckpt_path" in config:
            config.ckpt_path = None
        logger = config.trainer.get("logger")
        if isinstance(logger, Namespace) and isinstance(logger.get("init_args"), Namespace):
            logger.init_args.version = None  # a repeat is a new run, named by its own settings
            if "label" in logger.init_args:
                logger.init_args.label = ""
        super().__init__(parser, config, config_filename, overwrite=True)
        self.text = parser.dump(config, skip_none=False)
        self.run_name: str | None = None

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            self._write(trainer)

    def check_fit(self, trainer: Any, checkpoint: dict[str, Any] | None) -> None:
        """Before a fit (Lightning writes into the run's folder from its set-up on, so the command
        line asks first): ``fit --ckpt_path`` continues a run only with the settings it was
        trained with; a fit from scratch into a run directory named by hand (``version``) that
        holds a run is refused (it would replace its checkpoints and mix its curves with the new
        ones)."""
        if checkpoint is None:
            run = Path(trainer.log_dir)  # collective under DDP: every rank asks
            files = [run / CONFIG, *(run / CHECKPOINTS).glob("*.ckpt")]
            if held := sorted(p.name for p in files if p.is_file()):
                raise ConfigError(
                    "trainer.logger.init_args.version",
                    "a run directory that holds no run yet, for a fit from scratch",
                    run.name,
                    f"{run} holds a run ({', '.join(held)}). Continue it with --ckpt_path "
                    f"{run / CHECKPOINTS / 'last.ckpt'}, or give a new version.",
                )
        elif conflicts := resume_conflicts(checkpoint, yaml.safe_load(self.text)):
            raise InputError(
                "fit --ckpt_path continues a run with the settings it was trained with, and "
                f"these differ: {'; '.join(conflicts)}. Leave them out to continue the run "
                "(trainer settings such as --trainer.max_epochs may change), or start a new "
                "run without --ckpt_path."
            )

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        log_dir = trainer.log_dir  # collective under DDP: every rank asks
        self.run_name = Path(log_dir).name if log_dir else None
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            with atomic_file(Path(log_dir) / self.config_filename) as f:
                f.write(self.text)

    @override
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.text
        checkpoint[JOB_KEY] = slurm_job()
        checkpoint[RUN_KEY] = self.run_name


def flattened(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {
        k: v for key, value in tree.items() for k, v in flattened(value, f"{prefix}{key}.").items()
    } or {prefix: {}}


def resume_conflicts(checkpoint: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The settings in ``TRAINED_WITH`` that the config ``now`` sets otherwise than the
    checkpoint's record of its run (its ``config.yaml`` text), whose model settings are the
    hyperparameters the checkpoint holds (what its weights were built with, whatever the text
    says), as ``key (trained: a, now: b)``.
    A resume that changed them would either ignore them silently (Lightning restores the model
    and the optimizer's state, learning rate included) or train something that is no longer the
    run on record, so the CLI refuses it. Data files compare by where they resolve to, as the
    checkpoint's data state recorded them (whether their content is the same is the data
    module's check)."""
    if not (trained := checkpoint.get(CONFIG_KEY)):
        return []
    before = {k.rstrip("."): v for k, v in flattened(yaml.safe_load(trained)).items()}
    after = {k.rstrip("."): v for k, v in flattened(dict(now)).items()}
    before |= {  # what the weights were built with
        f"model.{k}": v
        for k, v in (checkpoint.get("hyper_parameters") or {}).items()
        if f"model.{k}" in before
    }
    for key, record in ((checkpoint.get("CirclesDataModule") or {}).get("files") or {}).items():
        if record.get("resolved") and after.get(f"data.{key}") is not None:
            before[f"data.{key}"] = record["resolved"]
            after[f"data.{key}"] = str(Path(after[f"data.{key}"]).resolve())
    keys = sorted(
        k
        for k in set(before) | set(after)
        if k.split(".")[0] in TRAINED_WITH
        and k not in FREE_ON_RESUME
        and before.get(k) != after.get(k)
    )
    # a setting of a class that differs from the checkpoint's differs anyway
    other_class = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".class_path")}
    return [
        f"{k} (trained: {before.get(k)!r}, now: {after.get(k)!r})"
        for k in keys
        if not any(k.startswith(f"{c}.init_args.") for c in other_class)
    ]


# Generated-data settings: given otherwise than the checkpoint's, they say the user chose generated
# data to test on.
GENERATED = ("dataset", "classes", "noise", "factor", "n_samples", "test_samples")


# What a checkpoint's data is: given otherwise, an evaluation's result is on other data.
DATA_KEYS = (
    "path",
    "test_path",
    "dataset",
    "classes",
    "noise",
    "factor",
    "n_samples",
    "val_fraction",
    "test_fraction",
    "seed",
)


def settle_data(data: Namespace | None, subcommand: str, checkpoint: dict[str, Any]) -> None:
    """The data of an evaluation follows the checkpoint's file when it names none (its classes,
    its held-out points, found by the resolved path the checkpoint recorded), unless the command
    names generated data the checkpoint's settings do not; the network's inputs are the features
    it was trained on.

    An evaluation on other data than the checkpoint was trained on gets a note (not an error:
    testing a model on noisier data is a fair question; fit refuses it), so that ``test
    --ckpt_path best`` after a moons run is not taken for a result on moons. A file is the same
    file when it resolves to the path the checkpoint recorded."""
    if data is None or not checkpoint:
        return
    trained_on = checkpoint.get("datamodule_hyper_parameters") or {}
    files = (checkpoint.get("CirclesDataModule") or {}).get("files") or {}
    own = [k for k in GENERATED if k in trained_on and data.get(k) != trained_on[k]]
    if subcommand != "fit" and data.get("path") is None and trained_on.get("path") and not own:
        for key in ("path", "test_path", "val_fraction", "test_fraction", "seed"):
            data[key] = trained_on.get(key, data.get(key))
        for key, record in files.items():
            data[key] = record.get("resolved", data[key])
    differ = [
        k
        for k in DATA_KEYS
        if k in trained_on
        and (
            str(Path(data[k]).resolve()) != files[k]["resolved"]
            if files.get(k, {}).get("resolved") is not None and data.get(k) is not None
            else data.get(k) != trained_on[k]
        )
    ]
    if differ and subcommand != "fit":
        note(
            "the checkpoint was trained on "
            + ", ".join(f"data.{k}={trained_on[k]!r}" for k in differ)
            + "; this run uses "
            + ", ".join(f"{data.get(k)!r}" for k in differ)
            + " (pass the run's config.yaml with --config to use its data).",
            beside_result=True,
        )
    if features := (checkpoint.get("hyper_parameters") or {}).get("features"):
        data.features = list(features)


def check_trained_model(subcommand: str, model: dict[str, Any], config: Namespace) -> None:
    """Refuse a model setting of ``config`` that differs from both its default and the value in
    ``model``, the settings a checkpoint's network was trained with (``fit`` would continue, the
    evaluations would evaluate that network, not the one asked for)."""
    for key, value in model.items():
        if value is None and _default(key) is not None:  # the parser lets a null pass as unset
            raise InputError(
                f"{config.get('ckpt_path')} holds model.{key}: null, which this model does not "
                f"take (its default is {_default(key)!r}); train the network again with fit."
            )
        now = config.get(f"model.{key}")  # None for a link's target (num_classes)
        if now is not None and not same(now, value) and not same(now, _default(key)):
            raise ConfigError(
                f"model.{key}",
                f"left out or {value!r}, the checkpoint's",
                list(now) if isinstance(now, tuple) else now,
                "fit --ckpt_path continues the network the checkpoint holds; to train another, "
                "start a new run without --ckpt_path."
                if subcommand == "fit"
                else f"{subcommand} evaluates the network the checkpoint holds; to evaluate "
                "another, train it with fit.",
            )


def _default(key: str) -> Any:
    parameter = inspect.signature(CirclesClassifier).parameters.get(key)
    return parameter.default if parameter is not None else None


def model_refusal(checkpoint: Path, subcommand: str, config: Namespace) -> str | None:
    """Why the checkpoint file does not hold the network ``config`` describes (a model setting of it
    that :func:`check_trained_model` refuses; how the network trains, the optimizer, is free), or
    None; a file that is no checkpoint of this project is refused, not passed over."""
    try:
        check_trained_model(
            subcommand, load_lightning_checkpoint(checkpoint).get("hyper_parameters", {}), config
        )
    except ConfigError as err:
        return f"{err.field} must be {err.allowed}, got {err.got!r}"
    return None
