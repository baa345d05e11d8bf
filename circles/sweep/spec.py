"""Sweep files: a base config, fixed overrides and grids, expanded into named points."""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from circles.runs.names import run_label, shortened

MAX_POINTS = 10_000
RUNS = "runs"  # the TensorBoard logger's ``name``: run directories are DIR/runs/<point name>
SWEEP_KEYS = {"base", "fixed", "grid", "columns", "regions", "layers"}


class SweepError(ValueError):
    """A sweep file or command line that cannot be run; the message says what to change."""


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its index, its name (also its run directory) and the overrides of
    its grid."""

    index: int
    name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: the base config, the fixed overrides, the points and where their runs
    go."""

    path: Path
    base: Path
    fixed: dict[str, Any]
    points: list[Point]
    keys: list[str]  # every key some grid varies, in order of first appearance
    out: Path
    columns: int | None = None
    # each point's members' class-1 regions decided exactly (circles.model.regions)
    regions: bool = False
    # the report's layers.png: what each hidden layer of each point does to the plane
    layers: bool = False

    def run_dir(self, point: Point) -> Path:
        """The point's run directory (its TensorBoard logger's ``log_dir``)."""
        return self.out / RUNS / point.name

    def overrides(self, point: Point) -> dict[str, Any]:
        """Everything the point sets on top of the base config: the fixed overrides, then its
        grid values."""
        return {**self.fixed, **point.settings}

    def identity(self, point: Point) -> dict[str, Any]:
        """What makes the point the point it is: every setting it trains with, the base config by
        its content as well as its place (a point with the same name but other settings is
        another point)."""
        import hashlib

        content = hashlib.sha256(self.base.read_bytes()).hexdigest()[:16]
        return {
            "base": str(self.base.resolve()),
            "base_sha256": content,
            "overrides": json.loads(json.dumps(self.overrides(point), default=str)),
        }

    def cli_args(self, point: Point) -> list[str]:
        """The point's command line: ``fit`` with the base config, its overrides and its own run
        directory."""
        overrides = self.overrides(point)
        # a class before its init_args
        keys = sorted(overrides, key=lambda k: not k.endswith("class_path"))
        return [
            "fit",
            "--config",
            str(self.base),
            *(f"--{k}={_cli_value(overrides[k])}" for k in keys),
            f"--trainer.logger.init_args.save_dir={self.out}",
            f"--trainer.logger.init_args.name={RUNS}",
            f"--trainer.logger.init_args.version={point.name}",
            # HPARAMS opens on the settings that tell the points apart
            f"--trainer.logger.init_args.first_columns={json.dumps(self.keys)}",
        ]


def _cli_value(value: Any) -> str:
    """A value as jsonargparse reads it back: strings as they are, everything else as JSON
    (lists, null, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def point_name(index: int, settings: dict[str, Any], width: int) -> str:
    """``03-relu-10x10-sgd0.1-e1000-n0.03``: the index, then the point's settings
    (:func:`circles.names.run_label`), shortened with a digest when long."""
    return shortened("-".join([f"{index:0{width}d}", *([run_label(settings)] if settings else [])]))


def _resolve_base(base: Any, sweep_path: Path) -> Path:
    """The base config: absolute, or relative to the sweep file, the working directory or the
    repository."""
    if not isinstance(base, str) or not base:
        raise SweepError(f"{sweep_path}: 'base' must name a config file, got {base!r}.")
    repo = Path(__file__).resolve().parents[2]
    candidates = (
        [Path(base)]
        if Path(base).is_absolute()
        else [sweep_path.parent / base, Path(base), repo / base]
    )
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.normpath(candidate))
    raise SweepError(
        f"{sweep_path}: base config {base!r} not found (looked at "
        f"{', '.join(map(str, candidates))})."
    )


def _dotted_mapping(value: Any, what: str, sweep_path: Path) -> dict[str, Any]:
    """``value`` checked to be a mapping of dotted config keys (``None`` is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SweepError(
            f"{sweep_path}: {what} must be a mapping of dotted config keys, got {value!r}."
        )
    return value


def _expand(grids: list[Any], path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The union of the grids' cartesian products, each point once, in the file's order (the last
    key of a grid varies fastest, so e.g. two noise levels of one setting sit side by side), and
    every key that varies."""
    points: dict[str, dict[str, Any]] = {}
    keys: list[str] = []
    for i, grid in enumerate(grids):
        grid = _dotted_mapping(grid, f"grid {i}", path)
        if not grid:
            raise SweepError(f"{path}: grid {i} names no config keys.")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(
                    f"{path}: grid {i}: {key} must be a non-empty list of values, got {values!r} "
                    "(a list value is itself listed: [[10, 10]]; one value for all points goes in "
                    "'fixed')."
                )
            keys += [key] if key not in keys else []
        count = math.prod(len(values) for values in grid.values())
        if len(points) + count > MAX_POINTS:
            raise SweepError(
                f"{path}: a sweep has at most {MAX_POINTS:,} points; grid {i} alone has {count:,}."
            )
        for values in itertools.product(*grid.values()):
            combo = dict(zip(grid, values, strict=True))
            # a point listed twice runs once
            points.setdefault(json.dumps(combo, sort_keys=True), combo)
    return list(points.values()), keys


def _read_yaml(path: Path) -> Any:
    """The sweep file's YAML, bounded (:func:`circles.inputs.check_yaml`); its errors as one
    line."""
    from circles.errors import ConfigError
    from circles.inputs import MAX_BYTES, check_yaml

    if path.stat().st_size > MAX_BYTES:
        raise SweepError(
            f"{path}: a sweep file is at most {MAX_BYTES >> 20} MiB; it has "
            f"{path.stat().st_size:,} "
            "bytes."
        )
    text = path.read_text(errors="replace")
    try:
        check_yaml(text, "sweep file", str(path))
        return yaml.safe_load(text)
    except ConfigError as err:
        raise SweepError(str(err)) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise SweepError(
            f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}."
        ) from None


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Parse a sweep file into its points; ``out`` defaults to ``sweeps/<file stem>`` in the
    working directory."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} not found.")
    spec = _read_yaml(path) or {}
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(SWEEP_KEYS)}.")
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise SweepError(
            f"{path}: unknown keys {sorted(unknown)}; a sweep file has {sorted(SWEEP_KEYS)} "
            "(config keys go under 'fixed' or 'grid')."
        )
    base = _resolve_base(spec.get("base"), path)
    fixed = _dotted_mapping(spec.get("fixed"), "'fixed'", path)
    grids = spec.get("grid")
    combos, keys = _expand(grids if isinstance(grids, list) else [grids], path)
    if not combos:
        raise SweepError(f"{path}: the grid has no points.")
    columns = spec.get("columns")
    if columns is not None and (not isinstance(columns, int) or columns < 1):
        raise SweepError(f"{path}: 'columns' must be a positive integer, got {columns!r}.")
    regions, layers = (spec.get(key, False) for key in ("regions", "layers"))
    for key, value in (("regions", regions), ("layers", layers)):
        if not isinstance(value, bool):
            raise SweepError(f"{path}: '{key}' must be true or false, got {value!r}.")
    width = max(2, len(str(len(combos) - 1)))
    points = [Point(i, point_name(i, combo, width), combo) for i, combo in enumerate(combos)]
    return Sweep(
        path,
        base,
        fixed,
        points,
        keys,
        Path(out) if out is not None else Path("sweeps") / path.stem,
        columns,
        regions,
        layers,
    )
