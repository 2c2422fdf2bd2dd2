"""``circuits discover`` and ``circuits evaluate``: a task in, a pruned and evaluated circuit out."""

from __future__ import annotations

import argparse
import json
import math

from circuits.app.commands import add_output_options, confidence, fraction, non_negative_float, positive_int, seed


def register(sub) -> None:
    d = sub.add_parser(
        "discover",
        help="attribute a task, prune to a circuit, evaluate it on held-out examples and draw it",
        description="Writes circuit.json, circuit.svg (and circuit.dot), curve.json, curve.png and report.html into --out.",
    )
    d.add_argument("task", help="built-in task name (see `circuits tasks list`) or JSONL task file")
    d.add_argument("--schema", default=None, help="schema CSV of a JSONL task file")
    d.add_argument("--model", default="toy", help="'toy' (default), a saved toy-model folder, or a HuggingFace name")
    d.add_argument("--dictionaries", default=None, help="dictionary set: a folder, 'neurons', or release:NAME (default: the toy model's shipped set)")
    d.add_argument("--composition", choices=("transcoders", "sae", "mixed"), default="transcoders",
                   help="transcoders on the MLPs with attention left in the edges (default, as circuit-tracer), SAEs on "
                   "embed/attn/mlp/resid (Sparse Feature Circuits), or transcoders in place of the MLP SAEs")
    d.add_argument("--method", choices=("ig", "atp"), default="ig", help="integrated gradients (default) or attribution patching")
    d.add_argument("--steps", type=positive_int, default=5, help="integrated-gradient steps (default 5, the EAP-IG convention)")
    d.add_argument("--ig-mode", choices=("inputs", "per-site"), default="inputs",
                   help="interpolate the input, every site at once (default), or one site at a time (sites x steps passes)")
    d.add_argument("--edge-local", choices=("linear", "exact"), default="linear",
                   help="edges from the downstream node's derivative (default, batched backward passes) or its actual direct "
                   "change (one forward row per changed upstream node: exact through attention, slower)")
    d.add_argument("--positions", choices=("token", "schema", "agnostic"), default="agnostic",
                   help="node positions: token indices, schema spans, or none (default: agnostic, the smallest faithful circuits on the toy tasks)")
    size = d.add_mutually_exclusive_group()
    size.add_argument("--nodes", type=positive_int, default=None, help="circuit: the top N nodes by |effect|")
    size.add_argument("--node-threshold", type=non_negative_float, default=None, help="circuit: every node with |effect| >= T")
    size.add_argument("--faithfulness", type=fraction, default=0.9,
                      help="circuit (default): the smallest top-N reaching this faithfulness on fresh selection examples (default 0.9)")
    d.add_argument("--confidence", type=confidence, default=0.9,
                   help="with --faithfulness: the size must reach it at this one-sided bootstrap confidence (default 0.9; 0 disables)")
    d.add_argument("--ablation", choices=("mean", "patch", "zero"), default="mean",
                   help="how nodes outside the circuit are ablated: the mean over counterfactual prompts per position or span "
                   "(default), each example's own counterfactual, or zero")
    d.add_argument("--keep-errors", action="store_true", help="never ablate error nodes")
    d.add_argument("--keep-embed", action=argparse.BooleanOptionalAction, default=True,
                   help="never ablate the embedding, and choose the circuit among the other nodes (default, Sparse Feature "
                   "Circuits' convention); --no-keep-embed ablates it like any other site")
    d.add_argument("--examples", type=positive_int, default=128, help="attribution examples (default 128; see --edge-examples)")
    d.add_argument("--eval-examples", type=positive_int, default=64, help="held-out evaluation examples (default 64)")
    d.add_argument("--seed", type=seed, default=0, help="attribution seed; evaluation uses seed + 1")
    d.add_argument("--max-nodes", type=positive_int, default=None, help="at most this many nodes in the attributed graph (default: every node of nonzero effect)")
    d.add_argument("--max-targets", type=positive_int, default=96, help="nodes whose incoming edges are scored (default 96)")
    d.add_argument("--edge-examples", type=positive_int, default=None,
                   help="score the edges on the first N attribution examples only (default: all of them)")
    d.add_argument("--curve-points", type=positive_int, default=8, help="points of the node curve's log grid (default 8; the chosen size is added)")
    d.add_argument("--no-edge-curve", action="store_true", help="skip edge-level evaluation and the edge curve")
    d.add_argument("--no-labels", action="store_true", help="skip feature labels (top-activating contexts) in the diagram and report")
    d.add_argument("--label-corpus", default=None,
                   help="text file, one text per line, whose top-activating contexts label the features (default: the toy corpus)")
    d.add_argument("--device", default=None, help="torch device; default CUDA when present, else CPU")
    d.add_argument("--threads", type=positive_int, default=1, help="CPU threads for torch (default 1: the toy model's tensors are too small to gain from more)")
    d.add_argument("--out", default="circuit_out",
                   help="output folder (default: ./circuit_out), written as a unit: into a temporary folder beside it that "
                   "replaces it as a whole when the run completes (files of an earlier run there are not kept), so an "
                   "interrupted run leaves it as it was; it must be new, empty or an earlier run folder, and a second run "
                   "into it while one is writing is refused (the lock is OUT.lock beside it)")
    add_output_options(d)
    d.set_defaults(func=_discover)

    e = sub.add_parser(
        "evaluate", help="re-evaluate a saved circuit.json on a task's held-out examples",
        description="By default the circuit is evaluated on the held-out examples its circuit.json records (for a "
        "built-in task the seed and count, for a task file the rows, checked against the file's sha256), so the "
        "faithfulness is the one `circuits discover` printed. A task other than the circuit's own is refused unless "
        "--allow-other-task; a task file changed since the run is refused unless --rows names the rows. A circuit.json "
        "saved by an earlier version, which records no splits, is evaluated as before (64 examples at the run's "
        "evaluation seed, or a task file's rows after the attributed ones), with a warning.",
    )
    e.add_argument("circuit", help="circuit.json written by `circuits discover`")
    e.add_argument("task", help="built-in task name or JSONL task file")
    e.add_argument("--schema", default=None,
                   help="schema CSV of a JSONL task file (default: the one the run used; refused for a built-in task)")
    e.add_argument("--model", default=None, help="default: the model recorded in the circuit")
    e.add_argument("--dictionaries", default=None, help="default: the dictionaries recorded in the circuit")
    e.add_argument("--ablation", choices=("mean", "patch", "zero"), default=None,
                   help="what an ablated node takes: the counterfactual mean, each example's own counterfactual, or zero "
                   "(default: as the run that made the circuit)")
    e.add_argument("--keep-errors", action=argparse.BooleanOptionalAction, default=None,
                   help="never ablate error nodes (default: as the run that made the circuit)")
    e.add_argument("--keep-embed", action=argparse.BooleanOptionalAction, default=None,
                   help="never ablate the embedding (default: as the run that made the circuit)")
    e.add_argument("--eval-examples", type=positive_int, default=None,
                   help="held-out examples evaluated on (default: as many as the run held out; for a task file, counted "
                   "from the first held-out row)")
    e.add_argument("--seed", type=seed, default=None, help="built-in task: evaluation seed (default: the run's held-out seed)")
    e.add_argument("--rows", type=_rows, default=None, metavar="START:STOP",
                   help="task file: evaluate its examples START to STOP-1 (0-based, in file order) instead of the recorded "
                   "held-out rows; also evaluates a file changed since the run (with a warning)")
    e.add_argument("--allow-other-task", action="store_true",
                   help="evaluate on a task other than the circuit's own (transfer), with a warning: a built-in task at "
                   "its held-out seed, a task file from its first row, as many examples as the run held out")
    e.add_argument("--no-edges", action="store_true", help="skip edge-level evaluation")
    e.add_argument("--device", default=None, help="torch device; default CUDA when present, else CPU")
    e.add_argument("--threads", type=positive_int, default=1, help="CPU threads for torch (default 1)")
    add_output_options(e)
    e.set_defaults(func=_evaluate)


def _rows(text: str) -> tuple[int, int]:
    """``START:STOP`` as two ints (argparse type of ``--rows``)."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        rows = int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (two integers, e.g. 256:320), got {text!r}") from None
    if not 0 <= rows[0] < rows[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is empty or negative; expected 0 <= START < STOP")
    return rows


def _threads(n: int) -> None:
    import torch

    if n < 1:
        raise SystemExit("error: --threads must be at least 1")
    torch.set_num_threads(n)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _discover(args: argparse.Namespace) -> int:
    from circuits.files import check_output_dir

    check_output_dir(args.out, "--out", replaces="circuit.json")  # before the pipeline (and torch) is imported
    from circuits.app.pipeline import DiscoverConfig, discover

    _threads(args.threads)
    config = DiscoverConfig(
        task=args.task, schema=args.schema, model=args.model, dictionaries=args.dictionaries, composition=args.composition,
        method=args.method, ig_mode=args.ig_mode, edge_local=args.edge_local, steps=args.steps, positions=args.positions,
        n_nodes=args.nodes, node_threshold=args.node_threshold, faithfulness=args.faithfulness,
        confidence=args.confidence or None, ablation=args.ablation, ablate_errors=not args.keep_errors,
        ablate_embed=not args.keep_embed, n_attribution=args.examples, n_eval=args.eval_examples, seed=args.seed,
        max_nodes=args.max_nodes, max_targets=args.max_targets, edge_examples=args.edge_examples,
        curve_points=args.curve_points,
        edge_curve=not args.no_edge_curve, labels=not args.no_labels, label_corpus=args.label_corpus, device=args.device,
    )
    result = discover(config, out=args.out, progress=not args.quiet and not args.json)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    needed = s["nodes_needed"]
    print(f"{s['task']}: {s['model']} with {s['dictionaries']}, {s['method']} attribution, {s['positions']} positions, "
          f"{s['ablation']} ablation")
    print(f"  attributed graph  {s['graph_nodes']:>6} nodes {s['graph_edges']:>7} edges")
    print(f"  circuit           {s['nodes']:>6} nodes {s['edges']:>7} edges  ({s['feature_nodes']} features, {s['error_nodes']} errors)")
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
    from circuits.app.pipeline import evaluate_saved

    _threads(args.threads)
    res = evaluate_saved(
        args.circuit, args.task, model=args.model, dictionaries=args.dictionaries, ablation=args.ablation,
        ablate_errors=None if args.keep_errors is None else not args.keep_errors,
        ablate_embed=None if args.keep_embed is None else not args.keep_embed, edges=not args.no_edges,
        n_eval=args.eval_examples, seed=args.seed, rows=args.rows, schema=args.schema,
        allow_other_task=args.allow_other_task, device=args.device,
    )
    s = res.summary()
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{args.circuit} on {args.task} ({s['ablation']} ablation): {s['nodes']} nodes, {s['edges']} edges")
    print(f"  {_split_words(s['split'], s['evaluation_examples'])}")
    print(f"  faithfulness {_fmt(s['faithfulness'])} (edge level {_fmt(s['faithfulness_edges'])})  completeness {_fmt(s['completeness'])}")
    print(f"  metric: model {_fmt(s['m_model'])}  circuit {_fmt(s['m_circuit'])}  empty {_fmt(s['m_empty'])}")
    return 0
