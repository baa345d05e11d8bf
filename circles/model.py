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
        in_features: int = 2,
        compile_mode: Optional[CompileMode] = None,
    ) -> None:
        """
        Args:
            hidden_sizes: Width of each hidden layer, input side first; ``[]`` is a single linear layer.
            activation: Non-linearity after each hidden layer; ``none`` makes the whole network linear.
            in_features: Number of input features (2 for the (x1, x2) plane).
            compile_mode: Compile the network with ``torch.compile`` in this mode (``reduce-overhead`` uses CUDA
                graphs on a GPU); ``null`` runs eagerly. Checkpoints are the same either way.
        """
        super().__init__()
        check(in_features >= 1, "in_features", "a positive integer", in_features)
        hidden_sizes = list(hidden_sizes)
        self.save_hyperparameters({"hidden_sizes": hidden_sizes, "activation": activation, "in_features": in_features,
                                   "compile_mode": compile_mode})
        self.net = build_mlp(in_features, hidden_sizes, activation)
        self.compile_mode = compile_mode
        self.loss_fn = nn.BCEWithLogitsLoss()
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
            setattr(self, f"{stage}_acc", BinaryAccuracy(validate_args=False))
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
        """Logits, one per point: shape (N,)."""
        return self.net(x).squeeze(-1)

    # Metrics are accumulated with torchmetrics (reduced across DDP ranks when computed) and written once per epoch:
    # ``train/*`` and ``val/*`` to the loggers at step = epoch, ``val/acc`` also through ``self.log`` for checkpointing.
    # Each ``self.log`` call costs Lightning about as much as a whole full-batch step of this model, so there is one.

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(y))
        getattr(self, f"{stage}_acc").update(torch.sigmoid(logits.detach()) > 0.5, y)
        return loss

    def _compute(self, stage: str) -> dict[str, torch.Tensor]:
        loss, accuracy = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        values = {f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()}
        loss.reset()
        accuracy.reset()
        return values

    def _fitting(self) -> bool:
        return self.trainer.state.fn == TrainerFn.FITTING

    def on_fit_start(self) -> None:
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self._finite &= torch.isfinite(loss.detach())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        self._finite &= self._weights_finite()  # after the epoch's last step: what the epoch's checkpoints would hold
        self._check_finite()
        self._record(self._compute("train"))

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
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._compute("val")
        if self.trainer.sanity_checking:
            return
        if not self._fitting():
            self.log_dict(values)
            return
        self.val_acc_best.update(values["val/acc"])
        values["val/acc_best"] = self.val_acc_best.compute()
        self.log("val/acc", values["val/acc"], logger=False)
        self._record(values)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._compute("test"))

    def predict_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Rows of ``(x1, x2, probability of the inner circle)``."""
        x = batch[0]
        return torch.cat([x[:, :2], torch.sigmoid(self(x)).unsqueeze(-1)], dim=1)

    def _weights_finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(p).all() for p in self.parameters()]).all()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Never write non-finite weights: raising here keeps the last good checkpoint file in place."""
        self._finite &= self._weights_finite()
        self._check_finite()

    def _check_finite(self) -> None:
        if bool(self._finite):
            return
        lrs = sorted({group["lr"] for opt in self.trainer.optimizers for group in opt.param_groups})
        lr = lrs[0] if len(lrs) == 1 else lrs
        raise TrainingDiverged(
            f"Training diverged at epoch {self.current_epoch}: the training loss or the weights are no longer "
            f"finite numbers. The learning rate ({lr}) is too large for this model; try a smaller one, e.g. "
            "--optimizer.init_args.lr 0.1."
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)
