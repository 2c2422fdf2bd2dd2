"""Benchmark of node and edge attribution on the toy model (prints numbers; not a test).

    python benchmarks/attribution.py --json

Measures, in one run on the same batch: wall time of node attribution (IG, 10 steps) and of
edge attribution (every upstream node of the top downstream nodes at span level), the forward
and backward passes each made, peak memory, and ``ratio_to_floor``: the whole attribution's time
divided by the time of 10 plain forward+backward passes of the replacement model.
``--edge-local exact`` measures the exact local edges instead (one forward row per changed upstream node).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

# This script's folder comes first on sys.path and its name would shadow the attribution package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from attribution.core import ERROR  # noqa: E402
from attribution.edges import Target, edge_effects, edge_method  # noqa: E402
from attribution.nodes import node_effects  # noqa: E402
from attribution.positions import PositionMap  # noqa: E402
from circuits.app.loading import load_model, load_replacement  # noqa: E402
from circuits.data.inputs import attribution_inputs  # noqa: E402
from circuits.data.tasks import make_task  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def top_targets(rm, nodes, positions: PositionMap, n: int) -> list[Target]:
    """The ``n`` downstream nodes (all sites but the first) with the largest |aggregated effect|."""
    cands = []
    for site in rm.site_names[1:]:
        f = positions.aggregate(nodes.features[site])
        e = positions.aggregate(nodes.errors[site])
        for p, i in torch.nonzero(f != 0, as_tuple=False).tolist():
            cands.append((abs(float(f[p, i])), Target(site, p, i)))
        for p in range(e.shape[0]):
            cands.append((abs(float(e[p])), Target(site, p, ERROR)))
    cands.sort(key=lambda c: -c[0])
    return [t for _, t in cands[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--targets", type=int, default=200, help="downstream nodes whose incoming edges are computed")
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--composition",
        default="transcoders",
        choices=["transcoders", "sae", "mixed"],
        help="dictionary composition (default: transcoders, as `circuits discover`)",
    )
    ap.add_argument(
        "--edge-local",
        default="linear",
        choices=["linear", "exact"],
        help="edges from the downstream node's derivative (default) or its actual direct change",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    loaded = load_model("toy", device=args.device)
    rm = load_replacement(loaded, composition=args.composition)
    task = make_task(args.task, loaded.tokenizer, n=args.examples)
    batch = task.batch(loaded.tokenizer.pad_id).to(loaded.device)
    inputs = attribution_inputs(batch)
    positions = PositionMap.spans(batch.clean_span, batch.span_names)
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    # warm-up: the first call of each shape allocates (and on a GPU compiles kernels); the floor
    # below is timed warm as well
    rss0 = peak_rss_mb()  # before the warm-up, which is the same work as the timed run
    warm = node_effects(rm, inputs, method="ig", steps=args.steps)
    edge_effects(
        rm, inputs, warm, top_targets(rm, warm, positions, args.targets), positions, edge_method(args.edge_local)
    )
    del warm

    sync()
    t0 = time.perf_counter()
    nodes = node_effects(rm, inputs, method="ig", steps=args.steps)
    sync()
    t_nodes = time.perf_counter() - t0
    targets = top_targets(rm, nodes, positions, args.targets)
    t1 = time.perf_counter()
    edges = edge_effects(rm, inputs, nodes, targets, positions, edge_method(args.edge_local))
    sync()
    t_edges = time.perf_counter() - t1

    # floor: 10 plain forward+backward passes of the replacement model on the same batch (10 whatever
    # --steps is: the floor is a fixed unit of work)
    t2 = time.perf_counter()
    for _ in range(10):
        run = rm.run_with_grads(inputs.clean)
        m = inputs.metric(run.logits, inputs.index()).sum()
        run.site_grads(m)
    sync()
    t_floor = time.perf_counter() - t2

    all_edges = edges.edges()
    result = {
        "device": str(loaded.device),
        "examples": args.examples,
        "steps": args.steps,
        "composition": args.composition,
        "sites": len(rm.site_names),
        "node_seconds": round(t_nodes, 3),
        "edge_seconds": round(t_edges, 3),
        "edge_local": args.edge_local,
        "edge_targets": len(targets),
        "edges_nonzero": sum(1 for e in all_edges if e[1] is not None),
        "metric_edges_nonzero": sum(1 for e in all_edges if e[1] is None),
        "node_passes": {"forward": nodes.passes.forward, "backward": nodes.passes.backward},
        "edge_passes": {"forward": edges.passes.forward, "backward_batched": edges.passes.backward},
        "floor_seconds": round(t_floor, 3),
        "ratio_to_floor": round((t_nodes + t_edges) / t_floor, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_increase_mb": round(peak_rss_mb() - rss0, 1),
    }
    if loaded.device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result) if args.json else "\n".join(f"{k:<24} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
