"""Performance of circles as ratios against baselines written in this file, measured side by side in
one invocation.

    python benchmarks/bench.py            # everything this machine can run (GPU rows need CUDA)
    python benchmarks/bench.py --quick    # fewer epochs and repeats, for a smoke run
    python benchmarks/bench.py --only seed,startup

Sections: ``seed`` (per-epoch cost of configs/relu.yaml as shipped vs the chapter's plain loop
and a naive Lightning port; the boundary callback's share), ``epoch`` (the whole-process cost of
an epoch, against the chapter's script and, with ``--base DIR``, another checkout; what
``self.log`` costs an epoch), ``startup`` (process start to exit vs a plain script), ``scale``
(samples/s at N=1M, batch 65536 vs a plain loop slicing a permutation, and vs
DataLoader(TensorDataset)), ``compile`` (torch.compile on vs off), ``members`` (K seeds in one
run vs K=1, vs separate runs, vs scikit-learn; peak memory), ``gpu`` (the same on a CUDA device,
members at GPU scale), ``ddp`` (configs/trainer/ddp.yaml on the GPUs there are, then ``test``);
on request ``hooks`` (where a fit's time goes, hook by hook, by Lightning's ``SimpleProfiler``),
``threads`` (a training step on one torch thread vs torch's count, idle and beside busy cores:
where :data:`circles.callbacks.threads.SHARED_WORK` comes from) and ``busy`` (README's commands
idle and beside busy cores).
Every figure is the best of R repeats, baselines and circles interleaved, so a noisy machine
slows both sides alike."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
RELU = str(REPO / "configs" / "relu.yaml")
GPU = str(REPO / "configs" / "trainer" / "gpu.yaml")
DDP = str(REPO / "configs" / "trainer" / "ddp.yaml")
ROWS: list[tuple[str, str, str, str, str]] = []


def row(section: str, what: str, ours: float, baseline: float, unit: str) -> None:
    """One table row; the ratio is always circles / baseline (for times lower is better, for
    rates higher)."""
    ROWS.append(
        (section, what, f"{ours:.4g} {unit}", f"{baseline:.4g} {unit}", f"{ours / baseline:.2f}x")
    )
    print(
        f"  {what}: circles {ours:.4g} {unit}, baseline {baseline:.4g} {unit}, circles/baseline "
        f"{ours / baseline:.2f}x",
        flush=True,
    )


def quiet():
    """Silence Lightning's info lines and the chapter's progress lines while timing."""
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return contextlib.redirect_stdout(io.StringIO())


# -- baselines -------------------------------------------------------------------------------------


def chapter_model(width: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
    )


def plain_loop(x_train, y_train, x_val, y_val, epochs: int, val_every: int = 1) -> float:
    """The chapter's loop: full batch, train step, then eval on the validation set, with .item()
    accuracies."""
    torch.manual_seed(42)
    model = chapter_model().to(x_train.device)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def accuracy(pred, true):
        return torch.eq(true, pred).sum().item() / len(pred) * 100

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        logits = model(x_train).squeeze()
        loss = loss_fn(logits, y_train)
        accuracy(torch.round(torch.sigmoid(logits)), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % val_every == 0:
            model.eval()
            with torch.inference_mode():
                val_logits = model(x_val).squeeze()
                loss_fn(val_logits, y_val).item()
                accuracy(torch.round(torch.sigmoid(val_logits)), y_val)
    return time.perf_counter() - start


def plain_minibatch(
    x_train, y_train, x_val, y_val, batch: int, epochs: int, width: int = 10
) -> list[float]:
    """Tensors on the device, batches sliced from a fresh random permutation each epoch, training
    accuracy counted on the device, eval in batches; returns each epoch's seconds."""
    torch.manual_seed(0)
    model = chapter_model(width).to(x_train.device)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sync = torch.cuda.synchronize if x_train.is_cuda else (lambda: None)
    times = []
    for _ in range(epochs):
        sync()
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), device=x_train.device)
        train_correct = torch.zeros((), device=x_train.device)
        for i in range(0, len(x_train), batch):
            index = order[i : i + batch]
            logits = model(x_train[index]).squeeze(-1)
            loss = loss_fn(logits, y_train[index])
            train_correct += ((logits.detach() > 0).float() == y_train[index]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), device=x_val.device)
        with torch.inference_mode():
            for i in range(0, len(x_val), batch):
                correct += (
                    (model(x_val[i : i + batch]).squeeze(-1) > 0).float() == y_val[i : i + batch]
                ).sum()
        correct.item(), train_correct.item()
        times.append(time.perf_counter() - start)
    return times


def chapter_module(log_every_step: bool):
    """The chapter's model as a LightningModule: a bare port, or one that calls ``self.log`` on
    every step."""
    import lightning.pytorch as pl

    class ChapterPort(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(42)
            self.model = chapter_model()
            self.loss_fn = nn.BCEWithLogitsLoss()

        def _loss(self, batch, stage):
            x, y = batch
            logits = self.model(x).squeeze(-1)
            loss = self.loss_fn(logits, y)
            if log_every_step:
                accuracy = (torch.round(torch.sigmoid(logits)) == y).float().mean()
                self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True)
                self.log(f"{stage}_acc", accuracy, on_step=stage == "train", on_epoch=True)
            return loss

        def training_step(self, batch, batch_idx):
            return self._loss(batch, "train")

        def validation_step(self, batch, batch_idx):
            self._loss(batch, "val")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return ChapterPort()


def naive_lightning_fit(
    x_train, y_train, x_val, y_val, epochs: int, batch_size: int, root: str
) -> float:
    """A straightforward Lightning port: DataLoader over TensorDataset, self.log per step, val
    every epoch, default TensorBoard logger and checkpointing."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=batch_size)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
    )
    with quiet():
        start = time.perf_counter()
        trainer.fit(chapter_module(log_every_step=True), train, val)
        return time.perf_counter() - start


def _docs_classifier():
    """The chapter's model written the way Lightning's docs and lightning-hydra-template write a
    classifier: torchmetrics per stage (``BinaryAccuracy``, ``MeanMetric`` for the losses,
    ``MaxMetric`` for the best val acc) and ``self.log`` of the five values circles logs; with
    ``least``, the same metric objects and one ``log_dict`` of the five per epoch: the least a
    module with circles' contract (``trainer.validate/test`` return the values) costs."""
    import lightning.pytorch as pl
    from torchmetrics import MaxMetric, MeanMetric
    from torchmetrics.classification import BinaryAccuracy

    class DocsClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(42)
            self.net = chapter_model()
            self.train_acc, self.val_acc = BinaryAccuracy(), BinaryAccuracy()
            self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
            self.val_acc_best = MaxMetric()

        def _step(self, batch, stage):
            logits = self.net(batch[0]).squeeze(-1)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch[1])
            getattr(self, f"{stage}_acc").update(logits, batch[1])
            getattr(self, f"{stage}_loss").update(loss.detach())
            return loss

        def training_step(self, batch, batch_idx):
            loss = self._step(batch, "train")
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self._step(batch, "val")
            self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
            self.log("val/acc", self.val_acc, on_step=False, on_epoch=True)

        def on_validation_epoch_end(self):
            self.val_acc_best.update(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return DocsClassifier


def docs_module(least: bool):
    """:func:`_docs_classifier`'s module; with ``least``, its metrics logged at their least."""
    docs_classifier = _docs_classifier()

    class LeastClassifier(docs_classifier):
        def training_step(self, batch, batch_idx):
            return self._step(batch, "train")

        def validation_step(self, batch, batch_idx):
            self._step(batch, "val")

        def on_validation_epoch_end(self):
            values = {
                f"{s}/{k}": getattr(self, f"{s}_{k}").compute()
                for s in ("train", "val")
                for k in ("loss", "acc")
            }
            self.val_acc_best.update(values["val/acc"])
            self.log_dict({**values, "val/acc_best": self.val_acc_best.compute()})
            for metric in (self.train_loss, self.train_acc, self.val_loss, self.val_acc):
                metric.reset()

    return LeastClassifier() if least else docs_classifier()


def docs_fit(x_train, y_train, x_val, y_val, epochs: int, root: str) -> float:
    """Seconds of the docs-style module's fit (:func:`docs_module`) as Lightning's docs run one:
    a TensorBoardLogger, ModelCheckpoint on val/acc, the split as one batch."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from circles.data.batches import TensorBatches

    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root),
        callbacks=[ModelCheckpoint(monitor="val/acc", mode="max")],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        accelerator="cpu",
    )
    with quiet():
        start = time.perf_counter()
        module = docs_module(least=False)
        trainer.fit(module, TensorBatches((x_train, y_train)), TensorBatches((x_val, y_val)))
        return time.perf_counter() - start


def lightning_floor_fit(x_train, y_train, x_val, y_val, epochs: int) -> float:
    """Lightning's own fixed cost: the bare port on the same one-slice batches, validation every
    epoch, and nothing else (no logging, metrics, checkpoints, callbacks or progress bar)."""
    return bare_fit(chapter_module(log_every_step=False), x_train, y_train, x_val, y_val, epochs)


def bare_fit(module, x_train, y_train, x_val, y_val, epochs: int) -> float:
    """Seconds of ``module``'s fit on one-slice batches, validation every epoch, with nothing of
    Lightning's own switched on (no logger, checkpoints, progress bar or summary)."""
    import lightning.pytorch as pl

    from circles.data.batches import TensorBatches

    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    with quiet():
        start = time.perf_counter()
        trainer.fit(module, TensorBatches((x_train, y_train)), TensorBatches((x_val, y_val)))
        return time.perf_counter() - start


# -- circles ---------------------------------------------------------------------------------------


class EpochClock:
    """Seconds of each training epoch (its validation included), from epoch start to epoch end."""

    def __init__(self) -> None:
        import lightning.pytorch as pl

        clock = self

        class _Clock(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                clock._sync(pl_module)
                clock._start = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                clock._sync(pl_module)
                clock.times.append(time.perf_counter() - clock._start)

        self.times: list[float] = []
        self.callback = _Clock()

    @staticmethod
    def _sync(module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()


def circles_fit(
    args: list[str],
    drop_boundary: bool = False,
    pregenerate: bool = False,
    clock: EpochClock | None = None,
    drop: tuple[str, ...] = (),
    profiler: Any = None,
) -> tuple[float, object]:
    """``fit`` through the project's CLI code path (config, callbacks, logger, checkpoints);
    times trainer.fit. With ``pregenerate`` the data is drawn before the clock starts (setup()
    then only moves it to the device); ``drop`` names callbacks taken out (``drop_boundary``: the
    decision-boundary pictures); ``profiler`` is the trainer's (Lightning's ``SimpleProfiler``,
    say)."""
    from circles.cli import run_cli

    drop = (*drop, "DecisionBoundaryCallback") if drop_boundary else drop
    with quiet():
        cli = run_cli(args=args, run=False)
        if pregenerate:
            cli.datamodule.setup("fit")
        cli.trainer.callbacks[:] = [
            c for c in cli.trainer.callbacks if type(c).__name__ not in drop
        ]
        if clock is not None:
            cli.trainer.callbacks.insert(0, clock.callback)
        if profiler is not None:
            cli.trainer.profiler = profiler
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return time.perf_counter() - start, cli


def seed_data(device: str = "cpu"):
    from circles.data.module import CirclesDataModule

    data = CirclesDataModule()
    data.setup("fit")
    return [t.to(device) for t in (data.train_x, data.train_y, data.val_x, data.val_y)]


# -- sections --------------------------------------------------------------------------------------


def bench_seed(repeats: int, epochs: int) -> None:
    print(
        f"seed scale: configs/relu.yaml, {epochs} full-batch epochs, val every epoch, "
        f"{torch.get_num_threads()} "
        "torch thread(s)",
        flush=True,
    )
    data = seed_data()
    args = ["--config", RELU, f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu"]
    # warm-up: first-call costs
    circles_fit([*args[:-2], "--trainer.max_epochs=5", "--trainer.accelerator=cpu"])
    plain, ours, bare, naive, floor, unweighed = [], [], [], [], [], []
    docs, least = [], []
    for r in range(repeats):
        plain.append(plain_loop(*data, epochs=epochs))
        ours.append(circles_fit(args)[0])
        with tempfile.TemporaryDirectory() as root:
            docs.append(docs_fit(*data, epochs=epochs, root=root))
        least.append(bare_fit(docs_module(least=True), *data, epochs=epochs))
        bare.append(circles_fit(args, drop_boundary=True)[0])
        unweighed.append(circles_fit(args, drop=("WeightsCallback",))[0])
        floor.append(lightning_floor_fit(*data, epochs=epochs))
        if r == 0:
            with tempfile.TemporaryDirectory() as root:
                naive.append(naive_lightning_fit(*data, epochs=epochs, batch_size=800, root=root))
    p = min(plain)
    row(
        "seed",
        "fit relu.yaml as shipped, per epoch",
        min(ours) / epochs * 1e3,
        p / epochs * 1e3,
        "ms",
    )
    row(
        "seed", "naive Lightning port, per epoch", min(naive) / epochs * 1e3, p / epochs * 1e3, "ms"
    )
    row(
        "seed",
        "Lightning's floor (bare module, val every epoch), per epoch",
        min(floor) / epochs * 1e3,
        p / epochs * 1e3,
        "ms",
    )
    row("seed", "fit relu.yaml as shipped vs Lightning's floor", min(ours), min(floor), "s")
    row(
        "seed",
        "fit relu.yaml as shipped vs Lightning as its docs write it (torchmetrics, self.log, "
        "TensorBoardLogger, ModelCheckpoint on val/acc), per epoch",
        min(ours) / epochs * 1e3,
        min(docs) / epochs * 1e3,
        "ms",
    )
    row(
        "seed",
        "the contract at its least (the same metrics, one log_dict an epoch, no logger or "
        "checkpoint) vs Lightning's floor, per epoch",
        min(least) / epochs * 1e3,
        min(floor) / epochs * 1e3,
        "ms",
    )
    print(
        f"  circles' own share of an epoch (as shipped minus the contract at its least): "
        f"{(min(ours) - min(least)) / epochs * 1e3:.3f} ms",
        flush=True,
    )
    row("seed", "boundary callback's share of fit", min(ours), min(bare), "s")
    row(
        "seed",
        "weights callback's share of fit (dead units every 10 epochs, histograms every 50)",
        min(ours),
        min(unweighed),
        "s",
    )


def bench_hooks(epochs: int) -> None:
    """Where a fit of relu.yaml goes, hook by hook, as Lightning's ``SimpleProfiler`` times it
    (the loop's own entries, the module's hooks, each callback's): per epoch over ``epochs``
    epochs, and the hooks that run once (the end-of-fit pictures) as milliseconds a fit."""
    from lightning.pytorch.profilers import SimpleProfiler

    args = ["--config", RELU, f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu"]
    circles_fit([*args, "--trainer.max_epochs=5"])  # warm-up
    seconds, _ = circles_fit(args, profiler=(profiler := SimpleProfiler()))
    print(f"hooks: relu.yaml, {epochs} epochs, {seconds / epochs * 1e3:.3f} ms an epoch in all")
    spent = sorted(
        ((sum(times), len(times), name) for name, times in profiler.recorded_durations.items()),
        reverse=True,
    )
    for total, calls, name in spent[:24]:
        name = re.sub(r"\{.*\}", "", name)  # ModelCheckpoint's state key
        per = f"{total * 1e3:.1f} ms a fit" if calls == 1 else f"{total / epochs * 1e3:.3f} ms"
        print(f"  {per:>14}  {calls:5d} calls  {name}", flush=True)


# The chapter's script: ``python plain.py EPOCHS`` trains the ReLU model, printing its line every 10
# epochs.
PLAIN_SCRIPT = textwrap.dedent("""
        import sys
        import torch
        from torch import nn
        from sklearn.datasets import make_circles
        from sklearn.model_selection import train_test_split
        X, y = make_circles(1000, noise=0.03, random_state=42)
        X, y = torch.from_numpy(X).float(), torch.from_numpy(y).float()
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
        model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(),
                              nn.Linear(10, 1))
        loss_fn = nn.BCEWithLogitsLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        acc = lambda p, t: torch.eq(t, p).sum().item() / len(p) * 100
        for epoch in range(int(sys.argv[1])):
            model.train()
            logit = model(X_train).squeeze()
            loss = loss_fn(logit, y_train)
            train_acc = acc(torch.round(torch.sigmoid(logit)), y_train)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            model.eval()
            with torch.inference_mode():
                test_logit = model(X_test).squeeze()
                test_loss = loss_fn(test_logit, y_test)
                test_acc = acc(torch.round(torch.sigmoid(test_logit)), y_test)
            if epoch % 10 == 0:
                print(f"Epoch: {epoch} | Train loss: {loss:.5f} | "
                      f"Train accuracy: {train_acc:.2f}% | "
                      f"Test loss: {test_loss:.5f} | Test accuracy: {test_acc:.2f}%")
""")


def _process_seconds(argv: list[str], cwd: str, tree: Path) -> float:
    """Wall seconds of a fresh process running ``argv`` with ``tree``'s circles first on the
    import path."""
    start = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(tree)}
    )
    return time.perf_counter() - start


def bench_epoch(repeats: int, base: Path | None, epochs: int = 1000) -> None:
    """The whole-process cost of an epoch of configs/relu.yaml: a fit of 10 + ``epochs`` epochs
    minus a fit of 10, each a fresh process (so start-up, data and the end of fit cancel), for
    this tree, for ``base`` (another checkout of circles, e.g. ``git worktree add /tmp/base
    <commit>``) and for the chapter's plain script, interleaved. Each of the two fits is taken at
    its fastest over the repeats (a loaded machine only ever adds time)."""
    trees = {"circles": REPO, **({"base": base} if base is not None else {})}
    print(
        f"epoch: whole-process cost of an epoch of relu.yaml (fit {10 + epochs} epochs - fit 10, "
        "fresh processes), "
        f"{', '.join(f'{name} {tree}' for name, tree in trees.items())}",
        flush=True,
    )
    commands = {
        name: [
            sys.executable,
            str(tree / "train.py"),
            "fit",
            "--config",
            str(tree / "configs" / "relu.yaml"),
            "--trainer.max_epochs={}",
        ]
        for name, tree in trees.items()
    }
    commands["plain"] = [sys.executable, "plain.py", "{}"]
    seconds: dict[tuple[str, int], list[float]] = {
        (name, n): [] for name in commands for n in (10, 10 + epochs)
    }
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "plain.py").write_text(PLAIN_SCRIPT)
        for _ in range(repeats):
            for (name, n), times in seconds.items():
                argv = [arg.format(n) for arg in commands[name]]
                times.append(_process_seconds(argv, tmp, trees.get(name, REPO)))
    best = {
        name: (min(seconds[name, 10 + epochs]) - min(seconds[name, 10])) / epochs * 1e3
        for name in commands
    }
    row(
        "epoch",
        "whole-process cost of an epoch, relu.yaml vs the chapter's plain script",
        best["circles"],
        best["plain"],
        "ms",
    )
    if base is not None:
        row(
            "epoch",
            f"whole-process cost of an epoch, relu.yaml vs the same at {base}",
            best["circles"],
            best["base"],
            "ms",
        )
    bench_self_log(repeats)


def _logs_module():
    """:func:`bench_self_log`'s bare module: it logs ``values`` values an epoch (train ones after
    the last step, val ones in the validation step), or, with ``one_call``, all of them in one
    ``log_dict`` in the validation step."""
    import lightning.pytorch as pl

    class Logs(pl.LightningModule):
        def __init__(self, values: int, one_call: bool = False) -> None:
            super().__init__()
            self.net = chapter_model()
            self.values, self.one_call = values, one_call
            self.train_values: dict[str, torch.Tensor] = {}

        def training_step(self, batch, batch_idx):
            return nn.functional.binary_cross_entropy_with_logits(
                self.net(batch[0])[:, 0], batch[1]
            )

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self.values:
                self.train_values = {f"train/{k}": outputs["loss"].detach() for k in range(2)}
                if not self.one_call:
                    self.log_dict(self.train_values, on_step=False, on_epoch=True, batch_size=1)

        def validation_step(self, batch, batch_idx):
            if self.values:
                loss = nn.functional.binary_cross_entropy_with_logits(
                    self.net(batch[0])[:, 0], batch[1]
                )
                logged = {f"val/{k}": loss for k in range(self.values - 2)}
                if self.one_call:
                    logged.update(self.train_values)
                self.log_dict(logged, batch_size=1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Logs


def bench_self_log(repeats: int, epochs: int = 300) -> None:
    """What ``self.log`` costs an epoch: a bare module on the chapter's data (full batch,
    validation every epoch) that logs five values once per epoch, as CirclesClassifier does
    (train loss and accuracy after the last step; val loss, accuracy and best accuracy at the
    validation's end), against the same module logging nothing; and the five in one ``log_dict``
    at the validation's end instead of two calls."""
    x_train, y_train, x_val, y_val = seed_data()
    Logs = _logs_module()

    def fit(values: int, one_call: bool = False) -> float:
        return bare_fit(Logs(values, one_call), x_train, y_train, x_val, y_val, epochs)

    fit(5)
    logged, once, bare = zip(
        *((fit(5), fit(5, one_call=True), fit(0)) for _ in range(repeats)), strict=True
    )
    row(
        "epoch",
        "an epoch of a bare module logging 5 values once per epoch vs logging none",
        min(logged) / epochs * 1e3,
        min(bare) / epochs * 1e3,
        "ms",
    )
    row(
        "epoch",
        "the same 5 values in one log_dict at the validation's end vs in two calls",
        min(once) / epochs * 1e3,
        min(logged) / epochs * 1e3,
        "ms",
    )


def bench_startup(repeats: int, python: str = sys.executable) -> None:
    print(
        "start-up: process start to exit, `python train.py fit --config configs/relu.yaml` vs a "
        "plain script",
        flush=True,
    )
    commands = {
        "plain": [python, "plain.py", "1000"],
        "ours": [python, str(REPO / "train.py"), "fit", "--config", RELU],
        "plain imports": [python, "-c", "import torch, sklearn.datasets, sklearn.model_selection"],
        "our imports": [python, "-c", "import circles.cli"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "plain.py").write_text(PLAIN_SCRIPT)
        for _ in range(repeats):
            for name, cmd in commands.items():
                start = time.perf_counter()
                subprocess.run(
                    cmd,
                    cwd=tmp,
                    check=True,
                    capture_output=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    row(
        "startup",
        "python train.py fit --config configs/relu.yaml",
        median["ours"],
        median["plain"],
        "s",
    )
    row(
        "startup",
        "`import circles.cli` vs the plain script's imports (torch, scikit-learn)",
        median["our imports"],
        median["plain imports"],
        "s",
    )


MAIN_JOB = ["{repo}/train.py", "fit", "--config", "{repo}/configs/relu.yaml"]
# README's commands: what each is called, the environment it adds, its arguments
README_COMMANDS: dict[str, tuple[dict[str, str], list[str]]] = {
    "--help": ({}, ["{repo}/train.py", "fit", "--help"]),
    "improved.yaml": ({}, ["{repo}/train.py", "fit", "--config", "{repo}/configs/improved.yaml"]),
    "the main job (relu.yaml)": ({}, MAIN_JOB),
    # torch's own count for the chapter's model, as every fit was before circles chose the threads
    "the main job, --threads.count 2": ({}, [*MAIN_JOB, "--threads.count", "2"]),
    "--model.members 64": ({}, [*MAIN_JOB, "--model.members", "64"]),
    "width_depth sweep": (
        {},
        [
            "-m",
            "circles.sweep",
            "--config",
            "{repo}/configs/sweeps/width_depth.yaml",
            "--jobs",
            "2",
        ],
    ),
}


def bench_busy(busy: int, sweeps: bool) -> None:
    """README's commands from start to exit on this machine as it is and with ``busy`` other
    processes keeping a core each busy (a shared machine): the figures behind README's time
    ranges. The sweep (about 3 minutes idle) only with ``sweeps``."""
    print(f"busy: README's commands, idle and beside {busy} processes spinning a core each")
    for what, (added, command) in README_COMMANDS.items():
        if "sweep" in what and not sweeps:
            continue
        seconds = []
        for load in (0, busy):
            spinning = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)
            ]
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    argv = [sys.executable, *(a.format(repo=REPO) for a in command)]
                    env = {**os.environ, "PYTHONPATH": str(REPO), **added}
                    start = time.perf_counter()
                    subprocess.run(argv, cwd=tmp, check=True, capture_output=True, env=env)
                    seconds.append(time.perf_counter() - start)
            finally:
                for process in spinning:
                    process.kill()
                    process.wait()
        row("busy", f"{what}, {busy} busy cores vs idle", seconds[1], seconds[0], "s")


def bench_threads(busy: int, repeats: int, steps: int = 60) -> None:
    """Milliseconds of a training step (forward, backward, SGD) of the stacked network on 800
    points on one torch thread against torch's count, for steps of 0.1 M to 100 M multiply-adds
    (the batch's points times the parameters), idle and beside ``busy`` processes spinning a core
    each: where a second thread starts to gain (``SHARED_WORK``), and what it costs on a busy
    machine."""
    from circles.model import CirclesClassifier
    from circles.model.metrics import member_losses

    count = torch.get_num_threads()
    print(f"threads: a training step on 1 torch thread vs {count}, idle and beside {busy} busy")
    shapes = [(1, [10, 10]), (1, [16, 16]), (16, [4] * 8), (16, [8] * 4), (64, [10, 10])]
    shapes += [(1, [256, 256]), (1024, [10, 10])]
    for load in (0, busy):
        spinning = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)
        ]
        try:
            for members, hidden in shapes:
                model = CirclesClassifier(hidden_sizes=hidden, members=members)
                x, y = torch.randn(800, 2), (torch.rand(800) > 0.5).float()
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

                best = {1: float("inf"), count: float("inf")}
                for _ in range(repeats):
                    for threads in best:
                        torch.set_num_threads(threads)
                        for i in range(5 + steps):
                            if i == 5:
                                start = time.perf_counter()
                            optimizer.zero_grad()
                            member_losses(model.member_logits(x), y).sum().backward()
                            optimizer.step()
                        best[threads] = min(best[threads], (time.perf_counter() - start) / steps)
                torch.set_num_threads(count)
                work = 800 * sum(p.numel() for p in model.parameters())
                what = f"K={members} {'x'.join(map(str, hidden))}, {work / 1e6:.2f} M, {load} busy"
                ms = [best[1] * 1e3, best[count] * 1e3]
                row("threads", f"{what}: 1 thread vs {count}", *ms, "ms")
        finally:
            for process in spinning:
                process.kill()
                process.wait()


def bench_scale(
    repeats: int,
    n_train: int,
    batch: int,
    epochs: int,
    device: str = "cpu",
    section: str = "",
    with_loader: bool = True,
) -> float:
    """Samples/s of circles' training epochs at scale against the plain minibatch loop on
    ``device`` (and, on the CPU ``with_loader``, against a DataLoader only fetching the batches);
    returns circles' rate."""
    from circles.data.module import CirclesDataModule

    section = section or ("gpu" if device != "cpu" else "scale")
    print(
        f"{section}: N={n_train:,} training points, batch {batch:,}, median of epochs 2..{epochs}, "
        f"on {device}",
        flush=True,
    )
    n_samples = int(n_train / 0.8)
    start = time.perf_counter()
    data = CirclesDataModule(n_samples=n_samples, batch_size=batch)
    data.setup("fit")
    generation = time.perf_counter() - start
    print(
        f"  data generation + split: {generation / n_samples * 1e6:.3f} s per 1M points", flush=True
    )
    tensors = [t.to(device) for t in (data.train_x, data.train_y, data.val_x, data.val_y)]
    args = [
        "--config",
        RELU,
        f"--data.n_samples={n_samples}",
        f"--data.batch_size={batch}",
        f"--trainer.max_epochs={epochs}",
        "--chapter_log.every_n_epochs=null",
        "--data.test_samples=10",
        f"--trainer.accelerator={'gpu' if device != 'cpu' else 'cpu'}",
        "--trainer.devices=1",
        "--trainer.num_sanity_val_steps=0",
    ]
    plain, ours = [], []
    for _ in range(repeats):
        plain += plain_minibatch(*tensors, batch=batch, epochs=epochs)[1:]
        clock = EpochClock()
        circles_fit(args, pregenerate=True, clock=clock)
        ours += clock.times[1:]
    ours_rate = n_train / statistics.median(ours)
    plain_rate = n_train / statistics.median(plain)
    row(
        section,
        f"samples/s in a training epoch (its validation included), N={n_train:,} batch {batch:,}",
        ours_rate / 1e6,
        plain_rate / 1e6,
        "M/s",
    )
    if device == "cpu" and with_loader:
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(tensors[0], tensors[1]), batch_size=batch, shuffle=True)
        start = time.perf_counter()
        for _ in loader:
            pass
        loader_rate = n_train / (time.perf_counter() - start)
        row(
            section,
            "circles' whole epoch vs a DataLoader(TensorDataset) only fetching batches",
            ours_rate / 1e6,
            loader_rate / 1e6,
            "M/s",
        )
    return ours_rate


def _peak_rss_mb(members: int, epochs: int) -> float:
    """Peak resident memory of a fresh process that fits relu.yaml with ``members`` members (MB)."""
    code = textwrap.dedent(f"""
        import resource, sys
        sys.argv = ["train.py"]
        from circles.cli import cli_main
        try:
            cli_main(["fit", "--config", {RELU!r}, "--trainer.max_epochs={epochs}",
                      "--model.members={members}", "--chapter_log.every_n_epochs=null",
                      "--trainer.enable_model_summary=false"])
        finally:
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    return float(out.stdout.strip().splitlines()[-1])


def _sklearn_mlp_fit(epochs: int, seed: int, data) -> float:
    """scikit-learn's MLPClassifier of the chapter's shape and training (10x10 ReLU, full-batch
    SGD lr 0.1, no momentum, no weight decay, no early stop), ``epochs`` iterations; returns the
    seconds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = data[0].numpy(), data[1].numpy()
    model = MLPClassifier(
        hidden_layer_sizes=(10, 10),
        activation="relu",
        solver="sgd",
        learning_rate_init=0.1,
        momentum=0.0,
        alpha=0.0,
        batch_size=len(x),
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        shuffle=False,
        random_state=seed,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return time.perf_counter() - start


def _stacked_vs_vmap(members: int, steps: int) -> tuple[float, float]:
    """Seconds for ``steps`` forward+backward passes of K stacked chapter networks: circles'
    StackedMLP (points-last products) against torch.func's stack_module_state +
    vmap(functional_call), the model-ensembling tutorial's way."""
    import copy

    from torch.func import functional_call, stack_module_state

    from circles.model.networks import StackedMLP, build_mlp

    nets = [build_mlp(2, [10, 10], "relu") for _ in range(members)]
    stacked = StackedMLP(nets)
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    x, y = torch.randn(800, 2), (torch.rand(800) > 0.5).float()

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    def run(forward):
        start = time.perf_counter()
        for _ in range(steps):
            logits = forward().squeeze(-1)
            nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits)).backward()
        return time.perf_counter() - start

    ours = run(lambda: stacked(x))
    theirs = run(lambda: torch.vmap(one, in_dims=(0, 0, None))(params, buffers, x))
    return ours, theirs


def bench_members(repeats: int, epochs: int) -> None:
    print(
        f"members: configs/relu.yaml for {epochs} epochs with K members vs K=1; seeds per second",
        flush=True,
    )
    args = ["--config", RELU, f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu"]
    circles_fit([*args, "--model.members=4", "--trainer.max_epochs=5"])  # warm-up
    times: dict[int, list[float]] = {k: [] for k in (1, 16, 64, 256)}
    for _ in range(repeats):
        for k in times:
            times[k].append(circles_fit([*args, f"--model.members={k}"])[0])
    one = min(times[1]) / epochs * 1e3
    for k in (16, 64, 256):
        row(
            "members",
            f"fit relu.yaml, K={k} members vs K=1, per epoch",
            min(times[k]) / epochs * 1e3,
            one,
            "ms",
        )
    separate = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):  # whole processes, as a loop over seeds would run them
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "train.py"),
                    "fit",
                    "--config",
                    RELU,
                    f"--trainer.max_epochs={epochs}",
                ],
                cwd=tmp,
                check=True,
                capture_output=True,
            )
            separate.append(time.perf_counter() - start)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "train.py"),
                "fit",
                "--config",
                RELU,
                f"--trainer.max_epochs={epochs}",
                "--model.members=64",
            ],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
    k64 = time.perf_counter() - start
    row(
        "members",
        "seeds per second: one K=64 `fit` process vs separate `fit` processes (median of 3)",
        64 / k64,
        1 / statistics.median(separate),
        "seeds/s",
    )
    data = seed_data()
    sklearn_s = [_sklearn_mlp_fit(epochs, seed, data) for seed in range(8)]
    row(
        "members",
        "seeds per second: one K=64 `fit` process vs a loop of scikit-learn MLPClassifier fits "
        "(same shape and steps, median of 8)",
        64 / k64,
        1 / statistics.median(sklearn_s),
        "seeds/s",
    )
    rss1, rss256 = _peak_rss_mb(1, 50), _peak_rss_mb(256, 50)
    row("members", "peak RSS of a fit process, K=256 vs K=1", rss256, rss1, "MB")
    ours, vmap = zip(*(_stacked_vs_vmap(64, 200) for _ in range(repeats)), strict=True)
    row(
        "members",
        "K=64 forward+backward: StackedMLP (points last) vs torch.func stack_module_state + vmap",
        min(ours),
        min(vmap),
        "s",
    )


def bench_compile(repeats: int, epochs: int) -> None:
    print(
        f"compile: configs/relu.yaml for {epochs} epochs with and without --model.compile_mode "
        "default",
        flush=True,
    )
    args = ["--config", RELU, f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu"]
    eager, compiled = [], []
    for _ in range(repeats):
        eager.append(circles_fit(args)[0])
        compiled.append(circles_fit([*args, "--model.compile_mode=default"])[0])
    row("compile", f"fit, {epochs} epochs, compile time included", min(compiled), min(eager), "s")


def _per_epoch_ms(args: list[str]) -> tuple[float, float, object]:
    """Median time of a training epoch after the first two (ms: the first pay for CUDA graphs,
    compilation, allocation), the whole fit (s), and the CLI."""
    clock = EpochClock()
    seconds, cli = circles_fit(args, clock=clock)
    return statistics.median(clock.times[2:]) * 1e3, seconds, cli


def _val_acc(cli) -> float:
    return float(cli.trainer.callback_metrics["val/acc"])


def bench_gpu(repeats: int, quick: bool) -> None:
    """The GPU table: the chapter's run on the GPU against the CPU (same numbers? per-epoch cost,
    with CUDA graphs), members at GPU scale, the other datasets' classes on the GPU, and
    samples/s at N=20M against the plain loop."""
    if not torch.cuda.is_available():
        print("gpu: skipped, no CUDA device", flush=True)
        return
    epochs = 200 if quick else 1000
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    base = ["--config", RELU, f"--trainer.max_epochs={epochs}"]
    cpu_args = [*base, "--trainer.accelerator=cpu"]
    gpu_args = [*base, "--config", GPU]
    # CUDA context and kernels loaded before any clock runs
    circles_fit([*gpu_args, "--trainer.max_epochs=3"])
    runs = {
        "cpu": cpu_args,
        "gpu": gpu_args,
        "gpu, reduce-overhead": [*gpu_args, "--model.compile_mode=reduce-overhead"],
    }
    ms: dict[str, list[float]] = {name: [] for name in runs}
    accs: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, args in runs.items():
            epoch_ms, seconds, cli = _per_epoch_ms(args)
            ms[name].append(epoch_ms)
            accs[name].append(_val_acc(cli))
            print(
                f"  {name}: {epoch_ms:.3f} ms per epoch, fit {seconds:.1f} s, final val acc "
                f"{accs[name][-1]:.4f}",
                flush=True,
            )
    for name in ("gpu", "gpu, reduce-overhead"):
        print(
            f"  final val acc, relu.yaml seed 42, {name}: {accs[name]}, CPU: {accs['cpu']} "
            "(|difference| "
            f"{max(abs(a - accs['cpu'][0]) for a in accs[name]):.4g})",
            flush=True,
        )
    cpu = min(ms["cpu"])
    row(
        "gpu",
        f"relu.yaml per epoch: GPU vs CPU ({epochs} epochs, median after 2)",
        min(ms["gpu"]),
        cpu,
        "ms",
    )
    row(
        "gpu",
        "relu.yaml per epoch: GPU with CUDA graphs (reduce-overhead) vs CPU",
        min(ms["gpu, reduce-overhead"]),
        cpu,
        "ms",
    )
    data = seed_data("cuda")
    plain = [plain_loop(*data, epochs=epochs) / epochs * 1e3 for _ in range(repeats)]
    row(
        "gpu",
        "relu.yaml per epoch on the GPU vs the chapter's plain loop on the GPU",
        min(ms["gpu"]),
        min(plain),
        "ms",
    )

    member_epochs = 50 if quick else 200
    margs = ["--config", RELU, f"--trainer.max_epochs={member_epochs}"]
    gpu_members = {
        k: _per_epoch_ms([*margs, "--config", GPU, f"--model.members={k}"])
        for k in (1, 64, 256, 4096)
    }
    for k in (64, 256, 4096):
        row(
            "gpu",
            f"members: K={k} vs K=1 on the GPU, per epoch",
            gpu_members[k][0],
            gpu_members[1][0],
            "ms",
        )
    cpu_k64 = _per_epoch_ms([*margs, "--trainer.accelerator=cpu", "--model.members=64"])
    for k in (64, 4096):
        row(
            "gpu",
            f"members: seeds/s, K={k} on the GPU vs K=64 on the CPU ({member_epochs} epochs, whole "
            "fit)",
            k / gpu_members[k][1],
            64 / cpu_k64[1],
            "seeds/s",
        )

    for config in ("blobs", "spiral3"):  # more than two classes: the same numbers on either device
        args = ["--config", str(REPO / "configs" / f"{config}.yaml")]
        on_cpu = _val_acc(circles_fit([*args, "--trainer.accelerator=cpu"])[1])
        on_gpu = _val_acc(circles_fit([*args, "--config", GPU])[1])
        print(f"  {config}.yaml final val acc: CPU {on_cpu:.4f}, GPU {on_gpu:.4f}", flush=True)

    n_train = 2_000_000 if quick else 20_000_000
    gpu_rate = bench_scale(repeats, n_train=n_train, batch=1 << 20, epochs=5, device="cuda")
    # 4x the work per step
    bench_scale(repeats, n_train=n_train, batch=1 << 22, epochs=5, device="cuda")
    cpu_rate = bench_scale(
        1, n_train=n_train, batch=1 << 20, epochs=3, device="cpu", section="gpu", with_loader=False
    )
    row(
        "gpu",
        f"samples/s, N={n_train:,} batch 1,048,576: circles on the GPU vs circles on the CPU",
        gpu_rate / 1e6,
        cpu_rate / 1e6,
        "M/s",
    )


def bench_ddp_gpu(quick: bool) -> None:
    """``fit configs/improved.yaml --config configs/trainer/ddp.yaml`` on one GPU and, where
    there are more, on all of them, each followed by ``test --ckpt_path last``: the commands as a
    user types them, in fresh processes."""
    if not torch.cuda.is_available():
        print("ddp: skipped, no CUDA device", flush=True)
        return
    improved = str(REPO / "configs" / "improved.yaml")
    for devices in sorted({1, torch.cuda.device_count()}):
        with tempfile.TemporaryDirectory() as tmp:
            commands = [
                [
                    "fit",
                    "--config",
                    improved,
                    "--config",
                    DDP,
                    f"--trainer.devices={devices}",
                    *(["--trainer.max_epochs=20"] if quick else []),
                ],
                ["test", "--config", improved, "--ckpt_path", "last"],
            ]
            for command in commands:
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, str(REPO / "train.py"), *command],
                    cwd=tmp,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                lines = [
                    line
                    for line in done.stdout.splitlines()
                    if "val/acc" in line or "test/acc" in line or "error" in line.lower()
                ]
                print(
                    f"  ddp, {devices} GPU(s): {command[0]} exit {done.returncode} in "
                    f"{time.perf_counter() - start:.1f} s; "
                    + " | ".join(line.strip() for line in lines[-3:]),
                    flush=True,
                )
                if done.returncode:
                    print(done.stdout[-3000:], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument(
        "--only",
        default="seed,epoch,startup,scale,compile,members,gpu,ddp",
        help="comma-separated sections (besides these: threads, hooks, busy, and busy-sweeps "
        "with the sweep)",
    )
    parser.add_argument(
        "--busy", type=int, default=2, help="busy section: how many cores other processes take"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="another checkout of circles to compare with in the epoch section (its own train.py)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the startup section (another environment's, to compare installs)",
    )
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    sections = set(args.only.split(","))
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    quick = args.quick
    runs: dict[str, Callable[[], None]] = {
        "seed": lambda: bench_seed(repeats, epochs=200 if quick else 1000),
        "epoch": lambda: bench_epoch(repeats, args.base, epochs=200 if quick else 1000),
        "startup": lambda: bench_startup(repeats, args.python),
        "scale": lambda: bench_scale(
            repeats, n_train=200_000 if quick else 1_000_000, batch=65536, epochs=5
        ),
        "compile": lambda: bench_compile(repeats, epochs=200 if quick else 1000),
        "members": lambda: bench_members(repeats, epochs=200 if quick else 1000),
        "gpu": lambda: bench_gpu(repeats, quick),
        "ddp": lambda: bench_ddp_gpu(quick),
        "busy": lambda: bench_busy(args.busy, "busy-sweeps" in sections),
        "threads": lambda: bench_threads(args.busy, repeats),
        "hooks": lambda: bench_hooks(epochs=200 if quick else 1000),
    }
    if "busy-sweeps" in sections:
        sections.add("busy")
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)  # runs land in a temporary lightning_logs/
        for name, run in runs.items():
            if name in sections:
                run()
        os.chdir(REPO)
    print("\n| section | what | circles | baseline | ratio |\n| --- | --- | --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
