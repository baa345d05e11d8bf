"""Every number README.md quotes about a run, re-derived from the run itself: a change that moves
one fails here, with the number measured, until README says it. (Timings are measurements of a
machine, not results of a run: they live in docs/benchmarks.md, made by benchmarks/bench.py.)"""

from __future__ import annotations

import contextlib
import io
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import CONFIGS, REPO, exit_status, final_scalar, inside, scalar_history, scalar_values

pytestmark = pytest.mark.slow
README = (REPO / "README.md").read_text()
# Runs are reproducible to the bit on one machine; between CPUs, batched products round in other orders, and long runs
# end a little apart. The numbers are those of 2 torch threads, what .ci/run's machines have; where they moved between
# the CPUs measured, README says by how much and the claim allows it (``within``).
RINGS = str(REPO / "examples" / "rings.csv")
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--boundary.every_n_epochs=100000",
    "--boundary.gif=false",
]
# What README's numbers come from: name -> the fit's arguments (the fit tests its final weights on its test points).
RUNS = {
    "relu": [f"--config={CONFIGS / 'relu.yaml'}"],
    "linear": [f"--config={CONFIGS / 'linear.yaml'}"],
    "improved": [f"--config={CONFIGS / 'improved.yaml'}"],
    "linear_features": [f"--config={CONFIGS / 'linear_features.yaml'}"],
    **{
        name: [f"--config={CONFIGS / f'{name}.yaml'}"]
        for name in ("moons", "xor", "gaussians", "spiral")
    },
    **{
        name: [f"--config={CONFIGS / 'relu.yaml'}", f"--config={CONFIGS / 'task' / f'{name}.yaml'}"]
        for name in ("deeper", "wider", "longer")
    },
    "blobs": [f"--config={CONFIGS / 'blobs.yaml'}"],
    "blobs_linear": [f"--config={CONFIGS / 'blobs.yaml'}", "--model.activation=none"],
    "spiral3": [f"--config={CONFIGS / 'spiral3.yaml'}"],
    "spiral3_linear": [f"--config={CONFIGS / 'spiral3.yaml'}", "--model.activation=none"],
    "rings": [f"--config={CONFIGS / 'relu.yaml'}", f"--data.path={RINGS}"],
    "rings_linear": [
        f"--config={CONFIGS / 'relu.yaml'}",
        f"--data.path={RINGS}",
        "--model.activation=none",
    ],
    "until_1": [
        f"--config={CONFIGS / 'improved.yaml'}",
        f"--config={CONFIGS / 'trainer' / 'until_val_acc_1.yaml'}",
    ],
    # the finder's 100 steps, then a short fit
    "lr_find": [
        f"--config={CONFIGS / 'relu.yaml'}",
        f"--config={CONFIGS / 'trainer' / 'lr_find.yaml'}",
        "--trainer.max_epochs=100",
    ],
    **{
        name: [f"--config={CONFIGS / 'relu.yaml'}", f"--model.optimizer.init_args.lr={lr}"]
        for name, lr in (("lr1", 1), ("lr3", 3), ("lr_suggested", 8.91))
    },
}


class Claims:
    """What README says, checked against what was measured; every claim that does not hold is
    listed at the end of the test (:meth:`hold`), so one run tells all the numbers to update."""

    def __init__(self) -> None:
        self.wrong: list[str] = []

    def says(self, template: str, *values: float, within: float = 0.0) -> None:
        """README says ``template`` with a number in each ``{:spec}`` slot: the measured value
        formatted by the spec, or, with ``within``, a number at most that far from it (in the
        value's own units: 0.002 is 0.2% for a ``%`` slot). Runs of many steps end a little apart
        on CPUs whose vector units round sums in another order; README says how far, and
        ``within`` is that bound."""
        parts = list(string.Formatter().parse(template))
        pattern = "".join(
            re.escape(re.sub(r"\s+", " ", literal)).replace(r"\ ", r"\s+")
            + (r"(-?\d+(?:\.\d+)?)" + "%" * spec.endswith("%") if name is not None else "")
            for literal, name, spec, _ in parts
        )
        expected = template.format(*values)
        found = re.search(pattern, " ".join(README.split()))
        if found is None:
            self.wrong.append(f"README.md does not say {expected!r}")
            return
        specs = [spec for _, name, spec, _ in parts if name is not None]
        for written, value, spec in zip(found.groups(), values, specs, strict=True):
            scale = 100 if spec.endswith("%") else 1
            # what README's rounding may hide
            half_unit = 0.5 * 10 ** -len(written.partition(".")[2]) / scale
            if (
                written != format(value, spec).rstrip("%")
                and abs(float(written) / scale - value) > within + half_unit
            ):
                self.wrong.append(
                    f"README.md says {found.group(0)!r}, measured {expected!r}"
                    + (f" (more than {within:g} apart)" if within else "")
                )
                return

    def hold(self) -> None:
        assert not self.wrong, "update README.md:\n" + "\n".join(self.wrong)


@pytest.fixture
def readme() -> Iterator[Claims]:
    claims = Claims()
    yield claims
    claims.hold()


def fit_run(root: Path, name: str, *evaluations: str) -> tuple[Path, str]:
    """``fit`` of one of RUNS in its own folder, in this process (the imports are paid once),
    then the evaluations asked for (``test --ckpt_path=last``, ...) of its checkpoints; returns
    the run directory (whose ``test`` sub-run holds the fit's own test) and everything printed."""
    folder = root / name
    folder.mkdir()
    printed = io.StringIO()
    with inside(folder), contextlib.redirect_stdout(printed):
        assert exit_status("fit", *RUNS[name], *QUIET) == 0
        for evaluation in evaluations:
            subcommand, ckpt = evaluation.split()
            assert exit_status(subcommand, *RUNS[name], *QUIET, f"--ckpt_path={ckpt}") == 0
    (run,) = (p for p in (folder / "lightning_logs").iterdir() if p.name[:4].isdigit())
    return run, printed.getvalue()


EVALUATED = {"improved": ("test last", "validate best")}  # README quotes what these print


class Runs(dict):
    """README's runs, each trained the first time a test asks for it (then kept for the test
    process): the test classes below split them, so that two test processes train them side by
    side (``--dist loadgroup`` gives each class, one ``xdist_group``, to one process)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> tuple[Path, str]:
        self[name] = fit_run(self.root, name, *EVALUATED.get(name, ()))
        return self[name]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Every run README quotes (on one torch thread or two, the numbers are the same)."""
    return Runs(tmp_path_factory.mktemp("readme"))


def accuracy_of(runs, name: str, stage: str = "test") -> float:
    """The run's final accuracy of ``stage``: for ``test``, the fit's own test of its final
    weights (what ``test --ckpt_path last`` measures too)."""
    return final_scalar(runs[name][0], f"{stage}/acc")


def printed(runs, name: str, start: str) -> list[str]:
    """The lines the run's commands printed that start with ``start``."""
    return [line for line in runs[name][1].splitlines() if line.startswith(start)]


@pytest.mark.xdist_group("readme-mainjob")
class TestMainJob:
    """The main job's lines, the learning-rate finder's runs and your own points: the runs of
    configs/relu.yaml."""

    def test_the_main_jobs_console_and_summary(self, runs, readme):
        fitted, out = runs["relu"]
        for epoch in (990, 999):
            (line,) = printed(runs, "relu", f"Epoch: {epoch} |")
            readme.says(line)
        (test,) = printed(runs, "relu", "Test: ")
        readme.says(test)
        (bayes,) = printed(runs, "relu", "  Bayes-optimal acc ")
        readme.says(bayes.strip())
        (best,) = re.findall(r"^Best val/acc: (\d\.\d{4})", out, re.M)
        readme.says("Best val/acc: {:.4f}", float(best))
        final, top = final_scalar(fitted, "val/acc"), max(scalar_values(fitted, "val/acc"))
        readme.says("final val acc {:.3f} (best {:.2f})", final, top)
        first_layer = scalar_values(fitted, "train/dead_units_1")
        assert first_layer[0] == first_layer[-1] == 3
        second_layer = scalar_values(fitted, "train/dead_units_2")
        assert max(second_layer) > second_layer[-1]  # a later layer's dead units can come back
        readme.says(
            "In `configs/relu.yaml` (seed 42) {} of the first layer's 10 units are dead from the first epoch on, and "
            "layer 2 goes from {} dead units to {}",
            int(first_layer[0]),
            int(second_layer[0]),
            int(second_layer[-1]),
        )

    def test_what_the_learning_rate_finder_says(self, runs, readme):
        (line,) = printed(runs, "lr_find", "Learning-rate finder (")
        readme.says(line)
        for name in ("lr_suggested", "lr3"):
            assert (
                final_scalar(runs[name][0], "val/acc") == 0.5
                and final_scalar(runs[name][0], "train/dead_units_2") == 10
            )
        readme.says(
            "the run ends at chance (val acc {:.3f}, loss {:.3f})",
            final_scalar(runs["lr_suggested"][0], "val/acc"),
            final_scalar(runs["lr_suggested"][0], "val/loss"),
        )
        val = scalar_history(runs["lr1"][0])["val/acc"]
        perfect = next(epoch for epoch, value in val if value == 1.0)
        assert perfect <= 500 and val[-1][1] == 1.0
        readme.says(
            "reaches val acc 1.000 by epoch 500 and test acc {:.3f}", accuracy_of(runs, "lr1")
        )

    def test_your_own_points(self, runs, readme):
        rings_val = final_scalar(runs["rings"][0], "val/acc")
        linear_val, linear_test = (
            final_scalar(runs["rings_linear"][0], "val/acc"),
            accuracy_of(runs, "rings_linear"),
        )
        readme.says(
            "reaches validation accuracy {:.3f} and test accuracy {:.3f} on the 120 held-out points; with "
            "`--model.activation none` {:.3f} and {:.3f}",
            rings_val,
            accuracy_of(runs, "rings"),
            linear_val,
            linear_test,
        )


@pytest.mark.xdist_group("readme-configs")
class TestConfigs:
    """The config table, the evaluations and the affine maps: the other configs' runs."""

    def test_the_evaluations_say_what_they_measured(self, runs, readme):
        for start in ("Test: ", "Validation: "):
            # not the fit's own test
            (line,) = [line for line in printed(runs, "improved", start) if "ckpt)" in line]
            readme.says(line)
        (bayes, _) = printed(runs, "improved", "  Bayes-optimal acc ")
        readme.says(bayes.strip())

    def test_the_config_table(self, runs, readme):
        readme.says("val acc ~{:.2f}", round(accuracy_of(runs, "linear", "val"), 1))
        val = scalar_history(runs["improved"][0])["val/acc"]
        first_perfect = next(epoch for epoch, value in val if value == 1.0)
        assert all(value == 1.0 for epoch, value in val if epoch >= first_perfect)
        bayes = final_scalar(runs["improved"][0], "test/bayes_acc")
        readme.says(
            "val acc 1.0 from epoch {}, test acc {:.4f} (Bayes-optimal: {:.4f})",
            first_perfect,
            accuracy_of(runs, "improved"),
            bayes,
        )
        readme.says(
            "test acc {:.4f}: a line in those coordinates is a circle",
            accuracy_of(runs, "linear_features"),
        )
        readme.says(
            "TensorFlow Playground's other sets, ReLU, Adam | test acc {:.4f}, {:.4f}, {:.4f}, {:.4f}",
            *(accuracy_of(runs, name) for name in ("moons", "xor", "gaussians", "spiral")),
            within=0.001,
        )
        readme.says(
            "val acc {:.3f} (the course's 99.5%, on the same 200 points), test acc {:.4f} (Bayes-optimal: "
            "{:.4f}); no activation: {:.4f}",
            final_scalar(runs["blobs"][0], "val/acc"),
            accuracy_of(runs, "blobs"),
            final_scalar(runs["blobs"][0], "test/bayes_acc"),
            accuracy_of(runs, "blobs_linear"),
        )
        readme.says(
            "test acc {:.3f}; no activation: {:.3f}",
            accuracy_of(runs, "spiral3"),
            accuracy_of(runs, "spiral3_linear"),
            within=0.01,
        )
        stopped = runs["until_1"][0]
        readme.says(
            "`improved.yaml`: stops after epoch {} (of 100), test acc {:.4f}",
            len(scalar_values(stopped, "val/acc")) - 1,
            accuracy_of(runs, "until_1"),
        )

    def test_the_affine_maps_readme_prints(self, runs, readme):
        for name in ("linear", "linear_features"):
            (line,) = [line.strip() for line in printed(runs, name, "  logit = ")]
            readme.says(line.removesuffix("; the boundary is where it is 0").replace("{", "{{"))


@pytest.mark.xdist_group("readme-task")
class TestTask:
    """The chapter's three ideas, each one config on top of relu.yaml."""

    def test_deeper_wider_longer(self, runs, readme):
        deeper = runs["deeper"][0]
        dead = [int(scalar_values(deeper, f"train/dead_units_{i}")[-1]) for i in (1, 2, 3)]
        loss = scalar_values(deeper, "train/loss")
        readme.says(
            "test acc {:.4f}, worse than two layers ({:.4f}): {}, {} and {} of its layers' 10 units "
            "are dead",
            accuracy_of(runs, "deeper"),
            accuracy_of(runs, "relu"),
            *dead,
        )
        readme.says("the loss has only gone from {:.2f} to {:.3f}", loss[0], loss[-1])
        wider = runs["wider"][0]
        readme.says(
            "test acc {:.4f} (Bayes-optimal: {:.4f}): {} and {} units dead",
            accuracy_of(runs, "wider"),
            final_scalar(wider, "test/bayes_acc"),
            *(int(scalar_values(wider, f"train/dead_units_{i}")[-1]) for i in (1, 2)),
        )
        readme.says(
            "train longer: 5000 epochs | test acc {:.4f}, val acc {:.3f} at epoch {}",
            accuracy_of(runs, "longer"),
            final_scalar(runs["longer"][0], "val/acc"),
            len(scalar_values(runs["longer"][0], "val/acc")) - 1,
        )


@pytest.mark.xdist_group("readme-seeds")
class TestSeeds:
    """README's spread over 256 seeds."""

    def test_256_seeds(self, readme):
        """README's figure of 256 seeds of configs/relu.yaml, as scripts/seed_spread.py computes it."""
        sys.path.insert(0, str(REPO / "scripts"))
        try:
            from seed_spread import spread, summary
        finally:
            sys.path.remove(str(REPO / "scripts"))
        facts = summary([row["val_acc"] for row in spread(256, 1000)])
        readme.says(
            "Mean {:.1%}, standard deviation {:.1%}, median {:.1%}, from {:.1%} to {:.0%}",
            facts["mean"],
            facts["std"],
            facts["median"],
            facts["min"],
            facts["max"],
            within=0.005,
        )
        readme.says(
            "a quarter of the seeds end below {:.0%}, a quarter above {:.0%}",
            facts["q1"],
            facts["q3"],
            within=0.01,
        )
        readme.says(
            "The chapter's 73.5% is a low draw ({:.0%} of seeds end below it)",
            facts["below"][0.735],
            within=0.01,
        )
        readme.says("over 256 seeds {:.3f} ± {:.3f}", facts["mean"], facts["std"], within=0.005)


def test_readme_says_each_configs_progress_line_cadence():
    """The cadence README gives for the progress line is each config's own."""
    import yaml

    match = re.search(
        r"`chapter_log\.every_n_epochs`:\s+(\d+) here and in `improved\.yaml`, (\d+) in `linear\.yaml`",
        README,
    )
    assert match is not None

    def cadence(name: str) -> int:
        return yaml.safe_load((CONFIGS / name).read_text())["chapter_log"]["every_n_epochs"]

    main, linear = map(int, match.groups())
    assert (cadence("relu.yaml"), cadence("improved.yaml"), cadence("linear.yaml")) == (
        main,
        main,
        linear,
    )
    assert re.search(rf"^Every {main} epochs and at the last", README, re.M)


def test_a_claim_fails_when_the_number_moved_further_than_readme_allows(monkeypatch):
    monkeypatch.setattr(
        sys.modules[__name__], "README", "Mean 85.5%, std 0.145 and acc 0.9752 here."
    )
    claims = Claims()
    # 85.7% vs 85.5%: within 0.5 points
    claims.says("Mean {:.1%}, std {:.3f}", 0.8571, 0.1449, within=0.005)
    claims.says("acc {:.4f} here", 0.9752)
    assert not claims.wrong
    claims.says("Mean {:.1%}, std {:.3f}", 0.8621, 0.145, within=0.005)  # 86.2% vs 85.5%: not
    claims.says("acc {:.4f} here", 0.9755)  # exact, and it moved
    claims.says("acc {:.4f} there", 0.9752)  # not said at all
    assert len(claims.wrong) == 3 and "measured 'acc 0.9755 here'" in claims.wrong[1], claims.wrong


# README's commands that need what a test cannot have (GPUs, a SLURM cluster, the network) or
# take minutes, each tested where it can be: tests/test_distributed.py, tests/test_slurm.py,
# tests/test_sweep.py
ELSEWHERE = ("configs/trainer/gpu.yaml", "configs/trainer/ddp.yaml", "configs/trainer/ddp_cpu.yaml")
SHORT = ["--trainer.max_epochs=2", "--boundary.every_n_epochs=1000", "--boundary.gif=false"]


def readme_commands() -> list[list[str]]:
    """Every ``python train.py ...`` line of README's code blocks, in order, as arguments (a
    chain's last command; comments dropped)."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = shlex.split(line, comments=True)
            while "&&" in command:
                command = command[command.index("&&") + 1 :]
            if command[:2] == ["python", "train.py"] and not any(c in line for c in ELSEWHERE):
                commands.append(command[2:])
    return commands


def shortened(args: list[str]) -> list[str]:
    """``args`` over a few epochs: the epochs a line sets, scaled down 50 times (to go on from a
    short run, as the line goes on from a long one), else two, given after its configs."""
    args = [
        str(max(3, int(a) // 50)) if i and args[i - 1] == "--trainer.max_epochs" else a
        for i, a in enumerate(args)
    ]
    if args[0] == "compare":
        return [*args, *SHORT]
    if args[0] != "fit":
        return args
    after = max((i + 2 for i, a in enumerate(args) if a == "--config"), default=1)
    return [*args[:after], *SHORT, *args[after:]]


def test_readme_commands_run_as_written_in_order(tmp_path, monkeypatch, capfd):
    """Every ``python train.py`` line of README, top to bottom in one folder, as a reader runs
    them (each fit a few epochs long): none fails, whatever the lines before it left behind
    (``--ckpt_path last`` is the newest run's)."""
    for folder in ("configs", "examples"):
        (tmp_path / folder).symlink_to(REPO / folder)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 15 and commands[0] == ["fit", "--config", "configs/relu.yaml"]
    for args in commands:
        status = exit_status(*shortened(args))
        said = capfd.readouterr()
        assert status == 0, (args, said.err[-2000:])
        if args[:2] == ["compare", "configs/linear.yaml"]:  # the main job's run, as README says
            assert re.search(
                r"^configs/relu\.yaml: shown from lightning_logs/\d{4}-relu-10x10-", said.out, re.M
            )
