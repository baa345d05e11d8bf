"""The TensorBoard run logger: one directory per run, train/val/test curves as sub-runs, and the
HPARAMS record."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override

from circles.model.metrics import STAGES, hparams_metrics, scalar_tag
from circles.runs.directory import claim_version, lock_run_dir, run_name

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


def _hparam_value(value: Any) -> str | bool:
    """A hyperparameter as the HPARAMS table shows it best: numbers as written (``1000``,
    ``0.03``; TensorBoard would print ``1000.0`` and ``0.030000``), lists and None as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


# The HPARAMS table's columns: the settings people vary, as (hyperparameter, column title), in the
# order TensorBoard lists them; it ticks the first five (the rest can be ticked).
HPARAM_COLUMNS = (
    ("activation", "activation"),
    ("dataset", "dataset"),
    ("hidden_sizes", "hidden layers"),
    ("max_epochs", "epochs"),
    ("optimizer", "optimizer"),
    ("bayes_acc", "Bayes-optimal acc"),
    ("members", "seeds (members)"),
    ("noise", "noise"),
    ("seed_everything", "seed"),
    ("batch_size", "points per step"),
)


def column_order(first: Sequence[str]) -> list[tuple[str, str]]:
    """The HPARAMS columns, those of the config keys ``first`` (a sweep's varied settings: what
    tells its rows apart) in front, in their order; then the rest of :data:`HPARAM_COLUMNS`."""
    titles = dict(HPARAM_COLUMNS)
    # a config key's column: its last part (``data.noise`` -> ``noise``); every optimizer
    # setting is the one ``optimizer`` column
    keys = dict.fromkeys(
        "optimizer" if key.startswith("model.optimizer.") else key.rsplit(".", 1)[-1]
        for key in first
    )
    return [(key, titles.get(key, key)) for key in keys] + [
        (key, title) for key, title in HPARAM_COLUMNS if key not in keys
    ]


def hparams_session(hparams: Mapping[str, Any], trial: str, first: Sequence[str] = ()) -> list[Any]:
    """A run's record for TensorBoard's HPARAMS tab: the experiment's declared columns
    (``HPARAM_COLUMNS`` that the run has, and the metrics of :mod:`circles.metrics` with an
    HPARAMS column) and the run's values for them, so the table opens on the settings people vary
    and the metrics that say how a run did. TensorBoard orders the columns by their names: a
    column's name is its place and title (``0 activation``), and the table shows the title;
    ``first`` puts some in front (:func:`column_order`). (Every hyperparameter is in the run's
    ``hparams.yaml``.)"""
    from tensorboard.plugins.hparams import summary_v2 as hp

    values = {
        key: _hparam_value(value) for key, value in hparams.items() if not key.startswith("_")
    }
    # a file's points: named by the file; no generator, no noise
    if values.get("path", "None") != "None":
        values["dataset"] = os.path.basename(str(values["path"]))
        values.pop("noise", None)
    if "optimizer" in values and "optimizer.lr" in values:
        values["optimizer"] = f"{values['optimizer']} lr {values['optimizer.lr']}"
    if values.get("batch_size") == "None":
        values["batch_size"] = "all (full batch)"
    order = [(key, title) for key, title in column_order(first) if key in values]
    names = {key: f"{i} {title}" for i, (key, title) in enumerate(order)}
    columns = [hp.HParam(name, display_name=name.split(" ", 1)[1]) for name in names.values()]
    metrics = [
        hp.Metric(metric.tag, group=metric.stage, display_name=metric.hparams)
        for metric in hparams_metrics()
    ]
    return [
        hp.hparams_config_pb(hparams=columns, metrics=metrics),
        hp.hparams_pb({name: values[key] for key, name in names.items()}, trial_id=trial),
    ]


def _values_by_run(metrics: Mapping[str, Any], evaluation: bool) -> dict[str, list[Any]]:
    """The scalars as TensorBoard summary values by the sub-run they go to: ``train/loss`` to
    ``train`` as ``curves/loss`` (an evaluation's as ``evaluation/loss``), others to the run
    itself; ``epoch`` left out."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    runs: dict[str, list[Any]] = {}
    for key, value in metrics.items():
        stage, _, name = key.partition("/")
        run = stage if stage in STAGES and name else ""
        tag = (f"evaluation/{name}" if evaluation else scalar_tag(key)) if run else key
        if key != "epoch":
            runs.setdefault(run, []).append(Summary.Value(tag=tag, simple_value=float(value)))
    return runs


def _rank_zero() -> bool:
    """Whether this process is rank zero (Lightning sets ``rank_zero_only.rank`` as each process
    starts)."""
    return rank_zero_only.rank == 0  # type: ignore[attr-defined]  # Lightning sets it


def _run_name(version: int | str) -> str:
    """The run directory's name for a logger version (a number is
    :func:`circles.files.run_name`'s)."""
    return version if isinstance(version, str) else run_name(version)


class TensorBoardRunLogger(TensorBoardLogger):
    """TensorBoard logger for ``<save_dir>/<name>/NNNN-<label>`` run directories, the one allocator
    of them.

    - Claims the next number with an atomic ``mkdir`` (:func:`claim_version`) the first time the
      run's directory is asked for, so a run that fails before that leaves no empty directory.
    - Lays the scalars out as TensorBoard shows training best (the layout Keras uses):
      ``train/loss`` is written as ``curves/loss`` into the sub-run ``<run>/train``, ``val/loss`` as
      ``curves/loss`` into ``<run>/val``, and so on (:func:`scalar_tag`), so one chart holds the
      train and the val curve of a metric, and TensorBoard's landing page opens on the ``curves``
      and ``decision_boundary`` groups. Images and the hyperparameters stay in the run.
    - Draws the curves over epochs: a call's step is its ``epoch`` (Lightning's step counts
      optimizer steps).
    - Writes all scalars of a ``log_metrics`` call as one TensorBoard event per sub-run (Lightning
      writes one per scalar).
    - Records the run for TensorBoard's HPARAMS tab: the settings people vary and the metrics of
      the table in :mod:`circles.model.metrics` that have a column there."""

    def __init__(
        self,
        save_dir: str | None = None,
        name: str = DEFAULT_RUNS,
        version: int | str | None = None,
        label: str = "",
        default_hp_metric: bool = False,
        log_graph: bool = False,
        prefix: str = "",
        sub_dir: str | None = None,
        evaluation: bool = False,
        first_columns: Sequence[str] = (),
        **writer_kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: Folder that holds the ``name`` folder of runs; ``null`` is the trainer's
                ``default_root_dir`` (the working directory unless set).
            name: Folder of runs inside ``save_dir``; ``tensorboard --logdir <save_dir>/<name>``
                shows them all.
            version: Run to write into (``3`` or ``"0003-relu-10x10"``); ``null`` claims the next
                free one.
            label: What the run trains, appended to a claimed number so TensorBoard names the run by
                it (the command line fills it in from the config, e.g.
                ``circles-relu-10x10-sgd0.1-e1000``).
            default_hp_metric: Log Lightning's placeholder ``hp_metric``; not needed here.
            log_graph: Add the model's graph to TensorBoard (Lightning's option).
            prefix: Put in front of every metric's name; the scalars are then written as Lightning
                writes them, without the train/val/test sub-runs.
            sub_dir: A folder inside the run directory for the events (Lightning's option).
            evaluation: A validate, test or predict run (the command line says so): its scalars go
                to TensorBoard's ``evaluation`` group, apart from the fits' ``curves``.
            first_columns: Config keys whose HPARAMS columns come first (a sweep gives the
                settings it varies, so the columns TensorBoard shows at first tell its rows
                apart).
            **writer_kwargs: Options of ``torch.utils.tensorboard.SummaryWriter``, for every writer
                of the run.
        """
        super().__init__(
            save_dir if save_dir is not None else ".",
            name=name,
            version=version,
            log_graph=log_graph,
            default_hp_metric=default_hp_metric,
            prefix=prefix,
            sub_dir=sub_dir,
            **writer_kwargs,
        )
        self._metric_prefix = prefix
        self._writer_kwargs = writer_kwargs
        self._run_version = version
        self._label = label
        self._evaluation = evaluation
        self._first_columns = list(first_columns)
        self._lock: IO[Any] | None = None
        self._locked = False
        self._stage_writers: dict[str, Any] = {}
        self._created = False
        self.stay_open = False  # a stage's success only flushes: the fit's test joins its files
        self._hparams_file_saved = False
        self._hparams_session_written = True  # nothing to write until hyperparameters arrive

    @property
    @override
    def version(self) -> int | str:
        """The run's version: the one given, else (on rank zero, the first time it is asked for)
        the claimed one. Rank zero holds the run directory's lock (:func:`lock_run_dir`) from
        then until :meth:`finalize`."""
        if isinstance(self._run_version, int):
            # Lightning's log_dir would say version_3
            self._run_version = _run_name(self._run_version)
        if self._run_version is None and _rank_zero():
            self._run_version = claim_version(self.root_dir, self._label)
            self._created = True
        elif self._run_version is None:
            self._run_version = super().version
        if not self._locked and _rank_zero():
            self._lock = lock_run_dir(Path(self.root_dir) / _run_name(self._run_version))
            self._locked = True
        return self._run_version

    @property
    def created(self) -> Path | None:
        """The run directory, if this process made it (asking ``log_dir`` would make one)."""
        if not self._created or self._run_version is None:
            return None
        return Path(self.root_dir) / _run_name(self._run_version)

    def _writer(self, stage: str) -> Any:
        """The run's own SummaryWriter (``stage`` empty), or the one of its ``stage`` sub-run,
        made on first use."""
        if not stage:
            return self.experiment
        if stage not in self._stage_writers:
            from torch.utils.tensorboard import SummaryWriter

            self._stage_writers[stage] = SummaryWriter(
                os.path.join(self.log_dir, stage), **self._writer_kwargs
            )
        return self._stage_writers[stage]

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The scalars of a call, one TensorBoard event per sub-run (see the class):
        ``stage/name`` goes to the ``stage`` sub-run as ``curves/name``, at step = its ``epoch``
        (which Lightning adds to the metrics it logs, and an evaluation logs as the epoch of its
        weights), so the curves are drawn over epochs."""
        self._write_hparams_session()
        if "epoch" in metrics:
            step = int(metrics["epoch"])
        if self._metric_prefix or not all(
            isinstance(v, (int, float, torch.Tensor)) for v in metrics.values()
        ):
            return super().log_metrics(metrics, step)
        from tensorboard.compat.proto.summary_pb2 import Summary

        for run, values in _values_by_run(metrics, self._evaluation).items():
            event_file_writer(self._writer(run)).add_summary(Summary(value=values), step)

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
        """Everything written so far onto the disk: the run's events and its sub-runs'."""
        if self._experiment is not None:
            self._experiment.flush()
        for writer in self._stage_writers.values():
            writer.flush()

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

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_hparams_session()
        if status == "success" and self.stay_open:
            self.save()
            self.flush()
            return
        super().finalize(status)
        for writer in self._stage_writers.values():
            writer.close()  # event_file_writer reopens it if training goes on (SLURM's SIGUSR1)
        self.release()

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


class RunDirectory(TensorBoardRunLogger):
    """The run directory of a run without a logger (``--trainer.logger false``): claimed,
    labelled and locked as every run's is (:class:`TensorBoardRunLogger`), holding what the run
    writes itself (config.yaml, checkpoints, pictures), and no TensorBoard events."""

    @property
    @override
    def experiment(self) -> None:
        """No TensorBoard writer (Lightning asks for it once at set-up)."""
        return None

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    @override
    @rank_zero_only
    def log_hyperparams(
        self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        pass

    @override
    @rank_zero_only
    def record_trial(self, params: Any) -> None:
        pass

    @override
    @rank_zero_only
    def save(self) -> None:
        pass
