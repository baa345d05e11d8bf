"""Run directories and the files in them: claimed atomically, written atomically, checkpoints loaded safely."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from circles.errors import CirclesError, ConfigError

DEFAULT_RUNS = "lightning_logs"  # the logger's ``name``: runs go to <default_root_dir>/lightning_logs/version_N


class CheckpointError(CirclesError):
    """A checkpoint file that cannot or must not be loaded."""

    exit_code = 2


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; when the block ends without an error, flush it to disk and
    rename it to ``path`` in one step. A reader, a crash or ``kill -9`` sees the old file or the new one, never half
    of one, and no temporary file is left behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None  # name the file, not its temporary twin
    finally:
        tmp.unlink(missing_ok=True)


# -- checkpoints --------------------------------------------------------------------------------------------------


def load_checkpoint_file(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing, corrupt or unsafe file.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a checkpoint carrying a
    pickled object is refused before any of its code can run.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", "an existing checkpoint file, 'best' or 'last'", str(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the global either way: "Unsupported global: GLOBAL io.open" (a module it allows in part) or
        # "unsupported GLOBAL os.makedirs whose module os is blocked"
        unsafe = re.search(r"\bGLOBAL ([\w.]+)", str(err))
        if unsafe is None:
            raise _unreadable(path, "it does not unpickle as tensors and plain data") from None
        raise CheckpointError(
            f"Refused to load {path}: it holds a Python object ({unsafe.group(1)}) that could run code when "
            "unpickled, so loading it with weights_only=True rejected it and nothing in it ran. Checkpoints written "
            "by this project hold only tensors and plain data; do not load this file unless you made it."
        ) from None
    except Exception as err:  # a torn or foreign file fails in many ways: zip, EOF, key, OS errors
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else "no detail"
        raise _unreadable(path, f"{type(err).__name__}: {first}") from None


def _unreadable(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"Cannot read checkpoint {path}: it is truncated, corrupt or not a PyTorch checkpoint ({detail}). Use "
        "another checkpoint, e.g. the run's checkpoints/best.ckpt or checkpoints/last.ckpt."
    )


def load_lightning_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """A checkpoint file checked to be one Lightning wrote (weights and the version that wrote them)."""
    checkpoint = load_checkpoint_file(path)
    missing = [k for k in ("state_dict", "pytorch-lightning_version") if not isinstance(checkpoint, dict)
               or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this project: it holds no "
                              f"{' or '.join(missing)}. Use a run's checkpoints/best.ckpt or checkpoints/last.ckpt.")
    return checkpoint


def resolve_checkpoint(ckpt_path: str, runs_root: Union[str, Path]) -> Path:
    """``best``/``last`` -> ``checkpoints/best.ckpt``/``last.ckpt`` of the newest run under ``runs_root`` (the run with
    the most recently written checkpoint); a path as is. When the newest run has no such file, an older run's is not
    taken in its place (it may be another model altogether): the error names both."""
    if ckpt_path not in ("best", "last"):
        return Path(ckpt_path)
    root = Path(runs_root)
    checkpoints = [p for p in root.glob("*/checkpoints/*.ckpt") if p.is_file()]
    if not checkpoints:
        raise ConfigError("ckpt_path", "a checkpoint file, or 'best'/'last' of an earlier run", ckpt_path,
                          f"No run under {os.path.normpath(root)} has checkpoints/{ckpt_path}.ckpt.")
    newest_run = max(checkpoints, key=lambda p: p.stat().st_mtime_ns).parent.parent
    found = newest_run / "checkpoints" / f"{ckpt_path}.ckpt"
    if found.is_file():
        return found
    others = [p for p in checkpoints if p.name == f"{ckpt_path}.ckpt"]
    elsewhere = (f" The newest run that has one is {max(others, key=lambda p: p.stat().st_mtime_ns).parent.parent}; "
                 "give its file to use it." if others else "")
    raise ConfigError("ckpt_path", "a checkpoint file, or 'best'/'last' of an earlier run", ckpt_path,
                      f"The newest run, {os.path.normpath(newest_run)}, has no checkpoints/{ckpt_path}.ckpt "
                      f"(it has {', '.join(sorted(p.name for p in (newest_run / 'checkpoints').glob('*.ckpt')))})."
                      + elsewhere)


def run_of_checkpoint(path: Path) -> Optional[str]:
    """The run directory's name for ``<run>/checkpoints/<file>.ckpt``, else None."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else None


def checkpoint_mismatch(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """Where the weight shapes of a checkpoint differ from a model's (the first three), or None if they fit."""
    if found == expected:
        return None
    differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    details = [f"{k} (checkpoint {found[k]}, model {expected[k]})" if k in found and k in expected
               else f"{k} (only in the {'checkpoint' if k in found else 'model'})" for k in differ[:3]]
    return ", ".join(details) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint with :func:`atomic_file`, so a reader (or a resume after ``kill -9``) never sees half a
    file; loads with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: Any, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


# -- run directories ----------------------------------------------------------------------------------------------

def next_version(root: Union[str, Path]) -> int:
    """The N after the highest ``root/version_N`` or ``root/version_N-<label>`` (0 if there is none)."""
    taken = [int(m.group(1)) for p in Path(root).glob("version_*") if (m := re.fullmatch(r"version_(\d+)(-.*)?", p.name))]
    return max(taken, default=-1) + 1


def claim_version(root: Union[str, Path], label: str = "") -> str:
    """Create the next free ``root/version_N-<label>`` (``version_N`` without a label) with an atomic ``mkdir`` and
    return its name: runs started at the same moment get distinct directories (listing the folder, as Lightning's
    logger does, races)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    while True:
        name = f"version_{version}" + (f"-{label}" if label else "")
        try:
            (root / name).mkdir()
            return name
        except FileExistsError:
            version += 1


class RunInUse(CirclesError):
    """Another process is writing into the run directory this one would write into."""

    exit_code = 2


def try_lock(path: Union[str, Path]) -> Optional[IO[Any]]:
    """Take an exclusive ``flock`` on the file ``path`` (created if missing) and return the open file that holds it, or
    None if another process holds it. The lock ends when the file is closed or the process ends, however it ends."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def lock_run_dir(run_dir: Union[str, Path]) -> IO[Any]:
    """Hold ``run_dir/.lock`` while this process writes the run: a second process that would write into the same run
    (two resumes of one run, a run given the version of a running one) is refused instead of interleaving its curves
    and checkpoints with the first one's."""
    lock = try_lock(Path(run_dir) / ".lock")
    if lock is None:
        holder = (Path(run_dir) / ".lock").read_text().strip()
        raise RunInUse(f"{os.path.normpath(run_dir)} is being written by another process (pid {holder or '?'}); "
                       "one process writes a run at a time. Wait for it to end, or start a new run.")
    return lock


def event_file_writer(writer: Any) -> Any:
    """The event-file writer of a ``torch.utils.tensorboard.SummaryWriter``, reopened if the writer was closed.

    ``SummaryWriter`` has no public way to write one ``Summary`` holding several scalars, or an hparams session
    record: ``add_scalars`` makes a writer, and a run in TensorBoard, per tag (pytorch/pytorch#32651), and Lightning's
    own ``TensorBoardLogger.log_hyperparams`` calls this same private method (lightning/pytorch/loggers/tensorboard.py).
    It also reopens the event file after ``close()``, which matters because Lightning finalizes the loggers on
    SLURM's SIGUSR1 while training goes on until the job is requeued. ``tests/test_runs.py`` fails loudly if either
    library changes it.
    """
    return writer._get_file_writer()


def _hparam_value(value: Any) -> Union[str, bool]:
    """A hyperparameter as the HPARAMS table shows it best: numbers as written (``1000``, ``0.03``; TensorBoard would
    print ``1000.0`` and ``0.030000``), lists and None as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


STAGES = ("train", "val", "test")  # metric name prefixes that get a sub-run of their own in TensorBoard
CURVES, DETAILS = "curves", "details"  # the tag groups of the stage scalars in TensorBoard (see ``scalar_tag``)
# The HPARAMS table's columns: the settings people vary, as (hyperparameter, column title), in the order TensorBoard
# lists them; it ticks the first five (the rest can be ticked).
HPARAM_COLUMNS = (("activation", "activation"), ("dataset", "dataset"), ("hidden_sizes", "hidden layers"),
                  ("max_epochs", "epochs"), ("optimizer", "optimizer"), ("members", "seeds (members)"),
                  ("noise", "noise"), ("seed_everything", "seed"), ("batch_size", "points per step"))
METRIC_COLUMNS = (("val/acc_best", "best val acc"), ("test/acc", "test acc"), ("test/bayes_gap", "Bayes gap"))
CURVE_NAMES = ("loss", "acc")  # the pairs drawn train and val together; every other scalar goes to the details group


def scalar_tag(name: str) -> str:
    """The TensorBoard tag of the metric ``name`` (``stage/metric``) in its stage's sub-run: ``curves/loss`` and
    ``curves/acc`` (the group TensorBoard opens first, train and val on one chart), ``details/<metric>`` for the rest
    (``val/acc_best``, ``test/bayes_gap``, ...), a group that sorts after the decision-boundary pictures."""
    metric = name.split("/", 1)[1]
    return f"{CURVES if metric in CURVE_NAMES else DETAILS}/{metric}"


def _run_name(version: Union[int, str]) -> str:
    """The run directory's name for a logger version, as Lightning's ``log_dir`` spells it."""
    return version if isinstance(version, str) else f"version_{version}"


class TensorBoardRunLogger(TensorBoardLogger):
    """TensorBoard logger for ``<save_dir>/<name>/version_N`` run directories.

    - Claims ``version_N`` with an atomic ``mkdir`` (:func:`claim_version`) the first time the run's directory is
      asked for, so a run that fails before that leaves no empty directory.
    - Lays the scalars out as TensorBoard shows training best (the layout Keras uses): ``train/loss`` is written as
      ``curves/loss`` into the sub-run ``<run>/train``, ``val/loss`` as ``curves/loss`` into ``<run>/val``, and so on
      (:func:`scalar_tag`), so one chart holds the train and the val curve of a metric, and TensorBoard's landing page
      opens on the ``curves`` and ``decision_boundary`` groups. Images and the hyperparameters stay in the run.
    - Writes all scalars of a ``log_metrics`` call as one TensorBoard event per sub-run (Lightning writes one per
      scalar).
    - Records hyperparameters for TensorBoard's HPARAMS tab without declaring a fixed metric list, so every
      scalar the run logs (``val/acc_best``, ``test/acc``, ...) shows up there as a metric column.
    """

    def __init__(
        self,
        save_dir: Optional[str] = None,
        name: str = DEFAULT_RUNS,
        version: Optional[Union[int, str]] = None,
        label: str = "",
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            save_dir: Folder that holds the ``name`` folder of runs; ``null`` is the trainer's ``default_root_dir``
                (the working directory unless set).
            name: Folder of runs inside ``save_dir``; ``tensorboard --logdir <save_dir>/<name>`` shows them all.
            version: Run to write into (``3`` or ``"version_3-relu-10x10"``); ``null`` claims the next free one.
            label: What the run trains, appended to a claimed ``version_N`` so TensorBoard names the run by it
                (the command line fills it in from the config, e.g. ``circles-relu-10x10-sgd0.1-e1000``).
            default_hp_metric: Log Lightning's placeholder ``hp_metric``; not needed here.
        """
        super().__init__(save_dir if save_dir is not None else ".", name=name, version=version,
                         default_hp_metric=default_hp_metric, **kwargs)
        self._run_version = version
        self._label = label
        self._lock: Optional[IO[Any]] = None
        self._locked = False
        self._stage_writers: dict[str, Any] = {}
        self._hparams_session_written = True  # nothing to write until hyperparameters arrive

    @property
    def version(self) -> Union[int, str]:
        """The run's version: the one given, else (on rank zero, the first time it is asked for) the claimed one.
        Rank zero holds the run directory's lock (:func:`lock_run_dir`) from then until :meth:`finalize`."""
        if self._run_version is None:
            self._run_version = claim_version(self.root_dir, self._label) if rank_zero_only.rank == 0 else super().version
        if not self._locked and rank_zero_only.rank == 0:
            self._lock, self._locked = lock_run_dir(Path(self.root_dir) / _run_name(self._run_version)), True
        return self._run_version

    def _writer(self, stage: str) -> Any:
        """The run's own SummaryWriter (``stage`` empty), or the one of its ``stage`` sub-run, made on first use."""
        if not stage:
            return self.experiment
        if stage not in self._stage_writers:
            from torch.utils.tensorboard import SummaryWriter

            self._stage_writers[stage] = SummaryWriter(os.path.join(self.log_dir, stage), **self._kwargs)
        return self._stage_writers[stage]

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """The scalars of a call, one TensorBoard event per sub-run (see the class): ``stage/name`` goes to the
        ``stage`` sub-run as ``curves/name``; ``epoch`` (the step already is the epoch) is left out."""
        self._write_hparams_session()
        if self._prefix or not all(isinstance(v, (int, float, torch.Tensor)) for v in metrics.values()):
            return super().log_metrics(metrics, step)
        from tensorboard.compat.proto.summary_pb2 import Summary

        runs: dict[str, list[Any]] = {}
        for key, value in metrics.items():
            stage, _, name = key.partition("/")
            run = stage if stage in STAGES and name else ""
            if key != "epoch":
                runs.setdefault(run, []).append(Summary.Value(tag=scalar_tag(key) if run else key,
                                                              simple_value=float(value)))
        for run, values in runs.items():
            event_file_writer(self._writer(run)).add_summary(Summary(value=values), step)

    @rank_zero_only
    def save(self) -> None:
        super().save()
        for writer in self._stage_writers.values():
            writer.flush()

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Optional[dict[str, Any]] = None, step: Optional[int] = None) -> None:
        super().log_hyperparams(params, metrics, step)
        self._hparams_session_written = metrics is not None  # with metrics, Lightning wrote the session itself

    def _write_hparams_session(self) -> None:
        """The run's record for TensorBoard's HPARAMS tab, written once, with every hyperparameter collected, just
        before the first metrics (TensorBoard keeps a run's first record): the experiment's declared columns
        (``HPARAM_COLUMNS`` that the run has, and ``METRIC_COLUMNS`` from the stage sub-runs) and the run's values for
        them, so the table opens on the settings people vary and the metrics that say how a run did. TensorBoard
        orders the columns by their names: a column's name is its place and title (``0 activation``), and the table
        shows the title. (Every hyperparameter is in the run's ``hparams.yaml``.)"""
        if self._hparams_session_written or not self.hparams:
            return
        from tensorboard.plugins.hparams import summary_v2 as hp

        values = {key: _hparam_value(value) for key, value in dict(self.hparams).items() if not key.startswith("_")}
        if "optimizer" in values and "optimizer.lr" in values:
            values["optimizer"] = f"{values['optimizer']} lr {values['optimizer.lr']}"
        if values.get("batch_size") == "None":
            values["batch_size"] = "all (full batch)"
        names = {key: f"{i} {title}" for i, (key, title) in enumerate(HPARAM_COLUMNS) if key in values}
        columns = [hp.HParam(name, display_name=name.split(" ", 1)[1]) for name in names.values()]
        metrics = [hp.Metric(scalar_tag(name), group=name.split("/", 1)[0], display_name=label)
                   for name, label in METRIC_COLUMNS]
        writer = event_file_writer(self.experiment)
        writer.add_summary(hp.hparams_config_pb(hparams=columns, metrics=metrics))
        trial = _run_name(self.version)
        writer.add_summary(hp.hparams_pb({name: values[key] for key, name in names.items()}, trial_id=trial))
        self._hparams_session_written = True

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_hparams_session()
        super().finalize(status)
        for writer in self._stage_writers.values():
            writer.close()  # event_file_writer reopens it if training goes on (SLURM's SIGUSR1)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def data_difference(trained_on: Mapping[str, Any], data: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Say so when a checkpoint was trained on other data than a run will use (not an error: testing a model on
    noisier data is a fair question), so that ``test --ckpt_path best`` after a moons run is not taken for a result
    on moons."""
    keys = ("path", "test_path", "dataset", "classes", "noise", "factor", "n_samples", "val_fraction",
            "test_fraction", "seed")
    differ = [k for k in keys if data is not None and k in trained_on and data.get(k) != trained_on[k]]
    if not differ:
        return None
    return ("the checkpoint was trained on " + ", ".join(f"data.{k}={trained_on[k]!r}" for k in differ)
            + "; this run uses " + ", ".join(f"{data.get(k)!r}" for k in differ)
            + " (pass the run's config.yaml with --config to use its data).")


# -- the run's record ---------------------------------------------------------------------------------------------

CONFIG_KEY = "circles_config"  # the run's config.yaml, as text, inside every checkpoint
# What a resumed fit must train with as the run did: what the model is, what it learns from and how it steps.
TRAINED_WITH = ("seed_everything", "model", "data", "optimizer", "lr_scheduler")
FREE_ON_RESUME = ("data.predict_path", "data.test_samples")  # evaluation only


class ResumeError(CirclesError):
    """``fit --ckpt_path`` with settings that differ from the ones the checkpoint was trained with."""

    exit_code = 2


class RunConfig(Callback):
    """Writes the run's ``config.yaml``: the command's resolved config less what ties it to this run (``ckpt_path``,
    the logger's ``version`` and ``label``), so ``--config <run>/config.yaml`` repeats the run, in a new run directory.

    ``fit`` writes it when training starts, so a fit that ends before (a refused resume, a bad file) leaves the run's
    record as it was; a resumed fit rewrites it with what it changed (e.g. ``trainer.max_epochs``). Every checkpoint
    carries it, so a resume can tell what changed (:func:`resume_conflicts`). LightningCLI's ``save_config_callback``.
    """

    def __init__(self, parser: Any, config: Any, config_filename: str = "config.yaml",
                 default_root_dir: Optional[str] = None, **kwargs: Any) -> None:
        """
        Args:
            parser: The parser of the subcommand (LightningCLI passes it).
            config: The subcommand's config (LightningCLI passes it).
            config_filename: The file's name in the run directory.
            default_root_dir: ``trainer.default_root_dir`` as the user gave it (the CLI points it at the run
                directory when there is no logger).
            **kwargs: LightningCLI's other options for its own config saver (``overwrite``, ``multifile``): unused.
        """
        config = config.clone()
        if "ckpt_path" in config:
            config.ckpt_path = None
        config.trainer.default_root_dir = default_root_dir
        logger = config.trainer.get("logger")
        if hasattr(logger, "get") and logger.get("init_args") is not None:
            logger.init_args.version = None
            if "label" in logger.init_args:
                logger.init_args.label = ""  # a repeat names its run from its own settings
        self.text = parser.dump(config, skip_none=False)
        self.filename = config_filename

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            self._write(trainer)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        log_dir = trainer.log_dir  # collective under DDP: every rank asks
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            with atomic_file(Path(log_dir) / self.filename) as f:
                f.write(self.text)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.text


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()} or {prefix: {}}


def resume_conflicts(trained: Optional[str], now: Mapping[str, Any]) -> list[str]:
    """The settings in ``TRAINED_WITH`` that the config ``now`` sets otherwise than the checkpoint's record ``trained``
    (its ``config.yaml`` text), as ``key (trained: a, now: b)``. A resume that changed them would either ignore them
    silently (Lightning restores the model and the optimizer's state, learning rate included) or train something that
    is no longer the run on record, so the CLI refuses it."""
    if not trained:
        return []
    import yaml

    before = {k.rstrip("."): v for k, v in _flat(yaml.safe_load(trained)).items()}
    after = {k.rstrip("."): v for k, v in _flat(dict(now)).items()}
    keys = sorted(k for k in set(before) | set(after)
                  if k.split(".")[0] in TRAINED_WITH and k not in FREE_ON_RESUME and before.get(k) != after.get(k))
    other_class = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".class_path")}  # its settings differ anyway
    keys = [k for k in keys if not any(k.startswith(f"{c}.init_args.") for c in other_class)]
    return [f"{k} (trained: {before.get(k)!r}, now: {after.get(k)!r})" for k in keys]
