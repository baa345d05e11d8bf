"""Batches for Lightning from tensors already in memory (on the training device), one shard per
DDP rank."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from circles.errors import ConfigError

Points = tuple[torch.Tensor, torch.Tensor]  # points (N, 2) and their labels (N,)


def derived_seed(seed: int, stream: int) -> int:
    """An independent seed for another draw from the same process (``stream`` 1 is the test set)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


class TensorBatches:
    """Batches sliced from tensors that already sit on the training device, one shard per DDP rank.

    No DataLoader and no per-sample ``__getitem__``: with ``batch_size=None`` the whole shard is
    one batch (for one process: the tensors themselves), otherwise each epoch draws a permutation
    seeded by ``(seed, epoch)`` on the tensors' device and slices it. Training shards
    (``drop_remainder=True``) have equal sizes on every rank, so every rank takes the same number
    of steps; evaluation shards cover every point exactly once."""

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_remainder: bool = False,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        bounds = (
            np.arange(world_size + 1) * (len(tensors[0]) // world_size)
            if drop_remainder
            else np.linspace(0, len(tensors[0]), world_size + 1).round().astype(int)
        )
        self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])
        self.num_samples = self.stop - self.start  # points this rank sees per epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / (self.batch_size or max(self.num_samples, 1)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        size = self.batch_size or max(self.num_samples, 1)
        device = self.tensors[0].device
        order = (
            torch.randperm(
                len(self.tensors[0]),
                generator=torch.Generator(device=device).manual_seed(
                    derived_seed(self.seed, 1000 + self.epoch())
                ),
                device=device,
            )[self.start : self.stop]
            if self.shuffle
            else None
        )
        for i in range(0, self.num_samples, size):
            index = (
                slice(self.start + i, min(self.start + i + size, self.stop))
                if order is None
                else order[i : i + size]
            )
            yield tuple(t[index] for t in self.tensors)


def shard(
    data: Any, tensors: tuple[torch.Tensor | None, ...], train: bool = False, ranks: bool = True
) -> TensorBatches:
    """The batches of ``tensors`` for this process: its shard of them under DDP (of every point,
    without ``ranks``), shuffled each epoch for minibatch training and, under DDP, so that other
    points drop out each epoch."""
    trainer = data.trainer
    rank, world = (
        (trainer.global_rank, trainer.world_size) if trainer is not None and ranks else (0, 1)
    )
    present = tuple(t for t in tensors if t is not None)
    if train and len(present[0]) < world:
        raise ConfigError(
            "n_samples",
            f"large enough to give each of the {world} processes a training point",
            data.hparams["n_samples"],
        )
    return TensorBatches(
        present,
        batch_size=data.batch_size,
        shuffle=train and (data.batch_size is not None or world > 1),
        seed=data.seed,
        epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
        rank=rank,
        world_size=world,
        drop_remainder=train,
    )
