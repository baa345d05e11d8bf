"""The torch threads a fit trains on (circles.callbacks.threads): one where a step is too small to
share, torch's count where it is larger, the count back afterwards, decided by the config alone."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circles.callbacks.threads import SHARED_WORK, TorchThreads
from circles.data import CirclesDataModule
from circles.model import CirclesClassifier

from helpers import exit_status, quiet_trainer


class ThreadsSeen(pl.Callback):
    """The torch threads each training batch ran on."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.add(torch.get_num_threads())


@pytest.fixture
def two_threads(monkeypatch):
    """Torch on two threads, with no OMP_NUM_THREADS to decide instead; the count restored."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fit(threads: TorchThreads, **model: object) -> set[int]:
    seen = ThreadsSeen()
    data = CirclesDataModule(n_samples=100, test_samples=10)
    quiet_trainer(max_epochs=2, callbacks=[threads, seen]).fit(CirclesClassifier(**model), data)
    return seen.seen


@pytest.mark.parametrize(
    "model, count, trained_on",
    [
        ({}, None, 1),  # 80 points x 151 parameters: too small to share
        ({"hidden_sizes": [192, 192]}, None, 2),  # 80 x 37,825 = 3.0 M multiply-adds
        ({"hidden_sizes": [192, 192]}, 1, 1),  # threads.count decides
        ({}, 2, 2),
    ],
)
def test_the_threads_follow_the_work_and_come_back(two_threads, capsys, model, count, trained_on):
    assert fit(TorchThreads(count), **model) == {trained_on}
    assert torch.get_num_threads() == 2
    said = [line for line in capsys.readouterr().out.splitlines() if "torch thread" in line]
    assert len(said) == (trained_on != 2)  # said only where the count changed
    if said:
        assert said[0].startswith(f"Training on {trained_on} torch thread of 2 (")


def test_the_threshold_is_the_step_of_points_times_parameters(two_threads):
    model = CirclesClassifier(hidden_sizes=[192, 192])
    weights = sum(p.numel() for p in model.parameters())
    assert 80 * weights >= SHARED_WORK > 80 * 151


def test_omp_num_threads_decides_instead(two_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fit(TorchThreads()) == {2}


def test_a_failed_fit_gives_the_count_back(two_threads):
    class Failing(CirclesClassifier):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise RuntimeError("stop here")
            return super().training_step(batch, batch_idx)

    seen = ThreadsSeen()
    data = CirclesDataModule(n_samples=100, test_samples=10)
    with pytest.raises(RuntimeError, match="stop here"):
        quiet_trainer(max_epochs=3, callbacks=[TorchThreads(), seen]).fit(Failing(), data)
    assert seen.seen == {1} and torch.get_num_threads() == 2


def test_the_option_is_on_the_command_line_with_its_range(capsys):
    assert exit_status("fit", "--threads.count", "0") == 2
    assert "threads.count must be an integer >= 1 or null, got 0." in capsys.readouterr().err


@settings(max_examples=20)
@given(
    members=st.integers(1, 8),
    hidden=st.lists(st.integers(1, 64), min_size=1, max_size=3),
    n_samples=st.integers(10, 3000),
)
def test_the_count_follows_from_the_config_alone(members, hidden, n_samples):
    """A thread count can change the last bits of a sum (Hypothesis found a 17x5 network whose
    first weights differ by an ulp after three steps on one thread or two), so the count is decided from the
    model and the batch alone, never from the machine's load: a config trains on the same count
    every time (one thread below ``SHARED_WORK``), with the same weights to the bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    runs = []
    with pytest.MonkeyPatch.context() as env:
        env.delenv("OMP_NUM_THREADS", raising=False)
        for _ in range(2):
            seen = ThreadsSeen()
            pl.seed_everything(7, verbose=False)
            model = CirclesClassifier(hidden_sizes=hidden, members=members)
            data = CirclesDataModule(n_samples=n_samples, test_samples=10)
            trainer = quiet_trainer(max_epochs=1, callbacks=[TorchThreads(), seen])
            trainer.fit(model, data)
            runs.append((seen.seen, [p.detach().clone() for p in model.parameters()]))
    torch.set_num_threads(before)
    work = len(data.train_x) * sum(p.numel() for p in model.parameters())
    assert runs[0][0] == runs[1][0] == {1 if work < SHARED_WORK else 2}
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
