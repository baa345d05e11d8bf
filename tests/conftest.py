"""Shared fixtures: every test runs in its own temporary directory, on the CPU, with tiny settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circles.cli import cli_main

from helpers import QUIET, REPO, evaluation_dirs, processes, run_dir, run_names

SLURM_OPT_IN = (
    "SLURM tests are opt-in: set CIRCLES_TEST_SLURM=1 to run them on a local cluster of two nodes (needs "
    "root; installs SLURM with apt-get when missing); .ci/run sets it"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test inside its own temporary directory, so ``lightning_logs/`` never lands in the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run_cli(tmp_path: Path):
    """Call the CLI in-process, like ``python train.py ARGS``; returns the newest run directory of the subcommand's
    kind (a fit's, or an evaluation's: in its trained run's ``evaluations`` folder), or None."""

    def run(*args: str) -> Path | None:
        cli_main(
            [*args, *QUIET]
            if args and args[0] in ("fit", "validate", "test", "predict")
            else list(args)
        )
        runs = tmp_path / "lightning_logs"
        if args and args[0] in ("validate", "test", "predict"):
            evaluations = evaluation_dirs(runs)
            return evaluations[-1] if evaluations else None
        names = run_names(runs) if runs.is_dir() else []
        return run_dir(runs, int(names[-1])) if names else None

    return run


SLURM_CLUSTER = REPO / "scripts" / "slurm" / "local_cluster"


def slurm_state() -> str:
    return os.environ.get("CIRCLES_SLURM_STATE", "/tmp/circles-slurm")


def slurm_leftovers(state: str) -> list[str]:
    """What of the local cluster of ``state`` is still on this host: its nodes' network namespaces, its bridge, their
    mounts, its daemons and job processes (names as scripts/slurm/local_cluster/names.sh makes them)."""
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
    """A real SLURM cluster of two nodes on this host (scripts/slurm/local_cluster), up for the session; yields the
    environment that sbatch, scontrol and scancel need (and that jobs inherit: this Python first on PATH). Opt-in:
    skips unless ``CIRCLES_TEST_SLURM=1``. At the end it is taken down, twice (down.sh is idempotent), and nothing of
    it may be left: no namespace, interface, mount or process."""
    if os.environ.get("CIRCLES_TEST_SLURM") != "1":
        pytest.skip(SLURM_OPT_IN)
    if os.geteuid() != 0:
        pytest.skip("bringing up slurmctld/slurmd and the nodes' network namespaces needs root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    state = slurm_state()
    up = subprocess.run(
        [str(SLURM_CLUSTER / "up.sh"), state], capture_output=True, text=True, timeout=600
    )
    if up.returncode != 0:
        pytest.fail(f"could not start the local SLURM cluster:\n{up.stderr[-4000:]}")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    yield {**os.environ, "SLURM_CONF": f"{state}/etc/slurm.conf", "PATH": path}
    for _ in range(2):
        down = subprocess.run(
            [str(SLURM_CLUSTER / "down.sh"), state], capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr
    assert slurm_leftovers(state) == []
