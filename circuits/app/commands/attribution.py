"""``circuits validate-attribution``: attribution methods against exact and path patching."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math

from circuits.app.commands import add_model_options, add_output_options, int_at_least, positive_int, seed


def add_dictionary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dictionaries", default=None, help="dictionary set: a folder, 'neurons', or release:NAME (default: the shipped toy set)")
    p.add_argument("--composition", default="transcoders", choices=["transcoders", "sae", "mixed"],
                   help="transcoders on the MLPs (default, as `circuits discover`), SAEs on every sublayer, or "
                   "transcoders in place of the MLP SAEs")


def register(sub) -> None:
    p = sub.add_parser("validate-attribution", help="compare atp / ig node and edge effects with real patching")
    p.add_argument("task", help="built-in task name or JSONL file")
    p.add_argument("--schema", default=None, help="schema CSV for a JSONL task")
    add_model_options(p)
    add_dictionary_options(p)
    add_output_options(p)
    p.add_argument("-n", "--examples", type=positive_int, default=8,
                   help="examples validated (exact patching is costly); token-level edges use the first 4 of them")
    p.add_argument("--steps", type=positive_int, default=10, help="integrated-gradient steps")
    p.add_argument("--edges", type=int_at_least(3), default=240,
                   help="sampled edges checked against path patching (default 240; use >= 200 for a stable correlation)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the examples and of the edge sample (default 0)")
    p.add_argument("--float32", action="store_true", help="validate in float32 (default float64, so that tiny exact effects are not rounding noise)")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    import time

    import torch

    from attribution.validate import validate_edges, validate_graph_edges, validate_nodes
    from circuits.data.inputs import attribution_inputs
    from circuits.app.commands.tasks import resolve_task
    from circuits.app.loading import load_model
    from circuits.app.pipeline import load_dictionaries
    from circuits.app.loading import check_dictionaries
    from replacement.model import ReplacementModel

    torch.manual_seed(args.seed)
    check_dictionaries(args.dictionaries)
    loaded = load_model(args.model, device=args.device)
    # the sites of the composition, as `circuits discover` builds them (a set lacking them is refused)
    dset = load_dictionaries(loaded, args.dictionaries, args.composition)
    dset.validate_for(loaded.model)
    rm = ReplacementModel(loaded.model, dset)
    if not args.float32:
        with contextlib.redirect_stdout(io.StringIO()):  # the model's dtype change prints a notice
            rm.model.to(torch.float64)
        for d in rm.dictionaries.values():
            d.to(torch.float64)
    task = resolve_task(args.task, loaded.tokenizer, n=args.examples, seed=args.seed, schema=args.schema)
    batch = task.batch(loaded.tokenizer.pad_id, task.examples[: args.examples])
    inputs = attribution_inputs(batch, device=loaded.device)
    t0 = time.perf_counter()
    progress = not args.quiet and not args.json
    nodes = validate_nodes(rm, inputs, steps=args.steps, ig_modes=("inputs", "per-site"), corrupted_lengths=batch.corrupted_lengths,
                           progress=progress)
    common = dict(n_edges=args.edges, steps=args.steps, seed=args.seed, progress=progress)
    edges = validate_edges(rm, inputs, **common)
    atp_edges = validate_edges(rm, inputs, method="atp", **common)
    exact_local = {method: validate_edges(rm, inputs, method=method, local="exact", **common) for method in ("ig", "atp")}
    graph = {
        (method, local): validate_graph_edges(rm, inputs, method=method, local=local, **common)
        for method in ("ig", "atp") for local in ("linear", "exact")
    }
    result = {
        "task": task.name,
        "ig_spearman": nodes.ig_spearman,
        "atp_spearman": nodes.atp_spearman,
        "ig_spearman_top100": nodes.ig_spearman_top100,
        "atp_spearman_top100": nodes.atp_spearman_top100,
        "edge_spearman": edges.spearman,
        "atp_edge_spearman": atp_edges.spearman,
        "edge_spearman_exact_local": exact_local["ig"].spearman,
        "atp_edge_spearman_exact_local": exact_local["atp"].spearman,
        "graph_edge_spearman": graph[("ig", "linear")].spearman,
        "atp_graph_edge_spearman": graph[("atp", "linear")].spearman,
        "graph_edge_spearman_exact_local": graph[("ig", "exact")].spearman,
        "atp_graph_edge_spearman_exact_local": graph[("atp", "exact")].spearman,
        "ig_mode": "inputs",
        "n_nodes": nodes.n_nodes,
        "n_edges": edges.n_edges,
        "examples": len(batch),
        "steps": args.steps,
        **nodes.extra,
        **{f"edge_spearman_from_{site}": rho for site, rho in edges.by_upstream_site.items()},
        **{f"atp_edge_spearman_from_{site}": rho for site, rho in atp_edges.by_upstream_site.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        # a correlation that cannot be computed (too few nodes or edges) is null, not the invalid NaN
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}))
    else:
        for k, v in result.items():
            print(f"{k:<32} {v:.4f}" if isinstance(v, float) else f"{k:<32} {v}")
    return 0
