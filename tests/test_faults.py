"""Faults during fit: divergence, kill -9, SIGTERM and Ctrl-C, half-written checkpoints, runs
started together.

Signals are sent for real: to ``python train.py`` subprocesses (slow: each spends seconds
importing), and, for the exact-resume checks, from inside an in-process run at a chosen epoch
(``signal.raise_signal``) so the interruption point is deterministic."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from circles.cli import run_cli
from circles.data.module import CirclesDataModule
from circles.errors import Interrupted
from circles.model.classifier import CirclesClassifier
from circles.model.training import TrainingDiverged
from circles.runs.checkpoints import AtomicCheckpointIO
from circles.runs.logger import TensorBoardRunLogger

from helpers import (
    CONFIGS,
    QUIET,
    SMALL,
    error_lines,
    exit_status,
    load_checkpoint,
    run_dir,
    run_names,
    scalars_by_step,
    train_py,
    wait_for,
)

# ------------------------------------------------------------------------------------------------------- helpers


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for k, v in state_dict.items() if k.startswith("net."))


# ---------------------------------------------------------------------------------------------------- divergence


def test_divergence_stops_at_the_first_non_finite_loss_and_keeps_the_good_checkpoints(
    tmp_path, capfd
):
    status = exit_status(
        "fit",
        *SMALL,
        "--trainer.max_epochs=1000",
        "--checkpoint.last_every_n_epochs=1",
        "--model.optimizer.init_args.lr=1e6",
    )
    err = capfd.readouterr().err
    assert status == 1 and "Traceback" not in err
    (line,) = error_lines(err)
    epoch = int(line.split("Training diverged at epoch ")[1].split(":")[0])
    assert 0 < epoch < 20, line
    assert "try a smaller one" in line and "--model.optimizer.lr" in line and "last.ckpt" in line

    run = run_dir(tmp_path / "lightning_logs", 0)
    values = scalars_by_step(run)
    # nothing logged past the divergence
    assert max(step for steps in values.values() for step in steps) <= epoch
    assert all(torch.isfinite(torch.tensor(list(values["train/loss"].values()))))
    last, best = (
        load_checkpoint(run / "checkpoints" / "last.ckpt"),
        load_checkpoint(run / "checkpoints" / "best.ckpt"),
    )
    assert last["global_step"] == epoch  # written at the end of the last good epoch, epoch - 1
    assert finite(last["state_dict"]) and finite(best["state_dict"])


@pytest.mark.parametrize("decay", ["1e30", "50"])
def test_divergence_from_weight_decay_blames_the_weight_decay_not_the_learning_rate(
    tmp_path, capfd, decay
):
    """lr 0.1 with weight_decay above 20 scales the weights by less than -1 every step."""
    args = ["--trainer.max_epochs=200", f"--model.optimizer.init_args.weight_decay={decay}"]
    assert exit_status("fit", *SMALL, *args) == 1
    (line,) = error_lines(capfd.readouterr().err)
    assert "Training diverged" in line and f"weight_decay {float(decay):g} with lr 0.1" in line
    assert "below 20. Set it with --model.optimizer.weight_decay" in line
    assert "learning rate" not in line and "--model.optimizer.lr" not in line
    if decay == "1e30":  # epoch 0's validation loss is nan: no checkpoint holds it
        checkpoints = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints"
        assert "at epoch 0" in line and not list(checkpoints.glob("*.ckpt"))


@pytest.mark.parametrize("noise", ["1e12", "1e20", "1e30"])
def test_divergence_on_points_far_out_says_data_noise_not_the_learning_rate(tmp_path, capfd, noise):
    """Generated points that reach beyond what a float32 network takes diverge at any learning
    rate, whether the training loss or the validation loss goes first (1e12: the validation's;
    1e30: the training's): the line says data.noise."""
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=5", f"--data.noise={noise}") == 1
    (line,) = error_lines(capfd.readouterr().err)
    assert "Training diverged at epoch 0" in line and "a smaller data.noise" in line, line
    assert "--model.optimizer.lr" not in line and "try a smaller one" not in line


def test_weights_that_stop_being_finite_are_never_checkpointed(tmp_path, monkeypatch, capfd):
    """An infinite gradient makes the weights infinite while the loss of that step was still
    finite: fit stops in that epoch, before its checkpoints, and the files from the epoch before
    stay."""

    def infinite_gradient_in_epoch_2(self, optimizer):
        if self.current_epoch == 2:
            next(self.parameters()).grad.fill_(float("inf"))

    monkeypatch.setattr(CirclesClassifier, "on_before_optimizer_step", infinite_gradient_in_epoch_2)
    status = exit_status(
        "fit", *SMALL, "--trainer.max_epochs=10", "--checkpoint.last_every_n_epochs=1"
    )
    err = capfd.readouterr().err
    assert status == 1
    assert (
        "Training diverged at epoch 2: the training loss or the weights are no longer finite" in err
    )
    checkpoints = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints"
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 2  # end of epoch 1
    assert finite(load_checkpoint(checkpoints / "last.ckpt")["state_dict"])
    assert finite(load_checkpoint(checkpoints / "best.ckpt")["state_dict"])


def test_saving_non_finite_weights_raises_and_keeps_the_file(tmp_path):
    cli = run_cli(args=[*SMALL, "--trainer.max_epochs=1", "--trainer.logger=false"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    path = tmp_path / "saved" / "model.ckpt"
    cli.trainer.save_checkpoint(path)
    good = path.read_bytes()
    with torch.no_grad():
        next(cli.model.parameters())[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        cli.trainer.save_checkpoint(path)
    assert path.read_bytes() == good and os.listdir(path.parent) == ["model.ckpt"]


def test_the_run_logger_keeps_logging_after_it_was_finalized(tmp_path):
    """Lightning finalizes the loggers when SLURM sends SIGUSR1 (before requeueing the job) and
    training goes on until the job is stopped: the epochs logged in between must not crash the
    run."""
    logger = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs")
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.finalize("finished")
    logger.log_metrics({"train/loss": 0.25}, step=1)
    logger.finalize("success")
    assert scalars_by_step(Path(logger.log_dir)) == {"train/loss": {0: 0.5, 1: 0.25}}


def test_the_epoch_alone_writes_no_event(tmp_path):
    """A call with nothing but the epoch (Lightning adds it to what it logs) is no number of the
    run's: it writes no event."""
    logger = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs")
    logger.log_metrics({"train/loss": 0.5, "epoch": 0})
    logger.flush()
    (events,) = Path(logger.log_dir).glob("events.out.tfevents.*")
    size = events.stat().st_size
    logger.log_metrics({"epoch": 1})
    logger.flush()
    assert events.stat().st_size == size
    assert scalars_by_step(Path(logger.log_dir)) == {"train/loss": {0: 0.5}}


# ------------------------------------------------------------------------------------------- atomic checkpoints


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = __import__("io").BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_half_then_fail)
        with pytest.raises(OSError, match="No space left"):
            io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    # no temporary file left
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.ckpt"]
    assert load_checkpoint(path)["step"] == 1

    io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    assert load_checkpoint(path)["step"] == 2 and os.listdir(path.parent) == ["last.ckpt"]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_a_truncated_checkpoint_gives_one_clear_error(subcommand, tmp_path, capfd):
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=1") == 0
    data = (run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "torn.ckpt").write_bytes(data[: len(data) - 100])
    capfd.readouterr()
    assert exit_status(subcommand, *SMALL, "--ckpt_path", "torn.ckpt") == 2
    out, err = capfd.readouterr()
    (line,) = error_lines(err)
    assert (
        "Cannot read checkpoint torn.ckpt: it is truncated, corrupt or not a PyTorch checkpoint"
        in line
    )
    assert "Traceback" not in out + err and 'File "' not in out + err  # no stack frames


# ------------------------------------------------------------------------------------- signals, in-process


@contextlib.contextmanager
def handled_by(signum: int, handler) -> Iterator[None]:
    """``handler`` for ``signum`` while inside (a stand-in for Lightning's, which leaves a handler
    already there in place), the one before put back after."""
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def signal_at_epoch(monkeypatch, epoch: int, *signums: int) -> None:
    """Raise the signals once, at the end of the training step of ``epoch`` (while Lightning's
    loop runs)."""
    original = CirclesClassifier.on_train_batch_end
    fired = []

    def hook(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.current_epoch == epoch and not fired:
            fired.append(True)
            # the run's own handler: the test process survives
            assert callable(signal.getsignal(signal.SIGTERM))
            for signum in signums:
                signal.raise_signal(signum)

    monkeypatch.setattr(CirclesClassifier, "on_train_batch_end", hook)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, status, name",
    [
        (signal.SIGTERM, 143, "SIGTERM"),
        (signal.SIGINT, 130, "Ctrl-C"),
        (signal.SIGHUP, 129, "SIGHUP"),  # the terminal closed
        (signal.SIGUSR1, 138, "SIGUSR1"),  # outside SLURM, no requeue to wait for
    ],
)
def test_a_signal_saves_last_ckpt_and_the_run_resumes_exactly(
    signum, status, name, tmp_path, monkeypatch, capfd
):
    args = ["fit", *SMALL, "--trainer.max_epochs=8", "--checkpoint.last_every_n_epochs=100"]
    handler = signal.getsignal(signal.SIGINT)
    signal_at_epoch(monkeypatch, 3, signum)
    assert exit_status(*args) == status
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    assert f"fit interrupted by {name}" in line and "--ckpt_path last" in line
    assert (
        signal.getsignal(signal.SIGINT) is handler
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    run = run_dir(tmp_path / "lightning_logs", 0)
    interrupted = load_checkpoint(run / "checkpoints" / "last.ckpt")
    # Full-batch: the signal came after epoch 3's step; the ranks agree on it after the next step, epoch 4 completes
    # (validation, logging) and fit stops, so last.ckpt holds the state after the last logged epoch.
    assert interrupted["global_step"] == 5 and max(scalars_by_step(run)["train/loss"]) == 4

    # the hook fired once: this run goes on undisturbed
    assert exit_status(*args, "--ckpt_path", "last") == 0
    (tmp_path / "reference").mkdir()
    monkeypatch.chdir(tmp_path / "reference")
    assert exit_status(*args) == 0
    reference = run_dir(tmp_path / "reference" / "lightning_logs", 0)
    assert_same_weights(
        load_checkpoint(run / "checkpoints" / "last.ckpt"),
        load_checkpoint(reference / "checkpoints" / "last.ckpt"),
    )
    assert scalars_by_step(run) == scalars_by_step(reference)


def test_a_second_ctrl_c_interrupts_at_once(tmp_path, monkeypatch, capfd):
    signal_at_epoch(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=8") == 130
    (line,) = error_lines(capfd.readouterr().err)
    assert "fit interrupted by Ctrl-C (SIGINT) at epoch 2, step 3" in line
    assert (
        load_checkpoint(run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt")[
            "global_step"
        ]
        == 3
    )


@pytest.fixture
def slurm_job(monkeypatch):
    """The environment of a one-task SLURM job, as srun sets it: Lightning's SLURM environment,
    with auto-requeue."""
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "7",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    "requeue, args",
    [
        (signal.SIGUSR1, []),
        (
            signal.SIGUSR2,
            [
                "--trainer.plugins=lightning.fabric.plugins.environments.SLURMEnvironment",
                "--trainer.plugins.init_args.requeue_signal=SIGUSR2",
            ],
        ),
    ],
    ids=["SIGUSR1", "its requeue_signal"],
)
def test_slurms_requeue_signal_is_handled_after_a_step_not_inside_one(
    tmp_path, monkeypatch, slurm_job, requeue, args
):
    """Lightning's SLURM requeue handler saves a checkpoint with a barrier: run from wherever the
    signal lands, it would meet another rank inside a different collective and hang DDP. The run
    defers it to the point after a step where the ranks agree on their signals; here a recording
    handler stands in for Lightning's (which leaves a handler already there in place). The signal
    is the one Lightning's SLURM environment names."""
    import inspect

    calls = []

    def requeue_handler(signum, frame):
        calls.append((signum, [f.function for f in inspect.stack()[1:3]]))

    with handled_by(requeue, requeue_handler):
        signal_at_epoch(monkeypatch, 2, requeue)
        assert exit_status("fit", *SMALL, "--trainer.max_epochs=5", *args) == 0
        # called once, by the callback's hook
        assert calls == [(requeue, ["_requeue", "on_train_batch_end"])]
        assert signal.getsignal(requeue) is requeue_handler  # restored after fit
    assert (
        load_checkpoint(run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt")[
            "global_step"
        ]
        == 5
    )


def test_a_requeue_signal_that_comes_again_after_slurm_requeued_the_job_is_not_handled_twice(
    tmp_path, monkeypatch, slurm_job
):
    """While SLURM cancels a requeued job's tasks it may deliver the requeue signal again: the
    job is already requeued and its state saved, so a second hpc checkpoint and a second
    ``scontrol requeue`` (refused: the job is pending) would only make the run resume from a later
    file than the note named. A stand-in for Lightning's handler records its calls and writes the
    hpc file."""
    calls = []

    def requeue_handler(signum, frame):
        calls.append(signum)
        (tmp_path / f"hpc_ckpt_{len(calls)}.ckpt").write_bytes(b"")

    with handled_by(signal.SIGUSR1, requeue_handler):
        signal_at_epoch(monkeypatch, 2, signal.SIGUSR1)
        signal_at_epoch(monkeypatch, 3, signal.SIGUSR1)
        assert (
            exit_status(
                "fit", *SMALL, "--trainer.max_epochs=5", f"--trainer.default_root_dir={tmp_path}"
            )
            == 0
        )
    assert calls == [signal.SIGUSR1]


def test_the_end_of_a_requeued_jobs_start_is_a_note_naming_where_it_resumes(
    tmp_path, monkeypatch, slurm_job, capfd
):
    """Lightning's requeue handler saves ``hpc_ckpt_1.ckpt`` and has SLURM requeue the job, which
    SIGTERM then ends: the last line says where the job resumes, not "run again with --ckpt_path
    last" (a stand-in handler writes the file and sends the SIGTERM, as SLURM would)."""

    def requeue_handler(signum, frame):
        (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
        signal.raise_signal(signal.SIGTERM)

    with handled_by(signal.SIGUSR1, requeue_handler):
        signal_at_epoch(monkeypatch, 2, signal.SIGUSR1)
        assert (
            exit_status(
                "fit", *SMALL, "--trainer.max_epochs=8", f"--trainer.default_root_dir={tmp_path}"
            )
            == 143
        )
    err = capfd.readouterr().err
    assert error_lines(err) == []
    (note,) = [line for line in err.splitlines() if line.startswith("circles: note: fit stopped")]
    match = re.fullmatch(
        rf"circles: note: fit stopped by SIGTERM at epoch \d+, step (\d+): SLURM requeued the job, "
        rf"which resumes from {re.escape(str(tmp_path / 'hpc_ckpt_1.ckpt'))} when it starts again "
        rf"\(saved by every rank after step (\d+)\)\.",
        note,
    )
    assert match and int(match.group(2)) <= int(match.group(1)), note


def fake_scontrol(tmp_path: Path, monkeypatch, script: str) -> None:
    """An ``scontrol`` first on PATH that runs ``script`` (sh), as SLURM's would answer."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    scontrol = folder / "scontrol"
    scontrol.write_text(f"#!/bin/sh\n{script}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_refused_requeue_is_said_and_the_fits_test_evaluates_its_final_weights(
    tmp_path, monkeypatch, slurm_job, capfd
):
    """Lightning's own requeue handler, with an ``scontrol`` that fails (no controller, no
    permission): Lightning only logs it; the run says so, trains on, and its test evaluates the
    final weights, not the hpc checkpoint the handler saved (which Lightning would pick)."""
    fake_scontrol(tmp_path, monkeypatch, "exit 1")
    signal_at_epoch(monkeypatch, 1, signal.SIGUSR1)
    root = tmp_path / "job"
    assert (
        exit_status("fit", *SMALL, "--trainer.max_epochs=4", f"--trainer.default_root_dir={root}")
        == 0
    )
    out, err = capfd.readouterr()
    assert (root / "hpc_ckpt_1.ckpt").is_file()
    (note,) = [line for line in err.splitlines() if "requeue" in line]
    assert note.startswith(
        "circles: note: SLURM did not requeue the job (Requeuing SLURM job 7 failed with error "
        "code 1): it ends at its time limit."
    ), note
    assert str(root / "hpc_ckpt_1.ckpt") in note
    (test_line,) = [line for line in out.splitlines() if line.startswith("Test:")]
    assert test_line.endswith("weights of epoch 3 (last.ckpt)"), test_line


def test_a_requeued_job_resumes_from_its_own_hpc_checkpoint_and_tests_its_final_weights(
    tmp_path, monkeypatch, slurm_job, capfd
):
    """The documented flow: SIGUSR1, Lightning saves ``hpc_ckpt_1.ckpt`` and requeues, SLURM ends
    the job (SIGTERM) and starts it again under the same job id; the second start resumes from
    the hpc checkpoint, trains to the end and tests the weights it ended with."""
    fake_scontrol(tmp_path, monkeypatch, "kill -TERM $PPID")
    root = tmp_path / "job"
    signal_at_epoch(monkeypatch, 1, signal.SIGUSR1)
    fit = ["fit", *SMALL, f"--trainer.default_root_dir={root}"]
    assert exit_status(*fit, "--trainer.max_epochs=6") == 143
    hpc = load_checkpoint(root / "hpc_ckpt_1.ckpt")
    monkeypatch.undo()  # the second start: no signal
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7"}.items():
        monkeypatch.setenv(key, value)
    capfd.readouterr()
    assert exit_status(*fit, "--trainer.max_epochs=6") == 0
    out = capfd.readouterr().out
    (test_line,) = [line for line in out.splitlines() if line.startswith("Test:")]
    assert test_line.endswith("weights of epoch 5 (last.ckpt)"), test_line
    last = load_checkpoint(run_dir(root / "lightning_logs", 0) / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6 > hpc["global_step"]
    assert run_names(root / "lightning_logs") == ["0000"]  # one run, resumed in place


@pytest.mark.parametrize("hpc_job", ["8", None])
def test_a_new_job_beside_another_jobs_hpc_checkpoint_is_refused_not_restored(
    tmp_path, monkeypatch, slurm_job, capfd, hpc_job
):
    """Lightning restores any ``hpc_ckpt_*.ckpt`` in ``default_root_dir``: one another job wrote
    (or one that does not say which) is refused naming it; ``--ckpt_path hpc`` continues it
    through the checks every checkpoint gets, which refuse another model without a traceback."""
    root = tmp_path / "job"
    assert (
        exit_status("fit", *SMALL, "--trainer.max_epochs=2", f"--trainer.default_root_dir={root}")
        == 0
    )
    checkpoint = load_checkpoint(run_dir(root / "lightning_logs", 0) / "checkpoints" / "last.ckpt")
    checkpoint["circles_slurm_job"] = hpc_job
    torch.save(checkpoint, root / "hpc_ckpt_1.ckpt")
    capfd.readouterr()
    fit = ["fit", *SMALL, "--trainer.max_epochs=4", f"--trainer.default_root_dir={root}"]
    assert exit_status(*fit) == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith("circles: error: trainer.default_root_dir") and "hpc_ckpt_1.ckpt" in line
    assert ("SLURM job 8" if hpc_job else "a job that did not record itself") in line
    assert exit_status(*fit, "--ckpt_path=hpc", "--model.hidden_sizes=[3]") == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert "model.hidden_sizes" in line and "Traceback" not in line
    assert exit_status(*fit, "--ckpt_path=hpc") == 0
    out = capfd.readouterr().out
    (test_line,) = [line for line in out.splitlines() if line.startswith("Test:")]
    assert test_line.endswith("weights of epoch 3 (last.ckpt)"), test_line


def test_outside_slurm_the_requeue_signal_stops_the_fit_after_its_step(monkeypatch, capfd):
    """No requeue to wait for outside SLURM: SIGUSR1 stops the fit as SIGTERM does, whatever
    handler the process had, which is put back."""
    calls = []
    with handled_by(signal.SIGUSR1, lambda signum, frame: calls.append(signum)):
        signal_at_epoch(monkeypatch, 1, signal.SIGUSR1)
        assert exit_status("fit", *SMALL, "--trainer.max_epochs=3") == 128 + signal.SIGUSR1
        assert not calls
        signal.raise_signal(signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]
    (line,) = error_lines(capfd.readouterr().err)
    assert "fit interrupted by SIGUSR1 at epoch" in line and "--ckpt_path last" in line


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler, as in a terminal: a process started in the background (``cmd
    &``, nohup) inherits SIGINT ignored, and Python then leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_before_training_starts_exits_130_without_a_checkpoint(
    tmp_path, monkeypatch, capfd, ctrl_c_raises
):
    def interrupted_setup(self, stage):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(CirclesDataModule, "setup", interrupted_setup)
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=8") == 130
    (line,) = error_lines(capfd.readouterr().err)
    assert (
        line
        == "circles: error: fit interrupted by Ctrl-C (SIGINT) before it could write a checkpoint."
    )


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_ctrl_c_during_test_or_predict_exits_130_and_writes_no_checkpoint(
    subcommand, tmp_path, monkeypatch, capfd, ctrl_c_raises
):
    """Lightning ends a KeyboardInterrupt with sys.exit(1); the CLI reports it as the
    interruption it is. Only fit writes checkpoints: a last.ckpt in the test run would become
    ``--ckpt_path last``."""
    step = f"{subcommand}_step"

    def interrupted_step(self, batch, batch_idx):
        signal.raise_signal(signal.SIGINT)

    assert exit_status("fit", *SMALL, "--trainer.max_epochs=1") == 0
    monkeypatch.setattr(CirclesClassifier, step, interrupted_step)
    assert exit_status(subcommand, *SMALL, "--ckpt_path=last") == 130
    (line,) = error_lines(capfd.readouterr().err)
    assert line == f"circles: error: {subcommand} interrupted by Ctrl-C (SIGINT)."
    (fit_run,) = {p.parent.parent for p in tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt")}
    assert fit_run == run_dir(tmp_path / "lightning_logs", 0)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_sigterm_stops_validate_test_and_predict_with_143_and_no_half_result(
    subcommand, tmp_path, monkeypatch, capfd
):
    """Lightning only notes a SIGTERM outside fit (predict would go on and write its file): the
    run stops at once."""
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=1") == 0
    step = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}[
        subcommand
    ]
    original = getattr(CirclesClassifier, step)

    def signalled_step(self, batch, batch_idx):
        signal.raise_signal(signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CirclesClassifier, step, signalled_step)
    assert exit_status(subcommand, *SMALL, "--ckpt_path=last") == 143
    (line,) = error_lines(capfd.readouterr().err)
    assert line == f"circles: error: {subcommand} interrupted by SIGTERM."
    assert not list(tmp_path.glob("lightning_logs/*/predictions.csv"))
    # only fit writes checkpoints
    assert len(list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))) == 2
    # the interrupted run held nothing: it is gone
    assert len(list((tmp_path / "lightning_logs").iterdir())) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _signal_first(target: object, name: str, signum: int, monkeypatch) -> None:
    """``target.name`` sends ``signum`` to this process, then does what it did."""
    original = getattr(target, name)

    def signalled(*args, **kwargs):
        signal.raise_signal(signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, signalled)


# Where no training step can wait for a signal: the command line settling its config, the data's
# set-up inside trainer.fit, the fit's test after the fit, compare drawing its page.
PHASES = {
    "settling": ("fit", "circles.cli", "settle_config"),
    "set-up": ("fit", "circles.data.module", "CirclesDataModule.setup"),
    "fit's test": ("fit", "lightning.pytorch", "Trainer.test"),
    "compare's page": ("compare", "circles.compare", "page_html"),
    # the learning-rate finder's first step: before fit's training, whose steps wait for signals
    "finder": ("fit", "circles.model.classifier", "CirclesClassifier.training_step"),
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_between_the_steps_ends_the_command_with_its_line_and_status(
    phase, signum, tmp_path, monkeypatch, capfd, ctrl_c_raises
):
    """Every signal that ends a command ends it with one line naming it and 128 + its number,
    nothing half-written: no empty run directory; after training, its last.ckpt."""
    import importlib

    command, module, attribute = PHASES[phase]
    target = importlib.import_module(module)
    *owner, name = attribute.split(".")
    for part in owner:
        target = getattr(target, part)
    _signal_first(target, name, signum, monkeypatch)
    args = {
        "compare's page": [str(CONFIGS / "linear.yaml"), "--out", str(tmp_path / "page")],
        "finder": [f"--config={CONFIGS / 'trainer' / 'lr_find.yaml'}"],
    }.get(phase, [])
    assert exit_status(command, *args, *SMALL, "--trainer.max_epochs=2") == 128 + signum
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    named = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    assert f"interrupted by {named}" in line and "Traceback" not in err, err
    runs = sorted(
        (tmp_path / "page" if command == "compare" else tmp_path).glob("lightning_logs/*")
    )
    trained = phase in ("fit's test", "compare's page")
    assert [bool(list(r.glob("checkpoints/last.ckpt"))) for r in runs] == [True] * trained
    assert not (tmp_path / "page" / "compare.html").exists()
    assert not list(tmp_path.rglob(".lr_find_*.ckpt"))  # the finder's own state
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, signum):
    """While torch and Lightning load (seconds), before anything is written."""
    with train_py("fit", *SMALL, cwd=tmp_path) as process:
        maps = Path(f"/proc/{process.pid}/maps")
        wait_for(
            lambda: process.poll() is not None or "libtorch" in maps.read_text(), "torch loading"
        )
        process.send_signal(signum)
        _, err = process.communicate()
    named = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    assert process.returncode == 128 + signum, err
    assert error_lines(err) == [f"circles: error: interrupted by {named}."], err
    assert not (tmp_path / "lightning_logs").exists()


# ------------------------------------------------------------------------------------- signals, subprocesses


@pytest.mark.slow
def test_kill_9_then_ckpt_path_last_finishes_exactly_like_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    args = ["fit", *SMALL, *QUIET, "--trainer.max_epochs=300", "--checkpoint.last_every_n_epochs=5"]
    with train_py(*args, cwd=tmp_path) as process:
        wait_for(
            lambda: (
                any(tmp_path.glob("lightning_logs/*/checkpoints/last.ckpt"))
                or process.poll() is not None
            ),
            "last.ckpt",
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    run = run_dir(tmp_path / "lightning_logs", 0)
    killed_at = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < killed_at < 300
    before_resume = scalars_by_step(run)
    # the events were flushed with the checkpoint
    assert max(before_resume["train/loss"]) >= killed_at - 1

    assert exit_status(*args, "--ckpt_path", "last") == 0
    (tmp_path / "reference").mkdir()
    monkeypatch.chdir(tmp_path / "reference")
    assert exit_status(*args) == 0
    reference = run_dir(tmp_path / "reference" / "lightning_logs", 0)

    for name in ("last.ckpt", "best.ckpt"):
        assert_same_weights(
            load_checkpoint(run / "checkpoints" / name),
            load_checkpoint(reference / "checkpoints" / name),
        )
    resumed, straight = scalars_by_step(run), scalars_by_step(reference)
    assert resumed == straight  # every metric at every epoch, bitwise
    # The epochs the killed run logged after its checkpoint are logged again by the resumed run (TensorBoard shows
    # those steps twice), with identical values.
    for tag, steps in before_resume.items():
        assert all(straight[tag][step] == value for step, value in steps.items()), tag


def test_a_last_ckpt_on_disk_always_has_its_epochs_curves_on_disk_and_continues_exactly(
    tmp_path, monkeypatch
):
    """Lightning gives the loggers an epoch's training values after the callbacks'
    ``on_train_epoch_end``, where a periodic last.ckpt is written: at any moment a kill -9 could
    land, the last.ckpt on disk is one whose epochs' values are all on disk too (one written
    before them once was, and the run continued from it had a hole in its curves). Continued from
    the periodic file, the run ends as the uninterrupted one, weights and curves bitwise."""
    from circles.callbacks.checkpoint import RunCheckpoint

    args = [
        "fit",
        *SMALL,
        *QUIET,
        "--trainer.max_epochs=12",
        "--checkpoint.last_every_n_epochs=5",
        # the writers flush only when told to: what reaches the disk is what the run flushed
        "--trainer.logger.init_args.max_queue=100000",
        "--trainer.logger.init_args.flush_secs=100000",
    ]
    seen: list[tuple[int, int]] = []  # (last.ckpt's step, the newest train/loss epoch on disk)

    def look(trainer: object) -> None:
        last = Path(trainer.log_dir, "checkpoints", "last.ckpt")  # type: ignore[attr-defined]
        if last.is_file():
            newest = max(scalars_by_step(last.parents[1])["train/loss"])
            seen.append((load_checkpoint(last)["global_step"], newest))
            if load_checkpoint(last)["global_step"] == 5:
                last.with_name("epoch5.ckpt").write_bytes(last.read_bytes())

    for hook in ("on_train_epoch_end", "on_train_epoch_start"):
        original = getattr(RunCheckpoint, hook)

        def after(self, trainer, pl_module, original=original):
            original(self, trainer, pl_module)
            look(trainer)

        monkeypatch.setattr(RunCheckpoint, hook, after)
    assert exit_status(*args) == 0
    monkeypatch.undo()
    assert {step for step, _ in seen} == {5, 10}, seen
    assert all(newest >= step - 1 for step, newest in seen), seen
    run = run_dir(tmp_path / "lightning_logs", 0)
    continued = tmp_path / "continued" / "lightning_logs" / run.name / "checkpoints"
    continued.mkdir(parents=True)
    (continued / "last.ckpt").write_bytes((run / "checkpoints" / "epoch5.ckpt").read_bytes())
    monkeypatch.chdir(tmp_path / "continued")
    assert exit_status(*args, "--ckpt_path", "last") == 0
    assert_same_weights(
        load_checkpoint(continued / "last.ckpt"), load_checkpoint(run / "checkpoints" / "last.ckpt")
    )
    straight = scalars_by_step(run)
    for tag, values in scalars_by_step(continued.parent).items():
        assert values == {s: v for s, v in straight[tag].items() if s >= 5}, tag


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, status, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_train_py_stopped_by_a_signal_saves_a_consistent_run(signum, status, name, tmp_path):
    args = [
        "fit",
        *SMALL,
        *QUIET,
        "--trainer.max_epochs=100000",
        "--checkpoint.last_every_n_epochs=100000",
    ]
    with train_py(*args, cwd=tmp_path) as process:
        wait_for(
            lambda: (
                any(tmp_path.glob("lightning_logs/*/checkpoints/best.ckpt"))
                or process.poll() is not None
            ),
            "training",
        )
        process.send_signal(signum)
        out, err = process.communicate()
    assert process.returncode == status, err
    run = run_dir(tmp_path / "lightning_logs", 0)
    (line,) = error_lines(err)
    assert (
        f"fit interrupted by {name}" in line
        and f"saved in {(run / 'checkpoints' / 'last.ckpt').relative_to(tmp_path)}" in line
    )
    assert "--ckpt_path last" in line and "Traceback" not in out + err

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["n_samples"] == 100
    assert yaml.safe_load((run / "hparams.yaml").read_text())["hidden_sizes"] == [10, 10]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    last, best = (
        load_checkpoint(run / "checkpoints" / "last.ckpt"),
        load_checkpoint(run / "checkpoints" / "best.ckpt"),
    )
    assert last["global_step"] >= best["global_step"] >= 1
    # the checkpoint is the last logged epoch
    assert max(scalars_by_step(run)["train/loss"]) == last["global_step"] - 1

    epochs = last["global_step"] + 2
    assert exit_status(*args[:-2], f"--trainer.max_epochs={epochs}", "--ckpt_path", "last") == 0
    assert max(scalars_by_step(run)["train/loss"]) == epochs - 1
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == epochs


# ------------------------------------------------------------------------------------------------ concurrency


@pytest.mark.slow
def test_runs_started_together_get_their_own_run_directories(tmp_path):
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(
                train_py(
                    "fit",
                    *SMALL,
                    *QUIET,
                    "--trainer.max_epochs=2",
                    f"--data.seed={seed}",
                    cwd=tmp_path,
                )
            )
            for seed in range(4)
        ]
        for process in processes:
            _, err = process.communicate()
            assert process.returncode == 0, err
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert run_names(tmp_path / "lightning_logs") == ["0000", "0001", "0002", "0003"]
    seeds, pids = [], []
    for run in runs:
        seed = yaml.safe_load((run / "config.yaml").read_text())["data"]["seed"]
        assert yaml.safe_load((run / "hparams.yaml").read_text())["seed"] == seed
        for name in ("best.ckpt", "last.ckpt"):
            assert (
                load_checkpoint(run / "checkpoints" / name)["datamodule_hyper_parameters"]["seed"]
                == seed
            )
        (events,) = run.glob("events.out.tfevents.*")  # one writer per directory
        seeds.append(seed)
        pids.append(int(events.name.split(".")[-2]))
    assert sorted(seeds) == [0, 1, 2, 3]
    assert sorted(pids) == sorted(p.pid for p in processes)


@pytest.mark.slow
def test_runs_without_a_logger_started_together_get_their_own_labelled_run_directories(tmp_path):
    """``--trainer.logger false`` takes its directory from the same allocator as a logged run: an
    atomic mkdir of ``NNNN-<label>``, locked while the run writes it."""
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(
                train_py(
                    "fit",
                    *SMALL,
                    *QUIET,
                    "--trainer.max_epochs=30",
                    "--trainer.logger=false",
                    f"--seed_everything={seed}",
                    cwd=tmp_path,
                )
            )
            for seed in (1, 2)
        ]
        for process in processes:
            _, err = process.communicate()
            assert process.returncode == 0, err
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert [run.name for run in runs] == [
        "0000-relu-10x10-sgd0.1-e30-circles",
        "0001-relu-10x10-sgd0.1-e30-circles",
    ]
    seeds = []
    for run in runs:
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        seed = yaml.safe_load((run / "config.yaml").read_text())["seed_everything"]
        for name in ("best.ckpt", "last.ckpt"):
            assert (
                yaml.safe_load(load_checkpoint(run / "checkpoints" / name)["circles_config"])[
                    "seed_everything"
                ]
                == seed
            )
        assert not list(run.glob("events.out.tfevents.*"))
        seeds.append(seed)
    assert sorted(seeds) == [1, 2]


# ------------------------------------------------------------------------------------------------ the file system


def test_a_full_disk_is_one_line_naming_the_file_and_the_good_checkpoint_stays(
    tmp_path, monkeypatch, capfd
):
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=2") == 0
    last = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt"
    good = last.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=4", "--ckpt_path=last") == 1
    (line,) = error_lines(capfd.readouterr().err)
    assert line == (
        f"circles: error: {last.relative_to(tmp_path)}: No space left on "
        "device. Free some space there, or write the runs elsewhere with --trainer.default_root_dir "
        f"DIR --ckpt_path {last.relative_to(tmp_path)}."
    )
    assert last.read_bytes() == good and not list(last.parent.glob(".*.tmp"))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_a_full_disk_under_tensorboards_event_writer_is_one_line_naming_the_event_file(
    tmp_path, monkeypatch, capfd, subcommand
):
    """TensorBoard writes its events from a thread of its own: on a full disk that thread's
    traceback is not printed, the command ends with one line naming the event file, the run
    directory made for it is removed, and the advice to write elsewhere keeps the checkpoint
    (``best``/``last`` would find no run there)."""
    from tensorboard.summary.writer import record_writer

    if subcommand != "fit":
        assert exit_status("fit", *SMALL, "--trainer.max_epochs=1") == 0
        capfd.readouterr()
    runs = tmp_path / "lightning_logs"
    before = sorted(runs.rglob("*"))

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", disk_full)
    args = [] if subcommand == "fit" else ["--ckpt_path=last"]
    assert exit_status(subcommand, *SMALL, *args) == 1
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    assert "Traceback" not in err and "Exception in thread" not in err
    last = f" --ckpt_path {run_dir(runs, 0) / 'checkpoints' / 'last.ckpt'}" if args else ""
    assert re.fullmatch(
        r"circles: error: \S+/events\.out\.tfevents\.\S+: No space left on device\. Free some "
        r"space there, or write the runs elsewhere with --trainer\.default_root_dir DIR"
        + re.escape(last.replace(str(tmp_path) + "/", ""))
        + r"\.",
        line,
    ), line
    assert sorted(runs.rglob("*")) == before


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capfd):
    (tmp_path / "not_a_folder").write_text("a file where the runs would go\n")
    assert (
        exit_status("fit", *SMALL, f"--trainer.default_root_dir={tmp_path / 'not_a_folder'}") == 1
    )
    (line,) = error_lines(capfd.readouterr().err)
    assert (
        line == f"circles: error: {tmp_path / 'not_a_folder' / 'lightning_logs'}: Not a directory."
    )


def _loading_torch(pid: int) -> bool:
    """The process has torch's library mapped: it is importing (Lightning comes seconds later)."""
    with contextlib.suppress(OSError):
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    return True  # it has ended: the signal finds nothing, and the test says how it ended


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["importing", "finding the learning rate"])
def test_ctrl_c_while_importing_or_in_the_learning_rate_finder_is_one_line(
    tmp_path, moment, ctrl_c_raises
):
    """As from a terminal (the child starts with Python's own Ctrl-C handler)."""
    finder = ["--config", str(CONFIGS / "trainer" / "lr_find.yaml"), "--data.n_samples=200000"]
    with train_py("fit", *QUIET, *finder, "--trainer.max_epochs=2", cwd=tmp_path) as process:
        if moment == "importing":
            wait_for(lambda: _loading_torch(process.pid), "torch loading")
        else:  # Lightning saves the state the finder starts from, then tries the rates
            wait_for(
                lambda: process.poll() is not None or any(tmp_path.glob(".lr_find_*.ckpt")),
                "the finder",
            )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate()
    assert "Traceback" not in err, err
    assert process.returncode == 128 + signal.SIGINT, err
    (line,) = error_lines(err)
    assert "Ctrl-C (SIGINT)" in line, line
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))  # Lightning's own state removed


def test_ctrl_c_before_the_finder_starts_leaves_none_of_lightnings_state(
    tmp_path, monkeypatch, capfd
):
    """Lightning saves the weights its learning-rate finder starts from, then enters the ``try``
    whose ``finally`` removes them: a Ctrl-C in between (here while it makes its results object)
    leaves none of them either."""
    from lightning.pytorch.tuner import lr_finder

    def interrupted(*args, **kwargs):
        assert list(tmp_path.glob(".lr_find_*.ckpt")), "the finder's state is saved first"
        raise KeyboardInterrupt

    monkeypatch.setattr(lr_finder._LRFinder, "__init__", interrupted)
    finder = ["--config", str(CONFIGS / "trainer" / "lr_find.yaml")]
    assert exit_status("fit", *SMALL, *finder, "--trainer.max_epochs=2") == 128 + signal.SIGINT
    (line,) = error_lines(capfd.readouterr().err)
    assert "Ctrl-C (SIGINT)" in line, line
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: Interrupted(15, "fit interrupted")])
def test_after_an_interruption_a_half_built_objects_destructor_prints_nothing(
    capfd, monkeypatch, stop
):
    """Ctrl-C inside a progress bar's constructor once left ``Exception ignored in: tqdm.__del__``
    and its traceback after the command's one line."""
    import sys

    from circles.errors import one_line_errors

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)

    class HalfBuilt:
        def __del__(self):
            raise AttributeError("'HalfBuilt' object has no attribute 'pos'")

    with pytest.raises(SystemExit), one_line_errors():
        raise stop()
    capfd.readouterr()
    half = HalfBuilt()
    del half
    assert capfd.readouterr().err == ""
