"""The networks: the chapter's MLP built layer by layer, K of them stacked into one module (a
single network is a stack of one), and what a network without activations collapses to (one
affine map)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from typing_extensions import override

from circles.errors import check, note
from circles.features import FeatureMap

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


CHUNK_VALUES = 1 << 24  # values of one layer for every member over one chunk of points (64 MiB)
MAX_LAYERS = 1_000
MANY_MEMBERS = 4096  # a build of a few seconds, a first epoch of several
MAX_PARAMETERS = 2**28  # 268M weights: 1 GiB as float32, several with gradients and Adam's state


def build_mlp(
    in_features: int, hidden_sizes: Sequence[int], activation: str, outputs: int = 1
) -> nn.Sequential:
    """Linear layers ``in_features -> *hidden_sizes -> outputs``, created in order with PyTorch's
    default initialisation, with ``activation`` after every hidden layer (none for ``"none"``):
    the chapter's model."""
    check(
        len(hidden_sizes) > 0 or activation == "none",
        "hidden_sizes",
        "non-empty when an activation is used",
        list(hidden_sizes),
        f"Without hidden layers activation {activation!r} is never applied: give hidden layers "
        "(e.g. [10, 10]) or set activation: none for a single linear layer.",
    )
    sizes = [in_features, *hidden_sizes, outputs]
    layers: list[nn.Module] = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    if activation != "none":
        for i in range(len(layers) - 1, 0, -1):
            layers.insert(i, ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class StackedMLP(nn.Module):
    """K networks of one shape as one module: layer l's weights stacked to ``(K, out, in)`` and its
    biases to ``(K, out)``. Built from K ordinary networks (:func:`build_mlp`); member k computes
    exactly what its network computes, and K members cost one forward and one backward pass.

    ``forward`` maps points ``(N, F)`` to ``(K, N, outputs)``; ``layers`` gives every layer's
    output ``(K, N, units)``."""

    def __init__(self, nets: Sequence[nn.Sequential]) -> None:
        super().__init__()
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        depth = range(len(layers[0]))
        self.weights = nn.ParameterList(
            torch.stack([net[i].weight.detach() for net in layers]) for i in depth
        )
        self.biases = nn.ParameterList(
            torch.stack([net[i].bias.detach() for net in layers]) for i in depth
        )
        self.activation = next((m for m in nets[0] if not isinstance(m, nn.Linear)), nn.Identity())

    @property
    def members(self) -> int:
        return len(self.weights[0])

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output ``(K, N, out)`` for points ``x`` ``(N, F)``: the hidden layers'
        after the activation, then the logits. The points are taken in the weights' dtype (a grid
        drawn in float32 goes through a network trained at ``precision 64`` too).

        A stack of one runs through ``nn.Linear``'s own kernel, so a single network computes and
        trains exactly as the chapter's does. K > 1 members keep the points on the last axis,
        ``(K, out, N)``: the first layer, whose input every member shares, is one matrix product
        of all members' weights ``(K * out, in)`` with the points, and each later layer one
        batched product ``(K, out, in) @ (K, in, N)``. With the points last, each product runs
        over long rows (a member's layer is 10 x 10, its points thousands): on the CPU a forward
        pass takes about a quarter of the time of ``(K, N, in) @ (K, in, out)``, forward and
        backward half (docs/benchmarks.md). Its sums run in another order than a single
        network's: members agree with their single runs to rounding, not to the bit."""
        single = self.members == 1
        h = x.to(self.weights[0].dtype)
        outputs = []
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if single:
                h = functional.linear(h, weight[0], bias[0])
            elif i == 0:
                h = torch.addmm(
                    bias.reshape(-1, 1), weight.reshape(-1, weight.shape[-1]), h.T
                ).view(self.members, -1, len(x))
            else:
                h = torch.baddbmm(bias.unsqueeze(2), weight, h)
            if i < len(self.weights) - 1:
                h = self.activation(h)
            outputs.append(h)
        return [h.unsqueeze(0) if single else h.transpose(1, 2) for h in outputs]

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(K, N, outputs)`` for points ``(N, F)``."""
        return self.layers(x)[-1]


def output_size(num_classes: int) -> int:
    """The network's outputs for ``num_classes`` classes: one logit for two, one per class for
    more."""
    return 1 if num_classes == 2 else num_classes


def build_members(
    members: int, in_features: int, hidden_sizes: Sequence[int], activation: str, outputs: int = 1
) -> StackedMLP:
    """A :class:`StackedMLP` whose member k is the network :func:`build_mlp` makes right after
    ``torch.manual_seed(S + k)``, where S is the seed the random generator was last given
    (``seed_everything S`` in a run): member k of a run starts as the run of one member with seed
    S + k. The random generator is left as it was."""
    check_network_size(in_features, hidden_sizes, outputs, members)
    if members >= MANY_MEMBERS:  # otherwise nothing is printed for minutes
        note(
            f"building {members:,} members, one network per seed; with this many, the build and "
            "each epoch take a while (the first progress line comes after epoch 0)."
        )
    nets = []
    for seed in member_seeds(base_seed(), members):
        with torch.random.fork_rng(devices=[]):
            # the networks are built on the CPU: its generator only
            torch.default_generator.manual_seed(seed)
            nets.append(build_mlp(in_features, hidden_sizes, activation, outputs))
    return StackedMLP(nets)


def base_seed() -> int:
    """The seed the random generator was last given (``seed_everything`` takes 0..2**32-1); a
    process that was never seeded has a random 64-bit one, taken modulo 2**32 so that S + k stays
    a valid seed."""
    return torch.initial_seed() % 2**32


def member_seeds(base: int, members: int) -> list[int]:
    """The seed each member is built with: ``base``, ``base + 1``, ..."""
    return [base + k for k in range(members)]


def check_network_size(
    in_features: int, hidden_sizes: Sequence[int], outputs: int, members: int
) -> None:
    """Refuse, before anything is allocated, a network too large to train here: more than
    ``MAX_LAYERS`` hidden layers, or more than ``MAX_PARAMETERS`` weights over all members (said
    with what they would take)."""
    check(
        len(hidden_sizes) <= MAX_LAYERS,
        "hidden_sizes",
        f"at most {MAX_LAYERS} hidden layers",
        f"{len(hidden_sizes)} layers",
    )
    sizes = [in_features, *hidden_sizes, outputs]
    per_member = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    total = per_member * members
    field = "members" if members > 1 and per_member <= MAX_PARAMETERS else "hidden_sizes"
    check(
        total <= MAX_PARAMETERS,
        field,
        f"a network of at most {MAX_PARAMETERS:,} weights over all members",
        members if field == "members" else list(hidden_sizes)[:8],
        f"It would hold {total:,} ({total * 4 / 2**30:,.1f} GiB as float32, before gradients and "
        "optimizer "
        "state).",
    )


def affine_map(net: StackedMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """The one affine map ``x -> W x + b`` that a network without activations is, per member:
    ``W`` of shape ``(K, outputs, inputs)``, ``b`` of ``(K, outputs)``. Layer after layer, ``W2
    (W1 x + b1) + b2`` is ``(W2 W1) x + (W2 b1 + b2)``: however many layers, the logits are an
    affine function of the inputs, and the boundary where two of them are equal a straight line
    (a hyperplane of the inputs)."""
    with torch.no_grad():
        w = net.weights[0].double()
        b = net.biases[0].double()
        for weight, bias in zip(net.weights[1:], net.biases[1:], strict=True):
            w = weight.double() @ w
            b = (weight.double() @ b.unsqueeze(-1)).squeeze(-1) + bias.double()
    return w, b


class MemberViews:
    """What K members compute, seen from outside: ``forward`` (their ensemble), ``predict_step``
    (each member's probabilities) and the views the pictures use (a mixin of
    :class:`circles.model.CirclesClassifier`, whose ``net``, ``features``, ``num_classes`` and
    ``activation`` these read): logits and probabilities per member, each layer's outputs and
    weights, the units that never fire, and the affine map a network without activations is. A
    network of your own (not a :class:`StackedMLP`) is one member whose layers are not known: its
    views are its inputs and logits, its weights the parameters of two or more dimensions."""

    net: nn.Module
    features: FeatureMap
    num_classes: int
    activation: str
    members: int
    member_seeds: torch.Tensor
    member_val_acc: torch.Tensor
    member_val_acc_best: torch.Tensor
    member_test_acc: torch.Tensor | None

    dtype: Any  # a LightningModule's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (N,) or (N, C) of the members' mean probability for points (N, 2): their
        ensemble (of one member, exactly its own logits)."""
        return ensemble_logits(self.member_logits(x))

    def predict_step(
        self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points as given (a batch of points, or a sequence whose first item they are; a
        point file's are float64, written back as read) and each member's probabilities for
        them (see :meth:`member_probabilities`)."""
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        return x, self.member_probabilities(x.to(self.dtype))

    @property
    def stack(self) -> StackedMLP | None:
        """The MLP, if the network is circles' own."""
        return self.net if isinstance(self.net, StackedMLP) else None

    @property
    def feature_names(self) -> list[str]:
        """What the network sees of a point: ``["x1", "x2"]``, or crosses such as ``x1_sq``."""
        return self.features.features

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's logits ``(K, N, outputs)``, whatever shape its own are."""
        if self.stack is not None:
            return self.stack(inputs)
        return self.net(inputs).reshape(1, len(inputs), -1)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits for points (N, 2) in the (x1, x2) plane: (K, N), or (K, N, C) for
        C > 2."""
        inputs = self.features(x)
        chunks = (inputs,) if torch.is_grad_enabled() else inputs.split(self.points_per_chunk())
        logits = (
            torch.cat([self._logits(c) for c in chunks], 1)
            if len(chunks) > 1
            else self._logits(inputs)
        )
        return logits.squeeze(-1) if self.num_classes == 2 else logits

    def points_per_chunk(self) -> int:
        """Points whose every member's widest layer fits in ``CHUNK_VALUES``: evaluation goes
        through its points in chunks of this many (65,536 members over 10,000 test points at
        once would need 26 GB); training takes its batch whole."""
        if self.stack is None:
            return CHUNK_VALUES // 1024
        widest = max(w.shape[1] for w in self.stack.weights)
        return max(1, CHUNK_VALUES // (self.stack.members * widest))

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities: of class 1, (K, N); for C > 2 classes, of each class, (K,
        N, C)."""
        logits = self.member_logits(x)
        return torch.sigmoid(logits) if self.num_classes == 2 else torch.softmax(logits, dim=-1)

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What each layer gives for points (N, 2), the first member's: its inputs (the
        features), every hidden layer's output and the logits, each ``(N, units)``."""
        inputs = self.features(x)
        if self.stack is None:
            return [inputs, self._logits(inputs)[0]]
        return [inputs, *(h[0] for h in self.stack.layers(inputs))]

    def member_table(self) -> dict[str, list[Any]] | None:
        """With several members, a column per fact about them (seed, last and best validation
        accuracy, after test the test accuracy), a row per member; None for a single network."""
        if self.members == 1:
            return None
        return {
            "member": list(range(self.members)),
            "seed": self.member_seeds.tolist(),
            "val_acc": self.member_val_acc.tolist(),
            "val_acc_best": self.member_val_acc_best.tolist(),
            **(
                {"test_acc": self.member_test_acc.tolist()}
                if self.member_test_acc is not None
                else {}
            ),
        }

    def weight_parameters(self) -> list[torch.Tensor]:
        """The weight matrices as the optimizer holds them, ``(K, out, in)`` each, with their
        gradients after a backward pass."""
        if self.stack is None:
            return [p for p in self.net.parameters() if p.dim() > 1]
        return list(self.stack.weights)

    def layer_weights(self) -> list[torch.Tensor]:
        """The first member's weight matrices, ``(out, in)`` each, input side first (none for a
        network of your own)."""
        return [w[0] for w in self.stack.weights] if self.stack is not None else []

    def dead_units(self, x: torch.Tensor) -> list[float]:
        """Per hidden layer, how many of its ReLU units give 0 for every one of the points ``(N,
        2)`` (they never fire, so they no longer learn), on average over the members; empty for
        another activation."""
        if self.activation != "relu" or self.stack is None:
            return []
        hidden = self.stack.layers(self.features(x))[:-1]
        # one wait
        return torch.stack([(h.amax(dim=1) <= 0).sum(-1).float().mean() for h in hidden]).tolist()

    def collapsed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Without an activation, the one affine map the layers are
        (:func:`circles.model.networks.affine_map`): weights ``(K, outputs, features)`` and
        biases ``(K, outputs)`` over the features; else None."""
        if self.activation != "none" or self.stack is None:
            return None
        return affine_map(self.stack)


def ensemble_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits of K members' mean probability, from theirs ``(K, N)`` or ``(K, N, C)``: the
    members' mean logit moved by what averaging the probabilities (in the log, so none rounds to
    0 or 1) adds to it; of one member, exactly its logits."""
    mean = logits.mean(0)
    if logits.dim() == 2:
        log_p = nn.functional.logsigmoid
        return mean + (
            (torch.logsumexp(log_p(logits), 0) - log_p(mean))
            - (torch.logsumexp(log_p(-logits), 0) - log_p(-mean))
        )
    log_mean_p = torch.logsumexp(torch.log_softmax(logits, -1), 0) - math.log(len(logits))
    return mean + (log_mean_p - torch.log_softmax(mean, -1))
