"""The shape of the code itself: every overridden hook says so, and no module, class or function
outgrows what a reader takes in at once."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import runpy
from pathlib import Path

import pytest

import circles

PACKAGE = Path(circles.__file__).parent
# Statements, nested ones included: what a reader takes in, whatever the formatter's line breaks.
LIMITS = {"module": 300, "class": 150, "function": 40}


def modules() -> list[str]:
    return [
        "circles",
        *(
            m.name
            for m in pkgutil.walk_packages([str(PACKAGE)], "circles.")
            if not m.name.endswith("__main__")
        ),
    ]


def statements(node: ast.AST) -> int:
    """The statements inside ``node`` (a module's, a class's or a function's body, at any depth)."""
    inside = sum(isinstance(n, ast.stmt) for n in ast.walk(node))
    return inside if isinstance(node, ast.Module) else inside - 1


def sizes() -> list[tuple[str, str, int]]:
    """(kind, name, statements) of every module, class and function in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(PACKAGE.parent)
        found.append(("module", str(where), statements(tree)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                found.append((kind, f"{where}:{node.name}", statements(node)))
    return found


@pytest.mark.parametrize("kind", LIMITS)
def test_nothing_outgrows_its_limit(kind):
    too_long = [(name, lines) for k, name, lines in sizes() if k == kind and lines > LIMITS[kind]]
    assert not too_long, f"{kind}s over {LIMITS[kind]} statements: {too_long}"


def test_every_overridden_method_is_marked_override():
    """``@override`` on every method that replaces one of a base class (Lightning's hooks above
    all), so that a base class adding or renaming a hook is visible where it matters
    (``ModelCheckpoint.on_train_end`` was added under a subclass that already had one)."""
    unmarked = []
    for name in modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name:
                continue
            for attr, value in vars(cls).items():
                function = value.fget if isinstance(value, property) else value
                if (
                    not callable(function)
                    or attr.startswith("__")
                    or isinstance(value, (staticmethod, classmethod))
                ):
                    continue
                overrides = any(
                    attr in vars(base) for base in cls.__mro__[1:] if base is not object
                )
                if overrides and not getattr(function, "__override__", False):
                    unmarked.append(f"{name}.{cls.__name__}.{attr}")
    assert not unmarked, f"overriding without @override: {unmarked}"


def test_the_package_keeps_its_size_budgets():
    """``scripts/budgets.py``'s sizes: the statements of circles/ and of circles/cli/, the longest
    module and the longest class in lines, each within the budget the script declares."""
    budgets = runpy.run_path(str(PACKAGE.parent / "scripts" / "budgets.py"))
    found = {
        "statements in circles/": sum(budgets["statements"](p) for p in PACKAGE.rglob("*.py")),
        "statements in circles/cli/": sum(
            budgets["statements"](p) for p in (PACKAGE / "cli").rglob("*.py")
        ),
        **{key: lines for key, (_, lines) in budgets["longest"]().items()},
    }
    over = {key: (value, budgets["BUDGETS"][key]) for key, value in found.items()}
    assert all(value <= budget for value, budget in over.values()), over


def test_no_test_is_decided_by_a_clock():
    """Hypothesis runs without a deadline (conftest's profile) and no test sets one again: a busy
    machine only takes longer."""
    from hypothesis import settings

    assert settings.default.deadline is None
    deadlines = [
        f"{path.name}:{node.lineno}"
        for path in (PACKAGE.parent / "tests").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.keyword)
        and node.arg == "deadline"
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ]
    assert not deadlines


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as
    hyphens (``## Width or depth? Why ...`` -> ``width-or-depth-why-...``)."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize(
    "page",
    [
        "README.md",
        *sorted(str(p.relative_to(PACKAGE.parent)) for p in (PACKAGE.parent / "docs").glob("*.md")),
    ],
)
def test_every_link_of_the_docs_reaches_a_file_and_a_heading_there(page):
    """README and docs/ link each other by file and section: after a section moves, every link
    still lands (a file that exists, a heading of it that the anchor names)."""
    import re

    source = PACKAGE.parent / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"[a-z]+:", target):  # a web address
            continue
        path, _, anchor = target.partition("#")
        linked = (source.parent / path) if path else source
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            if anchor not in {_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page} links nowhere: {broken}"
