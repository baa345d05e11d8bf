"""Run directories and their files: where runs go, atomic writes, the one private TensorBoard
call we depend on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from circles.errors import ConfigError
from circles.runs.checkpoints import CONFIG_KEY, resolve_checkpoint, run_of_checkpoint
from circles.runs.directory import InputError, atomic_file, claim_version, try_lock
from circles.runs.logger import TensorBoardRunLogger

from helpers import (
    QUIET,
    SMALL,
    TINY,
    error_lines,
    evaluation_dirs,
    exit_status,
    load_checkpoint,
    run_dir,
    run_names,
)

RUN = [*SMALL, "--trainer.max_epochs=2"]  # a two-epoch run


def test_claim_version_takes_the_next_free_number_and_never_one_that_exists(tmp_path):
    assert [claim_version(tmp_path / "runs") for _ in range(2)] == ["0000", "0001"]
    assert claim_version(tmp_path / "runs", "relu-10x10") == "0002-relu-10x10"
    (tmp_path / "runs" / "version_7-spiral").mkdir()  # an earlier release's name counts
    (tmp_path / "runs" / "version_x").mkdir()
    (tmp_path / "runs" / "evaluations").mkdir()
    assert claim_version(tmp_path / "runs") == "0008"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "0000",
        "0001",
        "0002-relu-10x10",
        "0008",
        "evaluations",
        "version_7-spiral",
        "version_x",
    ]


def _claim_at_once(root: str, label: str, start: Any) -> str:
    start.wait()
    return claim_version(root, label)


def test_runs_claimed_at_the_same_moment_get_distinct_numbers_whatever_their_labels(tmp_path):
    """Eight processes claim at once, each with its own label: eight numbers (an atomic mkdir
    alone would let ``version_0-a`` and ``version_0-b`` both succeed)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(8) as pool:
        start = manager.Barrier(8)
        names = pool.starmap(_claim_at_once, [(str(tmp_path), f"run{i}", start) for i in range(8)])
    numbers = sorted(int(name.split("-")[0]) for name in names)
    assert numbers == list(range(8)), names


def test_the_logger_claims_its_directory_only_when_it_is_first_asked_for(tmp_path):
    logger = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs")
    # a run that fails before writing anything leaves nothing behind
    assert not (tmp_path / "runs").exists()
    assert logger.version == "0000" and logger.version == "0000"
    assert (
        logger.log_dir == str(tmp_path / "runs" / "0000") and (tmp_path / "runs" / "0000").is_dir()
    )
    assert (
        TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", label="relu").version
        == "0001-relu"
    )
    assert TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version=5).log_dir == str(
        tmp_path / "runs" / "0005"
    )
    assert TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version="mine").log_dir == str(
        tmp_path / "runs" / "mine"
    )


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


def test_best_and_last_are_the_newest_files_of_a_run_of_the_model_asked_for(tmp_path):
    """``ours`` stands for the command line's check of a checkpoint's model against the config:
    here it takes version_0's and version_1's files (one model) and refuses version_2's."""
    age = {"version_0": 3, "version_1": 2, "version_2": 1}  # version_0's files are the newest
    for run, newness in age.items():
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        for name in ("last.ckpt", "best.ckpt") if run != "version_0" else ("last.ckpt",):
            (tmp_path / run / "checkpoints" / name).write_bytes(b"0")
            os.utime(tmp_path / run / "checkpoints" / name, (newness, newness))
    (tmp_path / "version_0" / "checkpoints" / "best.ckpt").mkdir()  # a folder is no file

    def ours(file: Path) -> str | None:
        return "another model" if file.parent.parent.name == "version_2" else None

    found = resolve_checkpoint("last", tmp_path, ours)
    assert found == tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert run_of_checkpoint(found) == "version_0"
    read: list[Path] = []  # newest first, and no file read past the one taken
    resolve_checkpoint("last", tmp_path, lambda file: read.append(file) or ours(file))
    assert read == [found]
    # the newest run of the model without a best.ckpt: the newest that has one
    assert resolve_checkpoint("best", tmp_path, ours).parent.parent.name == "version_1"
    assert resolve_checkpoint("some/file.ckpt", tmp_path, ours) == Path("some/file.ckpt")
    # another model's newer run is passed over; when no run is of the model, the error names the
    # newest run's config and file, ready to paste
    os.utime(tmp_path / "version_2" / "checkpoints" / "last.ckpt", (9, 9))
    assert resolve_checkpoint("last", tmp_path, ours).parent.parent.name == "version_0"
    with pytest.raises(ConfigError) as refused:
        resolve_checkpoint("last", tmp_path, lambda file: "model.x must be 1, got 2")
    newest = tmp_path / "version_2"
    assert (
        "of the model this config describes (the newest run's: model.x must be 1, got 2); give "
        f"its config and file to use it, --config {newest / 'config.yaml'} --ckpt_path "
        f"{newest / 'checkpoints' / 'last.ckpt'}, or start a new run without --ckpt_path."
        in str(refused.value)
    )
    with pytest.raises(ConfigError, match="No run under .* has checkpoints/best.ckpt\\.$"):
        resolve_checkpoint("best", tmp_path / "empty", ours)


def test_one_process_writes_a_run_at_a_time(tmp_path):
    first = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version="shared")
    assert first.version == "shared"
    with pytest.raises(
        InputError, match=r"runs/shared is being written by another process \(pid \d+\)"
    ):
        _ = TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version="shared").version
    first.finalize("success")  # the run is done: the directory is free again
    assert (
        TensorBoardRunLogger(save_dir=str(tmp_path), name="runs", version="shared").version
        == "shared"
    )


@pytest.mark.slow
def test_default_root_dir_holds_the_runs_and_best_last_find_them_there(tmp_path, monkeypatch):
    """``cd elsewhere && python train.py fit --trainer.default_root_dir DIR``: logs, checkpoints,
    pictures and the config go under DIR/lightning_logs; ``--ckpt_path last`` finds the run there
    and continues it in place."""
    elsewhere, scratch = tmp_path / "elsewhere", tmp_path / "scratch"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    root = f"--trainer.default_root_dir={scratch}"
    assert exit_status("fit", *RUN, root) == 0
    run = run_dir(scratch / "lightning_logs", 0)
    for name in (
        "config.yaml",
        "hparams.yaml",
        "decision_boundary.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    assert exit_status("test", *RUN, root, "--ckpt_path=best") == 0
    assert (run / "evaluations" / "0000-test" / "decision_boundary_test.png").is_file()
    assert exit_status("fit", *RUN, root, "--ckpt_path=last", "--trainer.max_epochs=3") == 0
    assert run_names(scratch / "lightning_logs") == ["0000"]
    # the resumed fit (and its test) wrote into the run, beside the evaluation's event file
    events = sorted(p.suffix for p in run.glob("events.out.tfevents.*"))
    assert len(events) == 3 and events.count(".0000-test") == 1, events
    assert os.listdir(elsewhere) == []
    assert exit_status("fit", *RUN, "--ckpt_path=last") == 2  # nothing under the working directory


# ------------------------------------------------------------------------------------------ the run's record


@pytest.mark.slow
def test_config_yaml_repeats_the_run_in_a_new_directory_and_records_what_a_resume_changed(tmp_path):
    assert exit_status("fit", *RUN) == 0
    run = run_dir(tmp_path / "lightning_logs", 0)
    assert exit_status("fit", *RUN, "--ckpt_path=last", "--trainer.max_epochs=4") == 0
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        record["ckpt_path"] is None and record["trainer"]["logger"]["init_args"]["version"] is None
    )
    assert record["trainer"]["max_epochs"] == 4  # what trained: the resume went on to epoch 4
    assert yaml.safe_load(load_checkpoint(run / "checkpoints" / "last.ckpt")[CONFIG_KEY]) == record

    # repeat: a new run, same numbers
    assert exit_status("fit", "--config", str(run / "config.yaml"), *QUIET) == 0
    repeat = run_dir(tmp_path / "lightning_logs", 1)
    assert load_checkpoint(repeat / "checkpoints" / "last.ckpt")["global_step"] == 4
    for key, value in load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"].items():
        assert torch.equal(
            value, load_checkpoint(repeat / "checkpoints" / "last.ckpt")["state_dict"][key]
        ), key


@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, capfd):
    assert exit_status("fit", *RUN) == 0
    run = run_dir(tmp_path / "lightning_logs", 0)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    for change, named in [
        ("--model.optimizer.class_path=torch.optim.Adam", "model.optimizer.class_path"),
        (
            "--model.optimizer.init_args.lr=0.001",
            "model.optimizer.init_args.lr (trained: 0.1, now: 0.001)",
        ),
        ("--data.noise=0.1", "data.noise (trained: 0.03, now: 0.1)"),
        (
            "--model.hidden_sizes=[32]",
            "model.hidden_sizes must be left out or [10, 10], the checkpoint's, got [32]",
        ),
    ]:
        assert exit_status("fit", *RUN, "--ckpt_path=last", change) == 2
        (line,) = error_lines(capfd.readouterr().err)
        assert named in line and "start a new run without --ckpt_path" in line
    assert {
        p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"
    } == before
    assert run_names(tmp_path / "lightning_logs") == ["0000"]


@pytest.mark.parametrize(
    ("key", "text", "held"),
    [("hidden_sizes", [4], [10, 10]), ("activation", "tanh", "relu"), ("l2", 0.5, 0.0)],
)
def test_a_resume_trusts_the_checkpoints_hyperparameters_over_its_config_text(
    tmp_path, capfd, key, text, held
):
    """A checkpoint whose recorded config says one model setting and whose hyperparameters (what
    its weights were built with) say another: a resume that leaves the setting out continues the
    network it holds; one that gives the text's value is refused, naming the held one, never
    dropped."""
    assert exit_status("fit", *RUN) == 0
    last = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    record = yaml.safe_load(checkpoint[CONFIG_KEY])
    assert record["model"][key] == held
    record["model"][key] = text
    checkpoint[CONFIG_KEY] = yaml.safe_dump(record)
    torch.save(checkpoint, tmp_path / "told.ckpt")
    given = f"--model.{key}={text if isinstance(text, str) else json.dumps(text)}"
    assert exit_status("fit", *RUN, "--ckpt_path=told.ckpt", given) == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert f"model.{key} must be left out or {held!r}, the checkpoint's" in line
    assert exit_status("fit", *SMALL, "--trainer.max_epochs=3", "--ckpt_path=told.ckpt") == 0
    resumed = load_checkpoint(run_dir(tmp_path / "lightning_logs", 1) / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 3 and resumed["hyper_parameters"][key] == held
    assert yaml.safe_load(resumed[CONFIG_KEY])["model"][key] == held


def test_a_run_being_written_is_not_resumed_by_a_second_process(tmp_path, capfd):
    assert exit_status("fit", *RUN) == 0
    run = run_dir(tmp_path / "lightning_logs", 0)
    held = try_lock(run / ".lock")  # as another process writing the run would
    try:
        assert exit_status("fit", *RUN, "--ckpt_path=last", "--trainer.max_epochs=4") == 2
    finally:
        held.close()
    (line,) = error_lines(capfd.readouterr().err)
    assert f"{run.relative_to(tmp_path)} is being written by another process" in line
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert exit_status("fit", *RUN, "--ckpt_path=last", "--trainer.max_epochs=4") == 0  # free again


def test_without_a_logger_each_run_still_gets_its_own_directory(tmp_path):
    for _ in range(2):
        assert exit_status("fit", *RUN, "--trainer.logger=false") == 0
    runs = tmp_path / "lightning_logs"
    # nothing in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lightning_logs"]
    for name in (run_dir(runs, 0).name, run_dir(runs, 1).name):
        assert {"config.yaml", "decision_boundary.png", "checkpoints"} <= {
            p.name for p in (runs / name).iterdir()
        }
        assert not list((runs / name).glob("events.out.tfevents.*"))
    assert (
        yaml.safe_load((run_dir(runs, 0) / "config.yaml").read_text())["trainer"][
            "default_root_dir"
        ]
        is None
    )
    assert (
        exit_status(
            "fit", *RUN, "--trainer.logger=false", "--ckpt_path=last", "--trainer.max_epochs=3"
        )
        == 0
    )
    assert load_checkpoint(run_dir(runs, 1) / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert run_names(runs) == ["0000", "0001"]


def test_a_data_file_with_a_long_name_gets_a_run_directory_the_file_system_takes(tmp_path):
    name = "p" * 240 + ".csv"
    (tmp_path / name).write_text(
        "x1,x2,label\n" + "".join(f"{i / 10},{i % 7},{i % 2}\n" for i in range(40))
    )
    assert exit_status("fit", f"--data.path={name}", *RUN) == 0
    (run,) = (tmp_path / "lightning_logs").iterdir()
    assert run.name.startswith("0000-relu-10x10-sgd0.1-e2-pppp") and len(run.name) <= 110
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_an_evaluation_of_a_run_it_may_not_write_into_goes_to_default_root_dir(
    tmp_path, tiny_run, monkeypatch
):
    """Runs copied read-only (or another user's): the evaluation is not refused for the run's
    folder, and --trainer.default_root_dir (the advice a refused write gives) says where it goes."""
    import circles.cli.settle as settle

    runs = tmp_path / "shared" / "lightning_logs"
    shutil.copytree(tiny_run / "lightning_logs", runs)
    checkpoint = run_dir(runs, 0) / "checkpoints" / "last.ckpt"
    real_access = os.access
    monkeypatch.setattr(
        settle.os,
        "access",
        lambda path, mode: False if Path(path).is_relative_to(runs) else real_access(path, mode),
    )
    mine = tmp_path / "mine"
    args = ["test", *TINY, f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={mine}"]
    assert exit_status(*args) == 0
    assert not (run_dir(runs, 0) / "evaluations").exists()
    (evaluation,) = evaluation_dirs(mine / "lightning_logs")
    assert (evaluation / "config.yaml").is_file()


def test_hparams_columns_open_on_what_a_sweep_varies():
    """TensorBoard orders HPARAMS columns by name and ticks the first few: a sweep's varied
    settings (noise here, the one thing its rows differ in) come first, the rest keep their
    order."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    from circles.runs.hparams import HPARAM_COLUMNS, column_order, hparams_session

    values = {
        "activation": "relu",
        "dataset": "circles",
        "hidden_sizes": [10, 10],
        "max_epochs": 100,
        "noise": 0.1,
        "factor": 0.5,
    }

    def columns(first):
        config, _ = hparams_session(values, "trial", first)
        data = plugin_data_pb2.HParamsPluginData.FromString(
            config.value[0].metadata.plugin_data.content
        )
        return [h.name for h in data.experiment.hparam_infos]

    assert columns([]) == ["0 activation", "1 dataset", "2 hidden layers", "3 epochs", "4 noise"]
    assert columns(["data.noise", "data.factor"])[:3] == ["0 noise", "1 factor", "2 activation"]
    assert [key for key, _ in column_order(["model.optimizer.init_args.lr"])][:2] == [
        "optimizer",
        "activation",
    ]
    assert column_order([]) == list(HPARAM_COLUMNS)
