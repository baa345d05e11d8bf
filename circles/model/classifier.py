"""The LightningModule that trains the chapter's networks (:mod:`circles.networks`): one, or K members at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from typing_extensions import override

from circles.contracts import has_data_module, trainer_data
from circles.errors import CirclesError, check
from circles.features import Feature, FeatureMap
from circles.model.metrics import EpochMetrics, member_losses
from circles.model.networks import MemberViews, base_seed, build_members, linear_weights, member_seeds, output_size

Activation = Literal["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


class TrainingDiverged(CirclesError):
    """The training loss stopped being a finite number."""


def check_independent_members(members: int, optimizer: type, gradient_clip_val: float | None,
                              gradient_clip_algorithm: str | None) -> None:
    """Several members train as one model with the sum of their losses, which keeps them independent only when the
    optimizer and gradient clipping treat every number on its own. LBFGS (its line search spans all parameters) and
    clipping by norm (one norm over all members) do not, so they are refused for ``members > 1``."""
    if members == 1:
        return
    couples = ("torch.optim.LBFGS, whose line search treats all members as one problem"
               if issubclass(optimizer, torch.optim.LBFGS) else
               "gradient clipping by norm (one norm over all members); clip by value instead"
               if gradient_clip_val and (gradient_clip_algorithm or "norm") == "norm" else None)
    check(couples is None, "members", "1 with " + (couples or ""), members)


class WeightPenalty:
    """TensorFlow Playground's regularization of the weights (biases excluded): ``l1 * sum|w| + l2 * sum w^2`` is
    added to the loss, and with L1 a weight that a step pushes across zero is set to exactly zero."""

    def __init__(self, l1: float, l2: float) -> None:
        check(isinstance(l1, (int, float)) and l1 >= 0, "l1", "a number >= 0", l1)
        check(isinstance(l2, (int, float)) and l2 >= 0, "l2", "a number >= 0", l2)
        self.l1, self.l2 = l1, l2
        self._signs: list[torch.Tensor] = []

    def __bool__(self) -> bool:
        return bool(self.l1 or self.l2)

    def __call__(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), device=weights[0].device)
        if self.l1:
            total = total + self.l1 * sum(w.abs().sum() for w in weights)
        if self.l2:
            total = total + self.l2 * sum(w.pow(2).sum() for w in weights)
        return total

    def before_step(self, weights: Sequence[torch.Tensor]) -> None:
        if self.l1:
            self._signs = [w.detach().sign() for w in weights]

    @torch.no_grad()
    def after_step(self, weights: Sequence[torch.Tensor]) -> None:
        if self.l1:
            for w, sign in zip(weights, self._signs, strict=True):
                w.masked_fill_(w.sign() * sign < 0, 0.0)


def diverged(epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> TrainingDiverged:
    """The error for a loss or weights that stopped being finite, with the learning rate to lower."""
    lrs = sorted({group["lr"] for opt in optimizers for group in opt.param_groups})
    lr = lrs[0] if len(lrs) == 1 else lrs
    return TrainingDiverged(
        f"Training diverged at epoch {epoch}: the training loss or the weights are no longer finite numbers. The "
        f"learning rate ({lr}) is too large for this model; try a smaller one (e.g. {lrs[0] / 10:g})."
    )


WEIGHTS_EPOCH = "circles_weights_epoch"  # a checkpoint's record of the epoch whose training made its weights
# Checkpoints written before the metrics had a module of their own kept these under other names.
_RENAMED = {"val_acc_best.max_value": "metrics.val_acc_best", "member_seeds": "metrics.member_seeds",
            "member_val_acc": "metrics.member_val_acc", "member_val_acc_best": "metrics.member_val_acc_best"}


def upgrade_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's weights and records under today's names (:data:`_RENAMED`); changes it in place."""
    for old, new in _RENAMED.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def weights_finite(module: nn.Module) -> torch.Tensor:
    """Whether every parameter is a finite number, as one 0-dim tensor (no wait for the device): their sum is finite
    exactly when they all are, short of a sum beyond float32's range, which only diverged weights reach."""
    return torch.isfinite(torch.cat([p.detach().reshape(-1) for p in module.parameters()]).sum())


class CirclesClassifier(MemberViews, pl.LightningModule):
    """An MLP that classifies points of the plane: one logit and binary cross-entropy for two classes, a logit per
    class and cross-entropy for more. ``activation: none`` is the chapter's first model (a stack of linear layers is
    one affine map: a straight boundary), ``relu`` its second. ``members: K`` trains K copies from seeds S..S+K-1 at
    once; the loss is the sum of theirs, so each member's gradients and optimizer state are its own."""

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (10, 10),
        activation: Activation = "relu",
        features: Sequence[Feature] = ("x1", "x2"),
        l1: float = 0.0,
        l2: float = 0.0,
        compile_mode: CompileMode | None = None,
        members: int = 1,
        num_classes: int = 2,
    ) -> None:
        """
        Args:
            hidden_sizes: Width of each hidden layer, input side first; ``[]`` is a single linear layer.
            activation: Non-linearity after each hidden layer; ``none`` makes the whole network linear.
            features: What the network sees of a point (x1, x2): ``[x1, x2]``, or crosses such as
                ``[x1_sq, x2_sq]``; set through ``data.features`` on the command line.
            l1: L1 penalty rate on the weights (biases excluded), added to the loss; as in TensorFlow Playground, a
                weight the step pushes across zero stays at exactly zero.
            l2: L2 penalty rate on the weights (biases excluded), added to the loss.
            compile_mode: Compile the network with ``torch.compile`` in this mode (``reduce-overhead`` uses CUDA
                graphs on a GPU); ``null`` runs eagerly. Checkpoints are the same either way.
            members: How many copies of the network to train at once, each from its own seed (seed_everything + k):
                the spread of their results is the spread over seeds. 1 is the ordinary single network.
            num_classes: How many classes the points have (set from the data on the command line): 2 is one output
                and binary cross-entropy; more is one output per class and cross-entropy.
        """
        super().__init__()
        self.regularization = WeightPenalty(l1, l2)
        hidden_sizes, features = list(hidden_sizes), list(features)
        self.save_hyperparameters({"hidden_sizes": hidden_sizes, "activation": activation, "features": features,
                                   "l1": l1, "l2": l2, "compile_mode": compile_mode, "members": members,
                                   "num_classes": num_classes})
        self.members, self.num_classes, self.activation = members, num_classes, activation
        self.compile_mode, self.compiled = compile_mode, False
        self.features = FeatureMap(features)
        self.net = build_members(members, len(features), hidden_sizes, activation, output_size(num_classes))
        self.metrics = EpochMetrics(member_seeds(base_seed(), members))  # the seed drawing weights leaves as it was
        self.epoch_metrics = self.metrics.latest  # the latest epoch's values by metric name

    @override
    def configure_model(self) -> None:
        if self.compile_mode is not None and not self.compiled:
            self.net.compile(mode=self.compile_mode, dynamic=False)  # in place: state_dict keys stay the same
            self.compiled = True

    @property
    def weights_epoch(self) -> int | None:
        """The epoch whose training made the weights held: the last one trained, or the checkpoint's."""
        return self.metrics.weights_epoch

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,) or (N, C) for points (N, 2); of the members' mean probability (their ensemble), with several."""
        if self.members == 1:
            return self.member_logits(x)[0]
        probs = self.member_probabilities(x).mean(0)
        return torch.logit(probs) if self.num_classes == 2 else torch.log(probs)

    def publish(self, values: Mapping[str, float]) -> None:
        """Log and record more of this epoch's values (a callback's) as its own (:meth:`EpochMetrics.publish`)."""
        self.metrics.publish(self, {name: torch.as_tensor(value) for name, value in values.items()})

    def member_table(self) -> dict[str, list[Any]] | None:
        return self.metrics.member_table()  # per member its seed and accuracies; None for a single network

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """The sum of the members' mean losses on the batch: each member's gradient is its own."""
        x, y = batch
        logits = self.member_logits(x)
        losses = member_losses(logits, y)
        self.metrics.tallies[stage].add(losses, logits, y, ensemble=stage == "test" and self.members > 1)
        return losses.sum()

    @override
    def on_fit_start(self) -> None:
        for optimizer in self.trainer.optimizers:
            check_independent_members(self.members, type(optimizer), self.trainer.gradient_clip_val,
                                      self.trainer.gradient_clip_algorithm)

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if self.regularization:
            penalty = self.regularization(linear_weights(self.net))
            self.metrics.tallies["train"].add_penalty(penalty)
            loss = loss + penalty
        return loss

    @override
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.regularization.before_step(linear_weights(self.net))

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last step, publish its training values (Lightning validates before it calls the callbacks'
        ``on_train_epoch_end``, and those before the module's, so this is the moment they are complete and not yet
        read), and stop, on every rank, a run whose loss or weights are no longer finite, before any checkpoint."""
        self.regularization.after_step(linear_weights(self.net))
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.metrics.weights_epoch = self.current_epoch
            if not self.metrics.end_training(self):
                raise diverged(self.current_epoch, self.trainer.optimizers)

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    @override
    def on_validation_epoch_end(self) -> None:
        self.metrics.end_validation(self)

    @override
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    @override
    def on_test_epoch_end(self) -> None:
        known = has_data_module(self.trainer)
        self.metrics.end_test(self, trainer_data(self.trainer).bayes_accuracy() if known else None)

    @override
    def predict_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The points and each member's probabilities for them (see :meth:`member_probabilities`)."""
        return batch[0], self.member_probabilities(batch[0])

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_state_dict(checkpoint["state_dict"])
        epoch = checkpoint.get(WEIGHTS_EPOCH, checkpoint.get("epoch"))  # Lightning's count, for older checkpoints
        self.metrics.weights_epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the epoch the weights are of (Lightning's ``epoch`` counts the epoch in progress, which differs
        between a checkpoint written after validation and one written at the end of fit); never write non-finite
        weights: raising keeps the last good file. (Runs in SLURM's requeue handler too.)"""
        if not weights_finite(self):
            raise diverged(self.current_epoch, self.trainer.optimizers)
        checkpoint[WEIGHTS_EPOCH] = self.metrics.weights_epoch

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)
