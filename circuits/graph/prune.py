"""Pruning an attributed graph to a circuit.

Pruning looks only at node ids and ``effect`` attributes, so it works the same on token-level,
span-level and position-agnostic graphs (see :mod:`circuits.graph.ids`). It runs in two phases:

1. *Select* nodes and edges by one rule:

   - :func:`select_by_threshold`: nodes with ``|effect| >= node_threshold`` and/or edges with
     ``|effect| >= edge_threshold`` (an edge also needs both of its ends selected);
   - :func:`select_top_nodes`: the ``n_nodes`` nodes of largest ``|effect|`` and every edge between them;
   - :func:`select_top_edges`: the ``n_edges`` edges of largest ``|effect|`` and their ends;
   - :func:`select_greedy`: grow from ``"metric"``, each step adding the not yet chosen edge of
     largest ``|effect|`` whose target is already in the circuit (and its source), until the circuit
     has ``n_edges`` edges or ``n_nodes`` nodes; only the chosen edges are kept.

   Ties in ``|effect|`` go to the node or edge that comes first in the graph's order
   (:mod:`circuits.graph.ranking`).
   The metric node is always selected and never counted as a node.

2. *Connect* (:func:`connect_inputs_to_metric`, always run): keep only the selected nodes that lie
   on a directed path, through selected edges, from an input node to ``"metric"``, and the selected
   edges between kept nodes. Input nodes are the nodes with no incoming edge in the unpruned graph
   (embedding nodes among them). A circuit without any edge left is an error.

The ``prune_*`` functions run both phases and return a :class:`PruneResult` holding a new graph
(attributes and ``G.graph`` copied; the input graph is never changed). ``G.graph["pruning"]`` of the
result records the rule and its parameters.
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from circuits.errors import CircuitError
from circuits.graph.ids import METRIC, copy_graph, count_nodes
from circuits.graph.ranking import top_k


@dataclass(frozen=True)
class PruneConfig:
    """Which rule to prune by: thresholds (one or both), or one target size (optionally greedy)."""

    node_threshold: float | None = None
    edge_threshold: float | None = None
    n_nodes: int | None = None
    n_edges: int | None = None
    greedy: bool = False


@dataclass(frozen=True)
class Selection:
    """Nodes and edges chosen by a selection rule, before the connectivity phase."""

    nodes: frozenset[str]
    edges: frozenset[tuple[str, str]]

    @property
    def n_nodes(self) -> int:
        """Selected nodes, not counting the metric node."""
        return len(self.nodes - {METRIC})


@dataclass
class PruneResult:
    """A pruned circuit and what pruning did."""

    graph: nx.DiGraph
    rule: str
    params: dict[str, Any]
    selected_nodes: int  # after the selection phase, metric not counted
    selected_edges: int
    dropped_nodes: list[str] = field(default_factory=list)  # selected, then dropped as not connected

    @property
    def n_nodes(self) -> int:
        """Nodes of the circuit, not counting the metric node."""
        return count_nodes(self.graph)

    @property
    def n_edges(self) -> int:
        return self.graph.number_of_edges()


# -------------------------------------------------------------------------------------- checks


def _require_metric(G: nx.DiGraph) -> None:
    if METRIC not in G:
        raise CircuitError(
            f"the graph has no {METRIC!r} node; an attributed graph needs its single sink {METRIC!r} to be pruned"
        )


def _magnitude(value: Any, what: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value):
        raise CircuitError(f"{what} has effect {value!r}; expected a number")
    return abs(float(value))


def _node_magnitudes(G: nx.DiGraph) -> dict[str, float]:
    """|effect| of every non-metric node, in graph order."""
    out = {}
    for node, attrs in G.nodes(data=True):
        if node == METRIC:
            continue
        if "effect" not in attrs:
            raise CircuitError(f"node {node!r} has no 'effect' attribute; score the graph before pruning it")
        out[node] = _magnitude(attrs["effect"], f"node {node!r}")
    return out


def _edge_magnitudes(G: nx.DiGraph) -> dict[tuple[str, str], float]:
    """|effect| of every edge, in graph order."""
    out = {}
    for u, v, attrs in G.edges(data=True):
        if "effect" not in attrs:
            raise CircuitError(f"edge {u!r} -> {v!r} has no 'effect' attribute; score the graph before pruning it")
        out[(u, v)] = _magnitude(attrs["effect"], f"edge {u!r} -> {v!r}")
    return out


def _check_threshold(value: float | None, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value):
        raise CircuitError(f"{name} must be a number, not {value!r}")
    if value < 0:
        raise CircuitError(f"{name} is {value}; thresholds apply to |effect| and must be >= 0")


def _check_size(value: Any, name: str, available: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CircuitError(f"{name} must be an int, not {value!r}")
    size = int(value)
    if size < 1:
        raise CircuitError(f"{name} is {value}; a circuit needs at least 1")
    if size > available:
        raise CircuitError(f"{name} is {value}, but the graph has only {available} {what}")
    return size


# ----------------------------------------------------------------------------------- selection


def input_nodes(G: nx.DiGraph) -> list[str]:
    """Nodes without incoming edges (embedding nodes among them), in graph order; never the metric."""
    return [n for n in G if n != METRIC and G.in_degree(n) == 0]


def select_by_threshold(
    G: nx.DiGraph, *, node_threshold: float | None = None, edge_threshold: float | None = None
) -> Selection:
    """Nodes with ``|effect| >= node_threshold``, edges with ``|effect| >= edge_threshold`` between them.

    A threshold left as None keeps every node (or every edge between kept nodes).
    """
    _require_metric(G)
    _check_threshold(node_threshold, "node_threshold")
    _check_threshold(edge_threshold, "edge_threshold")
    nodes = {n for n, m in _node_magnitudes(G).items() if node_threshold is None or m >= node_threshold}
    nodes.add(METRIC)
    edges = {
        e
        for e, m in _edge_magnitudes(G).items()
        if e[0] in nodes and e[1] in nodes and (edge_threshold is None or m >= edge_threshold)
    }
    return Selection(frozenset(nodes), frozenset(edges))


def select_top_nodes(G: nx.DiGraph, n_nodes: int) -> Selection:
    """The ``n_nodes`` nodes of largest ``|effect|`` (metric not counted) and all edges between them."""
    _require_metric(G)
    n_nodes = _check_size(n_nodes, "n_nodes", count_nodes(G), "nodes (not counting 'metric')")
    nodes = set(top_k(_node_magnitudes(G), n_nodes)) | {METRIC}
    _edge_magnitudes(G)  # every edge must be scored, as in the other rules
    edges = {(u, v) for u, v in G.edges if u in nodes and v in nodes}
    return Selection(frozenset(nodes), frozenset(edges))


def select_top_edges(G: nx.DiGraph, n_edges: int) -> Selection:
    """The ``n_edges`` edges of largest ``|effect|`` and the nodes at their ends."""
    _require_metric(G)
    n_edges = _check_size(n_edges, "n_edges", G.number_of_edges(), "edges")
    _node_magnitudes(G)
    edges = set(top_k(_edge_magnitudes(G), n_edges))
    nodes = {n for e in edges for n in e} | {METRIC}
    return Selection(frozenset(nodes), frozenset(edges))


def select_greedy(G: nx.DiGraph, *, n_edges: int | None = None, n_nodes: int | None = None) -> Selection:
    """Grow from the metric: repeatedly take the largest-``|effect|`` edge into the circuit.

    Stops at ``n_edges`` chosen edges or ``n_nodes`` nodes (metric not counted), whichever was
    asked for, or earlier when no edge leads into the circuit any more.
    """
    _require_metric(G)
    if (n_edges is None) == (n_nodes is None):
        raise CircuitError("greedy pruning needs exactly one of n_edges and n_nodes")
    if n_edges is not None:
        _check_size(n_edges, "n_edges", G.number_of_edges(), "edges")
    else:
        _check_size(n_nodes, "n_nodes", count_nodes(G), "nodes (not counting 'metric')")
    _node_magnitudes(G)
    magnitudes = _edge_magnitudes(G)
    order = {e: i for i, e in enumerate(magnitudes)}
    frontier: list[tuple[float, int, str, str]] = []

    def enter(node: str) -> None:
        for u, _ in G.in_edges(node):
            heapq.heappush(frontier, (-magnitudes[(u, node)], order[(u, node)], u, node))

    nodes: set[str] = {METRIC}
    edges: set[tuple[str, str]] = set()
    enter(METRIC)
    while frontier:
        if n_edges is not None and len(edges) >= n_edges:
            break
        if n_nodes is not None and len(nodes) - 1 >= n_nodes:
            break
        _, _, u, v = heapq.heappop(frontier)
        edges.add((u, v))
        if u not in nodes:
            nodes.add(u)
            enter(u)
    return Selection(frozenset(nodes), frozenset(edges))


# -------------------------------------------------------------------------------- connectivity


def _reachable(adjacency: dict[str, list[str]], starts: Iterable[str]) -> set[str]:
    seen = set(starts)
    stack = list(seen)
    while stack:
        for nxt in adjacency.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def connect_inputs_to_metric(G: nx.DiGraph, selection: Selection) -> tuple[nx.DiGraph, list[str]]:
    """The circuit of ``selection``: nodes on a selected path from an input of ``G`` to the metric.

    Returns the new graph and the selected nodes that were dropped (graph order). Raises
    :class:`CircuitError` when no path is left.
    """
    _require_metric(G)
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {}
    for u, v in selection.edges:
        forward.setdefault(u, []).append(v)
        backward.setdefault(v, []).append(u)
    sources = [n for n in input_nodes(G) if n in selection.nodes]
    keep = _reachable(forward, sources) & _reachable(backward, [METRIC])
    edges = {(u, v) for u, v in selection.edges if u in keep and v in keep}
    if not edges:
        raise CircuitError(
            f"pruning left an empty circuit: of {selection.n_nodes} selected nodes and {len(selection.edges)} "
            f"selected edges, none lie on a path from an input node to {METRIC!r}; loosen the thresholds or ask for a larger size"
        )
    circuit = copy_graph(G, keep, edges)
    dropped = [n for n in G if n in selection.nodes and n not in keep]
    return circuit, dropped


# ------------------------------------------------------------------------------------- pruning


def _finish(G: nx.DiGraph, selection: Selection, rule: str, params: dict[str, Any]) -> PruneResult:
    circuit, dropped = connect_inputs_to_metric(G, selection)
    circuit.graph["pruning"] = {"rule": rule, **params}
    return PruneResult(circuit, rule, params, selection.n_nodes, len(selection.edges), dropped)


def prune_by_threshold(
    G: nx.DiGraph, *, node_threshold: float | None = None, edge_threshold: float | None = None
) -> PruneResult:
    """Prune by ``|effect|`` thresholds on nodes and/or edges (see :func:`select_by_threshold`)."""
    selection = select_by_threshold(G, node_threshold=node_threshold, edge_threshold=edge_threshold)
    return _finish(G, selection, "threshold", {"node_threshold": node_threshold, "edge_threshold": edge_threshold})


def prune_top_nodes(G: nx.DiGraph, n_nodes: int) -> PruneResult:
    """Prune to the ``n_nodes`` nodes of largest ``|effect|`` (fewer once unconnected ones are dropped)."""
    return _finish(G, select_top_nodes(G, n_nodes), "top_nodes", {"n_nodes": n_nodes})


def prune_top_edges(G: nx.DiGraph, n_edges: int) -> PruneResult:
    """Prune to the ``n_edges`` edges of largest ``|effect|`` (fewer once unconnected ones are dropped)."""
    return _finish(G, select_top_edges(G, n_edges), "top_edges", {"n_edges": n_edges})


def prune_greedy(G: nx.DiGraph, *, n_edges: int | None = None, n_nodes: int | None = None) -> PruneResult:
    """Prune by greedy growth from the metric (see :func:`select_greedy`)."""
    selection = select_greedy(G, n_edges=n_edges, n_nodes=n_nodes)
    params = {"n_edges": n_edges} if n_edges is not None else {"n_nodes": n_nodes}
    return _finish(G, selection, "greedy", params)


def prune(G: nx.DiGraph, config: PruneConfig) -> PruneResult:
    """Prune by the rule ``config`` names: thresholds, or one size (top-k, or greedy with ``greedy=True``)."""
    thresholds = config.node_threshold is not None or config.edge_threshold is not None
    sizes = [name for name in ("n_nodes", "n_edges") if getattr(config, name) is not None]
    if config.greedy:
        if thresholds or len(sizes) != 1:
            raise CircuitError("greedy pruning takes exactly one of n_nodes and n_edges, and no thresholds")
        return prune_greedy(G, n_edges=config.n_edges, n_nodes=config.n_nodes)
    if thresholds and sizes:
        raise CircuitError("prune by thresholds or by a size, not both")
    if len(sizes) > 1:
        raise CircuitError("give one of n_nodes and n_edges, not both")
    if config.n_nodes is not None:
        return prune_top_nodes(G, config.n_nodes)
    if config.n_edges is not None:
        return prune_top_edges(G, config.n_edges)
    if not thresholds:
        raise CircuitError("no pruning rule given: set node_threshold and/or edge_threshold, n_nodes or n_edges")
    return prune_by_threshold(G, node_threshold=config.node_threshold, edge_threshold=config.edge_threshold)
