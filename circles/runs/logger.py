"""The TensorBoard run logger: one directory per run, one TensorBoard run per fit (its
evaluations' scalars inside it), and the HPARAMS record."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override

from circles.model.metrics import scalar_tag
from circles.runs.directory import claim_version, lock_run_dir, run_name
from circles.runs.hparams import hparams_session

# the logger's ``name``: runs go to <default_root_dir>/lightning_logs/0003-<label>
DEFAULT_RUNS = "lightning_logs"
# frames kept per tag by the printed tensorboard command (TensorBoard's default: 10)
TENSORBOARD_IMAGES = 10_000


def tensorboard_command(logdir: str) -> str:
    """The command that shows ``logdir`` in TensorBoard with every decision-boundary frame on the
    slider (TensorBoard keeps 10 images per tag unless told otherwise), ready to paste into a
    shell whatever the folder is called."""
    import shlex

    folder = shlex.quote(os.path.normpath(logdir))
    return f"tensorboard --logdir {folder} --samples_per_plugin images={TENSORBOARD_IMAGES}"


def tensorboard_of(loggers: Sequence[Any]) -> TensorBoardLogger | None:
    """The first of a run's loggers that writes TensorBoard events (not a :class:`RunDirectory`),
    if any."""
    return next(
        (
            logger
            for logger in loggers
            if isinstance(logger, TensorBoardLogger) and not isinstance(logger, RunDirectory)
        ),
        None,
    )


def event_file_writer(writer: Any) -> Any:
    """The event-file writer of a ``torch.utils.tensorboard.SummaryWriter``, reopened if the writer
    was closed.

    ``SummaryWriter`` has no public way to write one ``Summary`` holding several scalars, or an
    hparams session record: ``add_scalars`` makes a writer, and a run in TensorBoard, per tag
    (pytorch/pytorch#32651), and Lightning's own ``TensorBoardLogger.log_hyperparams`` calls this
    same private method (lightning/pytorch/loggers/tensorboard.py). It also reopens the event
    file after ``close()``, which matters because Lightning finalizes the loggers on SLURM's
    SIGUSR1 while training goes on until the job is requeued. ``tests/test_runs.py`` fails loudly
    if either library changes it."""
    return writer._get_file_writer()


def _run_name(version: int | str) -> str:
    """The run directory's name for a logger version (a number is
    :func:`circles.files.run_name`'s)."""
    return version if isinstance(version, str) else run_name(version)


class ClaimedRun:
    """A Lightning logger's run directory as circles claims it (a mixin of
    :class:`TensorBoardRunLogger`, before ``TensorBoardLogger``): named by a number and a label,
    made when first asked for, locked by rank zero until released, removed again if the command
    wrote nothing into it."""

    root_dir: str
    NAME_HPARAMS_FILE: str
    _run_version: int | str | None
    _label = ""
    _lock: IO[Any] | None = None
    _locked = False
    _created = False

    finalize: Callable[[str], None]  # the Lightning logger's it is mixed into

    @property
    def version(self) -> int | str:
        """The run's version: the one given, else (on rank zero, the first time it is asked for)
        the claimed one. Rank zero holds the run directory's lock (:func:`lock_run_dir`) from
        then until :meth:`finalize`."""
        if isinstance(self._run_version, int):
            # Lightning's log_dir would say version_3
            self._run_version = _run_name(self._run_version)
        if self._run_version is None and getattr(rank_zero_only, "rank", 0) == 0:
            self._run_version = claim_version(self.root_dir, self._label)
            self._created = True
        elif self._run_version is None:
            self._run_version = super().version  # type: ignore[misc]  # TensorBoardLogger's
        if not self._locked and getattr(rank_zero_only, "rank", 0) == 0:
            self._lock = lock_run_dir(Path(self.root_dir) / _run_name(self._run_version))
            self._locked = True
        return self._run_version

    @property
    def created(self) -> Path | None:
        """The run directory, if this process made it (asking ``log_dir`` would make one)."""
        version = self._run_version if self._created else None
        return Path(self.root_dir) / _run_name(version) if version is not None else None

    def forget_if_empty(self) -> None:
        """Remove the run directory this process made, when it holds nothing of the run's own (a
        lock, config, hyperparameters and event files are all it holds: the command was refused
        or stopped before it wrote anything), and the folder of evaluations it made, if that
        holds no other."""
        run = self.created
        own = {".lock", "config.yaml", self.NAME_HPARAMS_FILE}
        files = [p.name for p in run.rglob("*") if p.is_file()] if run is not None else [""]
        if run is None or not all(n in own or n.startswith("events.out.tfevents.") for n in files):
            return
        with contextlib.suppress(OSError):  # its event writer may have failed (a full disk)
            self.finalize("failed")
        shutil.rmtree(run, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.parent.rmdir()

    def release(self) -> None:
        """Let another process write the run (the lock ends with the process anyway; a process
        that runs several commands, such as compare, lets go of a run it was refused)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class TensorBoardRunLogger(ClaimedRun, TensorBoardLogger):
    """TensorBoard logger for ``<save_dir>/<name>/NNNN-<label>`` run directories, the one allocator
    of them: the number is claimed with an atomic ``mkdir`` (:func:`claim_version`) when the
    directory is first asked for. A fit is one TensorBoard run, so one colour in every chart:
    ``train/loss`` is the tag ``curves/loss_train``, beside ``curves/loss_val`` in the ``curves``
    group (:func:`scalar_tag`), drawn over epochs, one event per call; an evaluation writes into
    the run that trained its weights (``events_dir``), so the run list stays the fits; images and
    hyperparameters go with the scalars, and the run is a trial of TensorBoard's HPARAMS tab."""

    def __init__(
        self,
        save_dir: str | None = None,
        name: str = DEFAULT_RUNS,
        version: int | str | None = None,
        label: str = "",
        evaluation: bool = False,
        events_dir: str | None = None,
        first_columns: Sequence[str] = (),
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: Folder that holds the ``name`` folder of runs; ``null`` is the trainer's
                ``default_root_dir`` (the working directory unless set).
            name: Folder of runs inside ``save_dir``; ``tensorboard --logdir <save_dir>/<name>``
                shows them all.
            version: Run to write into (``3`` or ``"0003-relu-10x10"``); ``null`` claims the next
                free one.
            label: What the run trains, appended to a claimed number so TensorBoard names the run
                by it (the command line fills it in from the config: ``relu-10x10-sgd0.1-e1000``).
            evaluation: A validate, test or predict run (the command line says so): its scalars go
                to TensorBoard's ``evaluation`` group, apart from the fits' curves.
            events_dir: Folder of the TensorBoard events; ``null``: the run's own directory. The
                command line gives an evaluation the run that trained its weights.
            first_columns: Config keys whose HPARAMS columns come first (a sweep gives the
                settings it varies, so the columns TensorBoard shows at first tell its rows
                apart).
            default_hp_metric: Log Lightning's placeholder ``hp_metric``; not needed here.
            **kwargs: Lightning's ``TensorBoardLogger`` options (``log_graph``, ``sub_dir``,
                ``prefix``: the scalars then written as Lightning writes them) and
                ``SummaryWriter``'s, for every writer of the run.
        """
        super().__init__(
            save_dir if save_dir is not None else ".",
            name=name,
            version=version,
            default_hp_metric=default_hp_metric,
            **kwargs,
        )
        self._run_version = version
        self._label = label
        self.evaluation = evaluation  # the boundary callback tags its picture by it
        self._first_columns = list(first_columns)
        self._events_dir = events_dir
        self._numbers = False  # logged by this process
        self.stay_open = False  # a stage's success only flushes: the fit's test joins its files
        self._hparams_file_saved = False
        self._hparams_session_written = True  # nothing to write until hyperparameters arrive

    @property
    @override
    @rank_zero_experiment
    def experiment(self) -> Any:
        """Lightning's ``SummaryWriter`` of the run, writing into ``events_dir`` where given (its
        event file named by the run: ``...tfevents.<time>.<host>.<pid>.0.0000-test``)."""
        if self._experiment is None and self._events_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            kwargs = {**self._kwargs, "filename_suffix": f".{_run_name(self.version)}"}
            self._experiment = SummaryWriter(self._events_dir, **kwargs)
        return super().experiment

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The scalars of a call as one TensorBoard event, tagged as the class says, at step =
        their ``epoch`` (which Lightning adds to the metrics it logs, and an evaluation logs as
        the epoch of its weights), so the curves are drawn over epochs."""
        self._write_hparams_session()
        if "epoch" in metrics:
            step = int(metrics["epoch"])
        if self._prefix or not all(
            isinstance(v, (int, float, torch.Tensor)) for v in metrics.values()
        ):
            return super().log_metrics(metrics, step)
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=scalar_tag(key, self.evaluation), simple_value=float(value))
            for key, value in metrics.items()
            if key != "epoch"
        ]
        if values:  # the epoch alone is no number of the run's
            event_file_writer(self.experiment).add_summary(Summary(value=values), step)
            self._numbers = True

    @override
    @rank_zero_only
    def save(self) -> None:
        """What Lightning's ``save`` writes (``hparams.yaml``, once it has every hyperparameter),
        without flushing the event files: Lightning calls this after every ``log_metrics``, and
        the writers flush by themselves (every 10 events or 2 minutes), at :meth:`flush` (before a
        checkpoint is written) and at the end."""
        if self._hparams_file_saved or not os.path.isdir(self.log_dir):
            return
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        hparams = Path(self.log_dir, self.NAME_HPARAMS_FILE)
        twin = hparams.with_name(f".{hparams.name}.{os.getpid()}.tmp")
        try:
            save_hparams_to_yaml(twin, self.hparams)  # Lightning's writer, renamed into place
            os.replace(twin, hparams)
        finally:
            twin.unlink(missing_ok=True)
        self._hparams_file_saved = True

    @rank_zero_only
    def flush(self) -> None:
        """Everything written so far onto the disk."""
        if self._experiment is not None:
            self._experiment.flush()

    @rank_zero_only
    def record_trial(self, params: Any) -> None:
        """Add ``params`` to the hyperparameters and make the run a trial of TensorBoard's
        HPARAMS table: its record is written with the first metrics (a fit's; an evaluation's run
        is no trial of its own)."""
        self.log_hyperparams(params)
        self._hparams_session_written = False

    def _write_hparams_session(self) -> None:
        """The run's record for TensorBoard's HPARAMS tab (:func:`hparams_session`), written
        once, with every hyperparameter collected, just before the first metrics (TensorBoard
        keeps a run's first record)."""
        if self._hparams_session_written or not self.hparams:
            return
        writer = event_file_writer(self.experiment)
        for summary in hparams_session(
            dict(self.hparams), _run_name(self.version), self._first_columns
        ):
            writer.add_summary(summary)
        self._hparams_session_written = True

    def hold(self, held: bool) -> None:
        """While held, a stage's success only flushes (the fit's test joins the fit's files);
        letting go finalizes what was held."""
        if self.stay_open and not held:
            self.stay_open = False
            self.finalize("success")
        self.stay_open = held

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_hparams_session()
        if status == "success" and self.stay_open:
            self.save()
            self.flush()
            return
        # event_file_writer reopens the writer if training goes on (SLURM's SIGUSR1)
        super().finalize(status)
        if self._events_dir is not None and self._experiment is not None and not self._numbers:
            # an evaluation that wrote no numbers (predict, or one refused) leaves no event file
            for file in Path(self._events_dir).glob(f"*tfevents.*.{_run_name(self.version)}"):
                file.unlink(missing_ok=True)
        self.release()


class RunDirectory(TensorBoardRunLogger):
    """The run directory of a run without a logger (``--trainer.logger false``): claimed,
    labelled and locked as every run's is (:class:`TensorBoardRunLogger`), holding what the run
    writes itself (config.yaml, checkpoints, pictures), and no TensorBoard events."""

    @property
    @override
    def experiment(self) -> None:
        """No TensorBoard writer (Lightning asks for it once at set-up)."""
        return None

    def _writes_nothing(self, *args: Any, **kwargs: Any) -> None:
        """No scalars, hyperparameters or ``hparams.yaml``: what the run writes is its own."""

    log_metrics = log_hyperparams = save = override(_writes_nothing)
