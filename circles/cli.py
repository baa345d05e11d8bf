"""The command line: LightningCLI with the project's defaults, clear errors and an end-of-fit summary."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from circles.callbacks import ChapterProgressPrinter, DecisionBoundaryCallback, PredictionWriter, RunCheckpoint
from circles.data import CirclesDataModule
from circles.errors import CirclesError, ConfigError
from circles.model import CirclesClassifier, TrainingDiverged
from circles.runs import AtomicCheckpointIO, TensorBoardRunLogger, find_run_checkpoint, load_checkpoint_file

CALLBACK_KEYS = ("checkpoint", "boundary", "chapter_log")


class CirclesCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for ``CirclesClassifier`` on ``CirclesDataModule``."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(
            CirclesClassifier,
            CirclesDataModule,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "max_epochs": 1000,
                "logger": lazy_instance(TensorBoardRunLogger, save_dir=".", name="lightning_logs"),
                "callbacks": [PredictionWriter()],
            },
            parser_kwargs={"description": "Train MLPs on two concentric circles and watch why non-linearity matters."},
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(DecisionBoundaryCallback, "boundary")
        parser.add_lightning_class_args(ChapterProgressPrinter, "chapter_log")
        parser.add_optimizer_args((torch.optim.Optimizer,))
        parser.set_defaults({"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}})

    # -- checkpoints -------------------------------------------------------------------------------------------------

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then turn ``--ckpt_path best|last`` into the newest run's file and check the file loads safely."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            return
        if ckpt_path in ("best", "last", "hpc"):
            if ckpt_path == "hpc":
                return
            root = self._runs_root(config)
            found = find_run_checkpoint(root, ckpt_path)
            if found is None:
                raise ConfigError("ckpt_path", "a checkpoint file, or 'best'/'last' of an earlier run",
                                  ckpt_path, f"No run under {root} has checkpoints/{ckpt_path}.ckpt.")
            config.ckpt_path = str(found)
            if subcommand == "fit":
                self._continue_run(config, found.parent.parent.name)
        load_checkpoint_file(config.ckpt_path)

    @staticmethod
    def _runs_root(config: Namespace) -> Path:
        logger = config.trainer.get("logger")
        init = logger.get("init_args", Namespace()) if isinstance(logger, Namespace) else Namespace()
        return Path(init.get("save_dir") or ".") / (init.get("name") or "")

    @staticmethod
    def _continue_run(config: Namespace, run_name: str) -> None:
        """Resume into the run directory the checkpoint came from, so its logs and checkpoints continue there."""
        logger = config.trainer.get("logger")
        if isinstance(logger, Namespace) and logger.get("init_args") is not None:
            logger.init_args.version = run_name

    # -- instantiation ---------------------------------------------------------------------------------------------

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError as err:
            raise ConfigError(self._qualify(err.field), err.allowed, err.got, err.hint) from None

    def _qualify(self, field: str) -> str:
        """``noise`` -> ``data.noise``: the config section that holds a field."""
        config = self.config.get(str(self.subcommand), self.config)
        for section in ("data", "model", *CALLBACK_KEYS):
            group = config.get(section)
            if isinstance(group, Namespace):
                args = group.get("init_args", group)
                if isinstance(args, Namespace) and field in args:
                    return f"{section}.{field}"
        return field

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    # -- subcommands -------------------------------------------------------------------------------------------------

    def before_fit(self) -> None:
        """Add what the model and data hparams leave out (optimizer, epochs, seed) to the run's hyperparameters."""
        config = self.config[self.subcommand]
        hparams: dict[str, Any] = {"seed_everything": config.seed_everything, "max_epochs": config.trainer.max_epochs}
        optimizer = config.get("optimizer")
        if isinstance(optimizer, Namespace) and optimizer.get("class_path"):
            hparams["optimizer"] = optimizer.class_path.rsplit(".", 1)[-1]
            hparams.update({f"optimizer.{k}": v for k, v in (optimizer.get("init_args") or Namespace()).items()})
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def fit(self, **kwargs: Any) -> None:
        try:
            self.trainer.fit(**kwargs)
        except TrainingDiverged as err:
            last = self._checkpoint_callback().last_model_path
            best = self._checkpoint_callback().best_model_path
            kept = [p for p in (best, last) if p and os.path.isfile(p)]
            saved = f" Checkpoints from before the divergence: {', '.join(kept)}." if kept else ""
            raise TrainingDiverged(f"{err}{saved}") from None

    def _checkpoint_callback(self) -> RunCheckpoint:
        return next(cb for cb in self.trainer.callbacks if isinstance(cb, RunCheckpoint))

    def after_fit(self) -> None:
        run_dir = self.trainer.log_dir  # collective under DDP: every rank asks
        self._print_summary(run_dir)

    @rank_zero_only
    def _print_summary(self, run_dir: Optional[str]) -> None:
        checkpoint = self._checkpoint_callback()
        lines = [""]
        if checkpoint.best_model_score is not None:
            lines.append(f"Best {checkpoint.monitor}: {float(checkpoint.best_model_score):.4f}"
                         f"  ({os.path.normpath(checkpoint.best_model_path)})")
        lines.append(f"Run directory: {os.path.normpath(run_dir)}")
        boundary = next((cb for cb in self.trainer.callbacks if isinstance(cb, DecisionBoundaryCallback)), None)
        if boundary is not None and boundary.png_path:
            lines.append(f"Decision boundary: {os.path.normpath(boundary.png_path)}")
        logger = self.trainer.logger
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"Open it in TensorBoard: tensorboard --logdir {os.path.normpath(logger.root_dir)}")
        print("\n".join(lines), flush=True)

    def after_predict(self) -> None:
        writer = next((cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter)), None)
        if writer is not None and writer.path and self.trainer.is_global_zero:
            print(f"Predictions written to {writer.path}", flush=True)


def _report(message: str) -> None:
    print(f"circles: error: {message}", file=sys.stderr, flush=True)


def cli_main(args: Any = None) -> None:
    """Run the command line (``args`` as a list of strings; ``None`` reads ``sys.argv``)."""
    try:
        CirclesCLI(args=args)
    except CirclesError as err:
        _report(str(err))
        raise SystemExit(err.exit_code) from None
    except SIGTERMException:
        _report("interrupted by SIGTERM; the run's checkpoints/last.ckpt holds the state at the interruption "
                "(continue with --ckpt_path last).")
        raise SystemExit(143) from None


if __name__ == "__main__":
    cli_main()
