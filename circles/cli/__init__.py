"""The command line: LightningCLI with the project's defaults (:func:`run_cli`), wired on its
documented hooks (:class:`CirclesCLI`); what goes wrong is one line (:mod:`circles.cli.reporting`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import lazy_instance, set_loader
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from circles.callbacks.boundary import DecisionBoundaryCallback
from circles.callbacks.checkpoint import RunCheckpoint
from circles.callbacks.progress import ChapterProgressPrinter
from circles.callbacks.signals import GracefulStopCallback, interruption
from circles.callbacks.summary import RunSummary
from circles.callbacks.threads import TorchThreads
from circles.callbacks.weights import WeightsCallback
from circles.cli.reporting import RUNNING, CirclesArgumentParser, reported
from circles.cli.settle import settle_config
from circles.contracts import trainer_callbacks
from circles.data.module import CirclesDataModule
from circles.errors import (
    one_line_errors,
    print_result_notes,
    quiet_lightning,
    stopping_on_signals,
)
from circles.inputs import BOUNDED, bounded_yaml
from circles.model.classifier import CirclesClassifier
from circles.ranges import Seed
from circles.runs.checkpoints import CONFIG_KEY, AtomicCheckpointIO
from circles.runs.logger import TensorBoardRunLogger
from circles.runs.names import run_hyperparameters
from circles.runs.record import RunConfig
from circles.runs.slurm import check_slurm_allocation, check_slurm_launch, final_weights

CALLBACKS = {
    "checkpoint": RunCheckpoint,
    "boundary": DecisionBoundaryCallback,
    "chapter_log": ChapterProgressPrinter,
    "weights": WeightsCallback,
    "threads": TorchThreads,
}
# where a setting named in an error is looked up, in order
SECTIONS = {"data": CirclesDataModule, "model": CirclesClassifier, **CALLBACKS, "trainer": Trainer}
EVALUATION_DEFAULTS = str(Path(__file__).with_name("evaluation_defaults.yaml"))  # verbose: false
PARSER_KWARGS = {
    "description": "Train MLPs on two concentric circles and watch why non-linearity matters.",
    "epilog": "One more subcommand: compare CONFIG [CONFIG ...] trains each config and writes the "
    "lesson page, its boundaries side by side (train.py compare --help).",
    "parser_mode": BOUNDED,
    "validate": {"default_config_files": [EVALUATION_DEFAULTS]},
    "test": {"default_config_files": [EVALUATION_DEFAULTS]},
}


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` of ``CirclesClassifier`` on
    ``CirclesDataModule``, through LightningCLI's hooks:

    - ``add_default_arguments_to_parser``: ``seed_everything`` with the range of seeds numpy takes.
    - ``add_arguments_to_parser``: the callbacks' sections (``checkpoint``, ``boundary``,
      ``chapter_log``, ``weights``, ``threads``), the data's features and classes linked to the
      network's inputs and outputs, ``--test_after_fit``.
    - ``before_instantiate_classes``: ``ckpt_path best|last|hpc`` found and read safely, where the
      run goes and its name, an evaluation's data (:func:`circles.cli.settle.settle_config`).
    - ``after_instantiate_classes``: every checkpoint written whole
      (:class:`circles.runs.checkpoints.AtomicCheckpointIO`); a SLURM job's tasks against the
      ranks the Trainer will wait for (its launch, before the Trainer is built).
    - ``before_fit``, ``before_validate``, ``before_test``, ``before_predict``: the run's settings
      for TensorBoard's HPARAMS tab (an evaluation's, those of the run that trained its
      checkpoint); predict's writer of ``predictions.csv``.
    - ``after_fit``: a fit stopped by a signal reported as such; else the test of its final
      weights, into the same run."""

    checkpoint: dict[str, Any] | None = None

    @override
    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--seed_everything",
            type=bool | Seed,
            default=self.seed_everything_default,
            help="Seed of torch, numpy and Python's random before the classes are made (numpy "
            "takes 0 to 2**32 - 1); true for a random one, false for none.",
        )

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        RUNNING.set(self)
        for section, callback in CALLBACKS.items():
            parser.add_lightning_class_args(callback, section)
        parser.link_arguments("data.features", "model.features")  # the input layer follows the data
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: then test the final weights on the test points, into the same run "
            "(its TensorBoard record then holds the test accuracy beside the best one possible)",
        )

    @override
    def before_instantiate_classes(self) -> None:
        if self.subcommand is not None:
            self.checkpoint = settle_config(self)
            check_slurm_launch(self.config[self.subcommand].trainer.get("plugins"))

    @override
    def after_instantiate_classes(self) -> None:
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default
            strategy.checkpoint_io = AtomicCheckpointIO()
        cluster = getattr(strategy, "cluster_environment", None)  # DDP's; none on one device
        check_slurm_allocation(self.trainer.num_devices, self.trainer.num_nodes, [cluster])

    def before_fit(self) -> None:
        """A resume with the settings its checkpoint was trained with only; the run as a trial of
        TensorBoard's HPARAMS table: what the model and data hparams leave out (optimizer, epochs,
        seed, the best accuracy possible) added to them, as its config.yaml says them; with the
        test after the fit, the end-of-fit lines wait for its result."""
        (record,) = [cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, RunConfig)]
        record.check_fit(self.trainer, self.checkpoint)
        self._record(yaml.safe_load(record.text), trial=True)
        held = bool(self.config.fit.get("test_after_fit"))
        # a stand-in that says nothing where the trainer's callbacks are not the run's (Lightning's
        # learning-rate finder, interrupted, leaves its own in place)
        self.summary = next(
            (cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, RunSummary)),
            RunSummary(),
        )
        self.summary.hold = held
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardRunLogger):
                logger.hold(held)

    def after_fit(self) -> None:
        try:
            stop = next(
                cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, GracefulStopCallback)
            )
            if stop.signal is not None:
                raise interruption(self.trainer, "fit", stop.signal)
            checkpoint = self.trainer.checkpoint_callback
            last = (
                checkpoint.last_model_path
                if isinstance(checkpoint, RunCheckpoint)
                and checkpoint.holds_current_state(self.trainer)
                else None
            )
            if self.config.fit.get("test_after_fit"):
                weights = final_weights(self.trainer.default_root_dir, last)
                self.trainer.test(self.model, self.datamodule, verbose=False, ckpt_path=weights)
        finally:
            for logger in self.trainer.loggers:
                if isinstance(logger, TensorBoardRunLogger):
                    logger.hold(False)
            self.summary.flush()

    def _record_trained(self) -> None:
        """An evaluation records the settings of the run that trained its checkpoint; predict
        writes its predictions."""
        trained = (self.checkpoint or {}).get(CONFIG_KEY)
        if trained:
            self._record(yaml.safe_load(trained))
        if self.subcommand == "predict":  # predictions.csv in the run's directory
            from circles.callbacks.predictions import PredictionWriter

            trainer_callbacks(self.trainer).append(PredictionWriter())

    before_validate = before_test = before_predict = _record_trained

    def _record(self, config: dict[str, Any], trial: bool = False) -> None:
        """Add the run's settings (:func:`circles.runs.names.run_hyperparameters`) to its
        hyperparameters; a fit's also become its record in TensorBoard's HPARAMS table (an
        evaluation's run is no trial of its own)."""
        hparams = run_hyperparameters(config, self.datamodule.bayes_accuracy())
        for logger in self.trainer.loggers:
            if trial and isinstance(logger, TensorBoardRunLogger):
                logger.record_trial(hparams)
            else:
                logger.log_hyperparams(hparams)


def run_cli(args: Any = None, run: bool = True, cli: type[CirclesCLI] = CirclesCLI) -> CirclesCLI:
    """Run a subcommand (``args`` as a list of strings; ``None`` reads ``sys.argv``) with the
    project's defaults (with ``run`` false: build the classes of ``args`` without a subcommand;
    ``cli``: a subclass of :class:`CirclesCLI` that does so); what goes wrong is raised as a
    :class:`circles.errors.CirclesError` naming the setting
    (:func:`circles.cli.reporting.reported`)."""
    set_loader(BOUNDED, bounded_yaml, exceptions=(yaml.YAMLError,))
    with reported(SECTIONS):
        return cli(
            CirclesClassifier,
            CirclesDataModule,
            seed_everything_default=42,
            save_config_callback=RunConfig,
            save_config_kwargs={},
            trainer_defaults={
                "max_epochs": 1000,
                "log_every_n_steps": 1,  # metrics are logged once per epoch: no warning about it
                "enable_model_summary": False,  # the config says the shape
                "enable_progress_bar": False,  # the chapter's line (fit) and the summary say more
                "num_sanity_val_steps": 0,  # the chapter validates after each epoch, not before
                "logger": lazy_instance(TensorBoardRunLogger),
                "callbacks": [GracefulStopCallback(), RunSummary()],
            },
            parser_kwargs=PARSER_KWARGS,
            parser_class=CirclesArgumentParser,
            auto_configure_optimizers=False,  # the model takes its optimizer: --model.optimizer
            args=args,
            run=run,
        )


def cli_main(args: Any = None) -> None:
    """Run Lightning's subcommands on the circles models (``args`` as a list of strings; ``None``
    reads ``sys.argv``): ``fit``, ``validate``, ``test`` or ``predict``; what goes wrong ends as
    one line and an exit status (:func:`circles.errors.one_line_errors`)."""
    with stopping_on_signals(), one_line_errors(), quiet_lightning():
        try:
            run_cli(args)
        finally:  # the notes that qualify an evaluation's result, right after it
            print_result_notes()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank waits for the others, so none exits while another talks to its store
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
