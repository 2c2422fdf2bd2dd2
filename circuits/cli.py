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


class _Parser(argparse.ArgumentParser):
    """Records on the namespace the innermost (sub)command parser that read the arguments, so that an
    unknown flag is reported with that subcommand's usage rather than the top-level one."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "_command_parser"):  # the innermost parser returns first
            parsed._command_parser, parsed._command_extras = self, list(extras)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    args, extras = parser.parse_known_args(argv)
    if extras:
        # a flag after the subcommand is that subcommand's error; one before it, the top level's
        own = args._command_extras
        (args._command_parser if own else parser).error(f"unrecognized arguments: {' '.join(own or extras)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CircuitsError, ReplacementError, AttributionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
