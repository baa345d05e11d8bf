"""What the weights do while the network trains: their and their gradients' histograms in
TensorBoard, and the ReLU units that never fire."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.contracts import classifier, trainer_data
from circles.ranges import Count
from circles.runs.logger import tensorboard_of


class WeightsCallback(Callback):
    """What the weights do while the network trains.

    - Every ``histograms_every_n_epochs`` epochs (epoch 0 included), each layer's weights and the
      gradients of its last step as histograms, ``weights/layer_1``, ``gradients/layer_1``, ...
      (TensorBoard's HISTOGRAMS tab; with several members, all members' together).
    - Every ``dead_units_every_n_epochs`` epochs, for a ReLU network, how many units of each
      hidden layer give 0 for every training point: ``train/dead_units_1``, ... (members' mean).
      A dead unit no longer learns: its gradient is 0. (Every epoch it would add a fifth to an
      epoch of the chapter's model: ``benchmarks/bench.py --only seed``.)"""

    def __init__(
        self,
        histograms_every_n_epochs: Count | None = 50,
        dead_units_every_n_epochs: Count | None = 10,
    ) -> None:
        """
        Args:
            histograms_every_n_epochs: Epochs between two histograms of the weights and gradients;
                ``null`` writes none.
            dead_units_every_n_epochs: Epochs between two counts of the ReLU units that never fire
                on the training points, per hidden layer; ``null`` counts none.
        """
        self.every_n_epochs = histograms_every_n_epochs
        self.dead_every_n_epochs = dead_units_every_n_epochs
        self._gradients: list[torch.Tensor] = []

    def _histogram_epoch(self, trainer: pl.Trainer) -> bool:
        return self.every_n_epochs is not None and trainer.current_epoch % self.every_n_epochs == 0

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # the epoch's last step's are kept
        if self._histogram_epoch(trainer) and trainer.is_global_zero:
            self._gradients = [
                w.grad.detach().clone()
                for w in classifier(pl_module).weight_parameters()
                if w.grad is not None
            ]

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        count = self.dead_every_n_epochs is not None and epoch % self.dead_every_n_epochs == 0
        # most epochs: nothing to do, and nothing spent on finding that out
        points = trainer_data(trainer).points("train") if count else None
        if points is not None:
            with torch.no_grad():
                counts = classifier(pl_module).dead_units(points[0])
            if counts:
                dead = {f"train/dead_units_{i}": float(n) for i, n in enumerate(counts, start=1)}
                pl_module.log_dict(dead, sync_dist=True)
        if (
            not self._histogram_epoch(trainer)
            or not trainer.is_global_zero
            or (tensorboard := tensorboard_of(trainer.loggers)) is None
        ):
            return
        weights = [w.detach() for w in classifier(pl_module).weight_parameters()]
        for name, tensors in (("weights", weights), ("gradients", self._gradients)):
            for i, tensor in enumerate(tensors, start=1):  # 30 bins: a sixth of the default's cost
                tensorboard.experiment.add_histogram(
                    f"{name}/layer_{i}", tensor.float().cpu(), global_step=epoch, bins=30
                )
        self._gradients = []
