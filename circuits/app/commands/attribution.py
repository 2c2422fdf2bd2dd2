"""``circuits validate-attribution``: attribution methods against exact and path patching
(:func:`circuits.app.validation.validate_attribution`)."""

from __future__ import annotations

import argparse
import json

from circuits.app.commands import add_config_options, add_output_options, config_from_args, defer


def register(sub) -> None:
    p = sub.add_parser("validate-attribution", help="compare atp / ig node and edge effects with real patching")
    defer(p, _options)
    p.set_defaults(func=_validate)


def _options(p: argparse.ArgumentParser) -> None:
    from circuits.app.validation import ValidationConfig

    add_config_options(p, ValidationConfig)
    add_output_options(p)


def _validate(args: argparse.Namespace) -> int:
    from circuits.app.validation import ValidationConfig, validate_attribution

    result = validate_attribution(config_from_args(ValidationConfig, args), progress=not args.quiet and not args.json)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        for k, v in result.values.items():
            print(f"{k:<32} {v:.4f}" if isinstance(v, float) else f"{k:<32} {v}")
    return 0
