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
        read = getattr(data, "predict_x", None)
        x = read if read is not None and len(read) == probs.shape[1] else None
        if x is None:
            x = torch.cat([points for points, _ in predictions])
        mean = probs.mean(0)
        label, won = winning_class(mean)
        points = x.cpu().numpy()
        columns = [points[:, 0], points[:, 1], won.numpy()]
        header = ["x1", "x2", "probability"]
        if len(probs) > 1:  # the members' spread of that probability (1 - p spreads as p)
            std = probs.std(0)
            columns.append(
                (std if std.dim() == 1 else std.gather(-1, label[:, None])[:, 0]).numpy()
            )
            header.append("probability_std")
        names = data.class_names
        labels = [names[k] for k in label.tolist()] if names else label.tolist()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_file(self.path, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow([*header, "label"])
            texts = [[str(value) for value in column] for column in columns]
            writer.writerows(zip(*texts, labels, strict=True))
        print(f"Predictions written to {self.path}", flush=True)


def winning_class(mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's class and its probability, from the probabilities ``(N,)`` of class 1 of two
    classes or ``(N, C)`` of C classes."""
    if mean.dim() == 1:
        label = (mean > 0.5).long()
        return label, torch.where(label == 1, mean, 1 - mean)
    label = mean.argmax(-1)
    return label, mean.gather(-1, label[:, None])[:, 0]
