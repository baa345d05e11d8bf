"""TensorFlow Playground's regularization of the weights: an L1 and an L2 penalty added to the
loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class WeightPenalty:
    """``l1 * sum|w| + l2 * sum w^2`` over the weights (biases excluded), added to the loss; with
    L1, a weight that a step pushes across zero is set to exactly zero (as TensorFlow Playground
    does)."""

    def __init__(self, l1: float, l2: float) -> None:
        self.l1 = l1
        self.l2 = l2
        self._signs: list[torch.Tensor] = []

    def __bool__(self) -> bool:
        return bool(self.l1 or self.l2)

    def __call__(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), device=weights[0].device)
        if self.l1:
            total = total + self.l1 * sum(w.abs().sum() for w in weights)
        if self.l2:
            total = total + self.l2 * sum(w.pow(2).sum() for w in weights)
        return total

    def attach(
        self, optimizer: torch.optim.Optimizer, weights: Callable[[], Sequence[torch.Tensor]]
    ) -> None:
        """With L1, set to zero after each of ``optimizer``'s steps a weight it pushed across
        zero (torch's step hooks)."""
        if self.l1:
            optimizer.register_step_pre_hook(lambda *_: self.before_step(weights()))
            optimizer.register_step_post_hook(lambda *_: self.after_step(weights()))

    def before_step(self, weights: Sequence[torch.Tensor]) -> None:
        self._signs = [w.detach().sign() for w in weights]

    @torch.no_grad()
    def after_step(self, weights: Sequence[torch.Tensor]) -> None:
        for w, sign in zip(weights, self._signs, strict=True):
            w.masked_fill_(w.sign() * sign < 0, 0.0)
