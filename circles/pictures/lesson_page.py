"""The comparison's HTML page: each run's decision boundary, network and layer maps side by side
under one epoch slider, the curves of every run with the slider's epoch marked on them, and the
final numbers; every picture inside the page (data URIs), so it opens offline in any browser.

The page lays the runs out in as many columns as there are runs and scales the pictures to the
window; the slider stays at the top of the window while the page scrolls. Its positions are the
epochs the runs were pictured at (every run at the same ones, :func:`circles.compare.pictured`),
so one position shows every run at one epoch; a run that has ended shows its last picture and
says so."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from circles.model.metrics import num


@dataclass
class RunRecord:
    """What a compared run showed: its curves every epoch; at the epochs
    :func:`circles.compare.pictured` gives and its last, its boundary over the validation points,
    its network and its layers' maps; its final numbers."""

    name: str = ""
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    pictures: dict[int, np.ndarray] = field(default_factory=dict)
    # the network, as TensorFlow Playground draws it
    networks: dict[int, np.ndarray] = field(default_factory=dict)
    # what each hidden layer does to the plane (circles.pictures.layers)
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    members: int = 1


def draw_curves(ax: Any, records: Sequence[RunRecord], metric: str, label: str) -> None:
    """Every run's train (dashed) and val (solid) curve of ``metric`` in its own colour; for the
    accuracy of runs on one data set, its Bayes-optimal limit."""
    for i, record in enumerate(records):
        for stage, style in (("train", "--"), ("val", "-")):
            points = record.curves.get(f"{stage}/{metric}", [])
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    style,
                    color=f"C{i}",
                    linewidth=1.4,
                    label=f"{record.name} ({stage})",
                )
    bayes = {
        record.final["test/bayes_acc"] for record in records if "test/bayes_acc" in record.final
    }
    if metric == "acc" and len(bayes) == 1:
        ax.axhline(bayes.pop(), color="k", linewidth=0.8, linestyle=":", label="Bayes-optimal")
    ax.set(xlabel="epoch", ylabel=label)


def final_line(record: RunRecord) -> str:
    """A run's final result in one line: its test accuracy (with its spread over the members) and
    its best validation accuracy."""
    f = record.final
    parts = []
    if "test/acc" in f:
        spread = (
            f" ± {f['test/acc_std']:.3f} ({record.members} seeds)" if "test/acc_std" in f else ""
        )
        parts.append(f"test acc {f['test/acc']:.3f}{spread}")
    if "val/acc_best" in f:
        parts.append(f"best val acc {f['val/acc_best']:.3f}")
    return ", ".join(parts) or "not tested"


def last_epoch_figure(records: Sequence[RunRecord]) -> Any:
    """The comparison at each run's last epoch as one figure: a boundary per run above its
    network, the accuracy and the loss curves of all runs below."""
    from matplotlib.figure import Figure

    columns = max(2, len(records))
    figure = Figure(figsize=(3.2 * columns, 11.5), layout="constrained")
    grid = figure.add_gridspec(3, columns * 2, height_ratios=[1.15, 1.75, 1])
    for i, record in enumerate(records):
        last = max(record.pictures)
        top = figure.add_subplot(grid[0, 2 * i : 2 * i + 2])
        top.imshow(record.pictures[last], interpolation="antialiased")
        top.set_title(f"{record.name}, epoch {last}\n{final_line(record)}", fontsize=9)
        below = figure.add_subplot(grid[1, 2 * i : 2 * i + 2])
        if record.networks:
            below.imshow(record.networks[max(record.networks)], interpolation="antialiased")
        for ax in (top, below):
            ax.set_axis_off()
    accuracy = figure.add_subplot(grid[2, :columns])
    draw_curves(accuracy, records, "acc", "accuracy")
    accuracy.legend(fontsize=7, loc="lower right")
    draw_curves(figure.add_subplot(grid[2, columns:]), records, "loss", "loss")
    return figure


def numbers_table(records: Sequence[RunRecord]) -> str:
    """The final numbers as an HTML table: best val acc, test acc with its spread and interval,
    the Bayes gap."""
    rows = []
    for record in records:
        f = record.final
        spread = (
            f" ± {num(f.get('test/acc_std'), 3)} (95% interval ± {num(f.get('test/acc_ci95'), 3)}, "
            f"from {num(f.get('test/acc_min'), 3)} to {num(f.get('test/acc_max'), 3)})"
            if "test/acc_std" in f
            else ""
        )
        cells = [
            record.name,
            str(record.members),
            num(f.get("val/acc_best")),
            num(f.get("test/acc")) + spread,
            num(f.get("test/bayes_acc")),
            num(f.get("test/bayes_gap")),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    heads = ("run", "seeds", "best val acc", "test acc", "Bayes-optimal acc", "gap to it")
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr>{''.join(rows)}</table>"


def slider_epochs(records: Sequence[RunRecord]) -> list[int]:
    """The epochs the page's slider goes through: every epoch any run was pictured at."""
    return sorted({e for record in records for e in record.pictures})


STYLE = """
body { font-family: sans-serif; margin: 0 1.5em 2em; color: #222; }
h1 { font-size: 1.4em; margin: 0.8em 0 0.3em; }
p.about { max-width: 60em; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: left; }
.controls { position: sticky; top: 0; z-index: 2; background: #fff; padding: 0.6em 0;
  display: flex; align-items: center; gap: 1em; border-bottom: 1px solid #ddd; }
.controls input { flex: 1; max-width: 40em; }
.controls output { font-weight: bold; min-width: 7em; }
.runs { display: grid; gap: 0.4em 1.2em; align-items: start; }
.runs h2 { font-size: 1.05em; margin: 0.8em 0 0.1em; }
.runs .final, .runs .caption { margin: 0.1em 0 0.4em; font-size: 0.9em; }
.runs .caption { color: #444; }
.runs .ended { color: #b2182b; }
.runs img { width: 100%; max-width: 34em; height: auto; display: block; }
.runs img.boundary { width: auto; height: 21em; max-width: 100%; object-fit: contain;
  object-position: left; }
.runs .row { grid-column: 1 / -1; font-size: 1.05em; margin: 1.2em 0 0.2em; }
.curves { grid-column: 1 / -1; position: relative; max-width: 90em; }
.curves img { max-width: none; }
.mark { position: absolute; width: 0; border-left: 2px solid #555; pointer-events: none; }
"""

SCRIPT = """
const data = JSON.parse(document.getElementById("data").textContent);
const slider = document.getElementById("position");
const label = document.getElementById("epoch");
const play = document.getElementById("play");
const columns = [...document.querySelectorAll(".run")];
const marks = [...document.querySelectorAll(".mark")];
function frameAt(run, epoch) {
  let shown = run.frames[0];
  for (const frame of run.frames) if (frame.epoch <= epoch) shown = frame;
  return shown;
}
function show(position) {
  const epoch = data.epochs[position];
  label.textContent = "epoch " + epoch;
  data.runs.forEach((run, i) => {
    const frame = frameAt(run, epoch);
    const column = columns[i];
    for (const kind of ["boundary", "network", "layers"]) {
      const image = document.querySelector(`img.${kind}[data-run="${i}"]`);
      if (!image) continue;
      image.hidden = !frame[kind];
      if (frame[kind]) image.src = frame[kind];
    }
    const caption = column.querySelector(".caption");
    const last = frame === run.frames[run.frames.length - 1];
    const ended = last && frame.epoch < epoch;
    const note = ended ? " (its last epoch: the run has ended)"
      : frame.epoch < epoch ? ` (its latest picture before epoch ${epoch})` : "";
    caption.textContent = frame.caption + note;
    caption.classList.toggle("ended", ended);
  });
  data.marks.forEach((chart, i) => {
    marks[i].style.left = 100 * chart.left[position] + "%";
    marks[i].style.top = 100 * chart.top + "%";
    marks[i].style.height = 100 * chart.height + "%";
  });
}
let timer = null;
function stop() { clearInterval(timer); timer = null; play.textContent = "\\u25b6 play"; }
play.addEventListener("click", () => {
  if (timer) { stop(); return; }
  if (+slider.value >= +slider.max) slider.value = 0;
  play.textContent = "\\u25ae\\u25ae pause";
  show(+slider.value);
  timer = setInterval(() => {
    if (+slider.value >= +slider.max) { stop(); return; }
    slider.value = +slider.value + 1;
    show(+slider.value);
  }, 350);
});
slider.addEventListener("input", () => show(+slider.value));
show(+slider.value);
"""


def data_uri(image: np.ndarray, kind: str = "PNG") -> str:
    """An ``(H, W, 3)`` uint8 image as a ``data:`` URI (PNG, or JPEG for the large pictures)."""
    from PIL import Image

    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": 80} if kind == "JPEG" else {"optimize": True}
    Image.fromarray(image).save(buffer, format=kind, **options)
    return _uri(buffer, f"image/{kind.lower()}")


def _uri(buffer: io.BytesIO, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def curves_picture(
    records: Sequence[RunRecord], epochs: Sequence[int]
) -> tuple[str, list[dict[str, Any]]]:
    """The accuracy and the loss of every run over the epochs (:func:`draw_curves`)
    as a PNG data URI, the epoch axis linear to 10 and logarithmic after it, as the pictures are
    taken; and for each chart where the page draws its mark of each of ``epochs``: the plot area's
    top and height and the mark's left edge, as shares of the picture's height and width."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.4), dpi=100, layout="constrained")
    charts = figure.subplots(1, 2)
    for ax, metric, label in ((charts[0], "acc", "accuracy"), (charts[1], "loss", "loss")):
        draw_curves(ax, records, metric, label)
        ax.set_xscale("symlog", linthresh=10, linscale=0.5)
        ax.set_xlim(0, max(1, epochs[-1]))
        ax.set_xlabel("epoch (linear to 10, logarithmic after)")
    charts[0].legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")  # lays the figure out: the axes' places are final
    width, _ = figure.canvas.get_width_height()
    marks = [
        {
            "top": 1 - ax.get_position().y1,
            "height": ax.get_position().height,
            "left": [
                round(float(x) / width, 5)
                for x in ax.transData.transform(np.stack([epochs, np.zeros(len(epochs))], 1))[:, 0]
            ],
        }
        for ax in charts
    ]
    return _uri(buffer, "image/png"), marks


def _frames(record: RunRecord) -> list[dict[str, Any]]:
    """A run's pictures, epoch by epoch, with what its caption says there."""
    val_acc = dict(record.curves.get("val/acc", []))
    return [
        {
            "epoch": epoch,
            "caption": f"epoch {epoch}"
            + (f": val acc {val_acc[epoch]:.3f}" if epoch in val_acc else ""),
            "boundary": data_uri(record.pictures[epoch]),
            "network": data_uri(record.networks[epoch], "JPEG")
            if epoch in record.networks
            else None,
            "layers": data_uri(record.layers[epoch]) if epoch in record.layers else None,
        }
        for epoch in sorted(record.pictures)
    ]


def _row(records: Sequence[RunRecord], kind: str) -> str:
    """One picture per run, each in its run's column."""
    return "".join(
        f'<img class="{kind}" data-run="{i}" alt="{html.escape(record.name)}: {kind}">'
        for i, record in enumerate(records)
    )


def page_html(records: Sequence[RunRecord]) -> str:
    """The whole page: the table of the final numbers (:func:`numbers_table`) above, then a column
    per run headed with its name and its final result (:func:`final_line`)."""
    epochs = slider_epochs(records)
    curves, marks = curves_picture(records, epochs)
    runs = [{"name": record.name, "frames": _frames(record)} for record in records]
    payload = json.dumps({"epochs": epochs, "marks": marks, "runs": runs}).replace("</", "<\\/")
    names = ", ".join(record.name for record in records)
    heads = "".join(
        f'<div class="run"><h2>{html.escape(record.name)}</h2>'
        f'<p class="final">{html.escape(line)}</p>'
        f'<img class="boundary" data-run="{i}" alt="{html.escape(record.name)}: boundary">'
        '<p class="caption"></p></div>'
        for i, (record, line) in enumerate((r, final_line(r)) for r in records)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>circles: {html.escape(names)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(names)}</h1>
<p class="about">Each run's decision boundary (the colour of the class it predicts; with several
seeds, the share of them voting each class) over its validation points, at the epoch the slider
gives: every config's run is pictured at the same epochs, more often early, when the boundary moves
most (a run no compare trained shows the TensorBoard frames it wrote).
Under the boundaries, the accuracy and loss of every run (train dashed, val solid; the grey line is
the slider's epoch); further down each network as TensorFlow Playground draws it (its first seed's:
each unit's output over the plane, joined by links as wide as their weights, blue positive, red
negative) and what each of its hidden layers does to the plane and the training points.</p>
{numbers_table(records)}
<div class="controls"><button id="play" type="button">\u25b6 play</button>
<input id="position" type="range" min="0" max="{len(epochs) - 1}" value="0" step="1"
aria-label="epoch"><output id="epoch" for="position">epoch {epochs[0]}</output></div>
<div class="runs" style="grid-template-columns: repeat({len(records)}, minmax(0, 1fr))">
{heads}
<div class="curves"><img src="{curves}" alt="accuracy and loss of every run">
{'<div class="mark"></div>' * len(marks)}</div>
<h2 class="row">The networks</h2>{_row(records, "network")}
<h2 class="row">What each hidden layer does to the plane</h2>{_row(records, "layers")}
</div>
<script type="application/json" id="data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
