"""The project's SLURM batch script on a real single-node cluster (slurmctld + slurmd + munge on this host):
2 CPU tasks under srun, then preemption with SIGUSR1, requeue and resume."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, scalar_values

SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"
# The script asks for GPUs on a partition called gpu; the test cluster has 2 CPU cores in partition debug.
ON_TEST_CLUSTER = ["--partition=debug", "--gres=none", "--ntasks-per-node=2", "--cpus-per-task=1", "--parsable"]

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def submit(env: dict, cwd: Path, config: str, *args: str) -> str:
    job_env = {**env, "CONFIG": str(REPO / "configs" / config),
               "TRAINER_CONFIG": str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")}
    out = subprocess.run(["sbatch", *ON_TEST_CLUSTER, str(SBATCH), *args, "--trainer.enable_model_summary=false"],
                         cwd=cwd, env=job_env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip().split(";")[0]


def job_field(env: dict, job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True, timeout=30).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def wait_for(env: dict, job: str, state: str = "COMPLETED", timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = job_field(env, job, "JobState")
        if current == state:
            return
        if current in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(1)
    log = "".join(p.read_text() for p in Path.cwd().glob(f"slurm-{job}.out"))
    subprocess.run(["scancel", job], env=env, timeout=30)
    pytest.fail(f"job {job} is {job_field(env, job, 'JobState')}, expected {state}:\n{log[-4000:]}")


def test_batch_script_runs_ddp_with_two_tasks_and_matches_one_process(slurm_env, tmp_path, run_cli):
    job = submit(slurm_env, tmp_path, "improved.yaml", "--trainer.max_epochs=30", "--data.test_samples=10")
    wait_for(slurm_env, job)
    assert job_field(slurm_env, job, "ExitCode") == "0:0"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "terminate called" not in log

    run = tmp_path / "lightning_logs" / f"slurm-{job}"
    assert {p.name for p in (tmp_path / "lightning_logs").iterdir()} == {run.name}
    for name in ("config.yaml", "hparams.yaml", "decision_boundary.png", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert len(list(run.glob("events.out.tfevents.*"))) == 1

    single = run_cli("fit", "--config", str(REPO / "configs" / "improved.yaml"), "--trainer.max_epochs=30")
    assert scalar_values(run, "train/loss") == pytest.approx(scalar_values(single, "train/loss"), abs=1e-5)
    assert scalar_values(run, "val/acc") == pytest.approx(scalar_values(single, "val/acc"), abs=1e-6)
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(single / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_sigusr1_checkpoints_requeues_and_resumes(slurm_env, tmp_path):
    epochs = 600  # seconds of training left when the signal comes after the first last.ckpt
    job = submit(slurm_env, tmp_path, "relu.yaml", f"--trainer.max_epochs={epochs}", "--data.test_samples=10",
                 "--checkpoint.last_every_n_epochs=20")
    run = tmp_path / "lightning_logs" / f"slurm-{job}"
    deadline = time.monotonic() + 180
    while not (run / "checkpoints" / "last.ckpt").is_file():  # well into training
        assert time.monotonic() < deadline, (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm_env, check=True, timeout=30)

    wait_for(slurm_env, job, timeout=400)
    assert job_field(slurm_env, job, "Restarts") == "1"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert f"job {job} restart 1" in log
    assert "Traceback" not in log  # e.g. no rank crashing on a logger that SIGUSR1 finalized
    assert f"Restoring states from the checkpoint path at lightning_logs/slurm-{job}/hpc_ckpt_1.ckpt" in log
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)
    assert 0 < hpc["global_step"] < epochs
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == epochs
    # The same run directory before and after: two writer processes (one per start of the job). The first may write
    # a second event file: Lightning's SIGUSR1 handler finalizes the logger and training goes on until the requeue.
    assert len({p.name.split(".")[-2] for p in run.glob("events.out.tfevents.*")}) == 2
