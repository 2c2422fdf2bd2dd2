"""Nodes needed for faithfulness 0.5 / 0.8 / 0.9 on the toy model: features vs neurons, schema vs agnostic.

For IOI and each subject-verb-agreement variant, the script attributes the task on 128 examples
(seed 0; edges are not needed here), ranks the graph's nodes by |effect| and finds, on 64 held-out
examples (seed 1), the
smallest number of top nodes whose faithfulness reaches each level (node-level ablation: every node
outside the set ablated). Three settings, the comparisons Sparse Feature Circuits and
position-aware EAP report:

(a) features (the dictionary set), schema spans as positions;
(b) features, position-agnostic (scores summed over positions);
(c) neurons (identity dictionaries), schema spans;

and (b) measured in span nodes: each agnostic feature counted once per schema span where it has an
effect, the number of nodes a position-aware graph needs to keep the same activations live.

Usage::

    python examples/toy_results.py                       # the shipped toy dictionaries
    python examples/toy_results.py --dictionaries DIR    # another dictionary set
    python examples/toy_results.py --ablation patch --json results.json
    python examples/toy_results.py --composition sae --no-keep-embed   # SAEs everywhere, the embedding ablated too
"""

from __future__ import annotations

import argparse
import json
import time

import networkx as nx
import torch

from circuits.app.config import ModelConfig
from circuits.app.loading import load_setup
from circuits.app.pipeline import circuit_candidates
from circuits.data.inputs import attribution_inputs
from circuits.data.splits import load_data
from circuits.evaluation import EvalConfig, Evaluator, sizes_needed
from circuits.evaluation.curves import span_footprint
from circuits.graph.build import BuildConfig, attribute_graph
from circuits.graph.ranking import ranked_nodes

TASKS = ("ioi", "sva-simple", "sva-pp", "sva-within-rc", "sva-across-rc")
LEVELS = (0.5, 0.8, 0.9)
SETTINGS = {
    "features, schema": ("dictionaries", "schema"),
    "features, agnostic": ("dictionaries", "agnostic"),
    "neurons, schema": ("neurons", "schema"),
}


def nodes_needed(
    task: str,
    dictionaries: str | None,
    positions: str,
    ablation: str,
    n: int,
    n_eval: int,
    composition: str = "transcoders",
    keep_embed: bool = True,
) -> tuple[dict, list[str], nx.DiGraph]:
    """Attribute ``task`` and find the smallest top-k node set reaching each faithfulness level (held out).

    Returns the summary, the graph's nodes ranked by |effect| and the graph itself."""
    setup = load_setup(ModelConfig(dictionaries=dictionaries, composition=composition, device="cpu"))
    build = BuildConfig(positions=positions, max_targets=0)
    ablate = EvalConfig(ablation=ablation, ablate_embed=not keep_embed)
    data = load_data(task, setup.loaded.tokenizer, n, n_eval, seed=0)
    batch = data.attribution_batch
    meta = {"model": setup.model_name, "dictionaries": setup.dictionaries_name, "task": task}
    graph = attribute_graph(setup.rm, batch, attribution_inputs(batch), build, metadata=meta).graph
    graph = circuit_candidates(graph, ablate.ablate_embed)
    evaluator = Evaluator(setup.rm, data.evaluation_batch, ablate)
    needed = sizes_needed(evaluator, graph, LEVELS)
    all_nodes = ranked_nodes(graph)
    full = evaluator.evaluate_nodes(all_nodes, completeness=False).faithfulness
    summary = {
        "needed": needed,
        "graph_nodes": len(all_nodes),
        "graph_faithfulness": full,
        "m_model": evaluator.m_model,
        "m_empty": evaluator.m_empty,
    }
    return summary, all_nodes, graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictionaries", default=None, help="dictionary-set folder (default: the shipped toy set)")
    parser.add_argument("--ablation", choices=("mean", "patch", "zero"), default="mean")
    parser.add_argument("--examples", type=int, default=128, help="attribution examples (default 128)")
    parser.add_argument("--eval-examples", type=int, default=64, help="held-out examples (default 64)")
    parser.add_argument(
        "--composition",
        choices=("transcoders", "sae", "mixed"),
        default="transcoders",
        help="what replaces each sublayer (see `circuits discover --help`)",
    )
    parser.add_argument(
        "--keep-embed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="never ablate the embedding and rank only the other nodes (default, as `circuits discover`)",
    )
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict[str, dict[str, dict]] = {}
    start = time.perf_counter()
    for task in args.tasks:
        results[task] = {}
        graphs: dict[str, tuple[list[str], nx.DiGraph]] = {}
        for name, (source, positions) in SETTINGS.items():
            dictionaries = "neurons" if source == "neurons" else args.dictionaries
            summary, ranked, graph = nodes_needed(
                task,
                dictionaries,
                positions,
                args.ablation,
                args.examples,
                args.eval_examples,
                args.composition,
                args.keep_embed,
            )
            results[task][name], graphs[name] = summary, (ranked, graph)
            print(f"  {task:<14} {name:<20} {results[task][name]['needed']}", flush=True)
        # The agnostic circuits in span nodes: each agnostic feature once per span where the schema
        # graph gives it an effect (circuits.evaluation.curves.span_footprint).
        ranked, schema_graph = graphs["features, agnostic"][0], graphs["features, schema"][1]
        footprint = {
            level: None if k is None else span_footprint(ranked[:k], schema_graph)
            for level, k in results[task]["features, agnostic"]["needed"].items()
        }
        results[task]["features, agnostic, span footprint"] = {"needed": footprint}
        print(f"  {task:<14} {'agnostic, in spans':<20} {footprint}", flush=True)

    print(
        f"\nNodes needed for faithfulness 0.5 / 0.8 / 0.9 ({args.composition}, {args.ablation} ablation"
        f"{', embedding kept' if args.keep_embed else ''}, {args.examples} attribution "
        f"and {args.eval_examples} held-out examples; - : not reached by the whole graph)\n"
    )
    columns = list(next(iter(results.values()))) if results else list(SETTINGS)
    print("| task | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for task, by_setting in results.items():
        cells = []
        for r in by_setting.values():
            cells.append(" / ".join("-" if r["needed"][str(x)] is None else str(r["needed"][str(x)]) for x in LEVELS))
        print(f"| {task} | " + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "ablation": args.ablation,
                    "composition": args.composition,
                    "keep_embed": args.keep_embed,
                    "examples": args.examples,
                    "eval_examples": args.eval_examples,
                    "results": results,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
