"""CirclesClassifier: the LightningModule that trains the chapter's networks, K members at once
(one member is the ordinary single network), with torchmetrics objects per stage that reach every
logger through ``self.log``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from typing_extensions import override

from circles.contracts import has_data_module, trainer_data
from circles.errors import CirclesError, check
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
    upgrade_network_state,
)
from circles.model.penalty import WeightPenalty

Activation = Literal["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingDiverged(CirclesError):
    """The training loss stopped being a finite number."""


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


def diverged(epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> TrainingDiverged:
    """The error for a loss or weights that stopped being finite, with the learning rate to
    lower."""
    lrs = sorted({group["lr"] for opt in optimizers for group in opt.param_groups})
    lr = lrs[0] if len(lrs) == 1 else lrs
    decay = _runaway_decay(optimizers)
    if decay:
        return TrainingDiverged(
            f"Training diverged at epoch {epoch}: the training loss or the weights are no longer "
            f"finite numbers. {decay}"
        )
    return TrainingDiverged(
        f"Training diverged at epoch {epoch}: the training loss or the weights are no longer "
        "finite numbers. "
        f"The learning rate ({lr}) is too large for this model; try a smaller one (e.g. "
        f"{lrs[0] / 10:g})."
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
                f"weight_decay below {min(2 / lr, 1e19):.3g} with "
                "--optimizer.init_args.weight_decay."
            )
    return None


def weights_finite(module: nn.Module) -> torch.Tensor:
    """Whether every parameter is a finite number, as one 0-dim tensor (no wait for the device):
    their sum is finite exactly when they all are, short of a sum beyond float32's range, which
    only diverged weights reach."""
    return torch.isfinite(torch.cat([p.detach().reshape(-1) for p in module.parameters()]).sum())


# a checkpoint's record of the epoch whose training made its weights
WEIGHTS_EPOCH = "circles_weights_epoch"
# Records that checkpoints of earlier versions kept under other names.
_RENAMED = {
    "metrics.val_acc_best": "val_acc_best.max_value",
    "metrics.member_seeds": "member_seeds",
    "metrics.member_val_acc": "member_val_acc",
    "metrics.member_val_acc_best": "member_val_acc_best",
}


# single networks' lacked them
MEMBER_RECORDS = ("member_seeds", "member_val_acc", "member_val_acc_best")


def upgrade_state_dict(state_dict: dict[str, Any], records: dict[str, torch.Tensor]) -> bool:
    """A checkpoint's weights and records under today's names, in place, a member record it lacks
    taken from ``records``; returns whether its network was a single ``nn.Sequential`` (whose
    optimizer state then needs :func:`upgrade_optimizer_states`)."""
    sequential = upgrade_network_state(state_dict)
    for old, new in _RENAMED.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    for name in MEMBER_RECORDS:
        state_dict.setdefault(name, records[name])
    return sequential


def upgrade_optimizer_states(optimizer_states: list[dict[str, Any]], layers: int) -> None:
    """The optimizer's state of a single ``nn.Sequential`` network (parameters ``w0, b0, w1, b1,
    ...`` of shapes ``(out, in)`` and ``(out,)``) as a stack of one holds it: ``w0, w1, ..., b0,
    b1, ...``, each with a leading member axis. In place."""
    order = {2 * layer + part: part * layers + layer for layer in range(layers) for part in (0, 1)}
    for optimizer in optimizer_states:
        state = optimizer.get("state", {})
        optimizer["state"] = {
            order.get(i, i): {
                k: v.unsqueeze(0) if torch.is_tensor(v) and v.dim() else v
                for k, v in values.items()
            }
            for i, values in state.items()
        }
        for group in optimizer.get("param_groups", []):
            group["params"] = sorted(order.get(i, i) for i in group["params"])


class CirclesClassifier(MemberViews, pl.LightningModule):
    """An MLP that classifies points of the plane: one logit and binary cross-entropy for two
    classes, a logit per class and cross-entropy for more. ``activation: none`` is the chapter's
    first model (a stack of linear layers is one affine map: a straight boundary), ``relu`` its
    second. ``members: K`` trains K copies from seeds S..S+K-1 at once; the loss is the sum of
    theirs, so each member's gradients and optimizer state are its own.

    Every stage's loss and accuracy are torchmetrics objects logged with ``self.log`` once per
    epoch, at step = the epoch (of the weights, outside fit); ``trainer.validate`` and
    ``trainer.test`` return them."""

    # each member's seed, and (during fit) its latest and best validation accuracy
    member_seeds: torch.Tensor
    member_val_acc: torch.Tensor
    member_val_acc_best: torch.Tensor

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
        """
        super().__init__()
        self.regularization = WeightPenalty(l1, l2)
        hidden_sizes = list(hidden_sizes)
        features = list(features)
        self.save_hyperparameters(
            {
                "hidden_sizes": hidden_sizes,
                "activation": activation,
                "features": features,
                "l1": l1,
                "l2": l2,
                "compile_mode": compile_mode,
                "members": members,
                "num_classes": num_classes,
            }
        )
        self.members = members
        self.num_classes = num_classes
        self.activation = activation
        self.compile_mode = compile_mode
        self.compiled = False
        self.features = FeatureMap(features)
        self.net = build_members(
            members, len(features), hidden_sizes, activation, output_size(num_classes)
        )
        self.register_buffer("member_seeds", torch.tensor(member_seeds(base_seed(), members)))
        self.register_buffer("member_val_acc", torch.zeros(members))
        self.register_buffer("member_val_acc_best", torch.zeros(members))
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.train_acc = pooled_accuracy(num_classes)  # the members' mean accuracy
        # each member's
        self.val_acc = MemberAccuracy(members)
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

    def member_table(self) -> dict[str, list[Any]] | None:
        """With several members, a column per fact about them (seed, last and best validation
        accuracy, after test the test accuracy), a row per member; None for a single network."""
        if self.members == 1:
            return None
        table = {
            "member": list(range(self.members)),
            "seed": self.member_seeds.tolist(),
            "val_acc": self.member_val_acc.tolist(),
            "val_acc_best": self.member_val_acc_best.tolist(),
        }
        if self.member_test_acc is not None:
            table["test_acc"] = self.member_test_acc.tolist()
        return table

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
        """After the epoch's last step, its training values: logged here, not in
        ``on_train_epoch_end``, which Lightning calls after the epoch's validation and after the
        callbacks' ``on_train_epoch_end`` (the progress line, the frames), which read them. A run
        whose loss or weights are no longer finite stops here, on every rank together (the loss
        is reduced over the ranks, the weights are the same on all), before its validation and
        any checkpoint of it."""
        self.regularization.after_step(self.weight_parameters())
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        self.weights_epoch = self.current_epoch
        values = {"train/loss": self.train_loss.compute(), "train/acc": self.train_acc.compute()}
        if self.regularization:
            values["train/penalty"] = self.train_penalty.compute()
        if not bool(torch.isfinite(values["train/loss"]) & weights_finite(self)):
            raise diverged(self.current_epoch, self.trainer.optimizers)
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
        known = has_data_module(self.trainer)
        bayes = trainer_data(self.trainer).bayes_accuracy() if known else None
        if bayes is not None:
            values["test/bayes_acc"] = torch.tensor(bayes)
            values["test/bayes_gap"] = bayes - values["test/acc"]
        self._log_epoch(values)

    @override
    def predict_step(
        self, batch: tuple[torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points as given (a point file's are float64, written back as read) and each
        member's probabilities for them (see :meth:`member_probabilities`)."""
        return batch[0], self.member_probabilities(batch[0].to(self.dtype))

    # -- checkpoints -------------------------------------------------------------------------------

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Older checkpoints under today's names; a record they lack (a single network's seed) as
        this module's; the epoch the weights are of (Lightning's count, for checkpoints that do
        not record it)."""
        records = {name: getattr(self, name) for name in MEMBER_RECORDS}
        if upgrade_state_dict(checkpoint["state_dict"], records):
            upgrade_optimizer_states(
                checkpoint.get("optimizer_states") or [], len(self.net.weights)
            )
        epoch = checkpoint.get(WEIGHTS_EPOCH, checkpoint.get("epoch"))
        self.weights_epoch = (
            epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        )

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the epoch the weights are of (Lightning's ``epoch`` counts the epoch in
        progress, which differs between a checkpoint written after validation and one written at
        the end of fit); never write non-finite weights: raising keeps the last good file. (Runs
        in SLURM's requeue handler too.)"""
        if not weights_finite(self):
            raise diverged(self.current_epoch, self.trainer.optimizers)
        checkpoint[WEIGHTS_EPOCH] = self.weights_epoch

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)
