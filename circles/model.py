"""The chapter's models: a configurable MLP and the LightningModule that trains it as a binary classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from torch import nn
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import BinaryAccuracy

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


def build_mlp(in_features: int, hidden_sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers ``in_features -> *hidden_sizes -> 1``, created in order with PyTorch's default initialisation,
    with ``activation`` after every hidden layer (none for ``"none"``)."""
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
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


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


class CirclesClassifier(pl.LightningModule):
    """An MLP that classifies 2-D points as outer circle (0) or inner circle (1), trained with
    ``BCEWithLogitsLoss``; SGD with lr 0.1 unless the config names an optimizer.

    ``activation: none`` is the chapter's first model: a stack of linear layers, which is one affine map and can
    only draw a straight boundary. ``relu`` is its second model.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (10, 10),
        activation: Activation = "relu",
        features: Sequence[Feature] = ("x1", "x2"),
        l1: float = 0.0,
        l2: float = 0.0,
        compile_mode: Optional[CompileMode] = None,
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
        """
        super().__init__()
        self.regularization = WeightPenalty(l1, l2)
        hidden_sizes, features = list(hidden_sizes), list(features)
        self.save_hyperparameters({"hidden_sizes": hidden_sizes, "activation": activation, "features": features,
                                   "l1": l1, "l2": l2, "compile_mode": compile_mode})
        self.features = FeatureMap(features)
        self.net = build_mlp(len(features), hidden_sizes, activation)
        self.compile_mode = compile_mode
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.train_loss, self.train_acc = MeanMetric(nan_strategy="disable"), BinaryAccuracy(validate_args=False)
        self.val_loss, self.val_acc = MeanMetric(nan_strategy="disable"), BinaryAccuracy(validate_args=False)
        self.test_loss, self.test_acc = MeanMetric(nan_strategy="disable"), BinaryAccuracy(validate_args=False)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for points (N, 2) in the (x1, x2) plane: shape (N,)."""
        return self.net(self.features(x)).squeeze(-1)

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's output (after its activation) for points (N, 2): a list of (N, units) tensors."""
        outputs, h = [], self.features(x)
        layers = list(self.net)
        for i, layer in enumerate(layers[:-1]):
            h = layer(h)
            if not isinstance(layers[i + 1], tuple(ACTIVATIONS.values())):
                outputs.append(h)
        return outputs

    def _weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.net if isinstance(m, nn.Linear)]

    def penalty(self) -> torch.Tensor:
        """The regularization term added to the loss: ``l1 * sum|w| + l2 * sum w^2``; 0 without regularization."""
        return self.regularization(self._weights())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.regularization.before_step(self._weights())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.regularization.after_step(self._weights())
        self._end_of_epoch(batch_idx)

    # Metrics are accumulated with torchmetrics (reduced across DDP ranks when computed) and written once per epoch:
    # ``train/*`` and ``val/*`` to the loggers at step = epoch, ``val/acc`` also through ``self.log`` for checkpointing.
    # Each ``self.log`` call costs Lightning about as much as a whole full-batch step of this model, so there is one.

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], loss_metric: MeanMetric,
              accuracy: BinaryAccuracy) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        loss_metric.update(loss.detach(), len(y))
        accuracy.update(torch.sigmoid(logits.detach()) > 0.5, y)
        return loss

    @staticmethod
    def _compute(stage: str, loss: MeanMetric, accuracy: BinaryAccuracy) -> dict[str, torch.Tensor]:
        """``{stage}/loss`` and ``{stage}/acc`` of the epoch; the metrics are reset for the next one."""
        values = {f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()}
        loss.reset()
        accuracy.reset()
        return values

    def _fitting(self) -> bool:
        return self.trainer.state.fn == TrainerFn.FITTING

    def on_fit_start(self) -> None:
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_loss, self.train_acc)
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
        values = self._compute("train", self.train_loss, self.train_acc)
        if self.regularization:
            values["train/penalty"] = self.train_penalty.compute()
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
        self._step(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        values = self._compute("val", self.val_loss, self.val_acc)
        if self.trainer.sanity_checking:
            return
        if not self._fitting():
            self.log_dict(values)
            return
        self.val_acc_best.update(values["val/acc"])
        values["val/acc_best"] = self.val_acc_best.compute()
        self.log("val/acc", values["val/acc"], logger=False, sync_dist=True)  # already reduced: silences the warning
        self._record(values)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._compute("test", self.test_loss, self.test_acc))

    def predict_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Rows of ``(x1, x2, probability of the inner circle)``."""
        x = batch[0]
        return torch.cat([x[:, :2], torch.sigmoid(self(x)).unsqueeze(-1)], dim=1)

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
