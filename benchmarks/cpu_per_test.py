"""A pytest plugin that writes the CPU seconds of every test: where the suite's time goes when
the machine is saturated (``--durations`` gives wall time, which a busy neighbour inflates).

    PYTHONPATH=benchmarks python -m pytest -p cpu_per_test -n auto --dist loadgroup
    python benchmarks/cpu_per_test.py cpu_per_test.tsv      # the files and tests that cost most

Each line of ``cpu_per_test.tsv`` (``CPU_PER_TEST`` names another file): the test process's own
CPU seconds, its reaped children's (``python train.py`` subprocesses, DDP ranks, sweep workers),
the wall seconds, the test's id. Processes a test does not reap are not counted: those of the
SLURM cluster's jobs, and those killed with their process group."""

from __future__ import annotations

import collections
import os
import resource
import sys
import time
from collections.abc import Iterator

import pytest

LOG = os.environ.get("CPU_PER_TEST", "cpu_per_test.tsv")


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    (own, children), start = _cpu(), time.perf_counter()
    yield
    (own_after, children_after), wall = _cpu(), time.perf_counter() - start
    with open(os.path.join(str(item.config.invocation_params.dir), LOG), "a") as f:
        f.write(
            f"{own_after - own:.2f}\t{children_after - children:.2f}\t{wall:.2f}\t{item.nodeid}\n"
        )


def summary(path: str, top: int = 20) -> None:
    """The CPU seconds by test file, then the ``top`` tests."""
    rows = []
    with open(path) as f:
        for line in f:
            own, children, wall, test = line.rstrip("\n").split("\t")
            rows.append((float(own) + float(children), float(own), float(children), test))
    by_file: dict[str, float] = collections.Counter()
    for cpu, _, _, test in rows:
        by_file[test.split("::")[0]] += cpu
    print(f"{sum(r[0] for r in rows):.0f} CPU seconds in {len(rows)} tests")
    for name, cpu in sorted(by_file.items(), key=lambda kv: -kv[1]):
        print(f"{cpu:8.1f}  {name}")
    print()
    for cpu, own, children, test in sorted(rows, reverse=True)[:top]:
        print(f"{cpu:8.1f}  ({own:.1f} own, {children:.1f} children)  {test}")


if __name__ == "__main__":
    summary(sys.argv[1] if len(sys.argv) > 1 else LOG)
