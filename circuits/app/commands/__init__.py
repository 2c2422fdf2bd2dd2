"""Subcommand groups of the ``circuits`` CLI, one module each (see :mod:`circuits.app.cli`), and
what they share: the argparse types that check each numeric flag's range, and the options of a
config class made from its fields (:func:`add_config_options`, :func:`config_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

SEED_MAX = 2**32 - 1


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``low``; argparse names the flag in its error."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
positive_int.__doc__ = "An argparse ``type``: an integer of at least 1 (a count of examples, steps, threads, ...)."


def seed(text: str) -> int:
    """An argparse ``type``: a random seed, an integer from 0 to 2**32 - 1."""
    value = _integer(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse ``type``: a number in (0, 1] (a target faithfulness)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most 1, got {value}")
    return value


def confidence(text: str) -> float:
    """An argparse ``type``: a confidence level in [0, 1) (0 turns the bootstrap bound off)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number greater than 0 (a learning rate)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number of at least 0 (a threshold, a penalty)."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def rows(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``START:STOP`` as two ints with 0 <= START < STOP (rows of a task file)."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        value = int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (two integers, e.g. 256:320), got {text!r}") from None
    if not 0 <= value[0] < value[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is empty or negative; expected 0 <= START < STOP")
    return value


# The argparse types a config field's metadata names (``"type": "positive_int"``).
TYPES: dict[str, Callable[[str], Any]] = {
    "positive_int": positive_int,
    "at_least_3": int_at_least(3),
    "seed": seed,
    "fraction": fraction,
    "confidence": confidence,
    "non_negative_float": non_negative_float,
    "rows": rows,
}


def config_fields(cls: type) -> Iterator[tuple[dataclasses.Field, type | None]]:
    """The fields of the config class ``cls``, each with its type when that is a config class itself
    (a nested phase config), else None."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        nested = hints[f.name]
        yield f, nested if isinstance(nested, type) and dataclasses.is_dataclass(nested) else None


def dest(f: dataclasses.Field) -> str | None:
    """The argparse destination of a field's flag (None: the field has no flag); a field without
    ``flag`` metadata is an error, so that no setting is left out of the command line by accident."""
    if "flag" not in f.metadata:
        raise TypeError(f"config field {f.name!r} names no flag in its metadata (give flag=None for none)")
    flag = f.metadata["flag"]
    return None if flag is None else flag.lstrip("-").replace("-", "_")


def flag_default(f: dataclasses.Field) -> Any:
    """The default of a field's flag: the field's default, negated for a flag meaning its negation."""
    default = f.default
    if f.metadata.get("invert") and default is not None:
        return not default
    return default


def add_config_options(parser: argparse.ArgumentParser, cls: type, groups: dict[str, Any] | None = None) -> None:
    """Add an option (or positional argument) for every field of ``cls`` that names a flag, nested
    configs included, as its metadata says (see :mod:`circuits.app.config`)."""
    groups = {} if groups is None else groups
    for f, nested in config_fields(cls):
        if nested is not None:
            add_config_options(parser, nested, groups)
            continue
        if dest(f) is None:
            continue
        meta = f.metadata
        target: Any = parser
        if "group" in meta:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        if meta.get("positional"):
            target.add_argument(meta["flag"], help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"help": meta["help"]}
        action = meta.get("action")
        if action == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = flag_default(f)
            if action == "optional_bool":
                kwargs["action"] = argparse.BooleanOptionalAction
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
            if "type" in meta:
                kwargs["type"] = TYPES[meta["type"]]
        target.add_argument(*([meta["short"]] if "short" in meta else []), meta["flag"], **kwargs)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config ``cls`` the parsed ``args`` give (the options of :func:`add_config_options`); a
    field without a flag keeps its default."""
    values: dict[str, Any] = {}
    for f, nested in config_fields(cls):
        if nested is not None:
            values[f.name] = config_from_args(nested, args)
            continue
        name = dest(f)
        if name is None:
            continue
        value = getattr(args, name)
        if f.metadata.get("invert") and value is not None:
            value = not value
        if f.metadata.get("zero_is_none") and value == 0:
            value = None
        values[f.name] = value
    return cls(**values)


class Parser(argparse.ArgumentParser):
    """The parser of the ``circuits`` command line and of each (sub)command.

    It records on the namespace the innermost (sub)command parser that read the arguments, so that an
    unknown flag is reported with that subcommand's usage rather than the top-level one; and it adds
    the options :func:`defer` put off just before it parses or prints its help.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def fill(self) -> None:
        """Add the options put off so far."""
        while self.deferred:
            self.deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self.fill()
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "_command_parser"):  # the innermost parser returns first
            parsed._command_parser, parsed._command_extras = self, list(extras)
        return parsed, extras

    def format_help(self) -> str:
        self.fill()
        return super().format_help()


def defer(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``parser``'s options with ``add(parser)`` only when it parses or prints its help (a
    :class:`Parser`; any other parser gets them now): the config classes import torch, which the other
    commands and ``circuits --help`` do without."""
    if isinstance(parser, Parser):
        parser.deferred.append(add)
    else:
        add(parser)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``, shared by every command that runs a model."""
    p.add_argument(
        "--model",
        default="toy",
        help="'toy' (the embedded model, default), a saved toy-model folder, or a HuggingFace name such as gpt2",
    )
    p.add_argument("--device", default=None, help="torch device; default CUDA when present, else CPU")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
