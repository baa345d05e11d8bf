"""Bad input through the command line: a non-zero exit, one ``circles: error:`` paragraph that names
the field and what it accepts, no traceback, and nothing written before is touched.

``python tests/test_errors.py`` prints the table of docs/errors.md from the real messages; a test
checks that every message in it is still the one the CLI prints."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import REPO, TINY, Payload, error_lines, exit_status, run_dir, train_py

DOC = REPO / "docs" / "errors.md"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # the field, and the allowed values or the fix
    empty_dir: bool = False  # run where no earlier run exists

    @property
    def command(self) -> str:
        return " ".join(["python train.py", *self.args])


def case(id: str, args: str, *expect: str, empty_dir: bool = False) -> Case:
    return Case(id, tuple(args.split()), expect, empty_dir)


CASES = [
    case("n_samples too small", "fit --data.n_samples=3", "data.n_samples", ">= 6"),
    case("noise < 0", "fit --data.noise=-0.1", "data.noise", "from 0 to 1e+30", "-0.1"),
    case("factor 0", "fit --data.factor=0", "data.factor", "between 0 and 1"),
    case("factor >= 1", "fit --data.factor=1.5", "data.factor", "between 0 and 1"),
    case("val_fraction 0", "fit --data.val_fraction=0", "data.val_fraction", "between 0 and 1"),
    case("val_fraction 1", "fit --data.val_fraction=1", "data.val_fraction", "between 0 and 1"),
    case("batch_size 0", "fit --data.batch_size=0", "data.batch_size", "integer >= 1", "null"),
    case("test_samples 0", "fit --data.test_samples=0", "data.test_samples", "from 1 to"),
    case("seed < 0", "fit --data.seed=-1", "data.seed", "from 0 to 4294967295"),
    case(
        "hidden size 0",
        "fit --model.hidden_sizes=[10,0]",
        "model.hidden_sizes",
        "an integer >= 1",
    ),
    case(
        "no hidden layers with an activation",
        "fit --model.hidden_sizes=[]",
        "model.hidden_sizes",
        "non-empty",
        "activation: none",
    ),
    case(
        "unknown activation",
        "fit --model.activation=swish",
        "model.activation",
        "'relu'",
        "'none'",
        "'gelu'",
        "swish",
    ),
    case(
        "boundary interval 0",
        "fit --boundary.every_n_epochs=0",
        "boundary.every_n_epochs",
        "an integer >= 1",
    ),
    case(
        "boundary resolution 1", "fit --boundary.resolution=1", "boundary.resolution", "from 2 to"
    ),
    case(
        "last.ckpt interval 0",
        "fit --checkpoint.last_every_n_epochs=0",
        "checkpoint.last_every_n_epochs",
        "an integer >= 1",
    ),
    case(
        "progress-line interval 0",
        "fit --chapter_log.every_n_epochs=0",
        "chapter_log.every_n_epochs",
        "an integer >= 1",
        "null",
    ),
    case(
        "checkpoint mode", "fit --checkpoint.mode=best", "checkpoint.mode", "'min', 'max'", "best"
    ),
    case("max_epochs < -1", "fit --trainer.max_epochs=-5", "trainer", "max_epochs", "-1"),
    case("learning rate < 0", "fit --model.optimizer.lr=-1", "model.optimizer", "learning rate"),
    case(
        "a scheduler without its required argument",
        "fit --model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
        "model.lr_scheduler: torch.optim.lr_scheduler.StepLR needs step_size",
        "--model.lr_scheduler.step_size VALUE",
    ),
    case("wrong type", "fit --data.noise=abc", "data.noise", "a number from 0", "abc"),
    case(
        "members not an integer",
        "fit --model.members=2.5",
        "model.members",
        "an integer from 1 to 65536",
        "2.5",
    ),
    case("members 0", "fit --model.members=0", "model.members", "an integer from 1 to 65536"),
    case(
        "members with LBFGS",
        "fit --model.members=4 --model.optimizer=torch.optim.LBFGS",
        "model.members",
        "LBFGS",
    ),
    case(
        "unknown key (command line)",
        "fit --data.noize=0.1",
        "data.noize",
        "n_samples, noise, factor",
        "Did you mean data.noise?",
    ),
    case(
        "unknown key (YAML)",
        "fit --config unknown_key.yaml",
        "data.nois",
        "n_samples, noise, factor",
        "Did you mean data.noise?",
    ),
    case(
        "unknown section",
        "fit --dat.noise=0.1",
        "dat.noise",
        "trainer, model, data",
        "Did you mean data?",
    ),
    case("unknown subcommand", "fitt", "subcommand", "'fit', 'validate', 'test', 'predict'"),
    case(
        "malformed YAML",
        "fit --config malformed.yaml",
        "config",
        "not valid YAML",
        "line 3, column 1",
    ),
    case("missing YAML", "fit --config missing.yaml", "config", "missing.yaml", "does not exist"),
    case(
        "missing --ckpt_path file",
        "validate --ckpt_path missing.ckpt",
        "ckpt_path",
        "existing checkpoint file",
        "'best' or 'last'",
    ),
    case(
        "--ckpt_path last, no earlier run",
        "fit --ckpt_path last",
        "ckpt_path",
        "'best'/'last' of an earlier run",
        "No run under lightning_logs",
        empty_dir=True,
    ),
    case(
        "checkpoint of random bytes",
        "validate --ckpt_path random.ckpt",
        "random.ckpt",
        "truncated, corrupt",
        "checkpoints/last.ckpt",
    ),
    case(
        "truncated checkpoint",
        "test --ckpt_path truncated.ckpt",
        "truncated.ckpt",
        "truncated, corrupt",
        "checkpoints/last.ckpt",
    ),
    case(
        "text file as checkpoint",
        "predict --ckpt_path notes.ckpt",
        "notes.ckpt",
        "truncated, corrupt",
    ),
    case(
        "torch file that is no Lightning checkpoint",
        "fit --ckpt_path weights.ckpt",
        "weights.ckpt",
        "no state_dict",
        "checkpoints/best.ckpt",
    ),
    case(
        "checkpoint of another model",
        "validate --ckpt_path other_model.ckpt",
        "other_model.ckpt",
        "do not fit the network",
        "size mismatch for net.weights.0",
    ),
    case(
        "checkpoint carrying code",
        "predict --ckpt_path payload.ckpt",
        "payload.ckpt",
        "Refused to load",
        "weights_only=True",
        "nothing in it ran",
    ),
    case(
        "resume with a bad value", "fit --ckpt_path last --data.noise=-1", "data.noise", "from 0 to"
    ),
    case(
        "predict CSV without x1,x2",
        "predict --ckpt_path last --data.predict_path=no_columns.csv",
        "data.predict_path",
        "x1 and x2",
        "lacks ['x2']",
    ),
    case(
        "predict CSV, non-numeric",
        "predict --ckpt_path last --data.predict_path=text.csv",
        "data.predict_path",
        "numbers",
        "Line 3",
    ),
    case(
        "predict CSV, NaN",
        "predict --ckpt_path last --data.predict_path=nan.csv",
        "data.predict_path",
        "finite numbers",
        "Line 2",
    ),
    case(
        "predict CSV, inf",
        "predict --ckpt_path last --data.predict_path=inf.csv",
        "data.predict_path",
        "finite numbers",
        "Line 2",
    ),
    case(
        "predict CSV, empty file",
        "predict --ckpt_path last --data.predict_path=empty.csv",
        "data.predict_path",
        "x1 and x2",
        "The file is empty",
    ),
    case(
        "predict CSV, header only",
        "predict --ckpt_path last --data.predict_path=header_only.csv",
        "data.predict_path",
        "at least one point",
    ),
    case(
        "predict CSV beyond float32",
        "predict --ckpt_path last --data.predict_path=huge.csv",
        "data.predict_path",
        "float32",
        "Line 2",
    ),
    case("noise beyond float32", "fit --data.noise=1e300", "data.noise", "from 0 to 1e+30"),
    case(
        "test without a checkpoint",
        "test",
        "ckpt_path",
        "given for test",
        "'best', 'last'",
        "untrained",
    ),
    case("predict without a checkpoint", "predict", "ckpt_path", "given for predict", "untrained"),
    case(
        "resume with another optimizer",
        "fit --ckpt_path last --data.n_samples=60 --model.optimizer=Adam",
        "model.optimizer.class_path (trained: 'torch.optim.SGD', now: 'torch.optim.Adam')",
        "start a new run",
    ),
    case(
        "resume with another learning rate",
        "fit --ckpt_path last --data.n_samples=60 --model.optimizer.lr=0.001",
        "model.optimizer.init_args.lr (trained: 0.1, now: 0.001)",
        "--trainer.max_epochs may change",
    ),
    case(
        "resume with other input features",
        "fit --ckpt_path lightning_logs/0000-relu-10x10-sgd0.1-e2-circles/checkpoints/last.ckpt --data.n_samples=60 "
        "--data.features=[x1_sq,x2_sq]",
        "model.features must be left out or ['x1', 'x2'], the checkpoint's",
        "['x1_sq', 'x2_sq']",
    ),
    case(
        "resume on other data",
        "fit --ckpt_path last --data.noise=0.1",
        "data.n_samples (trained: 60, now: 1000)",
        "data.noise (trained: 0.03, now: 0.1)",
    ),
    case(
        "predict CSV, missing file",
        "predict --ckpt_path last --data.predict_path=missing.csv",
        "data.predict_path",
        "existing CSV file",
    ),
    case(
        "data CSV, missing file",
        "fit --data.path=missing.csv",
        "data.path",
        "existing CSV file",
        "x1,x2,label",
    ),
    case(
        "data CSV without a header",
        "fit --data.path=no_header.csv",
        "data.path",
        "no header",
        "Add the line x1,x2,label first",
    ),
    case(
        "data CSV without a label column",
        "fit --data.path=no_label.csv",
        "data.path",
        "x1, x2 and label",
        "lacks ['label']",
    ),
    case("data CSV, empty file", "fit --data.path=empty.csv", "data.path", "The file is empty"),
    case(
        "data CSV separated by semicolons",
        "fit --data.path=semicolons.csv",
        "data.path",
        "separated by semicolons",
    ),
    case(
        "data CSV, non-number",
        "fit --data.path=bad_number.csv",
        "data.path",
        "numbers",
        "Line 3",
        "x1='0,5'",
    ),
    case("data CSV, NaN", "fit --data.path=nan_point.csv", "data.path", "finite numbers", "Line 2"),
    case(
        "data CSV, a line without a label",
        "fit --data.path=no_label_value.csv",
        "data.path",
        "a label on every line",
        "Line 3",
    ),
    case(
        "data CSV, one class",
        "fit --data.path=one_class.csv",
        "data.path",
        "at least two classes",
        "'1'",
    ),
    case(
        "data CSV, numbers mixed with names",
        "fit --data.path=mixed.csv",
        "data.path",
        "all class names or all integers",
        "mixes numbers ('2') with names ('cat')",
    ),
    case(
        "data CSV, integer labels not 0..C-1",
        "fit --data.path=one_based.csv",
        "data.path",
        "0..C-1",
        "[1, 2]",
    ),
    case(
        "data CSV, too few points for the split",
        "fit --data.path=tiny.csv",
        "data.path",
        "enough points for the split",
        "per class [3, 2]",
        "at least 3 points of each class",
    ),
    case(
        "test CSV with a class the data lacks",
        "fit --data.path=good.csv --data.test_path=bird.csv",
        "data.test_path",
        "training data's classes ['cat', 'dog']",
        "['bird']",
    ),
    case(
        "test_path without path",
        "fit --data.test_path=good.csv",
        "data.test_path",
        "null unless path is given",
    ),
    case(
        "a file and a generated set",
        "fit --data.path=good.csv --data.dataset=moons",
        "data.dataset",
        "left out when path is given",
        "'moons'",
    ),
    case(
        "test_fraction leaves no training points",
        "fit --data.path=good.csv --data.test_fraction=0.8",
        "data.test_fraction",
        "between 0 and 1 - val_fraction (0.8)",
    ),
    case(
        "checkpoint for other classes",
        "test --ckpt_path last --data.dataset=blobs",
        "holds a network for 2 classes and the data has 4",
        "--config <its run>/config.yaml",
    ),
    case(
        "members as quoted text",
        'fit --model.members="3"',
        "model.members",
        "the text '3'",
        "without quotes",
    ),
    case(
        "members beyond the bound",
        "fit --model.members=1000000000",
        "model.members",
        "from 1 to 65536",
    ),
    case(
        "a network too large to build",
        "fit --model.hidden_sizes=[100000,100000]",
        "model.hidden_sizes",
        "at most 268,435,456 weights",
        "37.3 GiB",
    ),
    case(
        "--ckpt_path hpc without one",
        "fit --ckpt_path hpc",
        "ckpt_path",
        "'hpc' only where a SLURM requeue",
    ),
    case(
        "YAML alias bomb", "fit --config bomb.yaml", "config", "at most 100,000 values", "aliases"
    ),
    case(
        "a list too long to parse",
        "fit --config long_list.yaml",
        "config",
        "at most 1,000 items",
        "Line 2",
    ),
    case(
        "checkpoint with a list for weights",
        "test --ckpt_path list_weights.ckpt",
        "list_weights.ckpt",
        "its state_dict is a list",
    ),
    case(
        "checkpoint of an unknown Lightning version",
        "test --ckpt_path bad_version.ckpt",
        "bad_version.ckpt",
        "its pytorch-lightning_version is 'not.a.version'",
    ),
    case(
        "checkpoint with another model's hyperparameters",
        "test --ckpt_path foreign_hparams.ckpt",
        "foreign_hparams.ckpt holds settings this model does not take",
        "model.lr is not an option",
    ),
    case(
        "checkpoint of a network too large to build",
        "test --ckpt_path huge_members.ckpt",
        "huge_members.ckpt holds settings this model does not take",
        "model.members must be an integer from 1 to 65536",
    ),
    case(
        "data CSV, a column named twice",
        "fit --data.path=twice.csv",
        "data.path",
        "header has label 2 times",
    ),
    case(
        "data CSV in Latin-1",
        "fit --data.path=latin1.csv",
        "data.path",
        "UTF-8",
        "Line 3 has the byte 0xe9",
    ),
    case(
        "data CSV in UTF-16 without a byte-order mark",
        "fit --data.path=utf16.csv",
        "data.path",
        "NUL bytes",
    ),
    case(
        "data CSV, a number with an underscore",
        "fit --data.path=underscore.csv",
        "data.path",
        "x1='1_000'",
    ),
    case(
        "predict CSV with features beyond float32",
        "predict --ckpt_path squared.ckpt --data.predict_path=far.csv",
        "data.predict_path",
        "features are finite",
        "the first on line 3: (1e+20, 1e+20)",
    ),
    case(
        "lr not a number", "fit --model.optimizer.lr=abc", "model.optimizer.lr", "a number", "abc"
    ),
    case(
        "lr not finite",
        "fit --model.optimizer.lr=.nan",
        "model.optimizer.lr",
        "a finite float32 number",
        "nan",
    ),
    case(
        "lr finite in float64 only",
        "fit --model.optimizer.lr=1e39",
        "model.optimizer.lr",
        "a finite float32 number",
        "1e+39",
    ),
    case(
        "histograms interval not an integer",
        "fit --weights.histograms_every_n_epochs=2.5",
        "weights.histograms_every_n_epochs",
        "an integer >= 1 or null",
    ),
    case("empty config file", "fit --config=empty.yaml", "config", "sections", "holds nothing"),
    case("config file of a list", "fit --config=list.yaml", "config", "sections", "a list"),
    case(
        "a section given a number in a config file",
        "fit --config=section_number.yaml",
        "config",
        "each of settings",
        "Its checkpoint: holds a number",
    ),
    case(
        "a section given nothing in a config file",
        "fit --config=section_null.yaml",
        "config",
        "each of settings",
        "Its boundary: holds nothing",
    ),
    case("seed beyond numpy's", "fit --seed_everything=-1", "seed_everything", "0 to 4294967295"),
    case(
        "n_samples beyond a file's points",
        "fit --data.n_samples=1000000000",
        "data.n_samples",
        "from 1 to 10000000",
    ),
    case(
        "test_samples beyond a file's points",
        "fit --data.test_samples=1000000000",
        "data.test_samples",
        "from 1 to 10000000",
    ),
    case(
        "more generated classes than a file may name",
        "fit --data.dataset=blobs --data.classes=100000",
        "data.classes",
        "from 2 to 1000",
    ),
    case(
        "grid finer than any picture",
        "fit --boundary.resolution=100000",
        "boundary.resolution",
        "from 2 to 1000",
    ),
    case(
        "a model option an evaluation would not use",
        "test --ckpt_path=lightning_logs/0000-relu-10x10-sgd0.1-e2-circles/checkpoints/last.ckpt --model.activation=none",
        "model.activation",
        "left out or 'relu'",
        "test evaluates the network the checkpoint holds",
        "train it with fit",
    ),
    case(
        "an empty checkpoint path",
        "test --ckpt_path=",
        "ckpt_path must be 'best', 'last' or a checkpoint file, got ''.",
    ),
    case(
        "an empty checkpoint path for fit",
        "fit --ckpt_path=",
        "ckpt_path must be 'best', 'last' or a checkpoint file, got ''.",
    ),
    case(
        "best/last of a model no run trained",
        "test --ckpt_path=last --model.activation=none",
        "has checkpoints/last.ckpt of the model this config describes",
        "--config lightning_logs/0000-relu-10x10-sgd0.1-e2-circles/config.yaml --ckpt_path lightning_logs/0000-relu-10x10-sgd0.1-e2-circles/checkpoints/last.ckpt, or start",
    ),
    case(
        "continuing a checkpoint without optimizer state",
        "fit --data.n_samples=60 --data.test_samples=20 --trainer.max_epochs=3 "
        "--ckpt_path=weights_only.ckpt",
        "weights_only.ckpt cannot be continued",
        "contains only the model",
        "test --ckpt_path",
    ),
    case(
        "continuing a checkpoint whose optimizer state has other parameter groups",
        "fit --data.n_samples=60 --data.test_samples=20 --trainer.max_epochs=3 "
        "--ckpt_path=two_groups.ckpt",
        "two_groups.ckpt cannot be continued: loaded state dict has a different number of "
        "parameter groups. Test its weights",
    ),
    case(
        "early stopping on validation without any",
        "fit --config=until_val_acc_1.yaml --trainer.limit_val_batches=0",
        "trainer.limit_val_batches",
        "EarlyStopping stops on val/acc",
    ),
]


# The CSV inputs of CASES that are written as they are.
CSV_FILES = {
    "no_columns.csv": "x1,y\n0.1,0.2\n",
    "text.csv": "x1,x2\n0.1,0.2\n0.3,abc\n",
    "nan.csv": "x1,x2\nnan,0.2\n",
    "inf.csv": "x1,x2\n0.1,inf\n",
    "empty.csv": "",
    "header_only.csv": "x1,x2\n",
    "huge.csv": "x1,x2\n1e39,0.2\n",
    "bird.csv": "x1,x2,label\n0.1,0.2,cat\n0.3,0.4,bird\n",
    "no_label.csv": "x1,x2\n0.1,0.2\n",
    "semicolons.csv": "x1;x2;label\n0,1;0,2;cat\n",
    "bad_number.csv": 'x1,x2,label\n0.1,0.2,cat\n"0,5",0.2,dog\n',
    "nan_point.csv": "x1,x2,label\nnan,0.2,cat\n",
    "no_label_value.csv": "x1,x2,label\n0.1,0.2,cat\n0.3,0.4,\n",
    "one_class.csv": "x1,x2,label\n0.1,0.2,1\n0.3,0.4,1\n",
    "mixed.csv": "x1,x2,label\n0.1,0.2,2\n0.3,0.4,cat\n",
    "one_based.csv": "x1,x2,label\n0.1,0.2,1\n0.3,0.4,2\n",
    "twice.csv": "x1,x2,label,label\n0.1,0.2,cat,dog\n",
    "underscore.csv": "x1,x2,label\n1_000,0.2,cat\n",
    "far.csv": "x1,x2\n0.5,0.5\n1e20,1e20\n",
    "bomb.yaml": "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    + "".join(
        f"{x}: &{x} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, x in zip("abcdef", "bcdefg", strict=True)
    )
    + "model:\n  hidden_sizes: *g\n",
    "long_list.yaml": "model:\n  hidden_sizes: [" + ", ".join(["1"] * 2000) + "]\n",
}


def write_inputs(directory: Path, real_checkpoint: Path) -> None:
    """The bad files the cases point at."""
    (directory / "unknown_key.yaml").write_text("data:\n  nois: 0.1\n")
    (directory / "malformed.yaml").write_text("data:\n  noise: [0.1,\n")
    (directory / "random.ckpt").write_bytes(bytes(range(256)) * 8)
    data = real_checkpoint.read_bytes()
    (directory / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (directory / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, directory / "weights.ckpt")
    other = torch.load(real_checkpoint, weights_only=True)
    other["state_dict"]["net.weights.0"] = torch.zeros(1, 10, 3)
    torch.save(other, directory / "other_model.ckpt")
    torch.save(
        {"state_dict": {}, "payload": Payload(directory / "PAYLOAD_RAN")},
        directory / "payload.ckpt",
    )
    for name, text in CSV_FILES.items():
        (directory / name).write_text(text)
    good = [f"{i / 10},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    (directory / "good.csv").write_text("\n".join(["x1,x2,label", *good, ""]))
    (directory / "no_header.csv").write_text("\n".join(good[:4]) + "\n")
    (directory / "tiny.csv").write_text(
        "x1,x2,label\n" + "".join(f"{i},0,{i % 2}\n" for i in range(5))
    )
    (directory / "latin1.csv").write_bytes(
        "x1,x2,label\n0.1,0.2,cat\n0.3,0.4,caf\xe9\n".encode("latin-1")
    )
    (directory / "utf16.csv").write_bytes("x1,x2,label\n0.1,0.2,cat\n".encode("utf-16-le"))
    torch.save({**other, "state_dict": [1, 2]}, directory / "list_weights.ckpt")
    trained = torch.load(real_checkpoint, weights_only=True)
    del trained["optimizer_states"]
    torch.save(trained, directory / "weights_only.ckpt")
    groups = torch.load(real_checkpoint, weights_only=True)
    groups["optimizer_states"][0]["param_groups"] *= 2
    torch.save(groups, directory / "two_groups.ckpt")
    shutil.copy(REPO / "configs" / "trainer" / "until_val_acc_1.yaml", directory)
    (directory / "empty.yaml").write_text("# nothing set\n")
    (directory / "list.yaml").write_text("- data:\n    noise: 0.1\n")
    (directory / "section_number.yaml").write_text("checkpoint: 5\n")  # a traceback before
    (directory / "section_null.yaml").write_text("trainer:\n  max_epochs: 1\nboundary: null\n")
    real = torch.load(real_checkpoint, weights_only=True)
    torch.save(
        {**real, "pytorch-lightning_version": "not.a.version"}, directory / "bad_version.ckpt"
    )
    torch.save(
        {**real, "hyper_parameters": {**real["hyper_parameters"], "lr": 0.1}},
        directory / "foreign_hparams.ckpt",
    )
    torch.save(
        {**real, "hyper_parameters": {**real["hyper_parameters"], "members": 10**6}},
        directory / "huge_members.ckpt",
    )
    squared = {
        **real,
        "hyper_parameters": {**real["hyper_parameters"], "features": ["x1_sq", "x2_sq"]},
    }
    squared["datamodule_hyper_parameters"] = {
        **real["datamodule_hyper_parameters"],
        "features": ["x1_sq", "x2_sq"],
    }
    torch.save(squared, directory / "squared.ckpt")


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory``, with a hash of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """A directory holding a finished run (lightning_logs/0000-...) and the bad input files."""
    directory = tmp_path_factory.mktemp("earlier_run")
    shutil.copytree(tiny_run / "lightning_logs", directory / "lightning_logs")
    write_inputs(directory, run_dir(directory / "lightning_logs", 0) / "checkpoints" / "last.ckpt")
    return directory


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_paragraph_and_nothing_is_lost(
    bad: Case, earlier_run, tmp_path, monkeypatch, capfd
):
    where = tmp_path if bad.empty_dir else earlier_run
    monkeypatch.chdir(where)
    before = snapshot(where)

    status = exit_status(*bad.args)

    out, err = capfd.readouterr()
    assert status != 0
    lines = error_lines(err)
    assert len(lines) == 1, err  # one paragraph: a single line
    for text in bad.expect:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in out + err and "usage:" not in err
    assert snapshot(where) == before  # no file changed, none added (no new run directory either)
    assert not (earlier_run / "PAYLOAD_RAN").exists()
    documented = DOC.read_text() if DOC.is_file() else ""
    assert doc_cell(lines[0], where) in documented, (
        "docs/errors.md is out of date: python tests/test_errors.py"
    )


def doc_cell(line: str, where: Path) -> str:
    message = line.removeprefix("circles: error: ").replace(str(where), ".")
    return f"`` {message} ``".replace("|", "\\|")


@pytest.mark.slow
def test_train_py_reports_bad_input_without_a_traceback(earlier_run):
    """The real entry point, in processes of its own (started together: each spends seconds
    importing); the in-process test above covers every case's message."""
    commands = [  # refused by the parser, and by the run once a checkpoint is loaded
        ["fit", "--model.activation=swish"],
        ["predict", "--ckpt_path", "last", "--data.predict_path=nan.csv"],
    ]
    before = snapshot(earlier_run)
    with contextlib.ExitStack() as stack:
        processes = [stack.enter_context(train_py(*args, cwd=earlier_run)) for args in commands]
        results = [p.communicate() for p in processes]
    for args, p, (out, err) in zip(commands, processes, results, strict=True):
        assert p.returncode == 2, (args, err)
        assert len(error_lines(err)) == 1, (args, err)
        assert "Traceback" not in out + err, (args, err)
    assert snapshot(earlier_run) == before


def error_table() -> str:
    """The markdown table of docs/errors.md: every case and the message the CLI really prints for
    it."""
    rows = ["| Input | Exit | Message (after `circles: error:`) |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        base, empty = Path(tmp) / "run", Path(tmp) / "empty"
        base.mkdir()
        empty.mkdir()
        cwd = os.getcwd()
        try:
            os.chdir(base)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                exit_status("fit", *TINY)
            write_inputs(base, run_dir(base / "lightning_logs", 0) / "checkpoints" / "last.ckpt")
            for bad in CASES:
                where = empty if bad.empty_dir else base
                os.chdir(where)
                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    status = exit_status(*bad.args)
                (line,) = error_lines(err.getvalue())
                rows.append(f"| {bad.id}: `{bad.command}` | {status} | {doc_cell(line, where)} |")
        finally:
            os.chdir(cwd)
    return "\n".join(rows)


def test_os_errors_read_as_the_file_the_cause_and_what_to_do():
    from circles.errors import os_error_text

    assert os_error_text(PermissionError(13, "Permission denied", "runs/version_0")) == (
        "runs/version_0: Permission denied. Make the folder writable, or write the runs elsewhere with "
        "--trainer.default_root_dir DIR."
    )
    assert os_error_text(OSError(30, "Read-only file system", "/mnt/x")) == (
        "/mnt/x: Read-only file system. Write the runs elsewhere with --trainer.default_root_dir DIR."
    )
    assert os_error_text(OSError(28, "No space left on device")).startswith(
        "the run's files: No space left"
    )


if __name__ == "__main__":
    print(error_table())
