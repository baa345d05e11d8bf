"""``python -m circles.cli``: the command line, as ``python train.py`` runs it (the SLURM scripts
use this form)."""

from circles.cli import cli_main

cli_main()
