"""The module and the data module in a plain Lightning script, no command line: everything
Lightning documents works (``trainer.validate`` and ``trainer.test`` return the metrics,
callbacks monitor what ``self.log`` put in ``callback_metrics``, any logger gets the curves over
epochs)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from circles.data import CirclesDataModule
from circles.model import CirclesClassifier
from circles.runs.logger import TensorBoardRunLogger

from helpers import scalars_by_step


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = dict(
        max_epochs=4,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    return pl.Trainer(**{**options, **kwargs})


@pytest.mark.parametrize("members", [1, 3])
def test_validate_and_test_return_the_metrics_as_lightning_documents(tmp_path, members):
    pl.seed_everything(0)
    model, data = (
        CirclesClassifier(members=members),
        CirclesDataModule(n_samples=100, test_samples=50),
    )
    fit = trainer(tmp_path, logger=False, enable_checkpointing=False)
    fit.fit(model, data)
    (validated,) = fit.validate(model, data, verbose=False)
    (tested,) = fit.test(model, data, verbose=False)
    spread = {"acc_std", "acc_min", "acc_max"} if members > 1 else set()
    assert set(validated) == {"val/loss", "val/acc", "epoch", *(f"val/{s}" for s in spread)}
    test_spread = {*spread, "acc_ci95", "acc_ensemble"} if members > 1 else set()
    assert set(tested) == {
        "test/loss",
        "test/acc",
        "test/bayes_acc",
        "test/bayes_gap",
        "epoch",
        *(f"test/{s}" for s in test_spread),
    }
    assert validated["epoch"] == tested["epoch"] == 3  # the epoch whose training made the weights
    x, y = data.test_x, data.test_y
    with torch.no_grad():
        right = (model.member_logits(x) > 0).float() == y
    assert tested["test/acc"] == pytest.approx(right.float().mean().item())
    assert tested["test/bayes_gap"] == pytest.approx(tested["test/bayes_acc"] - tested["test/acc"])


def test_checkpoint_and_early_stopping_monitor_what_the_module_logs(tmp_path):
    pl.seed_everything(0)
    model, data = (
        CirclesClassifier(hidden_sizes=[16, 16]),
        CirclesDataModule(n_samples=200, test_samples=50),
    )
    best = ModelCheckpoint(monitor="val/acc", mode="max")
    stop = EarlyStopping(monitor="val/acc", mode="max", stopping_threshold=0.99, patience=1000)
    fit = trainer(tmp_path, max_epochs=300, logger=False, callbacks=[best, stop])
    # type: ignore[method-assign]
    model.configure_optimizers = lambda: torch.optim.Adam(model.parameters(), lr=0.03)
    fit.fit(model, data)
    assert fit.current_epoch < 299 and float(fit.callback_metrics["val/acc"]) >= 0.99
    assert float(best.best_model_score) == float(fit.callback_metrics["val/acc_best"])
    assert Path(best.best_model_path).is_file()


def test_a_csv_logger_gets_the_curves_the_tensorboard_logger_draws_over_epochs(tmp_path):
    """The same values at the same epochs (the CSV's ``epoch`` column, TensorBoard's step)."""
    runs = []
    for name, logger in (
        ("csv", CSVLogger(tmp_path, name="csv")),
        ("tensorboard", TensorBoardRunLogger(str(tmp_path), name="tb")),
    ):
        pl.seed_everything(0)
        model, data = (
            CirclesClassifier(members=2),
            CirclesDataModule(n_samples=100, test_samples=50),
        )
        fit = trainer(tmp_path / name, logger=logger, enable_checkpointing=False)
        fit.fit(model, data)
        fit.test(model, data, verbose=False)
        runs.append(logger.log_dir)
    with open(Path(runs[0]) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    from_csv: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "epoch") and value:
                from_csv.setdefault(key, {})[int(float(row["epoch"]))] = float(value)
    from_tensorboard = scalars_by_step(Path(runs[1]))
    assert from_csv.keys() == from_tensorboard.keys()
    for key, values in from_csv.items():
        assert values.keys() == from_tensorboard[key].keys(), key
        assert list(values.values()) == pytest.approx(list(from_tensorboard[key].values())), key
    assert sorted(from_csv["train/loss"]) == list(range(4)) and sorted(from_csv["test/acc"]) == [3]


def test_a_checkpoint_written_before_members_were_one_path_still_loads_and_trains_on(tmp_path):
    """A single network's checkpoint of 7509795 (an ``nn.Sequential`` then, Adam's state with it)
    and one of three members: both load, evaluate and continue training."""
    data_dir = Path(__file__).parent / "data"
    for name, members in (("one_network_7509795.ckpt", 1), ("three_members_7509795.ckpt", 3)):
        checkpoint = torch.load(data_dir / name, weights_only=True)
        model = CirclesClassifier.load_from_checkpoint(data_dir / name, weights_only=True)
        assert (
            model.members == members and model.weights_epoch == checkpoint["circles_weights_epoch"]
        )
        state = checkpoint["state_dict"]
        first = state["net.0.weight"] if members == 1 else state["net.weights.0"][0]
        torch.testing.assert_close(model.layer_weights()[0], first)
        assert float(model.val_acc_best.compute()) == float(state["metrics.val_acc_best"])
    # the Adam run goes on from its checkpoint, Adam's state too
    model = CirclesClassifier(hidden_sizes=[16, 16])
    # type: ignore[method-assign]
    model.configure_optimizers = lambda: torch.optim.Adam(model.parameters(), lr=0.03)
    fit = trainer(tmp_path, max_epochs=5, logger=False, enable_checkpointing=False)
    fit.fit(
        model,
        CirclesDataModule(n_samples=60, test_samples=20),
        ckpt_path=data_dir / "one_network_7509795.ckpt",
    )
    (adam,) = fit.optimizers
    assert fit.current_epoch == 5 and [
        adam.state[w]["exp_avg"].shape for w in model.net.weights
    ] == [w.shape for w in model.net.weights]


def test_readmes_plain_lightning_script_runs_as_written(capsys):
    """README's script with the module and the data module (it prints what ``trainer.test``
    returns)."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (script,) = re.findall(r"```python\n(import lightning.pytorch as pl\n.*?)```", readme, re.S)
    exec(compile(script, "README.md", "exec"), {})
    (printed,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[{")]
    for name in (
        "'test/loss'",
        "'test/acc'",
        "'test/bayes_acc'",
        "'test/bayes_gap'",
        "'epoch': 99.0",
    ):
        assert name in printed
