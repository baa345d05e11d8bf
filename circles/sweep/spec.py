"""Sweep files: a base config, fixed overrides and grids, expanded into named points."""

from __future__ import annotations

import hashlib
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
        return {
            "base": str(self.base.resolve()),
            "base_sha256": hashlib.sha256(self.base.read_bytes()).hexdigest()[:16],
            "overrides": json.loads(json.dumps(self.overrides(point), default=str)),
        }

    def cli_args(self, point: Point) -> list[str]:
        """The point's command line: ``fit`` with the base config, its overrides (strings as they
        are, everything else as JSON, a class before its init_args) and its own run directory."""
        overrides = sorted(
            self.overrides(point).items(), key=lambda kv: not kv[0].endswith("class_path")
        )
        return [
            "fit",
            "--config",
            str(self.base),
            *(f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides),
            f"--trainer.logger.init_args.save_dir={self.out}",
            f"--trainer.logger.init_args.name={RUNS}",
            f"--trainer.logger.init_args.version={point.name}",
            # HPARAMS opens on the settings that tell the points apart
            f"--trainer.logger.init_args.first_columns={json.dumps(self.keys)}",
        ]


def _dotted_mapping(value: Any, what: str, sweep_path: Path) -> dict[str, Any]:
    """``value`` checked to be a mapping of dotted config keys (``None`` is an empty one)."""
    if value is not None and (
        not isinstance(value, dict) or not all(isinstance(k, str) for k in value)
    ):
        raise SweepError(
            f"{sweep_path}: {what} must be a mapping of dotted config keys, got {value!r}."
        )
    return value or {}


def _expand(grids: Any, path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The union of the grids' cartesian products (``grids`` is one grid or a list of them), each
    point once, in the file's order (the last key of a grid varies fastest, so e.g. two noise
    levels of one setting sit side by side), and every key that varies."""
    points: dict[str, dict[str, Any]] = {}
    for i, grid in enumerate(grids if isinstance(grids, list) else [grids]):
        if not (grid := _dotted_mapping(grid, f"grid {i}", path)):
            raise SweepError(f"{path}: grid {i} names no config keys.")
        bad = (k for k, v in grid.items() if not isinstance(v, list) or not v)
        if (key := next(bad, None)) is not None:
            raise SweepError(
                f"{path}: grid {i}: {key} must be a non-empty list of values, got {grid[key]!r} "
                "(a list value is itself listed: [[10, 10]]; one value for all points goes in "
                "'fixed')."
            )
        if len(points) + (count := math.prod(map(len, grid.values()))) > MAX_POINTS:
            raise SweepError(
                f"{path}: a sweep has at most {MAX_POINTS:,} points; grid {i} alone has {count:,}."
            )
        for combo in (dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())):
            # a point listed twice runs once
            points.setdefault(json.dumps(combo, sort_keys=True), combo)
    if not points:
        raise SweepError(f"{path}: the grid has no points.")
    # every key some grid varies, in order of first appearance (each point has all its grid's)
    return list(points.values()), list(dict.fromkeys(k for p in points.values() for k in p))


def _read_yaml(path: Path) -> Any:
    """The sweep file's YAML, bounded (:func:`circles.inputs.check_yaml`); its errors as one
    line."""
    from circles.errors import ConfigError
    from circles.inputs import MAX_BYTES, check_yaml

    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} not found.")
    if path.stat().st_size > MAX_BYTES:
        raise SweepError(
            f"{path}: a sweep file is at most {MAX_BYTES >> 20} MiB; it has "
            f"{path.stat().st_size:,} bytes."
        )
    text = path.read_text(errors="replace")
    try:
        check_yaml(text, "sweep file", str(path))
        return yaml.safe_load(text)
    except ConfigError as err:
        raise SweepError(str(err)) from None
    except yaml.YAMLError as err:
        at = (
            f" at line {where.line + 1}, column {where.column + 1}"
            if (where := getattr(err, "problem_mark", None)) is not None
            else ""
        )
        raise SweepError(
            f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}."
        ) from None


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Parse a sweep file into its points; ``out`` defaults to ``sweeps/<file stem>`` in the
    working directory. A point's name is its index, then its settings
    (:func:`circles.runs.names.run_label`): ``03-relu-10x10-sgd0.1-e1000-n0.03``, shortened with
    a digest when long."""
    path = Path(path)
    if not isinstance(spec := _read_yaml(path) or {}, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(SWEEP_KEYS)}.")
    if unknown := set(spec) - SWEEP_KEYS:
        raise SweepError(
            f"{path}: unknown keys {sorted(unknown)}; a sweep file has {sorted(SWEEP_KEYS)} "
            "(config keys go under 'fixed' or 'grid')."
        )
    # the base config: absolute, or relative to the sweep file, the working directory or the
    # repository
    if not isinstance(base := spec.get("base"), str) or not base:
        raise SweepError(f"{path}: 'base' must name a config file, got {base!r}.")
    candidates = (
        [Path(base)]
        if Path(base).is_absolute()
        else [path.parent / base, Path(base), Path(__file__).resolve().parents[2] / base]
    )
    if (found := next((c for c in candidates if c.is_file()), None)) is None:
        raise SweepError(
            f"{path}: base config {base!r} not found (looked at {', '.join(map(str, candidates))})."
        )
    fixed = _dotted_mapping(spec.get("fixed"), "'fixed'", path)
    combos, keys = _expand(spec.get("grid"), path)
    if (columns := spec.get("columns")) is not None and (
        not isinstance(columns, int) or columns < 1
    ):
        raise SweepError(f"{path}: 'columns' must be a positive integer, got {columns!r}.")
    for key in ("regions", "layers"):
        if not isinstance(spec.get(key, False), bool):
            raise SweepError(f"{path}: '{key}' must be true or false, got {spec[key]!r}.")
    width = max(2, len(str(len(combos) - 1)))
    return Sweep(
        path,
        Path(os.path.normpath(found)),
        fixed,
        [
            Point(i, shortened("-".join([f"{i:0{width}d}", *([run_label(c)] if c else [])])), c)
            for i, c in enumerate(combos)
        ],
        keys,
        Path(out) if out is not None else Path("sweeps") / path.stem,
        columns,
        spec.get("regions", False),
        spec.get("layers", False),
    )
