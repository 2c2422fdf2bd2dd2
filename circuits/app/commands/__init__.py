"""Subcommand groups of the ``circuits`` CLI, one module each (see :mod:`circuits.app.cli`)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

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


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``, shared by every command that runs a model."""
    p.add_argument("--model", default="toy", help="'toy' (the embedded model, default), a saved toy-model folder, or a HuggingFace name such as gpt2")
    p.add_argument("--device", default=None, help="torch device; default CUDA when present, else CPU")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
