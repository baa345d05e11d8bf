"""Bounds on outside input that arrives as YAML (config files, command-line values, checkpoints'
records, sweep files): its size, and the number of values it stands for once its aliases are
expanded, checked before anything is built from it. The command line's parser reads all its YAML
through :func:`bounded_yaml` (its ``parser_mode``)."""

from __future__ import annotations

from typing import Any

import yaml

from circles.errors import ConfigError

# a config file, a sweep file or one command-line value: far more than any real one
MAX_BYTES = 1 << 20
# YAML nodes once aliases are expanded: a few lines of aliases can stand for billions
MAX_VALUES = 100_000
# the command line's sections of settings (circles.cli.SECTIONS' names; tests/test_inputs.py)
SECTIONS = (
    "data",
    "model",
    "checkpoint",
    "boundary",
    "chapter_log",
    "weights",
    "threads",
    "trainer",
)
# in one list or mapping: the longest a setting takes (hidden_sizes); jsonargparse's time grows with
# the square of a list's length (2,000 items: 10 s, 4,000: 30 s; tests/test_inputs.py)
MAX_ITEMS = 1_000


def check_yaml(text: str, field: str, where: str) -> None:
    """Refuse YAML ``text`` (given as ``field``, read from ``where``) that is larger than
    ``MAX_BYTES``, stands for more than ``MAX_VALUES`` values or has a list or mapping of more
    than ``MAX_ITEMS``; YAML that does not parse is left to the parser that reports it."""
    if len(text) > MAX_BYTES:
        raise ConfigError(
            field,
            f"at most {MAX_BYTES >> 20} MiB of YAML",
            where,
            f"It has {len(text):,} characters.",
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    except RecursionError:
        raise ConfigError(field, "YAML nested at most a few hundred levels deep", where) from None
    todo = [root] if root is not None else []
    count = 0
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                field,
                f"YAML that stands for at most {MAX_VALUES:,} values",
                where,
                "Its aliases (*name) expand to more.",
            )
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) and len(node.value) > MAX_ITEMS:
            raise ConfigError(
                field,
                f"YAML of lists and mappings of at most {MAX_ITEMS:,} items",
                where,
                f"Line {node.start_mark.line + 1} starts one of {len(node.value):,}.",
            )
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            todo.extend(part for pair in node.value for part in pair)


def bounded_yaml(text: str, path: str | None = None) -> Any:
    """jsonargparse's YAML loader, after :func:`check_yaml` (the command line's parser mode
    ``BOUNDED``): of a config file (``path``) or of a value."""
    from jsonargparse import get_loader

    where = str(path) if path else text if len(text) <= 80 else f"{text[:80]}..."
    check_yaml(text, "config" if path else "value", where)
    value = get_loader("yaml")(text)
    held = {type(None): "nothing", list: "a list", str: "a text", bool: "true or false"}
    # the file, then each section it gives: a mapping of settings (jsonargparse drops a section
    # given anything else, or fails on it with a traceback)
    parts = {"It": value} if not isinstance(value, dict) else {f"Its {k}:": value[k] for k in value}
    for part, given in parts.items() if path else ():
        if (part == "It" or part[4:-1] in SECTIONS) and not isinstance(given, dict):
            raise ConfigError(
                "config",
                "a YAML file of sections (data:, model:, trainer:, ...), each of settings",
                where,
                f"{part} holds {held.get(type(given), 'a number')}.",
            )
    return value


BOUNDED = "bounded_yaml"
