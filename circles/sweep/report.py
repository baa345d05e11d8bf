"""A sweep's report: ``summary.csv``, ``summary.md`` and ``boundaries.png`` (and ``layers.png``)
from its points' results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circles.model.metrics import METRICS, Metric, num, sweep_columns
from circles.runs.directory import atomic_file
from circles.runs.names import short
from circles.sweep.runner import checked_result
from circles.sweep.spec import RUNS, Sweep

if TYPE_CHECKING:
    from circles.data.module import CirclesDataModule
    from circles.model.classifier import CirclesClassifier

# summary.csv's columns after the settings: the metrics, then the members
COLUMNS = [*sweep_columns(), "members", "enclosed"]
_HEADER = {
    "model.hidden_sizes": "hidden",
    "model.optimizer.class_path": "optimizer",
    "model.optimizer.init_args.lr": "lr",
    "trainer.max_epochs": "epochs",
    "seed_everything": "seed",
}


def collect(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per point of the sweep: its settings, metrics, train time and status (``missing``
    if not run)."""
    rows = []
    for point in sweep.points:
        result = checked_result(sweep, point) or {}
        overrides = sweep.overrides(point)
        settings = {
            key: result.get("settings", {}).get(key, overrides.get(key)) for key in sweep.keys
        }
        rows.append(
            {
                "index": point.index,
                "point": point.name,
                "settings": settings,
                "metrics": result.get("metrics") or {},
                "train_s": result.get("train_s"),
                "status": result.get("status", "missing"),
                "error": result.get("error") or "",
            }
        )
    return rows


def write_csv(rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """``summary.csv``: one row per point, settings under their dotted keys (lists as JSON)."""
    import csv

    with atomic_file(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "point", *keys, *COLUMNS, "train_s", "status", "error"])
        for row in rows:
            settings = [
                json.dumps(row["settings"][k])
                if isinstance(row["settings"][k], list)
                else ("" if row["settings"][k] is None else row["settings"][k])
                for k in keys
            ]
            metrics = [row["metrics"].get(m) for m in COLUMNS]
            writer.writerow(
                [
                    row["index"],
                    row["point"],
                    *settings,
                    *("" if v is None else v if isinstance(v, int) else num(v) for v in metrics),
                    num(row["train_s"], 1),
                    row["status"],
                    row["error"],
                ]
            )


def _cell(key: str, value: Any) -> str:
    """A setting in the Markdown table: ``[10, 10]`` -> ``10x10``, ``torch.optim.SGD`` ->
    ``SGD``."""
    if value is None:
        return ""
    if key == "model.hidden_sizes" and isinstance(value, list):
        return "x".join(map(str, value)) if value else "none"
    return (
        short(value)
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


ENCLOSED = "inner region closed"


def _enclosed_cell(m: dict[str, Any]) -> str:
    """How many of the point's members enclose their class-1 points: ``16/16``."""
    return "" if m.get("enclosed") is None else f"{m['enclosed']}/{m.get('members') or 1}"


def markdown_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The summary as a Markdown table, plus the error of every failed point below it: a column
    per metric with a summary.md title in :data:`circles.metrics.METRICS`. With several members
    per point the test accuracy is their mean ± standard deviation, with the 95% interval of that
    mean, the range over the members and the accuracy of their ensemble (averaged probability)."""
    spread = any(row["metrics"].get("test_acc_std") is not None for row in rows)
    shown = [m for m in METRICS if m.report and (spread or not m.spread)]
    titles = [
        f"{m.report} (mean ± std)" if spread and m.sweep == "test_acc" else str(m.report)
        for m in shown
    ]
    enclosed = any(row["metrics"].get("enclosed") is not None for row in rows)
    titles += [ENCLOSED] if enclosed else []
    header = [
        "#",
        *(_HEADER.get(k, k.rsplit(".", 1)[-1]) for k in keys),
        *titles,
        "train s",
        "status",
    ]
    # text left, numbers right
    align = ["---:", *("---" for _ in keys), *("---:" for _ in titles), "---:", "---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [
            str(row["index"]),
            *(_cell(k, row["settings"][k]) for k in keys),
            *(_report_cell(m, row["metrics"]) for m in shown),
            *([_enclosed_cell(row["metrics"])] if enclosed else []),
            num(row["train_s"], 1),
            row["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["status"] in ("failed", "damaged")]
    if failed:
        lines += ["", "Failed points:", ""]
        lines += [f"- `{row['point']}` ({row['status']}): {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def point_model(sweep: Sweep, row: dict[str, Any]) -> tuple[CirclesClassifier, CirclesDataModule]:
    """A finished point's model (its last weights, on the CPU) and data (set up for fit)."""
    from circles.data.module import CirclesDataModule
    from circles.model.classifier import CirclesClassifier

    checkpoint = sweep.out / RUNS / row["point"] / "checkpoints" / "last.ckpt"
    model = CirclesClassifier.load_from_checkpoint(
        checkpoint, map_location="cpu", weights_only=True, compile_mode=None
    )
    data = CirclesDataModule.load_from_checkpoint(checkpoint, weights_only=True)
    data.setup("fit")
    return model, data


def point_panel(sweep: Sweep, row: dict[str, Any]) -> Any:
    """A finished point's panel: its last weights over the grid of its validation points, titled
    with its name and test accuracy (with several members: their mean ± std; the colour is then
    the share of members voting class 1, and a linear model draws each seed's line)."""
    from circles.pictures.grids import grid_axes, grid_boundaries, grid_predictions
    from circles.pictures.notes import MEMBER_LINES, draws_lines
    from circles.pictures.panels import BoundaryPanel

    model, data = point_model(sweep, row)
    val = data.points("val")
    assert val is not None, "set up for fit"
    xs, ys = grid_axes(val[0], resolution=101)
    parts = row["point"].split("-")
    half = (len(parts) + 2) // 2
    metrics = row["metrics"]
    std = metrics.get("test_acc_std")
    bayes = metrics.get("bayes_acc")
    title = (
        f"{' '.join(parts[:half])}\n{' '.join(parts[half:])}\n"
        f"test {num(metrics.get('test_acc'))}"
        + (f" ± {num(std, 3)}" if std is not None else "")
        + (f" (Bayes {num(bayes)})" if bayes else "")
    )
    probs, votes = grid_predictions(model, xs, ys)
    lines = grid_boundaries(model, xs, ys, MEMBER_LINES) if draws_lines(model) else None
    return BoundaryPanel.of(title, xs, ys, probs, *val, votes=votes, boundaries=lines)


def draw_boundaries(
    sweep: Sweep, rows: list[dict[str, Any]], path: Path, dpi: int = 60, colors: int = 48
) -> int:
    """``boundaries.png``: the panel of every finished point (:func:`point_panel`) under one
    colour key; a small palette PNG. Returns the number of panels."""
    import io

    import matplotlib
    from matplotlib.collections import PathCollection
    from PIL import Image

    from circles.pictures.figures import boundary_figure

    panels = [point_panel(sweep, row) for row in rows if row["status"] == "ok"]
    if not panels:
        path.unlink(missing_ok=True)
        return 0
    columns = sweep.columns or min(len(panels), math.ceil(math.sqrt(len(panels))))
    with matplotlib.rc_context({"axes.titlesize": 10, "xtick.labelsize": 7, "ytick.labelsize": 7}):
        figure = boundary_figure(
            panels,
            ncols=columns,
            panel_size=3.0,
            one_key=True,
            title=f"{sweep.path.name}: decision boundaries over each run's validation points",
        )
        for axes in figure.axes:
            for points in axes.collections:
                if isinstance(points, PathCollection):  # the scatter drawn over the class regions
                    points.set_sizes([6])
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors)
    with atomic_file(path, "wb") as f:
        image.save(f, format="PNG", optimize=True)
    return len(panels)


def draw_layers(sweep: Sweep, rows: list[dict[str, Any]], path: Path) -> int:
    """``layers.png``: for every finished point, one row of what each hidden layer of its first
    member does to the plane and the training points (:mod:`circles.pictures.layers`), under the
    point's name and test accuracy. Returns the number of rows."""
    import numpy as np
    from PIL import Image

    from circles.pictures.grids import grid_axes
    from circles.pictures.layers import layers_picture

    pictures = []
    for row in rows:
        if row["status"] != "ok":
            continue
        model, data = point_model(sweep, row)
        x, y = (t.numpy() for t in data.points("train") or ())
        header = f"{row['point']}: test acc {num(row['metrics'].get('test_acc'))}"
        pictures.append(layers_picture(model, x, y, grid_axes(x, resolution=2), header))
    if not pictures:
        path.unlink(missing_ok=True)
        return 0
    width = max(p.shape[1] for p in pictures)
    padded = [
        np.pad(p, ((0, 12), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pictures
    ]
    image = Image.fromarray(np.concatenate(padded)).quantize(64)
    with atomic_file(path, "wb") as f:
        image.save(f, format="PNG", optimize=True)
    return len(pictures)


def write_report(sweep: Sweep) -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``summary.md`` and ``boundaries.png`` (and ``layers.png`` with
    ``layers: true``) into the sweep directory from the points' results; returns the rows."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    rows = collect(sweep)
    write_csv(rows, sweep.keys, sweep.out / "summary.csv")
    done = sum(row["status"] == "ok" for row in rows)
    members = sorted({row["metrics"].get("members") or 1 for row in rows if row["status"] == "ok"})
    seeds = (
        f" Each point trains {' or '.join(map(str, members))} members (seeds): test accuracy is "
        "their mean ± "
        "standard deviation, with the 95% interval of the mean (Student's t), the members' range "
        "and the "
        "accuracy of their averaged probability (ensemble); gap uses the mean."
        if members not in ([], [1])
        else ""
    )
    if any(row["metrics"].get("enclosed") is not None for row in rows):
        seeds += (
            f" {ENCLOSED}: how many members' class-1 region around their class-1 training points "
            "stays inside [-50, 50]^2, decided exactly from the network's linear pieces "
            "(circles/model/regions.py)."
        )
    with atomic_file(sweep.out / "summary.md") as f:
        f.write(
            f"# Sweep {sweep.path.name}\n\nBase config `{sweep.base}`; {len(rows)} points, {done} "
            "finished. "
            "Accuracies are fractions; gap = Bayes acc - test acc; train s = wall time of the fit "
            "command." + seeds + "\n\n" + markdown_table(rows, sweep.keys)
        )
    draw_boundaries(sweep, rows, sweep.out / "boundaries.png")
    if sweep.layers:
        draw_layers(sweep, rows, sweep.out / "layers.png")
    return rows
