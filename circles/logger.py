"""The run logger's import path before it moved to :mod:`circles.runs.logger`: the
``config.yaml`` of every run made before then names ``circles.logger.TensorBoardRunLogger``, and
``--config <run>/config.yaml`` repeats it."""

from circles.runs.logger import RunDirectory, TensorBoardRunLogger

__all__ = ["RunDirectory", "TensorBoardRunLogger"]
