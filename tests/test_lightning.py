"""The module and the data module in a plain Lightning script, no command line: everything
Lightning documents works (``trainer.validate`` and ``trainer.test`` return the metrics,
callbacks monitor what ``self.log`` put in ``callback_metrics``, any logger gets the curves over
epochs)."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    model.optimizer = functools.partial(torch.optim.Adam, lr=0.03)
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


class Moons(pl.LightningDataModule):
    """A data module of a user's own: scikit-learn's moons in a ``TensorDataset``, batches of 32
    through ``DataLoader``s; nothing of circles' data (no Bayes limit, no class names)."""

    def __init__(self) -> None:
        super().__init__()
        from sklearn.datasets import make_moons

        x, y = make_moons(400, noise=0.1, random_state=0)
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def _loader(self, part: slice, shuffle: bool = False) -> torch.utils.data.DataLoader:
        data = torch.utils.data.TensorDataset(self.x[part], self.y[part])
        return torch.utils.data.DataLoader(data, batch_size=32, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(slice(0, 300), shuffle=True)

    def val_dataloader(self):
        return self._loader(slice(300, 350))

    def test_dataloader(self):
        return self._loader(slice(350, 400))

    def predict_dataloader(self):
        return torch.utils.data.DataLoader(self.x[350:], batch_size=32)


def test_the_module_works_with_any_data_module_and_the_optimizer_it_is_given(tmp_path):
    """The template's promise: a plain script with a data module of its own and Adam passed in
    fits, validates, tests and predicts; ModelCheckpoint and EarlyStopping read what the module
    logs; the best checkpoint loads back with ``load_from_checkpoint`` and gives the same test
    accuracy."""
    pl.seed_everything(0)
    model = CirclesClassifier(
        hidden_sizes=[16, 16], optimizer=functools.partial(torch.optim.Adam, lr=0.02)
    )
    best = ModelCheckpoint(monitor="val/acc", mode="max")
    stop = EarlyStopping(monitor="val/loss", patience=5)
    fit = trainer(tmp_path, max_epochs=60, logger=False, callbacks=[best, stop])
    data = Moons()
    fit.fit(model, data)
    (adam,) = fit.optimizers
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == 0.02
    (validated,) = fit.validate(model, data, verbose=False)
    (tested,) = fit.test(model, data, verbose=False)
    assert validated["val/acc"] > 0.9 and tested["test/acc"] > 0.9
    assert "test/bayes_acc" not in tested  # the data does not know it
    predicted = fit.predict(model, data)
    assert [p.shape for _, p in predicted] == [(1, 32), (1, 18)]
    loaded = CirclesClassifier.load_from_checkpoint(best.best_model_path, weights_only=True)
    assert loaded.hparams.hidden_sizes == [16, 16]
    (again,) = trainer(tmp_path, logger=False).test(loaded, data, verbose=False)
    assert again["epoch"] == loaded.weights_epoch and again["test/acc"] > 0.9


def test_a_learning_rate_scheduler_is_given_like_the_optimizer(tmp_path):
    """``lr_scheduler`` takes the optimizer; ReduceLROnPlateau watches ``val/loss``."""
    pl.seed_everything(0)
    model = CirclesClassifier(
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5)
    )
    fit = trainer(tmp_path, max_epochs=4, logger=False, enable_checkpointing=False)
    fit.fit(model, CirclesDataModule(n_samples=60, test_samples=20))
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0)
    fit = trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    fit.fit(CirclesClassifier(lr_scheduler=plateau), CirclesDataModule(n_samples=60))
    assert fit.lr_scheduler_configs[0].monitor == "val/loss"


class OwnNetwork(torch.nn.Module):
    """A network of a user's own: no ``nn.Linear`` stack circles knows, logits ``(N, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Dropout(0.0), torch.nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_network_of_ones_own_takes_the_mlps_place(tmp_path):
    """``network=`` replaces the MLP: it trains and tests, the boundary pictures draw it (the
    views of layers it does not have are skipped), its checkpoint loads with the network given
    again (Lightning's way for an ``nn.Module`` argument); members stay the MLP's."""
    from circles.callbacks.boundary import DecisionBoundaryCallback

    pl.seed_everything(0)
    model = CirclesClassifier(
        network=OwnNetwork(), optimizer=functools.partial(torch.optim.Adam, lr=0.02)
    )
    assert model.layer_weights() == [] and model.dead_units(torch.zeros(3, 2)) == []
    boundary = DecisionBoundaryCallback(
        every_n_epochs=5, show_network=True, show_layers=True, show_neurons=True
    )
    best = ModelCheckpoint(monitor="val/acc", mode="max")
    fit = trainer(tmp_path, max_epochs=150, callbacks=[boundary, best])
    data = CirclesDataModule(n_samples=300, test_samples=200)
    fit.fit(model, data)
    (tested,) = fit.test(model, data, verbose=False)
    assert tested["test/acc"] > 0.9 and Path(boundary.png_path).is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(fit.logger.log_dir).Reload().Tags()["images"]
    assert "decision_boundary/train_val" in images
    assert not {"network/weights", "layers/plane", "neurons/layer_1"} & set(images)
    loaded = CirclesClassifier.load_from_checkpoint(best.best_model_path, network=OwnNetwork())
    torch.testing.assert_close(loaded.net.body[0].weight, model.net.body[0].weight, atol=1, rtol=1)
    with pytest.raises(ValueError, match="members must be 1 with a network of your own"):
        CirclesClassifier(network=OwnNetwork(), members=2)


def test_a_data_module_whose_classes_are_not_the_networks_is_refused_when_lightning_sets_up(
    tmp_path,
):
    """The data says it has four classes, the network has two outputs: refused in the module's
    ``setup``, before a step, in a plain script too."""
    from circles.errors import ConfigError

    fit = trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match="num_classes must be the data's 4"):
        fit.fit(CirclesClassifier(), CirclesDataModule(dataset="blobs", n_samples=60))


def test_a_checkpoint_of_another_format_is_refused_saying_so(tmp_path):
    fit = trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    model = CirclesClassifier()
    fit.fit(model, CirclesDataModule(n_samples=60, test_samples=20))
    fit.save_checkpoint(tmp_path / "now.ckpt")
    checkpoint = torch.load(tmp_path / "now.ckpt", weights_only=True)
    assert checkpoint["circles_format"] == 1
    checkpoint.pop("circles_format")
    torch.save(checkpoint, tmp_path / "before.ckpt")
    with pytest.raises(Exception, match="of format None and circles reads format 1"):
        CirclesClassifier.load_from_checkpoint(tmp_path / "before.ckpt", weights_only=True)


def test_the_plain_lightning_script_of_the_engineers_page_runs_as_written(capsys):
    """docs/engineering.md's script with the module and the data module (it prints what
    ``trainer.test`` returns)."""
    import re

    page = (Path(__file__).parents[1] / "docs" / "engineering.md").read_text()
    (script,) = re.findall(r"```python\n(import lightning.pytorch as pl\n.*?)```", page, re.S)
    exec(compile(script, "docs/engineering.md", "exec"), {})
    (printed,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[{")]
    for name in (
        "'test/loss'",
        "'test/acc'",
        "'test/bayes_acc'",
        "'test/bayes_gap'",
        "'epoch': 99.0",
    ):
        assert name in printed


CALLS = ("fit", "validate", "test", "predict")


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.sampled_from(CALLS), st.booleans()), min_size=2, max_size=5))
def test_fit_validate_test_and_predict_work_in_any_order_and_across_trainers(tmp_path, calls):
    """Any sequence of Lightning's four calls on one module, each on the same Trainer or a new
    one: none fails (a validation before the fit once left the metrics' states as inference
    tensors the fit could not update), and the metrics each returns are finite."""
    model, data = CirclesClassifier(), CirclesDataModule(n_samples=60, test_samples=50)
    current = trainer(tmp_path, max_epochs=1)
    for call, fresh in calls:
        if fresh:
            current = trainer(tmp_path, max_epochs=current.max_epochs + 1)
        if call == "fit":
            current.fit_loop.max_epochs = current.current_epoch + 1
            current.fit(model, data)
            continue
        result = getattr(current, call)(
            model, data, **({} if call == "predict" else {"verbose": False})
        )
        if call != "predict":
            assert all(torch.isfinite(torch.tensor(v)) for v in result[0].values()), result
