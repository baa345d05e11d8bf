"""SIGTERM, Ctrl-C and SLURM's requeue signal: every rank stops together after a step, with its
state saved."""

from __future__ import annotations

import logging
import os
import signal
import threading
from logging.handlers import BufferingHandler
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from circles.contracts import trainer_callbacks
from circles.errors import Interrupted, note, signal_name


def requeue_signal(trainer: pl.Trainer) -> int | None:
    """The signal on which Lightning saves an hpc checkpoint and requeues the job: its SLURM
    environment's ``requeue_signal`` (SIGUSR1 unless the environment was built with another) when
    auto-requeue is on, else None."""
    # what Lightning's signal connector reads
    environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return environment.requeue_signal
    return None


class GracefulStopCallback(Callback):
    """SIGTERM (a scheduler ending the job) and the first Ctrl-C stop fit cleanly, on every rank
    together: the signal only sets a flag; after each training step the ranks agree on it (one tiny
    reduce under DDP) and fit stops the way early stopping does, so ``on_train_end`` writes a
    consistent ``last.ckpt``. ``signal`` then says which signal stopped it. A second Ctrl-C
    interrupts at once.

    Why not Lightning's own handlers: its SIGTERM handler broadcasts from inside the handler, and
    its SLURM requeue handler saves the hpc checkpoint with a barrier from inside the handler, so
    either deadlocks a DDP run whenever the signal lands while another rank is inside a different
    collective (a metric's reduce, say). Here the requeue signal (:func:`requeue_signal`) also only
    sets a flag, and the ranks run Lightning's handler together after the step in which they agreed
    on it.

    ``validate``, ``test`` and ``predict`` have no state to save: there, as everywhere outside a
    fit's training, the command line's :func:`circles.errors.stopping_on_signals` stops the
    command at once (Lightning's own handler only notes a SIGTERM, and predict would go on to
    write its file)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signal: int | None = None
        self.requeue = False
        # the step and hpc checkpoint of a requeue Lightning's handler did
        self.requeued: tuple[int, str] | None = None
        self._requeue_signal: int | None = None
        self._previous: dict[int, Any] = {}

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signal = None
        self.requeue = False
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        self._requeue_signal = requeue_signal(trainer)
        if (
            self._requeue_signal is not None
            and self._previous
            and callable(signal.getsignal(self._requeue_signal))
        ):
            # the requeue signal's own handler (Lightning's, which _requeue runs) stays the one
            # put back
            self._previous.setdefault(
                self._requeue_signal,
                signal.signal(
                    self._requeue_signal, lambda signum, frame: setattr(self, "requeue", True)
                ),
            )

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # one reduce for both flags: a rank that saw a signal decides for all
        stop, requeue = _any_rank(trainer, pl_module, self.signal is not None, self.requeue)
        if requeue and self._requeue_signal is not None:
            self.requeue = False
            # SLURM may deliver the signal again while it cancels the requeued job's tasks: the
            # job is requeued and its state saved once
            if self.requeued is None:
                self._requeue(trainer, pl_module)
        if stop:
            # a rank stopped because another one was signalled
            self.signal = self.signal or signal.SIGTERM
            trainer.should_stop = True

    def _requeue(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's requeue handler, run by every rank together: the hpc checkpoint, then (rank
        zero) ``scontrol requeue``. Whether SLURM took the requeue (which the handler only logs:
        :data:`REQUEUE_LOG`), every rank learns from rank zero; a refused one is said at once (the
        job then ends at its time limit)."""
        assert self._requeue_signal is not None
        records = BufferingHandler(capacity=1000)
        logging.getLogger(REQUEUE_LOG).addHandler(records)
        try:
            self._previous[self._requeue_signal](self._requeue_signal, None)
        finally:
            logging.getLogger(REQUEUE_LOG).removeHandler(records)
        messages = [record.getMessage() for record in records.buffer]
        refused = [m for m in messages if m.startswith("Requeuing SLURM job") and "failed" in m]
        (failed,) = _any_rank(trainer, pl_module, bool(refused))
        resume = trainer._checkpoint_connector._hpc_resume_path  # what a requeue restores
        self.requeued = (trainer.global_step, resume) if resume and not failed else None
        if failed and trainer.is_global_zero:
            saved = f" Its state is saved in {os.path.normpath(resume)}" if resume else ""
            note(
                f"SLURM did not requeue the job ({'; '.join(refused)}): it ends at its time limit."
                f"{saved}; fit --ckpt_path with that file continues it in a new job."
            )

    def _restore(
        self,
        trainer: pl.Trainer | None = None,
        pl_module: pl.LightningModule | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """The handlers from before :meth:`on_train_start` put back (at the end of fit, also of a
        failed one)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    on_train_end = on_exception = override(_restore)


REQUEUE_LOG = "lightning.pytorch.trainer.connectors.signal_connector"  # where it says how it went


def _any_rank(trainer: pl.Trainer, pl_module: pl.LightningModule, *flags: bool) -> list[bool]:
    """Each flag, true where it is on any rank (one reduce under DDP)."""
    if trainer.world_size == 1:
        return list(flags)
    tensor = torch.tensor(flags, dtype=torch.float32, device=pl_module.device)
    return (trainer.strategy.reduce(tensor, reduce_op="sum") > 0).tolist()


def interruption(trainer: pl.Trainer | None, subcommand: str, signum: int) -> Interrupted:
    """The error that reports a subcommand stopped by ``signum``; for ``fit``, where its state
    was saved."""
    from circles.callbacks.checkpoint import RunCheckpoint

    name = signal_name(signum)
    if subcommand != "fit":
        return Interrupted(signum, f"{subcommand} interrupted by {name}.")
    callbacks = trainer_callbacks(trainer) if trainer is not None else []
    requeued = next((cb.requeued for cb in callbacks if isinstance(cb, GracefulStopCallback)), None)
    # SLURM ends the job it requeued, and the job resumes on its own
    if trainer is not None and requeued is not None:
        step, hpc = requeued
        return Interrupted(
            signum,
            f"fit stopped by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"SLURM requeued the job, which resumes from {os.path.normpath(hpc)} when it starts "
            f"again (saved by every rank after step {step}).",
            kind="note",
        )
    checkpoint = trainer.checkpoint_callback if trainer is not None else None
    if trainer is None or not (
        isinstance(checkpoint, RunCheckpoint) and checkpoint.holds_current_state(trainer)
    ):
        return Interrupted(signum, f"fit interrupted by {name} before it could write a checkpoint.")
    return Interrupted(
        signum,
        f"fit interrupted by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
        f"the state at the interruption is saved in {os.path.normpath(checkpoint.last_model_path)}"
        ". To continue, run the same command with --ckpt_path last.",
    )
