"""The command line: LightningCLI with the project's defaults, clear errors and an end-of-fit summary."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import lightning.pytorch as pl
import torch
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from circles.callbacks import (
    BayesOptimalCallback, ChapterProgressPrinter, DecisionBoundaryCallback, GracefulStopCallback, PredictionWriter,
    RunCheckpoint,
)
from circles.data import CirclesDataModule, read_points_csv
from circles.errors import CirclesError, ConfigError, Interrupted, SettingError
from circles.model import CirclesClassifier, TrainingDiverged
from circles.runs import (
    AtomicCheckpointIO, CheckpointError, TensorBoardRunLogger, find_run_checkpoint, load_checkpoint_file,
)

CALLBACKS = {"checkpoint": RunCheckpoint, "boundary": DecisionBoundaryCallback, "chapter_log": ChapterProgressPrinter}


class CirclesArgumentParser(LightningArgumentParser):
    """Reports a parse error (unknown option, wrong type, bad YAML, missing file) as one ``circles: error:``
    paragraph that names the option and what it accepts, instead of the whole usage text."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parses with errors as exceptions where it tries alternatives
            super().error(message, ex)
        _report(_parse_error_text(message, getattr(ex, "subcommand_parser", None) or self))
        self.exit(2)


def _parse_error_text(message: str, parser: LightningArgumentParser) -> str:
    unknown = re.findall(r"does not accept option '([^']+)'", message)
    if message.startswith("unrecognized arguments:"):
        unknown = [arg[2:].split("=")[0] for arg in message.split()[2:] if arg.startswith("--")]
    if unknown:
        return " ".join(_unknown_option_text(parser, key) for key in unknown)
    text = re.sub(r'^Parser key "([^"]+)":', r"\1:", message)
    text = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", r"expected one of \1, got \2.", text)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    text = re.sub(r"^Problems parsing config: ", "the config is not valid YAML: ", text)
    text = text.replace(' in "<unicode string>",', " at")
    return " ".join(text.split())


def _options(parser: LightningArgumentParser, group: str) -> list[str]:
    prefix = f"{group}." if group else ""
    names = [a.dest[len(prefix):].split(".")[0] for a in parser._actions if a.dest.startswith(prefix)]
    return [n for n in dict.fromkeys(names) if n and n not in ("help", "config", "print_config")]


def _unknown_option_text(parser: LightningArgumentParser, key: str) -> str:
    group, _, name = key.rpartition(".")
    options = _options(parser, group)
    if not options:
        group, name, options = "", key.split(".")[0], _options(parser, "")
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    where = f"{group} accepts" if group else "the options are"
    return f"{key} is not an option; {where}: {', '.join(options)}.{guess}"


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
                "callbacks": [GracefulStopCallback(), PredictionWriter(), BayesOptimalCallback()],
            },
            parser_kwargs={"description": "Train MLPs on two concentric circles and watch why non-linearity matters."},
            parser_class=kwargs.pop("parser_class", CirclesArgumentParser),
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(DecisionBoundaryCallback, "boundary")
        parser.add_lightning_class_args(ChapterProgressPrinter, "chapter_log")
        parser.link_arguments("data.features", "model.features")  # the network's input layer follows the data
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
        checkpoint = load_checkpoint_file(config.ckpt_path)
        missing = [k for k in ("state_dict", "pytorch-lightning_version") if not isinstance(checkpoint, dict)
                   or k not in checkpoint]
        if missing:
            raise CheckpointError(f"{config.ckpt_path} is not a Lightning checkpoint of this project: it holds no "
                                  f"{' or '.join(missing)}. Use a run's checkpoints/best.ckpt or checkpoints/last.ckpt.")
        self._checkpoint_shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()
                                   if isinstance(v, torch.Tensor)}
        self._note_other_data(config, checkpoint.get("datamodule_hyper_parameters") or {})
        features = (checkpoint.get("hyper_parameters") or {}).get("features")
        if features and config.get("data") is not None and list(config.data.features) != list(features):
            config.data.features = list(features)  # the network was trained on these inputs; others would fit silently

    @staticmethod
    @rank_zero_only
    def _note_other_data(config: Namespace, trained_on: dict[str, Any]) -> None:
        """Say so when the checkpoint was trained on other data than this run will use (not an error: testing a
        model on noisier data is a fair question), so that ``test --ckpt_path best`` after a moons run is not taken
        for a result on moons."""
        data = config.get("data")
        keys = ("dataset", "noise", "factor", "n_samples", "val_fraction", "seed")
        differ = [k for k in keys if data is not None and k in trained_on and data.get(k) != trained_on[k]]
        if differ:
            print("circles: note: the checkpoint was trained on " + ", ".join(
                f"data.{k}={trained_on[k]!r}" for k in differ) + "; this run uses " + ", ".join(
                f"{data.get(k)!r}" for k in differ) + " (pass the run's config.yaml with --config to use its data).",
                file=sys.stderr, flush=True)

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
            raise self._qualified(err) from None
        except (MisconfigurationException, ValueError) as err:  # Lightning's and torch.optim's own argument checks
            if isinstance(err, MisconfigurationException) or self._section_of(err) is not None:
                raise self._setting_error(err) from None
            raise  # not a setting of ours: a bug, with its traceback
        self._check_checkpoint_fits()

    def _check_checkpoint_fits(self) -> None:
        """A ``--ckpt_path`` whose weights do not fit the model is refused before anything runs. (Lightning builds the
        model from the checkpoint's own hyperparameters, so only a foreign or edited file gets here.)"""
        found = getattr(self, "_checkpoint_shapes", None)
        if found is None or self.model is None:
            return
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if found == expected:
            return
        differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        details = [f"{k} (checkpoint {found[k]}, model {expected[k]})" if k in found and k in expected
                   else f"{k} (only in the {'checkpoint' if k in found else 'model'})" for k in differ[:3]]
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(f"{self.config[self.subcommand].ckpt_path} does not fit the model: its weights differ "
                              f"in {', '.join(details)}{more}. Use a checkpoint written by this project.")

    def _qualified(self, err: ConfigError) -> ConfigError:
        """``noise`` -> ``data.noise``: the error again, with the field named by its config section."""
        section = self._section_of(err)
        return ConfigError(f"{section}.{err.field}" if section else err.field, err.allowed, err.got, err.hint)

    def _setting_error(self, err: Exception) -> SettingError:
        section = self._section_of(err)
        return SettingError(f"{section + ': ' if section else ''}{' '.join(str(err).split())}")

    def _section_of(self, err: Exception) -> Optional[str]:
        """The section of the object that raised ``err`` (the innermost ``self`` in its traceback that is the model, the
        data, a callback, the trainer or the optimizer: ``every_n_epochs`` is a field of three callbacks), else the
        first section with a field of that name."""
        classes = {"data": self.datamodule_class, "model": self.model_class, **CALLBACKS, "trainer": pl.Trainer,
                   "optimizer": torch.optim.Optimizer, "lr_scheduler": torch.optim.lr_scheduler.LRScheduler}
        owner, tb = None, err.__traceback__
        while tb is not None:
            obj = tb.tb_frame.f_locals.get("self")
            owner = next((s for s, cls in classes.items() if cls is not None and isinstance(obj, cls)), owner)
            tb = tb.tb_next
        if owner is not None or not isinstance(err, ConfigError):
            return owner
        config = self.config.get(str(self.subcommand), self.config)
        for section in classes:
            group = config.get(section)
            if isinstance(group, Namespace):
                args = group.get("init_args", group)
                if isinstance(args, Namespace) and err.field in args:
                    return section
        return None

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    # -- subcommands -------------------------------------------------------------------------------------------------

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a bad value is named by its config section, a SIGTERM or Ctrl-C is reported as an interruption."""
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            super()._run_subcommand(subcommand)
        except ConfigError as err:
            raise self._qualified(err) from None
        except MisconfigurationException as err:
            raise self._setting_error(err) from None
        except SIGTERMException:
            raise self._interrupted(subcommand, signal.SIGTERM) from None
        except SystemExit as err:
            if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C with sys.exit(1)
                raise self._interrupted(subcommand, signal.SIGINT) from None
            raise
        finally:
            if ctrl_c is not None:
                signal.signal(signal.SIGINT, ctrl_c)  # Lightning ignores Ctrl-C from its first one on

    def _interrupted(self, subcommand: str, signum: int) -> Interrupted:
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
        if subcommand != "fit":
            return Interrupted(signum, f"{subcommand} interrupted by {name}.")
        checkpoint = self._checkpoint_callback()
        if checkpoint._last_saved_step != self.trainer.global_step or not os.path.isfile(checkpoint.last_model_path):
            return Interrupted(signum, f"fit interrupted by {name} before it could write a checkpoint.")
        return Interrupted(
            signum, f"fit interrupted by {name} at epoch {self.trainer.current_epoch}, step {self.trainer.global_step}; "
            f"the state at the interruption is saved in {os.path.normpath(checkpoint.last_model_path)}. To continue, "
            "run the same command with --ckpt_path last.")

    def before_fit(self) -> None:
        """Add what the model and data hparams leave out (optimizer, epochs, seed) to the run's hyperparameters."""
        config = self.config[self.subcommand]
        hparams: dict[str, Any] = {"seed_everything": config.seed_everything, "max_epochs": config.trainer.max_epochs}
        optimizer = config.get("optimizer")
        if isinstance(optimizer, Namespace) and optimizer.get("class_path"):
            module, name = optimizer.class_path.rsplit(".", 1)
            defaults = inspect.signature(getattr(importlib.import_module(module), name)).parameters
            hparams["optimizer"] = name
            hparams.update({f"optimizer.{k}": v for k, v in (optimizer.get("init_args") or Namespace()).items()
                            if k not in defaults or v != defaults[k].default})  # the settings that were chosen
        for logger in self.trainer.loggers:
            logger.log_hyperparams(hparams)

    def fit(self, **kwargs: Any) -> None:
        try:
            self.trainer.fit(**kwargs)
        except TrainingDiverged as err:
            last = self._checkpoint_callback().last_model_path
            best = self._checkpoint_callback().best_model_path
            kept = [os.path.normpath(p) for p in (best, last) if p and os.path.isfile(p)]
            saved = f" Checkpoints from before the divergence: {', '.join(kept)}." if kept else ""
            raise TrainingDiverged(f"{err} Set it with --optimizer.init_args.lr.{saved}") from None
        stop = next((cb for cb in self.trainer.callbacks if isinstance(cb, GracefulStopCallback)), None)
        if stop is not None and stop.signal is not None:
            self._print_summary(self.trainer.log_dir)
            raise self._interrupted("fit", stop.signal)

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

    def before_predict(self) -> None:
        """Check the CSV to predict on before a run directory is created for the predictions."""
        if getattr(self.datamodule, "predict_path", None):
            read_points_csv(self.datamodule.predict_path)

    def after_predict(self) -> None:
        writer = next((cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter)), None)
        if writer is not None and writer.path and self.trainer.is_global_zero:
            print(f"Predictions written to {writer.path}", flush=True)


def _leave_process_group() -> None:
    """End DDP together: every rank waits for the others, then destroys the process group, so no rank exits
    while another still talks to its store (which aborts that rank with "terminate called ...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _report(message: str) -> None:
    print(f"circles: error: {message}", file=sys.stderr, flush=True)


def cli_main(args: Any = None) -> None:
    """Run the command line (``args`` as a list of strings; ``None`` reads ``sys.argv``)."""
    try:
        CirclesCLI(args=args)
        _leave_process_group()
    except CirclesError as err:
        _report(str(err))
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        _report("interrupted by Ctrl-C (SIGINT).")
        raise SystemExit(130) from None


if __name__ == "__main__":
    cli_main()
