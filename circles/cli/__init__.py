"""The command line: LightningCLI with the project's defaults and wiring, on its documented hooks.

What each hook does here:

- ``add_arguments_to_parser``: the callbacks' sections (``checkpoint``, ``boundary``,
  ``chapter_log``, ``weights``), the links that make the network's input and output layers follow
  the data, the chapter's optimizer as the default, ``--test_after_fit``.
- ``before_instantiate_classes``: an evaluation's own runtime model settings (``compile_mode``)
  put back over the checkpoint's; the optimizer's settings checked before anything is built.
- ``after_instantiate_classes``: the checkpoint checked against what was built from the config.
- ``before_fit``, ``before_validate``, ``before_test``, ``before_predict``: the run's settings
  recorded for TensorBoard's HPARAMS tab (an evaluation records those of the run that trained its
  checkpoint).
- ``after_fit``: a fit stopped by a signal reported as such; else the test of its final weights,
  into the same run.
- ``save_config_callback``: :class:`circles.runs.checkpoints.RunConfig` writes the run's
  ``config.yaml``.
- ``parser_kwargs``: ``validate`` and ``test`` default to ``--verbose false`` (the run's summary
  says what they measured) through a default config file.

LightningCLI's methods overridden, each for what no hook reaches:

- ``__init__``: the project's defaults; what goes wrong anywhere inside (parsing, building, running)
  becomes one line naming the option by its section (:func:`circles.cli.reporting.reported`), and
  the run's logger, held open from fit into its test, is closed once at the end whatever happened.
- ``parse_arguments``: YAML bounded before any parser reads it; then what depends on other settings
  is settled (:mod:`circles.cli.settle`: the run directory, ``ckpt_path best|last`` as a file,
  checked and loaded safely; an evaluation's model settings that the checkpoint's would silently
  replace refused) before LightningCLI reads the checkpoint's hyperparameters, which it does only
  from a path that is a file.
- ``instantiate_trainer``: every checkpoint written whole whatever plugins the config gives (adds
  :class:`circles.runs.checkpoints.AtomicCheckpointIO`); a SLURM launch that would hang refused
  before the Trainer is built and an allocation its ranks cannot fill after it resolves its
  devices; the Trainer's own argument errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
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
from circles.cli.checks import (
    CheckpointFacts,
    check_data,
    check_monitors,
    check_optimizer,
    check_resume,
    check_resume_state,
    check_seed,
    check_shapes,
)
from circles.cli.parser import CirclesArgumentParser
from circles.cli.reporting import one_line_errors, quiet_lightning, reported
from circles.cli.settle import (
    RUNTIME_MODEL_OPTIONS,
    run_hyperparameters,
    settle_runs_and_checkpoint,
)
from circles.cli.slurm import check_slurm_allocation, check_slurm_launch, hpc_checkpoint
from circles.contracts import trainer_callbacks
from circles.data.module import CirclesDataModule, predict_points
from circles.errors import CirclesError, SettingError, print_result_notes
from circles.model.classifier import CirclesClassifier
from circles.runs.checkpoints import AtomicCheckpointIO, RunConfig, slurm_job
from circles.runs.logger import TensorBoardRunLogger

CALLBACKS = {
    "checkpoint": RunCheckpoint,
    "boundary": DecisionBoundaryCallback,
    "chapter_log": ChapterProgressPrinter,
    "weights": WeightsCallback,
}
# where a setting named in an error is looked up, in order
SECTIONS = ("data", "model", *CALLBACKS, "trainer")
EVALUATION_DEFAULTS = str(Path(__file__).with_name("evaluation_defaults.yaml"))  # verbose: false
PARSER_KWARGS = {
    "description": "Train MLPs on two concentric circles and watch why non-linearity matters.",
    "epilog": "One more subcommand: compare CONFIG [CONFIG ...] trains each config and writes the "
    "lesson page, its boundaries side by side (train.py compare --help).",
    "validate": {"default_config_files": [EVALUATION_DEFAULTS]},
    "test": {"default_config_files": [EVALUATION_DEFAULTS]},
}


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for ``CirclesClassifier`` on
    ``CirclesDataModule``."""

    SECTIONS = SECTIONS

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        self.checkpoint: CheckpointFacts | None = None
        self.runtime_model: dict[str, Any] = {}  # an evaluation's own, kept from the checkpoint's
        self.held_open: list[TensorBoardRunLogger] = []
        try:
            with reported(self):
                super().__init__(
                    CirclesClassifier,
                    CirclesDataModule,
                    seed_everything_default=42,
                    save_config_callback=RunConfig,
                    save_config_kwargs={},
                    trainer_defaults={
                        "max_epochs": 1000,
                        # metrics are logged once per epoch: no warning about that
                        "log_every_n_steps": 1,
                        "enable_model_summary": False,  # the config says the shape
                        # the chapter's line (fit) and RunSummary's say more
                        "enable_progress_bar": False,
                        "logger": lazy_instance(TensorBoardRunLogger),
                        "callbacks": [GracefulStopCallback(), PredictionWriter(), RunSummary()],
                    },
                    parser_kwargs=PARSER_KWARGS,
                    parser_class=kwargs.pop("parser_class", CirclesArgumentParser),
                    args=args,
                    run=run,
                    **kwargs,
                )
        finally:
            self._end_fit()

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for section, callback in CALLBACKS.items():
            parser.add_lightning_class_args(callback, section)
        parser.link_arguments("data.features", "model.features")  # the input layer follows the data
        # the output too
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: then test the final weights on the test points, into the same run "
            "(its TensorBoard record then holds the test accuracy beside the best one "
            "possible)",
        )
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.set_defaults(
            {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}}
        )

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Bound the YAML, parse, then settle the run and read the checkpoint's facts (see the
        module)."""
        check_arguments(sys.argv[1:] if args is None else [str(a) for a in args])
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        check_seed(config)  # LightningCLI seeds before any hook
        # as given
        self.save_config_kwargs["default_root_dir"] = config.trainer.get("default_root_dir")
        logger = config.trainer.get("logger")
        given = logger.get("init_args") if isinstance(logger, Namespace) else None
        self.save_config_kwargs["logger_as_given"] = (
            given.clone() if isinstance(given, Namespace) else None
        )
        now = yaml.safe_load(parser.dump(self.config))[subcommand] if subcommand == "fit" else None
        loaded = settle_runs_and_checkpoint(config, subcommand)
        if loaded is not None:
            self.checkpoint = CheckpointFacts.read(*loaded, now)
        if subcommand != "fit" and isinstance(config.get("model"), Namespace):
            # LightningCLI replaces the model's settings with the checkpoint's next
            self.runtime_model = {k: config.model.get(k) for k in RUNTIME_MODEL_OPTIONS}

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        for name, value in self.runtime_model.items():
            config.model[name] = value
        check_optimizer(config, str(self.subcommand))

    @override
    def after_instantiate_classes(self) -> None:
        """The checkpoint against what was built (a bad value is reported before a resume
        conflict it causes)."""
        if self.checkpoint is not None:
            check_resume(self.checkpoint)
            check_data(self.checkpoint, self.datamodule)
            check_shapes(self.checkpoint, self.model)
            check_resume_state(self.checkpoint, trainer_callbacks(self.trainer))

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self.config_init.get(str(self.subcommand), self.config_init)
        plugins = config.trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        check_slurm_launch(plugins)
        try:
            trainer = super().instantiate_trainer(plugins=plugins, **kwargs)
        # the Trainer checks its arguments
        except (MisconfigurationException, ValueError, TypeError) as err:
            raise SettingError("trainer", err) from None
        check_slurm_allocation(trainer.num_devices, trainer.num_nodes, plugins)
        check_monitors(trainer)
        return trainer

    def before_fit(self) -> None:
        """The run as a trial of TensorBoard's HPARAMS table: what the model and data hparams
        leave out (optimizer, epochs, seed, the best accuracy possible) added to them; with the
        test after the fit, the end-of-fit lines after its result and the logger's files kept
        open for it."""
        record_settings(
            self.trainer, self.datamodule, self.config[self.subcommand].as_dict(), trial=True
        )
        test = bool(self.config[self.subcommand].get("test_after_fit"))
        _summary(self.trainer).hold = test
        if test:
            self.held_open = [
                lg for lg in self.trainer.loggers if isinstance(lg, TensorBoardRunLogger)
            ]
            for logger in self.held_open:
                # a stage's end only flushes: the test writes into the fit's files
                logger.hold_open(True)

    def after_fit(self) -> None:
        stop = next(
            cb for cb in trainer_callbacks(self.trainer) if isinstance(cb, GracefulStopCallback)
        )
        if stop.signal is not None:
            raise interruption(self.trainer, "fit", stop.signal)
        if self.config[self.subcommand].get("test_after_fit"):
            weights = final_weights(self.trainer)
            self.trainer.test(
                self.model, datamodule=self.datamodule, verbose=False, ckpt_path=weights
            )

    def _end_fit(self) -> None:
        """Close the loggers held open since ``before_fit`` and print the end-of-fit lines,
        whatever happened."""
        for logger in self.held_open:
            logger.hold_open(False)
            logger.finalize("finished")
        self.held_open = []
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(self, "subcommand", None) == "fit":
            _summary(trainer).flush()

    def before_validate(self) -> None:
        self._record_trained()

    def before_test(self) -> None:
        self._record_trained()

    def before_predict(self) -> None:
        """Check the CSV to predict on before a run directory is created for the predictions."""
        if self.datamodule.predict_path:
            predict_points(self.datamodule.predict_path, self.datamodule.features)
        self._record_trained()

    def _record_trained(self) -> None:
        """An evaluation records the settings of the run that trained its checkpoint."""
        trained = self.checkpoint.trained_config if self.checkpoint is not None else None
        if trained:
            record_settings(self.trainer, self.datamodule, yaml.safe_load(trained))


def record_settings(
    trainer: Any, data: CirclesDataModule, config: Mapping[str, Any], trial: bool = False
) -> None:
    """Add the run's settings (:func:`circles.cli.settle.run_hyperparameters` of ``config``) to
    its hyperparameters; a fit's also become its record in TensorBoard's HPARAMS table (an
    evaluation's run is no trial of its own)."""
    hparams = run_hyperparameters(config, data.bayes_accuracy())
    for logger in trainer.loggers:
        if trial and isinstance(logger, TensorBoardRunLogger):
            logger.record_trial(hparams)
        else:
            logger.log_hyperparams(hparams)


def final_weights(trainer: Any) -> str | None:
    """What the fit's test evaluates: the weights the fit ended with (None: the module's own), or,
    in a SLURM job whose folder holds an hpc checkpoint (Lightning would test that instead of the
    final weights), the ``last.ckpt`` the fit's end wrote."""
    checkpoint = trainer.checkpoint_callback
    if slurm_job() is None or hpc_checkpoint(trainer.default_root_dir) is None:
        return None
    if isinstance(checkpoint, RunCheckpoint) and checkpoint.holds_current_state(trainer):
        return checkpoint.last_model_path
    raise CirclesError(
        "The fit's test would evaluate the hpc checkpoint in "
        f"{trainer.default_root_dir} instead of the final weights (no last.ckpt holds them). "
        "Test them with: test --ckpt_path last."
    )


def _summary(trainer: Any) -> RunSummary:
    """The run's summary callback; a stand-in that says nothing where the trainer's callbacks are
    not the run's (Lightning's learning-rate finder, interrupted, leaves its own in place)."""
    found = [cb for cb in trainer_callbacks(trainer) if isinstance(cb, RunSummary)]
    return found[0] if found else RunSummary()


def _leave_process_group() -> None:
    """End DDP together: every rank waits for the others, then destroys the process group, so no
    rank exits while another still talks to its store (which aborts that rank with "terminate
    called ...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def cli_main(args: Any = None) -> None:
    """Run Lightning's subcommands on the circles models (``args`` as a list of strings; ``None``
    reads ``sys.argv``): ``fit``, ``validate``, ``test`` or ``predict``; what goes wrong ends as
    one line and an exit status (:func:`circles.cli.reporting.one_line_errors`)."""
    with one_line_errors(), quiet_lightning():
        try:
            CirclesCLI(args=args)
        finally:  # the notes that qualify an evaluation's result, right after it
            print_result_notes()
        _leave_process_group()


if __name__ == "__main__":
    cli_main()
