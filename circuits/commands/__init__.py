"""Subcommand groups of the ``circuits`` CLI, one module each (see :mod:`circuits.cli`)."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``, shared by every command that runs a model."""
    p.add_argument("--model", default="toy", help="'toy' (the embedded model, default), a saved toy-model folder, or a HuggingFace name such as gpt2")
    p.add_argument("--device", default=None, help="torch device; default CUDA when present, else CPU")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
