"""What can go wrong in training, said with what to do about it: a fit that diverged, members that
an optimizer would couple, an optimizer's settings, a checkpoint of another format or other
classes. The module (:class:`circles.model.CirclesClassifier`) checks each where Lightning calls
it, so a plain script gets them too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from circles.contracts import PointData
from circles.errors import CirclesError, ConfigError, InputError, SettingError, check

# a checkpoint's record of the epoch whose training made its weights
WEIGHTS_EPOCH = "circles_weights_epoch"
# The layout of what a checkpoint holds (the state's names and shapes, the records beside them):
# 1 since circles 0.1.0. A checkpoint of another format is refused with what to do.
FORMAT_KEY, FORMAT = "circles_format", 1


class TrainingDiverged(CirclesError):
    """The training loss stopped being a finite number; ``setting`` is the optimizer's setting to
    lower (``lr``, ``weight_decay``) if any, and ``notes`` (how to set it, the checkpoints kept
    from before) follow the message."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.notes: list[str] = []

    @override
    def __str__(self) -> str:
        return " ".join([super().__str__(), *self.notes])


def check_independent_members(
    members: int,
    optimizer: type,
    gradient_clip_val: float | None,
    gradient_clip_algorithm: str | None,
) -> None:
    """Several members train as one model with the sum of their losses, which keeps them
    independent only when the optimizer and gradient clipping treat every number on its own.
    LBFGS (its line search spans all parameters) and clipping by norm (one norm over all members)
    do not, so they are refused for ``members > 1``."""
    lbfgs = issubclass(optimizer, torch.optim.LBFGS)
    by_norm = bool(gradient_clip_val) and (gradient_clip_algorithm or "norm") == "norm"
    couples = (
        "torch.optim.LBFGS, whose line search treats all members as one problem"
        if lbfgs
        else "gradient clipping by norm (one norm over all members); clip by value instead"
        if by_norm
        else None
    )
    check(members == 1 or couples is None, "members", f"1 with {couples}", members)


def diverged(
    epoch: int, optimizers: Sequence[torch.optim.Optimizer], points: torch.Tensor | None = None
) -> TrainingDiverged:
    """The error for a loss or weights that stopped being finite, with what to do: lower the
    weight decay or the learning rate, or, for ``points`` that lie far beyond what a network takes
    (the batch it diverged on), scale them (it diverges at any rate)."""
    reach = float(points.abs().max()) if points is not None and len(points) else 0.0
    lrs = sorted({group["lr"] for opt in optimizers for group in opt.param_groups})
    lr = lrs[0] if len(lrs) == 1 else lrs
    decay = _runaway_decay(optimizers)
    start = (
        f"Training diverged at epoch {epoch}: the training loss or the weights are no longer "
        "finite numbers."
    )
    if decay:
        return TrainingDiverged(f"{start} {decay}", "weight_decay")
    if reach > 1e4:
        return TrainingDiverged(
            f"{start} The points reach |x| = {reach:.3g}, far beyond the few units a "
            "network of this size takes; scale the data (generated points: a smaller data.noise; "
            "a file's: its coordinates), a smaller learning rate does not help."
        )
    return TrainingDiverged(
        f"{start} The learning rate ({lr}) is too large for this model; try a smaller one (e.g. "
        f"{lrs[0] / 10:g}).",
        "lr",
    )


def _runaway_decay(optimizers: Sequence[torch.optim.Optimizer]) -> str | None:
    """What to say when weight decay alone blows the weights up, whatever the learning rate's
    share: a step scales them by ``1 - lr * weight_decay``, which grows them once the product
    passes 2, and a decay beyond ~1e19 overflows float32 when squared (Adam's second moment)."""
    for group in (g for opt in optimizers for g in opt.param_groups):
        lr, decay = float(group["lr"]), float(group.get("weight_decay") or 0.0)
        if lr * decay > 2 or decay > 1e19:
            return (
                f"weight_decay {decay:g} with lr {lr:g} makes every step scale the weights by "
                f"{1 - lr * decay:.3g}: they grow without bound whatever the data. Give a "
                f"weight_decay below {min(2 / lr, 1e19):.3g}."
            )
    return None


def weights_finite(module: nn.Module) -> torch.Tensor:
    """Whether every parameter is a finite number, as one 0-dim tensor (no wait for the device):
    their sum is finite exactly when they all are, short of a sum beyond float32's range, which
    only diverged weights reach."""
    return torch.isfinite(torch.cat([p.detach().reshape(-1) for p in module.parameters()]).sum())


def built_optimizer(
    optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer], parameters: Iterable[Any]
) -> torch.optim.Optimizer:
    """``optimizer`` on ``parameters``; the settings ``torch.optim`` refuses, and numbers that are
    not finite in the parameters' precision (which it takes: 1e39 is inf in float32), are an
    error naming them."""
    try:
        built = optimizer(parameters)
    except (ValueError, TypeError) as err:
        raise SettingError("optimizer", err) from None
    dtypes = {p.dtype for group in built.param_groups for p in group["params"]} or {torch.float32}
    for key, value in built.defaults.items():
        numbers = value if isinstance(value, tuple) else (value,)
        floats = [v for v in numbers if isinstance(v, float)]
        if not all(torch.tensor(floats, dtype=dtype).isfinite().all() for dtype in dtypes):
            precision = min(dtypes, key=lambda d: torch.finfo(d).max)
            kind = str(precision).removeprefix("torch.")
            raise ConfigError(f"optimizer.{key}", f"a finite {kind} number", value)
    return built


def check_classes(data: PointData | None, num_classes: int) -> None:
    """The data, where it says how many classes it has, has the network's ``num_classes``."""
    classes = data.num_classes if data is not None else num_classes
    check(
        classes == num_classes,
        "num_classes",
        f"the data's {classes} (the network's outputs follow the classes)",
        num_classes,
    )


def check_checkpoint(checkpoint: dict[str, Any], num_classes: int) -> None:
    """A checkpoint of this format (:data:`FORMAT`), for a network of ``num_classes`` classes."""
    written = checkpoint.get(FORMAT_KEY)
    if written != FORMAT:
        raise InputError(
            f"The checkpoint is of format {written} and circles reads format {FORMAT}: written "
            "by another version of circles (or before 0.1.0). Train it again, or use the version "
            "of circles that wrote it."
        )
    classes = checkpoint.get("hyper_parameters", {}).get("num_classes", num_classes)
    if classes != num_classes:
        raise InputError(
            f"The checkpoint holds a network for {classes} classes and the data has "
            f"{num_classes}. Give the data it was trained on: --config <its run>/config.yaml, or "
            "the same data.dataset, data.classes or data.path."
        )


class CheckpointFormat:
    """A LightningModule's checkpoints with their format recorded and checked (a mixin of
    :class:`circles.model.CirclesClassifier`)."""

    num_classes: int
    weights_epoch: int | None  # the epoch whose training made the weights held
    current_epoch: int
    trainer: Any

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of this format and classes only (:func:`check_checkpoint`); the epoch its
        weights are of (Lightning's count, for a checkpoint that does not record it)."""
        check_checkpoint(checkpoint, self.num_classes)
        epoch = checkpoint.get(WEIGHTS_EPOCH, checkpoint.get("epoch"))
        self.weights_epoch = epoch if type(epoch) is int else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the format and the epoch the weights are of (Lightning's ``epoch`` counts the
        epoch in progress, which differs between a checkpoint written after validation and one
        written at the end of fit); never write non-finite weights: raising keeps the last good
        file. (Runs in SLURM's requeue handler too.)"""
        if not weights_finite(self):  # type: ignore[arg-type]  # mixed into an nn.Module
            raise diverged(self.current_epoch, self.trainer.optimizers)
        checkpoint[FORMAT_KEY], checkpoint[WEIGHTS_EPOCH] = FORMAT, self.weights_epoch
