"""A run's record in TensorBoard's HPARAMS tab: the settings people vary as its first columns,
and the metrics that say how the run did."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from circles.model.metrics import METRICS


def _hparam_value(value: Any) -> str | bool:
    """A hyperparameter as the HPARAMS table shows it best: numbers as written (``1000``,
    ``0.03``; TensorBoard would print ``1000.0`` and ``0.030000``), lists and None as text."""
    if isinstance(value, bool):
        return value
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


# The HPARAMS table's columns: the settings people vary, as (hyperparameter, column title), in the
# order TensorBoard lists them; it ticks the first five (the rest can be ticked).
HPARAM_COLUMNS = (
    ("activation", "activation"),
    ("dataset", "dataset"),
    ("hidden_sizes", "hidden layers"),
    ("max_epochs", "epochs"),
    ("optimizer", "optimizer"),
    ("bayes_acc", "Bayes-optimal acc"),
    ("members", "seeds (members)"),
    ("noise", "noise"),
    ("seed_everything", "seed"),
    ("batch_size", "points per step"),
)


def column_order(first: Sequence[str]) -> list[tuple[str, str]]:
    """The HPARAMS columns, those of the config keys ``first`` (a sweep's varied settings: what
    tells its rows apart) in front, in their order; then the rest of :data:`HPARAM_COLUMNS`."""
    titles = dict(HPARAM_COLUMNS)
    # a config key's column: its last part (``data.noise`` -> ``noise``); every optimizer
    # setting is the one ``optimizer`` column
    keys = dict.fromkeys(
        "optimizer" if key.startswith("model.optimizer.") else key.rsplit(".", 1)[-1]
        for key in first
    )
    return [(key, titles.get(key, key)) for key in keys] + [
        (key, title) for key, title in HPARAM_COLUMNS if key not in keys
    ]


def hparams_session(hparams: Mapping[str, Any], trial: str, first: Sequence[str] = ()) -> list[Any]:
    """A run's record for TensorBoard's HPARAMS tab: the experiment's declared columns
    (``HPARAM_COLUMNS`` that the run has, and the metrics of :mod:`circles.metrics` with an
    HPARAMS column) and the run's values for them, so the table opens on the settings people vary
    and the metrics that say how a run did. TensorBoard orders the columns by their names: a
    column's name is its place and title (``0 activation``), and the table shows the title;
    ``first`` puts some in front (:func:`column_order`). (Every hyperparameter is in the run's
    ``hparams.yaml``.)"""
    from tensorboard.plugins.hparams import summary_v2 as hp

    values = {
        key: _hparam_value(value) for key, value in hparams.items() if not key.startswith("_")
    }
    # a file's points: named by the file; no generator, no noise
    if values.get("path", "None") != "None":
        values["dataset"] = os.path.basename(str(values["path"]))
        values.pop("noise", None)
    if "optimizer" in values and "optimizer.lr" in values:
        values["optimizer"] = f"{values['optimizer']} lr {values['optimizer.lr']}"
    if values.get("batch_size") == "None":
        values["batch_size"] = "all (full batch)"
    order = [(key, title) for key, title in column_order(first) if key in values]
    names = {key: f"{i} {title}" for i, (key, title) in enumerate(order)}
    columns = [hp.HParam(name, display_name=name.split(" ", 1)[1]) for name in names.values()]
    metrics = [
        hp.Metric(metric.tag, display_name=metric.hparams)
        for metric in METRICS
        if metric.hparams is not None  # a column of the table
    ]
    return [
        hp.hparams_config_pb(hparams=columns, metrics=metrics),
        hp.hparams_pb({name: values[key] for key, name in names.items()}, trial_id=trial),
    ]
