"""How many torch threads a fit trains on: one where a training step is too small to share."""

import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.ranges import Count

# multiply-adds of a training step below which a second thread gains nothing on an idle machine
# (a step of 2.0 M: 1.01x) and loses on a busy one (docs/benchmarks.md, "Torch threads")
SHARED_WORK = 2_500_000


class TorchThreads(Callback):
    """Trains on one torch thread when a step is too small to share: the chapter's 10x10 network
    on 800 points is 0.12 M multiply-adds, where a second thread only waits on the first (long,
    where another program holds a core); larger steps (many members, wide layers) keep torch's
    count. The count follows from the config alone, never from the machine's load (a count can
    change the last bits of a sum); torch's count is back when training ends.
    ``OMP_NUM_THREADS`` or ``count`` decide instead."""

    def __init__(self, count: Count | None = None) -> None:
        """
        Args:
            count: Torch threads to train on; ``null`` decides from a step's work (the batch's
                points times the parameters: one thread below 2.5 M), unless ``OMP_NUM_THREADS``
                is set.
        """
        self.count = count
        self._restore: int | None = None

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._restore is not None or (self.count is None and "OMP_NUM_THREADS" in os.environ):
            return
        self._restore = torch.get_num_threads()
        work = len(batch[0]) * sum(p.numel() for p in pl_module.parameters())
        chosen = self.count or (1 if work < SHARED_WORK else self._restore)
        if chosen != self._restore:
            torch.set_num_threads(chosen)
            pl_module.print(
                f"Training on {chosen} torch thread{'s' * (chosen > 1)} of {self._restore} ("
                + ("threads.count" if self.count else f"a step is {work:,} multiply-adds")
                + "; threads.count or OMP_NUM_THREADS set it)"
            )

    @override
    def on_train_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: Any = None
    ) -> None:
        if self._restore is not None:
            torch.set_num_threads(self._restore)
            self._restore = None

    on_exception = on_train_end  # a failed fit gives the count back too
