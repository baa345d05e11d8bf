"""Every reader of outside input, fed what Hypothesis makes up: CSV bytes (encodings, separators,
quoting, numbers, sizes, duplicate and missing columns), YAML configs and sweep files (aliases,
nesting, types, sizes) and checkpoints (valid ones mutated: types, shapes, versions,
hyperparameters). For each input the command ends with status 0 and the right result, or with
status 2 and one ``error:`` line: no traceback, nothing written (the size bounds in the readers
keep every input's time in hand; speed is the benchmarks' to measure, not a test's). A few dozen
examples per reader in the quick tier, hundreds in the slow one; the inputs that once broke a
promise are kept as explicit examples."""

from __future__ import annotations

import codecs
import copy
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from circles.cli import cli_main
from circles.sweep import main as sweep_main

from helpers import TINY, run_dir

QUICK, MANY = 25, 40  # examples per reader: quick tier, slow tier (the kept examples run in both)
SETTINGS = {
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


def outcome(command: Callable[[], object], capfd) -> tuple[int, str]:
    """Run a command as its console script would; returns its exit status and what it wrote to
    stderr."""
    capfd.readouterr()
    try:
        command()
        status = 0
    except SystemExit as exit_info:
        status = 0 if exit_info.code is None else exit_info.code
    return status, capfd.readouterr().err


def assert_kept_its_promise(status: int, err: str, prefix: str = "circles: error:") -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(prefix)]
    if status == 0:
        assert not errors, err
    else:
        assert status == 2 and len(errors) == 1, (status, err)


def files_under(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file()}


# -- CSV files --------------------------------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(
        ["1_000", "\u0661", "0x1f", "", " 1 ", "1e", "nan", "-inf", "1e39", ".5", "5."]
    ),
    st.text(max_size=8),
)
LABELS = st.one_of(
    st.sampled_from(["a", "b", "c", "0", "1", "2", "00", "01", "", " a", "é"]), st.text(max_size=6)
)


@st.composite
def csv_files(draw) -> bytes:
    """CSV bytes: a header of the three columns and others, shuffled, doubled or missing; rows of
    numbers and labels (or not); a separator, line ends, quoting and an encoding; now and then
    just bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    columns = draw(
        st.lists(
            st.sampled_from(["x1", "x2", "label", "id", "x1", "label"]), min_size=0, max_size=5
        )
    )
    columns = columns if draw(st.booleans()) else ["x1", "x2", "label", *columns[:1]]
    separator = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    rows = []
    for _ in range(draw(st.integers(0, 40))):
        cells = [draw(LABELS) if name == "label" else draw(NUMBERS) for name in columns]
        if draw(st.integers(0, 9)) == 0:
            cells = cells[: draw(st.integers(0, len(cells)))]
        rows.append(cells)
    quote = draw(st.sampled_from(["", "", '"']))
    lines = [separator.join(f"{quote}{c}{quote}" for c in row) for row in [columns, *rows]]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + "\n"
    encoding, bom = draw(
        st.sampled_from(
            [
                ("utf-8", b""),
                ("utf-8", codecs.BOM_UTF8),
                ("utf-16-le", b""),
                ("utf-16-le", codecs.BOM_UTF16_LE),
                ("utf-32-be", codecs.BOM_UTF32_BE),
                ("latin-1", b""),
            ]
        )
    )
    return bom + text.encode(encoding, errors="replace")


def read_as_data(tmp_path: Path, content: bytes) -> None:
    """The bytes as ``data.path`` (read, labels encoded, split) and as points to predict on: each
    is read into finite points the model can take (float32; points to predict on are kept as the
    float64 numbers they were read as), or refused with one ConfigError line naming the setting."""
    from circles.data.files import read_points_csv
    from circles.data.module import CirclesDataModule
    from circles.errors import ConfigError

    (tmp_path / "data.csv").write_bytes(content)
    for read, dtype in (
        (
            lambda: CirclesDataModule(path="data.csv", val_fraction=0.3).points("test"),
            torch.float32,
        ),
        (lambda: (read_points_csv("data.csv"), None), torch.float64),
    ):
        try:
            points, labels = read()
        except ConfigError as err:
            assert "\n" not in str(err) and err.field in ("path", "predict_path", "classes"), err
            continue
        assert points.dtype == dtype and points.shape[1] == 2
        assert torch.isfinite(points.float()).all()
        assert labels is None or len(labels) == len(points)


def fit_on(tmp_path: Path, content: bytes, capfd) -> None:
    """``fit --data.path`` on the bytes, from the command line: trained on, or refused in one
    line with nothing written."""
    (tmp_path / "data.csv").write_bytes(content)
    before = files_under(tmp_path)
    status, err = outcome(
        lambda: cli_main(
            [
                "fit",
                "--data.path=data.csv",
                "--trainer.max_epochs=1",
                "--trainer.enable_progress_bar=false",
                "--boundary.gif=false",
                "--data.val_fraction=0.3",
                "--data.test_fraction=0.3",
            ]
        ),
        capfd,
    )
    assert_kept_its_promise(status, err)
    if status:
        assert files_under(tmp_path) == before  # a refused file leaves nothing behind


CSV_EXAMPLES = [  # inputs that once broke a promise: kept as they were found
    "x1,x2,label\n0,0,a\n1,1,b\n".encode("utf-16-le"),
    codecs.BOM_UTF16_LE,
    "x1,x2,label\n0,0,caf\xe9\n1,1,b\n".encode("latin-1"),
    b"x1,x2,x1,label\n1,2,3,a\n",
    b"x1,x2,label,label\n1,2,a,b\n",
    b"x1,x2,label\n1_000,2,a\n",
    "x1,x2,label\n\u0661,2,a\n".encode(),
    b"x1,x2,label\n\n1,2,a\n\n3,x,b\n",
    b"x1,x2,label\n1,2," + b"a" * 200_000 + b"\n",
]


def csv_examples(test):
    for content in CSV_EXAMPLES:
        test = example(content=content)(test)
    return test


@settings(max_examples=4 * QUICK, **SETTINGS)
@csv_examples
@given(content=csv_files())
def test_any_csv_file_is_read_or_refused_in_one_line(tmp_path, content):
    read_as_data(tmp_path, content)


@pytest.mark.slow
@settings(max_examples=MANY, **SETTINGS)
@csv_examples
@given(content=csv_files())
def test_any_csv_file_is_trained_on_or_refused_in_one_line_from_the_command_line(
    tmp_path, capfd, content
):
    read_as_data(tmp_path, content)
    fit_on(tmp_path, content, capfd)


# -- YAML: configs and sweep files ------------------------------------------------------------------------------------

KEYS = [
    "model",
    "data",
    "trainer",
    "optimizer",
    "boundary",
    "seed_everything",
    "hidden_sizes",
    "noise",
    "features",
    "max_epochs",
    "members",
    "activation",
    "class_path",
    "init_args",
    "lr",
    "nope",
    "dataset",
    "grid",
    "fixed",
    "base",
    "model.activation",
    "data.noise",
    "columns",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from(["relu", "none", "x1_sq", "torch.optim.Adam", "[1, 2]"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def yaml_texts(draw) -> str:
    """YAML documents of config-like keys and any values, sometimes with anchors and aliases
    nested into a bomb, or just text."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:  # aliases of aliases: a few lines standing for 10^depth values
        depth, width = draw(st.integers(2, 8)), draw(st.integers(2, 10))
        lines = [f"l0: &l0 [{', '.join(['1'] * width)}]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
        key = draw(
            st.sampled_from(
                ["model:\n  hidden_sizes", "data:\n  features", "grid:\n  model.activation"]
            )
        )
        return "\n".join(lines) + f"\n{key}: *l{depth - 1}\n"
    return yaml.safe_dump(
        draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5)), default_flow_style=None
    )


def parse_config(tmp_path: Path, text: str, capfd) -> None:
    (tmp_path / "config.yaml").write_text(text)
    before = files_under(tmp_path)
    status, err = outcome(
        lambda: cli_main(["fit", "--config", "config.yaml", "--print_config"]), capfd
    )
    assert_kept_its_promise(status, err)
    assert files_under(tmp_path) == before


def list_sweep(tmp_path: Path, text: str, capfd) -> None:
    (tmp_path / "sweep.yaml").write_text(text)
    before = files_under(tmp_path)
    status, err = outcome(lambda: sys_exit(sweep_main(["--config", "sweep.yaml", "--list"])), capfd)
    assert_kept_its_promise(status, err, prefix="circles-sweep: error:")
    assert files_under(tmp_path) == before


def sys_exit(status: int) -> None:
    raise SystemExit(status)


YAML_EXAMPLES = [
    "a: [b",
    "model:\n  hidden_sizes: [" + ", ".join(["1"] * 5000) + "]\n",
    "grid: 5\n",
    "- 1\n- 2\n",
    "base: configs/relu.yaml\ngrid:\n  model.activation: [none]\n  data.noise: "
    + "[" * 300
    + "]" * 300,
]


def yaml_examples(test):
    for text in YAML_EXAMPLES:
        test = example(text=text)(test)
    return test


@settings(max_examples=QUICK, **SETTINGS)
@yaml_examples
@given(text=yaml_texts())
def test_any_config_file_is_parsed_or_refused_in_one_line(tmp_path, capfd, text):
    parse_config(tmp_path, text, capfd)


@settings(max_examples=QUICK, **SETTINGS)
@yaml_examples
@given(text=yaml_texts())
def test_any_sweep_file_is_listed_or_refused_in_one_line(tmp_path, capfd, text):
    list_sweep(tmp_path, text, capfd)


@pytest.mark.slow
@settings(max_examples=MANY, **SETTINGS)
@given(text=yaml_texts())
def test_any_config_or_sweep_file_many(tmp_path, capfd, text):
    parse_config(tmp_path, text, capfd)
    list_sweep(tmp_path, text, capfd)


# -- checkpoints ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_run: Path) -> dict:
    """A checkpoint of a finished run, loaded."""
    last = run_dir(tiny_run / "lightning_logs", 0) / "checkpoints" / "last.ckpt"
    return torch.load(last, weights_only=True)


ODD = st.one_of(
    st.none(),
    st.integers(-3, 10**7),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-2, 40), max_size=4),
    st.just({}),
    st.just(torch.zeros(3, 7)),
)


@st.composite
def mutations(draw) -> list[tuple[str, ...]]:
    """Changes to a checkpoint: (where, what), applied by :func:`mutated`."""
    places = [
        "state_dict",
        "hyper_parameters",
        "datamodule_hyper_parameters",
        "CirclesDataModule",
        "circles_config",
        "pytorch-lightning_version",
        "epoch",
        "optimizer_states",
    ]
    hparams = [
        "hidden_sizes",
        "activation",
        "features",
        "members",
        "num_classes",
        "l1",
        "compile_mode",
        "lr",
    ]
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "hparam", "weight", "version"]))
        if kind == "hparam":
            changes.append(("hparam", draw(st.sampled_from(hparams)), draw(ODD)))
        elif kind == "weight":
            changes.append(
                ("weight", draw(st.integers(0, 3)), draw(st.sampled_from(["shape", "drop", "nan"])))
            )
        elif kind == "version":
            changes.append(
                ("version", draw(st.sampled_from(["not.a.version", "99.0.0", "", "1.0rc"])))
            )
        else:
            changes.append((kind, draw(st.sampled_from(places)), draw(ODD)))
    return changes


def mutated(checkpoint: dict, changes: list[tuple]) -> dict:
    result = {
        **checkpoint,
        "state_dict": dict(checkpoint["state_dict"]),
        "hyper_parameters": dict(checkpoint["hyper_parameters"]),
    }
    for change in changes:
        if change[0] == "drop":
            result.pop(change[1], None)
        elif change[0] == "replace":
            result[change[1]] = change[2]
        elif change[0] == "hparam" and isinstance(result.get("hyper_parameters"), dict):
            result["hyper_parameters"][change[1]] = change[2]
        elif (
            change[0] == "weight"
            and isinstance(result.get("state_dict"), dict)
            and result["state_dict"]
        ):
            key = sorted(result["state_dict"])[change[1] % len(result["state_dict"])]
            if change[2] == "drop":
                del result["state_dict"][key]
            else:
                value = result["state_dict"][key]
                result["state_dict"][key] = (
                    torch.zeros(7, *value.shape) if change[2] == "shape" else value * float("nan")
                )
        elif change[0] == "version":
            result["pytorch-lightning_version"] = change[1]
    return result


def evaluate_with(tmp_path: Path, checkpoint: dict, changes: list[tuple], capfd) -> None:
    buffer = io.BytesIO()
    torch.save(mutated(checkpoint, changes), buffer)
    (tmp_path / "given.ckpt").write_bytes(buffer.getvalue())
    before = files_under(tmp_path)
    status, err = outcome(
        lambda: cli_main(
            [
                "test",
                "--ckpt_path=given.ckpt",
                "--data.test_samples=50",
                "--trainer.enable_progress_bar=false",
                "--boundary.gif=false",
            ]
        ),
        capfd,
    )
    assert_kept_its_promise(status, err)
    if status:
        assert files_under(tmp_path) == before, changes  # refused before any run directory was made


CHECKPOINT_EXAMPLES = [
    [("replace", "state_dict", [1, 2])],
    [("replace", "hyper_parameters", [1])],
    [("replace", "CirclesDataModule", "x")],
    [("replace", "circles_config", 5)],
    [("version", "not.a.version")],
    [("hparam", "members", 10**6)],
    [("hparam", "hidden_sizes", [10**6, 10**6])],
    [("hparam", "lr", 0.1)],
    [("replace", "pytorch-lightning_version", 2)],
]


def checkpoint_examples(test):
    for changes in CHECKPOINT_EXAMPLES:
        test = example(changes=changes)(test)
    return test


@settings(max_examples=QUICK // 2, **SETTINGS)
@checkpoint_examples
@given(changes=mutations())
def test_any_changed_checkpoint_is_tested_or_refused_in_one_line(tmp_path, capfd, trained, changes):
    evaluate_with(tmp_path, trained, changes, capfd)


@pytest.mark.slow
@settings(max_examples=MANY, **SETTINGS)
@given(changes=mutations())
def test_any_changed_checkpoint_many(tmp_path, capfd, trained, changes):
    evaluate_with(tmp_path, trained, changes, capfd)


MODEL_OPTIONS = {
    "hidden_sizes": st.lists(st.integers(1, 12), min_size=1, max_size=3),
    "activation": st.sampled_from(["relu", "none", "tanh", "sigmoid"]),
    "members": st.integers(1, 4),
    "l1": st.sampled_from([0.0, 1e-3, 0.5]),
    "l2": st.sampled_from([0.0, 1e-3, 0.5]),
}


@settings(max_examples=QUICK, **SETTINGS)
@given(
    subcommand=st.sampled_from(["validate", "test", "predict"]),
    options=st.dictionaries(st.sampled_from(sorted(MODEL_OPTIONS)), st.none(), min_size=1).flatmap(
        lambda names: st.fixed_dictionaries({name: MODEL_OPTIONS[name] for name in names})
    ),
)
def test_an_evaluation_uses_or_refuses_every_model_option_it_is_given(
    tmp_path, capfd, trained, subcommand, options
):
    """An evaluation runs the checkpoint's network: a model option given otherwise is refused
    naming it, never dropped (``--model.activation none`` once tested the ReLU network)."""
    buffer = io.BytesIO()
    torch.save(trained, buffer)
    (tmp_path / "given.ckpt").write_bytes(buffer.getvalue())
    given = [
        f"--model.{name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in options.items()
    ]
    small = ["--data.test_samples=20", "--boundary.gif=false"]
    status, err = outcome(
        lambda: cli_main([subcommand, "--ckpt_path=given.ckpt", *small, *given]), capfd
    )
    assert_kept_its_promise(status, err)
    hparams = trained["hyper_parameters"]
    differ = [n for n, v in options.items() if json.dumps(v) != json.dumps(hparams[n])]
    if differ:
        named = re.search(r"circles: error: model\.(\w+) must be", err)
        assert status == 2 and named is not None and named[1] in differ, err
    else:
        assert status == 0


@pytest.mark.parametrize(
    "data_state",
    [
        {"num_classes": 2, "class_names": ["a", "b", "c"]},
        {"num_classes": 2, "class_names": ["a", "a"]},
        {"num_classes": 3, "class_names": ["a", "b", "c"]},  # the network's output has 2
    ],
)
def test_a_checkpoint_whose_class_names_disagree_with_its_classes_is_refused(
    tmp_path, capfd, trained, data_state
):
    changed = {**trained, "CirclesDataModule": {**trained.get("CirclesDataModule", {})}}
    changed["CirclesDataModule"].update(data_state)
    torch.save(changed, tmp_path / "given.ckpt")
    status, err = outcome(
        lambda: cli_main(["test", "--ckpt_path=given.ckpt", "--data.test_samples=20"]), capfd
    )
    assert status == 2 and "given.ckpt" in err and "class" in err, err
    assert_kept_its_promise(status, err)


BEYOND = {
    "seed_everything": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
    "data.n_samples": st.integers(10_000_001, 10**15),
    "data.test_samples": st.integers(10_000_001, 10**15),
    "data.classes": st.integers(1001, 10**12),
    "boundary.resolution": st.integers(1001, 10**12),
}


@settings(max_examples=QUICK, **SETTINGS)
@given(option=st.sampled_from(sorted(BEYOND)).flatmap(lambda o: st.tuples(st.just(o), BEYOND[o])))
def test_sizes_beyond_their_bounds_are_refused_before_anything_is_allocated(
    tmp_path, capfd, option
):
    """Each of them once ran out of memory, hung or gave a traceback."""
    name, value = option
    blobs = ["--data.dataset=blobs"] if name == "data.classes" else []
    status, err = outcome(lambda: cli_main(["fit", *blobs, f"--{name}={value}"]), capfd)
    assert status == 2 and err.startswith(f"circles: error: {name} must be"), err
    assert_kept_its_promise(status, err)
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("precision", ["64", "bf16-true"])
def test_every_precision_fits_draws_and_evaluates(tmp_path, capfd, precision):
    """The grids and the data are float32; the network may be another dtype."""
    fit = ["fit", *TINY, f"--trainer.precision={precision}", "--boundary.every_n_epochs=1"]
    for command in (fit, ["test", "--ckpt_path=last"], ["predict", "--ckpt_path=last"]):
        status, err = outcome(lambda command=command: cli_main(command), capfd)
        assert status == 0 and "Traceback" not in err, err


@st.composite
def resume_state_changes(draw) -> list[tuple[str, tuple[str | int, ...], object]]:
    """Changes to what ``fit --ckpt_path`` restores besides the weights: (kind, where, value)."""
    places = [
        ("optimizer_states",),
        ("optimizer_states", 0),
        ("optimizer_states", 0, "state"),
        ("optimizer_states", 0, "param_groups"),
        ("loops",),
        ("loops", "fit_loop"),
        ("callbacks",),
        ("callbacks", "RunCheckpoint"),
        ("lr_schedulers",),
    ]
    return [
        (draw(st.sampled_from(["drop", "replace"])), draw(st.sampled_from(places)), draw(ODD))
        for _ in range(draw(st.integers(1, 2)))
    ]


def changed_state(checkpoint: dict, changes: list) -> dict:
    result = copy.deepcopy({k: v for k, v in checkpoint.items() if k != "state_dict"})
    result["state_dict"] = checkpoint["state_dict"]
    for kind, where, value in changes:
        parent, key = result, where[-1]
        for step in where[:-1]:
            parent = parent.get(step) if isinstance(parent, dict) else None
            parent = parent[0] if isinstance(parent, list) and parent else parent
        if key == "RunCheckpoint" and isinstance(parent, dict):  # its state key names its settings
            key = next((k for k in parent if k.startswith("RunCheckpoint")), key)
        if isinstance(parent, dict) and kind == "drop":
            parent.pop(key, None)
        elif isinstance(parent, dict):
            parent[key] = value
    return result


@settings(max_examples=6, **SETTINGS)
@example(changes=[("drop", ("optimizer_states",), None)])
@example(changes=[("replace", ("callbacks", "RunCheckpoint"), {})])
@example(changes=[("replace", ("loops", "fit_loop"), 1)])
@given(changes=resume_state_changes())
def test_any_broken_resume_state_is_continued_or_refused_in_one_line(
    tmp_path, capfd, trained, changes
):
    """A checkpoint whose optimizer, loops or callbacks' state is broken or missing: ``fit
    --ckpt_path`` continues it or refuses it naming the file, never a traceback."""
    torch.save(changed_state(trained, changes), tmp_path / "given.ckpt")
    status, err = outcome(
        lambda: cli_main(["fit", *TINY, "--trainer.max_epochs=3", "--ckpt_path=given.ckpt"]), capfd
    )
    assert_kept_its_promise(status, err)
    if status:
        assert "given.ckpt cannot be continued" in err or "given.ckpt" in err, err


@settings(max_examples=QUICK, **SETTINGS)
@given(
    option=st.sampled_from(
        [
            ("model.optimizer.lr", "a number or a tensor"),
            ("model.optimizer.momentum", "a number"),
            ("weights.histograms_every_n_epochs", "an integer >= 1 or null"),
            ("model.compile_mode", "one of 'default', 'reduce-overhead', 'max-autotune' or null"),
        ]
    ),
    value=st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
        lambda v: (
            v
            not in (
                "null",
                "none",
                "true",
                "false",
                "yes",
                "no",
                "on",
                "off",
                "inf",
                "nan",
                "default",
            )
        )
    ),
)
def test_a_value_of_the_wrong_kind_is_named_with_the_kind_it_needs(tmp_path, capfd, option, value):
    """jsonargparse's account of every type it tried (``Does not validate against any of the
    Union subtypes ...``) becomes the option, the kind it takes and the value."""
    name, kind = option
    status, err = outcome(lambda: cli_main(["fit", f"--{name}={value}"]), capfd)
    assert_kept_its_promise(status, err)
    assert f"circles: error: {name} must be {kind}, got {value}." in err, err


def test_the_sections_a_config_file_is_checked_for_are_the_command_lines():
    from circles.cli import SECTIONS as CLI_SECTIONS
    from circles.inputs import SECTIONS

    assert set(SECTIONS) == set(CLI_SECTIONS)
