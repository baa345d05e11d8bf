"""Two runs of the same config and seed give bitwise identical metrics and weights on the CPU."""

from __future__ import annotations

import pytest
import torch

from circles.cli import cli_main

from helpers import QUIET, run_dir, written_scalars


@pytest.mark.parametrize(
    "batching", [[], ["--data.batch_size=64"]], ids=["full-batch", "minibatch"]
)
def test_same_config_and_seed_give_identical_metrics_and_weights(batching, tmp_path):
    args = [
        "fit",
        "--trainer.max_epochs=6",
        "--data.n_samples=300",
        "--data.test_samples=20",
        "--model.optimizer=Adam",
        "--model.optimizer.init_args.lr=0.03",
        "--boundary.every_n_epochs=1000",
        *batching,
        *QUIET,
    ]
    cli_main(args)
    cli_main(args)
    first, second = run_dir(tmp_path / "lightning_logs", 0), run_dir(tmp_path / "lightning_logs", 1)

    a, b = written_scalars(first), written_scalars(second)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= a.keys()
    assert a == b  # every value at every epoch, bitwise
    for name in ("best.ckpt", "last.ckpt"):
        x = torch.load(first / "checkpoints" / name, weights_only=True)
        y = torch.load(second / "checkpoints" / name, weights_only=True)
        assert x["global_step"] == y["global_step"]
        for key in x["state_dict"]:
            assert torch.equal(x["state_dict"][key], y["state_dict"][key]), key
        for p, q in zip(
            x["optimizer_states"][0]["state"].values(),
            y["optimizer_states"][0]["state"].values(),
            strict=True,
        ):
            assert all(torch.equal(p[k], q[k]) for k in p)


def test_a_different_seed_gives_different_weights(tmp_path):
    """The check above would pass trivially if the seed were ignored."""
    args = [
        "fit",
        "--trainer.max_epochs=2",
        "--data.n_samples=100",
        "--data.test_samples=20",
        *QUIET,
    ]
    cli_main([*args, "--seed_everything=1"])
    cli_main([*args, "--seed_everything=2"])
    x, y = (
        torch.load(
            run_dir(tmp_path / "lightning_logs", n) / "checkpoints" / "last.ckpt", weights_only=True
        )
        for n in (0, 1)
    )
    assert not torch.equal(x["state_dict"]["net.weights.0"], y["state_dict"]["net.weights.0"])
