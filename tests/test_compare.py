"""``circles compare``: the lesson side by side, as one page that opens offline, checked in
Chromium, and one PNG."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from circles.compare import pictured
from circles.pictures.lesson_page import RunRecord, slider_epochs

from helpers import CONFIGS, error_lines, exit_status, run_if, train_py, wait_for

# the tests share the compare its module fixture runs: one test process takes them all
pytestmark = pytest.mark.xdist_group("compare")

SHORT = [
    "--trainer.max_epochs=12",
    "--data.n_samples=200",
    "--data.test_samples=500",
    "--chapter_log.every_n_epochs=null",
    "--boundary.every_n_epochs=100",
]


def test_every_run_is_pictured_at_the_same_epochs_more_often_early():
    first = [e for e in range(1001) if pictured(e)]
    assert first[:13] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15]
    assert first[-6:] == [300, 400, 500, 600, 800, 1000] and len(first) == 31
    # a long run's pictures before a short one ends are the short one's
    assert [e for e in range(100) if pictured(e)] == [e for e in first if e < 100]
    assert not any(pictured(e) for e in (-1, 11, 99, 999, 1100))


def test_the_slider_goes_through_every_runs_pictured_epochs():
    short, long = (
        RunRecord(pictures={e: np.zeros(1) for e in (0, 1, 2, 5)}),
        RunRecord(pictures={e: np.zeros(1) for e in (0, 1, 10, 999)}),
    )
    assert slider_epochs([short]) == [0, 1, 2, 5]
    assert slider_epochs([short, long]) == [0, 1, 2, 5, 10, 999]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    configs = [str(CONFIGS / name) for name in ("linear.yaml", "improved.yaml")]
    assert exit_status("compare", *configs, "--out", str(out), *SHORT, "--model.members=3") == 0
    return out


@pytest.mark.slow
def test_compare_trains_each_config_and_writes_a_page_and_a_picture(compared):
    runs = sorted(p.name for p in (compared / "lightning_logs").iterdir())
    assert runs == [
        "0000-linear-10x10-sgd0.1-e12-3seeds-circles",
        "0001-relu-16x16-adam0.03-e12-3seeds-circles",
    ]
    page = (compared / "compare.html").read_text()
    # nothing fetched: it opens offline
    assert re.findall(r"(?:src|href)=\"(https?:[^\"]*)", page) == []
    # the numbers, per config
    assert "<td>linear</td><td>3</td>" in page and "<td>improved</td><td>3</td>" in page
    assert " ± " in page and "Bayes-optimal acc" in page  # the spread over the seeds, the limit
    data = json.loads(
        re.search(r'<script type="application/json" id="data">(.*?)</script>', page)[1]
    )
    assert data["epochs"] == list(range(12))
    for run in data["runs"]:  # each run pictured at every epoch: boundary, network, layers
        assert [f["epoch"] for f in run["frames"]] == data["epochs"]
        assert all(f[kind] for f in run["frames"] for kind in ("boundary", "network", "layers"))
    assert [len(chart["left"]) for chart in data["marks"]] == [12, 12]
    from PIL import Image

    assert Image.open(compared / "compare.png").size[0] >= 500


@pytest.mark.slow
@run_if(chromium=True)
def test_the_pages_slider_moves_every_run_to_the_same_epoch(compared):
    from test_tensorboard import browser

    with browser(width=1440, height=900) as page:
        page.goto((compared / "compare.html").as_uri())
        slider = page.locator("#position")
        assert slider.get_attribute("max") == "11"  # 12 epochs, each pictured: 12 positions
        boundaries = page.locator("img.boundary")
        captions = page.locator(".run .caption")
        marks = page.locator(".curves .mark")
        first = [boundaries.nth(i).get_attribute("src") for i in range(2)]
        assert captions.all_inner_texts() == [
            t for t in captions.all_inner_texts() if t.startswith("epoch 0: val acc ")
        ]
        at_start = marks.first.evaluate("m => m.getBoundingClientRect().left")
        slider.focus()
        slider.press("End")
        assert page.locator("#epoch").inner_text() == "epoch 11"
        assert all(t.startswith("epoch 11: val acc ") for t in captions.all_inner_texts())
        last = [boundaries.nth(i).get_attribute("src") for i in range(2)]
        assert all(src.startswith("data:image/png;base64,") for src in first + last)
        assert first[0] != last[0] and first[1] != last[1]
        assert marks.first.evaluate("m => m.getBoundingClientRect().left") > at_start + 100
        slider.press("Home")
        assert [boundaries.nth(i).get_attribute("src") for i in range(2)] == first
        # the runs side by side across the window, each picture drawn
        boxes = [boundaries.nth(i).bounding_box() for i in range(2)]
        assert boxes[0]["width"] >= 300 and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"]
        for kind in ("network", "layers"):
            assert page.locator(f"img.{kind}").count() == 2
            assert page.locator(f"img.{kind}").first.evaluate("i => i.naturalWidth") > 200
        # the slider stays in reach while the pictures further down are looked at
        page.locator("img.layers").first.scroll_into_view_if_needed()
        assert 0 <= page.locator(".controls").bounding_box()["y"] <= 5
        assert "table" in page.content() and page.locator("td").count() >= 12


def page_data(page: str) -> dict:
    return json.loads(
        re.search(r'<script type="application/json" id="data">(.*?)</script>', page)[1]
    )


def table_rows(page: str) -> list[list[str]]:
    return [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]


@pytest.mark.slow
def test_a_compare_of_run_directories_shows_what_they_wrote_without_training(compared, tmp_path):
    runs = sorted((compared / "lightning_logs").iterdir())
    out = tmp_path / "again"
    assert exit_status("compare", *map(str, runs), "--out", str(out)) == 0
    assert not (out / "lightning_logs").exists()  # nothing trained
    page = (out / "compare.html").read_text()
    before = (compared / "compare.html").read_text()
    # the same numbers, read back from TensorBoard's events
    assert [row[1:] for row in table_rows(page)] == [row[1:] for row in table_rows(before)]
    assert [row[0] for row in table_rows(page)[1:]] == [run.name for run in runs]
    # the pictures the compare's fits wrote into their events: the page as it was
    data, first = page_data(page), page_data(before)
    assert data["epochs"] == first["epochs"] == list(range(12))
    for run, was in zip(data["runs"], first["runs"], strict=True):
        assert run["frames"] == was["frames"]


def test_a_compare_shows_a_finished_run_of_its_settings_and_trains_only_what_differs(
    tmp_path, capfd
):
    """The learner's order: the fit first (into ./lightning_logs), then the compare, which shows
    that run from what it wrote, says so, and has the numbers a fresh fit has; a setting that
    differs, or --fresh, trains."""
    linear = str(CONFIGS / "linear.yaml")
    assert exit_status("fit", "--config", linear, *SHORT) == 0  # the tests run in tmp_path
    (fitted,) = (tmp_path / "lightning_logs").iterdir()
    capfd.readouterr()
    out = tmp_path / "page"
    assert exit_status("compare", linear, "--out", str(out), *SHORT) == 0
    said = capfd.readouterr().out
    assert f"{linear}: shown from lightning_logs/{fitted.name}, a finished run of its" in said
    assert not (out / "lightning_logs").exists()  # nothing trained
    reused = table_rows((out / "compare.html").read_text())
    assert exit_status("compare", linear, "--out", str(out), *SHORT, "--fresh") == 0
    assert "shown from" not in capfd.readouterr().out
    assert len(list((out / "lightning_logs").iterdir())) == 1
    assert table_rows((out / "compare.html").read_text()) == reused
    # the newest finished run of the settings is out's own now; another seed is another run
    assert exit_status("compare", linear, "--out", str(out), *SHORT) == 0
    (shown,) = re.findall(r"shown from (\S+),", capfd.readouterr().out)
    assert Path(shown).parent == out / "lightning_logs"
    assert exit_status("compare", linear, "--out", str(out), *SHORT, "--data.seed=1") == 0
    assert "shown from" not in capfd.readouterr().out
    assert len(list((out / "lightning_logs").iterdir())) == 2


def test_options_with_only_run_directories_or_a_folder_without_events_are_one_line(
    tmp_path, capsys
):
    run = tmp_path / "lightning_logs" / "0000-relu"
    run.mkdir(parents=True)
    assert exit_status("compare", str(run), "--out", str(tmp_path / "page")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"circles: error: compare: not a run directory (no TensorBoard events in it): {run}"
    ]
    (run / "events.out.tfevents.1.host").write_bytes(b"")
    assert exit_status("compare", str(run), "--model.members=3") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "circles: error: compare: --model.members=3: options go to the configs' runs, and there "
        "is none (a run directory is shown as it was trained)"
    ]
    assert exit_status("compare", str(run), "--out", str(tmp_path / "page")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"circles: error: compare: no decision-boundary frames in the TensorBoard events of {run}"
    ]
    assert not (tmp_path / "page").exists()


def test_a_config_that_is_not_there_is_one_line(tmp_path, capsys):
    assert exit_status("compare", "configs/nope.yaml", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "circles: error: compare: no such config file or run directory: configs/nope.yaml"
    ]


def test_a_compare_without_the_test_still_shows_each_runs_best_val_acc(tmp_path, capfd):
    out = tmp_path / "page"
    short = ["--trainer.max_epochs=3", "--data.n_samples=100", "--boundary.every_n_epochs=100"]
    linear = str(CONFIGS / "linear.yaml")
    assert exit_status("compare", linear, "--out", str(out), *short, "--test_after_fit=false") == 0
    page = (out / "compare.html").read_text()
    (best,) = re.findall(r"<td>linear</td><td>1</td><td>([^<]*)</td>", page)
    assert 0 <= float(best) <= 1
    # the sub-runs' arguments are compare's own: Lightning's warning about them is not the user's
    assert "args parameter" not in capfd.readouterr().err


@pytest.mark.parametrize("failing", ["linear.yaml", "relu.yaml"])
def test_a_compare_that_fails_names_the_config_it_was_fitting(tmp_path, capfd, failing):
    configs = [str(CONFIGS / name) for name in ("linear.yaml", "relu.yaml")]
    bad = str(CONFIGS / failing)
    # the failing config's own file gets a bad value; the other fits
    broken = tmp_path / failing
    broken.write_text((CONFIGS / failing).read_text() + "\ndata:\n  noise: -1\n")
    configs[configs.index(bad)] = str(broken)
    short = ["--trainer.max_epochs=2", "--data.n_samples=100", "--boundary.every_n_epochs=100"]
    status = exit_status("compare", *configs, "--out", str(tmp_path / "page"), *short)
    assert status == 2
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith(f"circles: error: {broken}: data.noise must be"), line


@pytest.mark.slow
def test_sigterm_in_a_compare_says_the_page_was_not_written_and_how_to_go_on(tmp_path):
    out = tmp_path / "page"
    long = ["--trainer.max_epochs=100000", "--checkpoint.last_every_n_epochs=5"]
    compare = ["compare", str(CONFIGS / "linear.yaml"), "--out", str(out), *long]
    with train_py(*compare, cwd=tmp_path) as process:
        wait_for(
            lambda: process.poll() is not None or any(out.glob("lightning_logs/*/checkpoints/*")),
            "a checkpoint",
        )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate()
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    (line,) = error_lines(err)
    assert "linear.yaml: fit interrupted by SIGTERM" in line
    assert "--ckpt_path" not in line and "run the compare again" in line
    assert not (out / "compare.html").exists()
