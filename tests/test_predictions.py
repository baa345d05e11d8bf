"""``predictions.csv`` gives back what it was given: every point as the number it was read as,
every class name as written (quoted where the CSV rules need it), and the probability of the
class it names."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from circles.data.files import FLOAT32_MAX
from circles.model import CirclesClassifier

from helpers import TINY, error_lines, evaluation_dirs, exit_status

COORDINATE = st.floats(
    min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX, allow_nan=False, allow_subnormal=True
)


def read_predictions(runs: Path) -> tuple[list[str], list[list[str]]]:
    with open(evaluation_dirs(runs)[-1] / "predictions.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=st.lists(st.tuples(COORDINATE, COORDINATE), min_size=1, max_size=40))
@example(points=[(FLOAT32_MAX, FLOAT32_MAX)])
@example(points=[(12345678.9, -1.5)])
def test_predict_writes_back_each_point_as_the_number_it_read(tiny_run, tmp_path, capfd, points):
    """Any finite point the model can take (12345678.9 once came back as 1.23457e+07); one whose
    probability overflows is refused in one line, naming it."""
    runs = tmp_path / "lightning_logs"
    shutil.rmtree(runs, ignore_errors=True)
    shutil.copytree(tiny_run / "lightning_logs", runs)
    source = tmp_path / "points.csv"
    source.write_text("x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in points))
    (last,) = runs.glob("*/checkpoints/last.ckpt")
    with torch.no_grad():
        model = CirclesClassifier.load_from_checkpoint(last)
        probs = model.member_probabilities(torch.tensor(points, dtype=torch.float64).float())
    status = exit_status("predict", *TINY, "--ckpt_path=last", f"--data.predict_path={source}")
    if not bool(torch.isfinite(probs).all()):  # coordinates near float32's largest overflow
        (line,) = error_lines(capfd.readouterr().err)
        assert status == 2 and "is not a number" in line and "nothing was written" in line
        return
    assert status == 0
    header, rows = read_predictions(runs)
    assert header == ["x1", "x2", "probability", "label"]
    assert [(float(r[0]), float(r[1])) for r in rows] == points
    # two classes: the probability is the named class's, so at least one half
    assert all(0.5 <= float(r[2]) <= 1 and r[3] in ("0", "1") for r in rows)


def test_class_names_with_commas_and_quotes_come_back_whole(tmp_path):
    names = ["inner, ring", 'outer "ring"']
    with open(tmp_path / "named.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x1", "x2", "label"])
        for i in range(60):
            radius = 0.3 if i % 2 == 0 else 1.0
            writer.writerow([radius * (-1) ** (i // 2), radius * (i % 7) / 7, names[i % 2]])
    named = ["--data.path=named.csv", "--trainer.max_epochs=2"]
    assert exit_status("fit", *named, "--boundary.every_n_epochs=1000") == 0
    assert exit_status("predict", "--ckpt_path=last") == 0
    # the fit's TensorBoard run gains no event file: predict writes no numbers
    (fit,) = (tmp_path / "lightning_logs").iterdir()
    assert len(list(fit.glob("events.out.tfevents.*"))) == 1
    header, rows = read_predictions(tmp_path / "lightning_logs")
    assert header == ["x1", "x2", "probability", "label"] and rows
    assert all(len(r) == 4 and r[3] in names for r in rows)
