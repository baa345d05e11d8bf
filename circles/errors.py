"""Errors that the command line reports as one clear paragraph instead of a traceback."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator


class CirclesError(Exception):
    """A problem the user can fix; its message says what and how. ``kind`` heads the line the CLI
    prints."""

    exit_code = 1
    kind = "error"


class InputError(CirclesError):
    """Bad input: a config value, a file, a checkpoint, a resume with other settings, a run another
    process writes, an allocation the ranks cannot fill."""

    exit_code = 2


class ConfigError(InputError, ValueError):
    """A configuration value outside its allowed range.

    ``field`` is the argument's name as its class spells it (``noise``); the CLI qualifies it
    with the config section (``data.noise``)."""

    def __init__(self, field: str, allowed: str, got: object, hint: str = "") -> None:
        self.field, self.allowed, self.got, self.hint = field, allowed, got, hint
        text = f"{field} must be {allowed}, got {got!r}."
        super().__init__(f"{text} {hint}" if hint else text)

    def qualified(self, section: str | None) -> ConfigError:
        """The same error with the field named by its config section: ``noise`` ->
        ``data.noise``."""
        return ConfigError(
            f"{section}.{self.field}" if section else self.field, self.allowed, self.got, self.hint
        )


class SettingError(InputError):
    """A setting that a library (Lightning, ``torch.optim``) rejected; the message is the
    library's, after the setting's name (``field``, qualified by its config section as a
    :class:`ConfigError`'s is)."""

    def __init__(self, field: str | None, err: BaseException | str) -> None:
        self.field, self.err = field, err
        super().__init__(f"{field + ': ' if field else ''}{' '.join(str(err).split())}")

    def qualified(self, section: str | None) -> SettingError:
        return SettingError(f"{section}.{self.field}" if section else self.field, self.err)


def check(condition: bool, field: str, allowed: str, got: object, hint: str = "") -> None:
    """Raise ConfigError unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, allowed, got, hint)


class Interrupted(CirclesError):
    """A run stopped by a signal (SIGTERM from a scheduler, Ctrl-C); exits with the shell's ``128
    + signal`` status."""

    def __init__(self, signum: int, message: str, kind: str = "error") -> None:
        self.signum, self.exit_code, self.kind = signum, 128 + signum, kind
        super().__init__(message)


class SignalStop(SystemExit):
    """SIGTERM, SIGHUP or SIGUSR1 where no training step can wait for it (start-up, set-up,
    between a fit and its test, the learning-rate finder, compare's page): the command stops
    where it is, with its one line and ``128 + signum`` (:func:`stopping_on_signals`)."""

    @property
    def signum(self) -> int:
        return int(str(self.code)) - 128  # raised as SignalStop(128 + signum)


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """While inside, SIGTERM, SIGHUP and (outside a SLURM job, where Lightning's requeue takes
    it) SIGUSR1 raise :class:`SignalStop` instead of ending the process without a word; a fit's
    training steps wait for them instead (:class:`circles.callbacks.GracefulStopCallback`).
    Ctrl-C is Python's KeyboardInterrupt already."""
    # SIGUSR1 is a SLURM batch job's requeue signal (the job as SLURMEnvironment.detect sees it)
    signums = [signal.SIGTERM, signal.SIGHUP] + (
        []
        if "SLURM_NTASKS" in os.environ
        and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
        else [signal.SIGUSR1]
    )
    previous = {s: signal.signal(s, _raise_stop) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_stop(signum: int, frame: object) -> None:
    raise SignalStop(128 + signum)


# what the command was doing when it failed, said first (compare: the config file it was fitting)
REPORT_CONTEXT: contextvars.ContextVar[str] = contextvars.ContextVar("report_context", default="")


def report(message: str, kind: str = "error") -> None:
    """Print ``message`` as the command line's one error paragraph (or, ``kind`` "note", what
    ended it), after the context the command set (:data:`REPORT_CONTEXT`)."""
    print(f"circles: {kind}: {REPORT_CONTEXT.get()}{message}", file=sys.stderr, flush=True)


def quiet_destructors() -> None:
    """From here on, say nothing of errors raised in objects' destructors: after a signal stopped
    the command, an object the signal caught half-built (a progress bar, say) can fail in its
    ``__del__`` as the process ends, which Python would print as a traceback after the command's
    own line."""
    sys.unraisablehook = lambda unraisable: None


def os_error_text(err: OSError) -> str:
    """An operating-system error as one line: the file, the cause and what to do about it."""
    import errno

    # an error TensorBoard's event writer raised again names no file: its record writer's does
    files = [
        getattr(getattr(record, "_writer", None), "filename", b"")
        for frame, _ in traceback.walk_tb(err.__traceback__)
        if hasattr(record := getattr(frame.f_locals.get("self"), "_writer", None), "_writer")
    ]
    where = err.filename or os.fsdecode(next(filter(None, files), "the run's files"))
    # a command's checkpoint named as a file: best|last would find no run elsewhere
    elsewhere = "write the runs elsewhere with --trainer.default_root_dir DIR" + (
        f" --ckpt_path {vars(err)['checkpoint']}." if vars(err).get("checkpoint") else "."
    )
    advice = {
        errno.ENOSPC: f"Free some space there, or {elsewhere}",
        errno.EDQUOT: f"Free some space there, or {elsewhere}",
        errno.EACCES: f"Make the folder writable, or {elsewhere}",
        errno.EROFS: f"W{elsewhere[1:]}",
    }.get(err.errno or 0, "")
    return " ".join(f"{where}: {err.strerror or type(err).__name__}. {advice}".split())


def note(message: str, beside_result: bool = False) -> None:
    """Tell the user something worth knowing that is not an error (once, on rank zero); with
    ``beside_result``, at the end of the command (:func:`print_result_notes`), right after the
    evaluation's result it qualifies, not before the start-up lines, where it would scroll away."""
    # not at import: `circles.sweep --list` is quick
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    if beside_result:
        _RESULT_NOTES.append(message)
    else:
        print(f"circles: note: {message}", file=sys.stderr, flush=True)


_RESULT_NOTES: list[str] = []


def print_result_notes() -> None:
    """The notes held for the end of the command (e.g. a checkpoint tested on other data), each
    once: the command line prints them whether it ended well or not."""
    for message in _RESULT_NOTES:
        print(f"circles: note: {message}", file=sys.stderr, flush=True)
    _RESULT_NOTES.clear()


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What ends a command as one ``circles: error:`` line and its exit status instead of a
    traceback: a :class:`CirclesError` (its own status), Ctrl-C (130), an operating-system error
    such as a full disk (1), TensorBoard's event writer's included (:func:`_writer_failed`)."""
    previous = threading.excepthook
    threading.excepthook = lambda args: None if _writer_failed(args) else previous(args)
    try:
        yield
    except CirclesError as err:
        if isinstance(err, Interrupted):
            quiet_destructors()
        report(str(err), err.kind)
        raise SystemExit(err.exit_code) from None
    except (KeyboardInterrupt, SignalStop) as stop:  # outside what a subcommand reports itself
        quiet_destructors()
        signum = getattr(stop, "signum", signal.SIGINT)
        report(f"interrupted by {signal_name(signum)}.")
        raise SystemExit(128 + signum) from None
    except OSError as err:  # a full disk, a read-only folder: the file and the cause
        report(os_error_text(err))
        raise SystemExit(1) from None
    finally:
        threading.excepthook = previous


def _writer_failed(args: threading.ExceptHookArgs) -> bool:
    """Whether a thread failed as TensorBoard's event writer does on a full disk: its error comes
    again from the command's next event, as one line naming the file (:func:`os_error_text`), so
    the thread's own traceback is not printed."""
    return hasattr(args.thread, "_record_writer") and isinstance(args.exc_value, OSError)


# Lightning's messages that a user of this CLI can do nothing about: the srun hint (the SLURM
# scripts use srun; a workstation with SLURM installed is not a job), a torch deprecation inside
# Lightning, the prediction loop's note that it cannot tell batch indices (the prediction writer
# does not use them), the note to callers that pass the CLI its arguments while the process has its
# own (compare and the sweep runner do so on purpose), and an advertisement.
# tests/test_upstream.py checks each still occurs.
NOT_FOR_THE_USER = (
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
