"""What a SLURM job must agree on before the Trainer runs: the tasks SLURM started against the
ranks Lightning will wait for, checked once from the job's environment (by the command line
before it runs the Trainer, whose processes would otherwise wait for each other), so a wrong
allocation is one line and not a hang; and the hpc checkpoint a requeued job resumes from."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

from circles.errors import CirclesError, ConfigError, InputError
from circles.runs.checkpoints import JOB_KEY, load_checkpoint_file

# the way a command (a compare's too) starts its ranks
LAUNCH = (
    "srun in front of the command (srun python -m circles.cli fit ..., as "
    "scripts/slurm/train.sbatch does)"
)
# SLURM writes "2", or "2(x3)" for 2 on each of 3 nodes; never 0
COUNT = re.compile(r"([1-9]\d*)(?:\(x[1-9]\d*\))?")


def in_slurm_job(plugins: Any, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Lightning runs the ranks by SLURM's environment: inside a SLURM job that is not an
    interactive one (see :meth:`SLURMEnvironment.detect`), with no other cluster environment
    among the Trainer's ``plugins`` (instances, or a config's ``class_path`` entries)."""
    if "SLURM_NTASKS" not in environ or environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    plugins = plugins if isinstance(plugins, list) else [plugins] if plugins else []
    return not any(
        issubclass(k, ClusterEnvironment) and not issubclass(k, SLURMEnvironment)
        for k in map(_class_of, plugins)
    )


def _class_of(plugin: Any) -> type:
    """A plugin's class: an instance's, or the one a config's ``class_path`` names."""
    path = plugin.get("class_path") if hasattr(plugin, "get") else None
    if path is None:
        return type(plugin)
    module, _, name = str(path).rpartition(".")
    return getattr(importlib.import_module(module), name, object) if module else object


def slurm_count(environ: Mapping[str, str], variable: str, default: str = "1") -> int:
    """A count SLURM put in the environment (``4``; per node ``2(x3)`` or ``2,2``, equal on every
    node); a value that is none is refused naming the variable."""
    text = environ.get(variable, default).strip()
    counts = {int(m.group(1)) for part in text.split(",") if (m := COUNT.fullmatch(part.strip()))}
    if len(counts) != 1 or not all(COUNT.fullmatch(p.strip()) for p in text.split(",")):
        raise InputError(
            f"{variable} is {text!r}: not a count of tasks or nodes (the same on every node) that "
            "SLURM would write. Run inside a job SLURM started (srun), or unset the SLURM_* "
            "variables set by hand."
        )
    return counts.pop()


def check_slurm_launch(plugins: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Before the Trainer is built: refuse a launch in which the ranks would wait for tasks that
    never start.

    A process started without ``srun`` in a job of several tasks (the batch script's own shell
    has no job step) would wait for the others until the rendezvous timed out, and so would one
    whose SLURM variables were set by hand outside any job; with ``--ntasks`` alone, the ranks
    cannot know their tasks per node (Lightning refuses it too, advising a count per node that
    is the job's total)."""
    if not in_slurm_job(plugins, environ):
        return
    tasks = slurm_count(environ, "SLURM_NTASKS")
    if tasks <= 1:
        return
    job = environ.get("SLURM_JOB_ID", "?")
    if "SLURM_NTASKS_PER_NODE" not in environ:
        nodes = slurm_count(environ, "SLURM_NNODES", "1")
        per_node = tasks // nodes if nodes and tasks % nodes == 0 else "N"
        raise InputError(
            f"SLURM job {job} asks for --ntasks={tasks}, and the ranks need to know their tasks "
            f"per node: submit with --nodes={nodes} --ntasks-per-node={per_node} instead of "
            "--ntasks (tasks per node times nodes is the number of ranks)."
        )
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:  # srun sets them
        raise InputError(
            f"SLURM job {job} has {tasks} tasks (--ntasks-per-node times --nodes), but this "
            f"command runs outside srun, in the job's batch script: one process started where "
            f"{tasks} are expected, and it would wait for the others until the rendezvous timed "
            f"out. Start it with {LAUNCH}, or ask for one task (sbatch --ntasks=1)."
        )
    try:  # SLURM's controller knows the job a job step's environment names
        shown = subprocess.run(
            ["scontrol", "show", "job", job],
            env={**os.environ, **environ},
            capture_output=True,
            text=True,
            timeout=60,  # a controller that does not answer counts as no job
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        shown = ""
    if f"JobId={job}" not in shown.split():  # a word: job 1 is not JobId=12
        raise InputError(
            f"SLURM_NTASKS is {tasks} and SLURM_JOB_ID {job}, but SLURM knows no such job here "
            f"(scontrol show job {job} fails): the variables were set by hand, and the one process "
            f"started would wait for {tasks - 1} more forever. Unset the SLURM_* variables, or "
            f"start the ranks with {LAUNCH}."
        )


def check_slurm_allocation(
    devices: int, nodes: int, plugins: Any, environ: Mapping[str, str] = os.environ
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
        if variable not in environ:
            continue
        wanted = slurm_count(environ, variable)
        if wanted != value:
            raise InputError(
                f"trainer.{setting} is {value}, but {allocated.format(wanted)} "
                f"({flag}={wanted}){why}: set --trainer.{setting} {wanted} "
                "(scripts/slurm/train.sbatch sets it from the allocation: leave it out of the "
                f"script's arguments), or submit with {flag}={value}."
            )


def hpc_checkpoint(root: str | Path) -> Path | None:
    """The hpc checkpoint Lightning restores in a SLURM job (``hpc_ckpt_<n>.ckpt`` of the highest
    n in the trainer's ``default_root_dir``), if there is one."""
    numbered = [
        (int(path.stem[len("hpc_ckpt_") :]), path)
        for path in Path(root).glob("hpc_ckpt_*.ckpt")
        if path.stem[len("hpc_ckpt_") :].isdigit()
    ]
    return max(numbered)[1] if numbered else None


def slurm_job(environ: Mapping[str, str] = os.environ) -> str | None:
    """The SLURM job this process runs in, as Lightning's requeue names it (an array task's
    ``JOB_TASK``); None outside a batch job Lightning takes its ranks from."""
    if not SLURMEnvironment.detect():
        return None
    array = environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{environ.get('SLURM_ARRAY_TASK_ID')}" if array else environ.get("SLURM_JOB_ID")


def hpc_resume(root: str | Path, ckpt_path: str | None) -> Path | None:
    """The hpc checkpoint (in the trainer's ``default_root_dir``, ``root``) that a command takes
    up: the one ``ckpt_path hpc`` names, or, for a command without a checkpoint inside a SLURM
    job, the one its own job wrote (it was requeued and resumes; another job's is refused, as
    Lightning would restore any it finds); None where neither applies."""
    hpc = hpc_checkpoint(root)
    if ckpt_path == "hpc" and hpc is None:
        raise ConfigError(
            "ckpt_path",
            "'hpc' only where a SLURM requeue saved one (hpc_ckpt_N.ckpt in "
            "trainer.default_root_dir)",
            ckpt_path,
            "There is none; give 'last' or a checkpoint file.",
        )
    if ckpt_path == "hpc" or hpc is None or ckpt_path is not None or slurm_job() is None:
        return hpc if ckpt_path == "hpc" else None
    job = slurm_job()
    written_by = load_checkpoint_file(hpc).get(JOB_KEY) if hpc.is_file() else None
    if written_by == job:
        return hpc
    raise ConfigError(
        "trainer.default_root_dir",
        f"a folder without another job's hpc checkpoint for SLURM job {job}",
        str(hpc.parent),
        f"It holds {hpc.name}, written by "
        + (f"SLURM job {written_by}" if written_by else "a job that did not record itself")
        + ": Lightning would restore it into this run. Give "
        f"--ckpt_path {hpc} to continue that run (its settings are checked as any checkpoint's), "
        "or another --trainer.default_root_dir.",
    )


def final_weights(root: str | Path, last: str | None) -> str | None:
    """What a fit's test evaluates: the weights the fit ended with (None: the module's own), or,
    in a SLURM job whose folder (``root``) holds an hpc checkpoint (Lightning would test that
    instead), ``last``: the ``last.ckpt`` that holds the fit's end, if one does."""
    if slurm_job() is None or hpc_checkpoint(root) is None:
        return None
    if last is not None:
        return last
    raise CirclesError(
        f"The fit's test would evaluate the hpc checkpoint in {root} instead of the final "
        "weights (no last.ckpt holds them). Test them with: test --ckpt_path last."
    )
