"""How much of a result is the seed: configs/relu.yaml trained from many seeds at once, and the
picture in README.

    python scripts/seed_spread.py                 # 256 seeds (42..297), ~1 min on a laptop CPU
    python scripts/seed_spread.py --members 64 --out /tmp/spread.png

Trains the chapter's ReLU model with ``--model.members N`` (member k is the run with
``seed_everything 42 + k``), reads the run's ``members.csv`` and draws the distribution of the
final validation accuracy, marking where the chapter's own run (73.5%), the course notebook's
(79%) and this project's seed 42 fall."""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKS = {"the chapter's run": 0.735, "the course notebook's run": 0.79}


def spread(members: int, epochs: int) -> list[dict[str, float]]:
    """``members.csv`` of ``fit configs/relu.yaml --model.members N`` as numbers, one dict per
    member."""
    from circles.cli import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        cli_main(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "relu.yaml"),
                f"--model.members={members}",
                f"--trainer.max_epochs={epochs}",
                "--chapter_log.every_n_epochs=null",  # it reads members.csv alone: no pictures
                "--boundary.every_n_epochs=100000",
                "--boundary.gif=false",
                "--weights.histograms_every_n_epochs=null",
                "--weights.dead_units_every_n_epochs=null",
                f"--trainer.default_root_dir={tmp}",
            ]
        )
        (table,) = Path(tmp).glob("lightning_logs/0000-*/members.csv")  # 0000-<what the run trains>
        with open(table) as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def draw(rows: list[dict[str, float]], path: Path, epochs: int) -> None:
    from matplotlib.figure import Figure

    accs = [row["val_acc"] for row in rows]
    seed42 = next(row["val_acc"] for row in rows if row["seed"] == 42)
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    step = 1 / 200  # one validation point of 200
    bins = [round(0.4 + i * step, 4) - step / 2 for i in range(int(0.6 / step) + 2)]
    ax.hist(accs, bins=bins, color="#4575b4", alpha=0.8)
    top = ax.get_ylim()[1]
    for (label, value), colour in zip(
        {**MARKS, "seed 42 (configs/relu.yaml)": seed42}.items(),
        ("#d73027", "#fc8d59", "#1a9850"),
        strict=True,
    ):
        ax.axvline(value, color=colour, linewidth=2)
        ax.text(
            value,
            top * 0.97,
            f" {label}: {value:.1%}",
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color=colour,
        )
    mean, std = statistics.mean(accs), statistics.stdev(accs)
    ax.set_xlabel(f"final validation accuracy after {epochs} epochs")
    ax.set_ylabel("seeds")
    ax.set_title(
        f"configs/relu.yaml from {len(accs)} seeds: mean {mean:.1%}, std {std:.1%}, "
        f"range {min(accs):.1%} to {max(accs):.1%}",
        fontsize=10,
    )
    ax.set_xlim(min(accs + list(MARKS.values())) - 0.02, max(accs) + 0.02)
    fig.savefig(path, dpi=80)


def summary(accs: list[float]) -> dict:
    """What README says of the seeds' final accuracies: mean, standard deviation, median, range,
    quartiles, and the share of seeds below each of MARKS."""
    accs = sorted(accs)
    q1, median, q3 = statistics.quantiles(accs, n=4)
    below = {value: sum(a < value for a in accs) / len(accs) for value in MARKS.values()}
    return {
        "mean": statistics.mean(accs),
        "std": statistics.stdev(accs),
        "median": median,
        "min": accs[0],
        "max": accs[-1],
        "q1": q1,
        "q3": q3,
        "below": below,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=256, help="seeds, trained at once")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "docs" / "seed_spread_relu.png"))
    args = parser.parse_args()
    rows = spread(args.members, args.epochs)
    draw(rows, Path(args.out), args.epochs)
    facts = summary([row["val_acc"] for row in rows])
    print(
        f"{len(rows)} seeds: mean {facts['mean']:.4f}, std {facts['std']:.4f}, quartiles "
        f"{facts['q1']:.4f} / "
        f"{facts['median']:.4f} / {facts['q3']:.4f}, min {facts['min']:.4f}, max {facts['max']:.4f}"
    )
    for label, value in MARKS.items():
        print(f"{label} ({value:.1%}): {facts['below'][value]:.0%} of seeds end below it")
    print(f"picture: {args.out}")


if __name__ == "__main__":
    main()
