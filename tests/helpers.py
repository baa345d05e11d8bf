"""Helpers shared by the test modules (pytest puts this folder on the import path, and so does running a test
module as a script)."""

from __future__ import annotations

import os
from pathlib import Path

from circles.cli import cli_main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def exit_status(*args: str) -> int:
    """``cli_main`` as ``python train.py ARGS`` would run it, quietly; returns the exit status."""
    try:
        cli_main([*args, *QUIET] if args and args[0] in ("fit", "validate", "test", "predict") else list(args))
    except SystemExit as exit_info:
        return 0 if exit_info.code is None else exit_info.code
    return 0


class Payload:
    """Unpickling this calls ``open(marker, "w")``: if the marker file exists, a checkpoint's payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def fit_in(directory: Path, *args: str) -> Path:
    """``fit ARGS`` run inside ``directory`` (for module-scoped fixtures, which cannot use the per-test working
    directory); returns the directory's ``lightning_logs``."""
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        assert exit_status("fit", *args) == 0
    finally:
        os.chdir(cwd)
    return directory / "lightning_logs"
