"""Training on your own points: a CSV file with x1, x2 and label columns (``data.path``), split
into training, validation and test parts or tested on ``data.test_path``; labels as integers or
class names, two classes or more."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from circles.data.files import encode_labels, read_labelled_csv
from circles.data.module import CirclesDataModule
from circles.errors import ConfigError

from helpers import error_lines, evaluation_dirs, exit_status, load_checkpoint, run_dir

TINY = ["--trainer.max_epochs=3", "--boundary.every_n_epochs=2", "--boundary.resolution=20"]


def write_points(
    path: Path,
    n_per_class: int,
    names: list[str],
    seed: int = 0,
    extra_column: bool = True,
    newline: str = "\n",
    bom: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Well-separated blobs, one per name, in shuffled order; returns the points and labels
    written."""
    rng = np.random.default_rng(seed)
    centres = np.stack(
        [
            np.cos(np.arange(len(names)) * 2 * np.pi / len(names)),
            np.sin(np.arange(len(names)) * 2 * np.pi / len(names)),
        ],
        axis=1,
    )
    labels = np.repeat(np.arange(len(names)), n_per_class)
    rng.shuffle(labels)
    points = centres[labels] + rng.normal(0, 0.1, size=(len(labels), 2))
    header = ["id", "x1", "x2", "label"] if extra_column else ["x1", "x2", "label"]
    lines = [",".join(header)]
    for i, ((x1, x2), k) in enumerate(zip(points, labels, strict=True)):
        row = (
            [str(i), f"{x1:.6f}", f"{x2:.6f}", names[k]]
            if extra_column
            else [f"{x1:.6f}", f"{x2:.6f}", names[k]]
        )
        lines.append(",".join(row))
    path.write_bytes(("\ufeff" if bom else "").encode() + newline.join(lines + [""]).encode())
    return points.astype(np.float32), [names[k] for k in labels]


def test_read_labelled_csv_keeps_order_ignores_other_columns_and_takes_bom_and_crlf(tmp_path):
    points, labels = write_points(tmp_path / "p.csv", 5, ["b", "a"], newline="\r\n", bom=True)
    x, read = read_labelled_csv(tmp_path / "p.csv")
    assert read == labels
    assert torch.allclose(x, torch.from_numpy(points), atol=1e-6)


def test_names_map_to_classes_in_sorted_order_and_integers_to_themselves():
    y, classes, names = encode_labels(["dog", "cat", "emu", "cat"], "path", "f.csv")
    assert (classes, names, y.tolist()) == (3, ["cat", "dog", "emu"], [1, 0, 2, 0])
    y, classes, names = encode_labels(["2", "0", "1", "1"], "path", "f.csv")
    assert (classes, names, y.tolist()) == (3, None, [2, 0, 1, 1])
    y, _, _ = encode_labels(["emu", "cat"], "test_path", "t.csv", known=(3, ["cat", "dog", "emu"]))
    assert y.tolist() == [2, 0]  # a test file may lack a class


@pytest.mark.parametrize(
    ("labels", "known", "pattern"),
    [
        (["0", "0"], None, "at least two classes"),
        (["1", "2"], None, r"0\.\.C-1, each present.*\[1, 2\]"),
        (["0", "cat"], None, "mixes numbers"),
        (
            ["cat", "bird"],
            (2, ["cat", "dog"]),
            r"training data's classes \['cat', 'dog'\].*\['bird'\]",
        ),
        (["2"], (2, None), r"training data's classes \['0', '1'\]"),
    ],
)
def test_bad_labels_are_refused(labels, known, pattern):
    with pytest.raises(ConfigError, match=pattern):
        encode_labels(labels, "path", "f.csv", known=known)


def test_file_is_split_stratified_seeded_and_disjoint(tmp_path):
    write_points(tmp_path / "p.csv", 50, ["a", "b", "c"])
    dm = CirclesDataModule(
        path=str(tmp_path / "p.csv"), val_fraction=0.2, test_fraction=0.2, seed=7
    )
    assert (dm.num_classes, dm.class_names) == (3, ["a", "b", "c"])
    parts = [(dm.train_x, dm.train_y), (dm.val_x, dm.val_y), (dm.test_x, dm.test_y)]
    assert [len(y) for _, y in parts] == [90, 30, 30]
    for _, y in parts:  # every class in the file's proportions: a third each
        assert torch.bincount(y.long()).tolist() == [len(y) // 3] * 3
    every = torch.cat([x for x, _ in parts])
    assert len(torch.unique(every, dim=0)) == 150  # disjoint and complete
    again = CirclesDataModule(
        path=str(tmp_path / "p.csv"), val_fraction=0.2, test_fraction=0.2, seed=7
    )
    assert torch.equal(again.val_x, dm.val_x)
    other = CirclesDataModule(
        path=str(tmp_path / "p.csv"), val_fraction=0.2, test_fraction=0.2, seed=8
    )
    assert not torch.equal(other.val_x, dm.val_x)
    dm.setup("fit")
    dm.setup("test")
    assert torch.equal(dm.test_x, parts[2][0])  # nothing is drawn over the file's points


def test_test_path_replaces_the_held_out_part(tmp_path):
    write_points(tmp_path / "p.csv", 20, ["x", "y"])
    test_points, test_labels = write_points(tmp_path / "t.csv", 7, ["x", "y"], seed=1)
    dm = CirclesDataModule(
        path=str(tmp_path / "p.csv"), test_path=str(tmp_path / "t.csv"), val_fraction=0.25
    )
    assert (len(dm.train_y), len(dm.val_y), len(dm.test_y)) == (30, 10, 14)
    assert torch.allclose(dm.test_x, torch.from_numpy(test_points), atol=1e-6)
    assert dm.test_y.tolist() == [float(label == "y") for label in test_labels]
    assert "t.csv (14 points)" in dm.describe()
    assert dm.bayes_accuracy() is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"test_fraction": 0.85}, "test_fraction"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"classes": 3}, "classes"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "path"),  # 1 training point for 2 classes
    ],
)
def test_file_settings_that_cannot_work_are_refused(tmp_path, kwargs, field):
    write_points(tmp_path / "p.csv", 13, ["a", "b"])
    with pytest.raises(ConfigError) as info:
        CirclesDataModule(path=str(tmp_path / "p.csv"), **{"val_fraction": 0.2, **kwargs})
    assert info.value.field == field


def test_too_few_points_of_a_class_for_three_parts_is_refused(tmp_path):
    rows = ["x1,x2,label"] + [f"{i},0,a" for i in range(20)] + ["0,1,b", "1,1,b"]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"per class \[20, 2\].*at least 3 points of each class"):
        CirclesDataModule(path=str(tmp_path / "p.csv"))


def test_test_path_needs_path():
    with pytest.raises(ConfigError) as info:
        CirclesDataModule(test_path="t.csv")
    assert info.value.field == "test_path"


# -- through the command line -----------------------------------------------------------------------------------------


def test_fit_test_predict_on_a_three_class_file_of_names(tmp_path, capsys):
    write_points(tmp_path / "pets.csv", 30, ["cat", "dog", "emu"])
    assert (
        exit_status(
            "fit",
            "--data.path=pets.csv",
            "--model.optimizer=Adam",
            "--model.optimizer.init_args.lr=0.05",
            "--trainer.max_epochs=30",
            "--boundary.every_n_epochs=10",
            "--boundary.resolution=20",
        )
        == 0
    )
    out = capsys.readouterr().out
    run = run_dir(tmp_path / "lightning_logs", 0)
    assert run.name.startswith("0000-relu-") and run.name.endswith("-pets")
    assert (
        "Data: pets.csv (3 classes: cat, dog, emu): 54 training, 18 validation points (stratified split, seed 42); "
        "test: 18 points held out of it" in out
    )
    checkpoint = load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert checkpoint["hyper_parameters"]["num_classes"] == 3
    state = checkpoint["CirclesDataModule"]
    assert (state["num_classes"], state["class_names"]) == (3, ["cat", "dog", "emu"])
    record = state["files"]["path"]  # what trained: the file where it is, and what it held
    assert record["resolved"] == str((tmp_path / "pets.csv").resolve()) and record["points"] == 90
    assert len(record["fingerprint"]) == len(record["held_out"]) == 16
    assert checkpoint["state_dict"]["net.weights.2"].shape == (1, 3, 10)

    # test and predict take the file from the checkpoint: its held-out part, its class names
    assert exit_status("test", "--ckpt_path=best") == 0
    assert exit_status("predict", "--ckpt_path=best") == 0
    with open(
        evaluation_dirs(tmp_path / "lightning_logs")[-1] / "predictions.csv", newline=""
    ) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and set(rows[0]) == {"x1", "x2", "probability", "label"}
    dm = CirclesDataModule(path=str(tmp_path / "pets.csv"))
    written = torch.tensor([[float(r["x1"]), float(r["x2"])] for r in rows], dtype=torch.float64)
    # the rows are the held-out points, in order, each the number it is
    assert torch.equal(written.float(), dm.test_x)
    hits = sum(dm.class_names[int(y)] == r["label"] for y, r in zip(dm.test_y, rows, strict=True))
    assert hits >= 16  # well-separated blobs: the names written back are the right ones
    # the winning class's probability
    assert all(1 / 3 <= float(r["probability"]) <= 1 for r in rows)


def test_test_file_with_other_class_names_is_refused_and_nothing_written(tmp_path, capsys):
    write_points(tmp_path / "p.csv", 15, ["a", "b"])
    assert exit_status("fit", "--data.path=p.csv", *TINY) == 0
    write_points(tmp_path / "renamed.csv", 15, ["a", "c"])
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert exit_status("test", "--ckpt_path=best", "--data.path=renamed.csv") == 2
    err = capsys.readouterr().err
    assert "data.path" in err and "['a', 'b']" in err and "['a', 'c']" in err
    assert sorted((tmp_path / "lightning_logs").iterdir()) == runs  # no test run directory either


def test_checkpoint_for_other_classes_is_named_as_such(tmp_path, capsys):
    write_points(tmp_path / "p.csv", 15, ["a", "b"])
    write_points(tmp_path / "three.csv", 15, ["a", "b", "c"])
    assert exit_status("fit", "--data.path=p.csv", *TINY) == 0
    assert (
        exit_status(
            "fit", "--data.dataset=blobs", "--data.n_samples=80", "--data.test_samples=40", *TINY
        )
        == 0
    )
    first = run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "best.ckpt"
    assert exit_status("test", f"--ckpt_path={first}", "--data.path=three.csv") == 2
    assert "holds a network for 2 classes and the data has 3" in capsys.readouterr().err
    assert exit_status("test", "--ckpt_path=best") == 2  # the blobs run, on the default circles
    assert "holds a network for 4 classes and the data has 2" in capsys.readouterr().err


def test_integer_labels_with_features_and_members(tmp_path):
    write_points(tmp_path / "p.csv", 15, ["0", "1"], extra_column=False)
    assert (
        exit_status(
            "fit",
            "--data.path=p.csv",
            "--data.features=[x1,x2,x1_sq,x2_sq]",
            "--model.members=3",
            *TINY,
        )
        == 0
    )
    checkpoint = load_checkpoint(
        run_dir(tmp_path / "lightning_logs", 0) / "checkpoints" / "last.ckpt"
    )
    assert checkpoint["hyper_parameters"]["num_classes"] == 2
    assert checkpoint["CirclesDataModule"]["class_names"] is None
    assert (run_dir(tmp_path / "lightning_logs", 0) / "members.csv").is_file()


def test_a_three_arm_spiral_from_the_command_line(tmp_path):
    assert (
        exit_status(
            "fit", "--data.dataset=spiral", "--data.classes=3", "--data.n_samples=90", *TINY
        )
        == 0
    )
    run = run_dir(tmp_path / "lightning_logs", 0)
    assert run.name.startswith("0000-relu-10x10-") and run.name.endswith("-spiral3")
    assert (
        load_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]["num_classes"] == 3
    )
    assert (run / "decision_boundary.png").is_file()


def test_the_example_file_is_what_its_script_writes(tmp_path):
    import importlib.util

    examples = Path(__file__).resolve().parents[1] / "examples"
    spec = importlib.util.spec_from_file_location("make_rings", examples / "make_rings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path / "rings.csv")
    assert (tmp_path / "rings.csv").read_bytes() == (examples / "rings.csv").read_bytes()
    data = CirclesDataModule(path=str(examples / "rings.csv"))
    assert (data.num_classes, data.class_names, len(data.train_x)) == (
        3,
        ["inner", "middle", "outer"],
        360,
    )


# -- what trained: the file's content, where it is, what was held out -------------------------------------------------


def test_the_split_follows_the_points_not_the_order_of_the_lines(tmp_path):
    write_points(tmp_path / "p.csv", 20, ["a", "b", "c"])
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    (tmp_path / "reversed.csv").write_text("\n".join([header, *reversed(rows)]) + "\n")
    ours, reversed_ = (
        CirclesDataModule(path=str(tmp_path / "p.csv")),
        CirclesDataModule(path=str(tmp_path / "reversed.csv")),
    )
    for stage in ("train", "val", "test"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(ours.points(stage), reversed_.points(stage), strict=True)
        ), stage
    assert ours.file.record["path"]["fingerprint"] == reversed_.file.record["path"]["fingerprint"]
    assert ours.file.record["path"]["held_out"] == reversed_.file.record["path"]["held_out"]


def test_the_trained_file_is_found_wherever_the_command_runs_and_refused_once_it_changed(
    tmp_path, monkeypatch, capfd
):
    write_points(tmp_path / "data.csv", 15, ["a", "b"])
    assert exit_status("fit", "--data.path=./data.csv", *TINY) == 0
    trained = run_dir(tmp_path / "lightning_logs", 0)
    best = str(trained / "checkpoints" / "best.ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_points(elsewhere / "data.csv", 15, ["a", "b"], seed=5)  # another folder's data.csv
    monkeypatch.chdir(elsewhere)
    assert exit_status("test", f"--ckpt_path={best}") == 0
    (tested,) = evaluation_dirs(tmp_path / "lightning_logs")  # with the run it evaluated
    assert yaml.safe_load((tested / "config.yaml").read_text())["data"]["path"] == str(
        tmp_path / "data.csv"
    )

    with open(tmp_path / "data.csv", "a") as f:  # one more point: other content, another split
        f.write("99,0.5,0.5,a\n")
    capfd.readouterr()
    for args in (
        ["test", f"--ckpt_path={best}"],
        ["fit", f"--ckpt_path={best}", f"--data.path={tmp_path / 'data.csv'}"],
    ):
        assert exit_status(*args, *TINY) == 2
        (line,) = error_lines(capfd.readouterr().err)
        assert (
            f"{tmp_path / 'data.csv'} has changed since (30 points then, 31 now, other content)"
            in line
        ), args
    # elsewhere/data.csv
    assert exit_status("fit", f"--ckpt_path={best}", "--data.path=data.csv", *TINY) == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert (
        f"data.path (trained: '{tmp_path / 'data.csv'}', now: '{elsewhere / 'data.csv'}')" in line
    )
    # nothing written by the refused commands
    assert evaluation_dirs(tmp_path / "lightning_logs") == [tested]
    assert not (elsewhere / "lightning_logs").exists()


def test_a_model_trained_on_a_file_is_tested_on_generated_data_when_the_command_asks_for_it(
    tmp_path, capfd
):
    write_points(tmp_path / "rings.csv", 15, ["inner", "middle", "outer"])
    assert exit_status("fit", "--data.path=rings.csv", *TINY) == 0
    printed = io.StringIO()  # both streams, in the order written
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert (
            exit_status(
                "test", "--ckpt_path=best", "--data.dataset=spiral", "--data.classes=3", *TINY
            )
            == 0
        )
    (tested,) = evaluation_dirs(tmp_path / "lightning_logs")
    data = yaml.safe_load((tested / "config.yaml").read_text())["data"]
    assert (data["path"], data["dataset"], data["classes"]) == (None, "spiral", 3)
    lines = printed.getvalue().splitlines()
    notes = [line for line in lines if line.startswith("circles: note:")]
    assert len(notes) == 1 and "data.path='rings.csv'" in notes[0] and "'spiral'" in notes[0]
    # beside the result it qualifies, not before the start-up lines
    result = next(i for i, line in enumerate(lines) if line.startswith("Test: acc"))
    assert lines.index(notes[0]) > result
