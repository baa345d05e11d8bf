"""Names of runs made from their settings: ``relu-10x10-sgd0.1-e1000-n0.03`` (run directories,
sweep points)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Name parts of well-known keys, in the order they appear in a point's name; other keys follow as
# ``<last><value>``.
_NAME_ORDER = (
    "data.dataset",
    "model.activation",
    "model.hidden_sizes",
    "optimizer.class_path",
    "optimizer.init_args.lr",
    "trainer.max_epochs",
    "model.members",
    "data.noise",
    "data.factor",
    "data.n_samples",
    "seed_everything",
    "data.seed",
)
_PREFIX = {
    "data.dataset": "",
    "optimizer.init_args.lr": "lr",
    "trainer.max_epochs": "e",
    "data.noise": "n",
    "data.factor": "f",
    "data.n_samples": "N",
    "seed_everything": "s",
    "data.seed": "d",
}


def short(value: Any) -> str:
    """A compact, file-name-safe rendering of a value: ``[10, 10]`` -> ``10x10``,
    ``torch.optim.SGD`` -> ``SGD``."""
    if isinstance(value, (list, tuple)):
        text = "x".join(short(v) for v in value) if value else "0"
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, str) and value.count(".") >= 1 and value.split(".")[-1][:1].isupper():
        text = value.rsplit(".", 1)[-1]  # a class path
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+]", "_", text)


def run_label(settings: Mapping[str, Any]) -> str:
    """``relu-10x10-sgd0.1-e1000-n0.03``: a run's settings (dotted config keys) as a name,
    well-known keys first."""
    keys = [k for k in _NAME_ORDER if k in settings] + [k for k in settings if k not in _NAME_ORDER]
    parts = []
    for key in keys:
        value = settings[key]
        if key == "model.activation":
            parts.append("linear" if value == "none" else short(value))
        elif key == "model.hidden_sizes":
            parts.append(short(value) if value else "nohidden")
        elif key == "optimizer.class_path":
            lr = settings.get("optimizer.init_args.lr")
            parts.append(short(value).lower() + ("" if lr is None else short(lr)))
        elif key == "optimizer.init_args.lr":
            if "optimizer.class_path" not in settings:
                parts.append("lr" + short(value))
        elif key == "model.members":
            parts.append(f"{short(value)}seeds")
        else:
            parts.append(_PREFIX.get(key, key.rsplit(".", 1)[-1]) + short(value))
    return shortened("-".join(parts))


# characters of a run's name: file systems take 255 bytes, and a run directory's name is a part of
# more
MAX_NAME = 100


def shortened(name: str) -> str:
    """``name`` if it is at most ``MAX_NAME`` characters, else its start and a digest of the
    whole (distinct names stay distinct)."""
    if len(name) <= MAX_NAME:
        return name
    import hashlib

    return f"{name[: MAX_NAME - 11]}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
