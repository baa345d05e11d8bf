"""The command line: LightningCLI with the project's defaults and wiring, and its failures as one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import yaml
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from circles.callbacks.boundary import DecisionBoundaryCallback
from circles.callbacks.checkpoint import RunCheckpoint
from circles.callbacks.predictions import PredictionWriter
from circles.callbacks.progress import ChapterProgressPrinter
from circles.callbacks.signals import GracefulStopCallback, interruption
from circles.callbacks.summary import RunSummary
from circles.callbacks.weights import WeightsCallback
from circles.cli.bounds import check_arguments
from circles.cli.checks import CheckpointFacts, check_data, check_optimizer, check_resume, check_shapes
from circles.cli.parser import CirclesArgumentParser
from circles.cli.reporting import one_line_errors, reported
from circles.cli.settle import run_hyperparameters, settle_runs_and_checkpoint
from circles.cli.slurm import check_slurm_allocation, check_slurm_launch
from circles.contracts import trainer_callbacks
from circles.data.module import CirclesDataModule, predict_points
from circles.errors import SettingError
from circles.model.classifier import CirclesClassifier, TrainingDiverged
from circles.runs.checkpoints import AtomicCheckpointIO, RunConfig
from circles.runs.logger import TensorBoardRunLogger

CALLBACKS = {"checkpoint": RunCheckpoint, "boundary": DecisionBoundaryCallback, "chapter_log": ChapterProgressPrinter,
             "weights": WeightsCallback}
SECTIONS = ("data", "model", *CALLBACKS, "trainer")  # where a setting named in an error is looked up, in this order


# -- the command line -----------------------------------------------------------------------------------------------


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for ``CirclesClassifier`` on ``CirclesDataModule``."""

    SECTIONS = SECTIONS

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
                "enable_progress_bar": False,  # the chapter's progress line (fit) and RunSummary's lines say more
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
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="fit only: then test the final weights on the test points, into the same run (its "
                                 "TensorBoard record then holds the test accuracy beside the best one possible)")
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
        logger = config.trainer.get("logger")
        given = logger.get("init_args") if isinstance(logger, Namespace) else None
        self.save_config_kwargs["logger_as_given"] = given.clone() if isinstance(given, Namespace) else None
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
        with reported(self):
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
        check_slurm_launch(plugins)
        try:
            trainer = super().instantiate_trainer(plugins=plugins, **kwargs)
        except (MisconfigurationException, ValueError) as err:  # the Trainer's own checks of its arguments
            raise SettingError("trainer", err) from None
        check_slurm_allocation(trainer.num_devices, trainer.num_nodes, plugins)
        return trainer

    def before_fit(self) -> None:
        """The run as a trial of TensorBoard's HPARAMS table: what the model and data hparams leave out (optimizer,
        epochs, seed, the best accuracy possible) added to them; the end-of-fit summary after the test that follows."""
        record_settings(self.trainer, self.datamodule, self.config[self.subcommand].as_dict(), trial=True)
        _summary(self.trainer).hold = bool(self.config[self.subcommand].get("test_after_fit"))

    def fit(self, **kwargs: Any) -> None:
        test = bool(self.config[self.subcommand].get("test_after_fit"))
        loggers = [logger for logger in self.trainer.loggers if isinstance(logger, TensorBoardRunLogger)]
        try:
            for logger in loggers:
                logger.hold_open(True)  # a stage's end only flushes: the test writes into the fit's own event files
            with reported(self):
                try:
                    self.trainer.fit(**kwargs)
                except TrainingDiverged as err:
                    raise _divergence(err, self.trainer, self.datamodule) from None
            stop = next(cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, GracefulStopCallback))
            if stop.signal is not None:
                raise interruption(self.trainer, "fit", stop.signal)
            if test:
                with reported(self):
                    self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        finally:
            for logger in loggers:  # closed once, whatever happened
                logger.hold_open(False)
                logger.finalize("finished")
            _summary(self.trainer).flush()

    def before_validate(self) -> None:
        self._record_trained()

    def validate(self, **kwargs: Any) -> None:
        with reported(self):
            self.trainer.validate(**{**kwargs, "verbose": False})  # RunSummary says what it measured

    def before_test(self) -> None:
        self._record_trained()

    def test(self, **kwargs: Any) -> None:
        with reported(self):
            self.trainer.test(**{**kwargs, "verbose": False})

    def _record_trained(self) -> None:
        """An evaluation records the settings of the run that trained its checkpoint."""
        trained = self.checkpoint.trained_config if self.checkpoint is not None else None
        if trained:
            record_settings(self.trainer, self.datamodule, yaml.safe_load(trained))

    def before_predict(self) -> None:
        """Check the CSV to predict on before a run directory is created for the predictions."""
        if self.datamodule.predict_path:
            with reported(self):
                predict_points(self.datamodule.predict_path, self.datamodule.features)
        self._record_trained()

    def predict(self, **kwargs: Any) -> None:
        with reported(self):
            self.trainer.predict(**kwargs)


def record_settings(trainer: Any, data: CirclesDataModule, config: Mapping[str, Any], trial: bool = False) -> None:
    """Add the run's settings (:func:`circles.runs.run_hyperparameters` of ``config``) to its hyperparameters; a
    fit's also become its record in TensorBoard's HPARAMS table (an evaluation's run is no trial of its own)."""
    hparams = run_hyperparameters(config, data.bayes_accuracy())
    for logger in trainer.loggers:
        if trial and isinstance(logger, TensorBoardRunLogger):
            logger.record_trial(hparams)
        else:
            logger.log_hyperparams(hparams)


def _summary(trainer: Any) -> RunSummary:
    return next(cb for cb in trainer_callbacks(trainer) if isinstance(cb, RunSummary))


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
# Logged by every rank when Lightning's requeue handler saves its hpc checkpoint (it passes no weights_only)
NO_WEIGHTS_ONLY = "`weights_only` was not set, defaulting to `False`."
LOGGED_NOT_FOR_THE_USER = {"lightning.pytorch.utilities.rank_zero": TIP,
                           "lightning.pytorch.trainer.connectors.checkpoint_connector": NO_WEIGHTS_ONLY}


def _not_for_the_user(record: logging.LogRecord) -> bool:
    hidden = LOGGED_NOT_FOR_THE_USER.get(record.name)
    return hidden is None or not record.getMessage().startswith(hidden)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While inside, hide the warnings in ``NOT_FOR_THE_USER`` and the log lines in ``LOGGED_NOT_FOR_THE_USER``
    (Lightning's tip, a default it logs on every rank); every other warning still shows, and a process that imports
    circles keeps its own filters."""
    logs = [logging.getLogger(name) for name in LOGGED_NOT_FOR_THE_USER]
    with warnings.catch_warnings():
        for message in NOT_FOR_THE_USER:
            warnings.filterwarnings("ignore", message=message)
        for log in logs:
            log.addFilter(_not_for_the_user)
        try:
            yield
        finally:
            for log in logs:
                log.removeFilter(_not_for_the_user)


def cli_main(args: Any = None) -> None:
    """Run Lightning's subcommands on the circles models (``args`` as a list of strings; ``None`` reads
    ``sys.argv``): ``fit``, ``validate``, ``test`` or ``predict``; what goes wrong ends as one line and an exit
    status (:func:`circles.cli.reporting.one_line_errors`)."""
    with one_line_errors(), quiet_lightning():
        CirclesCLI(args=args)
        _leave_process_group()


if __name__ == "__main__":
    cli_main()
