"""Errors that the command line reports as one clear paragraph instead of a traceback, and the parser that does so."""

from __future__ import annotations

import difflib
import re
import sys
from typing import NoReturn, Optional

from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.rank_zero import rank_zero_only


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
        text = f"{field} must be {allowed}, got {got!r}."
        super().__init__(f"{text} {hint}" if hint else text)

    def qualified(self, section: Optional[str]) -> ConfigError:
        """The same error with the field named by its config section: ``noise`` -> ``data.noise``."""
        return ConfigError(f"{section}.{self.field}" if section else self.field, self.allowed, self.got, self.hint)


class SettingError(CirclesError):
    """A setting that a library (Lightning, ``torch.optim``) rejected; the message is the library's, prefixed with
    the config section it belongs to."""

    exit_code = 2

    def __init__(self, section: Optional[str], err: BaseException) -> None:
        super().__init__(f"{section + ': ' if section else ''}{' '.join(str(err).split())}")


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


def report(message: str) -> None:
    """Print ``message`` as the command line's one error paragraph."""
    print(f"circles: error: {message}", file=sys.stderr, flush=True)


def os_error_text(err: OSError) -> str:
    """An operating-system error as one line: the file, the cause and what to do about it."""
    import errno

    where = str(err.filename) if err.filename else "the run's files"
    advice = {errno.ENOSPC: "Free some space there, or write the runs elsewhere with --trainer.default_root_dir DIR.",
              errno.EDQUOT: "Free some space there, or write the runs elsewhere with --trainer.default_root_dir DIR.",
              errno.EACCES: "Make the folder writable, or write the runs elsewhere with --trainer.default_root_dir DIR.",
              errno.EROFS: "Write the runs elsewhere with --trainer.default_root_dir DIR."}.get(err.errno, "")
    return " ".join(f"{where}: {err.strerror or type(err).__name__}. {advice}".split())


@rank_zero_only
def note(message: str) -> None:
    """Tell the user something worth knowing that is not an error (once, on rank zero)."""
    print(f"circles: note: {message}", file=sys.stderr, flush=True)


class CirclesArgumentParser(LightningArgumentParser):
    """Reports a parse error (unknown option, wrong type, bad YAML, missing file) as one ``circles: error:``
    paragraph that names the option and what it accepts, instead of the whole usage text."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parses with errors as exceptions where it tries alternatives
            super().error(message, ex)
        report(parse_error_text(message, getattr(ex, "subcommand_parser", None) or self))
        self.exit(2)


def parse_error_text(message: str, parser: LightningArgumentParser) -> str:
    """jsonargparse's error message, shortened to one line that names the option and what it accepts."""
    unknown = re.findall(r"does not accept option '([^']+)'", message)
    if message.startswith("unrecognized arguments:"):
        unknown = [arg[2:].split("=")[0] for arg in message.split()[2:] if arg.startswith("--")]
    if unknown:
        return " ".join(_unknown_option_text(parser, key) for key in unknown)
    text = re.sub(r'^Parser key "([^"]+)":', r"\1:", message)
    text = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", r"expected one of \1, got \2.", text)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    kinds = {"int": "an integer", "float": "a number", "bool": "true or false"}
    text = re.sub(r"Expected a (int|float|bool)\. Got value: (.*)", lambda m: f"expected {kinds[m.group(1)]}, got "
                  f"{m.group(2).strip()}.", text)
    text = re.sub(r"^Problems parsing config: ", "the config is not valid YAML: ", text)
    text = text.replace(' in "<unicode string>",', " at")
    return " ".join(text.split())


def _options(parser: LightningArgumentParser, group: str) -> list[str]:
    """The options directly inside ``group`` (``""``: the top level), in the parser's order."""
    prefix = f"{group}." if group else ""
    names = [key[len(prefix):].split(".")[0] for key in parser.get_defaults().keys() if key.startswith(prefix)]
    return [n for n in dict.fromkeys(names) if n and n != "config"]


def _unknown_option_text(parser: LightningArgumentParser, key: str) -> str:
    group, _, name = key.rpartition(".")
    options = _options(parser, group)
    if not options:
        group, name, options = "", key.split(".")[0], _options(parser, "")
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    where = f"{group} accepts" if group else "the options are"
    return f"{key} is not an option; {where}: {', '.join(options)}.{guess}"
