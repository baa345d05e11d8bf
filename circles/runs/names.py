"""Names of runs made from their settings: ``relu-10x10-sgd0.1-e1000-n0.03`` (run directories,
sweep points)."""

from __future__ import annotations

import hashlib
import inspect
import json
import pkgutil
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Name parts of well-known keys, in the order they appear in a point's name; other keys follow as
# ``<last><value>``.
_NAME_ORDER = (
    "data.dataset",
    "model.activation",
    "model.hidden_sizes",
    "model.network",
    "model.optimizer.class_path",
    "model.optimizer.init_args.lr",
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
    "model.network": "",
    "model.optimizer.init_args.lr": "lr",
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
        elif key == "model.optimizer.class_path":
            lr = settings.get("model.optimizer.init_args.lr")
            parts.append(short(value).lower() + ("" if lr is None else short(lr)))
        elif key == "model.optimizer.init_args.lr" and "model.optimizer.class_path" in settings:
            continue  # in the optimizer's part; alone, ``lr<value>`` as _PREFIX has it
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
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name if len(name) <= MAX_NAME else f"{name[: MAX_NAME - 11]}-{digest}"


# callbacks that change what a run is, as their part of its name: a run stopped early or preceded
# by the learning-rate finder is told apart from the plain one
_CALLBACK_PARTS = {"EarlyStopping": "earlystop", "LearningRateReport": "lrfind"}


def callback_names(config: Mapping[str, Any]) -> list[str]:
    """The class names of a config's ``trainer.callbacks``, in order."""
    callbacks = (config.get("trainer") or {}).get("callbacks")
    return [
        str(c["class_path"]).rsplit(".", 1)[-1]
        for c in (callbacks if isinstance(callbacks, list) else [])
        if isinstance(c, Mapping) and c.get("class_path")
    ]


def label_of(config: Mapping[str, Any]) -> str:
    """What a fit of ``config`` (as a dict) trains, for its run directory's name:
    ``relu-10x10-sgd0.1-e1000-circles`` (the model first: what runs differ in most, where
    TensorBoard's cards cut names off)."""
    model, data = config["model"], config["data"]
    optimizer = model.get("optimizer") or {}
    dataset = Path(data["path"]).stem if data.get("path") else data["dataset"]
    if not data.get("path") and data.get("classes") not in (None, 2):
        dataset += str(data["classes"])  # spiral3: a three-arm spiral
    network = (model.get("network") or {}).get("class_path")  # one's own in place of the MLP
    settings = {
        "model.activation": None if network else model["activation"],
        "model.hidden_sizes": None if network else list(model["hidden_sizes"]),
        "model.network": network.rsplit(".", 1)[-1] if network else None,
        "model.optimizer.class_path": optimizer.get("class_path"),
        "model.optimizer.init_args.lr": (optimizer.get("init_args") or {}).get("lr"),
        "trainer.max_epochs": config["trainer"].get("max_epochs"),
    }
    if model.get("members", 1) > 1:
        settings["model.members"] = model["members"]
    return shortened(
        "-".join(
            [
                run_label({k: v for k, v in settings.items() if v is not None}),
                *[_CALLBACK_PARTS[n] for n in callback_names(config) if n in _CALLBACK_PARTS],
                short(dataset),
            ]
        )
    )


def run_hyperparameters(config: Mapping[str, Any], bayes: float | None = None) -> dict[str, Any]:
    """The run's settings that the model's and data's hyperparameters leave out: seed, epochs,
    the optimizer and the settings of it that were chosen (not its defaults), the callbacks; with
    ``bayes``, the best accuracy possible on the data."""
    hparams: dict[str, Any] = {
        "seed_everything": config.get("seed_everything"),
        "max_epochs": (config.get("trainer") or {}).get("max_epochs"),
    }
    optimizer = (config.get("model") or {}).get("optimizer")
    if isinstance(optimizer, Mapping) and optimizer.get("class_path"):
        defaults = inspect.signature(pkgutil.resolve_name(optimizer["class_path"])).parameters
        hparams["optimizer"] = optimizer["class_path"].rsplit(".", 1)[-1]
        hparams.update(
            {
                f"optimizer.{k}": v
                for k, v in (optimizer.get("init_args") or {}).items()
                if k not in defaults or not same(v, defaults[k].default)
            }
        )
    # e.g. EarlyStopping: max_epochs is then a limit, not what was trained
    if callbacks := callback_names(config):
        hparams["callbacks"] = ", ".join(callbacks)
    hparams["bayes_acc"] = f"{bayes:.4f}" if bayes is not None else "unknown"
    return hparams


def same(value: Any, default: Any) -> bool:
    """A setting equals its default, a list as the tuple it stands for (``betas: [0.9, 0.999]``)."""
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    try:
        return bool(value == default)
    except (RuntimeError, TypeError, ValueError):  # a tensor of several values, say
        return False
