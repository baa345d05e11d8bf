"""Lightning's learning-rate finder before training, with what it says about the configured rate."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import LearningRateFinder
from typing_extensions import override

from circles.runs.directory import LR_FIND_PNG, save_figure
from circles.runs.logger import tensorboard_of

# the state Lightning's finder saves before it starts and removes after it
LIGHTNING_STATE = ".lr_find_*.ckpt"


class LearningRateReport(LearningRateFinder):
    """Lightning's learning-rate finder before training: from the initial weights,
    ``num_training_steps`` steps with the learning rate raised from ``min_lr`` to ``max_lr``, then
    the weights are put back and training goes on with the configured rate. Prints the rate at which
    the loss fell fastest beside the configured one and saves the loss curve as ``lr_find.png`` in
    the run directory::

        python train.py fit --config configs/relu.yaml --config configs/trainer/lr_find.yaml
    """

    def __init__(
        self,
        min_lr: float = 1e-4,
        max_lr: float = 10.0,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
    ) -> None:
        """
        Args:
            min_lr: The first learning rate tried.
            max_lr: The last learning rate tried.
            num_training_steps: Steps between them (each a training step, a whole epoch with the
                full batch).
            mode: ``exponential`` or ``linear`` steps from one rate to the next.
            early_stop_threshold: Stop once the loss exceeds this many times its lowest; ``null``
                never stops.
        """
        super().__init__(
            min_lr=min_lr,
            max_lr=max_lr,
            num_training_steps=num_training_steps,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=False,
        )
        self.span = (min_lr, max_lr)
        self.suggested: float | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:  # a resumed fit: its rate was chosen before
            return
        # the finder's steps are counted in epochs too (one each with the full batch): a fit of
        # fewer epochs than it has steps would stop it short of max_lr. Its state is put back
        # afterwards, the epoch limit here.
        loop = trainer.fit_loop
        max_epochs = loop.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            loop.max_epochs = max_epochs + self._num_training_steps
        states = Path(trainer.default_root_dir)
        before, loggers = set(states.glob(LIGHTNING_STATE)), trainer.loggers
        try:
            super().on_fit_start(trainer, pl_module)
        except BaseException:
            # Lightning saves the weights the finder starts from a few lines before the ``try``
            # whose ``finally`` removes them: stopped in between (a signal), they would stay; and
            # it puts the run's loggers back only when it ends well
            for left in set(states.glob(LIGHTNING_STATE)) - before:
                left.unlink(missing_ok=True)
            trainer.loggers = loggers
            sys.stderr.write("\n")  # the finder's progress bar ends mid-line: the error goes below
            raise
        finally:
            loop.max_epochs = max_epochs
        run_dir = trainer.log_dir  # collective under DDP: every rank asks
        if self.optimal_lr is not None and trainer.is_global_zero:
            self._report(trainer, self.optimal_lr.results, run_dir)

    def _report(self, trainer: pl.Trainer, results: dict[str, Any], run_dir: str | None) -> None:
        """The suggested rate beside the configured one, and the loss curve in ``lr_find.png``
        and TensorBoard."""
        lrs, losses = finder_curve(results)
        self.suggested = steepest_descent(lrs, losses)
        configured = sorted(
            {group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups}
        )
        stopped = (
            f" of {self._num_training_steps} to {self.span[1]:g}: it stops where the loss exceeds "
            f"{self._early_stop_threshold:g}x its lowest"
            if len(lrs) < self._num_training_steps
            else ""
        )
        lines = [
            f"Learning-rate finder ({len(lrs)} steps from {lrs[0]:g} to {lrs[-1]:.3g}{stopped}): "
            f"the loss fell fastest at lr {self.suggested:.3g}"
            if self.suggested
            else "Learning-rate finder: the loss fell at no rate tried (more steps, or a wider "
            "span?)",
            f"  this run trains with lr {', '.join(f'{lr:g}' for lr in configured)}",
            *(
                [
                    f"  {self.suggested:.3g} is {self.suggested / max(configured):.0f} times this "
                    "run's rate and was tried for one step only: check it on a short fit before "
                    "training with it (a rate this large can kill ReLU units for good: "
                    "train/dead_units in TensorBoard)"
                ]
                # a suggestion far above the run's rate was tried for one step, not trained with
                if self.suggested and configured and self.suggested >= 10 * max(configured)
                else []
            ),
        ]
        if run_dir is not None:
            path = os.path.join(run_dir, LR_FIND_PNG)
            os.makedirs(run_dir, exist_ok=True)
            from circles.pictures.figures import finder_figure

            save_figure(finder_figure(lrs, losses, self.suggested, configured), path, dpi=80)
            lines.append(f"  the loss over the rates: {os.path.normpath(path)}")
            tensorboard = tensorboard_of(trainer.loggers)
            if tensorboard is not None:  # in TensorBoard's IMAGES tab too, beside the frames
                from PIL import Image

                with Image.open(path) as picture:
                    image = np.asarray(picture.convert("RGB"))
                tensorboard.experiment.add_image("lr_find", image, global_step=0, dataformats="HWC")
        print("\n".join(lines), flush=True)


FINDER_BETA = 0.98  # the smoothing of Lightning's finder (its _LRCallback's beta)


def finder_curve(results: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The finder's learning rates and its smoothed losses, the smoothing's start corrected:
    Lightning divides the running average after n steps by ``1 - beta**(n + 1)`` instead of ``1 -
    beta**n`` (its step count is already n), which makes the curve rise over its first steps
    whatever the loss does (Lightning-AI/pytorch-lightning#14167). ``tests/test_upstream.py``
    pins the formula."""
    lrs = np.asarray(results["lr"], dtype=float)
    losses = np.asarray(results["loss"], dtype=float)
    n = np.arange(1, len(losses) + 1)
    return lrs, losses * (1 - FINDER_BETA ** (n + 1)) / (1 - FINDER_BETA**n)


def steepest_descent(
    lrs: np.ndarray, losses: np.ndarray, skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The rate at which the loss falls fastest per factor of the rate (its steepest slope over
    log lr), if it falls anywhere past the first ``skip_begin`` and before the last ``skip_end``
    steps; else None."""
    keep = np.isfinite(losses)
    keep[:skip_begin], keep[len(keep) - skip_end :] = False, False
    if keep.sum() < 3:
        return None
    slopes = np.gradient(losses[keep], np.log10(lrs[keep]))
    return float(lrs[keep][np.argmin(slopes)]) if slopes.min() < 0 else None
