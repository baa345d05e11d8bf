"""The one table of metrics, and the one path that computes an epoch's values, logs them and records them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import lightning.pytorch as pl

STAGES = ("train", "val", "test")  # metric name prefixes; each gets a sub-run of its own in TensorBoard


@dataclass(frozen=True)
class Metric:
    """One metric, named once: ``name`` is ``stage/what``; where it appears is said here, how it is computed in
    :meth:`EpochMetrics.values` (the stage's loss and accuracy) or by the code that adds it to an epoch's values."""

    name: str
    curve: bool = False  # a TensorBoard chart of the ``curves`` group, train and val on one chart; else ``details``
    hparams: str | None = None  # its column title in TensorBoard's HPARAMS tab
    sweep: str | None = None  # its column in a sweep point's result.json and the sweep's summary.csv
    report: str | None = None  # its column title in a sweep's summary.md
    digits: int = 4  # decimals where it is printed
    spread: bool = False  # a statistic over the members: there only with several

    @property
    def stage(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def tag(self) -> str:
        """Its TensorBoard tag inside its stage's sub-run: ``curves/loss``, ``details/acc_best``."""
        return f"{'curves' if self.curve else 'details'}/{self.name.split('/', 1)[1]}"


METRICS = (
    Metric("train/loss", curve=True, digits=5),
    Metric("train/acc", curve=True),
    Metric("train/penalty", digits=5),  # L1/L2 regularization only
    Metric("val/loss", curve=True, digits=5),
    Metric("val/acc", curve=True),
    Metric("val/acc_std", spread=True),
    Metric("val/acc_min", spread=True),
    Metric("val/acc_max", spread=True),
    Metric("val/acc_best", hparams="best val acc", sweep="val_acc_best", report="best val acc"),
    Metric("test/loss", curve=True, digits=5),
    Metric("test/acc", curve=True, hparams="test acc", sweep="test_acc", report="test acc"),
    Metric("test/acc_std", sweep="test_acc_std", spread=True),
    Metric("test/acc_ci95", sweep="test_acc_ci95", report="95% interval", spread=True),
    Metric("test/acc_min", sweep="test_acc_min", report="range", spread=True),
    Metric("test/acc_max", sweep="test_acc_max", spread=True),
    Metric("test/acc_ensemble", sweep="test_acc_ensemble", report="ensemble", spread=True),
    Metric("test/bayes_acc", sweep="bayes_acc", report="Bayes acc"),
    Metric("test/bayes_gap", sweep="bayes_gap", report="gap"),  # HPARAMS: the Bayes accuracy is a setting's column
)
BY_NAME = {metric.name: metric for metric in METRICS}


def scalar_tag(name: str) -> str:
    """The TensorBoard tag of the metric ``name`` in its stage's sub-run (see :attr:`Metric.tag`)."""
    return BY_NAME[name].tag if name in BY_NAME else f"details/{name.split('/', 1)[1]}"


def num(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals; empty for a missing one."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def accuracy_text(values: Mapping[str, float], stages: Iterable[str], separator: str) -> str:
    """``train acc 0.865<separator>val acc 0.870``: the accuracies of ``stages`` that ``values`` holds."""
    return separator.join(f"{stage} acc {values[f'{stage}/acc']:.3f}" for stage in stages if f"{stage}/acc" in values)


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss on a batch: binary cross-entropy of its logits ``(K, N)``, or for more than two
    classes cross-entropy of its logits ``(K, N, C)``; labels ``(N,)``. Returns ``(K,)``."""
    if logits.dim() == 2:
        return nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)
    members, n, classes = logits.shape
    losses = nn.functional.cross_entropy(logits.reshape(-1, classes), y.long().repeat(members), reduction="none")
    return losses.reshape(members, n).mean(-1)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of each row of logits: ``(..., N)`` (two classes: logit > 0) or ``(..., N, C)``."""
    return (logits > 0).long() if logits.dim() == 2 else logits.argmax(-1)


def interval95(std: torch.Tensor, members: int) -> torch.Tensor:
    """Half-width of the 95% confidence interval of a mean over ``members`` values with sample std ``std``
    (Student's t with members - 1 degrees of freedom)."""
    from scipy.stats import t

    return std * float(t.ppf(0.975, members - 1)) / members**0.5


class Tally:
    """One stage's running sums over an epoch, on the device the batches are on (nothing waits for them until the
    epoch ends): per member the loss weighted by batch size and the count of right answers; the points; the
    ensemble's right answers (test, several members); the regularization penalty and the steps (train)."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.right: torch.Tensor | None = None
        self.ensemble_right: torch.Tensor | None = None
        self.penalty: torch.Tensor | None = None
        self.points = 0
        self.steps = 0

    def add(self, losses: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, ensemble: bool = False) -> None:
        """A batch: each member's mean loss ``(K,)``, its logits and the labels ``(N,)``; with ``ensemble``, also
        whether the class of the members' mean probability is right."""
        logits = logits.detach()
        right = (predicted_classes(logits) == y).sum(-1)
        loss = losses.detach() * len(y)
        if self.loss is None or self.right is None:
            self.loss, self.right = loss, right
        else:
            self.loss += loss
            self.right += right
        self.points += len(y)
        if ensemble:
            mean = (torch.sigmoid(logits) if logits.dim() == 2 else torch.softmax(logits, dim=-1)).mean(0)
            right = (((mean > 0.5).long() if mean.dim() == 1 else mean.argmax(-1)) == y).sum()
            self.ensemble_right = right if self.ensemble_right is None else self.ensemble_right + right

    def add_penalty(self, penalty: torch.Tensor) -> None:
        self.penalty = penalty.detach() if self.penalty is None else self.penalty + penalty.detach()
        self.steps += 1

    def reduced(self, module: pl.LightningModule) -> Tally:
        """The sums over every DDP rank (one all-reduce), or these sums for one process."""
        if module.trainer.world_size == 1 or self.loss is None or self.right is None:
            return self
        zero = torch.zeros((), device=self.loss.device)
        parts = [self.loss, self.right, self.ensemble_right, self.penalty]
        packed = torch.cat([(p if p is not None else zero).double().reshape(-1) for p in parts]
                           + [torch.tensor([self.points, self.steps], dtype=torch.float64, device=self.loss.device)])
        packed = module.trainer.strategy.reduce(packed, reduce_op="sum")
        k = len(self.loss)
        total = Tally()
        total.loss, total.right = packed[:k].float(), packed[k:2 * k].long()
        total.ensemble_right = packed[2 * k].long() if self.ensemble_right is not None else None
        total.penalty = packed[2 * k + 1].float() if self.penalty is not None else None
        total.points, total.steps = int(packed[-2]), int(packed[-1])
        return total


class EpochMetrics(nn.Module):
    """A module's metrics: a :class:`Tally` per stage, turned into an epoch's values at the end of each stage and
    published by :meth:`publish`, the one way they reach the loggers, the callbacks and the record ``latest``. As
    a module it keeps what a checkpoint must carry: the best validation accuracy and, with several members, each
    member's seed and last and best validation accuracy."""

    val_acc_best: torch.Tensor
    member_seeds: torch.Tensor
    member_val_acc: torch.Tensor
    member_val_acc_best: torch.Tensor

    def __init__(self, seeds: list[int]) -> None:
        """
        Args:
            seeds: The seed of each member (one for a single network).
        """
        super().__init__()
        self.members = members = len(seeds)
        self.tallies = {stage: Tally() for stage in STAGES}
        self.latest: dict[str, float] = {}
        self.weights_epoch: int | None = None  # the epoch whose training made the module's weights (its values' step)
        self.register_buffer("val_acc_best", torch.zeros(()))
        if members > 1:
            self.register_buffer("member_seeds", torch.tensor(seeds, dtype=torch.int64))
            self.register_buffer("member_val_acc", torch.zeros(members))
            self.register_buffer("member_val_acc_best", torch.zeros(members))
        self.member_test_acc: torch.Tensor | None = None

    def values(self, stage: str, module: pl.LightningModule) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The stage's epoch values (the loss and accuracy means over the members; with several members the
        accuracy's spread, the penalty when there is one, the ensemble's accuracy) and each member's accuracy; the
        stage's tally starts over. Collective under DDP: every rank calls it."""
        tally = self.tallies[stage].reduced(module)
        self.tallies[stage] = Tally()
        if tally.loss is None or tally.right is None:
            return {}, torch.zeros(0)
        per_member = tally.right.float() / tally.points
        values = {f"{stage}/loss": (tally.loss / tally.points).mean(), f"{stage}/acc": per_member.mean()}
        if self.members > 1 and stage != "train":
            values.update({f"{stage}/acc_std": per_member.std(), f"{stage}/acc_min": per_member.min(),
                           f"{stage}/acc_max": per_member.max()})
        if tally.penalty is not None:
            values[f"{stage}/penalty"] = tally.penalty / tally.steps / self.members
        if tally.ensemble_right is not None:
            values[f"{stage}/acc_ensemble"] = tally.ensemble_right.float() / tally.points
        return values, per_member

    def end_training(self, module: pl.LightningModule) -> bool:
        """Publish the epoch's training values; returns whether the loss and the weights are still finite (the
        same answer on every rank: the loss is reduced over them, the weights are equal)."""
        values, _ = self.values("train", module)
        weights = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).sum()  # finite iff all of them are
        return self.publish(module, values, unless_infinite=weights)

    def end_validation(self, module: pl.LightningModule) -> None:
        """Publish the validation values; during fit also the best so far (and each member's)."""
        values, per_member = self.values("val", module)
        if module.trainer.sanity_checking or not values:
            return
        if module.trainer.state.fn == "fit":
            torch.maximum(self.val_acc_best, values["val/acc"], out=self.val_acc_best)
            values["val/acc_best"] = self.val_acc_best
            if self.members > 1:
                self.member_val_acc.copy_(per_member)
                torch.maximum(self.member_val_acc_best, per_member, out=self.member_val_acc_best)
        self.publish(module, values)

    def end_test(self, module: pl.LightningModule, bayes: float | None) -> None:
        """Publish the test values; with several members the 95% interval of their mean; with ``bayes``, the best
        accuracy possible on the data, that accuracy and the gap to it (of the members' mean)."""
        values, self.member_test_acc = self.values("test", module)
        if self.members > 1:
            values["test/acc_ci95"] = interval95(values["test/acc_std"], self.members)
        if bayes is not None:
            values.update({"test/bayes_acc": torch.tensor(bayes), "test/bayes_gap": bayes - values["test/acc"]})
        self.publish(module, values)

    def member_table(self) -> dict[str, list[Any]] | None:
        """Per member its seed, last and best validation accuracy and, after test, its test accuracy; None for one."""
        if self.members == 1:
            return None
        table = {"member": list(range(self.members)), "seed": self.member_seeds.tolist(),
                 "val_acc": self.member_val_acc.tolist(), "val_acc_best": self.member_val_acc_best.tolist()}
        if self.member_test_acc is not None:
            table["test_acc"] = self.member_test_acc.tolist()
        return table

    def publish(self, module: pl.LightningModule, values: Mapping[str, torch.Tensor],
                unless_infinite: torch.Tensor | None = None) -> bool:
        """Record an epoch's values in ``latest`` and write them where they are read, after one wait for the device.
        With ``unless_infinite`` (a value waited for with them), nothing is published when it or a value is not a
        finite number; returns whether they were published.

        To every logger at step = the epoch (so curves are drawn over epochs; outside fit, the epoch the weights are
        of) and into ``trainer.callback_metrics``, which ``ModelCheckpoint``, ``EarlyStopping`` and learning-rate
        schedulers monitor. Not through ``self.log``: its first call in an epoch costs about as much as a full-batch
        step of this model, every further one about half of that (``benchmarks/bench.py --only epoch``); so
        ``trainer.validate``/``trainer.test`` return no values of their own: read ``trainer.callback_metrics`` or the
        module's ``epoch_metrics``.
        """
        keys, tensors = list(values), [*values.values(), *([] if unless_infinite is None else [unless_infinite])]
        if not tensors:
            return True
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=module.device) for v in tensors])
        numbers = stacked.tolist()
        if unless_infinite is not None and not all(math.isfinite(n) for n in numbers):
            return False
        floats = dict(zip(keys, numbers[: len(keys)], strict=True))
        self.latest.update(floats)
        trainer = module.trainer
        step = trainer.current_epoch if trainer.state.fn == "fit" else self.weights_epoch or 0
        for logger in trainer.loggers:
            logger.log_metrics(floats, step=step)
        trainer.callback_metrics.update(zip(keys, stacked.unbind(), strict=False))
        return True


def sweep_columns() -> list[str]:
    """The metrics' columns in a sweep's result.json and summary.csv, in the table's order."""
    return [m.sweep for m in METRICS if m.sweep is not None]


def hparams_metrics() -> Iterable[Metric]:
    """The metrics TensorBoard's HPARAMS tab shows as columns, in the table's order."""
    return [m for m in METRICS if m.hparams is not None]
