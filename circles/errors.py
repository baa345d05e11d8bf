"""Errors that the command line reports as one clear paragraph instead of a traceback."""

from __future__ import annotations


class CirclesError(Exception):
    """A problem the user can fix; its message says what and how."""

    exit_code = 1


class ConfigError(CirclesError, ValueError):
    """A configuration value outside its allowed range.

    ``field`` is the argument's name as its class spells it (``noise``); the CLI qualifies it with the
    config section (``data.noise``).
    """

    exit_code = 2

    def __init__(self, field: str, allowed: str, got: object, hint: str = "") -> None:
        self.field = field
        self.allowed = allowed
        self.got = got
        self.hint = hint
        super().__init__(self.describe(field))

    def describe(self, name: str) -> str:
        text = f"{name} must be {self.allowed}, got {self.got!r}."
        return f"{text} {self.hint}" if self.hint else text


class SettingError(CirclesError):
    """A setting that a library (Lightning, ``torch.optim``) rejected; the message is the library's, prefixed with
    the config section it belongs to."""

    exit_code = 2


def check(condition: bool, field: str, allowed: str, got: object, hint: str = "") -> None:
    """Raise ConfigError unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, allowed, got, hint)


class Interrupted(CirclesError):
    """A run stopped by a signal (SIGTERM from a scheduler, Ctrl-C); exits with the shell's ``128 + signal`` status."""

    def __init__(self, signum: int, message: str) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message)
