"""The metric table and what computes its names: each member's accuracy is what torchmetrics' own
accuracy gives for that member, over any batches; the pooled accuracy is the members' mean; every
name users see comes from the table."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from circles.model.metrics import (
    METRICS,
    STAGES,
    MemberAccuracy,
    member_losses,
    pooled_accuracy,
    predicted_classes,
    scalar_tag,
    spread,
    sweep_columns,
)
from circles.sweep.report import COLUMNS


@st.composite
def batches(draw):
    """Batches of member logits and labels: K members, C classes, 1-4 batches of 1-40 points."""
    members, classes = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=4))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    out = []
    for n in sizes:
        shape = (members, n) if classes == 2 else (members, n, classes)
        logits = torch.randn(*shape, generator=generator) * 3
        out.append((logits, torch.randint(0, classes, (n,), generator=generator).float()))
    return members, classes, out


@settings(max_examples=60)
@given(batches())
def test_each_members_accuracy_and_loss_are_torchmetrics_over_all_batches(case):
    members, classes, data = case
    per_member, pooled, mean_loss = MemberAccuracy(members), pooled_accuracy(classes), MeanMetric()
    references = [
        (
            BinaryAccuracy() if classes == 2 else MulticlassAccuracy(classes, average="micro"),
            MeanMetric(),
        )
        for _ in range(members)
    ]
    for logits, y in data:
        losses, predicted = member_losses(logits, y), predicted_classes(logits, classes)
        per_member.update(predicted, y)
        pooled.update(predicted, y.long().expand_as(predicted))
        mean_loss.update(losses.mean(), len(y))
        for k, (accuracy, loss) in enumerate(references):
            accuracy.update(
                logits[k].sigmoid() if classes == 2 else logits[k].softmax(-1), y.long()
            )
            loss.update(losses[k], len(y))
    expected = torch.stack([a.compute() for a, _ in references])
    torch.testing.assert_close(per_member.compute().reshape(-1), expected)
    torch.testing.assert_close(pooled.compute(), expected.mean())
    torch.testing.assert_close(
        mean_loss.compute(), torch.stack([m.compute() for _, m in references]).mean()
    )


def test_the_spread_is_there_only_with_several_members():
    assert set(spread("val", torch.tensor([0.75]))) == {"val/acc"}
    values = spread("test", torch.tensor([0.5, 0.75, 1.0]), ensemble=torch.tensor(0.9))
    assert set(values) == {
        "test/acc",
        "test/acc_std",
        "test/acc_min",
        "test/acc_max",
        "test/acc_ci95",
        "test/acc_ensemble",
    }
    assert float(values["test/acc"]) == 0.75 and float(values["test/acc_min"]) == 0.5
    assert set(values) <= {m.name for m in METRICS}


def test_each_metric_is_named_once_and_drawn_where_its_stage_is():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) and {m.stage for m in METRICS} == set(STAGES)
    # train beside val in the curves group; every other metric as it is logged
    assert [scalar_tag(name) for name in ("train/loss", "val/acc", "val/acc_best", "test/acc")] == [
        "curves/loss_train",
        "curves/acc_val",
        "val/acc_best",
        "test/acc",
    ]
    # an evaluation's, apart from the fits' scalars
    assert scalar_tag("test/acc", evaluation=True) == "evaluation/test_acc"
    # a metric not in the table yet
    assert scalar_tag("val/something_new") == "val/something_new"


def test_summary_csv_keeps_its_columns():
    """The sweep's summary.csv columns come from the table, in the order users have seen them;
    ``enclosed`` (sweeps with ``regions: true``) came last."""
    assert COLUMNS == [
        "val_acc_best",
        "test_acc",
        "test_acc_std",
        "test_acc_ci95",
        "test_acc_min",
        "test_acc_max",
        "test_acc_ensemble",
        "bayes_acc",
        "bayes_gap",
        "members",
        "enclosed",
    ]
    assert sweep_columns() == COLUMNS[:-2]
