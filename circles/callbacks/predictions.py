"""``predict``'s output: ``predictions.csv`` in the run directory."""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from circles.contracts import trainer_data
from circles.errors import InputError
from circles.runs.directory import PREDICTIONS_CSV, atomic_file


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` into the run directory after ``predict``: ``x1,x2`` as given
    (each the number it was read as: the shortest text of its float64, or of its float32 for
    drawn points), ``probability``, the winning class's, then with several members
    ``probability_std``, its spread over them, and ``label``, the class's name when the data
    names its classes (quoted by the CSV rules when a name holds a comma or a quote)."""

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
        probs = torch.cat([p for _, p in predictions], dim=1).cpu()  # (K, N) or (K, N, C)
        data = trainer_data(trainer)
        # the points as read: a precision plugin may have cast the batches
        x = getattr(data, "predict_x", None)
        if x is None or len(x) != probs.shape[1]:
            x = torch.cat([points for points, _ in predictions])
        points = x.cpu().numpy()
        finite = torch.isfinite(probs).reshape(len(probs), probs.shape[1], -1).all(-1).all(0)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            raise InputError(
                f"data.predict_path: the network's probability for point {i + 1} "
                f"({points[i, 0]:g}, {points[i, 1]:g}) is not a number (its float32 arithmetic "
                f"overflows there; {int((~finite).sum()):,} of {len(points):,} points are so). "
                "Leave such points out; nothing was written."
            )
        mean = probs.mean(0)
        if mean.dim() == 1:  # class 1's of two classes
            mean = torch.stack([1 - mean, mean], dim=-1)
        won, label = mean.max(-1)  # each point's class (the first of a tie) and its probability
        columns = {"x1": points[:, 0], "x2": points[:, 1], "probability": won.numpy()}
        if len(probs) > 1:  # the members' spread of that probability (1 - p spreads as p)
            std = probs.std(0)
            columns["probability_std"] = (
                std if std.dim() == 1 else std.gather(-1, label[:, None])[:, 0]
            ).numpy()
        labels = (
            [data.class_names[k] for k in label.tolist()] if data.class_names else label.tolist()
        )
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_file(self.path, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow([*columns, "label"])
            texts = ([str(value) for value in column] for column in columns.values())
            writer.writerows(zip(*texts, labels, strict=True))
        print(f"Predictions written to {self.path}", flush=True)
