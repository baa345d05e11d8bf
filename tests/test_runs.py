"""Run directories and their files: where runs go, atomic writes, the one private TensorBoard call we depend on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from circles.errors import ConfigError
from circles.runs import (
    TensorBoardRunLogger, atomic_file, claim_version, event_file_writer, resolve_checkpoint, run_of_checkpoint,
)

from helpers import exit_status

SMALL = ["--data.n_samples=100", "--data.test_samples=20", "--boundary.every_n_epochs=1000", "--trainer.max_epochs=2"]


def test_claim_version_takes_the_next_free_number_and_never_one_that_exists(tmp_path):
    assert [claim_version(tmp_path / "runs") for _ in range(3)] == [0, 1, 2]
    (tmp_path / "runs" / "version_7").mkdir()
    (tmp_path / "runs" / "version_x").mkdir()
    assert claim_version(tmp_path / "runs") == 8
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "version_0", "version_1", "version_2", "version_7", "version_8", "version_x"]


def test_the_logger_claims_its_directory_only_when_it_is_first_asked_for(tmp_path):
    logger = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs")
    assert not (tmp_path / "runs").exists()  # a run that fails before writing anything leaves nothing behind
    assert logger.version == 0 and logger.version == 0
    assert logger.log_dir == str(tmp_path / "runs" / "version_0") and (tmp_path / "runs" / "version_0").is_dir()
    assert TensorBoardRunLogger(save_dir=str(tmp_path), name="runs").version == 1
    assert TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version="mine").log_dir == str(
        tmp_path / "runs" / "mine")


def test_atomic_file_replaces_the_file_whole_or_leaves_it_alone(tmp_path):
    path = tmp_path / "out.csv"
    with atomic_file(path) as f:
        f.write("old\n")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.csv"]
    with atomic_file(path, "wb") as f:
        f.write(b"new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["out.csv"]


def test_event_file_writer_is_the_summary_writers_own_and_reopens_after_close(tmp_path):
    """The one private call into torch's SummaryWriter (see ``event_file_writer``): fails here, not in a run,
    if torch renames or changes it."""
    writer = SummaryWriter(str(tmp_path))
    first = event_file_writer(writer)
    assert first is writer.file_writer and hasattr(first, "add_summary")
    writer.close()
    assert writer.file_writer is None
    reopened = event_file_writer(writer)
    assert reopened is not None and hasattr(reopened, "add_summary")
    writer.close()


def test_resolve_checkpoint_picks_the_newest_runs_file_or_says_what_is_missing(tmp_path):
    for run in ("version_0", "version_1"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
    (tmp_path / "version_1" / "checkpoints" / "last.ckpt").write_bytes(b"1")
    os.utime(tmp_path / "version_1" / "checkpoints" / "last.ckpt", (1, 1))
    (tmp_path / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"0")
    found = resolve_checkpoint("last", tmp_path)
    assert found == tmp_path / "version_0" / "checkpoints" / "last.ckpt" and run_of_checkpoint(found) == "version_0"
    assert resolve_checkpoint("some/file.ckpt", tmp_path) == Path("some/file.ckpt")
    with pytest.raises(ConfigError, match="No run under .* has checkpoints/best.ckpt"):
        resolve_checkpoint("best", tmp_path)


def test_default_root_dir_holds_the_runs_and_best_last_find_them_there(tmp_path, monkeypatch):
    """``cd elsewhere && python train.py fit --trainer.default_root_dir DIR``: logs, checkpoints, pictures and the
    config go under DIR/lightning_logs; ``--ckpt_path last`` finds the run there and continues it in place."""
    elsewhere, scratch = tmp_path / "elsewhere", tmp_path / "scratch"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    root = f"--trainer.default_root_dir={scratch}"
    assert exit_status("fit", *SMALL, root) == 0
    run = scratch / "lightning_logs" / "version_0"
    for name in ("config.yaml", "hparams.yaml", "decision_boundary.png", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    assert exit_status("test", *SMALL, root, "--ckpt_path=best") == 0
    assert (scratch / "lightning_logs" / "version_1" / "decision_boundary_test.png").is_file()
    assert exit_status("fit", *SMALL, root, "--ckpt_path=last", "--trainer.max_epochs=3") == 0
    assert sorted(p.name for p in (scratch / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the resumed fit wrote into the same run
    assert os.listdir(elsewhere) == []
    assert exit_status("fit", *SMALL, "--ckpt_path=last") == 2  # nothing under the working directory
