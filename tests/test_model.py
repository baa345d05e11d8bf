"""Tests for circles.model: the MLP (a stack of K members, one the ordinary case), its parity
with the chapter's plain PyTorch loop, divergence detection, checkpoints of earlier versions."""

from __future__ import annotations

import re
import warnings
from argparse import ArgumentError

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from circles.data.module import CirclesDataModule
from circles.errors import ConfigError
from circles.model.classifier import CirclesClassifier
from circles.model.metrics import member_losses
from circles.model.networks import StackedMLP, build_mlp
from circles.model.training import TrainingDiverged
from circles.pictures.notes import affine_text

from helpers import quiet_trainer

ACTIVATIONS = ["relu", "none", "tanh", "sigmoid", "leaky_relu", "gelu"]


class CircleModelV2(nn.Module):
    """The chapter's second model, verbatim."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(2, 10)
        self.layer2 = nn.Linear(10, 10)
        self.layer3 = nn.Linear(10, 1)
        self.relu = nn.ReLU()  # Non-linear activaion function

    def forward(self, x):
        return self.layer3(self.relu(self.layer2(self.relu(self.layer1(x)))))


def accuracy(y_pred, y_true):
    """The chapter's accuracy function (percent)."""
    correct = torch.eq(y_true, y_pred).sum().item()
    return (correct / len(y_pred)) * 100


def layers(model: CirclesClassifier, member: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One member's layers as (weight ``(out, in)``, bias ``(out,)``), input side first."""
    return [
        (w[member], b[member]) for w, b in zip(model.net.weights, model.net.biases, strict=True)
    ]


def shapes(model: CirclesClassifier) -> list[tuple[int, int]]:
    """Each layer's (inputs, outputs)."""
    return [(w.shape[1], w.shape[0]) for w, _ in layers(model)]


def chapter_state(model: CirclesClassifier) -> dict[str, torch.Tensor]:
    """The classifier's (first member's) weights under CircleModelV2's parameter names."""
    return {
        f"layer{i}.{k}": t.detach().clone()
        for i, layer in enumerate(layers(model), start=1)
        for k, t in zip(("weight", "bias"), layer, strict=True)
    }


# ---------------------------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("n", [1, 7, 64])
def test_output_is_one_logit_per_point(n):
    model = CirclesClassifier()
    assert model(torch.randn(n, 2)).shape == (n,)
    assert build_mlp(2, [4], "relu")(torch.randn(n, 2)).shape == (n, 1)


def test_default_is_the_chapters_relu_network_as_a_stack_of_one():
    model = CirclesClassifier()
    assert (
        isinstance(model.net, StackedMLP)
        and model.net.members == 1
        and isinstance(model.net.activation, nn.ReLU)
    )
    assert shapes(model) == [(2, 10), (10, 10), (10, 1)]
    assert list(model.state_dict()) == [
        "member_seeds",
        "member_val_acc",
        "member_val_acc_best",
        "net.weights.0",
        "net.weights.1",
        "net.weights.2",
        "net.biases.0",
        "net.biases.1",
        "net.biases.2",
        "val_acc_best.max_value",
    ]


@pytest.mark.parametrize("hidden", [[3], [3, 5, 7], [16, 1]])
def test_layer_sizes_follow_hidden_sizes(hidden):
    model = CirclesClassifier(hidden_sizes=hidden)
    sizes = [2, *hidden, 1]
    assert shapes(model) == list(zip(sizes[:-1], sizes[1:], strict=True))
    assert [h.shape for h in model.net.layers(torch.randn(5, 2))[:-1]] == [
        (1, 5, h) for h in hidden
    ]
    assert model(torch.randn(5, 2)).shape == (5,)


@pytest.mark.parametrize("seed", [0, 32, 1234])
def test_initial_weights_equal_the_chapters_model_after_the_same_seed(seed):
    torch.manual_seed(seed)
    ours = CirclesClassifier()
    torch.manual_seed(seed)
    chapter = CircleModelV2()
    theirs = chapter.state_dict()
    for name, value in chapter_state(ours).items():
        assert torch.equal(value, theirs[name]), name
    x = torch.randn(20, 2)
    assert torch.equal(ours(x), chapter(x).squeeze(-1))


def test_different_seeds_give_different_weights():
    torch.manual_seed(0)
    a = CirclesClassifier()
    torch.manual_seed(1)
    b = CirclesClassifier()
    assert not torch.equal(layers(a)[0][0], layers(b)[0][0])


def affine_fit_residual(f, x: torch.Tensor) -> float:
    """Largest residual of the best affine fit of f's outputs on x (least squares)."""
    with torch.no_grad():
        out = f(x).reshape(-1, 1).double()
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(design, out).solution
    return float((design @ coef - out).abs().max())


@pytest.mark.parametrize("hidden", [[10, 10], [4, 8, 3], [5]])
def test_activation_none_is_one_affine_map(hidden):
    torch.manual_seed(0)
    model = CirclesClassifier(hidden_sizes=hidden, activation="none")
    assert isinstance(model.net.activation, nn.Identity)
    # Compose the linear layers by hand: x -> W x + b.
    W = torch.eye(2)
    b = torch.zeros(2)
    for weight, bias in layers(model):
        W = weight.detach() @ W
        b = weight.detach() @ b + bias.detach()
    x = torch.randn(500, 2) * 3
    with torch.no_grad():
        assert torch.allclose(model(x), (x @ W.T + b).squeeze(-1), atol=1e-5)
    assert affine_fit_residual(model, x) < 1e-5


@settings(max_examples=40)
@given(
    hidden=st.lists(st.integers(1, 12), max_size=4),
    members=st.integers(1, 4),
    classes=st.integers(2, 4),
    features=st.sampled_from([["x1", "x2"], ["x1_sq", "x2_sq"], ["x1", "x2", "x1_x2", "sin_x1"]]),
    seed=st.integers(0, 2**16),
)
def test_the_collapsed_map_is_the_networks_logits_to_rounding(
    hidden, members, classes, features, seed
):
    """What the summary prints and the pictures draw for a model without activations, ``logit =
    a*x1 + b*x2 + c`` (one per class for more than two), is the network itself: its logits for
    any points, to float32 rounding."""
    pl.seed_everything(seed, verbose=False)
    model = CirclesClassifier(
        hidden_sizes=hidden,
        activation="none",
        members=members,
        num_classes=classes,
        features=features,
    )
    weights, biases = model.collapsed()
    assert (
        weights.shape == (members, 1 if classes == 2 else classes, len(features))
        and biases.shape[0] == members
    )
    x = torch.randn(200, 2) * 2
    with torch.no_grad():
        logits = model.member_logits(x).double()
        collapsed = (
            torch.einsum("kof,nf->kno", weights, model.features(x).double()) + biases[:, None, :]
        )
    collapsed = collapsed.squeeze(-1) if classes == 2 else collapsed
    scale = 1 + logits.abs().max()
    assert (collapsed - logits).abs().max() <= 1e-5 * scale
    # ReLU: no such map
    assert CirclesClassifier(hidden_sizes=hidden or [3], members=members).collapsed() is None


def test_the_collapsed_map_reads_as_its_formula():
    text = affine_text(torch.tensor([0.5, -0.25, 2.0]), torch.tensor(-1.5), ["x1", "x2", "x1_sq"])
    assert text == "0.5*x1 - 0.25*x2 + 2*x1_sq - 1.5"
    assert (
        affine_text(torch.tensor([-0.123456, 0.0]), torch.tensor(0.0), ["x1", "x2"])
        == "-0.1235*x1 + 0*x2 + 0"
    )


def test_relu_network_is_not_affine():
    torch.manual_seed(0)
    model = CirclesClassifier()
    x = torch.randn(500, 2) * 3
    assert affine_fit_residual(model, x) > 1e-3
    # Midpoint test: an affine map satisfies f((a+b)/2) == (f(a)+f(b))/2 for every pair.
    a, b = x[:250], x[250:]
    with torch.no_grad():
        gap = (model((a + b) / 2) - (model(a) + model(b)) / 2).abs().max()
    assert gap > 1e-3


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_sits_after_every_hidden_layer(activation):
    model = CirclesClassifier(hidden_sizes=[6, 4], activation=activation)
    assert shapes(model) == [(2, 6), (6, 4), (4, 1)]
    reference = {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "none": lambda v: v,
        "leaky_relu": nn.functional.leaky_relu,
        "gelu": nn.functional.gelu,
    }[activation]
    x = torch.randn(7, 2)
    h = x
    # the named function after every hidden layer, not the last
    for i, (weight, bias) in enumerate(layers(model)):
        h = h @ weight.T + bias
        h = reference(h) if i < 2 else h
    with torch.no_grad():
        torch.testing.assert_close(model.member_logits(x)[0], h[:, 0].detach())
    assert model(torch.randn(3, 2)).shape == (3,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activation": "swish"},
        {"activation": ""},
        {"hidden_sizes": [10, 0]},
        {"hidden_sizes": [-3]},
        {"members": 0},
        {"members": -3},
        {"members": 2.5},
        {"members": "many"},
        {"members": 65_537},
        {"num_classes": 1},
        {"l1": -1.0},
        {"l2": float("inf")},
    ],
)
def test_each_settings_range_is_declared_in_the_signature_where_the_parser_checks_it(kwargs):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CirclesClassifier, "model")
    parser.parse_object({"model": {}})  # the defaults are in range
    with pytest.raises(ArgumentError, match=f"model.{next(iter(kwargs))}"):
        parser.parse_object({"model": kwargs})


@pytest.mark.parametrize(
    "kwargs", [{"hidden_sizes": []}, {"hidden_sizes": [], "activation": "tanh"}]
)
def test_what_no_range_says_is_checked_when_the_network_is_built(kwargs):
    """An activation needs hidden layers to come after: a rule between two settings."""
    with pytest.raises(ConfigError) as info:
        CirclesClassifier(**kwargs)
    assert info.value.field == "hidden_sizes"
    with pytest.raises(ConfigError) as info:
        build_mlp(2, kwargs["hidden_sizes"], kwargs.get("activation", "relu"))
    assert info.value.field == "hidden_sizes"


def test_no_hidden_layers_with_activation_none_is_a_single_linear_layer():
    torch.manual_seed(0)
    model = CirclesClassifier(hidden_sizes=[], activation="none")
    ((weight, bias),) = layers(model)
    assert weight.shape == (1, 2)
    x = torch.randn(10, 2)
    with torch.no_grad():
        assert torch.allclose(model(x), x @ weight[0] + bias[0])


def test_the_default_optimizer_is_the_chapters_sgd_in_a_script_and_on_the_command_line():
    from jsonargparse import ArgumentParser

    model = CirclesClassifier()
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    assert [(group["lr"], group["momentum"]) for group in optimizer.param_groups] == [(0.1, 0)]
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in model.parameters()}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CirclesClassifier, "model")
    given = parser.parse_object({"model": {}}).model.optimizer
    assert given.class_path == "torch.optim.SGD" and given.init_args.lr == 0.1


def test_training_minimises_binary_cross_entropy_of_the_logits():
    model = CirclesClassifier()
    x, y = torch.randn(9, 2), torch.randint(0, 2, (9,)).float()
    p = torch.sigmoid(model(x))
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    torch.testing.assert_close(model.training_step((x, y), 0), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- exact parity


def epoch_metric(trainer: pl.Trainer, key: str) -> float:
    """An epoch-level metric as the trainer reports it to callbacks
    (``trainer.callback_metrics``)."""
    return float(trainer.callback_metrics[key])


class EpochLosses(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(epoch_metric(trainer, "train/loss"))


@pytest.mark.slow
def test_lightning_training_equals_the_chapters_plain_loop():
    epochs = 200
    dm = CirclesDataModule()
    dm.setup("fit")
    X_train, y_train = dm.train_x.clone(), dm.train_y.clone()
    X_test, y_test = dm.val_x.clone(), dm.val_y.clone()

    torch.manual_seed(32)
    lit = CirclesClassifier()
    model2 = CircleModelV2()
    model2.load_state_dict(chapter_state(lit))
    initial = chapter_state(lit)

    # Lightning.
    recorder = EpochLosses()
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lit, datamodule=dm)

    # The chapter's loop.
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(params=model2.parameters(), lr=0.1)
    losses = []
    for _ in range(epochs):
        model2.train()
        train_logit = model2(X_train).squeeze()
        train_loss = loss_fn(train_logit, y_train)
        losses.append(train_loss.item())
        optimizer.zero_grad()
        train_loss.backward()
        optimizer.step()
        model2.eval()
        with torch.inference_mode():
            test_logit = model2(X_test).squeeze()
            test_pred = torch.round(torch.sigmoid(test_logit))
            test_acc = accuracy(test_pred, y_test)

    assert len(recorder.losses) == epochs
    assert max(abs(a - b) for a, b in zip(recorder.losses, losses, strict=True)) <= 1e-6
    final = chapter_state(lit)
    for name, value in model2.state_dict().items():
        assert torch.allclose(final[name], value, atol=1e-6, rtol=0), name
        assert not torch.equal(final[name], initial[name]), f"{name} never moved"
    assert losses[-1] < losses[0]
    assert epoch_metric(trainer, "val/acc") * 100 == pytest.approx(test_acc, abs=1e-4)


# ---------------------------------------------------------------------------------------------- divergence


def test_huge_learning_rate_raises_training_diverged():
    torch.manual_seed(0)

    class Reckless(CirclesClassifier):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e6)

    model = Reckless()
    recorder = EpochLosses()
    trainer = quiet_trainer(max_epochs=50, callbacks=[recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDiverged) as info:
            trainer.fit(model, datamodule=CirclesDataModule(n_samples=100))
    message = str(info.value)
    # Every epoch the callback saw still had a finite loss; the one named is the first that did not.
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    match = re.search(r"epoch (\d+)", message)
    assert match, message
    assert int(match.group(1)) == len(recorder.losses) == trainer.current_epoch
    assert trainer.current_epoch < 50
    assert "smaller" in message and "learning rate" in message.lower()


def test_finite_training_does_not_raise():
    torch.manual_seed(0)
    recorder = EpochLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(max_epochs=3, callbacks=[recorder]).fit(
            CirclesClassifier(), datamodule=CirclesDataModule(n_samples=100)
        )
    assert len(recorder.losses) == 3


# ------------------------------------------------------------------------------------------------------ members


def train_members(members: int, seed: int, optimizer: str, batch_size, epochs: int = 12):
    """Fit ``members`` members after ``seed_everything(seed)``; returns each epoch's per-member
    training loss of the weights at the end of that epoch, ``(epochs, K)``, and the model."""
    pl.seed_everything(seed, verbose=False)
    data = CirclesDataModule(n_samples=200, test_samples=10, batch_size=batch_size)
    model = CirclesClassifier(members=members)
    lr = {"SGD": 0.1, "Adam": 0.01}[optimizer]
    model.configure_optimizers = lambda: getattr(torch.optim, optimizer)(model.parameters(), lr=lr)
    history = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            with torch.no_grad():
                logits = pl_module.member_logits(data.train_x)
                history.append(
                    nn.functional.binary_cross_entropy_with_logits(
                        logits, data.train_y.expand_as(logits), reduction="none"
                    ).mean(-1)
                )

    quiet_trainer(max_epochs=epochs, callbacks=[Record()]).fit(model, data)
    return torch.stack(history), model


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("batch_size", [None, 64], ids=["full-batch", "minibatch"])
def test_member_k_is_the_single_run_with_seed_plus_k(optimizer, batch_size):
    losses, stacked = train_members(4, 42, optimizer, batch_size)
    assert stacked.member_table()["seed"] == [42, 43, 44, 45]
    for k in range(4):
        single_losses, single = train_members(1, 42 + k, optimizer, batch_size)
        torch.testing.assert_close(losses[:, k], single_losses[:, 0], atol=1e-6, rtol=0)
        for (weight, bias), (single_weight, single_bias) in zip(
            layers(stacked, k), layers(single), strict=True
        ):
            torch.testing.assert_close(weight, single_weight, atol=1e-6, rtol=0)
            torch.testing.assert_close(bias, single_bias, atol=1e-6, rtol=0)
    assert not torch.allclose(losses[-1, 0], losses[-1, 1])  # the members did differ


def fit_noisy(
    members: int, seed: int, optimizer: str, epochs: int = 300
) -> tuple[CirclesClassifier, float]:
    """``members`` of the chapter's ReLU model on noisier circles (noise 0.1), full batch; with
    its val acc."""
    pl.seed_everything(seed, verbose=False)
    model = CirclesClassifier(members=members)
    lr = {"SGD": 0.1, "Adam": 0.01}[optimizer]
    model.configure_optimizers = lambda: getattr(torch.optim, optimizer)(model.parameters(), lr=lr)
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(model, CirclesDataModule(noise=0.1, test_samples=10))
    return model, epoch_metric(trainer, "val/acc")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_how_far_16_members_are_from_their_single_runs(optimizer):
    """What README promises of members, measured over 16 seeds, noise 0.1, 300 epochs: they start
    from exactly their single runs' weights and see the same batches; their arithmetic agrees to
    rounding, as batched matrix products sum in another order than one network's (which order
    depends on K and the CPU). With SGD that rounding stays at the last bits (the same accuracies,
    weights within 1e-4, most within 1e-6); Adam divides each step by the gradient's running
    size, so where a gradient is near zero, rounding can become a step: most members go their own
    way (no bound on a weight; at most 3% of the validation points), while a few agree to the last
    bits and the mean accuracy holds."""
    stacked, _ = fit_noisy(16, 42, optimizer)
    table = stacked.member_table()
    drift, accuracy, singles = [], [], []
    for k in range(16):
        single, single_acc = fit_noisy(1, 42 + k, optimizer)
        drift.append(
            max(
                float((a - b).detach().abs().max())
                for layer, single_layer in zip(layers(stacked, k), layers(single), strict=True)
                for a, b in zip(layer, single_layer, strict=True)
            )
        )
        accuracy.append(abs(table["val_acc"][k] - single_acc))
        singles.append(single_acc)
    if optimizer == "SGD":
        assert max(accuracy) == 0 and max(drift) < 1e-4, (drift, accuracy)
        assert sum(d < 1e-6 for d in drift) >= 12, drift
    else:
        assert max(accuracy) <= 0.03 + 1e-6, (drift, accuracy)
        assert sum(d < 1e-4 for d in drift) >= 2, drift  # and a few agree to the last bits
        assert abs(sum(table["val_acc"]) - sum(singles)) / 16 <= 0.005, (table["val_acc"], singles)


@settings(max_examples=40)
@given(
    members=st.integers(2, 5),
    inputs=st.integers(1, 4),
    hidden=st.lists(st.integers(1, 12), max_size=3),
    outputs=st.integers(1, 3),
    activation=st.sampled_from(ACTIVATIONS),
    points=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_every_layer_of_a_stack_is_each_members_own_network_to_rounding(
    members, inputs, hidden, outputs, activation, points, seed
):
    """K stacked networks compute in another layout than one (the points on the last axis, the
    first layer's weights of all members as one matrix): every layer's output of member k, for
    any shape, activation and number of points (one included), is what network k computes."""
    torch.manual_seed(seed)
    hidden = hidden if hidden or activation == "none" else [3]
    nets = [build_mlp(inputs, hidden, activation, outputs) for _ in range(members)]
    x = torch.randn(points, inputs)
    with torch.no_grad():
        stacked = StackedMLP(nets).layers(x)
        assert [h.shape for h in stacked] == [(members, points, h) for h in [*hidden, outputs]]
        for k, net in enumerate(nets):
            own, h = [], x
            for module in net:  # each hidden layer's output after its activation, then the logits
                h = module(h)
                if activation == "none" or not isinstance(module, nn.Linear):
                    own.append(h)
            own += [] if activation == "none" else [h]
            for a, b in zip((h[k] for h in stacked), own, strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_single_network_is_the_chapters_network_built_as_member_0():
    """One member is built as the chapter's ``nn.Sequential`` is after the same seed, and
    computes its logits to the bit (the stack runs one member through ``nn.Linear``'s kernel);
    the random generator is left as it was."""
    pl.seed_everything(7, verbose=False)
    one = CirclesClassifier()
    after = torch.rand(3)
    pl.seed_everything(7, verbose=False)
    sequential = build_mlp(2, [10, 10], "relu")
    pl.seed_everything(7, verbose=False)
    assert torch.equal(torch.rand(3), after)
    x = torch.randn(50, 2)
    with torch.no_grad():
        assert torch.equal(one.member_logits(x), sequential(x).T)
    assert one.member_table() is None and one.member_seeds.tolist() == [7]


def test_members_predict_their_mean_probability_and_keep_their_own_hidden_units():
    pl.seed_everything(3, verbose=False)
    model = CirclesClassifier(members=3)
    x = torch.randn(20, 2)
    logits = model.member_logits(x)
    assert logits.shape == (3, 20)
    torch.testing.assert_close(torch.sigmoid(model(x)), torch.sigmoid(logits).mean(0))
    assert [h.shape for h in model.layer_outputs(x)] == [(20, 2), (20, 10), (20, 10), (20, 1)]
    points, probs = model.predict_step((x,), 0)
    assert torch.equal(points, x)
    torch.testing.assert_close(probs, torch.sigmoid(logits))


def test_members_of_a_process_that_was_never_seeded_get_valid_seeds():
    torch.seed()  # a random 64-bit seed, as in a process that never called seed_everything
    model = CirclesClassifier(members=3)
    seeds = model.member_table()["seed"]
    assert seeds == list(range(seeds[0], seeds[0] + 3)) and 0 <= seeds[0] < 2**32


def test_members_take_features_regularization_and_a_single_linear_layer():
    pl.seed_everything(5, verbose=False)
    model = CirclesClassifier(
        members=3, hidden_sizes=[], activation="none", features=["x1_sq", "x2_sq"], l1=0.01, l2=0.1
    )
    singles = []
    for k in range(3):
        pl.seed_everything(5 + k, verbose=False)
        singles.append(
            CirclesClassifier(
                hidden_sizes=[], activation="none", features=["x1_sq", "x2_sq"], l1=0.01, l2=0.1
            )
        )
    x = torch.randn(30, 2)
    torch.testing.assert_close(model.member_logits(x), torch.stack([s(x) for s in singles]))

    def penalty(m):
        return m.regularization(m.weight_parameters())

    # each member's own term
    torch.testing.assert_close(penalty(model), sum(penalty(s) for s in singles))
    data = CirclesDataModule(n_samples=100, test_samples=10, features=["x1_sq", "x2_sq"])
    quiet_trainer(max_epochs=2).fit(model, data)
    assert len(model.member_table()["val_acc"]) == 3


# ------------------------------------------------------------------------------------------- more than two classes


@pytest.mark.parametrize("members", [1, 3])
def test_more_than_two_classes_have_an_output_per_class_and_cross_entropy(members):
    pl.seed_everything(0, verbose=False)
    model = CirclesClassifier(num_classes=4, members=members)
    x, y = torch.randn(12, 2), torch.arange(12) % 4
    logits = model.member_logits(x)
    assert logits.shape == (members, 12, 4) and model(x).shape == (12, 4)
    expected = torch.stack([nn.functional.cross_entropy(logits[k], y) for k in range(members)])
    # what training minimises
    torch.testing.assert_close(model.training_step((x, y.float()), 0), expected.sum())
    right = (logits.argmax(-1) == y).float().mean()
    assert float(model.train_metrics.acc.compute()) == pytest.approx(float(right))
    _, probs = model.predict_step((x,), 0)
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    # two classes: one logit, as before
    assert CirclesClassifier(num_classes=2).member_logits(x).shape == (
        1,
        12,
    )


@pytest.mark.parametrize("num_classes", [2, 3])
def test_evaluation_and_the_grid_in_chunks_give_what_one_pass_gives(monkeypatch, num_classes):
    """65,536 members over 10,000 test points (or the picture's grid) once needed 26 GB at once:
    outside training the points go through in chunks, with the same results."""
    import circles.model.networks as networks
    from circles.pictures.grids import grid_layers, grid_predictions

    model = CirclesClassifier(hidden_sizes=[5, 4], members=3, num_classes=num_classes).eval()
    x = torch.randn(257, 2)
    xs, ys = np.linspace(-1, 1, 13), np.linspace(-1, 1, 11)
    with torch.no_grad():
        whole = model.member_logits(x)
        whole_grid, whole_layers = grid_predictions(model, xs, ys), grid_layers(model, xs, ys)
        monkeypatch.setattr(networks, "CHUNK_VALUES", 3 * 5 * 7)  # 7 points at a time
        assert model.points_per_chunk() == 7
        assert torch.allclose(model.member_logits(x), whole, atol=1e-6)
        for a, b in zip(grid_predictions(model, xs, ys), whole_grid, strict=True):
            assert np.allclose(a, b, atol=1e-6)
        for a, b in zip(grid_layers(model, xs, ys), whole_layers, strict=True):
            assert np.allclose(a, b, atol=1e-6)


@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**16),
    hidden=st.lists(st.integers(2, 12), min_size=2, max_size=3),
    lr=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_a_dead_first_layer_unit_stays_dead_under_full_batch_sgd(seed, hidden, lr):
    """README: a first-layer ReLU unit that gives 0 on every training point gets no gradient, so
    full-batch SGD never moves it again (a later layer's unit can come back: its inputs move)."""
    data = CirclesDataModule()
    data.setup("fit")
    x, y = data.train_x, data.train_y
    pl.seed_everything(seed, verbose=False)
    model = CirclesClassifier(hidden_sizes=hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    dead_before = torch.zeros(hidden[0], dtype=torch.bool)
    for _ in range(150):
        with torch.no_grad():
            first_layer = model.layer_outputs(x)[1]  # (N, units)
        dead = first_layer.amax(dim=0) <= 0
        assert not bool((dead_before & ~dead).any()), "a dead first-layer unit fired again"
        dead_before = dead
        optimizer.zero_grad()
        member_losses(model.member_logits(x), y).sum().backward()
        optimizer.step()


def test_a_build_of_many_members_says_so_before_it_starts(capfd):
    """A build of thousands of members and its first epoch take a while: a note comes first, so
    the command is not silent until epoch 0's line; fewer members build without one."""
    from circles.model.networks import MANY_MEMBERS, build_members

    build_members(MANY_MEMBERS - 1, 2, [1], "relu")
    assert "members" not in capfd.readouterr().err
    build_members(MANY_MEMBERS, 2, [1], "relu")
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(
        f"circles: note: building {MANY_MEMBERS:,} members, one network per seed"
    )
