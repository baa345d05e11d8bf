"""A model over a grid of the plane: its probabilities, its members' votes, each layer's outputs,
each member's boundary. The model is left exactly as found."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from circles.contracts import Classifier

ArrayLike = np.ndarray | torch.Tensor


def _numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def grid_axes(
    points: ArrayLike, resolution: int = 101, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The chapter's grid: ``resolution`` values per axis spanning the points' extent +-
    ``margin``."""
    p = _numpy(points)
    (x0, y0), (x1, y1) = p[:, :2].min(axis=0) - margin, p[:, :2].max(axis=0) + margin
    return np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)


@contextlib.contextmanager
def model_inference(model: object) -> Iterator[torch.device]:
    """Evaluation mode and inference mode for the duration; an ``nn.Module`` is then left exactly
    as found: same device, same train/eval flags, gradients untouched. Yields the device to put
    inputs on."""
    device = torch.device("cpu")
    modes: list[tuple[torch.nn.Module, bool]] = []
    if isinstance(model, torch.nn.Module):
        device = next(model.parameters(), torch.empty(0)).device
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
    try:
        with torch.inference_mode():
            yield device
    finally:
        for module, training in modes:
            module.training = training


def _grid_points(xs: np.ndarray, ys: np.ndarray, device: torch.device) -> torch.Tensor:
    xx, yy = np.meshgrid(xs, ys)
    return torch.from_numpy(np.column_stack([xx.ravel(), yy.ravel()])).float().to(device)


def grid_predictions(
    model: Classifier | Callable[[torch.Tensor], torch.Tensor], xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Over the grid, each ``(len(ys), len(xs))`` with row i at ``ys[i]``: the probability of
    class 1 and the share of members that vote for class 1 (probability > 0.5); for a model of C
    > 2 classes, each ``(len(ys), len(xs), C)``: every class's probability and share of the
    votes. A :class:`circles.contracts.Classifier` (K members) gives their mean probability and
    the share of the K votes; any other callable on ``(N, 2)`` points gives its probability (of
    its logit) and its 0/1 vote. Batched forward passes over chunks of the grid
    (:func:`_chunks`) on the model's own device under inference mode; the model is left as
    found."""
    with model_inference(model) as device:
        shares = [_shares(model, c) for c in _chunks(model, _grid_points(xs, ys, device))]
        probs = torch.cat([p for p, _ in shares]).cpu().numpy()
        votes = torch.cat([v for _, v in shares]).cpu().numpy()
    return probs.reshape(len(ys), len(xs), *probs.shape[1:]), votes.reshape(
        len(ys), len(xs), *votes.shape[1:]
    )


def _chunks(model: object, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The grid's points in chunks the model takes whole (:meth:`points_per_chunk`): its
    members' outputs over the whole grid are never held at once."""
    from circles.model.networks import CHUNK_VALUES

    return points.split(model.points_per_chunk() if isinstance(model, Classifier) else CHUNK_VALUES)


def _shares(
    model: Classifier | Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' mean probability at ``points`` and the share of their votes (see
    :func:`grid_predictions`)."""
    member_probs = (
        model.member_probabilities(points).float()
        if isinstance(model, Classifier)
        else torch.sigmoid(model(points).reshape(1, -1).float())
    )
    if member_probs.dim() == 2:
        return member_probs.mean(0), (member_probs > 0.5).float().mean(0)
    # more than two classes: per class, the share of members whose most probable class it is
    votes = torch.nn.functional.one_hot(member_probs.argmax(-1), member_probs.shape[-1])
    return member_probs.mean(0), votes.float().mean(0)


def grid_layers(model: Classifier, xs: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
    """Every layer's output over the grid, the inputs first and the logits last (the model's
    ``layer_outputs``), each ``(units, len(ys), len(xs))``; the model is left as found."""
    with model_inference(model) as device:
        chunks = [model.layer_outputs(c) for c in _chunks(model, _grid_points(xs, ys, device))]
        layers = [torch.cat(outputs) for outputs in zip(*chunks, strict=True)]
        return [a.float().cpu().numpy().T.reshape(-1, len(ys), len(xs)) for a in layers]


def grid_boundaries(
    model: Classifier, xs: np.ndarray, ys: np.ndarray, members: int = 16
) -> np.ndarray:
    """Each member's probability of class 1 less one half over the grid, ``(K, len(ys),
    len(xs))`` for the first ``members`` of them: zero on each member's own boundary. (Two
    classes.)"""
    with model_inference(model) as device:
        chunks = _chunks(model, _grid_points(xs, ys, device))
        probs = (
            torch.cat([model.member_probabilities(c)[:members] for c in chunks], dim=1)
            .float()
            .cpu()
            .numpy()
        )
    return probs.reshape(len(probs), len(ys), len(xs)) - 0.5
