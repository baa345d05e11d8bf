"""The one place where what goes wrong becomes what the user of the command line sees: one
``circles: error:`` line naming the option and what to do, and an exit status, instead of a
traceback; and Lightning's messages that say nothing to them, hidden."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import inspect
import re
import signal
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from circles.errors import (
    CirclesError,
    ConfigError,
    InputError,
    SettingError,
    SignalStop,
)
from circles.model.training import TrainingDiverged
from circles.runs.logger import TensorBoardRunLogger
from circles.runs.record import check_trained_model

# the command line being run (set by its first hook), for the errors that name its settings
RUNNING: contextvars.ContextVar[Any] = contextvars.ContextVar("running_cli", default=None)


class CirclesArgumentParser(LightningArgumentParser):
    """Raises a parse error (unknown option, a value out of its range, bad YAML, a missing file)
    as one error that names the option and what it accepts, instead of printing the usage; and
    refuses a model setting that a checkpoint's would replace unseen."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # jsonargparse parses with errors as exceptions where it tries alternatives
        if not self.exit_on_error:
            super().error(message, ex)
        raise InputError(parse_error_text(message, getattr(ex, "subcommand_parser", None) or self))

    @override
    def parse_object(self, obj: Any, namespace: Any = None, **kwargs: Any) -> Any:
        """LightningCLI reads a checkpoint's model settings (``{subcommand: {"model": ...}}``)
        over the config (``namespace``) with this: one the config sets otherwise than both its
        default and the checkpoint's is refused, not dropped (validate, test and predict run the
        network the checkpoint holds, fit continues it)."""
        checkpoint = None
        for subcommand, given in obj.items() if isinstance(obj, dict) else ():
            model = given.get("model") if isinstance(given, dict) else None
            config = namespace.get(subcommand) if isinstance(namespace, Namespace) else None
            if isinstance(model, dict) and isinstance(config, Namespace):
                check_trained_model(subcommand, model, config)
                checkpoint = config.get("ckpt_path")
        try:
            return super().parse_object(obj, namespace, **kwargs)
        except InputError as err:
            if checkpoint is None:
                raise
            raise InputError(
                f"{checkpoint} holds settings this model does not take: {err} It was changed, "
                "or written by another version of circles: train the network again with fit."
            ) from None


# what a jsonargparse type is called where a value must be of it
PHRASES = {
    "OpenUnitInterval": "a number strictly between 0 and 1",
    "NoneType": "null",
    "Tensor": "a tensor",
}
KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a text"}


def parse_error_text(message: str, parser: Any) -> str:
    """jsonargparse's error as one line: ``data.noise must be a number from 0 to 1e+30, got
    -0.1.``; an unknown option with the options there are and the closest one."""
    unknown = [
        f"{group}.{key}" if group else key
        for group, key in re.findall(
            r"(?:Group '([^']+)' )?does not accept option '([^']+)'", message
        )
    ]
    if message.startswith("unrecognized arguments:"):
        unknown = [arg[2:].split("=")[0] for arg in message.split()[2:] if arg.startswith("--")]
    if unknown:
        return " ".join(_unknown_option_text(parser, key) for key in unknown)
    keys = re.findall(r'Parser key "([^"]+)":', message)  # a class's argument: its own key last
    text = (
        " ".join(message.split('":', len(keys))[-1].split()) if keys else " ".join(message.split())
    )
    if keys[1:]:  # the class's Namespace, repeated after its argument's error
        text = re.sub(r"\. Got value: Namespace\(.*$", ".", text)
    head = text.split("Errors:")[0]
    wanted = [f"one of {choices}" for choices in re.findall(r"Literal\[([^\]]*)\]", head)]
    classes = re.findall(r"<class '(?:\w+\.)*([^']+)'>", head)
    wanted += [PHRASES.get(t, KINDS.get(t, t)) for t in classes]
    given = re.search(r"Given value: (.*?)\.?$", text)
    # Optional[...]: what each type wanted, unless the class given lacks a required argument
    if "Union subtypes" in text and wanted and given and "are required:" not in text:
        text = f"must be {' or '.join(wanted)}, got {given[1]}."
    for pattern, replace in REWRITES:
        text = re.sub(pattern, replace, text)
    return (  # the rewrites' {key}: the key
        f"{(key := '.'.join(keys))}: {text}".replace(": must be", " must be").replace("{key}", key)
        if keys
        else text
    )


def _restricted(match: re.Match[str]) -> str:
    """A value out of a restricted type's range, or not a number at all (quoted: given as text)."""
    value = match[2] or "another value"
    value = value[1:-1] if len(value) > 1 and value[0] == value[-1] == "'" else value
    quoted = re.fullmatch(r"\"(.*)\"|'(.*)'", value)
    got = f"the text {quoted[1] or quoted[2]!r} (write it without quotes)" if quoted else value
    return f"must be {PHRASES.get(match[1], match[1])}, got {got}."


# jsonargparse's words for what is wrong with a value -> what the value must be
REWRITES: list[tuple[str, Any]] = [
    (r"Not of type (.+?): (.*?) ?does not conform to restriction .*", _restricted),
    (
        r"Not of type (.+?): (?:could not convert string to float|invalid literal for int\(\) "
        r"with base 10): (.*)$",
        _restricted,
    ),
    (r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*?)\.?$", r"must be one of \1, got \2."),
    (
        r"Expected a <class '(\w+)'>\. Got value: (.*?)\.?$",
        lambda m: f"must be {KINDS.get(m[1], m[1])}, got {m[2]}.",
    ),
    (  # a class given without an argument it requires (StepLR without step_size)
        r".*the following arguments are required: ([\w, ]+?) - .*class_path='([\w.]+)'.*",
        lambda m: (
            f"{m[2]} needs {m[1]}, which has no default: give it (--{{key}}.{m[1]} VALUE, or "
            f"init_args: {{{m[1]}: VALUE}} in a config)."
        ),
    ),
    (r"^Problems parsing config: ", "the config is not valid YAML: "),
    (r' in "<unicode string>",', " at"),
    (  # a class_path that does not import
        r".*expects a function or a callable class: (.*)\. Got value: (.*)",
        r"must be a class that can be imported (such as torch.optim.Adam), got \2: \1.",
    ),
]


def _unknown_option_text(parser: Any, key: str) -> str:
    group, _, name = key.rpartition(".")
    prefix = f"{group}." if group else ""
    options = [
        k[len(prefix) :].split(".")[0] for k in parser.get_defaults().keys() if k.startswith(prefix)
    ]
    options = [o for o in dict.fromkeys(options) if o and o != "config"]
    if not options and group:  # an unknown section: the options at the top
        return _unknown_option_text(parser, key.split(".")[0]).replace(key.split(".")[0], key, 1)
    close = difflib.get_close_matches(name, options, n=1)
    guess = f" Did you mean {prefix}{close[0]}?" if close else ""
    where = f"{group} accepts" if group else "the options are"
    return f"{key} is not an option; {where}: {', '.join(options)}.{guess}"


def _raised_in(err: BaseException, where: str) -> bool:
    """Whether ``err`` came through a function of this name, or a file of this name (Lightning's,
    where it reads a checkpoint or builds the Trainer)."""
    frames = traceback.extract_tb(err.__traceback__)
    return any(frame.name == where or frame.filename.endswith(where) for frame in frames)


@contextlib.contextmanager
def reported(sections: Mapping[str, Any]) -> Iterator[None]:
    """Turn what goes wrong inside the command line (parsing, building or running) into the errors
    :func:`one_line_errors` reports (:func:`_translated`); SIGTERM or Ctrl-C as an interruption
    of the subcommand. Lightning ignores Ctrl-C after handling one, so Ctrl-C's handler is put
    back afterwards."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    token = RUNNING.set(None)
    try:
        yield
    except (SIGTERMException, SignalStop) as stop:
        raise _interrupted(getattr(stop, "signum", signal.SIGTERM)) from None
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C so
            raise _interrupted(signal.SIGINT) from None
        raise
    except Exception as err:
        raise _translated(err, sections) from None
    finally:
        logger = getattr(_running("trainer"), "logger", None)
        if isinstance(logger, TensorBoardRunLogger):  # a command refused before its run
            logger.release()
        RUNNING.reset(token)
        if ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)


def _translated(err: Exception, sections: Mapping[str, Any]) -> Exception:
    """A bad value named by its config section (the first of ``sections``, ``{section: class}``,
    whose class takes it), a setting Lightning or torch rejected, a checkpoint Lightning could not
    read, a diverged fit with how to set the rate; a run directory made for input that was then
    refused is removed. Anything else is not the user's to fix: as it was."""
    if isinstance(err, (ConfigError, SettingError)):
        err = err.qualified(section_of(sections, err.field))
    elif isinstance(err, MisconfigurationException):  # Lightning names the setting: "`mode` ..."
        name = re.search(r"`(\w+)`", str(err))
        err = SettingError(section_of(sections, name[1]) if name else None, err)
    elif isinstance(err, TrainingDiverged) and err.setting:
        err.notes.insert(0, f"Set it with --model.optimizer.{err.setting}.")
    elif not isinstance(err, CirclesError):
        err = _library_error(err)
    if isinstance(err, (InputError, OSError)):  # a run directory made for nothing
        _forget_empty_run(_running("trainer"))
    return err


def _running(attribute: str) -> Any:
    return getattr(RUNNING.get(), attribute, None)


def _library_error(err: Exception) -> Exception:
    """A checkpoint LightningCLI could not read (circles' reader says why), a setting the Trainer
    refused, weights that do not fit the model; anything else (a full disk: the file, the cause)
    as it was."""
    from circles.runs.checkpoints import load_lightning_checkpoint

    config = _running("config")
    path = config[config.subcommand].get("ckpt_path") if config else "The checkpoint"
    if _raised_in(err, "_parse_ckpt_path"):  # read with torch.load (weights only)
        load_lightning_checkpoint(path)  # says what is wrong
    elif _raised_in(err, "_instantiate_trainer"):
        return SettingError("trainer", err)
    elif isinstance(err, OSError) and config and config[config.subcommand].get("ckpt_path"):
        err.checkpoint = path  # type: ignore[attr-defined]  # the advice keeps the file, not best
    elif str(err).startswith("Error(s) in loading state_dict"):
        return InputError(
            f"{path} holds weights that do not fit the network its settings describe (the file "
            f"was changed, or written by other code): {' '.join(str(err).split())}"
        )
    elif _raised_in(err, "checkpoint_connector.py"):  # Lightning restoring what the file holds
        because = " ".join(str(err).strip(chr(39)).split()).rstrip(".")
        return InputError(
            f"{path} cannot be continued: {because}. Test its weights with test --ckpt_path, or "
            "start a new run without --ckpt_path."
        )
    return err


def section_of(sections: Mapping[str, Any], field: str | None) -> str | None:
    """The first of ``sections`` whose class takes an argument called ``field`` (``optimizer``
    of ``optimizer.lr``)."""
    name = (field or "").split(".")[0]
    return next(
        (s for s, cls in sections.items() if name in inspect.signature(cls).parameters), None
    )


def _interrupted(signum: int) -> CirclesError:
    """A subcommand stopped by ``signum``; a run directory it left empty is removed."""
    from circles.callbacks.signals import interruption

    _forget_empty_run(_running("trainer"))  # a fit stopped in its set-up wrote nothing either
    return interruption(_running("trainer"), str(_running("subcommand")), signum)


def _forget_empty_run(trainer: Any) -> None:
    logger = trainer.logger if trainer is not None else None
    if isinstance(logger, TensorBoardRunLogger):
        logger.forget_if_empty()
