"""Shared fixtures: every test runs in its own temporary directory, on the CPU, with tiny
settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from helpers import REPO, TINY, evaluation_dirs, exit_status, fit_in, processes, run_dir, run_names

if "PYTEST_XDIST_WORKER" in os.environ:
    # One torch thread per test worker (and per process a test starts): the workers share the
    # machine's cores, and threads that outnumber them wait on each other. The models here are too
    # small for a second thread to change any result (the README's runs are bitwise the same).
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


# No clock decides a test: a busy machine only takes longer (Hypothesis' 200 ms deadline failed
# tests/test_bayes.py on one). Each test's own settings keep this unless they set a deadline, which
# tests/test_code.py forbids.
settings.register_profile("circles", deadline=None)
settings.load_profile("circles")


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test inside its own temporary directory, so ``lightning_logs/`` never lands in
    the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run_cli(tmp_path: Path):
    """``python train.py ARGS`` in-process (:func:`helpers.exit_status`), which must succeed;
    returns the newest run directory of the subcommand's kind (a fit's, or an evaluation's: in its
    trained run's ``evaluations`` folder), or None."""

    def run(*args: str) -> Path | None:
        assert exit_status(*args) == 0, f"{' '.join(args)} failed"
        runs = tmp_path / "lightning_logs"
        if args and args[0] in ("validate", "test", "predict"):
            evaluations = evaluation_dirs(runs)
            return evaluations[-1] if evaluations else None
        names = run_names(runs) if runs.is_dir() else []
        return run_dir(runs, int(names[-1])) if names else None

    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one finished tiny run (``lightning_logs/0000-...``), made once per test
    process; tests that change what is in it copy it first."""
    directory = tmp_path_factory.mktemp("tiny_run")
    fit_in(directory, *TINY)
    return directory


SLURM_CLUSTER = REPO / "scripts" / "slurm" / "local_cluster"


def slurm_state() -> str:
    return os.environ.get("CIRCLES_SLURM_STATE", "/tmp/circles-slurm")


def slurm_leftovers(state: str) -> list[str]:
    """What of the local cluster of ``state`` is still on this host: its nodes' network
    namespaces, its bridge, their mounts, its daemons and job processes (names as
    scripts/slurm/local_cluster/names.sh makes them)."""
    net = subprocess.run(
        ["bash", "-c", f'. "{SLURM_CLUSTER}/names.sh" && echo "$NET"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    left = [f"network namespace {name}" for name in netns if name.startswith(f"{net}-n")]
    if subprocess.run(["ip", "link", "show", net], capture_output=True).returncode == 0:
        left.append(f"bridge {net}")
    left += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if f"/netns/{net}-" in line or state in line
    ]
    conf = f"{state}/etc/slurm.conf"
    left += [
        f"process {pid} ({comm})"
        for pid, comm, environ, cmdline in processes()
        if environ.get("SLURM_CONF") == conf
        and "SLURM_JOB_ID" in environ  # a job's
        or comm in ("slurmd", "slurmctld", "munged", "slurmstepd")
        and state in " ".join(cmdline)
    ]
    return left


@pytest.fixture(scope="session")
def slurm_env():
    """A real SLURM cluster of two nodes on this host (scripts/slurm/local_cluster), up for the
    session; yields the environment that sbatch, scontrol and scancel need (and that jobs inherit:
    this Python first on PATH). The tests that use it are marked ``run_if(slurm=True)``. At the
    end it is taken down, twice (down.sh is idempotent), and nothing of it may be left: no
    namespace, interface, mount or process."""
    state = slurm_state()
    up = subprocess.run([str(SLURM_CLUSTER / "up.sh"), state], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"could not start the local SLURM cluster:\n{up.stderr[-4000:]}")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    yield {**os.environ, "SLURM_CONF": f"{state}/etc/slurm.conf", "PATH": path}
    for _ in range(2):
        down = subprocess.run(
            [str(SLURM_CLUSTER / "down.sh"), state], capture_output=True, text=True
        )
        assert down.returncode == 0, down.stderr
    assert slurm_leftovers(state) == []
