"""The command line: LightningCLI with the project's defaults and wiring, and its failures as one-line errors."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from circles.callbacks import (
    BayesOptimalCallback, ChapterProgressPrinter, DecisionBoundaryCallback, GracefulStopCallback, MembersTable,
    PredictionWriter, RunCheckpoint, RunSummary, interruption,
)
from circles.data import CirclesDataModule, read_points_csv
from circles.errors import (
    CirclesArgumentParser, CirclesError, ConfigError, SettingError, note, os_error_text, report,
)
from circles.names import run_label
from circles.model import CirclesClassifier, TrainingDiverged, check_independent_members
from circles.runs import (
    CONFIG_KEY, DEFAULT_RUNS, AtomicCheckpointIO, CheckpointError, ResumeError, RunConfig, TensorBoardRunLogger,
    checkpoint_mismatch, data_difference, load_lightning_checkpoint, next_version, resolve_checkpoint,
    resume_conflicts, run_of_checkpoint,
)

CALLBACKS = {"checkpoint": RunCheckpoint, "boundary": DecisionBoundaryCallback, "chapter_log": ChapterProgressPrinter}
SECTIONS = ("data", "model", *CALLBACKS, "trainer")  # where a setting named in an error is looked up, in this order


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for ``CirclesClassifier`` on ``CirclesDataModule``."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(
            CirclesClassifier,
            CirclesDataModule,
            seed_everything_default=42,
            save_config_callback=RunConfig,
            save_config_kwargs={},
            trainer_defaults={
                "max_epochs": 1000,
                "log_every_n_steps": 1,  # metrics are written once per epoch: no warning about few steps per epoch
                "enable_model_summary": False,  # its table lists the metric objects; the config says the shape
                "logger": lazy_instance(TensorBoardRunLogger),
                "callbacks": [GracefulStopCallback(), PredictionWriter(), BayesOptimalCallback(), MembersTable(),
                              RunSummary()],
            },
            parser_kwargs={"description": "Train MLPs on two concentric circles and watch why non-linearity matters."},
            parser_class=kwargs.pop("parser_class", CirclesArgumentParser),
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for section, callback in CALLBACKS.items():
            parser.add_lightning_class_args(callback, section)
        parser.link_arguments("data.features", "model.features")  # the network's input layer follows the data
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")  # and its output layer
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.set_defaults({"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}})

    # -- before anything is built: where runs go, which checkpoint ------------------------------------------------

    _checkpoint_shapes: Optional[dict[str, tuple[int, ...]]] = None
    _checkpoint_classes: Optional[int] = None
    _checkpoint_data: Optional[dict[str, Any]] = None  # the data module's state in the checkpoint: the class names
    _resume_conflicts: list[str] = []

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then settle what depends on other settings (:func:`_settle_runs_and_checkpoint`) before LightningCLI
        reads the checkpoint's hyperparameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        self.save_config_kwargs["default_root_dir"] = config.trainer.get("default_root_dir")  # as the user gave it
        checkpoint = _settle_runs_and_checkpoint(config, subcommand)
        if checkpoint is None:
            return
        self._checkpoint_shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()
                                   if isinstance(v, torch.Tensor)}
        self._checkpoint_classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
        self._checkpoint_data = checkpoint.get(CirclesDataModule.__qualname__)
        if subcommand == "fit":  # before LightningCLI replaces the model's settings with the checkpoint's
            now = yaml.safe_load(parser.dump(self.config))[subcommand]
            self._resume_conflicts = resume_conflicts(checkpoint.get(CONFIG_KEY), now)

    # -- building ---------------------------------------------------------------------------------------------------

    def instantiate_classes(self) -> None:
        with self._reported():
            try:
                super().instantiate_classes()
            except ValueError as err:
                # LightningCLI builds the optimizer once, right after the model and before the trainer, to check its
                # settings: a ValueError there is torch.optim rejecting one (``Invalid learning rate: -1.0``).
                if isinstance(err, ConfigError) or getattr(self, "model", None) is None or hasattr(self, "trainer"):
                    raise
                raise SettingError("optimizer", err) from None
            config = self.config[self.subcommand] if self.subcommand else self.config
            optimizer = config.get("optimizer")
            if self.subcommand == "fit" and isinstance(optimizer, Namespace) and optimizer.get("class_path"):
                module, name = optimizer.class_path.rsplit(".", 1)
                check_independent_members(self.model.members, getattr(importlib.import_module(module), name),
                                          config.trainer.get("gradient_clip_val"),
                                          config.trainer.get("gradient_clip_algorithm"))
        if self._resume_conflicts:  # reported after the values themselves were checked
            raise ResumeError(
                f"fit --ckpt_path continues a run with the settings it was trained with, and these differ: "
                f"{'; '.join(self._resume_conflicts)}. Leave them out to continue the run (trainer settings such as "
                "--trainer.max_epochs may change), or start a new run without --ckpt_path.")
        trained_classes = self._checkpoint_classes
        if trained_classes is not None and trained_classes != self.datamodule.num_classes:
            raise CheckpointError(
                f"{self.config[self.subcommand].ckpt_path} holds a network for {trained_classes} classes and the data "
                f"has {self.datamodule.num_classes}. Give the data it was trained on: --config <its run>/config.yaml, "
                "or the same data.dataset, data.classes or data.path.")
        if self._checkpoint_data is not None:  # the same check Lightning runs when it restores the checkpoint, but
            self.datamodule.load_state_dict(self._checkpoint_data)  # before a run directory exists
        found = self._checkpoint_shapes
        mismatch = found and checkpoint_mismatch(found, {k: tuple(v.shape) for k, v in self.model.state_dict().items()})
        if mismatch:  # Lightning builds the model from the checkpoint's hyperparameters: only foreign files get here
            raise CheckpointError(f"{self.config[self.subcommand].ckpt_path} does not fit the model: its weights differ "
                                  f"in {mismatch}. Use a checkpoint written by this project.")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        plugins = self.config_init.get(str(self.subcommand), self.config_init).trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        try:
            return super().instantiate_trainer(plugins=plugins, **kwargs)
        except (MisconfigurationException, ValueError) as err:  # the Trainer's own checks of its arguments
            raise SettingError("trainer", err) from None

    # -- running ------------------------------------------------------------------------------------------------------

    def before_fit(self) -> None:
        """Add what the model and data hparams leave out (optimizer, epochs, seed) to the run's hyperparameters."""
        hparams = _run_hyperparameters(self.config[self.subcommand])
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def fit(self, **kwargs: Any) -> None:
        with self._reported():
            try:
                self.trainer.fit(**kwargs)
            except TrainingDiverged as err:
                checkpoint = self.trainer.checkpoint_callback
                kept = [p for p in (checkpoint.best_model_path, checkpoint.last_model_path) if p and Path(p).is_file()]
                saved = f" Checkpoints from before the divergence: {', '.join(map(os.path.normpath, kept))}." if kept else ""
                raise TrainingDiverged(f"{err} Set it with --optimizer.init_args.lr.{saved}") from None
        stop = next(cb for cb in self.trainer.callbacks if isinstance(cb, GracefulStopCallback))
        if stop.signal is not None:
            raise interruption(self.trainer, "fit", stop.signal)

    def validate(self, **kwargs: Any) -> None:
        with self._reported():
            self.trainer.validate(**kwargs)

    def test(self, **kwargs: Any) -> None:
        with self._reported():
            self.trainer.test(**kwargs)

    def before_predict(self) -> None:
        """Check the CSV to predict on before a run directory is created for the predictions."""
        if self.datamodule.predict_path:
            with self._reported():
                read_points_csv(self.datamodule.predict_path)

    def predict(self, **kwargs: Any) -> None:
        with self._reported():
            self.trainer.predict(**kwargs)

    # -- errors -------------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Turn what goes wrong inside into the one-line errors of :func:`cli_main`: a bad value named by its config
        section, a setting Lightning rejected, SIGTERM or Ctrl-C as an interruption of the subcommand. Lightning
        ignores Ctrl-C after handling one, so Ctrl-C's handler is put back afterwards."""
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            yield
        except ConfigError as err:
            raise err.qualified(self._section_of(err.field, err.got)) from None
        except MisconfigurationException as err:  # Lightning names the setting in backticks: "`mode` can be ..."
            name = re.search(r"`(\w+)`", str(err))
            raise SettingError(self._section_of(name.group(1)) if name else None, err) from None
        except SIGTERMException:
            raise interruption(self.trainer, self.subcommand, signal.SIGTERM) from None
        except SystemExit as err:
            if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C with sys.exit(1)
                raise interruption(self.trainer, self.subcommand, signal.SIGINT) from None
            raise
        finally:
            if ctrl_c is not None:
                signal.signal(signal.SIGINT, ctrl_c)

    def _section_of(self, field: str, value: Any = None) -> Optional[str]:
        """The config section with a setting called ``field``; of several (``every_n_epochs``), the one set to
        ``value``."""
        config = self.config.get(str(self.subcommand), self.config)
        sections = [s for s in SECTIONS if isinstance(config.get(s), Namespace) and field in config[s]]
        return next((s for s in sections if config[s][field] == value), sections[0] if sections else None)


def _settle_runs_and_checkpoint(config: Namespace, subcommand: str) -> Optional[dict[str, Any]]:
    """Settle in ``config`` what depends on other settings: the logger's folder defaults to
    ``trainer.default_root_dir``, and without a logger the run directory becomes the ``default_root_dir``;
    ``ckpt_path best|last`` becomes the newest run's file, and ``fit`` from it continues in that run's directory;
    the data's features follow the checkpoint's, and so does its CSV file when none is given. Returns the checkpoint,
    loaded safely, if there is one."""
    logger = _run_logger_args(config)
    if logger is not None and logger.get("save_dir") is None:
        logger.save_dir = config.trainer.get("default_root_dir") or "."
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None and subcommand != "fit":
        raise ConfigError("ckpt_path", f"given for {subcommand}: 'best', 'last' or a checkpoint file", None,
                          f"Without one, {subcommand} would evaluate an untrained network.")
    path = resolve_checkpoint(ckpt_path, _runs_root(config)) if ckpt_path not in (None, "hpc") else None
    run = run_of_checkpoint(path) if subcommand == "fit" and path is not None and str(path) != ckpt_path else None
    if run is not None and logger is not None:
        logger.version = run
    if logger is not None and logger.get("version") is None and not logger.get("label"):
        logger.label = _run_label(config, subcommand, path)
    if config.trainer.get("logger") is False:
        root = _runs_root(config)
        config.trainer.default_root_dir = str(root / (run or f"version_{next_version(root)}"))
    if path is None:
        return None
    config.ckpt_path = str(path)
    checkpoint = load_lightning_checkpoint(path)
    data = config.get("data")
    trained_on = checkpoint.get("datamodule_hyper_parameters") or {}
    if subcommand != "fit" and data is not None and trained_on.get("path") and data.get("path") is None:
        for key in ("path", "test_path", "val_fraction", "test_fraction", "seed"):  # its classes and held-out points
            data[key] = trained_on.get(key, data.get(key))
    text = data_difference(trained_on, data)
    if text and subcommand != "fit":  # fit refuses other data (resume_conflicts)
        note(text)
    features = (checkpoint.get("hyper_parameters") or {}).get("features")
    if features and data is not None and list(data.features) != list(features):
        data.features = list(features)  # the network was trained on these inputs; others would fit silently
    return checkpoint


def _run_label(config: Namespace, subcommand: str, checkpoint: Optional[Path]) -> str:
    """What a new run does, for its directory's name: ``circles-relu-10x10-sgd0.1-e1000`` for ``fit``;
    ``test-<the checkpoint's run>`` for the other subcommands."""
    if subcommand != "fit":
        trained = re.sub(r"^version_\d+-?", "", run_of_checkpoint(checkpoint) or "") if checkpoint else ""
        return "-".join(filter(None, [subcommand, trained]))
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), Namespace) else Namespace()
    dataset = Path(config.data.path).stem if config.data.get("path") else config.data.dataset
    if not config.data.get("path") and config.data.get("classes") not in (None, 2):
        dataset += str(config.data.classes)  # spiral3: a three-arm spiral
    settings = {"data.dataset": dataset, "model.activation": config.model.activation,
                "model.hidden_sizes": list(config.model.hidden_sizes), "optimizer.class_path": optimizer.get("class_path"),
                "optimizer.init_args.lr": (optimizer.get("init_args") or Namespace()).get("lr"),
                "trainer.max_epochs": config.trainer.max_epochs}
    if config.model.get("members", 1) > 1:
        settings["model.members"] = config.model.members
    return run_label({k: v for k, v in settings.items() if v is not None})


def _run_hyperparameters(config: Namespace) -> dict[str, Any]:
    """The run's settings that the model's and data's hyperparameters leave out: seed, epochs, the optimizer and the
    settings of it that were chosen (not its defaults)."""
    hparams: dict[str, Any] = {"seed_everything": config.seed_everything, "max_epochs": config.trainer.max_epochs}
    optimizer = config.get("optimizer")
    if isinstance(optimizer, Namespace) and optimizer.get("class_path"):
        module, name = optimizer.class_path.rsplit(".", 1)
        defaults = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        hparams["optimizer"] = name
        hparams.update({f"optimizer.{k}": v for k, v in (optimizer.get("init_args") or Namespace()).items()
                        if k not in defaults or v != defaults[k].default})
    return hparams


def _run_logger_args(config: Namespace) -> Optional[Namespace]:
    """The ``init_args`` of the configured logger, if it is one that keeps runs in ``save_dir/name/version``."""
    logger = config.trainer.get("logger")
    return logger.get("init_args") if isinstance(logger, Namespace) else None


def _runs_root(config: Namespace) -> Path:
    """The folder that holds the run directories: ``<save_dir>/<name>``."""
    logger = _run_logger_args(config) or Namespace()
    save_dir = logger.get("save_dir") or config.trainer.get("default_root_dir") or "."
    return Path(save_dir) / logger.get("name", DEFAULT_RUNS)


def _leave_process_group() -> None:
    """End DDP together: every rank waits for the others, then destroys the process group, so no rank exits
    while another still talks to its store (which aborts that rank with "terminate called ...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# Lightning's messages that a user of this CLI can do nothing about: the CLI's own optimizer replacing the model's
# default one (by design), the srun hint (the SLURM scripts use srun; a workstation with SLURM installed is not a
# job), a torch deprecation inside Lightning, the prediction loop's note that it cannot tell batch indices (the
# prediction writer does not use them), and an advertisement.
_NOT_FOR_THE_USER = (r"`CirclesClassifier.configure_optimizers` will be overridden",
                     r"The `srun` command is available on your system but is not used",
                     r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                     r"Couldn't infer the batch indices fetched from your dataloader")


def _quiet_lightning() -> None:
    """Hide the messages in ``_NOT_FOR_THE_USER`` and Lightning's logger tip; every other warning still shows."""
    for message in _NOT_FOR_THE_USER:
        warnings.filterwarnings("ignore", message=message)
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(getattr(f, "__name__", "") == "_no_tip" for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_no_tip)


def _no_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip:")


def cli_main(args: Any = None) -> None:
    """Run the command line (``args`` as a list of strings; ``None`` reads ``sys.argv``)."""
    _quiet_lightning()
    try:
        CirclesCLI(args=args)
        _leave_process_group()
    except CirclesError as err:
        report(str(err))
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        report("interrupted by Ctrl-C (SIGINT).")
        raise SystemExit(130) from None
    except OSError as err:  # a full disk, a read-only folder: the file and the cause, not a traceback
        report(os_error_text(err))
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli_main()
