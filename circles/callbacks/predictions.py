"""``predict``'s output: ``predictions.csv`` in the run directory."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from circles.contracts import trainer_data
from circles.runs.directory import PREDICTIONS_CSV, atomic_file


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (``x1,x2,probability,label``: the probability of class 1, or
    with more than two classes of the predicted one; with several members ``probability`` is
    their mean and ``probability_std`` their spread; the label is the class's name when the data
    names its classes) into the run directory after ``predict``."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.path: str | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict":
            # log_dir is collective: every rank asks
            self.path = os.path.join(str(trainer.log_dir), PREDICTIONS_CSV)

    @override
    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        if not trainer.is_global_zero or self.path is None:
            return
        x = torch.cat([points for points, _ in predictions]).cpu()
        probs = torch.cat([p for _, p in predictions], dim=1).cpu()  # (K, N) or (K, N, C)
        mean = probs.mean(0)
        label = (mean > 0.5).long() if mean.dim() == 1 else mean.argmax(-1)
        columns = [
            x[:, 0],
            x[:, 1],
            mean if mean.dim() == 1 else mean.gather(-1, label[:, None])[:, 0],
        ]
        if len(probs) > 1:  # the members' spread of that probability
            std = probs.std(0)
            columns.append(std if std.dim() == 1 else std.gather(-1, label[:, None])[:, 0])
        names = trainer_data(trainer).class_names
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_file(self.path) as f:
            f.write(
                "x1,x2,probability," + ("probability_std," if len(probs) > 1 else "") + "label\n"
            )
            for *values, k in zip(*(c.tolist() for c in columns), label.tolist(), strict=True):
                f.write("".join(f"{v:.6g}," for v in values) + f"{names[k] if names else k}\n")
        print(f"Predictions written to {self.path}", flush=True)
