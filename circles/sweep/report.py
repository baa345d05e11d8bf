"""A sweep's report: ``summary.csv``, ``summary.md`` and ``boundaries.png`` (and ``layers.png``)
from its points' results."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from circles.data.module import CirclesDataModule
from circles.model.classifier import CirclesClassifier
from circles.model.metrics import METRICS, Metric, num, sweep_columns
from circles.pictures.figures import boundary_figure
from circles.pictures.grids import grid_axes, grid_boundaries, grid_predictions
from circles.pictures.layers import layers_picture
from circles.pictures.notes import MEMBER_LINES, draws_lines
from circles.pictures.panels import BoundaryPanel
from circles.runs.directory import atomic_file
from circles.runs.names import short
from circles.sweep.runner import checked_result
from circles.sweep.spec import RUNS, Sweep

# summary.csv's columns after the settings: the metrics, then the members
COLUMNS = [*sweep_columns(), "members", "enclosed"]
_HEADER = {
    "model.hidden_sizes": "hidden",
    "model.optimizer.class_path": "optimizer",
    "model.optimizer.init_args.lr": "lr",
    "trainer.max_epochs": "epochs",
    "seed_everything": "seed",
}
ENCLOSED = "inner region closed"


def _cell(key: str, value: Any) -> str:
    """A setting in the Markdown table: ``[10, 10]`` -> ``10x10``, ``torch.optim.SGD`` ->
    ``SGD``."""
    if key == "model.hidden_sizes" and isinstance(value, list):
        return "x".join(map(str, value)) if value else "none"
    return (
        ""
        if value is None
        else short(value)
        if isinstance(value, (list, str)) and key.endswith("class_path")
        else str(value)
    )


def _report_cell(metric: Metric, m: dict[str, Any]) -> str:
    """A metric's cell in summary.md: its value; with the members' spread beside it in the table,
    ``mean ± std`` (``_std``), the range ``min-max`` (``_min`` with its ``_max``) and the
    interval ``±half-width`` (``_ci95``)."""
    value = num(m.get(metric.sweep), metric.digits) if metric.sweep else ""
    if metric.sweep and m.get(f"{metric.sweep}_std") is not None:
        return f"{value} ± {num(m[f'{metric.sweep}_std'], metric.digits)}"
    if metric.sweep and metric.sweep.endswith("_min") and value:
        return f"{value}-{num(m.get(metric.sweep[:-4] + '_max'), metric.digits)}"
    return f"±{value}" if metric.name.endswith("_ci95") and value else value


def markdown_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The summary as a Markdown table, plus the error of every failed point below it: a column
    per metric with a summary.md title in :data:`circles.metrics.METRICS`. With several members
    per point the test accuracy is their mean ± standard deviation, with the 95% interval of that
    mean, the range over the members and the accuracy of their ensemble (averaged probability).
    With ``regions: true``, how many of a point's members enclose their class-1 points:
    ``16/16``."""
    spread = any(row["metrics"].get("test_acc_std") is not None for row in rows)
    enclosed = any(row["metrics"].get("enclosed") is not None for row in rows)
    shown = [m for m in METRICS if m.report and (spread or not m.spread)]
    titles = [
        *(
            f"{m.report} (mean ± std)" if spread and m.sweep == "test_acc" else str(m.report)
            for m in shown
        ),
        *([ENCLOSED] if enclosed else []),
    ]
    # text left, numbers right
    align = ["---:", *("---" for _ in keys), *("---:" for _ in titles), "---:", "---"]
    lines = [
        "| "
        + " | ".join(["#", *(_HEADER.get(k, k.rsplit(".", 1)[-1]) for k in keys), *titles])
        + " | train s | status |",
        "|" + "|".join(align) + "|",
    ]
    for row in rows:
        m = row["metrics"]
        closed = [
            f"{m['enclosed']}/{m.get('members') or 1}" if m.get("enclosed") is not None else ""
        ]
        cells = [
            str(row["index"]),
            *(_cell(k, row["settings"][k]) for k in keys),
            *(_report_cell(metric, m) for metric in shown),
            *(closed if enclosed else []),
            num(row["train_s"], 1),
            row["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if failed := [row for row in rows if row["status"] in ("failed", "damaged")]:
        lines += ["", "Failed points:", ""] + [
            f"- `{row['point']}` ({row['status']}): {row['error']}" for row in failed
        ]
    return "\n".join(lines) + "\n"


def point_model(sweep: Sweep, row: dict[str, Any]) -> tuple[CirclesClassifier, CirclesDataModule]:
    """A finished point's model (its last weights, on the CPU) and data (set up for fit)."""
    checkpoint = sweep.out / RUNS / row["point"] / "checkpoints" / "last.ckpt"
    model = CirclesClassifier.load_from_checkpoint(
        checkpoint, map_location="cpu", weights_only=True, compile_mode=None
    )
    data = CirclesDataModule.load_from_checkpoint(checkpoint, weights_only=True)
    data.setup("fit")
    return model, data


def point_panel(sweep: Sweep, row: dict[str, Any]) -> BoundaryPanel:
    """A finished point's panel: its last weights over the grid of its validation points, titled
    with its name and test accuracy (with several members: their mean ± std; the colour is then
    the share of members voting class 1, and a linear model draws each seed's line)."""
    model, data = point_model(sweep, row)
    val = data.points("val")
    assert val is not None, "set up for fit"
    xs, ys = grid_axes(val[0], resolution=101)
    parts = row["point"].split("-")
    half = (len(parts) + 2) // 2
    m = row["metrics"]
    title = (
        f"{' '.join(parts[:half])}\n{' '.join(parts[half:])}\ntest {num(m.get('test_acc'))}"
        + (f" ± {num(m['test_acc_std'], 3)}" if m.get("test_acc_std") is not None else "")
        + (f" (Bayes {num(m['bayes_acc'])})" if m.get("bayes_acc") else "")
    )
    probs, votes = grid_predictions(model, xs, ys)
    return BoundaryPanel.of(
        title,
        xs,
        ys,
        probs,
        *val,
        votes=votes,
        boundaries=grid_boundaries(model, xs, ys, MEMBER_LINES) if draws_lines(model) else None,
    )


def draw_boundaries(
    sweep: Sweep, rows: list[dict[str, Any]], path: Path, dpi: int = 60, colors: int = 48
) -> None:
    """``boundaries.png``: the panel of every finished point (:func:`point_panel`) under one
    colour key; a small palette PNG (none without a finished point)."""
    import matplotlib
    from matplotlib.collections import PathCollection

    if not (panels := [point_panel(sweep, row) for row in rows if row["status"] == "ok"]):
        path.unlink(missing_ok=True)
        return
    with matplotlib.rc_context({"axes.titlesize": 10, "xtick.labelsize": 7, "ytick.labelsize": 7}):
        figure = boundary_figure(
            panels,
            ncols=sweep.columns or min(len(panels), math.ceil(math.sqrt(len(panels)))),
            panel_size=3.0,
            one_key=True,
            title=f"{sweep.path.name}: decision boundaries over each run's validation points",
        )
        # the scatter drawn over the class regions
        for points in (
            c for axes in figure.axes for c in axes.collections if isinstance(c, PathCollection)
        ):
            points.set_sizes([6])
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=dpi)
    with atomic_file(path, "wb") as f:
        Image.open(buffer).convert("RGB").quantize(colors).save(f, format="PNG", optimize=True)


def draw_layers(sweep: Sweep, rows: list[dict[str, Any]], path: Path) -> None:
    """``layers.png``: for every finished point, one row of what each hidden layer of its first
    member does to the plane and the training points (:mod:`circles.pictures.layers`), under the
    point's name and test accuracy (none without a finished point)."""
    pictures = []
    for row in (row for row in rows if row["status"] == "ok"):
        model, data = point_model(sweep, row)
        x, y = (t.numpy() for t in data.points("train") or ())
        pictures.append(
            layers_picture(
                model,
                x,
                y,
                grid_axes(x, resolution=2),
                f"{row['point']}: test acc {num(row['metrics'].get('test_acc'))}",
            )
        )
    if not pictures:
        path.unlink(missing_ok=True)
        return
    width = max(p.shape[1] for p in pictures)
    padded = [
        np.pad(p, ((0, 12), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pictures
    ]
    with atomic_file(path, "wb") as f:
        Image.fromarray(np.concatenate(padded)).quantize(64).save(f, format="PNG", optimize=True)


def write_report(sweep: Sweep) -> list[dict[str, Any]]:
    """Write ``summary.csv`` (one row per point: its settings under their dotted keys, lists as
    JSON, its metrics, train time and status, ``missing`` if not run), ``summary.md`` and
    ``boundaries.png`` (and ``layers.png`` with ``layers: true``) into the sweep directory from
    the points' results; returns the rows."""
    rows = [
        {
            "index": point.index,
            "point": point.name,
            "settings": {
                k: result.get("settings", {}).get(k, sweep.overrides(point).get(k))
                for k in sweep.keys
            },
            "metrics": result.get("metrics") or {},
            "train_s": result.get("train_s"),
            "status": result.get("status", "missing"),
            "error": result.get("error") or "",
        }
        for point, result in ((p, checked_result(sweep, p)) for p in sweep.points)
    ]
    with atomic_file(sweep.out / "summary.csv", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "point", *sweep.keys, *COLUMNS, "train_s", "status", "error"])
        writer.writerows(
            [
                row["index"],
                row["point"],
                *(
                    json.dumps(v) if isinstance(v, list) else "" if v is None else v
                    for v in row["settings"].values()
                ),
                *(v if isinstance(v, int) else num(v) for v in map(row["metrics"].get, COLUMNS)),
                num(row["train_s"], 1),
                row["status"],
                row["error"],
            ]
            for row in rows
        )
    members = sorted({row["metrics"].get("members") or 1 for row in rows if row["status"] == "ok"})
    notes = (
        f" Each point trains {' or '.join(map(str, members))} members (seeds): test accuracy is "
        "their mean ± standard deviation, with the 95% interval of the mean (Student's t), the "
        "members' range and the accuracy of their averaged probability (ensemble); gap uses the "
        "mean."
        if members not in ([], [1])
        else ""
    )
    if any(row["metrics"].get("enclosed") is not None for row in rows):
        notes += (
            f" {ENCLOSED}: how many members' class-1 region around their class-1 training points "
            "stays inside [-50, 50]^2, decided exactly from the network's linear pieces "
            "(circles/model/regions.py)."
        )
    with atomic_file(sweep.out / "summary.md") as f:
        f.write(
            f"# Sweep {sweep.path.name}\n\nBase config `{sweep.base}`; {len(rows)} points, "
            f"{sum(row['status'] == 'ok' for row in rows)} finished. Accuracies are fractions; "
            "gap = Bayes acc - test acc; train s = wall time of the fit command."
            + notes
            + "\n\n"
            + markdown_table(rows, sweep.keys)
        )
    draw_boundaries(sweep, rows, sweep.out / "boundaries.png")
    if sweep.layers:
        draw_layers(sweep, rows, sweep.out / "layers.png")
    return rows
