"""What goes wrong inside a subcommand, as the command line's one-line errors."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
from collections.abc import Iterator
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from circles.callbacks.signals import interruption
from circles.errors import CirclesError, ConfigError, SettingError, os_error_text, report
from circles.runs.logger import TensorBoardRunLogger


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What ends a command as one ``circles: error:`` line and its exit status instead of a traceback: a
    :class:`CirclesError` (its own status), Ctrl-C (130), an operating-system error such as a full disk (1)."""
    try:
        yield
    except CirclesError as err:
        report(str(err), err.kind)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        report("interrupted by Ctrl-C (SIGINT).")
        raise SystemExit(130) from None
    except OSError as err:  # a full disk, a read-only folder: the file and the cause, not a traceback
        report(os_error_text(err))
        raise SystemExit(1) from None


@contextlib.contextmanager
def reported(cli: Any) -> Iterator[None]:
    """Turn what goes wrong inside into the one-line errors of :func:`circles.cli.cli_main`: a bad value named by
    its config section, a setting Lightning rejected, SIGTERM or Ctrl-C as an interruption of the subcommand.
    Lightning ignores Ctrl-C after handling one, so Ctrl-C's handler is put back afterwards."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    subcommand, trainer = str(cli.subcommand), getattr(cli, "trainer", None)  # no trainer yet while building
    config, sections = cli.config.get(subcommand, cli.config), cli.SECTIONS
    try:
        yield
    except ConfigError as err:
        raise err.qualified(section_of(config, sections, err.field, err.got)) from None
    except MisconfigurationException as err:  # Lightning names the setting in backticks: "`mode` can be ..."
        name = re.search(r"`(\w+)`", str(err))
        raise SettingError(section_of(config, sections, name.group(1)) if name else None, err) from None
    except SIGTERMException:
        _forget_empty_run(trainer, subcommand)
        raise interruption(trainer, subcommand, signal.SIGTERM) from None
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C with sys.exit(1)
            _forget_empty_run(trainer, subcommand)
            raise interruption(trainer, subcommand, signal.SIGINT) from None
        raise
    finally:
        if ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)


def _forget_empty_run(trainer: Any, subcommand: str) -> None:
    """Remove the run directory of an interrupted validate, test or predict that wrote nothing of its own (its
    lock, config, hyperparameters and event files are all it holds): it has no result to keep (and the folder of
    evaluations, if it was the only one)."""
    logger = trainer.logger if trainer is not None else None
    if subcommand == "fit" or not isinstance(logger, TensorBoardRunLogger) or logger.claimed is None:
        return
    run, own = logger.claimed, {".lock", "config.yaml", "hparams.yaml"}
    files = [p.name for p in run.rglob("*") if p.is_file()]
    if not all(name in own or name.startswith("events.out.tfevents.") for name in files):
        return
    logger.finalize("interrupted")
    shutil.rmtree(run, ignore_errors=True)
    with contextlib.suppress(OSError):
        run.parent.rmdir()


def section_of(config: Namespace, sections: tuple[str, ...], field: str, value: Any = None) -> str | None:
    """The first of ``sections`` of the config with a setting called ``field``; of several (``every_n_epochs``),
    the one set to ``value``."""
    sections = tuple(s for s in sections if isinstance(config.get(s), Namespace) and field in config[s])
    return next((s for s in sections if config[s][field] == value), sections[0] if sections else None)
