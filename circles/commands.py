"""The ``circles`` command (``python train.py``): ``compare`` (:mod:`circles.compare`), or one of
Lightning's subcommands, ``fit``, ``validate``, ``test`` and ``predict`` (:mod:`circles.cli`)."""

from __future__ import annotations

import gc
import sys
from typing import Any


def main(args: Any = None) -> None:
    """Run the command (``args`` as a list of strings; ``None`` reads ``sys.argv``). This module
    imports nothing heavy itself: a Ctrl-C or SIGTERM while torch and Lightning load is one line
    too."""
    from circles.errors import one_line_errors, stopping_on_signals  # light: no torch, no Lightning

    with stopping_on_signals(), one_line_errors():
        if "circles.cli" not in sys.modules:
            # torch and Lightning are about 450,000 objects that live as long as the process: no
            # collection walks them again and again while they load (about 1,000 would), and
            # none after (docs/benchmarks.md, "Start-up without the collector")
            gc.disable()
            import circles.cli  # noqa: F401

            gc.freeze()
            gc.enable()
        from circles.cli import cli_main

        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        if argv[:1] == ["compare"]:
            from circles.compare import main as compare

            raise SystemExit(compare(argv[1:]))
        cli_main(args)
