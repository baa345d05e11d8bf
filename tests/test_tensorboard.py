"""TensorBoard as a learner sees it: a real run, the command its summary prints, a real TensorBoard
server on 127.0.0.1 and Chromium (Debian's, driven by Playwright) looking at the page.

``python tests/test_tensorboard.py`` makes README's screenshots (``docs/tensorboard_*.png``) the
same way, from the README's main job and configs/improved.yaml."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import CHROMIUM, REPO, free_port, run_if

# Headless Chromium on a machine without network or display: no sandbox (root), no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# 13 frames (epochs 0, 2, ..., 22 and the last, 23): more than TensorBoard keeps by default
EPOCHS, EVERY = (
    24,
    2,
)

pytestmark = [pytest.mark.slow, run_if(chromium=True), pytest.mark.xdist_group("tensorboard")]


def fit(cwd: Path, *args: str) -> str:
    """``python train.py fit ARGS`` in ``cwd``; returns the TensorBoard command its summary
    prints."""
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (command,) = re.findall(r"^Open it in TensorBoard: (.+)$", out, re.M)
    return command


@contextlib.contextmanager
def tensorboard(command: str, cwd: Path, runs: int) -> Iterator[str]:
    """Run the printed ``tensorboard ...`` command (on a free port of 127.0.0.1) until the block
    ends; yields its address once it lists the ``runs`` runs."""
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("tensorboard")),
        *shlex.split(command)[1:],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        listed = 0
        while listed < runs:
            with contextlib.suppress(OSError):  # not listening yet
                names = json.loads(urllib.request.urlopen(url + "data/runs", timeout=2).read())
                listed = len({name.split("/")[0] for name in names})
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A page of headless Chromium (Debian's binary: Playwright downloads no browser of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(0)  # no clock: a busy machine only takes longer
            yield page
        finally:
            chromium.close()


def open_landing_page(page, url: str) -> None:
    """TensorBoard's first page, once its charts have loaded."""
    page.goto(url)
    page.wait_for_selector("scalar-card-component")
    page.wait_for_timeout(1500)  # the charts draw their lines after the cards appear


@contextlib.contextmanager
def tags_filtered(page, url: str, regex: str) -> Iterator[None]:
    """The page with ``regex`` typed into the tag filter, as a learner finds the cards below the
    curves (TensorBoard makes a card only when it is scrolled to); the first page again after."""
    tags = page.locator("input[placeholder='Filter tags (regex)']")
    tags.fill(regex)
    page.wait_for_timeout(1500)
    try:
        yield
    finally:
        tags.fill("")
        open_landing_page(page, url)


def boundary_frame(page, run: str):
    """The card of ``run``'s decision-boundary frames (the filter set to them)."""
    # 0000-; the first: the filtered view and its group may both hold the card for a moment
    frame = page.locator("image-card-component").filter(has_text=run[:5]).first
    frame.locator("img").wait_for()
    return frame


def open_hparams(page, url: str) -> None:
    page.goto(url + "#hparams")
    page.wait_for_selector("text=best val acc")
    page.wait_for_timeout(1000)


# ---------------------------------------------------------------------------------------------------- the tests


# once per test process: the test runner may run other files' tests between these
@pytest.fixture(scope="session")
def learner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, str]]:
    """README's main job, shortened, an evaluation of it, and two more fits (the linear model,
    improved.yaml: the third fit is where a colour per sub-run repeated), seen in Chromium as the
    summary says to open them: (page, TensorBoard's address, the main job's run name)."""
    cwd = tmp_path_factory.mktemp("learner")
    command = fit(
        cwd,
        "--config",
        str(REPO / "configs" / "relu.yaml"),
        f"--trainer.max_epochs={EPOCHS}",
        f"--boundary.every_n_epochs={EVERY}",
        "--boundary.show_neurons=true",
    )
    (run,) = (p.name for p in (cwd / "lightning_logs").iterdir())
    # an evaluation: it must stay out of the way
    subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "test",
            f"--ckpt_path=lightning_logs/{run}/checkpoints/last.ckpt",
            "--data.test_samples=500",
        ],
        cwd=cwd,
        capture_output=True,
        check=True,
    )
    for config in ("linear.yaml", "improved.yaml"):
        fit(cwd, "--config", str(REPO / "configs" / config), "--trainer.max_epochs=2")
    with tensorboard(command, cwd, runs=3) as url, browser() as page:
        open_landing_page(page, url)
        yield page, url, run


# each line of a chart: its colour and its run, as the chart's table lists them
LINES = """card => Array.from(card.querySelectorAll('.row-circle span')).map(dot => [
    getComputedStyle(dot).backgroundColor,
    dot.closest('tb-data-table-content-row').innerText.trim().split(/\\s+/)[0]])"""


def test_the_first_page_shows_train_beside_val_one_colour_per_fit_and_the_boundary(learner):
    page, url, run = learner
    # numbered, named after what it trains, model first
    assert run == f"0000-relu-10x10-sgd0.1-e{EPOCHS}-circles"
    runs = [
        line.strip()
        for line in page.locator("tb-runs-table, runs-selector").first.inner_text().splitlines()
        if line.strip() and line.strip() != "Run"
    ]
    # the fits, and nothing else: the evaluation wrote into the run it evaluated
    assert runs[0] == run and len(runs) == 3 and not any("evaluation" in r for r in runs), runs
    charts = page.locator("scalar-card-component")
    titles = [charts.nth(i).locator(".heading").inner_text().replace("\n", "") for i in range(4)]
    # the curves group first, train beside val
    assert titles == ["curves/acc_train", "curves/acc_val", "curves/loss_train", "curves/loss_val"]
    colours = [
        dict((name, colour) for colour, name in charts.nth(i).evaluate(LINES)) for i in range(4)
    ]
    # every chart draws every fit, each fit in one colour everywhere, no two fits alike
    assert all(set(c) == set(runs) for c in colours) and all(c == colours[0] for c in colours)
    assert len(set(colours[0].values())) == 3, colours
    with tags_filtered(page, url, "decision_boundary/train_val"):
        frame = boundary_frame(page, run)
        # the main job's own frames, its last epoch first
        assert frame.locator("img").get_attribute("alt") == f"Image at step {EPOCHS - 1}"
        shown = frame.locator("img").bounding_box()
        # the frame, its 17-pixel text at 12 or more
        assert shown is not None and shown["width"] >= 0.7 * 408


def test_the_frame_slider_reaches_epoch_0_and_the_last_epoch(learner):
    page, url, run = learner
    with tags_filtered(page, url, "decision_boundary/train_val"):
        frame = boundary_frame(page, run)
        slider = frame.locator("input[type=range]")
        # every frame kept: 13 steps, slider 0..12
        assert slider.get_attribute("max") == str(EPOCHS // EVERY)
        slider.focus()
        slider.press("Home")
        page.wait_for_timeout(300)
        assert frame.locator(".step").inner_text() == "Step 0"
        assert frame.locator("img").get_attribute("alt") == "Image at step 0"
        slider.press("End")
        page.wait_for_timeout(300)
        assert frame.locator(".step").inner_text() == f"Step {EPOCHS - 1}"


def test_the_neuron_pictures_are_shown_large_enough_to_read(learner):
    """Each hidden layer's units (``boundary.show_neurons``): a card per layer, its picture shown
    at 3/5 of its size or more, so that the 17-pixel captions under the tiles read at 10."""
    page, url, _ = learner
    with tags_filtered(page, url, "neurons"):
        cards = page.locator("image-card-component", has_text="neurons")
        headings = {c.split()[1] for c in cards.locator(".heading").all_inner_texts()}
        assert headings == {"/layer_1", "/layer_2"}, headings  # 10 units each
        for i in range(cards.count()):
            cards.nth(i).scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            picture = cards.nth(i).locator("img")
            natural = picture.evaluate("image => image.naturalWidth")
            shown = picture.bounding_box()
            assert shown is not None and shown["width"] >= 0.6 * natural, (shown, natural)


def test_hparams_shows_the_settings_people_vary_and_the_metrics_that_matter(learner):
    page, url, run = learner
    open_hparams(page, url)
    cells = [c.strip() for c in page.locator("vaadin-grid-cell-content").all_inner_texts()]
    header = cells[: cells.index("test acc") + 1]
    # the five settings ticked first, then the metrics
    assert header == [
        "Trial ID",
        "Show Metrics",
        "activation",
        "dataset",
        "hidden layers",
        "epochs",
        "optimizer",
        "best val acc",
        "test acc",
    ]
    assert cells.count("0000-test") == 0 and cells.count(run) == 1  # fits are the trials, each once
    # the run's row: its name as the trial id, its settings written as set
    row = cells[cells.index(run) :]
    assert row[2:7] == ["relu", "circles", "[10, 10]", str(EPOCHS), "SGD lr 0.1"]
    # the grid may hold an empty cell between them
    metrics = [float(cell) for cell in row[7:10] if cell]
    # best val acc, and the fit's test acc
    assert len(metrics) == 2 and all(0.4 <= m <= 1 for m in metrics)
    page.locator("text=PARALLEL COORDINATES VIEW").first.click()
    page.wait_for_timeout(1500)
    # each fit is drawn: a line through every axis
    assert page.locator("g.foreground path").count() == 3
    open_landing_page(page, url)


# ---------------------------------------------------------------------------------------------- screenshots


def screenshots(out: Path) -> None:
    """``docs/tensorboard_curves.png`` and ``docs/tensorboard_hparams.png``: README's main job
    (configs/relu.yaml) and configs/improved.yaml, as TensorBoard shows them with the command the
    summary prints."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        command = fit(cwd, "--config", str(REPO / "configs" / "relu.yaml"))
        fit(cwd, "--config", str(REPO / "configs" / "improved.yaml"))
        with tensorboard(command, cwd, runs=2) as url, browser(width=1600, height=1000) as page:
            open_landing_page(page, url)
            page.screenshot(path=str(out / "tensorboard_curves.png"))
            open_hparams(page, url)
            page.screenshot(path=str(out / "tensorboard_hparams.png"))


if __name__ == "__main__":
    screenshots(REPO / "docs")
    print("docs/tensorboard_curves.png, docs/tensorboard_hparams.png")
