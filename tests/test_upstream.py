"""Every assumption circles makes about Lightning, torch, TensorBoard and jsonargparse beyond
their documented interfaces: private attributes it reads, hook orders it relies on, message texts
it filters or parses. An upgrade that breaks one fails here first, by name, instead of somewhere
inside a run."""

from __future__ import annotations

import inspect
import pickle
import re
import signal
import sys
import warnings

import lightning.pytorch as pl
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from circles import errors
from circles.data.batches import TensorBatches
from circles.runs.checkpoints import load_checkpoint_file
from circles.runs.logger import event_file_writer

from helpers import Payload


class Recorder(pl.LightningModule):
    """A module and callback pair that records the order of the hooks circles relies on."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)
        self.calls = calls

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.calls.append(f"module.on_train_batch_end {batch_idx}")

    def on_validation_epoch_end(self):
        self.calls.append("module.on_validation_epoch_end")

    def on_train_epoch_end(self):
        self.calls.append("module.on_train_epoch_end")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **kwargs})


def test_hooks_run_in_the_order_the_module_relies_on():
    """CirclesClassifier stops a diverged fit in ``on_train_batch_end`` after the epoch's last
    step, before the epoch's validation and so before ``ModelCheckpoint`` saves in
    ``on_validation_end``; it logs the validation accuracy in ``on_validation_epoch_end``, also
    before that save; the callbacks' ``on_train_epoch_end`` (the progress line, the frames) runs
    after validation, so both stages' values are in ``callback_metrics`` there."""
    calls: list[str] = []

    class Watch(Callback):
        def on_validation_end(self, trainer, pl_module):
            calls.append("callback.on_validation_end")

        def on_train_epoch_end(self, trainer, pl_module):
            calls.append("callback.on_train_epoch_end")

    batches = TensorBatches((torch.randn(8, 2),), batch_size=4)
    quiet_trainer(max_epochs=1, enable_checkpointing=False, callbacks=[Watch()]).fit(
        Recorder(calls), batches, batches
    )
    assert calls == [
        "module.on_train_batch_end 0",
        "module.on_train_batch_end 1",
        "module.on_validation_epoch_end",
        "callback.on_validation_end",
        "callback.on_train_epoch_end",
        "module.on_train_epoch_end",
    ]


def test_lightning_gives_every_logger_the_epoch_with_the_values_of_a_fit():
    """TensorBoardRunLogger draws the curves over epochs from the ``epoch`` that Lightning's
    logger connector adds to the metrics of every call during fit (its step counts optimizer
    steps, two per epoch here)."""
    from lightning.pytorch.loggers import Logger

    class Remember(Logger):
        name, version, calls = "remember", 0, []

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.calls.append((step, dict(metrics)))

    class LogsEpochValues(Recorder):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.log("train/x", 1.0, on_step=False, on_epoch=True)

        def validation_step(self, batch, batch_idx):
            self.log("val/x", 2.0)

    batches = TensorBatches((torch.randn(8, 2),), batch_size=4)
    logger = Remember()
    trainer = quiet_trainer(max_epochs=2, logger=logger, enable_checkpointing=False)
    trainer.fit(LogsEpochValues([]), batches, batches)
    assert [(m["epoch"], sorted(m)) for _, m in logger.calls] == [
        (0, ["epoch", "val/x"]),
        (0, ["epoch", "train/x"]),
        (1, ["epoch", "val/x"]),
        (1, ["epoch", "train/x"]),
    ]
    assert [step for step, _ in logger.calls] != [0, 0, 1, 1]  # Lightning's step is another count


def test_the_slurm_environment_is_where_lightnings_signal_connector_finds_the_requeue_signal(
    monkeypatch,
):
    """circles.callbacks.signals.requeue_signal reads
    ``trainer._accelerator_connector.cluster_environment``, as Lightning's signal connector does,
    and defers the handler Lightning installs for its ``requeue_signal``."""
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    source = inspect.getsource(_SignalConnector.register_signal_handlers)
    assert "self.trainer._accelerator_connector.cluster_environment" in source
    assert "environment.requeue_signal" in source and "environment.auto_requeue" in source
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_ID": "1",
    }.items():
        monkeypatch.setenv(key, value)
    environment = quiet_trainer()._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR1
    assert SLURMEnvironment(requeue_signal=signal.SIGUSR2).requeue_signal == signal.SIGUSR2


def test_the_event_file_writer_is_the_summary_writers_own_and_reopens_after_close(tmp_path):
    """The one private call into torch's SummaryWriter (circles.logger.event_file_writer), also
    what Lightning's own TensorBoardLogger.log_hyperparams calls."""
    from lightning.fabric.loggers.tensorboard import TensorBoardLogger as FabricTensorBoardLogger

    assert "_get_file_writer()" in inspect.getsource(FabricTensorBoardLogger.log_hyperparams)
    writer = SummaryWriter(str(tmp_path))
    first = event_file_writer(writer)
    assert first is writer.file_writer and hasattr(first, "add_summary")
    writer.close()
    assert writer.file_writer is None
    reopened = event_file_writer(writer)
    assert reopened is not None and hasattr(reopened, "add_summary")
    writer.close()


def test_the_tensorboard_logger_takes_the_options_the_run_logger_passes_on():
    parameters = inspect.signature(TensorBoardLogger.__init__).parameters
    assert {
        "save_dir",
        "name",
        "version",
        "log_graph",
        "default_hp_metric",
        "prefix",
        "sub_dir",
    } <= set(parameters)
    # to the SummaryWriter
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_save_config_callback_takes_what_the_run_config_passes():
    parameters = inspect.signature(SaveConfigCallback.__init__).parameters
    assert list(parameters)[:5] == ["self", "parser", "config", "config_filename", "overwrite"]


def test_model_checkpoint_has_its_own_on_train_end_that_run_checkpoint_replaces():
    from circles.callbacks.checkpoint import RunCheckpoint

    # Lightning 2.6 added it: it saves last.ckpt with save_last
    assert "on_train_end" in vars(ModelCheckpoint)
    assert vars(RunCheckpoint)["on_train_end"].__override__


def test_lightning_sets_the_trainer_attributes_circles_reads_at_run_time(tmp_path):
    """``trainer.datamodule``, ``trainer.callbacks`` and ``trainer.fast_dev_run`` are set by the
    Trainer without being declared on its class (circles.contracts reads the first two,
    RunCheckpoint the third); ``rank_zero_only.rank`` is set on the function by Lightning."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    trainer = quiet_trainer(default_root_dir=tmp_path)
    assert (
        isinstance(trainer.callbacks, list)
        and trainer.fast_dev_run is False
        and trainer.datamodule is None
    )
    assert rank_zero_only.rank == 0


def test_the_unpicklers_refusal_names_the_global():
    """circles.checkpoints finds the blocked global's name with ``GLOBAL <name>`` in torch's
    message."""
    with pytest.raises(pickle.UnpicklingError) as refused:
        torch.load(_pickled(Payload("never")), weights_only=True)
    assert re.search(r"\bGLOBAL ([\w.]+)", str(refused.value)).group(1) == "os.makedirs"


def _pickled(payload: object):
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": payload}, buffer)
    buffer.seek(0)
    return buffer


def test_the_checkpoint_loader_reports_the_refusal_in_torchs_words(tmp_path):
    path = tmp_path / "payload.ckpt"
    path.write_bytes(_pickled(Payload(tmp_path / "ran")).getvalue())
    with pytest.raises(Exception, match=r"holds a Python object \(os\.makedirs\)"):
        load_checkpoint_file(path)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "pattern, where",
    [
        (errors.NOT_FOR_THE_USER[0], "lightning.fabric.plugins.environments.slurm"),
        (errors.NOT_FOR_THE_USER[1], "torch.utils._pytree"),
        (errors.NOT_FOR_THE_USER[2], "lightning.pytorch.loops.prediction_loop"),
        (errors.NOT_FOR_THE_USER[3], "lightning.pytorch.cli"),
        (
            re.escape(errors.TIP),
            "lightning.pytorch.trainer.connectors.logger_connector.logger_connector",
        ),
        (
            re.escape(errors.NO_WEIGHTS_ONLY),
            "lightning.pytorch.trainer.connectors.checkpoint_connector",
        ),
    ],
)
def test_every_message_the_cli_hides_is_still_one_upstream_writes(pattern, where):
    """A filter whose message the library no longer writes hides nothing: remove it
    (circles.cli)."""
    __import__(where)
    source = (
        inspect.getsource(sys.modules[where]).replace('"\n', "").replace('f"', "").replace('"', "")
    )
    text = re.sub(r"\{[^}]*\}", "CirclesClassifier", " ".join(source.split()))
    assert re.search(pattern, text), f"{where} no longer writes {pattern!r}"


def test_lightning_ends_a_handled_ctrl_c_with_exit_status_1_from_the_keyboard_interrupt():
    """circles.cli tells a Ctrl-C that Lightning handled from other exits by the SystemExit's
    context."""
    from lightning.pytorch.trainer import call

    source = inspect.getsource(call._call_and_handle_interrupt)
    assert "KeyboardInterrupt" in source and "sys.exit(1)" in source


def test_jsonargparse_words_its_errors_as_the_cli_rewrites_them():
    """circles.cli.parse_error_text shortens these messages; if their words change, the errors
    come out long."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--number", type=int)
    parser.add_argument("--kind", type=__import__("typing").Literal["a", "b"])
    with pytest.raises(Exception) as wrong_type:
        parser.parse_args(["--number", "x"])
    with pytest.raises(Exception) as wrong_choice:
        parser.parse_args(["--kind", "c"])
    with pytest.raises(Exception) as unknown:
        parser.parse_args(["--nmuber", "1"])
    assert re.search(
        r'Parser key "number":.*Expected a <class \'int\'>\. Got value: x',
        " ".join(str(wrong_type.value).split()),
    )
    assert re.search(
        r"Expected a typing\.Literal\['a', 'b'\]\. Got value: c",
        " ".join(str(wrong_choice.value).split()),
    )
    assert str(unknown.value).startswith(
        "unrecognized arguments:"
    ) or "does not accept option" in str(unknown.value)


def test_the_trainer_state_compares_equal_to_the_stage_name():
    """circles.metrics asks ``trainer.state.fn == "fit"``: TrainerFn is a string enum."""
    from lightning.pytorch.trainer.states import TrainerFn

    assert TrainerFn.FITTING == "fit" and TrainerFn.TESTING != "fit"


def test_the_clis_warning_filters_end_with_the_command():
    """The CLI hides Lightning's messages while it runs (circles.errors.quiet_lightning),
    not in the rest of a process that imports circles or runs a command in-process."""
    import subprocess

    code = (
        "import re, warnings, circles.cli, circles.sweep.runner\n"
        "try:\n    circles.cli.cli_main(['fit', '--print_config'])\nexcept SystemExit:\n    pass\n"
        "ours = [f for f in warnings.filters if f[1] is not None and any(re.search(re.escape(p[:20]), "
        "f[1].pattern) for p in circles.errors.NOT_FOR_THE_USER)]\nassert not ours, ours"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        with errors.quiet_lightning():
            assert len(warnings.filters) > len(before)
        assert warnings.filters == before


def test_the_learning_rate_finder_smooths_as_the_report_corrects_it():
    """Lightning's finder divides its running average after n steps by ``1 - beta**(n + 1)`` (its
    step count is already n) with beta 0.98: :func:`circles.callbacks.lr_finder.finder_curve` undoes exactly
    that."""
    import inspect

    from lightning.pytorch.tuner.lr_finder import _LRCallback

    from circles.callbacks.lr_finder import FINDER_BETA

    source = inspect.getsource(_LRCallback.on_train_batch_end)
    assert "current_step = trainer.global_step" in source
    assert "self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current_loss" in source
    assert "smoothed_loss = self.avg_loss / (1 - self.beta ** (current_step + 1))" in source
    assert inspect.signature(_LRCallback).parameters["beta"].default == FINDER_BETA


def test_the_cli_hides_the_log_lines_it_names_and_no_others():
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    loggers = [logging.getLogger(name) for name in errors.LOGGED_NOT_FOR_THE_USER]
    keep, levels = Keep(), [log.level for log in loggers]
    for log in loggers:
        log.addHandler(keep)
        log.setLevel(logging.INFO)
    try:
        with errors.quiet_lightning():
            for log, message in zip(loggers, errors.LOGGED_NOT_FOR_THE_USER.values(), strict=True):
                log.info(message + " and the rest")
                log.info("something else")
        loggers[0].info(list(errors.LOGGED_NOT_FOR_THE_USER.values())[0])  # outside: shown again
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.removeHandler(keep)
            log.setLevel(level)
    assert seen == [
        "something else",
        "something else",
        list(errors.LOGGED_NOT_FOR_THE_USER.values())[0],
    ]


@pytest.mark.parametrize("name", ["bash", "interactive", "train"])
def test_the_allocation_checks_apply_where_lightning_detects_slurm(monkeypatch, name):
    """circles.slurm checks only the jobs whose ranks Lightning takes from SLURM: it tells them
    as Lightning does."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from circles.runs.slurm import in_slurm_job

    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", name)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert in_slurm_job([]) == SLURMEnvironment.detect() == (name == "train")


def test_lightnings_checkpoint_connector_resumes_a_requeued_job_from_its_highest_hpc_checkpoint(
    tmp_path,
):
    """circles.signals names the file a requeued job resumes from by ``_hpc_resume_path``, the
    property Lightning's restore reads when it finds SLURM (``ckpt_path="hpc"``)."""
    import lightning.pytorch as pl

    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    assert trainer._checkpoint_connector._hpc_resume_path is None
    for n in (1, 2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"")
    assert trainer._checkpoint_connector._hpc_resume_path == str(tmp_path / "hpc_ckpt_10.ckpt")
    source = inspect.getsource(type(trainer._checkpoint_connector)._parse_ckpt_path)
    assert "self._hpc_resume_path" in source


def test_lightnings_requeue_handler_logs_a_refused_requeue_where_the_run_listens():
    """GracefulStopCallback learns that ``scontrol requeue`` failed only from this log line
    (Lightning carries on without raising); tests/test_faults.py runs the handler for real."""
    import inspect

    from lightning.pytorch.trainer.connectors import signal_connector

    from circles.callbacks.signals import REQUEUE_LOG

    assert signal_connector.log.name == REQUEUE_LOG
    source = inspect.getsource(signal_connector._SignalConnector._slurm_sigusr_handler_fn)
    assert 'log.warning(f"Requeuing SLURM job {job_id} failed with error code {result}")' in source
