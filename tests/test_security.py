"""Untrusted checkpoints: every load is ``weights_only=True``, a checkpoint carrying code is
refused before any of it runs, and what the project itself saves is plain data that
``weights_only=True`` accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from circles.runs.checkpoints import AtomicCheckpointIO, InputError

from helpers import TINY, Payload, exit_status, run_dir, run_names


def malicious_copy(source: Path, target: Path, marker: Path) -> None:
    """A real checkpoint with a payload added, as someone could hand one out."""
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    torch.save(checkpoint, target)


@pytest.fixture
def fitted(tiny_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of a finished run in the test's directory."""
    shutil.copytree(tiny_run / "lightning_logs", tmp_path / "lightning_logs")
    return run_dir(tmp_path / "lightning_logs", 0)


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
@pytest.mark.parametrize("how", ["path", "last", "weights_only false"])
def test_a_checkpoint_carrying_code_is_refused_and_never_runs(
    subcommand, how, fitted, tmp_path, capfd
):
    marker = tmp_path / "PAYLOAD_RAN"
    last = fitted / "checkpoints" / "last.ckpt"
    if how == "last":  # the newest run's last.ckpt is the one handed out
        malicious_copy(last, last, marker)
        args = ["--ckpt_path", "last"]
    else:
        malicious_copy(last, tmp_path / "shared.ckpt", marker)
        args = ["--ckpt_path", "shared.ckpt"] + (
            ["--weights_only", "false"] if how != "path" else []
        )
    capfd.readouterr()

    assert exit_status(subcommand, *TINY, *args) == 2

    out, err = capfd.readouterr()
    assert not marker.exists()
    assert "Refused to load" in err and "(os.makedirs)" in err and "weights_only=True" in err
    assert "Traceback" not in out + err
    assert run_names(tmp_path / "lightning_logs") == ["0000"]  # no run was started
    assert not list((tmp_path / "lightning_logs").glob("**/evaluations"))


def test_a_global_of_an_allowed_module_is_named_too(fitted, tmp_path):
    """torch words the refusal differently for a global of a module it blocks (``os.makedirs``,
    the other tests) and of one it allows in part (``open``, named ``io.open`` or ``_io.open``
    depending on the Python)."""

    class OpensAFile:
        def __reduce__(self):
            return (open, (str(tmp_path / "PAYLOAD_RAN"), "w"))

    checkpoint = torch.load(
        fitted / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )
    torch.save({**checkpoint, "payload": OpensAFile()}, tmp_path / "shared.ckpt")
    with pytest.raises(InputError, match=rf"Refused to load .*\({open.__module__}\.open\)"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "shared.ckpt")
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_the_checkpoint_io_ignores_a_request_for_weights_only_false(fitted, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    malicious_copy(fitted / "checkpoints" / "best.ckpt", tmp_path / "shared.ckpt", marker)
    with pytest.raises(InputError, match="Refused to load"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "shared.ckpt", weights_only=False)
    assert not marker.exists()


def test_everything_the_project_saves_loads_with_weights_only(fitted):
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(
            fitted / "checkpoints" / name, map_location="cpu", weights_only=True
        )
        assert checkpoint["hyper_parameters"]["hidden_sizes"] == [10, 10]
        assert checkpoint["datamodule_hyper_parameters"]["n_samples"] == 60
        assert any("RunCheckpoint" in key for key in checkpoint["callbacks"])
        assert checkpoint["state_dict"] and checkpoint["optimizer_states"] and checkpoint["loops"]
