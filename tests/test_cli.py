"""End to end through the command line, in-process (``cli_main``), on the CPU, in a temporary
directory."""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.plugins.hparams import plugin_data_pb2

from circles import commands
from circles.cli import cli_main
from circles.model.classifier import CirclesClassifier
from circles.pictures.notes import affine_text

from helpers import (
    CONFIGS,
    REPO,
    exit_status,
    final_scalar,
    load_checkpoint,
    read_events,
    run_dir,
    scalar_history,
)

TINY = ["--trainer.max_epochs=3", "--data.n_samples=100", "--data.test_samples=200"]


def test_a_network_of_ones_own_names_its_run_by_its_class(run_cli):
    """``--model.network`` replaces the MLP: the run is named by the network's class, not by the
    hidden sizes and activation it does not use."""
    own = ["--model.network=torch.nn.Linear", "--model.network.in_features=2"]
    run = run_cli("fit", *TINY, *own, "--model.network.out_features=1", "--boundary.gif=false")
    assert run.name == "0000-Linear-sgd0.1-e3-circles"


def test_run_directory_holds_logs_config_hparams_and_checkpoints(run_cli):
    run = run_cli("fit", *TINY)
    # numbered in order, named after what it trains
    assert run.name == "0000-relu-10x10-sgd0.1-e3-circles"
    tags = scalar_history(run)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"):
        assert [step for step, _ in tags[tag]] == [0, 1, 2], tag
    assert yaml.safe_load((run / "hparams.yaml").read_text())["hidden_sizes"] == [10, 10]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 3 and config["data"]["n_samples"] == 100
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert (run / "decision_boundary.png").is_file()

    # fit ends with the test of its final weights
    assert {"test/acc", "test/loss"} <= set(scalar_history(run))
    # at the last epoch's step: beside the curves' ends
    assert scalar_history(run)["test/acc"][0][0] == 2
    test_run = run_cli("test", *TINY, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    # with the run it evaluated, out of the fits' way; its scalars in that run's TensorBoard
    # events, so the run list stays the fits
    assert test_run == run / "evaluations" / "0000-test"
    assert not list(test_run.rglob("events.out.tfevents.*"))
    assert sorted(t for t in read_events(run).Tags()["scalars"] if "evaluation" in t) == [
        "evaluation/test_acc",
        "evaluation/test_bayes_acc",
        "evaluation/test_bayes_gap",
        "evaluation/test_loss",
    ]
    # the same weights, the same step
    assert scalar_history(run)["evaluation/test_acc"] == scalar_history(run)["test/acc"]


def test_hyperparameters_and_best_val_acc_reach_tensorboards_hparams_tab(run_cli):
    run = run_cli("fit", *TINY, "--model.optimizer.init_args.lr=0.05")
    content = read_events(run).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hparams = {k: v.ListFields()[0][1] for k, v in start.hparams.items()}
    assert start.group_name == run.name  # the table's trial id is the run's name
    assert hparams == {
        "0 activation": "relu",
        "1 dataset": "circles",
        "2 hidden layers": "[10, 10]",
        "3 epochs": "3",
        "4 optimizer": "SGD lr 0.05",
        "5 Bayes-optimal acc": "0.9996",
        "6 seeds (members)": "1",
        "7 noise": "0.03",
        "8 seed": "42",
        "9 points per step": "all (full batch)",
    }
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    # TensorBoard ticks the first five
    assert [h.display_name for h in experiment.hparam_infos][:5] == [
        "activation",
        "dataset",
        "hidden layers",
        "epochs",
        "optimizer",
    ]
    assert [(m.name.group, m.name.tag, m.display_name) for m in experiment.metric_infos] == [
        ("", "val/acc_best", "best val acc"),
        ("", "test/acc", "test acc"),
    ]
    # every declared metric: the run is drawn
    assert {"val/acc_best", "test/acc"} <= set(scalar_history(run))
    assert final_scalar(run, "val/acc_best") == max(v for _, v in scalar_history(run)["val/acc"])


def test_last_ckpt_holds_the_final_epoch_and_best_ckpt_the_best(run_cli):
    # improved.yaml reaches val acc 1.0 at epoch 23 and never beats it: best stays there, last moves on
    run = run_cli("fit", "--config", str(CONFIGS / "improved.yaml"), "--trainer.max_epochs=40")
    best, last = (
        load_checkpoint(run / "checkpoints" / "best.ckpt"),
        load_checkpoint(run / "checkpoints" / "last.ckpt"),
    )
    assert last["global_step"] == 40
    assert best["global_step"] < 40
    val_acc = scalar_history(run)["val/acc"]
    first_best = next(step for step, v in val_acc if v == max(v for _, v in val_acc))
    assert best["global_step"] == first_best + 1


@pytest.mark.slow
def test_fit_ckpt_path_last_resumes_into_the_same_run_and_matches_an_uninterrupted_run(
    run_cli, tmp_path
):
    args = ["--config", str(CONFIGS / "improved.yaml"), "--checkpoint.last_every_n_epochs=10"]
    run = run_cli("fit", *args, "--trainer.max_epochs=20")
    resumed = run_cli("fit", *args, "--trainer.max_epochs=40", "--ckpt_path", "last")
    assert resumed == run  # no new run: logs and checkpoints continue in the same directory
    assert [s for s, _ in scalar_history(run)["train/loss"]] == list(range(40))
    straight = run_cli("fit", *args, "--trainer.max_epochs=40")
    assert straight.name.startswith("0001-")
    a, b = (
        load_checkpoint(run / "checkpoints" / "last.ckpt"),
        load_checkpoint(straight / "checkpoints" / "last.ckpt"),
    )
    assert a["global_step"] == b["global_step"] == 40
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.slow
def test_validate_test_and_predict_accept_best_last_and_a_path(run_cli, capsys):
    run = run_cli("fit", *TINY)
    run_cli("validate", *TINY, "--ckpt_path", "best")
    run_cli("test", *TINY, "--ckpt_path", str(run / "checkpoints" / "best.ckpt"))
    out = capsys.readouterr().out
    assert "Validation: acc " in out and "(best.ckpt)" in out and "Test: acc " in out

    predict_run = run_cli("predict", *TINY, "--ckpt_path", "last")
    with open(predict_run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and list(rows[0]) == ["x1", "x2", "probability", "label"]
    assert all(r["label"] in ("0", "1") and float(r["probability"]) >= 0.5 for r in rows)

    points = Path("points.csv")
    points.write_text("x1,x2\n0,0\n1.5,1.5\n")
    predict_run = run_cli("predict", *TINY, "--ckpt_path", "last", f"--data.predict_path={points}")
    rows = list(csv.DictReader(open(predict_run / "predictions.csv")))
    assert [(float(r["x1"]), float(r["x2"])) for r in rows] == [(0.0, 0.0), (1.5, 1.5)]


def test_best_and_last_find_the_newest_run_of_the_model_the_config_describes(run_cli, capsys):
    """README's order: one model, then another; ``test --ckpt_path last`` with each model's
    settings evaluates that model's run, whichever is newer (a setting left at its default asks
    for nothing: the newest run). For a model no run trained, the error gives the newest run's
    config and checkpoint, and that command works."""
    narrow = run_cli("fit", *TINY, "--model.hidden_sizes=[6]")
    wide = run_cli("fit", *TINY, "--model.hidden_sizes=[16, 16]")
    for model, run in (("[6]", narrow), ("[16, 16]", wide), ("[10, 10]", wide)):
        evaluated = run_cli("test", *TINY, f"--model.hidden_sizes={model}", "--ckpt_path", "last")
        assert evaluated.parent.parent == run  # <run>/evaluations/0000-test
    capsys.readouterr()
    assert exit_status("test", *TINY, "--model.hidden_sizes=[8]", "--ckpt_path", "last") == 2
    advice = capsys.readouterr().err
    config, ckpt = re.search(r"--config (\S+) --ckpt_path (\S+), or start", advice).groups()
    wide = wide.relative_to(Path.cwd())  # as the command was given: lightning_logs/...
    assert (config, ckpt) == (str(wide / "config.yaml"), str(wide / "checkpoints" / "last.ckpt"))
    assert exit_status("test", "--config", config, "--ckpt_path", ckpt) == 0


def test_print_config_prints_a_complete_config_that_runs(run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert (
        config["model"]["optimizer"]["class_path"] == "torch.optim.SGD"
        and config["model"]["optimizer"]["init_args"]["lr"] == 0.1
    )
    for section in ("trainer", "model", "data", "checkpoint", "boundary", "chapter_log"):
        assert section in config
    Path("printed.yaml").write_text(printed)
    run = run_cli("fit", "--config", "printed.yaml", *TINY)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_chapter_line_and_end_of_fit_summary(run_cli, capsys):
    run = run_cli("fit", *TINY, "--chapter_log.every_n_epochs=2")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("Epoch: ")]
    assert [line.split(" |")[0] for line in lines] == ["Epoch: 0", "Epoch: 2"]
    assert all(
        " | Train loss: " in line and "% | Val loss: " in line and line.endswith("%")
        for line in lines
    )
    assert "Best val/acc: " in out
    assert f"Run directory: {run.relative_to(Path.cwd())}" in out
    assert "tensorboard --logdir lightning_logs" in out
    assert f"Decision boundary: {(run / 'decision_boundary.png').relative_to(Path.cwd())}" in out


def test_the_last_epoch_has_its_chapter_line_and_fit_ends_with_its_test(run_cli, capsys):
    run_cli("fit", *TINY, "--trainer.max_epochs=4", "--chapter_log.every_n_epochs=2")
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" |")[0] for line in out if line.startswith("Epoch: ")] == [
        "Epoch: 0",
        "Epoch: 2",
        "Epoch: 3",
    ]
    (test,) = [i for i, line in enumerate(out) if line.startswith("Test: ")]
    assert "on 200 points, weights of epoch 3 (the end of the fit)" in out[test]
    assert re.fullmatch(r"  Bayes-optimal acc 0\.9996: gap [+-]0\.\d{4}, .+", out[test + 1])
    # the summary after it
    assert test < next(i for i, line in enumerate(out) if line.startswith("Best val/acc: "))
    # no progress bar, no table of 17 digits
    assert not any("DataLoader" in line or "─" in line for line in out)


def test_evaluations_say_which_weights_they_measured(run_cli, capsys):
    run = run_cli(
        "fit",
        "--config",
        str(CONFIGS / "improved.yaml"),
        "--trainer.max_epochs=30",
        "--data.test_samples=200",
        "--test_after_fit=false",
    )
    capsys.readouterr()
    validated = run_cli("validate", "--ckpt_path", "best", "--data.test_samples=200")
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    (line, note, where) = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert validated is not None and where == f"Run directory: {os.path.relpath(validated)}"
    assert line.startswith("Validation: acc 1.0000, loss ") and line.endswith(
        f"on 200 points, weights of epoch {best['circles_weights_epoch']} (best.ckpt)"
    )
    assert "the first epoch that reached the best val/acc" in note
    tested = run_cli("test", "--ckpt_path", "last", "--data.test_samples=200")
    out = capsys.readouterr().out
    assert "weights of epoch 29 (last.ckpt)" in out
    assert tested is not None and out.splitlines()[-2:] == [
        f"Run directory: {os.path.relpath(tested)}",
        f"Decision boundary: {os.path.relpath(tested / 'decision_boundary_test.png')}",
    ]
    # in the run it evaluated
    assert [step for step, _ in scalar_history(run)["evaluation/test_acc"]] == [29]


def test_a_linear_network_prints_the_one_affine_map_it_is(run_cli, capsys):
    run = run_cli("fit", *TINY, "--model.activation=none", "--model.hidden_sizes=[4, 3]")
    out = capsys.readouterr().out
    (line,) = [line.strip() for line in out.splitlines() if line.strip().startswith("logit = ")]
    model = CirclesClassifier(hidden_sizes=[4, 3], activation="none")
    model.load_state_dict(
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    )
    weights, biases = model.collapsed()
    assert (
        line
        == f"logit = {affine_text(weights[0, 0], biases[0, 0], ['x1', 'x2'])}; the boundary is where it is 0"
    )
    assert "No activation, so the layers are one affine map:" in out
    run_cli("fit", *TINY)
    assert "logit = " not in capsys.readouterr().out  # a ReLU network is no such map


def test_console_script_is_the_command_train_py_runs():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "circles"]
    assert script.load() is commands.main


def test_python_m_circles_cli_is_the_command_line_the_slurm_scripts_run():
    result = subprocess.run(
        [sys.executable, "-m", "circles.cli", "fit", "--model.activation=swish"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.startswith("circles: error: model.activation")


@pytest.mark.slow
def test_train_py_runs_fit_with_no_config(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "fit",
            "--trainer.max_epochs=2",
            "--data.test_samples=10",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Best val/acc" in result.stdout
    assert (run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt").is_file()


def test_members_log_their_mean_and_spread_and_write_members_csv(run_cli):
    fit = run_cli("fit", *TINY, "--model.members=4")
    logged = scalar_history(fit)
    assert {"val/acc_std", "val/acc_min", "val/acc_max", "val/acc_best"} <= set(logged)
    with open(fit / "members.csv") as f:
        members = list(csv.DictReader(f))
    assert [int(m["seed"]) for m in members] == [42, 43, 44, 45]
    val = [float(m["val_acc"]) for m in members]
    assert sum(val) / 4 == pytest.approx(logged["val/acc"][-1][1], abs=1e-6)
    assert min(val) == pytest.approx(logged["val/acc_min"][-1][1], abs=1e-6)

    test = run_cli("test", *TINY, "--ckpt_path=last")  # the checkpoint says 4 members
    # the evaluation's numbers, in the run it evaluated
    logged = {
        tag.replace("evaluation/test_", "test/"): values[-1][1]
        for tag, values in scalar_history(fit).items()
        if tag.startswith("evaluation/")
    }
    with open(test / "members.csv") as f:
        tested = [float(m["test_acc"]) for m in csv.DictReader(f)]
    assert sum(tested) / 4 == pytest.approx(logged["test/acc"], abs=1e-6)
    assert logged["test/acc_std"] == pytest.approx(statistics.stdev(tested), abs=1e-6)
    # t(0.975, 3)
    assert logged["test/acc_ci95"] == pytest.approx(3.182446 * logged["test/acc_std"] / 2, rel=1e-5)
    assert 0 <= logged["test/acc_ensemble"] <= 1
    assert logged["test/bayes_gap"] == pytest.approx(
        logged["test/bayes_acc"] - logged["test/acc"], abs=1e-6
    )

    predicted = run_cli("predict", *TINY, "--ckpt_path=last")
    assert (predicted / "predictions.csv").read_text().splitlines()[
        0
    ] == "x1,x2,probability,probability_std,label"


def test_the_seed_spread_script_reads_its_runs_members(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "seed_spread", REPO / "scripts" / "seed_spread.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.spread(3, 2)
    assert [row["seed"] for row in rows] == [42, 43, 44] and all(
        0 <= row["val_acc"] <= 1 for row in rows
    )
    script.draw(rows, tmp_path / "spread.png", 2)
    assert (tmp_path / "spread.png").read_bytes()[:4] == b"\x89PNG"


def test_a_perfect_score_on_few_test_points_is_within_the_sampling_error_of_the_best_possible(
    run_cli, capsys
):
    """10 of 10 test points right says nothing against a Bayes-optimal 0.9996 (the interval of 10
    points reaches down to 0.72): not "above the best possible", as a normal approximation around
    1.0 (width 0) would say."""
    run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / "improved.yaml"),
        "--trainer.max_epochs=30",
        "--data.test_samples=10",
        "--boundary.every_n_epochs=1000",
    )
    out = capsys.readouterr().out
    assert "Test: acc 1.0000" in out
    assert (
        "Bayes-optimal acc 0.9996: gap -0.0004, within the sampling error (the 95% interval of 10 test points: "
        "0.7225 to 1.0000)"
    ) in out


def test_a_run_stopped_early_says_so_and_is_named_apart(run_cli, capsys):
    """EarlyStopping (configs/trainer/until_val_acc_1.yaml): the last epoch's progress line, why
    and when it stopped, and a run name and HPARAMS row that tell it from the plain run."""
    run = run_cli(
        "fit",
        "--config",
        str(CONFIGS / "improved.yaml"),
        "--config",
        str(CONFIGS / "trainer" / "until_val_acc_1.yaml"),
        "--data.test_samples=200",
    )
    out = capsys.readouterr().out
    epochs = [epoch for epoch, _ in scalar_history(run)["val/acc"]]
    last = epochs[-1]
    assert last < 99 and last % 10  # stopped off the 10-epoch rhythm, so the line is its own
    assert re.findall(r"^Epoch: (\d+) \|", out, re.M)[-1] == str(last)
    assert re.search(
        rf"^Stopped after epoch {last} of 100 by EarlyStopping: Stopping threshold reached: "
        r"val/acc = 1\.0 > 0\.9999\.$",
        out,
        re.M,
    )
    assert run.name.endswith("-e100-earlystop-circles")
    assert yaml.safe_load((run / "hparams.yaml").read_text())["callbacks"] == "EarlyStopping"


def test_the_help_names_every_subcommand_compare_included(capsys):
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in ("fit", "validate", "test", "predict"))
    assert "compare CONFIG [CONFIG ...] trains each config and writes the lesson page" in out


LOADING = """
import gc, sys
automatic = []  # collections started while torch loaded, before what it loaded was frozen
gc.callbacks.append(
    lambda phase, info: phase == "start"
    and "torch" in sys.modules
    and not gc.get_freeze_count()
    and automatic.append(info)
)
from circles.commands import main
try:
    main(["fit", "--help"])
except SystemExit:
    pass
print(len(automatic), gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)
"""


def test_the_command_loads_torch_and_lightning_without_collecting_and_freezes_what_it_loaded():
    """The command's first import of torch and Lightning runs no garbage collection (each full
    one walks every object loaded so far), then leaves those objects out of later collections
    (``gc.freeze``) and collects again."""
    out = subprocess.run(
        [sys.executable, "-c", LOADING], capture_output=True, text=True, check=True, cwd=REPO
    )
    automatic, enabled, frozen = out.stderr.split()[-3:]
    assert int(automatic) == 0
    assert enabled == "True"
    assert int(frozen) > 100_000  # torch's and Lightning's objects
