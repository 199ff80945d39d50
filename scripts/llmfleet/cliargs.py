"""The CLI's one error layer: how a bad flag, a bad file or a failure below ends, in one line.

Every subcommand's parser is a :class:`OneLineParser`, so a usage mistake is one line naming the flag and
how to get help. Values are checked where argparse reads them (``positive_int``, ``json_flag``), so the
message names the flag the value came from. :func:`run` maps what a command raises to a message and an
exit code (the table in ``EXIT_CODES``, which the README repeats); nothing a user can cause ends in a
traceback. A failure that is not the user's (a bug) says so, with the way to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from llmfleet.errors import LlmfleetError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FILE = 13
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

# What each exit code means; the error classes in llmfleet.errors and llmfleet.bench.errors carry theirs.
EXIT_CODES = {
    0: "success",
    1: "failed (a problem the message names)",
    2: "usage: a flag or its value is wrong",
    3: "the model catalog is invalid",
    4: "unknown model",
    5: "the host plan cannot be made",
    6: "weights: import, publish, stage or verify failed",
    7: "gateway: policy, keys or HAProxy",
    8: "an instance is not ready (or failed its golden check)",
    9: "capacity: the model does not fit, or its config cannot be read",
    10: "inventory: Terraform's outputs cannot be read",
    11: "GPU topology cannot be read or placed",
    12: "the host's driver or GPUs do not fit the image or plan",
    13: "a file or directory cannot be read or written",
    14: "fleet: the fleet file is wrong, or no node has room for what it asks",
    20: "bench failed",
    21: "sweep failed",
    70: "internal error (a bug in llmfleet; LLMFLEET_DEBUG=1 shows the traceback)",
    130: "interrupted",
}

Model = TypeVar("Model", bound=BaseModel)


class UsageError(LlmfleetError):
    """A flag's value is wrong; the message names the flag."""

    exit_code = EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (not the usage block) and names the way to help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(
    kind: Callable[[str], float], noun: str, ok: Callable[[float], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse ``type=`` that reads ``kind`` and keeps only values ``ok`` accepts; a wrong one is
    refused naming the rule (argparse adds the flag's name)."""

    def read(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value

    return read


positive_int = _number(int, "a whole number", lambda v: v >= 1, "1 or more")
non_negative_int = _number(int, "a whole number", lambda v: v >= 0, "0 or more")
positive_float = _number(float, "a number", lambda v: v > 0, "more than 0")
non_negative_float = _number(float, "a number", lambda v: v >= 0, "0 or more")


def validation_summary(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as one line: ``field: message; field: message``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{prefix}{where}: {error['msg']}" if where else f"{prefix}{error['msg']}")
    return "; ".join(parts)


def json_flag(model: type[Model], flag: str, text: str) -> Model:
    """``--flag`` holds ``model`` as JSON: parse it, or say in one line what is wrong and where."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            error = next(e for e in exc.errors() if e["type"] == "json_invalid")
            raise UsageError(f"{flag} is not valid JSON ({error['msg']}): {text[:80]!r}") from None
        raise UsageError(f"{flag}: {validation_summary(exc)}") from None


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each destination's flag as a user types it (``from_dir`` is ``--from``), over every subcommand."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                names.update(flag_names(child))
        elif action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
        else:
            names.setdefault(action.dest, action.dest.upper())
    return names


def _flag_holding(args: argparse.Namespace, filename: str | None, flags: dict[str, str]) -> str | None:
    """The flag whose value is ``filename`` or a folder above it, to name it in a file error."""
    if not filename:
        return None
    target = os.path.abspath(filename)
    best: tuple[int, str] | None = None
    for name, value in vars(args).items():
        if not isinstance(value, (str, Path)) or not str(value) or name.endswith("command"):
            continue
        held = os.path.abspath(str(value))
        inside = target == held or target.startswith(held.rstrip("/") + "/")
        if inside and (best is None or len(held) > best[0]):
            best = (len(held), flags.get(name, "--" + name.replace("_", "-")))
    return best[1] if best else None


def _file_message(exc: OSError, args: argparse.Namespace, flags: dict[str, str]) -> str:
    what = exc.strerror or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    flag = _flag_holding(args, exc.filename, flags)
    fix = {
        "PermissionError": "run as a user who may write there, or choose another path",
        "FileNotFoundError": "check the path",
        "NotADirectoryError": "give a directory, not a file",
        "IsADirectoryError": "give a file, not a directory",
        "FileExistsError": "remove it or choose another path",
    }.get(type(exc).__name__, "check the path and the disk")
    named = f" (from {flag})" if flag else ""
    return f"cannot use{where}{named}: {what}; {fix}"


def run(
    func: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    flags: dict[str, str] | None = None,
    err: Any = None,
) -> int:
    """Call ``func(args)`` and turn whatever it raises into one line on stderr and an exit code.
    ``flags`` (from :func:`flag_names`) lets a file error name the flag the path came from."""
    err = err or sys.stderr
    try:
        return int(func(args))
    except LlmfleetError as exc:
        print(f"llmfleet: error: {exc}", file=err)
        return exc.exit_code
    except ValidationError as exc:
        print(f"llmfleet: error: invalid input: {validation_summary(exc)}", file=err)
        return EXIT_USAGE
    except OSError as exc:
        print(f"llmfleet: error: {_file_message(exc, args, flags or {})}", file=err)
        return EXIT_FILE
    except ValueError as exc:
        print(f"llmfleet: error: invalid input: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("llmfleet: interrupted", file=err)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, keep the traceback for whoever asks
        if os.environ.get("LLMFLEET_DEBUG"):
            raise
        print(
            f"llmfleet: internal error: {type(exc).__name__}: {exc} (a bug in llmfleet; "
            "run again with LLMFLEET_DEBUG=1 for the traceback and report it)",
            file=err,
        )
        return EXIT_BUG


def dump_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def add_command(
    parent: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_text: str,
) -> argparse.ArgumentParser:
    """One subcommand whose ``--help`` and summary line are the same text, run as ``func(args)``."""
    p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=func)
    return p


def add_group(
    parent: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_text: str,
    metavar: str = "ACTION",
) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """A subcommand that only holds actions (``llmfleet weights stage``): the actions' subparsers."""
    group = parent.add_parser(name, help=help_text)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar=metavar)
