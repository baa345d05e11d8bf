"""Tests for circles.sweep: grids, point names, end-to-end sweeps (tiny runs, CPU, temp dir),
resume and failures."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml

from circles.sweep import load_sweep, main
from circles.sweep.spec import SweepError

from helpers import scalar_history, scalars_by_step, started, wait_for

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "trainer.max_epochs": 3,
    "data.n_samples": 100,
    "data.test_samples": 200,
    "trainer.enable_model_summary": False,
    "chapter_log.every_n_epochs": None,
}


def write_sweep(path: Path, grid: object, base: str = "configs/relu.yaml", **extra: object) -> Path:
    path.write_text(
        yaml.safe_dump({"base": base, "fixed": TINY, "grid": grid, **extra}, sort_keys=False)
    )
    return path


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_grid_union_names_and_command_lines(tmp_path):
    # already in the first grid: runs once
    grid = [
        {"model.activation": ["none", "relu"], "model.hidden_sizes": [[10], [10, 10]]},
        {
            "model.optimizer.init_args.lr": [0.03],
            "model.optimizer.class_path": ["torch.optim.Adam"],
            "data.noise": [0.1],
        },
        {"model.activation": ["relu"], "model.hidden_sizes": [[10]]},
    ]
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", grid), out="sw")
    # relative to the repository (not found beside the file)
    assert sweep.base == REPO / "configs" / "relu.yaml"
    assert [p.name for p in sweep.points] == [
        "00-linear-10",
        "01-linear-10x10",
        "02-relu-10",
        "03-relu-10x10",
        "04-adam0.03-n0.1",
    ]
    assert sweep.keys == [
        "model.activation",
        "model.hidden_sizes",
        "model.optimizer.init_args.lr",
        "model.optimizer.class_path",
        "data.noise",
    ]
    args = sweep.cli_args(sweep.points[4])
    assert args[:3] == ["fit", "--config", str(sweep.base)]
    assert args.index("--model.optimizer.class_path=torch.optim.Adam") < args.index(
        "--model.optimizer.init_args.lr=0.03"
    )
    assert (
        "--chapter_log.every_n_epochs=null" in args
        and "--trainer.enable_model_summary=false" in args
    )
    assert "--model.hidden_sizes=[10, 10]" in sweep.cli_args(sweep.points[1])
    assert args[-4:] == [
        "--trainer.logger.init_args.save_dir=sw",
        "--trainer.logger.init_args.name=runs",
        "--trainer.logger.init_args.version=04-adam0.03-n0.1",
        # HPARAMS opens on what tells the points apart
        '--trainer.logger.init_args.first_columns=["model.activation", "model.hidden_sizes", '
        '"model.optimizer.init_args.lr", "model.optimizer.class_path", "data.noise"]',
    ]
    assert load_sweep(tmp_path / "s.yaml").out == Path("sweeps/s")


def test_list_and_bad_sweep_files(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", {"model.activation": ["none", "relu"]})
    assert main(["--config", str(path), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        '0\t00-linear\t{"model.activation": "none"}',
        '1\t01-relu\t{"model.activation": "relu"}',
    ]
    assert main(["--config", str(path), "--point", "2"]) == 2
    assert "--point must be an index from 0 to 1" in capsys.readouterr().err
    for bad, message in [
        (
            {"model.hidden_sizes": [10, 10], "data.noise": 0.1},
            "data.noise must be a non-empty list",
        ),
        ([{"data.noise": [0.1]}, {}], "grid 1 names no config keys"),
        ([], "the grid has no points"),
    ]:
        assert main(["--config", str(write_sweep(tmp_path / "bad.yaml", bad)), "--list"]) == 2
        assert message in capsys.readouterr().err
    assert (
        main(["--config", str(write_sweep(tmp_path / "bad.yaml", [], base="nope.yaml")), "--list"])
        == 2
    )
    assert "base config 'nope.yaml' not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "base: configs/relu.yaml\ngrid: {model.activation: [none\n",
            "is not valid YAML at line 3, column 1",
        ),
        (
            "base: configs/relu.yaml\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{x}: &{x} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, x in zip("abcde", "bcdef", strict=True)
            )
            + "grid: {model.activation: *f}\n",
            "at most 100,000 values",
        ),
        (
            "base: configs/relu.yaml\ngrid:\n" + "".join(f"  k{i}: [1, 2]\n" for i in range(20)),
            "at most 10,000 points",
        ),
    ],
)
def test_a_broken_sweep_file_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "s.yaml").write_text(text)
    assert main(["--config", "s.yaml", "--list"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("circles-sweep: error:") and message in line


def test_an_out_folder_that_cannot_hold_the_sweep_and_an_empty_report_are_one_line(
    tmp_path, capsys
):
    path = write_sweep(tmp_path / "s.yaml", {"model.activation": ["none"]})
    (tmp_path / "a_file").write_text("")
    assert main(["--config", str(path), "--out", "a_file"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "circles-sweep: error: --out a_file cannot hold the sweep: File exists."
    )
    # nothing finished: not ok
    assert main(["--config", str(path), "--out", "empty", "--report"]) == 1
    out = capsys.readouterr().out
    assert (
        "0 of 1 points finished" in out
        and "(no finished point to draw)" in out
        and "boundaries.png" not in out
    )


def test_long_point_names_are_shortened_with_a_digest(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", {"model.hidden_sizes": [[1] * 150, [2] * 150]})
    assert main(["--config", str(path), "--list"]) == 0
    names = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert all(len(name) == 100 for name in names) and len(set(names)) == 2


def test_console_script_points_at_main():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "circles-sweep"]
    assert script.load() is main


@pytest.mark.slow
def test_2x2_sweep_writes_every_output_and_skips_finished_points_when_run_again(tmp_path, capsys):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    path = write_sweep(
        tmp_path / "s.yaml",
        {"model.activation": ["none", "relu"], "model.hidden_sizes": [[4], [4, 4]]},
    )
    config = ["--config", str(path), "--out", "sw"]
    runs = tmp_path / "sw" / "runs"
    assert main([*config, "--point", "1"]) == 0  # one SLURM array task: that point only, no report
    assert [p.name for p in runs.iterdir()] == ["01-linear-4x4"] and not (
        tmp_path / "sw" / "summary.csv"
    ).exists()
    first = (runs / "01-linear-4x4" / "result.json").stat().st_mtime_ns

    assert main(config) == 0
    out = capsys.readouterr().out
    assert "[skip] 01-linear-4x4: finished earlier" in out and "Running 3 of 4 points" in out
    assert (runs / "01-linear-4x4" / "result.json").stat().st_mtime_ns == first
    table = rows(tmp_path / "sw")
    assert [r["point"] for r in table] == [
        "00-linear-4",
        "01-linear-4x4",
        "02-relu-4",
        "03-relu-4x4",
    ]
    assert [(r["model.activation"], r["model.hidden_sizes"]) for r in table] == [
        ("none", "[4]"),
        ("none", "[4, 4]"),
        ("relu", "[4]"),
        ("relu", "[4, 4]"),
    ]
    for r in table:
        assert r["status"] == "ok" and float(r["bayes_acc"]) == pytest.approx(0.9996, abs=1e-4)
        assert (
            0 <= float(r["test_acc"]) <= 1
            and 0 <= float(r["val_acc_best"]) <= 1
            and float(r["train_s"]) > 0
        )
        assert float(r["bayes_gap"]) == pytest.approx(
            float(r["bayes_acc"]) - float(r["test_acc"]), abs=2e-4
        )
    markdown = (tmp_path / "sw" / "summary.md").read_text()
    assert (
        "| # | activation | hidden | best val acc | test acc | Bayes acc | gap | train s | status |"
        in markdown
    )
    assert "| 3 | relu | 4x4 | " in markdown
    with Image.open(tmp_path / "sw" / "boundaries.png") as image:
        assert image.mode == "P" and image.width > 200

    for name in ("00-linear-4", "03-relu-4x4"):
        assert {"val/acc", "val/acc_best", "test/acc", "test/bayes_acc", "test/bayes_gap"} <= set(
            scalar_history(runs / name)
        )
        events = EventAccumulator(str(runs / name))
        events.Reload()
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["0 activation"].string_value == name.split("-")[1].replace("linear", "none")
        assert (runs / name / "checkpoints" / "last.ckpt").is_file() and (
            runs / name / "config.yaml"
        ).is_file()

    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    # everything finished: nothing runs again, nothing in the run directories changes
    assert main(config) == 0
    assert capsys.readouterr().out.count("finished earlier") == 4
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == stamps
    assert main([*config, "--report"]) == 0


@pytest.mark.slow
def test_a_failing_point_is_reported_and_the_others_finish_in_parallel_workers(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", {"data.noise": [-1, 0.1]})
    assert main(["--config", str(path), "--out", "sw", "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert "00-n_1  FAILED: InputError: data.noise must be a number from 0 to 1e+30, got -1." in out
    assert "01-n0.1  ok" in out
    failed, ok = rows(tmp_path / "sw")
    assert (
        failed["status"] == "failed"
        and "data.noise must be a number from 0 to 1e+30" in failed["error"]
    )
    assert ok["status"] == "ok" and float(ok["bayes_acc"]) == pytest.approx(0.8406, abs=1e-4)
    assert "Failed points:" in (tmp_path / "sw" / "summary.md").read_text()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_point_on_a_full_disk_fails_naming_the_file(tmp_path, capsys, monkeypatch):
    """TensorBoard's event writer cannot write (a full disk): the point fails, and its line and
    its result name the event file and what to do, as the command line would."""
    from tensorboard.summary.writer import record_writer

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", disk_full)
    path = write_sweep(tmp_path / "s.yaml", {"data.noise": [0.1]})
    assert main(["--config", str(path), "--out", "sw"]) == 1
    (failed,) = rows(tmp_path / "sw")
    assert failed["status"] == "failed"
    assert re.fullmatch(
        r"sw/runs/00-n0\.1/events\.out\.tfevents\.\S+: No space left on device\. Free some space "
        r"there, or write the runs elsewhere with --trainer\.default_root_dir DIR\.",
        failed["error"],
    ), failed["error"]
    assert f"FAILED: {failed['error']}" in capsys.readouterr().out


LONG = {
    **TINY,
    "trainer.max_epochs": 100_000,
    "checkpoint.last_every_n_epochs": 10,
    "boundary.every_n_epochs": 100_000,
}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (
                {int(c) for c in (task / "children").read_text().split()}
                if (task / "children").exists()
                else set()
            )
            todo += list(children - found)
            found |= children
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended


@contextlib.contextmanager
def long_sweep(
    tmp_path: Path, points: int = 3
) -> Iterator[tuple[subprocess.Popen, Path, list[str]]]:
    """``python -m circles.sweep --jobs 2`` over points that would train for minutes, in a
    process group of its own; the block starts once two of them train (each has written a
    last.ckpt)."""
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "configs/relu.yaml",
                "fixed": LONG,
                "grid": {"data.noise": [0.03, 0.05, 0.1][:points]},
            },
            sort_keys=False,
        )
    )
    names = [p.name for p in load_sweep(path).points]
    argv = [
        sys.executable,
        "-m",
        "circles.sweep",
        "--config",
        str(path),
        "--out",
        "sw",
        "--jobs",
        "2",
    ]
    with started(argv, tmp_path) as process:
        wait_for(
            lambda: (
                process.poll() is not None
                or all(
                    (tmp_path / "sw" / "runs" / name / "checkpoints" / "last.ckpt").is_file()
                    for name in names[:2]
                )
            ),
            "two points training",
        )
        assert process.poll() is None, process.communicate()
        yield process, tmp_path / "sw" / "runs", names


def statuses(runs: Path, names: list[str]) -> dict[str, str]:
    return {
        n: json.loads((runs / n / "result.json").read_text())["status"]
        if (runs / n / "result.json").is_file()
        else "none"
        for n in names
    }


@pytest.mark.slow
def test_sigterm_stops_a_parallel_sweep_whole_and_no_worker_survives_it(tmp_path):
    with long_sweep(tmp_path) as (process, runs, names):
        workers = descendants(process.pid)
        assert len(workers) >= 2
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate()
        assert process.returncode == 143, err
        # no clock: a worker that outlived the sweep for good hangs the test, which CI reports
        wait_for(lambda: not any(alive(pid) for pid in workers), "the workers' end")
    assert f"circles-sweep: stopped by SIGTERM; interrupted: {names[0]}, {names[1]}" in err
    assert "Traceback" not in err
    assert statuses(runs, names) == {
        names[0]: "interrupted",
        names[1]: "interrupted",
        names[2]: "none",
    }
    for name in names[:2]:
        assert (
            torch.load(runs / name / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
            > 0
        )


@pytest.mark.slow
def test_workers_end_with_a_sweep_that_was_killed(tmp_path):
    with long_sweep(tmp_path, points=2) as (process, runs, names):
        workers = descendants(process.pid)
        process.kill()
        process.communicate()
        # no clock: a worker that outlived the sweep for good hangs the test, which CI reports
        wait_for(lambda: not any(alive(pid) for pid in workers), "the workers' end")
    # nothing half-done counts as finished
    assert set(statuses(runs, names).values()) <= {
        "interrupted",
        "none",
    }


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_sweep_continues_its_interrupted_point_from_last_ckpt(
    signum, tmp_path, monkeypatch, capsys
):
    from circles.model.classifier import CirclesClassifier

    path = write_sweep(tmp_path / "s.yaml", {"data.noise": [0.03, 0.1]})
    path.write_text(path.read_text().replace("trainer.max_epochs: 3", "trainer.max_epochs: 8"))
    original, fired = CirclesClassifier.on_train_batch_end, []

    def sigterm_at_epoch_3(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.current_epoch == 3 and not fired:
            fired.append(True)
            signal.raise_signal(signum)

    monkeypatch.setattr(CirclesClassifier, "on_train_batch_end", sigterm_at_epoch_3)
    assert main(["--config", str(path), "--out", "sw"]) == 128 + signum
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert (
        f"circles-sweep: stopped by {name}; interrupted: 00-n0.03 (run the same command again"
        in err
    )
    runs = tmp_path / "sw" / "runs"
    assert statuses(runs, ["00-n0.03", "01-n0.1"]) == {"00-n0.03": "interrupted", "01-n0.1": "none"}
    assert (
        torch.load(runs / "00-n0.03" / "checkpoints" / "last.ckpt", weights_only=True)[
            "global_step"
        ]
        == 5
    )

    assert main(["--config", str(path), "--out", "sw"]) == 0
    resumed_args = json.loads((runs / "00-n0.03" / "result.json").read_text())["args"]
    assert (
        resumed_args[-1]
        == f"--ckpt_path={Path('sw') / 'runs' / '00-n0.03' / 'checkpoints' / 'last.ckpt'}"
    )
    assert main(["--config", str(path), "--out", "fresh"]) == 0  # the same sweep, never interrupted
    resumed, fresh = rows(tmp_path / "sw"), rows(tmp_path / "fresh")
    assert [r["status"] for r in resumed] == ["ok", "ok"]
    assert [(r["val_acc_best"], r["test_acc"]) for r in resumed] == [
        (r["val_acc_best"], r["test_acc"]) for r in fresh
    ]


@pytest.mark.slow
def test_a_finished_point_whose_checkpoint_was_damaged_is_named_and_trained_again(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", {"model.activation": ["none", "relu"]})
    config = ["--config", str(path), "--out", "sw"]
    assert main(config) == 0
    last = tmp_path / "sw" / "runs" / "01-relu" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    capsys.readouterr()
    assert main([*config, "--report"]) == 1
    damaged = [r for r in rows(tmp_path / "sw") if r["point"] == "01-relu"][0]
    assert damaged["status"] == "damaged" and damaged["error"].startswith(
        "01-relu: Cannot read checkpoint"
    )
    assert (
        "`01-relu` (damaged): 01-relu: Cannot read checkpoint"
        in (tmp_path / "sw" / "summary.md").read_text()
    )
    assert main(config) == 0  # the re-run trains it again
    out = capsys.readouterr().out
    assert "[skip] 00-linear: finished earlier" in out and "Running 1 of 2 points" in out
    assert [r["status"] for r in rows(tmp_path / "sw")] == ["ok", "ok"]


@pytest.mark.slow
def test_a_point_that_another_sweep_is_running_is_left_to_it(tmp_path, capsys):
    from circles.runs.directory import try_lock

    path = write_sweep(tmp_path / "s.yaml", {"model.activation": ["none", "relu"]})
    config = ["--config", str(path), "--out", "sw"]
    # as a second sweep into the same --out would
    held = try_lock(tmp_path / "sw" / ".locks" / "00-linear")
    try:
        assert main(config) == 1
    finally:
        held.close()
    assert "00-linear  BUSY: another sweep process is running this point" in capsys.readouterr().out
    assert statuses(tmp_path / "sw" / "runs", ["00-linear", "01-relu"]) == {
        "00-linear": "none",
        "01-relu": "ok",
    }
    assert main(config) == 0
    assert "Running 1 of 2 points" in capsys.readouterr().out


@pytest.mark.slow
def test_a_sweep_over_members_reports_mean_spread_and_interval(tmp_path):
    from PIL import Image

    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "configs/relu.yaml",
                "fixed": {**TINY, "model.members": 3},
                "grid": {"model.activation": ["none", "relu"]},
            }
        )
    )
    assert main(["--config", str(path), "--out", "sw"]) == 0
    for row in rows(tmp_path / "sw"):
        assert row["members"] == "3" and float(row["test_acc_std"]) >= 0
        assert float(row["test_acc_min"]) <= float(row["test_acc"]) <= float(row["test_acc_max"])
        assert float(row["test_acc_ci95"]) == pytest.approx(
            4.302653 * float(row["test_acc_std"]) / 3**0.5, abs=2e-4
        )
    summary = (tmp_path / "sw" / "summary.md").read_text()
    assert "Each point trains 3 members (seeds)" in summary
    assert "| test acc (mean ± std) | 95% interval | range | ensemble |" in summary
    members = (tmp_path / "sw" / "runs" / "01-relu" / "members.csv").read_text().splitlines()
    assert members[0] == "member,seed,val_acc,val_acc_best,test_acc" and len(members) == 4
    with Image.open(tmp_path / "sw" / "boundaries.png") as image:
        assert image.width > 200


@pytest.mark.slow
def test_a_sweep_over_a_data_file_tests_on_its_held_out_part(tmp_path):
    from PIL import Image

    rings = REPO / "examples" / "rings.csv"
    path = tmp_path / "s.yaml"
    fixed = {k: v for k, v in TINY.items() if k not in ("data.n_samples", "data.test_samples")}
    path.write_text(
        yaml.safe_dump(
            {
                "base": "configs/improved.yaml",
                "fixed": {**fixed, "data.path": str(rings)},
                "grid": {"model.activation": ["none", "relu"]},
            }
        )
    )
    assert main(["--config", str(path), "--out", "sw"]) == 0
    table = rows(tmp_path / "sw")
    assert [row["status"] for row in table] == ["ok", "ok"]
    # 120 held-out points: accuracies are whole counts of them, written with 4 decimals
    for row in table:
        count = float(row["test_acc"]) * 120
        assert abs(count - round(count)) <= 120 * 0.5e-4
    output = (tmp_path / "sw" / "runs" / "01-relu" / "output.log").read_text()
    assert (
        "rings.csv (3 classes: inner, middle, outer)" in output
        and "test: 120 points held out of it" in output
    )
    with Image.open(tmp_path / "sw" / "boundaries.png") as image:
        assert image.width > 200


@pytest.mark.slow
def test_a_sweep_never_deletes_another_sweeps_point_under_the_same_name(tmp_path, capsys):
    """Two sweep files with the same grid and other fixed settings, into one folder: the second
    is refused before it runs anything, and the first one's finished work stays as it was."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = write_sweep(tmp_path / "a" / "task.yaml", {"model.activation": ["none"]})
    second = write_sweep(tmp_path / "b" / "task.yaml", {"model.activation": ["none"]})
    second.write_text(second.read_text().replace("data.n_samples: 100", "data.n_samples: 120"))
    assert main(["--config", str(first), "--out", "sw"]) == 0
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["--config", str(second), "--out", "sw"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "circles-sweep: error: sw/runs/00-linear holds another point's run (differing: "
    )
    assert "data.n_samples" in line and "nothing was run. Give this sweep its own --out" in line
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*") if p.is_file()} == stamps
    assert main(["--config", str(second), "--out", "sw2"]) == 0  # its own folder: it runs


@pytest.mark.slow
def test_a_killed_sweeps_points_continue_from_their_last_checkpoint(tmp_path):
    """``kill -9`` of the whole sweep leaves points with a whole last.ckpt and no result.json:
    the same command continues them from there, it does not start them over."""
    path = tmp_path / "s.yaml"
    fixed = {**LONG, "trainer.max_epochs": 1500}
    path.write_text(
        yaml.safe_dump(
            {"base": "configs/relu.yaml", "fixed": fixed, "grid": {"data.noise": [0.03, 0.05]}}
        )
    )
    names = [p.name for p in load_sweep(path).points]
    runs = tmp_path / "sw" / "runs"
    argv = [
        sys.executable,
        "-m",
        "circles.sweep",
        "--config",
        str(path),
        "--out",
        "sw",
        "--jobs",
        "2",
    ]
    with started(argv, tmp_path) as process:
        wait_for(
            lambda: all((runs / n / "checkpoints" / "last.ckpt").is_file() for n in names),
            "both points training",
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = {
        n: torch.load(runs / n / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        for n in names
    }
    assert all(0 < step < 1500 for step in killed.values()) and statuses(
        runs, names
    ) == dict.fromkeys(names, "none")
    assert main(["--config", str(path), "--out", "sw", "--jobs", "2"]) == 0
    for name in names:
        result = json.loads((runs / name / "result.json").read_text())
        assert (
            result["status"] == "ok"
            and f"--ckpt_path=sw/runs/{name}/checkpoints/last.ckpt" in result["args"]
        )
        assert (
            torch.load(runs / name / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
            == 1500
        )
        steps = sorted(scalars_by_step(runs / name)["train/loss"])
        assert steps == list(range(1500))  # the epochs before the kill kept, the rest added


def test_a_sweep_with_regions_counts_the_members_that_enclose_their_class_1_points(
    tmp_path, capsys
):
    """``regions: true``: each point's members are checked exactly (circles.model.regions); the
    count is the same the model's own regions give, in summary.csv and as ``k/K`` in summary.md;
    a point whose activation is not piecewise linear has an empty cell, and its line says why. ``layers: true``: the
    report's layers.png has a row per point, each the layer maps of its first member."""
    from PIL import Image

    from circles.data.module import CirclesDataModule
    from circles.model.classifier import CirclesClassifier
    from circles.model.regions import enclosed_members

    path = write_sweep(
        tmp_path / "s.yaml",
        {"model.activation": ["relu", "tanh"]},
        regions=True,
        layers=True,
        fixed={**TINY, "model.members": 3, "model.hidden_sizes": [3]},
    )
    assert main(["--config", str(path), "--out", "sw"]) == 0
    out = capsys.readouterr().out
    assert "; layers: sw/layers.png" in out
    relu, tanh = rows(tmp_path / "sw")
    (said,) = [line for line in out.splitlines() if "no exact regions" in line]
    assert f"] {tanh['point']}  ok" in said and said.endswith(
        "(no exact regions: model.activation must be relu, leaky_relu or none (piecewise linear) "
        "for exact regions, got 'Tanh'.)"
    )
    last = tmp_path / "sw" / "runs" / relu["point"] / "checkpoints" / "last.ckpt"
    model = CirclesClassifier.load_from_checkpoint(last, map_location="cpu", weights_only=True)
    data = CirclesDataModule.load_from_checkpoint(last, weights_only=True)
    data.setup("fit")
    count = enclosed_members(model, data)
    assert count is not None and relu["enclosed"] == str(count) and tanh["enclosed"] == ""
    markdown = (tmp_path / "sw" / "summary.md").read_text()
    assert f"| {count}/3 |" in markdown and "inner region closed" in markdown
    from circles.pictures.frames import HEADER
    from circles.pictures.layers import PANEL, layer_maps, layers_image

    x, y = (t.numpy() for t in data.points("train"))
    one = layers_image(layer_maps(model, x, (-1, 1, -1, 1)), y, 2, relu["point"])
    layers = Image.open(tmp_path / "sw" / "layers.png")
    # two points of one hidden layer: two rows of two panels (the plane, the layer)
    assert layers.size[0] == one.shape[1] >= 2 * PANEL
    assert 2 * (one.shape[0] + 12) <= layers.size[1] <= 2 * (one.shape[0] + 12 + HEADER + 6)
    for key in ("regions", "layers"):
        with pytest.raises(SweepError, match=f"'{key}' must be true or false"):
            load_sweep(
                write_sweep(tmp_path / "t.yaml", {"model.activation": ["relu"]}, **{key: "yes"})
            )


def test_the_width_depth_sweep_is_widths_by_depths_with_regions():
    sweep = load_sweep(REPO / "configs" / "sweeps" / "width_depth.yaml")
    sizes = [p.settings["model.hidden_sizes"] for p in sweep.points]
    assert sizes == [[w] * d for w in (1, 2, 3, 4, 8) for d in (1, 2, 4, 8)]
    assert sweep.regions and sweep.layers and sweep.columns == 4
    assert sweep.fixed["model.activation"] == "relu" and sweep.fixed["model.members"] == 16
