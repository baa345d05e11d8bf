"""What the command line checks between parsing and building: the checkpoint's facts, read once,
and each check of them, and of the optimizer's settings, a named function."""

from __future__ import annotations

import copy
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from circles.cli.parser import parse_error_text
from circles.data.module import CirclesDataModule
from circles.errors import ConfigError, SettingError
from circles.model.classifier import (
    MEMBER_RECORDS,
    CirclesClassifier,
    check_independent_members,
    upgrade_state_dict,
)
from circles.model.networks import check_network_size, output_size
from circles.runs.checkpoints import (
    CONFIG_KEY,
    CheckpointError,
    ResumeError,
    checkpoint_mismatch,
    resume_conflicts,
)


@dataclass
class CheckpointFacts:
    """What ``--ckpt_path`` holds, read once after parsing (before LightningCLI replaces the
    model's settings with the checkpoint's) and checked against what is built from the config
    (:meth:`CirclesCLI.instantiate_classes`)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # the weights' shapes, under today's names
    num_classes: int | None  # the network's classes
    data_state: dict[str, Any] | None  # the data module's state: its classes and their names
    trained_config: str | None  # the run's config.yaml as the checkpoint recorded it
    # for fit: trained settings this command sets otherwise
    conflicts: list[str] = field(default_factory=list)
    # for fit: what it restores besides the weights (optimizer, loops, callbacks)
    resume_state: dict[str, Any] | None = None

    @classmethod
    def read(
        cls, path: Path, checkpoint: dict[str, Any], now: dict[str, Any] | None
    ) -> CheckpointFacts:
        """The facts of a loaded ``checkpoint``; with ``now`` (fit's config as parsed), the
        resume conflicts."""
        state = dict(checkpoint["state_dict"])
        members = (checkpoint.get("hyper_parameters") or {}).get("members", 1)
        upgrade_state_dict(state, dict.fromkeys(MEMBER_RECORDS, torch.zeros(members)))
        trained = checkpoint.get(CONFIG_KEY)
        data_state = checkpoint.get(CirclesDataModule.__qualname__)
        files = (data_state or {}).get("files")
        return cls(
            path,
            {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
            (checkpoint.get("hyper_parameters") or {}).get("num_classes"),
            data_state,
            trained,
            resume_conflicts(trained, now, files) if now is not None else [],
            {k: checkpoint[k] for k in RESUMED if k in checkpoint} if now is not None else None,
        )


def check_monitors(trainer: Any) -> None:
    """A callback that stops on a validation metric has one to read: Lightning would fail at the
    end of the first epoch (``limit_val_batches 0`` runs no validation)."""
    from lightning.pytorch.callbacks import EarlyStopping

    if trainer.limit_val_batches != 0:
        return
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.monitor.startswith("val/"):
            raise ConfigError(
                "limit_val_batches",
                f"above 0 while EarlyStopping stops on {callback.monitor}, which validation "
                "measures",
                trainer.limit_val_batches,
                "Give validation batches, or leave the EarlyStopping config out.",
            )


def check_seed(config: Namespace) -> None:
    """``seed_everything`` is a seed numpy takes (Lightning seeds numpy, torch and Python with it),
    or true/false."""
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        raise ConfigError(
            "seed_everything",
            "an integer from 0 to 4294967295 (2**32 - 1, numpy's seeds), true for a random one, "
            "or false",
            seed,
        )


def check_optimizer(config: Namespace, subcommand: str) -> None:
    """The configured optimizer accepts its settings (``torch.optim`` checks them when it is
    built: built here on a stand-in parameter, so an error is surely the optimizer's), and, for
    ``fit`` with several members, treats each number on its own
    (:func:`check_independent_members`)."""
    optimizer = config.get("optimizer")
    if not isinstance(optimizer, Namespace) or not optimizer.get("class_path"):
        return
    module, name = optimizer.class_path.rsplit(".", 1)
    optimizer_class = getattr(importlib.import_module(module), name)
    for key, value in dict(optimizer.get("init_args") or {}).items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            wanted = "finite numbers" if len(numbers) > 1 else "a finite number"
            raise ConfigError(f"optimizer.{key}", wanted, value)
    try:
        optimizer_class(
            [torch.zeros(1, requires_grad=True)], **dict(optimizer.get("init_args") or {})
        )
    except (ValueError, TypeError) as err:
        raise SettingError("optimizer", err) from None
    if subcommand == "fit":
        check_independent_members(
            config.model.members,
            optimizer_class,
            config.trainer.get("gradient_clip_val"),
            config.trainer.get("gradient_clip_algorithm"),
        )


def check_resume(facts: CheckpointFacts) -> None:
    """``fit --ckpt_path`` continues a run only with the settings it was trained with."""
    if facts.conflicts:
        raise ResumeError(
            "fit --ckpt_path continues a run with the settings it was trained with, and these "
            "differ: "
            f"{'; '.join(facts.conflicts)}. Leave them out to continue the run (trainer settings "
            "such as "
            "--trainer.max_epochs may change), or start a new run without --ckpt_path."
        )


RESUMED = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


def check_resume_state(facts: CheckpointFacts, callbacks: list[Any]) -> None:
    """What ``fit --ckpt_path`` restores besides the weights can be restored: one optimizer's
    state, the loops' and each callback's (tried on a copy of the callback), before Lightning
    restores them after the run directory exists."""
    if facts.resume_state is None:
        return
    problem = _resume_state_problem(facts.resume_state, callbacks)
    if problem:
        raise CheckpointError(
            f"{facts.path} cannot be continued: {problem}. Test its weights with test "
            "--ckpt_path, or start a new run without --ckpt_path."
        )


def _resume_state_problem(state: dict[str, Any], callbacks: list[Any]) -> str | None:
    optimizers = state.get("optimizer_states")
    if optimizers is None:
        return "it holds no optimizer state (its weights only)"
    if not (isinstance(optimizers, list) and len(optimizers) == 1 and _optimizer(optimizers[0])):
        return "its optimizer state is not the state of one optimizer"
    schedulers = state.get("lr_schedulers")
    if not isinstance(schedulers, list) or not all(isinstance(s, dict) for s in schedulers):
        return "its learning-rate schedulers' state is not a list of their states"
    loops = state.get("loops", {"fit_loop": {}})
    if not isinstance(loops, dict) or not isinstance(loops.get("fit_loop"), dict):
        return "its loops' state holds no state of the fit's loop"
    saved = state.get("callbacks", {})
    if not isinstance(saved, dict):
        return "its callbacks' state is not a mapping"
    for callback in callbacks:
        if callback.state_key not in saved:
            continue
        try:
            copy.deepcopy(callback).load_state_dict(copy.deepcopy(saved[callback.state_key]))
        except Exception as err:  # whatever the callback's own restore raises
            return f"its state of {type(callback).__name__} cannot be restored ({err!r:.80})"
    return None


def _optimizer(state: Any) -> bool:
    return (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list)
        and all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in state["param_groups"]
        )
    )


def check_data(facts: CheckpointFacts, data: CirclesDataModule) -> None:
    """The data has the classes the network was trained for, by number and by name, and a file it
    trained with has not changed since (the data module's own check, which Lightning runs only
    when it restores the checkpoint, after the run directory exists)."""
    if facts.num_classes is not None and facts.num_classes != data.num_classes:
        raise CheckpointError(
            f"{facts.path} holds a network for {facts.num_classes} classes and the data has "
            f"{data.num_classes}. Give "
            "the data it was trained on: --config <its run>/config.yaml, or the same data.dataset, "
            "data.classes or "
            "data.path."
        )
    if facts.data_state is not None:
        data.load_state_dict(facts.data_state)


def check_shapes(facts: CheckpointFacts, model: CirclesClassifier) -> None:
    """The checkpoint's weights fit the model (Lightning builds it from the checkpoint's
    hyperparameters, so only a file this project did not write gets here)."""
    mismatch = checkpoint_mismatch(
        facts.shapes, {k: tuple(v.shape) for k, v in model.state_dict().items()}
    )
    if mismatch:
        raise CheckpointError(
            f"{facts.path} does not fit the model: its weights differ in {mismatch}. Use a "
            "checkpoint written by this project."
        )


def check_hyperparameters(path: Path, hparams: dict[str, Any]) -> None:
    """A checkpoint's hyperparameters are the model's, with values it takes, for a network that
    can be built here: checked before LightningCLI builds the model from them."""
    from jsonargparse import ArgumentParser

    model = {k: v for k, v in hparams.items() if k != "_instantiator"}
    empty = sorted(k for k, v in model.items() if v is None and k != "compile_mode")
    if empty:
        raise CheckpointError(
            f"{path} holds hyperparameters this model does not take: {', '.join(empty)} null."
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CirclesClassifier, "model")
    try:
        parser.parse_object({"model": model})
    except Exception as err:  # noqa: BLE001 - jsonargparse's ArgumentError, whatever it wraps
        raise CheckpointError(
            f"{path} holds hyperparameters this model does not take: "
            f"{parse_error_text(str(err), parser)}"
        ) from None
    try:
        check_network_size(
            len(model.get("features", (0, 0))),
            model.get("hidden_sizes", ()),
            output_size(model.get("num_classes", 2)),
            model.get("members", 1),
        )
    except ConfigError as err:
        raise CheckpointError(
            f"{path} describes a network that cannot be built here: model.{err}"
        ) from None
