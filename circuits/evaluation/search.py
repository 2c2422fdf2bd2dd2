"""Faithfulness curves and circuit sizes by real ablation.

:func:`node_curve` scores the top-k nodes of a graph (node level) on a log grid of sizes;
:func:`edge_curve` scores the top-k-edge circuits (edge level) at MIB's edge fractions, with CPR and
CMD; :func:`faithfulness_curves` gives both (:class:`Curves`). :func:`smallest_faithful` finds the
smallest top-k node set reaching a faithfulness target (optionally with a bootstrap lower bound);
:func:`sizes_needed` does so for several targets. Ranks come from :mod:`circuits.graph.ranking`.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx
from tqdm.auto import tqdm

from circuits.errors import CircuitError
from circuits.evaluation.curves import MIB_FRACTIONS, Curve, cmd, cpr, fraction_sizes, size_grid
from circuits.evaluation.evaluator import Evaluator
from circuits.evaluation.node_level import Evaluation
from circuits.graph.ids import METRIC, count_nodes
from circuits.graph.prune import Selection, connect_inputs_to_metric
from circuits.graph.ranking import ranked_edges, ranked_nodes


@dataclass
class Curves:
    """Faithfulness curves of one attributed graph: by nodes (top-k nodes, node-level ablation) and by
    edges (top-k edges at MIB's edge fractions, edge-level ablation). CPR and CMD come from the
    edge curve."""

    nodes: Curve
    edges: Curve | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cpr(self) -> float | None:
        return None if self.edges is None else self.edges.cpr

    @property
    def cmd(self) -> float | None:
        return None if self.edges is None else self.edges.cmd

    def to_curve(self) -> Curve:
        """The curve.json object: the node curve, with the edge curve under ``metadata["edge_curve"]``
        and its CPR / CMD at the top level."""
        meta = dict(self.nodes.metadata)
        if self.edges is not None:
            meta["edge_curve"] = self.edges.to_dict()
            meta["areas"] = "cpr and cmd: MIB areas over the edge curve (metadata.edge_curve)"
        return Curve(
            self.nodes.sizes_nodes,
            self.nodes.sizes_edges,
            self.nodes.faithfulness,
            self.nodes.completeness,
            self.nodes.total_nodes,
            self.nodes.total_edges,
            self.cpr,
            self.cmd,
            meta,
        )


def _completeness(e: Evaluation) -> float:
    if e.completeness is None:
        raise CircuitError("a curve point was evaluated without its completeness")
    return e.completeness


def edges_within_top(G: nx.DiGraph, ranked: Sequence[str], sizes: Sequence[int]) -> list[int]:
    """For each k in ``sizes``, the number of edges of ``G`` between the top-k nodes of ``ranked`` (and the metric)."""
    rank = {n: i + 1 for i, n in enumerate(ranked)}
    rank[METRIC] = 0
    needed = sorted(max(rank.get(u, math.inf), rank.get(v, math.inf)) for u, v in G.edges)
    return [bisect.bisect_right(needed, k) for k in sizes]


def node_curve(
    evaluator: Evaluator,
    G: nx.DiGraph,
    n_points: int = 15,
    sizes: Sequence[int] | None = None,
    extra_sizes: Sequence[int] = (),
) -> Curve:
    """Faithfulness and completeness of the top-k nodes of ``G`` (by ``|effect|``) for k on a log grid
    (or the given ``sizes``), plus ``extra_sizes`` (e.g. the chosen circuit's).

    Each point is the node set itself, evaluated at node level as Sparse Feature Circuits does (no
    connectivity pruning); ``sizes_edges`` counts the graph's edges between its nodes.
    """
    ranked = ranked_nodes(G)
    total = len(ranked)
    if total == 0:
        raise CircuitError("the graph has no nodes to build a curve from")
    sizes = list(sizes) if sizes is not None else size_grid(total, n_points)
    sizes = sorted(set(sizes) | {k for k in extra_sizes if 0 < k <= total})
    evals = evaluator.evaluate_node_sets([ranked[:k] for k in sizes])
    return Curve(
        list(sizes),
        edges_within_top(G, ranked, sizes),
        [e.faithfulness for e in evals],
        [_completeness(e) for e in evals],
        total,
        G.number_of_edges(),
        metadata={
            "rule": "top_nodes",
            "level": "nodes",
            "ablation": evaluator.config.ablation,
            "m_model": evaluator.m_model,
            "m_empty": evaluator.m_empty,
            "examples": len(evaluator.batch),
        },
    )


@dataclass
class SizeSearch:
    """The result of :func:`smallest_faithful`: the size, its faithfulness and (with a confidence) its lower bound."""

    n_nodes: int
    faithfulness: float
    lower_bound: float | None
    reached: bool


def smallest_faithful(
    evaluator: Evaluator,
    G: nx.DiGraph,
    target: float,
    n_points: int = 8,
    refine: int = 5,
    confidence: float | None = None,
) -> SizeSearch:
    """The smallest k whose top-k nodes reach faithfulness ``target`` on the evaluator's batch.

    With ``confidence``, the criterion is the bootstrap lower bound of the faithfulness at that
    confidence (:meth:`Evaluator.faithfulness_with_bound`), so that the chosen size holds up on new
    examples rather than just crossing the target on these. A log grid brackets k, then bisection
    narrows it (``refine`` more evaluations). If no size reaches the target, the best grid point is
    returned with ``reached=False``.
    """
    ranked = ranked_nodes(G)
    if not ranked:
        raise CircuitError("the graph has no nodes to choose a circuit from")

    def score(sizes: Sequence[int]) -> list[tuple[float, float]]:
        sets = [ranked[:k] for k in sizes]
        if confidence is None:
            return [(e.faithfulness, e.faithfulness) for e in evaluator.evaluate_node_sets(sets, completeness=False)]
        return evaluator.faithfulness_with_bound(sets, confidence)

    sizes = size_grid(len(ranked), n_points)
    scores = score(sizes)
    hit = next((i for i, (_, low) in enumerate(scores) if low >= target), None)

    def bound(scored: tuple[float, float]) -> float | None:
        return None if confidence is None else scored[1]

    if hit is None:
        best = max(range(len(sizes)), key=lambda i: scores[i][1])
        return SizeSearch(sizes[best], scores[best][0], bound(scores[best]), False)
    lo, hi, at_hi = (sizes[hit - 1] if hit > 0 else 0), sizes[hit], scores[hit]
    for _ in range(refine):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        at_mid = score([mid])[0]
        if at_mid[1] >= target:
            hi, at_hi = mid, at_mid
        else:
            lo = mid
    return SizeSearch(hi, at_hi[0], bound(at_hi), True)


def sizes_needed(
    evaluator: Evaluator, G: nx.DiGraph, levels: Sequence[float], n_points: int = 16, refine: int = 12
) -> dict[str, int | None]:
    """For each faithfulness level, the smallest top-k node count reaching it (None: not reached)."""
    out: dict[str, int | None] = {}
    for level in levels:
        found = smallest_faithful(evaluator, G, level, n_points=n_points, refine=refine)
        out[str(level)] = found.n_nodes if found.reached else None
    return out


def _skeleton(G: nx.DiGraph) -> nx.DiGraph:
    """``G`` with only what pruning and edge-level evaluation read: effects and ``scored_inputs``."""
    H = nx.DiGraph()
    H.graph.update(G.graph)
    H.add_nodes_from(
        (n, {"effect": a["effect"], "scored_inputs": a.get("scored_inputs", False)}) for n, a in G.nodes(data=True)
    )
    H.add_edges_from((u, v, {"effect": a["effect"]}) for u, v, a in G.edges(data=True))
    return H


def edge_curve(
    evaluator: Evaluator, G: nx.DiGraph, fractions: Sequence[float] = MIB_FRACTIONS, progress: bool = False
) -> Curve:
    """Faithfulness (edge-level ablation) of the top-k-edge circuits of ``G`` at the given edge fractions,
    with MIB's CPR and CMD over those fractions.

    Each circuit is what :func:`circuits.graph.prune.prune_top_edges` gives (the k edges of largest
    ``|effect|``, ties in graph order, then the connectivity phase); the edges are ranked once for all
    sizes. A size at which nothing connects the inputs to the metric is the empty circuit.
    """
    total = G.number_of_edges()
    if total == 0:
        raise CircuitError("the graph has no edges to build an edge curve from")
    sizes = fraction_sizes(total, fractions)
    skeleton = _skeleton(G)
    ranked = ranked_edges(skeleton)
    f, comp, n_nodes, n_edges = [], [], [], []
    for k in tqdm(sizes, desc="edge curve", disable=not progress, leave=False):
        chosen = ranked[:k]
        selection = Selection(frozenset({n for e in chosen for n in e} | {METRIC}), frozenset(chosen))
        try:
            c, _ = connect_inputs_to_metric(skeleton, selection)
        except CircuitError:  # nothing connects the inputs to the metric at this size: the empty circuit
            f.append(0.0)
            comp.append(1.0)
            n_nodes.append(0)
            n_edges.append(0)
            continue
        e = evaluator.evaluate_edges(c)
        f.append(e.faithfulness)
        comp.append(_completeness(e))
        n_nodes.append(count_nodes(c))
        n_edges.append(c.number_of_edges())
    k = list(fractions)
    return Curve(
        n_nodes,
        n_edges,
        f,
        comp,
        count_nodes(G),
        total,
        cpr(k, f),
        cmd(k, f),
        metadata={
            "rule": "top_edges",
            "fractions": k,
            "requested_edges": sizes,
            "level": "edges",
            "ablation": evaluator.config.ablation,
            "completeness": "node level (the circuit's nodes ablated)",
        },
    )


def faithfulness_curves(
    evaluator: Evaluator,
    G: nx.DiGraph,
    n_points: int = 15,
    fractions: Sequence[float] | None = MIB_FRACTIONS,
    edge_examples: int | None = None,
    progress: bool = False,
    extra_sizes: Sequence[int] = (),
) -> Curves:
    """The node curve and (unless ``fractions`` is None) the edge curve of ``G``.

    ``edge_examples``: evaluate the edge curve on the first this many examples only (edge-level
    ablation costs a forward pass per site and position group); None uses them all.
    """
    t0 = time.perf_counter()
    nodes = node_curve(evaluator, G, n_points, extra_sizes=extra_sizes)
    t1 = time.perf_counter()
    edges = None
    if fractions is not None and G.number_of_edges():
        edge_eval = evaluator if edge_examples is None else evaluator.subset(edge_examples)
        edges = edge_curve(edge_eval, G, fractions, progress)
        edges.metadata["examples"] = len(edge_eval.batch)
    t2 = time.perf_counter()
    return Curves(nodes, edges, {"node_curve": t1 - t0, "edge_curve": t2 - t1})
