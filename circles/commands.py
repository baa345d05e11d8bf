"""The ``circles`` command (``python train.py``): ``compare`` (:mod:`circles.compare`), or one of
Lightning's subcommands, ``fit``, ``validate``, ``test`` and ``predict`` (:mod:`circles.cli`)."""

from __future__ import annotations

import signal
import sys
from typing import Any


def main(args: Any = None) -> None:
    """Run the command (``args`` as a list of strings; ``None`` reads ``sys.argv``). This module
    imports nothing heavy itself: a Ctrl-C while torch and Lightning load is one line too."""
    try:
        from circles.cli import cli_main
        from circles.errors import one_line_errors
    except KeyboardInterrupt:
        from circles.errors import quiet_destructors  # light: no torch, no Lightning

        quiet_destructors()
        sys.stderr.write(
            "circles: error: interrupted by Ctrl-C (SIGINT) while starting; nothing was written.\n"
        )
        raise SystemExit(128 + signal.SIGINT) from None
    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    if argv[:1] != ["compare"]:
        cli_main(args)
        return
    from circles.compare import main as compare

    with one_line_errors():
        raise SystemExit(compare(argv[1:]))
