"""Every number README.md quotes about a run, re-derived from the run itself: a change that moves one fails here, with
the number measured, until README says it. (Timings are measurements of a machine, not results of a run: they live
in docs/benchmarks.md, made by benchmarks/bench.py.)"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import CONFIGS, REPO, exit_status, final_scalar, inside, scalar_history, scalar_values

pytestmark = pytest.mark.slow
README = (REPO / "README.md").read_text()
# Long Adam runs end a few points apart on CPUs that split the work into other numbers of threads (README says so):
# the numbers are those of 2 torch threads, what .ci/run's machines have.
RINGS = str(REPO / "examples" / "rings.csv")
QUIET = ["--trainer.enable_progress_bar=false", "--boundary.every_n_epochs=100000", "--boundary.gif=false"]
# What README's numbers come from: name -> the fit's arguments; each of them is then tested on its own test points.
RUNS = {
    "relu": [f"--config={CONFIGS / 'relu.yaml'}"],
    "linear": [f"--config={CONFIGS / 'linear.yaml'}"],
    "improved": [f"--config={CONFIGS / 'improved.yaml'}"],
    "linear_features": [f"--config={CONFIGS / 'linear_features.yaml'}"],
    **{name: [f"--config={CONFIGS / f'{name}.yaml'}"] for name in ("moons", "xor", "gaussians", "spiral")},
    "blobs": [f"--config={CONFIGS / 'blobs.yaml'}"],
    "blobs_linear": [f"--config={CONFIGS / 'blobs.yaml'}", "--model.activation=none"],
    "spiral3": [f"--config={CONFIGS / 'spiral3.yaml'}"],
    "spiral3_linear": [f"--config={CONFIGS / 'spiral3.yaml'}", "--model.activation=none"],
    "rings": [f"--config={CONFIGS / 'relu.yaml'}", f"--data.path={RINGS}"],
    "rings_linear": [f"--config={CONFIGS / 'relu.yaml'}", f"--data.path={RINGS}", "--model.activation=none"],
}


def says(text: str) -> None:
    """README says ``text`` (the measured numbers, formatted as README writes them)."""
    assert " ".join(text.split()) in " ".join(README.split()), f"README.md does not say {text!r}: update it"


def train_and_test(root: Path, name: str) -> tuple[Path, Path, str]:
    """``fit`` then ``test --ckpt_path last`` of one of RUNS in its own folder, in this process (the imports are paid
    once); returns both run directories and what fit printed."""
    folder = root / name
    folder.mkdir()
    printed = io.StringIO()
    with inside(folder), contextlib.redirect_stdout(printed):
        assert exit_status("fit", *RUNS[name], *QUIET) == 0
        assert exit_status("test", *RUNS[name], *QUIET, "--ckpt_path=last") == 0
    first, second = sorted((folder / "lightning_logs").iterdir(), key=lambda p: int(p.name.split("-")[0][8:]))
    return first, second, printed.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Path, str]]]:
    """Every run README quotes, on 2 torch threads."""
    root = tmp_path_factory.mktemp("readme")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield {name: train_and_test(root, name) for name in RUNS}
    finally:
        torch.set_num_threads(threads)


def accuracy_of(runs, name: str, stage: str = "test") -> float:
    fitted, tested, _ = runs[name]
    return final_scalar(tested if stage == "test" else fitted, f"{stage}/acc")


def test_the_main_jobs_console_and_summary(runs):
    fitted, _, out = runs["relu"]
    (last_line,) = [line for line in out.splitlines() if line.startswith("Epoch: 990 |")]
    says(last_line)
    (best,) = re.findall(r"^Best val/acc: \d\.\d{4}", out, re.M)
    says(best)
    final, top = final_scalar(fitted, "val/acc"), max(scalar_values(fitted, "val/acc"))
    says(f"final val acc {final:.3f} (best {top:.2f})")


def test_the_config_table(runs):
    says(f"val acc ~{round(accuracy_of(runs, 'linear', 'val'), 1):.2f}")
    val = scalar_history(runs["improved"][0])["val/acc"]
    first_perfect = next(epoch for epoch, value in val if value == 1.0)
    assert all(value == 1.0 for epoch, value in val if epoch >= first_perfect)
    bayes = final_scalar(runs["improved"][1], "test/bayes_acc")
    says(f"val acc 1.0 from epoch {first_perfect}, test acc {accuracy_of(runs, 'improved'):.4f} "
         f"(Bayes-optimal: {bayes:.4f})")
    says(f"test acc {accuracy_of(runs, 'linear_features'):.4f}: a line in those coordinates is a circle")
    playground = ", ".join(f"{accuracy_of(runs, name):.4f}" for name in ("moons", "xor", "gaussians", "spiral"))
    says(f"TensorFlow Playground's other sets, ReLU, Adam | test acc {playground}")
    blobs_val = final_scalar(runs["blobs"][0], "val/acc")
    says(f"val acc {blobs_val:.3f} (the course's 99.5%, on the same 200 points), test acc "
         f"{accuracy_of(runs, 'blobs'):.4f} (Bayes-optimal: {final_scalar(runs['blobs'][1], 'test/bayes_acc'):.4f}); "
         f"no activation: {accuracy_of(runs, 'blobs_linear'):.4f}")
    says(f"test acc {accuracy_of(runs, 'spiral3'):.3f}; no activation: {accuracy_of(runs, 'spiral3_linear'):.3f}")


def test_your_own_points(runs):
    rings_val = final_scalar(runs["rings"][0], "val/acc")
    linear_val, linear_test = final_scalar(runs["rings_linear"][0], "val/acc"), accuracy_of(runs, "rings_linear")
    says(f"reaches validation accuracy {rings_val:.3f} and test accuracy {accuracy_of(runs, 'rings'):.3f} on the 120 "
         f"held-out points; with `--model.activation none` {linear_val:.3f} and {linear_test:.3f}")


def test_256_seeds(tmp_path):
    """README's figure of 256 seeds of configs/relu.yaml, as scripts/seed_spread.py computes it."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from seed_spread import spread, summary
    finally:
        sys.path.remove(str(REPO / "scripts"))
    facts = summary([row["val_acc"] for row in spread(256, 1000)])
    says(f"Mean {facts['mean']:.1%}, standard deviation {facts['std']:.1%}, median {facts['median']:.1%}, from "
         f"{facts['min']:.1%} to {facts['max']:.0%}")
    says(f"a quarter of the seeds end below {facts['q1']:.0%}, a quarter above {facts['q3']:.0%}")
    says(f"The chapter's 73.5% is a low draw ({facts['below'][0.735]:.0%} of seeds end below it)")
    says(f"over 256 seeds {facts['mean']:.3f} ± {facts['std']:.3f}")
