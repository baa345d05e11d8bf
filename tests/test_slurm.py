"""The project's SLURM batch script on a real cluster of two nodes on this host
(scripts/slurm/local_cluster: each node its own network namespace, hostname and slurmd): DDP on
1, 2 and 4 ranks equal to one process, a requeue across both nodes, one node's task dying, and
allocations that cannot work refused in one line."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_sweep import rows, write_sweep

from circles.runs.checkpoints import JOB_KEY
from circles.sweep import load_sweep, main
from circles.sweep.runner import is_finished

from helpers import REPO, error_lines, load_checkpoint, processes, run_if, scalars_by_step
from helpers import wait_for as wait_until

SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"
SWEEP_SBATCH = REPO / "scripts" / "slurm" / "sweep_array.sbatch"
DDP_CPU = REPO / "configs" / "trainer" / "ddp_cpu.yaml"
# The script asks for GPUs on a partition called gpu; the test cluster's nodes have 2 CPU cores in partition debug.
# --time: SLURM ends a job that hangs (a rendezvous that never completes, ranks left waiting) as
# TIMEOUT, which the tests tell from how the job should end; the tests themselves keep no clock.
ON_TEST_CLUSTER = [
    "--partition=debug",
    "--gres=none",
    "--cpus-per-task=1",
    "--parsable",
    "--time=15",
]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
QUICK = ["--trainer.enable_model_summary=false", "--data.test_samples=10"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    run_if(slurm=True),
    pytest.mark.xdist_group("slurm"),  # one cluster for the session: one test process
]


def submit(
    env: dict,
    cwd: Path,
    config: str,
    *args: str,
    nodes: int = 1,
    per_node: int = 2,
    script: list[str] | None = None,
) -> str:
    """``sbatch`` the training script (or ``script``: sbatch's own arguments, ``--wrap`` say)
    from ``cwd``."""
    job_env = {**env, "CONFIG": str(REPO / "configs" / config), "TRAINER_CONFIG": str(DDP_CPU)}
    command = script or [str(SBATCH), *args, *QUICK]
    out = subprocess.run(
        ["sbatch", *ON_TEST_CLUSTER, f"--nodes={nodes}", f"--ntasks-per-node={per_node}", *command],
        cwd=cwd,
        env=job_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def job_field(env: dict, job: str, field: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job], env=env, capture_output=True, text=True
    ).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def job_log(cwd: Path, job: str) -> str:
    return "".join(p.read_text(errors="replace") for p in cwd.glob(f"slurm-{job}.out"))


def wait_for(env: dict, cwd: Path, job: str, state: str = "COMPLETED") -> None:
    """Wait until the job is in ``state``; fails (and cancels it) if it ends otherwise (TIMEOUT:
    it hung until its time limit)."""
    while (current := job_field(env, job, "JobState")) != state:
        if current in ENDED:
            subprocess.run(["scancel", job], env=env)
            pytest.fail(f"job {job} is {current}, expected {state}:\n{job_log(cwd, job)[-4000:]}")
        time.sleep(0.5)


_SINGLE: dict[tuple[str, ...], Path] = {}


def single_process(run_cli, *args: str) -> Path:
    """The run of ``fit ARGS`` in this process, once per set of arguments."""
    if args not in _SINGLE:
        _SINGLE[args] = run_cli("fit", *args, *QUICK)
    return _SINGLE[args]


def assert_same_run(run: Path, single: Path) -> None:
    """Every logged loss and accuracy, at every step, and the final weights agree to 1e-5."""
    ours, theirs = scalars_by_step(run), scalars_by_step(single)
    for name in ("train/loss", "val/loss", "val/acc"):
        assert ours[name].keys() == theirs[name].keys(), name
        assert list(ours[name].values()) == pytest.approx(list(theirs[name].values()), abs=1e-5), (
            name
        )
    a = load_checkpoint(run / "checkpoints" / "last.ckpt")
    b = load_checkpoint(single / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], atol=1e-5, rtol=0)


def writers(run: Path) -> set[str]:
    """The ``host.pid`` of every process that wrote a TensorBoard event file of the run (its
    sub-runs too)."""
    return {".".join(p.name.split(".")[4:-1]) for p in run.rglob("events.out.tfevents.*")}


# ------------------------------------------------------------------------------------- 1, 2 and 4 ranks


RELU_CSV_MEMBERS = (
    "relu.yaml",
    "--data.path",
    str(REPO / "examples" / "rings.csv"),
    "--model.members=3",
)


@pytest.mark.parametrize(
    "nodes, per_node, config",
    [
        (2, 2, ("improved.yaml",)),
        (2, 1, RELU_CSV_MEMBERS),
    ],
    ids=["4 ranks on 2 nodes", "2 ranks on 2 nodes, members and a CSV"],
)
def test_a_run_on_several_ranks_and_nodes_equals_the_single_process_run(
    slurm_env, tmp_path, run_cli, nodes, per_node, config
):
    job = submit(
        slurm_env,
        tmp_path,
        config[0],
        *config[1:],
        "--trainer.max_epochs=30",
        nodes=nodes,
        per_node=per_node,
    )
    wait_for(slurm_env, tmp_path, job)
    assert job_field(slurm_env, job, "ExitCode") == "0:0"
    log = job_log(tmp_path, job)
    ranks = nodes * per_node
    assert f"All distributed processes registered. Starting with {ranks} processes" in log
    assert f"job {job} restart 0 on node[1-2]:" in log, log[:500]
    assert "Traceback" not in log and "terminate called" not in log

    run = tmp_path / "lightning_logs" / f"slurm-{job}"
    # one run directory
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == [run.name]
    # one set
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    # one TensorBoard run: every event file from one process, rank 0 on the first node
    (writer,) = writers(run)
    assert writer.startswith("node1.")
    assert (run / "config.yaml").is_file() and (run / "decision_boundary.png").is_file()

    config_args = (
        "--config",
        str(REPO / "configs" / config[0]),
        *config[1:],
        "--trainer.max_epochs=30",
    )
    assert_same_run(run, single_process(run_cli, *config_args))


# --------------------------------------------------------------------------------- requeue, a dying task


def when_trained_a_while(env: dict, cwd: Path, job: str) -> Path:
    """Wait until the job's run has a ``last.ckpt`` (training well under way); returns the run
    directory. Fails if the job ends first."""
    run = cwd / "lightning_logs" / f"slurm-{job}"
    while not (run / "checkpoints" / "last.ckpt").is_file():
        assert job_field(env, job, "JobState") not in ENDED, job_log(cwd, job)[-3000:]
        time.sleep(0.5)
    return run


def test_sigusr1_on_two_nodes_saves_after_the_same_step_on_every_rank_requeues_and_ends_equal_to_one_run(
    slurm_env, tmp_path, run_cli
):
    epochs = ("--trainer.max_epochs=200", "--checkpoint.last_every_n_epochs=20")
    job = submit(slurm_env, tmp_path, "relu.yaml", *epochs, nodes=2, per_node=1)
    run = when_trained_a_while(slurm_env, tmp_path, job)
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm_env, check=True)

    wait_for(slurm_env, tmp_path, job)
    assert job_field(slurm_env, job, "Restarts") == "1"
    log = job_log(tmp_path, job)
    assert f"job {job} restart 1 on node[1-2]" in log
    assert "Traceback" not in log  # e.g. no rank crashing on a logger that SIGUSR1 finalized
    restored = (
        f"Restoring states from the checkpoint path at lightning_logs/slurm-{job}/hpc_ckpt_1.ckpt"
    )
    assert restored in log, f"{sorted(p.name for p in run.iterdir())}\n{log}"
    hpc = load_checkpoint(run / "hpc_ckpt_1.ckpt")
    # written by both ranks' handler together, after the same step
    assert 0 < hpc["global_step"] < 200
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 200
    # the fit's test evaluates the final weights, not the hpc file Lightning would pick
    (tested,) = re.findall(r"^Test: acc .*$", log, re.M)
    assert tested.endswith("weights of epoch 199 (last.ckpt)"), tested
    # The end of the first start says where the job resumes, as a note on each rank, not as an error to act on
    notes = set(re.findall(r"^circles: (?:note|error): .*$", log, re.M))
    assert len(notes) == 1, notes
    assert re.fullmatch(
        rf"circles: note: fit stopped by SIGTERM at epoch \d+, step \d+: SLURM requeued the job, "
        rf"which resumes from lightning_logs/slurm-{job}/hpc_ckpt_1\.ckpt when it starts again "
        rf"\(saved by every rank after step {hpc['global_step']}\)\.",
        notes.pop(),
    )
    assert "`weights_only` was not set" not in log
    # One writer per start of the job, on the first node: the run is one TensorBoard run before and after.
    assert len(writers(run)) == 2 and all(w.startswith("node1.") for w in writers(run))
    assert_same_run(
        run, single_process(run_cli, "--config", str(REPO / "configs" / "relu.yaml"), *epochs)
    )


def test_a_new_job_beside_another_jobs_hpc_checkpoint_is_refused_and_never_restores_it(
    slurm_env, tmp_path, tiny_run
):
    """Lightning restores any hpc_ckpt_N.ckpt in the run's folder; a job that did not write it
    (not its own requeue) is refused naming it, and nothing of the file is trained on."""
    job = submit(
        slurm_env,
        tmp_path,
        "relu.yaml",
        "--trainer.max_epochs=3",
        nodes=1,
        per_node=1,
        script=["--hold", str(SBATCH), "--trainer.max_epochs=3", *QUICK],
    )
    run = tmp_path / "lightning_logs" / f"slurm-{job}"
    run.mkdir(parents=True)
    (trained,) = (tiny_run / "lightning_logs").glob("*/checkpoints/last.ckpt")
    other_job = str(int(job) + 1000)  # no job of this cluster's
    other = {**load_checkpoint(trained), JOB_KEY: other_job}
    torch.save(other, run / "hpc_ckpt_1.ckpt")
    subprocess.run(["scontrol", "release", job], env=slurm_env, check=True)
    wait_for(slurm_env, tmp_path, job, state="FAILED")
    log = job_log(tmp_path, job)
    assert "Traceback" not in log
    assert (
        f"trainer.default_root_dir must be a folder without another job's hpc checkpoint for "
        f"SLURM job {job}" in log
    )
    assert f"hpc_ckpt_1.ckpt, written by SLURM job {other_job}" in log
    assert not (run / "checkpoints").exists()  # nothing trained, nothing restored


def rank_processes(job: str, node: int) -> list[int]:
    """The training processes of ``job`` on its ``node``-th node (0-based), found by their SLURM
    environment."""
    return [
        pid
        for pid, _, environ, cmdline in processes()
        if environ.get("SLURM_JOB_ID") == job
        and environ.get("SLURM_NODEID") == str(node)
        and "SLURM_STEP_ID" in environ
        and "circles.cli" in cmdline
    ]


def test_when_one_nodes_task_dies_the_other_nodes_ranks_end_within_seconds_and_the_checkpoint_stays_whole(
    slurm_env, tmp_path
):
    """A rank on the second node killed (SIGKILL: out of memory, a lost node): srun ends the
    step's other tasks (``--kill-on-bad-exit``), so the first node's rank does not wait in a
    collective for a peer that is gone."""
    from circles.runs.checkpoints import load_checkpoint_file

    job = submit(
        slurm_env,
        tmp_path,
        "relu.yaml",
        "--trainer.max_epochs=100000",
        "--checkpoint.last_every_n_epochs=20",
        nodes=2,
        per_node=1,
    )
    run = when_trained_a_while(slurm_env, tmp_path, job)
    (victim,) = rank_processes(job, node=1)
    survivors = rank_processes(job, node=0)
    assert len(survivors) == 1
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_for(slurm_env, tmp_path, job, state="FAILED")  # not TIMEOUT: the others did not wait on
    assert not any(Path(f"/proc/{pid}").exists() for pid in survivors)
    log = job_log(tmp_path, job)
    assert "task 1: Killed" in log
    last = run / "checkpoints" / "last.ckpt"
    load_checkpoint_file(last)  # whole: it loads, with its weights
    step = load_checkpoint(last)["global_step"]

    # and a new job continues from it, as docs/cluster.md says
    again = submit(
        slurm_env,
        tmp_path,
        "relu.yaml",
        f"--trainer.max_epochs={step + 10}",
        f"--ckpt_path={last}",
        nodes=2,
        per_node=1,
    )
    wait_for(slurm_env, tmp_path, again)
    assert f"Restoring states from the checkpoint path at {last}" in job_log(tmp_path, again)
    continued = tmp_path / "lightning_logs" / f"slurm-{again}"
    assert load_checkpoint(continued / "checkpoints" / "last.ckpt")["global_step"] == step + 10


# ------------------------------------------------------------------------------------- wrong allocations


def wrapped(command: str) -> list[str]:
    return ["--output=slurm-%j.out", "--wrap", command]


FIT = (
    f"python -m circles.cli fit --config {REPO / 'configs' / 'relu.yaml'} --config {DDP_CPU} "
    "--trainer.max_epochs=2 --data.test_samples=10"
)


@pytest.mark.parametrize(
    "nodes, per_node, script, expected",
    [
        (
            1,
            2,
            [str(SBATCH), "--trainer.devices=1"],
            "circles: error: trainer.devices is 1, but SLURM starts 2 task(s) per node (--ntasks-per-node=2), one rank per "
            "device: set --trainer.devices 2 (scripts/slurm/train.sbatch sets it from the allocation: leave it out of the "
            "script's arguments), or submit with --ntasks-per-node=1.",
        ),
        (
            2,
            1,
            [str(SBATCH), "--trainer.num_nodes=1"],
            "circles: error: trainer.num_nodes is 1, but SLURM job {job} runs on 2 node(s) (--nodes=2): set "
            "--trainer.num_nodes 2 (scripts/slurm/train.sbatch sets it from the allocation",
        ),
        (
            1,
            2,
            wrapped(FIT),
            "circles: error: SLURM job {job} has 2 tasks (--ntasks-per-node times --nodes), but this command runs outside "
            "srun",
        ),
        (
            2,
            0,
            wrapped(f"srun {FIT} --trainer.num_nodes=2 --trainer.devices=1"),
            "circles: error: SLURM job {job} asks for --ntasks=2, and the ranks need to know their tasks per node: submit "
            "with --nodes=2 --ntasks-per-node=1 instead of --ntasks",
        ),
    ],
    ids=["devices against --ntasks-per-node", "num_nodes against --nodes", "no srun", "--ntasks"],
)
def test_an_allocation_the_ranks_cannot_fill_is_one_line_naming_the_setting_and_its_fix(
    slurm_env, tmp_path, nodes, per_node, script, expected
):
    if per_node == 0:  # --ntasks instead of --ntasks-per-node
        out = subprocess.run(
            ["sbatch", *ON_TEST_CLUSTER, f"--nodes={nodes}", "--ntasks=2", *script],
            cwd=tmp_path,
            env=slurm_env,
            capture_output=True,
            text=True,
            check=True,
        )
        job = out.stdout.strip().split(";")[0]
    else:
        job = submit(
            slurm_env, tmp_path, "relu.yaml", nodes=nodes, per_node=per_node, script=script
        )
    wait_for(slurm_env, tmp_path, job, state="FAILED")  # not TIMEOUT: no rendezvous left waiting
    assert job_field(slurm_env, job, "ExitCode") != "0:0"
    log = job_log(tmp_path, job)
    (line,) = set(error_lines(log)) or {log[-3000:]}  # one line, whichever ranks print it
    assert line.startswith(expected.format(job=job)), log[-3000:]
    assert "Traceback" not in log


# ------------------------------------------------------------------------------------------- the cluster


def test_the_cluster_is_two_hosts_sharing_one_file_system_and_up_again_reuses_it(
    slurm_env, tmp_path
):
    from conftest import SLURM_CLUSTER, slurm_state

    again = subprocess.run(
        [str(SLURM_CLUSTER / "up.sh"), slurm_state()], capture_output=True, text=True
    )
    assert again.returncode == 0 and "already up, reusing it" in again.stderr, again.stderr
    out = subprocess.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks-per-node=1",
            "--partition=debug",
            "bash",
            "-c",
            f'echo "$SLURM_NODEID $(hostname) $(hostname -I) $(getent hosts node1 node2 | tr -s " \\n" " ")" '
            f"> {tmp_path}/from-$SLURM_NODEID",
        ],
        cwd=tmp_path,
        env=slurm_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    # both written to one folder
    seen = sorted((tmp_path / f"from-{i}").read_text().split() for i in (0, 1))
    (_, host1, addr1, *names1), (_, host2, addr2, *names2) = seen
    assert (host1, host2) == ("node1", "node2") and addr1 != addr2
    # each node resolves both names the same way
    assert names1 == names2 == [addr1, "node1", addr2, "node2"]


# ------------------------------------------------------------------------------ a sweep as a job array


def array_tasks(env: dict, cwd: Path, sweep: Path, array: str) -> str:
    """Submit the sweep's SLURM array (``--array=ARRAY``) from ``cwd``; returns its job id."""
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--time=15",
            f"--array={array}",
            str(SWEEP_SBATCH),
            str(sweep),
            "sw",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def wait_for_array(env: dict, cwd: Path, *jobs: str) -> dict[str, str]:
    """Wait until every task of the arrays ``jobs`` has ended; returns each task's output, by
    ``JOB_TASK``."""

    def running() -> bool:
        return bool(
            subprocess.run(
                ["squeue", "-h", "-j", ",".join(jobs)],
                env=env,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )

    wait_until(lambda: not running(), f"the tasks of {jobs} to end")
    return {
        p.name[len("slurm-") : -len(".out")]: p.read_text()
        for job in jobs
        for p in cwd.glob(f"slurm-{job}_*.out")
    }


def test_a_slurm_array_spreads_over_the_nodes_reruns_only_what_did_not_finish_and_never_trains_a_point_twice(
    slurm_env, tmp_path
):
    path = write_sweep(
        tmp_path / "s.yaml", {"model.activation": ["none", "relu"], "data.noise": [0.03, 0.1]}
    )
    names = [point.name for point in load_sweep(path, tmp_path / "sw").points]

    wrong = wait_for_array(slurm_env, tmp_path, array_tasks(slurm_env, tmp_path, path, "0"))
    assert "has 4 points but this array has 1 tasks; submit it with sbatch --array=0-3" in "".join(
        wrong.values()
    )
    assert not (tmp_path / "sw").exists()

    first = array_tasks(slurm_env, tmp_path, path, "0-3")
    subprocess.run(["scancel", f"{first}_3"], env=slurm_env, check=True)  # while it starts
    logs = wait_for_array(slurm_env, tmp_path, first)
    # each task's first line says where it ran (task 3 may be cancelled before it writes one)
    ran_on = [re.search(r" on (node\d):", logs[f"{first}_{i}"]) for i in range(3)]
    assert all(ran_on), logs
    nodes = {found.group(1) for found in ran_on if found}
    sweep = load_sweep(path, tmp_path / "sw")
    assert [is_finished(sweep, point) for point in sweep.points] == [True, True, True, False]

    def stamps() -> dict[Path, int]:  # the finished points' files and when they were written
        return {
            p: p.stat().st_mtime_ns
            for point in sweep.points[:3]
            for p in sweep.run_dir(point).rglob("*")
        }

    files = stamps()

    # The whole array again, twice at once: only the cancelled point trains, once, by one of its two tasks.
    again = (
        array_tasks(slurm_env, tmp_path, path, "0-3"),
        array_tasks(slurm_env, tmp_path, path, "0-3"),
    )
    logs = wait_for_array(slurm_env, tmp_path, *again)
    assert len(logs) == 8
    nodes |= {
        found.group(1) for log in logs.values() if (found := re.search(r" on (node\d):", log))
    }
    assert nodes == {"node1", "node2"}, logs  # the arrays' tasks ran on both nodes
    for i, name in enumerate(names):
        trained = [
            task
            for task in (f"{job}_{i}" for job in again)
            if re.search(rf"\] {name}  ok ", logs[task])
        ]
        if i < 3:
            assert trained == [] and all(
                f"[skip] {name}: finished earlier" in logs[f"{job}_{i}"] for job in again
            )
        else:
            assert len(trained) == 1, {task: logs[task][-800:] for task in logs}
            (other,) = {f"{job}_{i}" for job in again} - set(trained)
            assert (
                f"{name}  BUSY: another sweep process is running this point" in logs[other]
                or f"[skip] {name}: finished earlier" in logs[other]
            ), logs[other][-800:]
    assert stamps() == files
    assert main(["--config", str(path), "--out", "sw", "--report"]) == 0
    assert [r["status"] for r in rows(tmp_path / "sw")] == ["ok"] * 4


# ------------------------------------------------------------------------------------------ stopping a sweep
