"""The ``circuits`` command line: a thin layer over the library, one module per command group.

Each module in :data:`COMMAND_MODULES` has a ``register(subparsers)`` function that adds its
subcommands and sets ``func`` on their parsers; ``func(args)`` returns the exit status.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable

from circuits.app.commands import Parser

COMMAND_MODULES = [
    "circuits.app.commands.toy",
    "circuits.app.commands.tasks",
    "circuits.app.commands.dictionaries",
    "circuits.app.commands.attribution",
    "circuits.app.commands.discover",
]


def build_parser(*, lazy: bool = False) -> Parser:
    """The ``circuits`` parser. ``lazy``: the options of a subcommand that :func:`circuits.app.commands.defer`
    put off are added only when it parses (as :func:`main` does: a command imports only what it
    needs); otherwise every option is there (for a caller that inspects them)."""
    parser = Parser(
        prog="circuits",
        description="Circuit discovery over sparse feature graphs: replace a model's sublayers with "
        "sparse dictionaries, attribute the task metric to features and edges, prune to a circuit "
        "and measure its faithfulness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    if not lazy:
        for command in sub.choices.values():
            if isinstance(command, Parser):
                command.fill()
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise ``KeyboardInterrupt`` (so a killed run cleans up as on Ctrl-C); return the undo.

    Only in the main thread (the only one that may set handlers), and not where SIGTERM is ignored.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def main(argv: list[str] | None = None) -> int:
    """Run the ``circuits`` command line on ``argv``; return the exit status.

    A user error prints ``error: <message>`` on stderr and returns 2; Ctrl-C (or SIGTERM) prints one
    line, ``interrupted`` (with what was left on disk when a command says so), and returns 130.
    """
    restore = _on_sigterm()
    try:
        return _main(argv)
    except KeyboardInterrupt as err:
        note = str(err)
        print(f"interrupted: {note}" if note else "interrupted", file=sys.stderr)
        return 130
    finally:
        restore()


def _main(argv: list[str] | None) -> int:
    from attribution.core import AttributionError
    from circuits.errors import CircuitsError
    from replacement.errors import ReplacementError

    parser = build_parser(lazy=True)
    args, extras = parser.parse_known_args(argv)
    if extras:
        # a flag after the subcommand is that subcommand's error; one before it, the top level's
        own = args._command_extras
        (args._command_parser if own else parser).error(f"unrecognized arguments: {' '.join(own or extras)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (CircuitsError, ReplacementError, AttributionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
