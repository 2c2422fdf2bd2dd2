"""The ``circuits`` command line: a thin layer over the library, one module per command group.

Each module in :data:`COMMAND_MODULES` has a ``register(subparsers)`` function that adds its
subcommands and sets ``func`` on their parsers; ``func(args)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from attribution.core import AttributionError
from circuits.errors import CircuitsError
from replacement.errors import ReplacementError

COMMAND_MODULES = [
    "circuits.commands.toy",
    "circuits.commands.tasks",
    "circuits.commands.dictionaries",
    "circuits.commands.attribution",
    "circuits.commands.discover",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuits",
        description="Circuit discovery over sparse feature graphs: replace a model's sublayers with "
        "sparse dictionaries, attribute the task metric to features and edges, prune to a circuit "
        "and measure its faithfulness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CircuitsError, ReplacementError, AttributionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
