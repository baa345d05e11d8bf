"""The ``circles`` command (``python train.py``): ``compare`` (:mod:`circles.compare`), or one of
Lightning's subcommands, ``fit``, ``validate``, ``test`` and ``predict`` (:mod:`circles.cli`)."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def loading_for_good() -> Iterator[None]:
    """While inside (the command's first import of torch and Lightning: about 450,000 objects
    that live as long as the process), no garbage collection, which would walk them all again
    each time their number grew by a quarter; then they are frozen (``gc.freeze``: left out of
    every later collection) and collection is as it was. About 0.9 s of a command's 4 s before
    its first training step (docs/benchmarks.md, "Start-up without the collector")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def main(args: Any = None) -> None:
    """Run the command (``args`` as a list of strings; ``None`` reads ``sys.argv``). This module
    imports nothing heavy itself: a Ctrl-C or SIGTERM while torch and Lightning load is one line
    too."""
    from circles.errors import one_line_errors, stopping_on_signals  # light: no torch, no Lightning

    loading = loading_for_good() if "circles.cli" not in sys.modules else contextlib.nullcontext()
    with stopping_on_signals(), one_line_errors():
        with loading:
            from circles.cli import cli_main

        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        if argv[:1] != ["compare"]:
            cli_main(args)
            return
        from circles.compare import main as compare

        raise SystemExit(compare(argv[1:]))
