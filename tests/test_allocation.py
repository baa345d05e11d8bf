"""The SLURM allocation checks (circles/slurm.py) from the job's environment alone, without a
cluster: every combination of nodes, tasks per node and the trainer's devices and num_nodes; the
CLI refusing a launch in one line before it writes anything. (tests/test_slurm.py runs the same
refusals as real jobs.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

from circles.cli.slurm import AllocationError, check_slurm_allocation, check_slurm_launch

from helpers import TINY, error_lines, exit_status

counts = st.integers(min_value=1, max_value=8)


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
    with pytest.raises(AllocationError) as err:
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
        AllocationError, match=rf"^SLURM job 7 has {nodes * per_node} tasks .* runs outside srun"
    ):
        check_slurm_launch([], env)


@given(nodes=counts, per_node=counts)
def test_ntasks_without_tasks_per_node_names_the_per_node_count(nodes, per_node):
    env = job(nodes, None)
    env["SLURM_NTASKS"] = str(nodes * per_node)
    if nodes * per_node == 1:
        check_slurm_launch([], env)
        return
    with pytest.raises(AllocationError) as err:
        check_slurm_launch([], env)
    assert f"submit with --nodes={nodes} --ntasks-per-node={per_node} instead of --ntasks" in str(
        err.value
    )


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
    with pytest.raises(AllocationError):
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
