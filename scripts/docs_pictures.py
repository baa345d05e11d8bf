"""README's pictures, made by the project itself: ``python scripts/docs_pictures.py`` (about a
minute on 2 cores).

- ``docs/decision_boundary_linear.png``, ``docs/decision_boundary_relu.png``: the
  ``decision_boundary.png`` of ``fit --config configs/linear.yaml`` and ``configs/relu.yaml``;
- ``docs/compare.png``: ``circles compare configs/linear.yaml configs/relu.yaml
  configs/improved.yaml``, and ``docs/compare_page.png``: its page in Chromium at epoch 15
  (skipped, saying so, without Chromium);
- ``docs/layers_8x8.png``, ``docs/layers_2x2x2.png``: TensorBoard's last ``layers/plane`` of
  ``fit --config configs/improved.yaml --model.hidden_sizes "[8, 8]"`` (and ``"[2, 2, 2]"``) with
  ``--trainer.max_epochs 300 --boundary.show_layers true``;
- ``docs/tensorboard_curves.png``, ``docs/tensorboard_hparams.png``: TensorBoard in Chromium
  (``tests/test_tensorboard.py``'s screenshots; skipped, saying so, without Chromium).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def train(cwd: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, check=True, capture_output=True
    )


def layer_pictures(cwd: Path) -> None:
    """The last ``layers/plane`` picture TensorBoard shows of two improved.yaml runs, one wide
    and one 2 units wide."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for hidden, name in (("[8, 8]", "8x8"), ("[2, 2, 2]", "2x2x2")):
        train(
            cwd,
            "fit",
            "--config",
            str(REPO / "configs" / "improved.yaml"),
            f"--model.hidden_sizes={hidden}",
            "--trainer.max_epochs=300",
            "--boundary.show_layers=true",
        )
        (run,) = [p for p in (cwd / "lightning_logs").iterdir() if f"-{name}-" in p.name]
        events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
        last = events.Images("layers/plane")[-1]
        (DOCS / f"layers_{name}.png").write_bytes(last.encoded_image_string)


def page_screenshot(page: Path) -> None:
    """The top of compare's page in a 1440x900 window, its slider at epoch 15."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_tensorboard import browser

    with browser(width=1440, height=900) as window:
        window.goto(page.as_uri())
        slider = window.locator("#position")
        slider.focus()
        while window.locator("#epoch").inner_text() != "epoch 15":
            slider.press("ArrowRight")
        window.screenshot(path=str(DOCS / "compare_page.png"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for name in ("linear", "relu"):
            train(cwd, "fit", "--config", str(REPO / "configs" / f"{name}.yaml"))
            (run,) = [p for p in (cwd / "lightning_logs").iterdir() if f"-{name}-" in p.name]
            shutil.copy(run / "decision_boundary.png", DOCS / f"decision_boundary_{name}.png")
        configs = [
            str(REPO / "configs" / f"{name}.yaml") for name in ("linear", "relu", "improved")
        ]
        train(cwd, "compare", *configs, "--out", str(cwd / "compare"))
        layer_pictures(cwd)
        shutil.copy(cwd / "compare" / "compare.png", DOCS / "compare.png")
        print("docs/decision_boundary_{linear,relu}.png, docs/compare.png")
        sys.path.insert(0, str(REPO / "tests"))
        from test_tensorboard import CHROMIUM, screenshots

        if Path(CHROMIUM).is_file():
            page_screenshot(cwd / "compare" / "compare.html")
            print("docs/compare_page.png")
    if Path(CHROMIUM).is_file():
        screenshots(DOCS)
        print("docs/tensorboard_curves.png, docs/tensorboard_hparams.png")
    else:
        print(f"TensorBoard's screenshots need Chromium at {CHROMIUM}: not made")


if __name__ == "__main__":
    main()
