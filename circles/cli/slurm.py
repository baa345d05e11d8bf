"""What a SLURM job must agree on before the Trainer starts: the tasks SLURM started against the
ranks Lightning will wait for, checked once from the job's environment, so a wrong allocation is
one line and not a hang."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

from circles.errors import CirclesError

LAUNCH = "srun python -m circles.cli fit ... (as scripts/slurm/train.sbatch does)"


class AllocationError(CirclesError):
    """A SLURM allocation that the run's ranks cannot fill: the message names the setting and the
    fix."""

    exit_code = 2


def in_slurm_job(plugins: Iterable[Any], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Lightning runs the ranks by SLURM's environment: inside a SLURM job that is not an
    interactive one (see :meth:`SLURMEnvironment.detect`), with no other cluster environment
    among the Trainer's ``plugins``."""
    if any(
        isinstance(p, ClusterEnvironment) and not isinstance(p, SLURMEnvironment) for p in plugins
    ):
        return False
    return "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )


def check_slurm_launch(plugins: Iterable[Any], environ: Mapping[str, str] = os.environ) -> None:
    """Before the Trainer is built: refuse a launch in which the ranks would wait for tasks that
    never start.

    A process started without ``srun`` in a job of several tasks (the batch script's own shell
    has no job step) would wait for the others until the rendezvous timed out; ``--ntasks``
    without ``--ntasks-per-node`` makes Lightning raise while building the Trainer, with a
    traceback."""
    if not in_slurm_job(plugins, environ) or int(environ["SLURM_NTASKS"]) <= 1:
        return
    tasks = int(environ["SLURM_NTASKS"])
    job = environ.get("SLURM_JOB_ID", "?")
    # srun sets both; the batch shell neither
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:
        raise AllocationError(
            f"SLURM job {job} has {tasks} tasks (--ntasks-per-node times --nodes), but this "
            "command runs outside "
            f"srun, in the job's batch script: one process started where {tasks} are expected, and "
            "it would wait "
            f"for the others until the rendezvous timed out. Start it with {LAUNCH}, or ask for "
            "one task "
            "(sbatch --ntasks=1)."
        )
    if "SLURM_NTASKS_PER_NODE" not in environ:
        nodes = int(environ.get("SLURM_NNODES", "1"))
        per_node = f"{tasks // nodes}" if tasks % nodes == 0 else "N"
        raise AllocationError(
            f"SLURM job {job} asks for --ntasks={tasks}, and the ranks need to know their tasks "
            "per node: submit "
            f"with --nodes={nodes} --ntasks-per-node={per_node} instead of --ntasks "
            "(trainer.devices then follows "
            "it, as scripts/slurm/train.sbatch sets it)."
        )


def check_slurm_allocation(
    devices: int, nodes: int, plugins: Iterable[Any], environ: Mapping[str, str] = os.environ
) -> None:
    """Once the Trainer has resolved its ``devices`` per node and ``nodes``: they are the job's
    tasks per node and nodes, one rank per task (Lightning checks this only when a DDP strategy
    starts, with a traceback; a single-device run would train once per task, all into one run
    directory)."""
    if not in_slurm_job(plugins, environ):
        return
    job = environ.get("SLURM_JOB_ID", "?")
    for setting, value, variable, flag, allocated, why in (
        (
            "devices",
            devices,
            "SLURM_NTASKS_PER_NODE",
            "--ntasks-per-node",
            "SLURM starts {} task(s) per node",
            ", one rank per device",
        ),
        (
            "num_nodes",
            nodes,
            "SLURM_NNODES",
            "--nodes",
            f"SLURM job {job} runs on {{}} node(s)",
            "",
        ),
    ):
        wanted = environ.get(variable)
        if wanted is not None and int(wanted) != value:
            raise AllocationError(
                f"trainer.{setting} is {value}, but {allocated.format(wanted)} "
                f"({flag}={wanted}){why}: set "
                f"--trainer.{setting} {wanted} (scripts/slurm/train.sbatch sets it from the "
                "allocation: leave it out "
                f"of the script's arguments), or submit with {flag}={value}."
            )
