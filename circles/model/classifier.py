"""CirclesClassifier: the LightningModule that trains the chapter's networks, K members at once
(one member is the ordinary single network), with torchmetrics objects per stage that reach every
logger through ``self.log``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRScheduler
from torch import nn
from torchmetrics import MaxMetric
from typing_extensions import override

from circles.contracts import known_data
from circles.errors import check
from circles.features import Feature, FeatureMap
from circles.model.metrics import StageMetrics, member_losses
from circles.model.networks import (
    MemberViews,
    base_seed,
    build_members,
    member_seeds,
    output_size,
)
from circles.model.penalty import WeightPenalty
from circles.model.training import (
    CheckpointFormat,
    built_optimizer,
    check_classes,
    check_independent_members,
    diverged,
    weights_finite,
)
from circles.ranges import Classes, Count, Members, Size

Activation = Literal["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Batch = tuple[torch.Tensor, torch.Tensor]


class CirclesClassifier(MemberViews, CheckpointFormat, pl.LightningModule):
    """An MLP that classifies points of the plane (binary cross-entropy of one logit for two
    classes, cross-entropy for more): ``activation: none`` is the chapter's first model (one affine
    map: a straight boundary), ``relu`` its second; ``members: K`` trains K copies from seeds
    S..S+K-1 at once on the sum of their losses. Any data module of ``(points, labels)`` batches
    works. Each stage's loss and accuracy are torchmetrics objects logged once per epoch."""

    def __init__(
        self,
        hidden_sizes: Sequence[Count] = (10, 10),
        activation: Activation = "relu",
        features: Sequence[Feature] = ("x1", "x2"),
        l1: Size = 0.0,
        l2: Size = 0.0,
        compile_mode: CompileMode | None = None,
        members: Members = 1,
        num_classes: Classes = 2,
        optimizer: OptimizerCallable = lambda p: torch.optim.SGD(p, lr=0.1),
        lr_scheduler: LRSchedulerCallable | None = None,
        network: nn.Module | None = None,
    ) -> None:
        """
        Args:
            hidden_sizes: Width of each hidden layer, input side first; ``[]`` is one linear layer.
            activation: After each hidden layer; ``none`` makes the whole network linear.
            features: What the network sees of a point: ``[x1, x2]``, or crosses such as
                ``[x1_sq, x2_sq]`` (the command line sets it from ``data.features``).
            l1: L1 penalty rate on the weights (not the biases), added to the loss; a weight a
                step pushes across zero stays at zero, as in TensorFlow Playground.
            l2: L2 penalty rate on the weights (not the biases), added to the loss.
            compile_mode: ``torch.compile`` the network in this mode (``reduce-overhead``: CUDA
                graphs on a GPU); ``null`` runs eagerly. Checkpoints are the same either way.
            members: Copies of the network trained at once, member k from seed seed_everything +
                k: the spread of their results is the spread over seeds.
            num_classes: Classes of the points (the command line sets it from the data): 2 is one
                logit and binary cross-entropy, more a logit per class and cross-entropy.
            optimizer: Given the parameters; the chapter's SGD with lr 0.1 unless set
                (``--model.optimizer Adam --model.optimizer.lr 0.03``).
            lr_scheduler: Given the optimizer (``ReduceLROnPlateau`` watches ``val/loss``);
                ``null`` keeps the rate.
            network: Your own ``nn.Module`` in place of the MLP, from the features ``(N, F)`` to
                the logits: ``(N,)`` or ``(N, 1)`` for two classes, ``(N, C)`` for C.
        """
        super().__init__()
        hidden_sizes, features = list(hidden_sizes), list(features)
        # what the network is; how it trains and runs is the run's config (and not pickled)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "network", "compile_mode"])
        check(network is None or members == 1, "members", "1 with a network of your own", members)
        self.members, self.num_classes = int(members), int(num_classes)
        self.activation = activation
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.compile_mode, self.compiled = compile_mode, False
        self.regularization = WeightPenalty(l1, l2)
        self.features = FeatureMap(features)
        self.net = (
            network
            if network is not None
            else build_members(
                members, len(features), hidden_sizes, activation, output_size(num_classes)
            )
        )
        self.register_buffer("member_seeds", torch.tensor(member_seeds(base_seed(), members)))
        self.register_buffer("member_val_acc", torch.zeros(members))
        self.register_buffer("member_val_acc_best", torch.zeros(members))
        self.train_metrics = StageMetrics("train", members, num_classes)
        self.val_metrics = StageMetrics("val", members, num_classes)
        self.test_metrics = StageMetrics("test", members, num_classes)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # a resumed fit goes on from its best
        self.weights_epoch: int | None = None  # the epoch whose training made the weights held
        self.member_test_acc: torch.Tensor | None = None

    @override
    def configure_model(self) -> None:
        if self.compile_mode is not None and not self.compiled:  # in place: the same state_dict
            self.net.compile(mode=self.compile_mode, dynamic=False)
            self.compiled = True

    def _step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's mean loss ``(K,)`` and logits ``(K, N[, C])`` on the batch, its labels."""
        x, y = batch
        logits = self.member_logits(x)
        return member_losses(logits, y), logits, y

    def _log_epoch(self, values: dict[str, torch.Tensor]) -> None:
        """An epoch's values (torchmetrics reduced them over the batches and ranks), logged once,
        with the epoch (the curves' x-axis; outside fit, the epoch of the weights)."""
        if self.trainer.state.fn != "fit":
            values = {**values, "epoch": torch.tensor(float(self.weights_epoch or 0))}
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    @override
    def setup(self, stage: str) -> None:
        """The data, where it says how many classes it has, has the network's."""
        check_classes(known_data(self.trainer), self.num_classes)

    @override
    def on_fit_start(self) -> None:
        clip = self.trainer.gradient_clip_val, self.trainer.gradient_clip_algorithm
        for optimizer in self.trainer.optimizers:
            check_independent_members(self.members, type(optimizer), *clip)

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses, logits, y = self._step(batch)
        penalty = self.regularization(self.weight_parameters()) if self.regularization else None
        self.train_metrics.update(losses.detach(), logits.detach(), y, penalty, self.members)
        # each member's gradient is its own
        return losses.sum() if penalty is None else losses.sum() + penalty

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last step, its training values (``on_train_epoch_end`` comes after
        the validation); a loss or weights no longer finite stop the run on every rank here."""
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        self.weights_epoch = self.current_epoch
        values, _ = self.train_metrics.compute()
        if not bool(torch.isfinite(values["train/loss"]) & weights_finite(self)):
            raise diverged(self.current_epoch, self.trainer.optimizers, batch[0])
        self._log_epoch(values)

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_metrics.update(*self._step(batch))
        self._val_points = batch[0]  # how far they reach, should the fit diverge

    @override
    def on_validation_epoch_end(self) -> None:
        """The loss, accuracy (its spread over members) and, in a fit, the best so far; a loss
        no longer finite stops the fit before a checkpoint of it."""
        values, per_member = self.val_metrics.compute()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            if not bool(torch.isfinite(values["val/loss"])):
                # how far the last validation batch's points reach
                raise diverged(
                    self.current_epoch, self.trainer.optimizers, getattr(self, "_val_points", None)
                )
            self.val_acc_best.update(values["val/acc"])
            values["val/acc_best"] = self.val_acc_best.compute()
            self.member_val_acc.copy_(per_member)
            torch.maximum(self.member_val_acc_best, per_member, out=self.member_val_acc_best)
        self._log_epoch(values)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(*self._step(batch))

    @override
    def on_test_epoch_end(self) -> None:
        """The test loss and accuracy (with several members, its spread and the 95% interval of
        their mean) and, where the data knows it, the best accuracy possible and the gap to it."""
        values, self.member_test_acc = self.test_metrics.compute()
        data = known_data(self.trainer)
        bayes = data.bayes_accuracy() if data is not None else None
        if bayes is not None:
            values["test/bayes_acc"] = torch.tensor(bayes)
            values["test/bayes_gap"] = bayes - values["test/acc"]
        self._log_epoch(values)

    @override
    def configure_optimizers(self) -> OptimizerLRScheduler:
        """The optimizer (and scheduler) given to ``__init__``, on the parameters."""
        optimizer = built_optimizer(self.optimizer, self.parameters())
        self.regularization.attach(optimizer, self.weight_parameters)
        if self.lr_scheduler is None:
            return optimizer
        config: LRSchedulerConfigType = {"scheduler": self.lr_scheduler(optimizer)}
        config["monitor"] = "val/loss"  # what ReduceLROnPlateau watches
        return {"optimizer": optimizer, "lr_scheduler": config}
