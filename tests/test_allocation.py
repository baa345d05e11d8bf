"""The SLURM allocation checks (circles/slurm.py) from the job's environment alone, without a
cluster: every combination of nodes, tasks per node and the trainer's devices and num_nodes; the
CLI refusing a launch in one line before it writes anything. (tests/test_slurm.py runs the same
refusals as real jobs.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

from circles.runs.slurm import (
    InputError,
    check_slurm_allocation,
    check_slurm_launch,
    slurm_count,
)

from helpers import TINY, error_lines, exit_status

counts = st.integers(min_value=1, max_value=8)


@pytest.fixture(scope="module", autouse=True)
def slurm_knows_job_7(tmp_path_factory):
    """An ``scontrol`` first on PATH that knows job 7 and no other, as a cluster's controller
    would answer ``scontrol show job``."""
    folder = tmp_path_factory.mktemp("bin")
    scontrol = folder / "scontrol"
    scontrol.write_text(
        '#!/bin/sh\n[ "$1 $2 $3" = "show job 7" ] && echo "JobId=7 JobName=train" && exit 0\n'
        'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n'
    )
    scontrol.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        yield


def job(nodes: int, per_node: int | None, step: bool = True, name: str = "train") -> dict[str, str]:
    """The environment of a task of a SLURM job (``step``: started by srun; ``per_node`` None:
    ``--ntasks``)."""
    env = {
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NAME": name,
        "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS": str(nodes * (per_node or 1)),
    }
    if per_node is not None:
        env["SLURM_NTASKS_PER_NODE"] = str(per_node)
    if step:
        env["SLURM_STEP_ID"] = "0"
    return env


@given(nodes=counts, per_node=counts, devices=counts, num_nodes=counts)
def test_the_trainer_must_have_one_rank_per_task_on_as_many_nodes(
    nodes, per_node, devices, num_nodes
):
    env = job(nodes, per_node)
    # started by srun, with tasks per node: nothing to refuse before the Trainer
    check_slurm_launch([], env)
    if devices == per_node and num_nodes == nodes:
        check_slurm_allocation(devices, num_nodes, [], env)
        return
    with pytest.raises(InputError) as err:
        check_slurm_allocation(devices, num_nodes, [], env)
    if devices != per_node:  # the devices first: the one a user sets most
        assert str(err.value).startswith(
            f"trainer.devices is {devices}, but SLURM starts {per_node} task(s)"
        )
        assert f"set --trainer.devices {per_node} " in str(err.value)
    else:
        assert str(err.value).startswith(
            f"trainer.num_nodes is {num_nodes}, but SLURM job 7 runs on {nodes} node"
        )
        assert f"set --trainer.num_nodes {nodes} " in str(err.value)
    assert "\n" not in str(err.value)


@given(nodes=counts, per_node=counts)
def test_a_job_of_several_tasks_outside_srun_is_refused_and_one_task_is_not(nodes, per_node):
    env = job(nodes, per_node, step=False)
    if nodes * per_node == 1:
        check_slurm_launch([], env)
        return
    with pytest.raises(
        InputError, match=rf"^SLURM job 7 has {nodes * per_node} tasks .* runs outside srun"
    ):
        check_slurm_launch([], env)


def test_ntasks_without_tasks_per_node_is_refused_with_the_count_per_node(monkeypatch, capfd):
    """``--ntasks`` without ``--ntasks-per-node`` is refused before the Trainer is built (whose
    own refusal would advise the job's total as the count per node), naming the counts to give."""
    env = job(2, None)
    env["SLURM_NTASKS"] = "4"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert exit_status("fit", *TINY) == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith("circles: error: SLURM job ") and "asks for --ntasks=4" in line
    assert "submit with --nodes=2 --ntasks-per-node=2 instead of --ntasks" in line
    assert not Path("lightning_logs").exists()


@pytest.mark.parametrize(
    "env, plugins",
    [
        ({}, []),  # not in a SLURM job
        # an interactive allocation: Lightning launches the ranks itself
        (
            job(2, 2, step=False, name="bash"),
            [],
        ),
        (job(2, 2, step=False, name="interactive"), []),
        # the user chose another cluster environment
        (
            job(2, 2, step=False),
            [LightningEnvironment()],
        ),
    ],
    ids=["no job", "bash", "interactive", "another environment"],
)
def test_where_lightning_does_not_use_slurms_environment_nothing_is_checked(env, plugins):
    check_slurm_launch(plugins, env)
    check_slurm_allocation(1, 1, plugins, env)


def test_slurms_own_environment_as_a_plugin_is_checked():
    with pytest.raises(InputError):
        check_slurm_launch([SLURMEnvironment()], job(1, 2, step=False))


@pytest.mark.parametrize(
    "env, args, expected",
    [
        (
            job(1, 2, step=False),
            [],
            "SLURM job 7 has 2 tasks (--ntasks-per-node times --nodes), but this command runs "
            "outside srun",
        ),
        (
            job(1, 2),
            ["--trainer.devices=1"],
            "trainer.devices is 1, but SLURM starts 2 task(s) per node",
        ),
        (job(2, 1), [], "trainer.num_nodes is 1, but SLURM job 7 runs on 2 node(s)"),
    ],
    ids=["no srun", "devices", "num_nodes"],
)
def test_the_cli_refuses_the_launch_in_one_line_before_it_writes_anything(
    tmp_path, monkeypatch, capfd, env, args, expected
):
    for key, value in {
        **env,
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }.items():
        monkeypatch.setenv(key, value)
    assert exit_status("fit", *TINY, *args) == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith(f"circles: error: {expected}")
    assert not (tmp_path / "lightning_logs").exists()


def test_a_task_of_an_older_srun_that_sets_only_slurm_stepid_is_inside_a_step():
    check_slurm_launch([], {**job(2, 2, step=False), "SLURM_STEPID": "0"})


@given(
    tasks=st.integers(min_value=2, max_value=64), job_id=st.integers(min_value=8, max_value=10**6)
)
def test_slurm_variables_set_by_hand_for_a_job_slurm_does_not_know_are_refused(tasks, job_id):
    """Set by hand outside any job, the variables of several tasks would leave the one process
    started waiting at the rendezvous for the others, forever."""
    env = {**job(1, tasks), "SLURM_JOB_ID": str(job_id)}
    with pytest.raises(InputError) as err:
        check_slurm_launch([], env)
    assert str(err.value).startswith(
        f"SLURM_NTASKS is {tasks} and SLURM_JOB_ID {job_id}, but SLURM knows no such job here"
    )
    assert f"wait for {tasks - 1} more forever" in str(err.value)


def test_hand_set_variables_are_refused_by_the_cli_in_one_line(tmp_path, monkeypatch, capfd):
    for key, value in {**job(1, 2), "SLURM_JOB_ID": "8", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    assert exit_status("fit", *TINY, "--trainer.devices=2") == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith("circles: error: SLURM_NTASKS is 2 and SLURM_JOB_ID 8, but SLURM")
    assert not (tmp_path / "lightning_logs").exists()


@given(
    counts=st.lists(st.integers(min_value=1, max_value=99), min_size=1, max_size=4),
    repeat=st.booleans(),
)
def test_counts_are_read_as_slurm_writes_them_per_node(counts, repeat):
    """SLURM writes a count per node: ``2``, ``2(x3)`` for three nodes of 2, ``2,2`` listed;
    equal counts are the count, unequal ones (a heterogeneous job) are refused."""
    text = ",".join(f"{c}(x2)" if repeat else str(c) for c in counts)
    env = {"SLURM_NTASKS_PER_NODE": text}
    if len(set(counts)) == 1:
        assert slurm_count(env, "SLURM_NTASKS_PER_NODE") == counts[0]
    else:
        with pytest.raises(InputError, match=r"^SLURM_NTASKS_PER_NODE is '"):
            slurm_count(env, "SLURM_NTASKS_PER_NODE")


@pytest.mark.parametrize("variable", ["SLURM_NNODES", "SLURM_NTASKS_PER_NODE"])
def test_zero_nodes_or_tasks_is_no_count_slurm_writes(variable):
    """Advice to set ``num_nodes 0`` would fail when followed: 0 is refused as what SLURM never
    writes, naming the variable."""
    env = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7", variable: "0"}
    with pytest.raises(InputError, match=rf"^{variable} is '0': not a count"):
        slurm_count(env, variable)


@given(text=st.text(max_size=12))
def test_a_count_that_is_no_count_is_refused_naming_the_variable(text):
    env = {"SLURM_NTASKS": text}
    try:
        count = slurm_count(env, "SLURM_NTASKS")
    except InputError as err:
        assert str(err).startswith(f"SLURM_NTASKS is {text.strip()!r}: not a count")
    else:
        assert count >= 1 and str(count) in text  # no job has 0 tasks or nodes
