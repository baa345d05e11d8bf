"""The Lightning callbacks of a run, one module each: checkpoints, the chapter's progress line,
the run's summary, the decision-boundary pictures, the weights, the learning-rate finder,
predictions, and signals (SIGTERM, Ctrl-C, SLURM's requeue)."""

from circles.callbacks.boundary import DecisionBoundaryCallback
from circles.callbacks.checkpoint import RunCheckpoint
from circles.callbacks.lr_finder import LearningRateReport
from circles.callbacks.predictions import PredictionWriter
from circles.callbacks.progress import ChapterProgressPrinter
from circles.callbacks.signals import GracefulStopCallback
from circles.callbacks.summary import RunSummary
from circles.callbacks.weights import WeightsCallback

__all__ = [
    "ChapterProgressPrinter",
    "DecisionBoundaryCallback",
    "GracefulStopCallback",
    "LearningRateReport",
    "PredictionWriter",
    "RunCheckpoint",
    "RunSummary",
    "WeightsCallback",
]
