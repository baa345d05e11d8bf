"""The Lightning callbacks of a run, one module each: checkpoints, the chapter's progress line,
the run's summary, the decision-boundary pictures, the weights, the learning-rate finder,
predictions, signals (SIGTERM, Ctrl-C, SLURM's requeue) and the torch threads of training."""

from importlib import import_module
from typing import Any

# each callback's module, imported when the callback is first asked for
_MODULES = {
    "ChapterProgressPrinter": "progress",
    "DecisionBoundaryCallback": "boundary",
    "GracefulStopCallback": "signals",
    "LearningRateReport": "lr_finder",
    "PredictionWriter": "predictions",
    "RunCheckpoint": "checkpoint",
    "RunSummary": "summary",
    "TorchThreads": "threads",
    "WeightsCallback": "weights",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
