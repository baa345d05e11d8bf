"""DDP on the CPU (gloo, 2 processes) follows the single-process run, with one run directory
written by rank zero."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, free_port, last_weights, run_dir, scalar_values, train_py, wait_for

IMPROVED = str(REPO / "configs" / "improved.yaml")
DDP_CPU = str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")
RINGS = str(REPO / "examples" / "rings.csv")
DDP_QUIET = [
    "--trainer.enable_model_summary=false",
    "--chapter_log.every_n_epochs=null",
    "--data.test_samples=10",
]

pytestmark = pytest.mark.slow


def ddp_env() -> dict[str, str]:
    """This process's environment for a DDP run on 127.0.0.1 (outside any SLURM job this process
    may be in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {
        **env,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }


def fit_in_subprocess(cwd: Path, *args: str) -> None:
    """``python train.py fit ARGS``, all its ranks killed if the test ends first."""
    with train_py("fit", *args, *DDP_QUIET, cwd=cwd, env=ddp_env(), merge_output=True) as proc:
        out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "terminate called" not in out, out[-3000:]


@pytest.mark.parametrize(
    "extra",
    [[], ["--model.members=3"], [f"--data.path={RINGS}"]],
    ids=["one network", "3 members", "3 classes from a CSV file"],
)
def test_full_batch_ddp_follows_the_single_process_trajectory(extra, tmp_path, run_cli):
    """Each rank's loss is the mean over its half of the training points; DDP averages the two
    gradients, which is the gradient of the mean over all of them: the same trajectory up to
    rounding. With members, every rank holds them all; a data file is read and split the same way
    by every rank."""
    args = ["--config", IMPROVED, "--trainer.max_epochs=30", *extra]
    (tmp_path / "ddp").mkdir()
    fit_in_subprocess(tmp_path / "ddp", *args, "--config", DDP_CPU)
    single = run_cli("fit", *args)
    # rank zero alone created a run directory
    (ddp,) = (tmp_path / "ddp" / "lightning_logs").iterdir()
    # events.out.tfevents.TIME.HOST.PID.N: every event file is rank zero's
    writers = {p.name.split(".")[-2] for p in ddp.glob("events.out.tfevents.*")}
    assert ddp.name.startswith("0000-") and len(writers) == 1
    assert {p.name for p in (ddp / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    ddp_loss, single_loss = scalar_values(ddp, "train/loss"), scalar_values(single, "train/loss")
    assert len(ddp_loss) == len(single_loss) == 30
    assert ddp_loss == pytest.approx(single_loss, abs=1e-5)
    assert scalar_values(ddp, "val/acc") == pytest.approx(
        scalar_values(single, "val/acc"), abs=1e-6
    )
    a, b = last_weights(ddp), last_weights(single)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_minibatch_ddp_reaches_the_single_process_accuracy(tmp_path, run_cli):
    """With minibatches each rank draws its own half of a fresh permutation every epoch."""
    args = ["--config", IMPROVED, "--trainer.max_epochs=40", "--data.batch_size=100"]
    (tmp_path / "ddp").mkdir()
    fit_in_subprocess(tmp_path / "ddp", *args, "--config", DDP_CPU)
    single = run_cli("fit", *args)
    ddp = run_dir(tmp_path / "ddp" / "lightning_logs", 0)
    assert scalar_values(single, "val/acc")[-1] >= 0.99
    assert scalar_values(ddp, "val/acc")[-1] >= 0.99
    # really sharded: the loss differs from the single-process run
    assert scalar_values(ddp, "train/loss") != pytest.approx(
        scalar_values(single, "train/loss"), abs=1e-5
    )


def test_sigterm_stops_every_rank_together_and_saves_last_ckpt(tmp_path):
    """Lightning's own SIGTERM handler broadcasts from inside the handler and deadlocks DDP when
    the signal lands during a metric's all-gather; the run's handler only sets a flag the ranks
    agree on after the next step."""
    args = [
        "fit",
        "--config",
        IMPROVED,
        "--config",
        DDP_CPU,
        *DDP_QUIET,
        "--trainer.max_epochs=100000",
        "--checkpoint.last_every_n_epochs=20",
    ]
    with train_py(*args, cwd=tmp_path, env=ddp_env(), merge_output=True) as proc:
        wait_for(
            lambda: (
                any(tmp_path.glob("lightning_logs/*/checkpoints/last.ckpt"))
                or proc.poll() is not None
            ),
            "the first last.ckpt",
        )
        assert proc.poll() is None, "the run ended before its first last.ckpt"
        time.sleep(1.0)  # well inside an epoch's collectives, many times over
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate()
    assert proc.returncode == 143, out[-3000:]
    assert "fit interrupted by SIGTERM" in out and "--ckpt_path last" in out
    last = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] > 20


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluations_of_a_checkpoint_end_under_ddp_with_one_process_lines(
    subcommand, tmp_path, capfd
):
    """Every rank enters every collective (``trainer.log_dir`` is one): an evaluation under
    ``ddp_cpu`` ends, and says what one process says of its run."""
    args = ["--config", IMPROVED, "--trainer.max_epochs=3"]
    fit_in_subprocess(tmp_path, *args, "--config", DDP_CPU)
    evaluate = [subcommand, *args, "--ckpt_path=last", "--config", DDP_CPU, *DDP_QUIET]
    with train_py(*evaluate, cwd=tmp_path, env=ddp_env(), merge_output=True) as proc:
        out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    said = "Predictions written to" if subcommand == "predict" else "Run directory: "
    assert out.count(said) == 1, out[-3000:]  # rank zero's line, once
