"""Inside the training: the weights' and gradients' histograms in TensorBoard, the ReLU units that never fire, and
Lightning's learning-rate finder with what it says about the configured rate."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateFinder
from typing_extensions import override

from circles.contracts import classifier, trainer_data
from circles.errors import check
from circles.logger import tensorboard_of


class WeightsCallback(Callback):
    """What the weights do while the network trains.

    - Every ``histograms_every_n_epochs`` epochs (epoch 0 included), each layer's weights and the gradients of its last
      step as histograms, ``weights/layer_1``, ``gradients/layer_1``, ... (TensorBoard's HISTOGRAMS tab; with
      several members, all members' together).
    - Every ``dead_units_every_n_epochs`` epochs, for a ReLU network, how many units of each hidden layer give 0 for
      every training point: ``train/dead_units_1``, ... (members' mean). A dead unit no longer learns: its gradient
      is 0. (Every epoch it would add a fifth to an epoch of the chapter's model: ``benchmarks/bench.py --only seed``.)
    """

    def __init__(self, histograms_every_n_epochs: int | None = 50, dead_units_every_n_epochs: int | None = 10) -> None:
        """
        Args:
            histograms_every_n_epochs: Epochs between two histograms of the weights and gradients; ``null`` writes
                none.
            dead_units_every_n_epochs: Epochs between two counts of the ReLU units that never fire on the training
                points, per hidden layer; ``null`` counts none.
        """
        for name, value in (("histograms_every_n_epochs", histograms_every_n_epochs),
                            ("dead_units_every_n_epochs", dead_units_every_n_epochs)):
            check(value is None or value >= 1, name, "a positive integer, or null for none", value)
        self.every_n_epochs, self.dead_every_n_epochs = histograms_every_n_epochs, dead_units_every_n_epochs
        self._gradients: list[torch.Tensor] = []

    def _histogram_epoch(self, trainer: pl.Trainer) -> bool:
        return self.every_n_epochs is not None and trainer.current_epoch % self.every_n_epochs == 0

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self._histogram_epoch(trainer) and trainer.is_global_zero:  # the epoch's last step's are kept
            self._gradients = [w.grad.detach().clone() for w in classifier(pl_module).weight_parameters()
                               if w.grad is not None]

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        count = self.dead_every_n_epochs is not None and trainer.current_epoch % self.dead_every_n_epochs == 0
        if not count and not self._histogram_epoch(trainer):
            return  # most epochs: nothing to do, and nothing spent on finding that out
        model = classifier(pl_module)
        if count:
            points = trainer_data(trainer).points("train")
            if points is not None:
                with torch.no_grad():
                    counts = model.dead_units(points[0])
                if counts:
                    model.publish({f"train/dead_units_{i}": count for i, count in enumerate(counts, start=1)})
        tensorboard = tensorboard_of(trainer.loggers)
        if tensorboard is None or not self._histogram_epoch(trainer) or not trainer.is_global_zero:
            return
        writer, epoch = tensorboard.experiment, trainer.current_epoch
        for i, weights in enumerate(model.weight_parameters(), start=1):  # 30 bins: a sixth of the default's cost
            writer.add_histogram(f"weights/layer_{i}", weights.detach().float().cpu(), global_step=epoch, bins=30)
        for i, gradients in enumerate(self._gradients, start=1):
            writer.add_histogram(f"gradients/layer_{i}", gradients.float().cpu(), global_step=epoch, bins=30)
        self._gradients = []


class LearningRateReport(LearningRateFinder):
    """Lightning's learning-rate finder before training: from the initial weights, ``num_training_steps`` steps
    with the learning rate raised from ``min_lr`` to ``max_lr``, then the weights are put back and training goes on
    with the configured rate. Prints the rate at which the loss fell fastest beside the configured one and saves the
    loss curve as ``lr_find.png`` in the run directory::

        python train.py fit --config configs/relu.yaml --config configs/trainer/lr_find.yaml
    """

    def __init__(self, min_lr: float = 1e-4, max_lr: float = 10.0, num_training_steps: int = 100,
                 mode: str = "exponential", early_stop_threshold: float | None = 4.0) -> None:
        """
        Args:
            min_lr: The first learning rate tried.
            max_lr: The last learning rate tried.
            num_training_steps: Steps between them (each a training step, a whole epoch with the full batch).
            mode: ``exponential`` or ``linear`` steps from one rate to the next.
            early_stop_threshold: Stop once the loss exceeds this many times its lowest; ``null`` never stops.
        """
        super().__init__(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training_steps, mode=mode,
                         early_stop_threshold=early_stop_threshold, update_attr=False)
        self.span = (min_lr, max_lr)
        self.suggested: float | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:  # a resumed fit: its rate was chosen before
            return
        super().on_fit_start(trainer, pl_module)
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        finder = self.optimal_lr
        if finder is None or not trainer.is_global_zero:
            return
        lrs, losses = finder_curve(finder.results)
        self.suggested = steepest_descent(lrs, losses)
        configured = sorted({group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups})
        lines = [f"Learning-rate finder ({len(lrs)} steps from {self.span[0]:g} to {self.span[1]:g}): the loss fell "
                 f"fastest at lr {self.suggested:.3g}" if self.suggested else
                 "Learning-rate finder: the loss fell at no rate tried (more steps, or a wider span?)",
                 f"  this run trains with lr {', '.join(f'{lr:g}' for lr in configured)}"]
        if run_dir is not None:
            path = os.path.join(run_dir, "lr_find.png")
            os.makedirs(run_dir, exist_ok=True)
            _plot(lrs, losses, self.suggested, configured).savefig(path, dpi=80)
            lines.append(f"  the loss over the rates: {os.path.normpath(path)}")
        print("\n".join(lines), flush=True)


FINDER_BETA = 0.98  # the smoothing of Lightning's finder (its _LRCallback's beta)


def finder_curve(results: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The finder's learning rates and its smoothed losses, the smoothing's start corrected: Lightning divides the
    running average after n steps by ``1 - beta**(n + 1)`` instead of ``1 - beta**n`` (its step count is already
    n), which makes the curve rise over its first steps whatever the loss does (Lightning-AI/pytorch-lightning#14167).
    ``tests/test_upstream.py`` pins the formula."""
    lrs, losses = np.asarray(results["lr"], dtype=float), np.asarray(results["loss"], dtype=float)
    n = np.arange(1, len(losses) + 1)
    return lrs, losses * (1 - FINDER_BETA ** (n + 1)) / (1 - FINDER_BETA**n)


def steepest_descent(lrs: np.ndarray, losses: np.ndarray, skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The rate at which the loss falls fastest per factor of the rate (its steepest slope over log lr), if it falls
    anywhere past the first ``skip_begin`` and before the last ``skip_end`` steps; else None."""
    keep = np.isfinite(losses)
    keep[:skip_begin], keep[len(keep) - skip_end:] = False, False
    if keep.sum() < 3:
        return None
    slopes = np.gradient(losses[keep], np.log10(lrs[keep]))
    return float(lrs[keep][np.argmin(slopes)]) if slopes.min() < 0 else None


def _plot(lrs: np.ndarray, losses: np.ndarray, suggested: float | None, configured: list[float]) -> Any:
    """The loss over the learning rates, the steepest fall and the configured rate marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if suggested is not None:
        ax.axvline(suggested, color="#d73027", label=f"steepest fall: {suggested:.3g}")
    for lr in configured:
        ax.axvline(lr, color="#4575b4", linestyle="--", label=f"this run's: {lr:g}")
    ax.legend()
    return figure
