"""The networks: the chapter's MLP built layer by layer, K of them stacked into one module, and what a network
without activations collapses to (one affine map)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from circles.errors import check
from circles.features import FeatureMap

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


MAX_MEMBERS = 65_536
MAX_LAYERS = 1_000
MAX_PARAMETERS = 2**28  # 268M weights: 1 GiB as float32, several with gradients and Adam's state


def build_mlp(in_features: int, hidden_sizes: Sequence[int], activation: str, outputs: int = 1) -> nn.Sequential:
    """Linear layers ``in_features -> *hidden_sizes -> outputs``, created in order with PyTorch's default
    initialisation, with ``activation`` after every hidden layer (none for ``"none"``)."""
    check(activation in ("none", *ACTIVATIONS), "activation", f"one of {['none', *ACTIVATIONS]}", activation)
    check(all(isinstance(h, int) and h >= 1 for h in hidden_sizes), "hidden_sizes",
          "a list of positive integers", list(hidden_sizes))
    check(len(hidden_sizes) > 0 or activation == "none", "hidden_sizes", "non-empty when an activation is used",
          list(hidden_sizes), f"Without hidden layers activation {activation!r} is never applied: give hidden "
          "layers (e.g. [10, 10]) or set activation: none for a single linear layer.")
    layers: list[nn.Module] = []
    sizes = [in_features, *hidden_sizes]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers.append(nn.Linear(fan_in, fan_out))
        if activation != "none":
            layers.append(ACTIVATIONS[activation]())
    layers.append(nn.Linear(sizes[-1], outputs))
    return nn.Sequential(*layers)


class StackedMLP(nn.Module):
    """K networks of one shape as one module: layer l's weights stacked to ``(K, out, in)`` and its biases to
    ``(K, out)``, applied with batched matrix products, so K members cost one forward and one backward pass. Built from
    K ordinary networks (:func:`build_mlp`), each member computes exactly what its network computes.

    ``forward`` maps points ``(N, F)`` to ``(K, N, 1)``; ``hidden`` gives each hidden layer's output ``(K, N, units)``.
    """

    def __init__(self, nets: Sequence[nn.Sequential]) -> None:
        super().__init__()
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(torch.stack([net[i].weight.detach() for net in layers])
                                        for i in range(len(layers[0])))
        self.biases = nn.ParameterList(torch.stack([net[i].bias.detach() for net in layers])
                                       for i in range(len(layers[0])))
        self.activation = next((m for m in nets[0] if not isinstance(m, nn.Linear)), nn.Identity())

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, outputs = x.expand(len(self.weights[0]), *x.shape), []
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = self.activation(torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)))
            outputs.append(h)
        return outputs

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)[-1] if len(self.weights) > 1 else x.expand(len(self.weights[0]), *x.shape)
        return torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2))


def output_size(num_classes: int) -> int:
    """The network's outputs for ``num_classes`` classes: one logit for two, one per class for more."""
    check(isinstance(num_classes, int) and num_classes >= 2, "num_classes", "an integer >= 2", num_classes)
    return 1 if num_classes == 2 else num_classes


def build_members(members: int, in_features: int, hidden_sizes: Sequence[int], activation: str,
                  outputs: int = 1) -> nn.Sequential | StackedMLP:
    """One network (:func:`build_mlp`) for ``members=1``; else a :class:`StackedMLP` whose member k is the network
    :func:`build_mlp` makes right after ``torch.manual_seed(S + k)``, where S is the seed the random generator was
    last given (``seed_everything S`` in a run): member k of a run starts as the single run with seed S + k."""
    check_network_size(in_features, hidden_sizes, outputs, members)
    if members == 1:
        return build_mlp(in_features, hidden_sizes, activation, outputs)
    base, nets = base_seed(), []
    for k in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(base + k)  # the networks are built on the CPU: its generator only
            nets.append(build_mlp(in_features, hidden_sizes, activation, outputs))
    return StackedMLP(nets)


def base_seed() -> int:
    """The seed the random generator was last given (``seed_everything`` takes 0..2**32-1); a process that was never
    seeded has a random 64-bit one, taken modulo 2**32 so that S + k stays a valid seed."""
    seed = torch.initial_seed()
    return seed if seed < 2**32 else seed % 2**32


def member_seeds(base: int, members: int) -> list[int]:
    """The seed each member is built with: ``base``, ``base + 1``, ..."""
    return [base + k for k in range(members)]


def check_network_size(in_features: int, hidden_sizes: Sequence[int], outputs: int, members: int) -> None:
    """Refuse, before anything is allocated, a network too large to train here: more than ``MAX_LAYERS`` hidden
    layers, or more than ``MAX_PARAMETERS`` weights over all members (said with what they would take)."""
    check(isinstance(members, int) and not isinstance(members, bool) and members >= 1, "members",
          "a positive integer", members)
    check(members <= MAX_MEMBERS, "members", f"at most {MAX_MEMBERS:,}", members,
          "Each member is built as a network of its own first; split a larger study into runs.")
    check(len(hidden_sizes) <= MAX_LAYERS, "hidden_sizes", f"at most {MAX_LAYERS} hidden layers",
          f"{len(hidden_sizes)} layers")
    sizes = [in_features, *hidden_sizes, outputs]
    if not all(isinstance(h, int) for h in sizes):
        return  # build_mlp names the bad value
    per_member = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    total = per_member * members
    field = "members" if members > 1 and per_member <= MAX_PARAMETERS else "hidden_sizes"
    check(total <= MAX_PARAMETERS, field, f"a network of at most {MAX_PARAMETERS:,} weights over all members",
          members if field == "members" else list(hidden_sizes)[:8],
          f"It would hold {total:,} ({total * 4 / 2**30:,.1f} GiB as float32, before gradients and optimizer state).")


def hidden_outputs(net: nn.Sequential | StackedMLP, h: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's output (after its activation) of a :func:`build_mlp` network, or of a
    :class:`StackedMLP`'s first member, for its inputs ``h``: a list of ``(N, units)`` tensors."""
    if isinstance(net, StackedMLP):
        return [out[0] for out in net.hidden(h)]
    outputs, layers = [], list(net)
    for i, layer in enumerate(layers[:-1]):
        h = layer(h)
        if not isinstance(layers[i + 1], tuple(ACTIVATIONS.values())):
            outputs.append(h)
    return outputs


def linear_weights(net: nn.Sequential | StackedMLP) -> list[torch.Tensor]:
    """The weight matrices (no biases) of a :func:`build_mlp` network or a :class:`StackedMLP` (stacked)."""
    return list(net.weights) if isinstance(net, StackedMLP) else [m.weight for m in net if isinstance(m, nn.Linear)]


def linear_biases(net: nn.Sequential | StackedMLP) -> list[torch.Tensor]:
    """The bias vectors of a :func:`build_mlp` network or a :class:`StackedMLP` (stacked)."""
    return list(net.biases) if isinstance(net, StackedMLP) else [m.bias for m in net if isinstance(m, nn.Linear)]


def affine_map(net: nn.Sequential | StackedMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """The one affine map ``x -> W x + b`` that a network without activations is, per member: ``W`` of shape
    ``(K, outputs, inputs)``, ``b`` of ``(K, outputs)``. Layer after layer, ``W2 (W1 x + b1) + b2`` is
    ``(W2 W1) x + (W2 b1 + b2)``: however many layers, the logits are an affine function of the inputs, and the
    boundary where two of them are equal a straight line (a hyperplane of the inputs)."""
    weights, biases = linear_weights(net), linear_biases(net)
    if not isinstance(net, StackedMLP):
        weights, biases = [w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases]
    with torch.no_grad():
        w, b = weights[0].double(), biases[0].double()
        for weight, bias in zip(weights[1:], biases[1:], strict=True):
            w = weight.double() @ w
            b = (weight.double() @ b.unsqueeze(-1)).squeeze(-1) + bias.double()
    return w, b


class MemberViews:
    """What K stacked members compute, seen from outside (a mixin of :class:`circles.model.CirclesClassifier`, whose
    ``net``, ``features``, ``members``, ``num_classes`` and ``activation`` these read): logits and probabilities per
    member, each layer's outputs and weights, and the affine map a network without activations collapses to."""

    net: nn.Sequential | StackedMLP
    features: FeatureMap
    members: int
    num_classes: int
    activation: str

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits for points (N, 2) in the (x1, x2) plane: (K, N), or (K, N, C) for C > 2 classes."""
        logits = self.net(self.features(x))
        logits = logits if self.members > 1 else logits.unsqueeze(0)
        return logits.squeeze(-1) if self.num_classes == 2 else logits

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities: of class 1, (K, N); for C > 2 classes, of each class, (K, N, C)."""
        logits = self.member_logits(x)
        return torch.sigmoid(logits) if self.num_classes == 2 else torch.softmax(logits, dim=-1)

    @property
    def feature_names(self) -> list[str]:
        """What the network sees of a point: ``["x1", "x2"]``, or crosses such as ``x1_sq``."""
        return self.features.features

    def collapsed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Without an activation, the one affine map the layers are (:func:`circles.networks.affine_map`): weights
        ``(K, outputs, features)`` and biases ``(K, outputs)`` over ``self.features.features``; else None."""
        return affine_map(self.net) if self.activation == "none" else None

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What each layer gives for points (N, 2), the first member's: its inputs (the features), every hidden
        layer's output and the logits, each ``(N, units)``."""
        inputs = self.features(x)
        logits = self.member_logits(x)[0]
        return [inputs, *hidden_outputs(self.net, inputs), logits if logits.dim() == 2 else logits.unsqueeze(-1)]

    def layer_weights(self) -> list[torch.Tensor]:
        """The first member's weight matrices, ``(out, in)`` each, input side first."""
        return [w[0] if self.members > 1 else w for w in self.weight_parameters()]

    def weight_parameters(self) -> list[torch.Tensor]:
        """The weight matrices as the optimizer holds them (stacked ``(K, out, in)`` with several members), with their
        gradients after a backward pass."""
        return linear_weights(self.net)

    def dead_units(self, x: torch.Tensor) -> list[float]:
        """Per hidden layer, how many of its ReLU units give 0 for every one of the points ``(N, 2)`` (they never
        fire, so they no longer learn), on average over the members; empty for a network of another activation."""
        if self.activation != "relu":
            return []
        h = self.features(x)
        net = self.net
        outputs = net.hidden(h) if isinstance(net, StackedMLP) else [o[None] for o in hidden_outputs(net, h)]
        return torch.stack([(o.amax(dim=1) <= 0).sum(-1).float().mean() for o in outputs]).tolist()  # one wait

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's output for points (N, 2): (N, units) tensors (with several members, the first's)."""
        return hidden_outputs(self.net, self.features(x))

