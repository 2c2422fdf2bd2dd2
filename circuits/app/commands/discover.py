"""``circuits discover`` and ``circuits evaluate``: a task in, a pruned and evaluated circuit out.

Their options are the fields of :class:`circuits.app.config.DiscoverConfig` and
:class:`circuits.app.config.EvaluateConfig` (:func:`circuits.app.commands.add_config_options`), plus
``--threads``, ``--out``, ``--json`` and ``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import math

from circuits.app.commands import add_config_options, add_output_options, config_from_args, defer, positive_int

OUT_HELP = (
    "output folder (default: ./circuit_out), written as a unit: into a temporary folder beside it that replaces it as "
    "a whole when the run completes (files of an earlier run there are not kept), so an interrupted run leaves it as "
    "it was; it must be new, empty or an earlier run folder, and a second run into it while one is writing is refused "
    "(the lock is OUT.lock beside it)"
)


def register(sub) -> None:
    d = sub.add_parser(
        "discover",
        help="attribute a task, prune to a circuit, evaluate it on held-out examples and draw it",
        description="Writes circuit.json, circuit.svg (and circuit.dot), curve.json, curve.png and report.html into --out.",
    )
    defer(d, _discover_options)
    d.set_defaults(func=_discover)

    e = sub.add_parser(
        "evaluate",
        help="re-evaluate a saved circuit.json on a task's held-out examples",
        description="By default the circuit is evaluated on the held-out examples its circuit.json records (for a "
        "built-in task the seed and count, for a task file the rows, checked against the file's sha256), so the "
        "faithfulness is the one `circuits discover` printed. A task other than the circuit's own is refused unless "
        "--allow-other-task; a task file changed since the run is refused unless --rows names the rows. A circuit.json "
        "saved by an earlier version, which records no splits, is evaluated as before (64 examples at the run's "
        "evaluation seed, or a task file's rows after the attributed ones), with a warning.",
    )
    defer(e, _evaluate_options)
    e.set_defaults(func=_evaluate)


def _discover_options(d: argparse.ArgumentParser) -> None:
    from circuits.app.config import DiscoverConfig

    add_config_options(d, DiscoverConfig)
    d.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads for torch (default 1: the toy model's tensors are too small to gain from more)",
    )
    d.add_argument("--out", default="circuit_out", help=OUT_HELP)
    add_output_options(d)


def _evaluate_options(e: argparse.ArgumentParser) -> None:
    from circuits.app.config import EvaluateConfig

    add_config_options(e, EvaluateConfig)
    e.add_argument("--threads", type=positive_int, default=1, help="CPU threads for torch (default 1)")
    add_output_options(e)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _discover(args: argparse.Namespace) -> int:
    from circuits.files import check_output_dir

    check_output_dir(args.out, "--out", replaces="circuit.json")  # before the model loads
    from circuits.app.config import DiscoverConfig
    from circuits.app.pipeline import discover

    _threads(args.threads)
    config = config_from_args(DiscoverConfig, args)
    result = discover(config, out=args.out, progress=not args.quiet and not args.json)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    needed = s["nodes_needed"]
    print(
        f"{s['task']}: {s['model']} with {s['dictionaries']}, {s['method']} attribution, {s['positions']} positions, "
        f"{s['ablation']} ablation"
    )
    print(f"  attributed graph  {s['graph_nodes']:>6} nodes {s['graph_edges']:>7} edges")
    print(
        f"  circuit           {s['nodes']:>6} nodes {s['edges']:>7} edges  ({s['feature_nodes']} features, {s['error_nodes']} errors)"
    )
    print(f"  faithfulness      {_fmt(s['faithfulness']):>6}   (edge level {_fmt(s['faithfulness_edges'])})")
    print(f"  completeness      {_fmt(s['completeness']):>6}")
    print(f"  metric            model {_fmt(s['m_model'])}  circuit {_fmt(s['m_circuit'])}  empty {_fmt(s['m_empty'])}")
    print("  curve grid size   " + "  ".join(f"F>={k}: {v if v is not None else '-'}" for k, v in needed.items()))
    print(f"  CPR {_fmt(s['cpr'])}  CMD {_fmt(s['cmd'])}")
    print(f"  wrote {', '.join(sorted(s['files']))} to {args.out}  ({sum(s['seconds'].values()):.1f} s)")
    return 0


def _split_words(split: dict | None, n: int | None) -> str:
    """Which examples an evaluation used, in words."""
    if split is None:
        return f"{n} examples (split as earlier versions did: the circuit records none)"
    if split["kind"] == "builtin":
        return f"{n} examples, seed {split['seed']}"
    return f"{n} examples, rows {split['rows'][0]}:{split['rows'][1]} of {split['path']}"


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from circuits.errors import CircuitError

    if Path(args.circuit).is_dir():
        inside = Path(args.circuit) / "circuit.json"
        hint = f"give {inside}" if inside.is_file() else "give the circuit.json that `circuits discover` wrote"
        raise CircuitError(f"circuit {args.circuit} is a folder, not a circuit file: {hint}")
    from circuits.app.config import EvaluateConfig
    from circuits.app.reevaluation import evaluate_saved

    _threads(args.threads)
    res = evaluate_saved(config_from_args(EvaluateConfig, args))
    s = res.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{args.circuit} on {args.task} ({s['ablation']} ablation): {s['nodes']} nodes, {s['edges']} edges")
    print(f"  {_split_words(s['split'], s['evaluation_examples'])}")
    print(
        f"  faithfulness {_fmt(s['faithfulness'])} (edge level {_fmt(s['faithfulness_edges'])})  completeness {_fmt(s['completeness'])}"
    )
    print(f"  metric: model {_fmt(s['m_model'])}  circuit {_fmt(s['m_circuit'])}  empty {_fmt(s['m_empty'])}")
    return 0
