"""The metric table and the one metric path: the tally counts what torchmetrics counts, member by member and over
batches, and every name users see comes from the table."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from circles.model.metrics import METRICS, STAGES, Tally, member_losses, scalar_tag, sweep_columns
from circles.sweep.report import COLUMNS


@st.composite
def batches(draw):
    """Batches of member logits and labels: K members, C classes, 1-4 batches of 1-40 points."""
    members, classes = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    shape = (members, 0) if classes == 2 else (members, 0, classes)
    out = []
    for n in sizes:
        logits = torch.randn(shape[0], n, *shape[2:], generator=generator) * 3
        y = torch.randint(0, classes, (n,), generator=generator).float()
        out.append((logits, y))
    return members, classes, out


@settings(max_examples=60, deadline=None)
@given(batches())
def test_the_tally_counts_what_torchmetrics_counts(case):
    members, classes, data = case
    tally = Tally()
    references = [(BinaryAccuracy() if classes == 2 else MulticlassAccuracy(classes, average="micro"), MeanMetric())
                  for _ in range(members)]
    for logits, y in data:
        losses = member_losses(logits, y)
        tally.add(losses, logits, y, ensemble=members > 1)
        for k, (accuracy, loss) in enumerate(references):
            accuracy.update(logits[k].sigmoid() if classes == 2 else logits[k].softmax(-1), y.long())
            loss.update(losses[k], len(y))
    per_member = tally.right.float() / tally.points
    torch.testing.assert_close(per_member, torch.stack([a.compute() for a, _ in references]))
    torch.testing.assert_close(tally.loss / tally.points, torch.stack([m.compute() for _, m in references]))
    assert tally.points == sum(len(y) for _, y in data)


def test_each_metric_is_named_once_and_drawn_where_its_stage_is():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) and {m.stage for m in METRICS} == set(STAGES)
    assert scalar_tag("train/loss") == "curves/loss" and scalar_tag("val/acc_best") == "details/acc_best"
    assert scalar_tag("val/something_new") == "details/something_new"  # a metric not in the table yet


def test_summary_csv_keeps_its_columns():
    """The sweep's summary.csv columns come from the table, in the order users have seen them."""
    assert COLUMNS == ["val_acc_best", "test_acc", "test_acc_std", "test_acc_ci95", "test_acc_min", "test_acc_max",
                       "test_acc_ensemble", "bayes_acc", "bayes_gap", "members"]
    assert sweep_columns() == COLUMNS[:-1]
