"""The metrics: the one table that names each (where it is drawn, its HPARAMS and sweep columns,
its digits), and what the table's names are computed with: torchmetrics objects and the members'
spread."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics import Metric as TorchMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy
from typing_extensions import override

from circles.model.networks import ensemble_logits

# metric name prefixes
STAGES = ("train", "val", "test")


@dataclass(frozen=True)
class Metric:
    """One metric, named once: ``name`` is ``stage/what``; where it appears is said here, how it
    is computed by :class:`circles.model.classifier.CirclesClassifier` (with the objects below)
    or by the callback that logs it."""

    name: str
    # a TensorBoard chart of the ``curves`` group, train beside val
    curve: bool = False
    hparams: str | None = None  # its column title in TensorBoard's HPARAMS tab
    # its column in a sweep point's result.json and the sweep's summary.csv
    sweep: str | None = None
    report: str | None = None  # its column title in a sweep's summary.md
    digits: int = 4  # decimals where it is printed
    spread: bool = False  # a statistic over the members: there only with several

    @property
    def stage(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def tag(self) -> str:
        """Its TensorBoard tag (:func:`scalar_tag`)."""
        return scalar_tag(self.name)


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
    Metric("test/loss", digits=5),
    Metric("test/acc", hparams="test acc", sweep="test_acc", report="test acc"),
    Metric("test/acc_std", sweep="test_acc_std", spread=True),
    Metric("test/acc_ci95", sweep="test_acc_ci95", report="95% interval", spread=True),
    Metric("test/acc_min", sweep="test_acc_min", report="range", spread=True),
    Metric("test/acc_max", sweep="test_acc_max", spread=True),
    Metric("test/acc_ensemble", sweep="test_acc_ensemble", report="ensemble", spread=True),
    Metric("test/bayes_acc", sweep="bayes_acc", report="Bayes acc"),
    # HPARAMS: the Bayes accuracy is a setting's column
    Metric("test/bayes_gap", sweep="bayes_gap", report="gap"),
)
BY_NAME = {metric.name: metric for metric in METRICS}


def scalar_tag(name: str, evaluation: bool = False) -> str:
    """The TensorBoard tag of the scalar ``name`` in its run: a curve's (``stage/what``) is
    ``curves/what_stage``, so the ``curves`` group sets train beside val (``curves/loss_train``,
    ``curves/loss_val``) and each line is a run; an evaluation's stage metric
    ``evaluation/stage_what``; any other (``val/acc_best``, a learning-rate monitor's) its name."""
    stage, _, what = name.partition("/")
    if stage not in STAGES or not what:
        return name
    if evaluation:
        return f"evaluation/{stage}_{what}"
    return f"curves/{what}_{stage}" if name in BY_NAME and BY_NAME[name].curve else name


def num(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals; empty for a missing one."""
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def accuracy_text(values: Mapping[str, float], stages: Iterable[str], separator: str) -> str:
    """``train acc 0.865<separator>val acc 0.870``: the accuracies of ``stages`` that ``values``
    holds."""
    return separator.join(
        f"{stage} acc {values[f'{stage}/acc']:.3f}" for stage in stages if f"{stage}/acc" in values
    )


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss on a batch: binary cross-entropy of its logits ``(K, N)``, or for
    more than two classes cross-entropy of its logits ``(K, N, C)``; labels ``(N,)``. Returns
    ``(K,)``."""
    if logits.dim() == 2:
        return nn.functional.binary_cross_entropy_with_logits(
            logits, y.expand_as(logits), reduction="none"
        ).mean(-1)
    members, n, classes = logits.shape
    losses = nn.functional.cross_entropy(
        logits.reshape(-1, classes), y.long().repeat(members), reduction="none"
    )
    return losses.reshape(members, n).mean(-1)


def predicted_classes(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The predicted class of each point from its logits: one per point for two classes (class 1
    where it is positive), one per class for more (the largest)."""
    return (logits > 0).long() if num_classes == 2 else logits.argmax(-1)


class MemberAccuracy(TorchMetric):
    """Each member's accuracy ``(K,)``: the share of the points that its predicted class gets right.

    A torchmetrics metric with per-member counts as its state, summed over batches and, under
    DDP, over ranks. torchmetrics' own classification metrics give one accuracy per member only
    with ``multidim_average= "samplewise"``, whose state is a list growing by one entry per batch
    (reduced by concatenation), so over minibatches they would return an accuracy per batch and
    member, not per member."""

    full_state_update = False
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, members: int) -> None:
        super().__init__()
        self.add_state("correct", torch.zeros(members, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @override
    def update(self, predicted: torch.Tensor, y: torch.Tensor) -> None:
        """Each member's predicted classes ``(K, N)`` and the labels ``(N,)`` (or ``(K, N)``)."""
        self.correct += (predicted == y.long()).sum(-1)
        self.total += y.shape[-1]

    @override
    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total


def pooled_accuracy(num_classes: int) -> BinaryAccuracy | MulticlassAccuracy:
    """torchmetrics' accuracy of predicted classes (``BinaryAccuracy``, ``MulticlassAccuracy``
    for more classes) over every prediction given it: of K members' ``(K, N)`` predictions of the
    same points, their mean accuracy; of an ensemble's ``(N,)``, its own."""
    return (
        BinaryAccuracy(validate_args=False)
        if num_classes == 2
        else MulticlassAccuracy(num_classes, average="micro", validate_args=False)
    )


class StageMetrics(nn.Module):
    """A stage's torchmetrics objects, updated at each batch and read once per epoch: the loss (the
    members' mean), the accuracy (``train``: torchmetrics' own, of all members' predictions; else
    each member's, and on ``test`` their ensemble's too) and on ``train`` the weight penalty."""

    def __init__(self, stage: str, members: int, num_classes: int) -> None:
        super().__init__()
        self.stage, self.num_classes = stage, num_classes
        self.loss = MeanMetric()
        self.acc = pooled_accuracy(num_classes) if stage == "train" else MemberAccuracy(members)
        self.penalty = MeanMetric() if stage == "train" else None
        # of the members' mean probability
        self.ensemble = pooled_accuracy(num_classes) if stage == "test" else None

    def update(
        self,
        losses: torch.Tensor,
        logits: torch.Tensor,
        y: torch.Tensor,
        penalty: torch.Tensor | None = None,
        members: int = 1,
    ) -> None:
        """Each member's mean loss ``(K,)`` and logits ``(K, N[, C])`` on a batch, its labels and,
        in training, the weight penalty of the ``members`` (logged per member)."""
        predicted = predicted_classes(logits, self.num_classes)
        self.loss.update(losses.mean(), weight=len(y))
        self.acc.update(predicted, y.long().expand_as(predicted))
        if penalty is not None and self.penalty is not None:
            self.penalty.update(penalty.detach() / members)
        if self.ensemble is not None:
            self.ensemble.update(
                predicted_classes(ensemble_logits(logits), self.num_classes), y.long()
            )

    def compute(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The epoch's values (:func:`spread` of the members' accuracies) and each member's
        accuracy; the metrics start again."""
        per_member = self.acc.compute().reshape(-1)  # one member's comes as a 0-dim tensor
        metrics = [m for m in (self.loss, self.acc, self.penalty, self.ensemble) if m is not None]
        if self.penalty is not None:
            values = {"train/loss": self.loss.compute(), "train/acc": per_member[0]}
            if self.penalty.update_called:
                values["train/penalty"] = self.penalty.compute()
        else:
            ensemble = self.ensemble.compute() if self.ensemble is not None else None
            values = {f"{self.stage}/loss": self.loss.compute()}
            values.update(spread(self.stage, per_member, ensemble))
        with torch.inference_mode(False):  # states a later fit may update in place
            for metric in metrics:
                metric.reset()
        return values, per_member


def spread(
    stage: str, per_member: torch.Tensor, ensemble: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """A stage's accuracy from each member's ``(K,)``: their mean and, with several members, what
    the table marks ``spread``: their standard deviation, least and greatest, for ``test`` the
    95% interval of the mean and the accuracy of their ``ensemble`` (of one member, these say
    nothing the accuracy does not)."""
    values = {f"{stage}/acc": per_member.mean()}
    if len(per_member) > 1:
        values.update(
            {
                f"{stage}/acc_std": per_member.std(),
                f"{stage}/acc_min": per_member.min(),
                f"{stage}/acc_max": per_member.max(),
            }
        )
        if stage == "test":  # the 95% interval of the mean: Student's t, K - 1 degrees
            from scipy.stats import t

            values["test/acc_ci95"] = (
                values["test/acc_std"]
                * float(t.ppf(0.975, len(per_member) - 1))
                / len(per_member) ** 0.5
            )
        if ensemble is not None:
            values[f"{stage}/acc_ensemble"] = ensemble
    return values


def latest_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``trainer.callback_metrics`` (the latest value of everything ``self.log`` was given) as
    numbers, after one wait for the device."""
    if not metrics:
        return {}
    tensors = [torch.as_tensor(v) for v in metrics.values()]
    device = tensors[0].device
    numbers = torch.stack([t.to(device, torch.float64).reshape(()) for t in tensors]).tolist()
    return dict(zip(metrics, numbers, strict=True))


def sweep_columns() -> list[str]:
    """The metrics' columns in a sweep's result.json and summary.csv, in the table's order."""
    return [m.sweep for m in METRICS if m.sweep is not None]
