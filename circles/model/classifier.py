"""CirclesClassifier: the LightningModule that trains the chapter's networks, K members at once
(one member is the ordinary single network), with torchmetrics objects per stage that reach every
logger through ``self.log``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from typing_extensions import override

from circles.contracts import known_data
from circles.errors import check
from circles.features import Feature, FeatureMap
from circles.model.metrics import (
    MemberAccuracy,
    member_losses,
    pooled_accuracy,
    predicted_classes,
    spread,
)
from circles.model.networks import (
    MemberViews,
    base_seed,
    build_members,
    ensemble_logits,
    member_seeds,
    output_size,
)
from circles.model.penalty import WeightPenalty
from circles.model.training import (
    FORMAT,
    FORMAT_KEY,
    WEIGHTS_EPOCH,
    built_optimizer,
    check_checkpoint,
    check_classes,
    check_independent_members,
    diverged,
    weights_finite,
)
from circles.ranges import Classes, Count, Members, Size

Activation = Literal["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Batch = tuple[torch.Tensor, torch.Tensor]


class CirclesClassifier(MemberViews, pl.LightningModule):
    """An MLP that classifies points of the plane: one logit and binary cross-entropy for two
    classes, a logit per class and cross-entropy for more. ``activation: none`` is the chapter's
    first model (a stack of linear layers is one affine map: a straight boundary), ``relu`` its
    second. ``members: K`` trains K copies from seeds S..S+K-1 at once; the loss is the sum of
    theirs, so each member's gradients and optimizer state are its own. ``network`` puts a network
    of your own in place of the MLP.

    Works with any data module whose batches are ``(points, labels)``; what circles' data adds
    (the best accuracy possible, the number of classes) is used where the data has it. Every
    stage's loss and accuracy are torchmetrics objects logged with ``self.log`` once per epoch, at
    step = the epoch (of the weights, outside fit); ``trainer.validate`` and ``trainer.test``
    return them."""

    # each member's seed, and (during fit) its latest and best validation accuracy
    member_seeds: torch.Tensor
    member_val_acc: torch.Tensor
    member_val_acc_best: torch.Tensor

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
            hidden_sizes: Width of each hidden layer, input side first; ``[]`` is a single linear
                layer.
            activation: Non-linearity after each hidden layer; ``none`` makes the whole network
                linear.
            features: What the network sees of a point (x1, x2): ``[x1, x2]``, or crosses such as
                ``[x1_sq, x2_sq]``; set through ``data.features`` on the command line.
            l1: L1 penalty rate on the weights (biases excluded), added to the loss; as in
                TensorFlow Playground, a weight the step pushes across zero stays at exactly zero.
            l2: L2 penalty rate on the weights (biases excluded), added to the loss.
            compile_mode: Compile the network with ``torch.compile`` in this mode
                (``reduce-overhead`` uses CUDA graphs on a GPU); ``null`` runs eagerly. Checkpoints
                are the same either way.
            members: How many copies of the network to train at once, each from its own seed
                (seed_everything + k): the spread of their results is the spread over seeds. 1 is
                the ordinary single network.
            num_classes: How many classes the points have (set from the data on the command line): 2
                is one output and binary cross-entropy; more is one output per class and
                cross-entropy.
            optimizer: The optimizer, given the parameters: the chapter's SGD with lr 0.1 unless
                set (``--model.optimizer Adam --model.optimizer.lr 0.03``).
            lr_scheduler: A learning-rate scheduler, given the optimizer (``ReduceLROnPlateau``
                watches ``val/loss``); ``null`` keeps the rate.
            network: A network of your own in place of the MLP (``hidden_sizes`` and
                ``activation`` are then unused): an ``nn.Module`` from the features ``(N, F)`` to
                the logits, ``(N,)`` or ``(N, 1)`` for two classes, ``(N, C)`` for more.
        """
        super().__init__()
        hidden_sizes, features = list(hidden_sizes), list(features)
        # what the network is; how it trains and runs is the run's config (and not pickled)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "network", "compile_mode"])
        check(network is None or members == 1, "members", "1 with a network of your own", members)
        self.members, self.num_classes = int(members), int(num_classes)
        self.activation = activation
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.compile_mode = compile_mode
        self.compiled = False
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
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = pooled_accuracy(num_classes)  # the members' mean accuracy
        self.val_acc = MemberAccuracy(members)  # each member's
        self.test_acc = MemberAccuracy(members)
        self.test_acc_ensemble = pooled_accuracy(num_classes)  # of the members' mean probability
        self.train_penalty = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # a resumed fit goes on from its best
        self.weights_epoch: int | None = None  # the epoch whose training made the weights held
        self.member_test_acc: torch.Tensor | None = None

    @override
    def configure_model(self) -> None:
        if self.compile_mode is not None and not self.compiled:
            # in place: state_dict keys stay the same
            self.net.compile(mode=self.compile_mode, dynamic=False)
            self.compiled = True

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (N,) or (N, C) of the members' mean probability for points (N, 2): their
        ensemble (of one member, exactly its own logits)."""
        return ensemble_logits(self.member_logits(x))

    # -- the stages --------------------------------------------------------------------------------

    def _step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's mean loss on the batch ``(K,)`` and logits ``(K, N[, C])``, and the
        labels."""
        x, y = batch
        logits = self.member_logits(x)
        return member_losses(logits, y), logits, y

    def _log_epoch(self, values: dict[str, torch.Tensor]) -> None:
        """An epoch's values, each already the epoch's (torchmetrics reduced it over the batches
        and the ranks), logged once. Lightning gives every logger the epoch with them (as
        ``epoch``, the curves' x-axis here); an evaluation outside fit logs the epoch its weights
        are of instead."""
        if self.trainer.state.fn != "fit":
            values = {**values, "epoch": torch.tensor(float(self.weights_epoch or 0))}
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    @override
    def setup(self, stage: str) -> None:
        """The data, where it says how many classes it has, has the network's."""
        check_classes(known_data(self.trainer), self.num_classes)

    @override
    def on_fit_start(self) -> None:
        for optimizer in self.trainer.optimizers:
            check_independent_members(
                self.members,
                type(optimizer),
                self.trainer.gradient_clip_val,
                self.trainer.gradient_clip_algorithm,
            )

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses, logits, y = self._step(batch)
        loss = losses.sum()  # each member's gradient is its own
        predicted = predicted_classes(logits.detach(), self.num_classes)
        self.train_loss.update(losses.detach().mean(), weight=len(y))
        self.train_acc.update(predicted, y.long().expand_as(predicted))
        if self.regularization:
            penalty = self.regularization(self.weight_parameters())
            self.train_penalty.update(penalty.detach() / self.members)
            loss = loss + penalty
        return loss

    @override
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.regularization.before_step(self.weight_parameters())

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last step, its training values (``on_train_epoch_end`` comes after
        the validation and the callbacks that read them); a run whose loss or weights are no
        longer finite stops here, on every rank together, before any checkpoint of it."""
        self.regularization.after_step(self.weight_parameters())
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        self.weights_epoch = self.current_epoch
        values = {"train/loss": self.train_loss.compute(), "train/acc": self.train_acc.compute()}
        if self.regularization:
            values["train/penalty"] = self.train_penalty.compute()
        if not bool(torch.isfinite(values["train/loss"]) & weights_finite(self)):
            reach = float(batch[0].abs().max()) if len(batch[0]) else 0.0
            raise diverged(self.current_epoch, self.trainer.optimizers, reach)
        for metric in (self.train_loss, self.train_acc, self.train_penalty):
            metric.reset()
        self._log_epoch(values)

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses, logits, y = self._step(batch)
        self.val_loss.update(losses.mean(), weight=len(y))
        self.val_acc.update(predicted_classes(logits, self.num_classes), y)

    @override
    def on_validation_epoch_end(self) -> None:
        """The validation loss and accuracy (with several members, its spread) and, during fit,
        the best accuracy so far."""
        per_member = self.val_acc.compute().reshape(-1)  # one member's comes as a 0-dim tensor
        values = {"val/loss": self.val_loss.compute(), **spread("val", per_member)}
        self.val_loss.reset()
        self.val_acc.reset()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.val_acc_best.update(values["val/acc"])
            values["val/acc_best"] = self.val_acc_best.compute()
            self.member_val_acc.copy_(per_member)
            torch.maximum(self.member_val_acc_best, per_member, out=self.member_val_acc_best)
        self._log_epoch(values)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        losses, logits, y = self._step(batch)
        self.test_loss.update(losses.mean(), weight=len(y))
        self.test_acc.update(predicted_classes(logits, self.num_classes), y)
        ensemble = predicted_classes(ensemble_logits(logits), self.num_classes)
        self.test_acc_ensemble.update(ensemble, y.long())

    @override
    def on_test_epoch_end(self) -> None:
        """The test loss and accuracy (with several members, its spread and the 95% interval of
        their mean) and, where the data knows it, the best accuracy possible on it and the gap to
        it."""
        self.member_test_acc = self.test_acc.compute().reshape(-1)
        ensemble = self.test_acc_ensemble.compute()
        values = {
            "test/loss": self.test_loss.compute(),
            **spread("test", self.member_test_acc, ensemble),
        }
        for metric in (self.test_loss, self.test_acc, self.test_acc_ensemble):
            metric.reset()
        data = known_data(self.trainer)
        bayes = data.bayes_accuracy() if data is not None else None
        if bayes is not None:
            values["test/bayes_acc"] = torch.tensor(bayes)
            values["test/bayes_gap"] = bayes - values["test/acc"]
        self._log_epoch(values)

    @override
    def predict_step(
        self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points as given (a batch of points, or a sequence whose first item they are; a
        point file's are float64, written back as read) and each member's probabilities for them
        (see :meth:`member_probabilities`)."""
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        return x, self.member_probabilities(x.to(self.dtype))

    # -- checkpoints -------------------------------------------------------------------------------

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of this format and classes only (:func:`check_checkpoint`); the epoch its
        weights are of (Lightning's count, for a checkpoint that does not record it)."""
        check_checkpoint(checkpoint, self.num_classes)
        epoch = checkpoint.get(WEIGHTS_EPOCH, checkpoint.get("epoch"))
        self.weights_epoch = (
            epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        )

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the format and the epoch the weights are of (Lightning's ``epoch`` counts the
        epoch in progress, which differs between a checkpoint written after validation and one
        written at the end of fit); never write non-finite weights: raising keeps the last good
        file. (Runs in SLURM's requeue handler too.)"""
        if not weights_finite(self):
            raise diverged(self.current_epoch, self.trainer.optimizers)
        checkpoint[FORMAT_KEY], checkpoint[WEIGHTS_EPOCH] = FORMAT, self.weights_epoch

    @override
    def configure_optimizers(self) -> OptimizerLRScheduler:
        """The optimizer (and scheduler) given to ``__init__``, on the parameters."""
        optimizer = built_optimizer(self.optimizer, self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }
