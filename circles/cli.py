"""The command line: LightningCLI with the project's defaults and wiring, and its failures as one-line errors."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import re
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from circles.callbacks import (
    ChapterProgressPrinter,
    DecisionBoundaryCallback,
    PredictionWriter,
    RunCheckpoint,
    RunSummary,
)
from circles.checkpoints import (
    CONFIG_KEY,
    AtomicCheckpointIO,
    CheckpointError,
    ResumeError,
    RunConfig,
    checkpoint_mismatch,
    resume_conflicts,
)
from circles.contracts import trainer_callbacks
from circles.csvdata import read_points_csv
from circles.data import CirclesDataModule
from circles.errors import CirclesError, ConfigError, SettingError, os_error_text, report
from circles.logger import TensorBoardRunLogger
from circles.model import CirclesClassifier, TrainingDiverged, check_independent_members, upgrade_state_dict
from circles.runs import run_hyperparameters, settle_runs_and_checkpoint
from circles.signals import GracefulStopCallback, interruption

CALLBACKS = {"checkpoint": RunCheckpoint, "boundary": DecisionBoundaryCallback, "chapter_log": ChapterProgressPrinter}
SECTIONS = ("data", "model", *CALLBACKS, "trainer")  # where a setting named in an error is looked up, in this order


# -- parsing --------------------------------------------------------------------------------------------------------


class CirclesArgumentParser(LightningArgumentParser):
    """Reports a parse error (unknown option, wrong type, bad YAML, missing file) as one ``circles: error:``
    paragraph that names the option and what it accepts, instead of the whole usage text."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parses with errors as exceptions where it tries alternatives
            super().error(message, ex)
        report(parse_error_text(message, getattr(ex, "subcommand_parser", None) or self))
        self.exit(2)


def parse_error_text(message: str, parser: LightningArgumentParser) -> str:
    """jsonargparse's error message, shortened to one line that names the option and what it accepts."""
    unknown = re.findall(r"does not accept option '([^']+)'", message)
    if message.startswith("unrecognized arguments:"):
        unknown = [arg[2:].split("=")[0] for arg in message.split()[2:] if arg.startswith("--")]
    if unknown:
        return " ".join(_unknown_option_text(parser, key) for key in unknown)
    text = re.sub(r'^Parser key "([^"]+)":', r"\1:", message)
    text = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", r"expected one of \1, got \2.", text)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    kinds = {"int": "an integer", "float": "a number", "bool": "true or false"}
    text = re.sub(r"Expected a (int|float|bool)\. Got value: (.*)", lambda m: f"expected {kinds[m.group(1)]}, got "
                  f"{m.group(2).strip()}.", text)
    text = re.sub(r"^Problems parsing config: ", "the config is not valid YAML: ", text)
    text = text.replace(' in "<unicode string>",', " at")
    return " ".join(text.split())


def _options(parser: LightningArgumentParser, group: str) -> list[str]:
    """The options directly inside ``group`` (``""``: the top level), in the parser's order."""
    prefix = f"{group}." if group else ""
    names = [key[len(prefix):].split(".")[0] for key in parser.get_defaults().keys() if key.startswith(prefix)]
    return [n for n in dict.fromkeys(names) if n and n != "config"]


def _unknown_option_text(parser: LightningArgumentParser, key: str) -> str:
    group, _, name = key.rpartition(".")
    options = _options(parser, group)
    if not options:
        group, name, options = "", key.split(".")[0], _options(parser, "")
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    where = f"{group} accepts" if group else "the options are"
    return f"{key} is not an option; {where}: {', '.join(options)}.{guess}"


# -- the checkpoint, between parsing and building ---------------------------------------------------------------------


@dataclass
class CheckpointFacts:
    """What ``--ckpt_path`` holds, read once after parsing (before LightningCLI replaces the model's settings with
    the checkpoint's) and checked against what is built from the config (:meth:`CirclesCLI.instantiate_classes`)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # the weights' shapes, under today's names
    num_classes: int | None  # the network's classes
    data_state: dict[str, Any] | None  # the data module's state: its classes and their names
    trained_config: str | None  # the run's config.yaml as the checkpoint recorded it
    conflicts: list[str] = field(default_factory=list)  # for fit: trained settings this command sets otherwise

    @classmethod
    def read(cls, path: Path, checkpoint: dict[str, Any], now: dict[str, Any] | None) -> CheckpointFacts:
        """The facts of a loaded ``checkpoint``; with ``now`` (fit's config as parsed), the resume conflicts."""
        state = upgrade_state_dict(dict(checkpoint["state_dict"]))
        trained, data_state = checkpoint.get(CONFIG_KEY), checkpoint.get(CirclesDataModule.__qualname__)
        files = (data_state or {}).get("files")
        return cls(path, {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
                   (checkpoint.get("hyper_parameters") or {}).get("num_classes"), data_state, trained,
                   resume_conflicts(trained, now, files) if now is not None else [])


def check_optimizer(config: Namespace, subcommand: str) -> None:
    """The configured optimizer accepts its settings (``torch.optim`` checks them when it is built: built here on a
    stand-in parameter, so an error is surely the optimizer's), and, for ``fit`` with several members, treats each
    number on its own (:func:`check_independent_members`)."""
    optimizer = config.get("optimizer")
    if not isinstance(optimizer, Namespace) or not optimizer.get("class_path"):
        return
    module, name = optimizer.class_path.rsplit(".", 1)
    optimizer_class = getattr(importlib.import_module(module), name)
    try:
        optimizer_class([torch.zeros(1, requires_grad=True)], **dict(optimizer.get("init_args") or {}))
    except (ValueError, TypeError) as err:
        raise SettingError("optimizer", err) from None
    if subcommand == "fit":
        check_independent_members(config.model.members, optimizer_class, config.trainer.get("gradient_clip_val"),
                                  config.trainer.get("gradient_clip_algorithm"))


def check_resume(facts: CheckpointFacts) -> None:
    """``fit --ckpt_path`` continues a run only with the settings it was trained with."""
    if facts.conflicts:
        raise ResumeError(
            f"fit --ckpt_path continues a run with the settings it was trained with, and these differ: "
            f"{'; '.join(facts.conflicts)}. Leave them out to continue the run (trainer settings such as "
            "--trainer.max_epochs may change), or start a new run without --ckpt_path.")


def check_data(facts: CheckpointFacts, data: CirclesDataModule) -> None:
    """The data has the classes the network was trained for, by number and by name, and a file it trained with has
    not changed since (the data module's own check, which Lightning runs only when it restores the checkpoint, after
    the run directory exists)."""
    if facts.num_classes is not None and facts.num_classes != data.num_classes:
        raise CheckpointError(
            f"{facts.path} holds a network for {facts.num_classes} classes and the data has {data.num_classes}. Give "
            "the data it was trained on: --config <its run>/config.yaml, or the same data.dataset, data.classes or "
            "data.path.")
    if facts.data_state is not None:
        data.load_state_dict(facts.data_state)


def check_shapes(facts: CheckpointFacts, model: CirclesClassifier) -> None:
    """The checkpoint's weights fit the model (Lightning builds it from the checkpoint's hyperparameters, so only a
    file this project did not write gets here)."""
    mismatch = checkpoint_mismatch(facts.shapes, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if mismatch:
        raise CheckpointError(f"{facts.path} does not fit the model: its weights differ in {mismatch}. Use a "
                              "checkpoint written by this project.")


# -- the command line -----------------------------------------------------------------------------------------------


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for ``CirclesClassifier`` on ``CirclesDataModule``."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        self.checkpoint: CheckpointFacts | None = None
        super().__init__(
            CirclesClassifier,
            CirclesDataModule,
            seed_everything_default=42,
            save_config_callback=RunConfig,
            save_config_kwargs={},
            trainer_defaults={
                "max_epochs": 1000,
                "log_every_n_steps": 1,  # metrics are written once per epoch: no warning about few steps per epoch
                "enable_model_summary": False,  # the config says the shape
                "logger": lazy_instance(TensorBoardRunLogger),
                "callbacks": [GracefulStopCallback(), PredictionWriter(), RunSummary()],
            },
            parser_kwargs={"description": "Train MLPs on two concentric circles and watch why non-linearity matters."},
            parser_class=kwargs.pop("parser_class", CirclesArgumentParser),
            args=args,
            run=run,
            **kwargs,
        )

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for section, callback in CALLBACKS.items():
            parser.add_lightning_class_args(callback, section)
        parser.link_arguments("data.features", "model.features")  # the network's input layer follows the data
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")  # and its output layer
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.set_defaults({"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}})

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then settle what depends on other settings (:func:`circles.runs.settle_runs_and_checkpoint`) and
        read the checkpoint's facts, before LightningCLI reads the checkpoint's hyperparameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        self.save_config_kwargs["default_root_dir"] = config.trainer.get("default_root_dir")  # as the user gave it
        now = yaml.safe_load(parser.dump(self.config))[subcommand] if subcommand == "fit" else None
        loaded = settle_runs_and_checkpoint(config, subcommand)
        if loaded is not None:
            path, checkpoint = loaded
            self.checkpoint = CheckpointFacts.read(path, checkpoint, now)

    @override
    def instantiate_classes(self) -> None:
        """Check the optimizer's settings, build the classes, then check them against the checkpoint (in this order:
        a bad value is reported before a resume conflict it may cause)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        with self._reported():
            check_optimizer(config, str(self.subcommand))
            super().instantiate_classes()
        if self.checkpoint is not None:
            check_resume(self.checkpoint)
            check_data(self.checkpoint, self.datamodule)
            check_shapes(self.checkpoint, self.model)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        plugins = self.config_init.get(str(self.subcommand), self.config_init).trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        try:
            return super().instantiate_trainer(plugins=plugins, **kwargs)
        except (MisconfigurationException, ValueError) as err:  # the Trainer's own checks of its arguments
            raise SettingError("trainer", err) from None

    def before_fit(self) -> None:
        """Add what the model and data hparams leave out (optimizer, epochs, seed) to the run's hyperparameters."""
        hparams = run_hyperparameters(self.config[self.subcommand])
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def fit(self, **kwargs: Any) -> None:
        with self._reported():
            try:
                self.trainer.fit(**kwargs)
            except TrainingDiverged as err:
                checkpoint = self.trainer.checkpoint_callback
                kept = checkpoint.written() if isinstance(checkpoint, RunCheckpoint) else []
                saved = f" Checkpoints from before the divergence: {', '.join(kept)}." if kept else ""
                raise TrainingDiverged(f"{err} Set it with --optimizer.init_args.lr.{saved}") from None
        stop = next(cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, GracefulStopCallback))
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
            raise interruption(getattr(self, "trainer", None), str(self.subcommand), signal.SIGTERM) from None
        except SystemExit as err:
            if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C with sys.exit(1)
                raise interruption(getattr(self, "trainer", None), str(self.subcommand), signal.SIGINT) from None
            raise
        finally:
            if ctrl_c is not None:
                signal.signal(signal.SIGINT, ctrl_c)

    def _section_of(self, field: str, value: Any = None) -> str | None:
        """The config section with a setting called ``field``; of several (``every_n_epochs``), the one set to
        ``value``."""
        config = self.config.get(str(self.subcommand), self.config)
        sections = [s for s in SECTIONS if isinstance(config.get(s), Namespace) and field in config[s]]
        return next((s for s in sections if config[s][field] == value), sections[0] if sections else None)


def _leave_process_group() -> None:
    """End DDP together: every rank waits for the others, then destroys the process group, so no rank exits
    while another still talks to its store (which aborts that rank with "terminate called ...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# Lightning's messages that a user of this CLI can do nothing about: the CLI's own optimizer replacing the model's
# default one (by design), the srun hint (the SLURM scripts use srun; a workstation with SLURM installed is not a
# job), a torch deprecation inside Lightning, the prediction loop's note that it cannot tell batch indices (the
# prediction writer does not use them), and an advertisement. tests/test_upstream.py checks each still occurs.
NOT_FOR_THE_USER = (r"`CirclesClassifier.configure_optimizers` will be overridden",
                    r"The `srun` command is available on your system but is not used",
                    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                    r"Couldn't infer the batch indices fetched from your dataloader")
TIP = "💡 Tip:"  # Lightning's advertisement, logged once per process


def _no_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TIP)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While inside, hide the messages in ``NOT_FOR_THE_USER`` and Lightning's tip; every other warning still shows,
    and a process that imports circles keeps its own filters."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        for message in NOT_FOR_THE_USER:
            warnings.filterwarnings("ignore", message=message)
        log.addFilter(_no_tip)
        try:
            yield
        finally:
            log.removeFilter(_no_tip)


def cli_main(args: Any = None) -> None:
    """Run the command line (``args`` as a list of strings; ``None`` reads ``sys.argv``)."""
    try:
        with quiet_lightning():
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
