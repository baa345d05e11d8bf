"""The command line's parser: jsonargparse's errors as one ``circles: error:`` line naming the
option and what it accepts."""

from __future__ import annotations

import difflib
import re
from typing import NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser
from typing_extensions import override

from circles.errors import report


class CirclesArgumentParser(LightningArgumentParser):
    """Reports a parse error (unknown option, wrong type, bad YAML, missing file) as one
    ``circles: error:`` paragraph that names the option and what it accepts, instead of the whole
    usage text."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # jsonargparse parses with errors as exceptions where it tries alternatives
        if not self.exit_on_error:
            super().error(message, ex)
        report(parse_error_text(message, getattr(ex, "subcommand_parser", None) or self))
        self.exit(2)


def parse_error_text(message: str, parser: ArgumentParser) -> str:
    """jsonargparse's error message, shortened to one line that names the option and what it
    accepts."""
    unknown = [
        f"{group}.{key}" if group else key
        for group, key in re.findall(
            r"(?:Group '([^']+)' )?does not accept option '([^']+)'", message
        )
    ]
    if message.startswith("unrecognized arguments:"):
        unknown = [arg[2:].split("=")[0] for arg in message.split()[2:] if arg.startswith("--")]
    if unknown:
        return " ".join(_unknown_option_text(parser, key) for key in unknown)
    text = re.sub(r'^Parser key "([^"]+)":', r"\1:", message)
    text = re.sub(
        r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)",
        r"expected one of \1, got \2.",
        text,
    )
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    text = re.sub(
        r"Expected a collections\.abc\.Sequence\. Got value: (.*)",
        r"expected a list, got \1.",
        text,
    )
    text = re.sub(
        r"^argument (\w+\.\w+) --> (\w+\.\w+): .*", r"\2 follows \1: give --\1 instead.", text
    )
    text = re.sub(
        r"Expected a (int|float|bool)\. Got value: (.*)",
        lambda m: _expected(m.group(1), m.group(2)),
        text,
    )
    text = re.sub(r"^Problems parsing config: ", "the config is not valid YAML: ", text)
    text = text.replace(' in "<unicode string>",', " at")
    text = " ".join(text.split())
    return _union_text(text) or text


UNION = "Does not validate against any of the Union subtypes"
KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a text",
    "NoneType": "null",
}


def _union_text(text: str) -> str | None:
    """jsonargparse's account of every type it tried for a value (``optimizer: Does not validate
    against any of the Union subtypes ... Given value: ...``) as ``optimizer.lr: expected a
    number, got abc.``; None for another message."""
    field = re.match(rf"^(\S+): {UNION}", text)
    if field is None:
        return None
    name, rest = field[1], text
    nested = re.search(
        r"Problem with given class_path '[^']+': Parser key \"([^\"]+)\": (.*)", text
    )
    if nested:  # a class's own argument (the optimizer's lr)
        name, rest = f"{name}.{nested[1]}", nested[2]
        said = re.match(r"(expected .*?, got .*?\.)(?: - |$)", rest)
        if said:
            return f"{name}: {said[1]}"
    value = re.search(r"NestedArg\(key='[^']*', val='([^']*)'\)", text) if nested else None
    value = value or re.search(r"Given value: (.*?)(?: - |$)", rest)
    subtypes = re.search(r"Subtypes: \[((?:[^\[\]]|\[[^\]]*\])*)\]", rest)
    listed = subtypes[1] if subtypes else ""
    choices = re.findall(r"Literal\[([^\]]*)\]", listed)  # the allowed values themselves
    kinds = [f"one of {c}" for c in choices] + [
        KINDS.get(t.strip().rsplit(".", 1)[-1])
        for t in re.sub(r"\S*Literal\[[^\]]*\]", "", listed).split(",")
    ]
    wanted = " or ".join(k for k in kinds if k) or "another value"
    return f"{name}: expected {wanted}, got {value[1] if value else 'another value'}."


def _expected(kind: str, got: str) -> str:
    """``expected an integer, got abc.``; a value that reads as the kind asked for was given as
    text (quoted)."""
    got = got.strip()
    written = {"int": r"-?\d+", "float": r"-?[\d.]+(e-?\d+)?", "bool": r"true|false"}
    quoted = re.fullmatch(written[kind], got, re.IGNORECASE) is not None
    wanted = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
    if quoted:
        return f"expected {wanted}, got the text {got!r} (write it without quotes)."
    return f"expected {wanted}, got {got}."


def _options(parser: ArgumentParser, group: str) -> list[str]:
    """The options directly inside ``group`` (``""``: the top level), in the parser's order."""
    prefix = f"{group}." if group else ""
    names = [
        key[len(prefix) :].split(".")[0]
        for key in parser.get_defaults().keys()
        if key.startswith(prefix)
    ]
    return [n for n in dict.fromkeys(names) if n and n != "config"]


def _unknown_option_text(parser: ArgumentParser, key: str) -> str:
    group, _, name = key.rpartition(".")
    options = _options(parser, group)
    if not options:
        group = ""
        name = key.split(".")[0]
        options = _options(parser, "")
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    where = f"{group} accepts" if group else "the options are"
    return f"{key} is not an option; {where}: {', '.join(options)}.{guess}"
