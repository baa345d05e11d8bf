"""What the user of the command line sees when something goes wrong: one ``circles: error:`` line
naming the option and what to do, instead of a traceback; and Lightning's messages that say
nothing to them, hidden."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import warnings
from collections.abc import Iterator
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from circles.callbacks.checkpoint import RunCheckpoint
from circles.callbacks.signals import interruption
from circles.errors import (
    CirclesError,
    ConfigError,
    Interrupted,
    SettingError,
    os_error_text,
    quiet_destructors,
    report,
)
from circles.model.classifier import TrainingDiverged
from circles.runs.logger import TensorBoardRunLogger


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What ends a command as one ``circles: error:`` line and its exit status instead of a
    traceback: a :class:`CirclesError` (its own status), Ctrl-C (130), an operating-system error
    such as a full disk (1)."""
    try:
        yield
    except CirclesError as err:
        if isinstance(err, Interrupted):
            quiet_destructors()
        report(str(err), err.kind)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        quiet_destructors()
        report("interrupted by Ctrl-C (SIGINT).")
        raise SystemExit(130) from None
    # a full disk, a read-only folder: the file and the cause, not a traceback
    except OSError as err:
        report(os_error_text(err))
        raise SystemExit(1) from None


@contextlib.contextmanager
def reported(cli: Any) -> Iterator[None]:
    """Turn what goes wrong inside a :class:`circles.cli.CirclesCLI` (parsing, building or
    running) into the errors :func:`one_line_errors` reports: a bad value named by its config
    section, a setting Lightning rejected, a diverged fit with what to do about it, SIGTERM or
    Ctrl-C as an interruption of the subcommand. Lightning ignores Ctrl-C after handling one, so
    Ctrl-C's handler is put back afterwards."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        yield
    except ConfigError as err:
        raise err.qualified(section_of(cli, err.field, err.got)) from None
    # Lightning names the setting in backticks: "`mode` can be ..."
    except MisconfigurationException as err:
        name = re.search(r"`(\w+)`", str(err))
        raise SettingError(section_of(cli, name.group(1)) if name else None, err) from None
    except TrainingDiverged as err:
        raise divergence(err, cli.trainer, cli.datamodule) from None
    except SIGTERMException:
        raise _interrupted(cli, signal.SIGTERM) from None
    except SystemExit as err:
        # Lightning ends a Ctrl-C with sys.exit(1)
        if isinstance(err.__context__, KeyboardInterrupt):
            raise _interrupted(cli, signal.SIGINT) from None
        raise
    finally:
        if ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)


def _interrupted(cli: Any, signum: int) -> CirclesError:
    """A subcommand stopped by ``signum``; an evaluation's empty run directory is removed."""
    trainer = getattr(cli, "trainer", None)
    subcommand = str(getattr(cli, "subcommand", None))
    _forget_empty_run(trainer, subcommand)
    return interruption(trainer, subcommand, signum)


def _forget_empty_run(trainer: Any, subcommand: str) -> None:
    """Remove the run directory of an interrupted validate, test or predict that wrote nothing of
    its own (its lock, config, hyperparameters and event files are all it holds): it has no
    result to keep (and the folder of evaluations, if it was the only one)."""
    logger = trainer.logger if trainer is not None else None
    if (
        subcommand == "fit"
        or not isinstance(logger, TensorBoardRunLogger)
        or logger.claimed is None
    ):
        return
    run = logger.claimed
    own = {".lock", "config.yaml", "hparams.yaml"}
    files = [p.name for p in run.rglob("*") if p.is_file()]
    if not all(name in own or name.startswith("events.out.tfevents.") for name in files):
        return
    logger.finalize("interrupted")
    shutil.rmtree(run, ignore_errors=True)
    with contextlib.suppress(OSError):
        run.parent.rmdir()


def section_of(cli: Any, field: str, value: Any = None) -> str | None:
    """The first of the CLI's ``SECTIONS`` of its config with a setting called ``field``; of several
    (``every_n_epochs``), the one set to ``value``; None before the config is parsed."""
    config = getattr(cli, "config", None)
    if config is None:
        return None
    config = config.get(str(getattr(cli, "subcommand", None)), config)
    sections = [
        s for s in cli.SECTIONS if isinstance(config.get(s), Namespace) and field in config[s]
    ]
    return next(
        (s for s in sections if config[s][field] == value), sections[0] if sections else None
    )


def divergence(err: TrainingDiverged, trainer: Any, data: Any) -> TrainingDiverged:
    """What to do about a diverged fit, with the checkpoints kept from before it: scale the data
    when its points lie far beyond what a network of this size takes (it diverges at any learning
    rate), else lower the learning rate."""
    checkpoint = trainer.checkpoint_callback
    kept = checkpoint.written() if isinstance(checkpoint, RunCheckpoint) else []
    saved = f" Checkpoints from before the divergence: {', '.join(kept)}." if kept else ""
    train = data.points("train")
    reach = float(train[0].abs().max()) if train is not None and len(train[0]) else 0.0
    if reach > 1e4:
        return TrainingDiverged(
            f"Training diverged: the training points reach |x| = {reach:.3g}, far beyond the few "
            "units a network "
            f"of this size takes; scale the data (a smaller learning rate does not help).{saved}"
        )
    advice = "" if "weight_decay" in str(err) else " Set it with --optimizer.init_args.lr."
    return TrainingDiverged(f"{err}{advice}{saved}")


# Lightning's messages that a user of this CLI can do nothing about: the CLI's own optimizer
# replacing the model's default one (by design), the srun hint (the SLURM scripts use srun; a
# workstation with SLURM installed is not a job), a torch deprecation inside Lightning, the
# prediction loop's note that it cannot tell batch indices (the prediction writer does not use
# them), the note to callers that pass the CLI its arguments while the process has its own (compare
# and the sweep runner do so on purpose), and an advertisement. tests/test_upstream.py checks each
# still occurs.
NOT_FOR_THE_USER = (
    r"`CirclesClassifier.configure_optimizers` will be overridden",
    r"The `srun` command is available on your system but is not used",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Couldn't infer the batch indices fetched from your dataloader",
    r"LightningCLI's args parameter is intended to run from within Python",
)
TIP = "💡 Tip:"  # Lightning's advertisement, logged once per process
# Logged by every rank when Lightning's requeue handler saves its hpc checkpoint (it passes no
# weights_only)
NO_WEIGHTS_ONLY = "`weights_only` was not set, defaulting to `False`."
LOGGED_NOT_FOR_THE_USER = {
    "lightning.pytorch.utilities.rank_zero": TIP,
    "lightning.pytorch.trainer.connectors.checkpoint_connector": NO_WEIGHTS_ONLY,
}


def _not_for_the_user(record: logging.LogRecord) -> bool:
    hidden = LOGGED_NOT_FOR_THE_USER.get(record.name)
    return hidden is None or not record.getMessage().startswith(hidden)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While inside, hide the warnings in ``NOT_FOR_THE_USER`` and the log lines in
    ``LOGGED_NOT_FOR_THE_USER`` (Lightning's tips, a default it logs on every rank); every other
    warning still shows, and a process that imports circles keeps its own filters."""
    logs = [logging.getLogger(name) for name in LOGGED_NOT_FOR_THE_USER]
    with warnings.catch_warnings():
        for message in NOT_FOR_THE_USER:
            warnings.filterwarnings("ignore", message=message)
        for log in logs:
            log.addFilter(_not_for_the_user)
        try:
            yield
        finally:
            for log in logs:
                log.removeFilter(_not_for_the_user)
