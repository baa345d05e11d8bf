"""The code's budgets, measured: statements in circles/ and in circles/cli/, the longest modules
and classes (lines), and how many of the project's functions run before the first training step of
README's main job (``fit --config configs/relu.yaml``, traced in this process).

    python scripts/budgets.py          # the table; exit status 1 if a budget is exceeded
    python scripts/budgets.py --json   # the figures as JSON (tests/test_code.py reads them)

A "function" is any code object of circles/ that runs, a class body included (importing a module
of classes runs each class's body), module bodies, lambdas and comprehensions not: 180 of them at
6512d50. Statements are counted as tests/test_code.py counts them (``ast.stmt`` nodes, nested ones
included)."""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "circles"
BUDGETS = {
    "statements in circles/": 4600,
    "statements in circles/cli/": 350,
    "lines of the longest module": 400,
    "lines of the longest class": 170,
    "functions before the first training step": 80,
}


def statements(path: Path) -> int:
    return sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(path.read_text())))


def longest() -> dict[str, tuple[str, int]]:
    """The longest module and the longest class, in lines."""
    modules, classes = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(REPO))
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                classes.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    (module_lines, module), (class_lines, cls) = max(modules), max(classes)
    return {
        "lines of the longest module": (module, module_lines),
        "lines of the longest class": (cls, class_lines),
    }


class FirstStep(Exception):
    """Raised by the tracer at the first training step: nothing of the run is needed after it."""


def functions_before_first_step() -> list[str]:
    """The project's functions that run from ``import circles.cli`` to the first
    ``training_step`` of ``fit --config configs/relu.yaml`` (in a temporary folder)."""
    seen: dict[str, None] = {}
    prefix = str(PACKAGE) + os.sep

    def trace(frame, event, arg):  # noqa: ANN001, ANN202 - sys.setprofile's signature
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(prefix):
            return
        if code.co_name == "training_step":
            sys.setprofile(None)
            raise FirstStep
        if not code.co_name.startswith("<"):
            where = code.co_filename[len(prefix) :]
            seen.setdefault(f"{where}:{code.co_firstlineno}:{code.co_qualname}", None)

    config = str(REPO / "configs" / "relu.yaml")
    with tempfile.TemporaryDirectory() as root:
        sys.setprofile(trace)
        try:
            from circles.cli import cli_main

            cli_main(["fit", "--config", config, f"--trainer.default_root_dir={root}"])
        except (FirstStep, SystemExit):
            pass
        finally:
            sys.setprofile(None)
    return list(seen)


def measure() -> dict[str, object]:
    found = {
        "statements in circles/": sum(statements(p) for p in PACKAGE.rglob("*.py")),
        "statements in circles/cli/": sum(statements(p) for p in (PACKAGE / "cli").rglob("*.py")),
    }
    found.update({key: lines for key, (_, lines) in longest().items()})
    functions = functions_before_first_step()
    found["functions before the first training step"] = len(functions)
    return {"figures": found, "longest": longest(), "functions": functions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument("--functions", action="store_true", help="list the traced functions")
    args = parser.parse_args()
    measured = measure()
    figures = measured["figures"]
    assert isinstance(figures, dict)
    if args.json:
        print(json.dumps(measured))
        return 0
    over = False
    for key, budget in BUDGETS.items():
        value = figures[key]
        over |= value > budget
        print(f"{key:45} {value:6}  budget {budget:5}  {'OVER' if value > budget else 'ok'}")
    for key, (name, lines) in measured["longest"].items():  # type: ignore[attr-defined]
        print(f"  {key}: {name} ({lines})")
    if args.functions:
        print("\n".join(measured["functions"]))  # type: ignore[arg-type]
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
