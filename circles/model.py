"""The chapter's models: a configurable MLP (one, or K members stacked) and the LightningModule that trains it as a
binary classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from torch import nn
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy, MultilabelAccuracy

from circles.errors import CirclesError, check
from circles.features import Feature, FeatureMap

Activation = Literal["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


class TrainingDiverged(CirclesError):
    """The training loss stopped being a finite number."""


def build_mlp(in_features: int, hidden_sizes: Sequence[int], activation: str, outputs: int = 1) -> nn.Sequential:
    """Linear layers ``in_features -> *hidden_sizes -> outputs``, created in order with PyTorch's default
    initialisation, with ``activation`` after every hidden layer (none for ``"none"``)."""
    check(activation in ("none", *ACTIVATIONS), "activation", f"one of {['none', *ACTIVATIONS]}", activation)
    check(all(isinstance(h, int) and h >= 1 for h in hidden_sizes), "hidden_sizes",
          "a list of positive integers", list(hidden_sizes))
    check(len(hidden_sizes) > 0 or activation == "none", "hidden_sizes", "non-empty when an activation is used",
          list(hidden_sizes), f"Without hidden layers activation {activation!r} is never applied: give hidden "
          "layers (e.g. [10, 10]) or set activation: none for a single linear layer.")
    layers: list[nn.Module] = []
    sizes = [in_features, *hidden_sizes]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out))
        if activation != "none":
            layers.append(ACTIVATIONS[activation]())
    layers.append(nn.Linear(sizes[-1], outputs))
    return nn.Sequential(*layers)


class StackedMLP(nn.Module):
    """K networks of one shape as one module: layer l's weights stacked to ``(K, out, in)`` and its biases to
    ``(K, out)``, applied with batched matrix products, so K members cost one forward and one backward pass. Built from
    K ordinary networks (:func:`build_mlp`), each member computes exactly what its network computes.

    ``forward`` maps points ``(N, F)`` to ``(K, N, 1)``; ``hidden`` gives each hidden layer's output ``(K, N, units)``.
    """

    def __init__(self, nets: Sequence[nn.Sequential]) -> None:
        super().__init__()
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(torch.stack([net[i].weight.detach() for net in layers])
                                        for i in range(len(layers[0])))
        self.biases = nn.ParameterList(torch.stack([net[i].bias.detach() for net in layers])
                                       for i in range(len(layers[0])))
        self.activation = next((m for m in nets[0] if not isinstance(m, nn.Linear)), nn.Identity())

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, outputs = x.expand(len(self.weights[0]), *x.shape), []
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            h = self.activation(torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)))
            outputs.append(h)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)[-1] if len(self.weights) > 1 else x.expand(len(self.weights[0]), *x.shape)
        return torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2))


def build_members(members: int, in_features: int, hidden_sizes: Sequence[int], activation: str,
                  outputs: int = 1) -> nn.Module:
    """One network (:func:`build_mlp`) for ``members=1``; else a :class:`StackedMLP` whose member k is the network
    :func:`build_mlp` makes right after ``torch.manual_seed(S + k)``, where S is the seed the random generator was
    last given (``seed_everything S`` in a run): member k of a run is the single run with seed S + k."""
    if members == 1:
        return build_mlp(in_features, hidden_sizes, activation, outputs)
    base, nets = base_seed(), []
    for k in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(base + k)  # the networks are built on the CPU: its generator only
            nets.append(build_mlp(in_features, hidden_sizes, activation, outputs))
    return StackedMLP(nets)


def check_independent_members(members: int, optimizer: type, gradient_clip_val: Optional[float],
                              gradient_clip_algorithm: Optional[str]) -> None:
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


def base_seed() -> int:
    """The seed the random generator was last given (``seed_everything`` takes 0..2**32-1); a process that was never
    seeded has a random 64-bit one, taken modulo 2**32 so that S + k stays a valid seed."""
    seed = torch.initial_seed()
    return seed if seed < 2**32 else seed % 2**32


def member_seeds(base: int, members: int) -> list[int]:
    """The seed each member was built with."""
    return [base + k for k in range(members)]


class WeightPenalty:
    """TensorFlow Playground's regularization of the weights (biases excluded): ``l1 * sum|w| + l2 * sum w^2`` is
    added to the loss, and with L1 a weight that a step pushes across zero is set to exactly zero."""

    def __init__(self, l1: float, l2: float) -> None:
        check(l1 >= 0, "l1", "a number >= 0", l1)
        check(l2 >= 0, "l2", "a number >= 0", l2)
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
            for w, sign in zip(weights, self._signs):
                w.masked_fill_(w.sign() * sign < 0, 0.0)


def diverged(epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> TrainingDiverged:
    """The error for a loss or weights that stopped being finite, with the learning rate to lower."""
    lrs = sorted({group["lr"] for opt in optimizers for group in opt.param_groups})
    lr = lrs[0] if len(lrs) == 1 else lrs
    return TrainingDiverged(
        f"Training diverged at epoch {epoch}: the training loss or the weights are no longer finite numbers. The "
        f"learning rate ({lr}) is too large for this model; try a smaller one (e.g. {lrs[0] / 10:g})."
    )


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss on a batch: binary cross-entropy of its logits ``(K, N)``, or for more than two
    classes cross-entropy of its logits ``(K, N, C)``; labels ``(N,)``. Returns ``(K,)``."""
    if logits.dim() == 2:
        return nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)
    members, n, classes = logits.shape
    losses = nn.functional.cross_entropy(logits.reshape(-1, classes), y.long().repeat(members), reduction="none")
    return losses.reshape(members, n).mean(-1)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Each member's predicted class for its logits: ``(K, N)`` (two classes: probability > 0.5) or ``(K, N, C)``."""
    return (logits > 0).long() if logits.dim() == 2 else logits.argmax(-1)


class StageMetrics(nn.Module):
    """One stage's (train, val or test) metrics over an epoch: the members' mean loss (``loss``) and each member's
    accuracy (``acc``: torchmetrics' multilabel accuracy with one label per member, fed whether each of its
    predictions is right; its states are per-member counts, summed over batches and DDP ranks)."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.loss = MeanMetric(nan_strategy="disable")
        self.acc = MultilabelAccuracy(num_labels=members, average=None, validate_args=False)

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Take a batch's member logits (``(K, N)``, or ``(K, N, C)`` for C > 2 classes) and labels ``(N,)``;
        returns each member's mean loss ``(K,)``."""
        losses = member_losses(logits, y)
        self.loss.update(losses.detach().mean(), len(y))
        right = predicted_classes(logits.detach()) == y.long()
        self.acc.update(right.T, torch.ones_like(right.T))
        return losses

    def compute(self, stage: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``{stage}/loss`` and ``{stage}/acc`` (means over the members; with several, ``acc_std``, ``acc_min`` and
        ``acc_max`` too) and each member's accuracy; the metrics are reset for the next epoch."""
        per_member = self.acc.compute().reshape(-1)
        values = {f"{stage}/loss": self.loss.compute(), f"{stage}/acc": per_member.mean()}
        if len(per_member) > 1:
            values.update({f"{stage}/acc_std": per_member.std(), f"{stage}/acc_min": per_member.min(),
                           f"{stage}/acc_max": per_member.max()})
        self.loss.reset()
        self.acc.reset()
        return values, per_member


def interval95(std: torch.Tensor, members: int) -> torch.Tensor:
    """Half-width of the 95% confidence interval of a mean over ``members`` values with sample std ``std``
    (Student's t with members - 1 degrees of freedom)."""
    from scipy.stats import t

    return std * float(t.ppf(0.975, members - 1)) / members**0.5


def hidden_outputs(net: nn.Module, h: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's output (after its activation) of a :func:`build_mlp` network, or of a
    :class:`StackedMLP`'s first member, for its inputs ``h``: a list of ``(N, units)`` tensors."""
    if isinstance(net, StackedMLP):
        return [out[0] for out in net.hidden(h)]
    outputs, layers = [], list(net)
    for i, layer in enumerate(layers[:-1]):
        h = layer(h)
        if not isinstance(layers[i + 1], tuple(ACTIVATIONS.values())):
            outputs.append(h)
    return outputs


def linear_weights(net: nn.Module) -> list[torch.Tensor]:
    """The weight matrices (no biases) of a :func:`build_mlp` network or a :class:`StackedMLP` (stacked)."""
    return list(net.weights) if isinstance(net, StackedMLP) else [m.weight for m in net if isinstance(m, nn.Linear)]


class CirclesClassifier(pl.LightningModule):
    """An MLP that classifies 2-D points as outer circle (0) or inner circle (1), trained with
    ``BCEWithLogitsLoss``; SGD with lr 0.1 unless the config names an optimizer.

    ``activation: none`` is the chapter's first model: a stack of linear layers, which is one affine map and can
    only draw a straight boundary. ``relu`` is its second model.

    With ``members: K`` it trains K independently initialised copies of the network at once (member k is the model
    a single run with ``seed_everything S + k`` trains: the same initial weights, batches and updates). The loss is
    the sum of the members' losses, so each member's gradient and optimizer state are its own; ``train/*``,
    ``val/*`` and ``test/acc`` are means over the members, with their spread beside them.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (10, 10),
        activation: Activation = "relu",
        features: Sequence[Feature] = ("x1", "x2"),
        l1: float = 0.0,
        l2: float = 0.0,
        compile_mode: Optional[CompileMode] = None,
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
        check(isinstance(members, int) and not isinstance(members, bool) and members >= 1, "members",
              "a positive integer", members)
        check(isinstance(num_classes, int) and num_classes >= 2, "num_classes", "an integer >= 2", num_classes)
        self.regularization = WeightPenalty(l1, l2)
        hidden_sizes, features = list(hidden_sizes), list(features)
        self.save_hyperparameters({"hidden_sizes": hidden_sizes, "activation": activation, "features": features,
                                   "l1": l1, "l2": l2, "compile_mode": compile_mode, "members": members,
                                   "num_classes": num_classes})
        self.members, self.num_classes = members, num_classes
        self.features = FeatureMap(features)
        seed = base_seed()
        self.net = build_members(members, len(features), hidden_sizes, activation, 1 if num_classes == 2 else num_classes)
        if members > 1:  # per member: its seed, its last and its best validation accuracy
            self.register_buffer("member_seeds", torch.tensor(member_seeds(seed, members), dtype=torch.int64))
            self.register_buffer("member_val_acc", torch.zeros(members))
            self.register_buffer("member_val_acc_best", torch.zeros(members))
        self.member_test_acc: Optional[torch.Tensor] = None
        self.compile_mode = compile_mode
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.train_metrics, self.val_metrics, self.test_metrics = (StageMetrics(members) for _ in range(3))
        self.test_acc_ensemble = (BinaryAccuracy(validate_args=False) if num_classes == 2 else
                                  MulticlassAccuracy(num_classes=num_classes, validate_args=False))
        self.train_penalty = MeanMetric(nan_strategy="disable")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)
        self.epoch_metrics: dict[str, float] = {}
        self._unlogged: dict[str, float] = {}
        self._finite = torch.ones((), dtype=torch.bool)

    def configure_model(self) -> None:
        if self.compile_mode is not None and not getattr(self, "_compiled", False):
            self.net.compile(mode=self.compile_mode, dynamic=False)  # in place: state_dict keys stay the same
            self._compiled = True

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits for points (N, 2) in the (x1, x2) plane: shape (K, N), or (K, N, C) for C > 2
        classes."""
        logits = self.net(self.features(x))
        logits = logits if self.members > 1 else logits.unsqueeze(0)
        return logits.squeeze(-1) if self.num_classes == 2 else logits

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities: of class 1, (K, N); for C > 2 classes, of each class, (K, N, C)."""
        return self._probabilities(self.member_logits(x))

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_classes == 2 else torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for points (N, 2) in the (x1, x2) plane: shape (N,), or (N, C) for C > 2 classes; with several
        members, those of their mean probability (the ensemble's prediction)."""
        if self.members == 1:
            return self.member_logits(x)[0]
        probs = self.member_probabilities(x).mean(0)
        return torch.logit(probs) if self.num_classes == 2 else torch.log(probs)

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's output (after its activation) for points (N, 2): a list of (N, units) tensors (with
        several members, the first member's)."""
        return hidden_outputs(self.net, self.features(x))

    def _weights(self) -> list[torch.Tensor]:
        return linear_weights(self.net)

    def penalty(self) -> torch.Tensor:
        """The regularization term added to the loss: ``l1 * sum|w| + l2 * sum w^2`` (summed over the members, so
        each member's gradient is its own); 0 without regularization."""
        return self.regularization(self._weights())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.regularization.before_step(self._weights())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.regularization.after_step(self._weights())
        self._end_of_epoch(batch_idx)

    # Metrics are accumulated with torchmetrics (reduced across DDP ranks when computed) and written once per epoch:
    # ``train/*`` and ``val/*`` to the loggers at step = epoch, ``val/acc`` also through ``self.log`` for checkpointing.
    # Each ``self.log`` call costs Lightning about as much as a whole full-batch step of this model, so there is one.

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: StageMetrics) -> torch.Tensor:
        """The sum of the members' mean losses on the batch: each member's gradient is its own."""
        x, y = batch
        return metrics.update(self.member_logits(x), y).sum()

    def on_fit_start(self) -> None:
        for optimizer in self.trainer.optimizers:
            check_independent_members(self.members, type(optimizer), self.trainer.gradient_clip_val,
                                      self.trainer.gradient_clip_algorithm)
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics)
        if self.regularization:
            penalty = self.penalty()
            self.train_penalty.update(penalty.detach())
            loss = loss + penalty
        self._finite &= torch.isfinite(loss.detach())
        return loss

    def _end_of_epoch(self, batch_idx: int) -> None:
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        self._finite &= self._weights_finite()  # after the epoch's last step: what the epoch's checkpoints would hold
        self._check_finite()
        values, _ = self.train_metrics.compute("train")
        values = {k: v for k, v in values.items() if not k.startswith("train/acc_")}  # the spread: val and test
        if self.regularization:
            values["train/penalty"] = self.train_penalty.compute() / self.members
            self.train_penalty.reset()
        self._record(values)

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        """Keep an epoch's values as floats (one host sync) for printing and for the end-of-epoch write."""
        floats = dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))
        self.epoch_metrics.update(floats)
        self._unlogged.update(floats)

    def on_train_epoch_end(self) -> None:
        if self._unlogged:
            for logger in self.loggers:
                logger.log_metrics(self._unlogged, step=self.current_epoch)
            self._unlogged = {}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        values, per_member = self.val_metrics.compute("val")
        if self.trainer.sanity_checking:
            return
        if self.trainer.state.fn != TrainerFn.FITTING:
            self.log_dict(values)
            return
        self.val_acc_best.update(values["val/acc"])
        values["val/acc_best"] = self.val_acc_best.compute()
        if self.members > 1:
            self.member_val_acc.copy_(per_member)
            torch.maximum(self.member_val_acc_best, per_member, out=self.member_val_acc_best)
        self.log("val/acc", values["val/acc"], logger=False, sync_dist=True)  # already reduced: silences the warning
        self._record(values)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.member_logits(x)
        self.test_metrics.update(logits, y)
        if self.members > 1:  # the ensemble: the class of the members' mean probability
            mean = self._probabilities(logits).mean(0)
            self.test_acc_ensemble.update((mean > 0.5).long() if self.num_classes == 2 else mean.argmax(-1), y.long())

    def on_test_epoch_end(self) -> None:
        values, self.member_test_acc = self.test_metrics.compute("test")
        if self.members > 1:  # the interval of the members' mean, and their ensemble's accuracy
            values["test/acc_ci95"] = interval95(values["test/acc_std"], self.members)
            values["test/acc_ensemble"] = self.test_acc_ensemble.compute()
            self.test_acc_ensemble.reset()
        self.log_dict(values)

    def predict_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Rows of ``(x1, x2, probability of class 1)``, or for C > 2 classes ``(x1, x2, probability of the predicted
        class, predicted class)``; with several members the probability is their mean, followed by their standard
        deviation (before the class)."""
        x = batch[0]
        probs = self.member_probabilities(x)
        if self.num_classes == 2:
            spread = [probs.std(0).unsqueeze(-1)] if self.members > 1 else []
            return torch.cat([x[:, :2], probs.mean(0).unsqueeze(-1), *spread], dim=1)
        mean = probs.mean(0)
        winner = mean.argmax(-1, keepdim=True)
        spread = [probs.std(0).gather(-1, winner)] if self.members > 1 else []
        return torch.cat([x[:, :2], mean.gather(-1, winner), *spread, winner.float()], dim=1)

    def _weights_finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(p).all() for p in self.parameters()]).all()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Never write non-finite weights: raising here keeps the last good checkpoint file in place. (No collective
        here: this also runs inside SLURM's SIGUSR1 handler; DDP keeps the weights equal on every rank anyway.)"""
        if not self._weights_finite():
            raise diverged(self.current_epoch, self.trainer.optimizers)

    def _check_finite(self) -> None:
        """Raise TrainingDiverged on every rank together when the loss or the weights stopped being finite on any."""
        if not self.trainer.strategy.reduce_boolean_decision(bool(self._finite), all=True):
            raise diverged(self.current_epoch, self.trainer.optimizers)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)
