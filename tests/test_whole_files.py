"""Every file the project writes is whole or absent: written beside its place and renamed into it
(pictures, GIFs, pages, CSVs, configs, checkpoints), a failed write keeps the earlier file and
names the file, a continued fit adds to its GIF, and a run or a page is never written by two at
once."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from circles.runs.directory import try_lock

from helpers import CONFIGS, SMALL, error_lines, exit_status, load_checkpoint, run_dir

# files that are appended to by design (TensorBoard's event files) or hold no content (locks)
APPENDED = ("events.out.tfevents", ".lock")


@pytest.fixture
def opened_for_writing(monkeypatch) -> list[Path]:
    """Every path the process opens for writing from here on."""
    opened: list[Path] = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax+"):
            opened.append(Path(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    return opened


def test_every_file_fit_test_predict_and_compare_write_is_renamed_into_place(
    tmp_path, opened_for_writing
):
    """Whatever a command writes into its folders, it writes a temporary twin and renames it:
    a reader or a ``kill -9`` never meets half a file (the PNG once was 0 bytes after one)."""
    fit = ["fit", *SMALL, "--trainer.max_epochs=3", "--boundary.every_n_epochs=1"]
    finder = ["--config", str(CONFIGS / "trainer" / "lr_find.yaml")]
    assert exit_status(*fit, *finder) == 0
    assert exit_status("test", *SMALL, "--ckpt_path=last") == 0
    assert exit_status("predict", *SMALL, "--ckpt_path=last") == 0
    out = tmp_path / "page"
    short = ["--trainer.max_epochs=2", "--data.n_samples=100", "--boundary.every_n_epochs=1"]
    assert exit_status("compare", str(CONFIGS / "linear.yaml"), "--out", str(out), *short) == 0
    names = {
        p.name
        for p in opened_for_writing
        if p.absolute().is_relative_to(tmp_path) and not any(a in p.name for a in APPENDED)
    }
    in_place = sorted(n for n in names if not (n.startswith(".") and n.endswith(".tmp")))
    assert in_place == []
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    for expected in (
        "decision_boundary.png",
        "decision_boundary.gif",
        "lr_find.png",
        "predictions.csv",
        "compare.html",
        "compare.png",
        "config.yaml",
        "last.ckpt",
    ):
        assert expected in written
    assert not [n for n in written if n.endswith(".tmp")]


@pytest.mark.parametrize("picture", ["decision_boundary.png", "decision_boundary.gif"])
def test_a_full_disk_keeps_the_earlier_picture_and_the_message_names_the_file(
    tmp_path, monkeypatch, capfd, picture
):
    fit = ["fit", *SMALL, "--boundary.every_n_epochs=1"]
    assert exit_status(*fit, "--trainer.max_epochs=2") == 0
    run = run_dir(tmp_path / "lightning_logs")
    before = (run / picture).read_bytes()
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    real_fsync = os.fsync

    def full_disk(fd):
        if f".{picture}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    capfd.readouterr()
    assert exit_status(*fit, "--trainer.max_epochs=4", "--ckpt_path=last") != 0
    (line,) = error_lines(capfd.readouterr().err)
    assert str((run / picture).relative_to(tmp_path)) in line and "No space left" in line, line
    assert (run / picture).read_bytes() == before
    with Image.open(run / picture) as image:
        image.load()
    # the continued fit's checkpoints are all there: the picture came last
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] > checkpoint["epoch"]
    assert not list(run.glob(".*.tmp"))


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def test_a_continued_fit_adds_its_frames_to_the_runs_gif(tmp_path):
    fit = ["fit", *SMALL, "--boundary.every_n_epochs=1"]
    assert exit_status(*fit, "--trainer.max_epochs=3") == 0
    gif = run_dir(tmp_path / "lightning_logs") / "decision_boundary.gif"
    first = gif_frames(gif)
    assert exit_status(*fit, "--trainer.max_epochs=6", "--ckpt_path=last") == 0
    both = gif_frames(gif)
    assert len(both) > len(first)
    assert all(np.array_equal(a, b) for a, b in zip(first, both, strict=False))


def test_a_second_fit_from_scratch_into_a_named_run_is_refused_and_the_run_kept(tmp_path, capfd):
    named = ["fit", *SMALL, "--trainer.max_epochs=2", "--trainer.logger.init_args.version=myrun"]
    assert exit_status(*named) == 0
    run = tmp_path / "lightning_logs" / "myrun"
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capfd.readouterr()
    assert exit_status(*named, "--model.hidden_sizes=[3]") == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith("circles: error: trainer.logger.init_args.version"), line
    assert "--ckpt_path" in line and "last.ckpt" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept
    # continuing it is the way on
    assert exit_status(*named[:-2], "--trainer.max_epochs=3", "--ckpt_path=last") == 0


def test_a_compare_into_a_folder_another_compare_is_writing_is_refused(tmp_path, capfd):
    out = tmp_path / "page"
    lock = try_lock(out / ".lock")
    assert lock is not None
    with lock:
        status = exit_status("compare", str(CONFIGS / "linear.yaml"), "--out", str(out))
    assert status == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert f"{out} is being written by another compare (pid {os.getpid()})" in line
    assert not (out / "compare.html").exists() and not (out / "lightning_logs").exists()
