"""Sweeps: a grid of ordinary CLI runs, in parallel and resumable, compared in one table and one
picture.

``python -m circles.sweep --config configs/sweeps/task.yaml [--jobs N] [--out DIR]`` (or
``circles-sweep``). A sweep file names a base config and a grid over any CLI config keys in dotted
form::

    base: ../relu.yaml           # relative to this file, the working directory or the repository
    fixed:                       # overrides for every point
      data.test_samples: 100000
    grid:                        # a mapping: its cartesian product; a list of them: their union
      - model.activation: [none, relu]
        model.hidden_sizes: [[10], [10, 10]]
      - model.optimizer.class_path: [torch.optim.Adam]
        model.optimizer.init_args.lr: [0.01]
    columns: 4                           # optional: panels per row in boundaries.png

Every point is ``run_cli(["fit", "--config", base, "--key=value", ...])`` followed by
``test`` of its ``checkpoints/last.ckpt`` on the same trainer, logged into its own run directory
``DIR/runs/<point name>`` (so ``tensorboard --logdir DIR`` compares the points in its HPARAMS tab).
A point's ``result.json`` is written last; a point that has one with status ``ok`` and the same
settings is skipped when the sweep is run again. A failing point is reported and the others go on;
the exit status is 1 if any point failed. SIGTERM or Ctrl-C stops the whole sweep (workers included)
with status 143/130; the points it interrupted continue from their ``last.ckpt`` when the sweep is
run again. ``DIR/summary.csv``, ``DIR/summary.md`` and ``DIR/boundaries.png`` compare all points.

On a cluster, ``--list`` prints the points with their index, ``--point I`` runs only point I (one
per SLURM array task, see ``scripts/slurm/sweep_array.sbatch``) and ``--report`` rebuilds the
outputs from finished points.

The package is split by job: ``spec`` (sweep files -> points), ``runner`` (running points,
workers, signals), ``report`` (tables and the picture), ``command`` (the command line)."""

from circles.sweep.command import main
from circles.sweep.spec import Point, Sweep, SweepError, load_sweep

__all__ = ["Point", "Sweep", "SweepError", "load_sweep", "main"]
