"""The command line: LightningCLI with the project's defaults and wiring, and its failures as one-line errors."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Any

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
from circles.checkpoints import AtomicCheckpointIO, RunConfig
from circles.cli.checks import CheckpointFacts, check_data, check_optimizer, check_resume, check_shapes
from circles.cli.parser import CirclesArgumentParser
from circles.contracts import trainer_callbacks
from circles.data import CirclesDataModule, predict_points
from circles.errors import CirclesError, ConfigError, SettingError, os_error_text, report
from circles.inputs import check_arguments
from circles.logger import TensorBoardRunLogger
from circles.model import CirclesClassifier, TrainingDiverged
from circles.runs import run_hyperparameters, settle_runs_and_checkpoint
from circles.signals import GracefulStopCallback, interruption

CALLBACKS = {"checkpoint": RunCheckpoint, "boundary": DecisionBoundaryCallback, "chapter_log": ChapterProgressPrinter}
SECTIONS = ("data", "model", *CALLBACKS, "trainer")  # where a setting named in an error is looked up, in this order


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
        check_arguments(sys.argv[1:] if args is None else [str(a) for a in args])
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
                raise _divergence(err, self.trainer, self.datamodule) from None
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
                predict_points(self.datamodule.predict_path, self.datamodule.features)

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
            self._forget_empty_run()
            raise interruption(getattr(self, "trainer", None), str(self.subcommand), signal.SIGTERM) from None
        except SystemExit as err:
            if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C with sys.exit(1)
                self._forget_empty_run()
                raise interruption(getattr(self, "trainer", None), str(self.subcommand), signal.SIGINT) from None
            raise
        finally:
            if ctrl_c is not None:
                signal.signal(signal.SIGINT, ctrl_c)

    def _forget_empty_run(self) -> None:
        """Remove the run directory of an interrupted validate, test or predict that wrote nothing of its own (its
        lock, config and an empty event file are all it holds): it has no result to keep."""
        logger = getattr(self, "trainer", None) and self.trainer.logger
        if self.subcommand != "fit" and isinstance(logger, TensorBoardRunLogger) and logger.claimed is not None:
            logger.forget_if_empty()

    def _section_of(self, field: str, value: Any = None) -> str | None:
        """The config section with a setting called ``field``; of several (``every_n_epochs``), the one set to
        ``value``."""
        config = self.config.get(str(self.subcommand), self.config)
        sections = [s for s in SECTIONS if isinstance(config.get(s), Namespace) and field in config[s]]
        return next((s for s in sections if config[s][field] == value), sections[0] if sections else None)


def _divergence(err: TrainingDiverged, trainer: Any, data: CirclesDataModule) -> TrainingDiverged:
    """What to do about a diverged fit, with the checkpoints kept from before it: scale the data when its points lie
    far beyond what a network of this size takes (it diverges at any learning rate), else lower the learning rate."""
    checkpoint = trainer.checkpoint_callback
    kept = checkpoint.written() if isinstance(checkpoint, RunCheckpoint) else []
    saved = f" Checkpoints from before the divergence: {', '.join(kept)}." if kept else ""
    train = data.points("train")
    reach = float(train[0].abs().max()) if train is not None and len(train[0]) else 0.0
    if reach > 1e4:
        return TrainingDiverged(
            f"Training diverged: the training points reach |x| = {reach:.3g}, far beyond the few units a network of "
            f"this size takes; scale the data (a smaller learning rate does not help).{saved}")
    return TrainingDiverged(f"{err} Set it with --optimizer.init_args.lr.{saved}")


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
