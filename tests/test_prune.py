"""Pruning on a hand-made 12-node graph, with every expected circuit worked out by hand.

The graph (effects in brackets; ``e*`` embed, ``a`` attn, ``m`` mlp, ``r`` resid, digit = layer)::

    inputs: e1 [.9]   e2 [.5]   e3 (error node) [.05]
    e1 -> a0 .6    e1 -> m0 -.5    e2 -> a0 .4    e3 -> r0 .02    e1 -> x .3
    a0 -> r0 .1    m0 -> a1 -.45   a0 -> a1 .55   r0 -> m1 .15    x -> d .25
    a1 -> r1 .7    m1 -> r1 .2     r1 -> metric .9    a1 -> metric .05

    a0 [.7]  m0 [-.6]  r0 [.2]  a1 [.8]  m1 [.3]  r1 [1.0]  x [.35]  d [.4]  metric [2.0]

``x -> d`` is a dangling branch (``d`` reaches nothing), so it never survives; ``m0`` has a negative
effect and a negative edge into ``a1``. Edges by |effect|: r1>M .9, a1>r1 .7, e1>a0 .6, a0>a1 .55,
e1>m0 .5, m0>a1 .45, e2>a0 .4, e1>x .3, x>d .25, m1>r1 .2, r0>m1 .15, a0>r0 .1, a1>M .05, e3>r0 .02.

Each test runs on the token-level, span-level and position-agnostic versions of the graph.
"""

from __future__ import annotations

import copy

import networkx as nx
import pytest

from circuits.errors import CircuitError
from circuits.graph.ids import METRIC, add_metric, add_node, count_nodes, new_graph
from circuits.graph.io import validate_graph
from circuits.graph.prune import (
    PruneConfig,
    Selection,
    connect_inputs_to_metric,
    input_nodes,
    prune,
    prune_by_threshold,
    prune_greedy,
    prune_top_edges,
    prune_top_nodes,
    select_greedy,
    select_top_edges,
)

# name: (site, position slot, index, effect); slot 0/1 maps to the mode's two positions
NODES = {
    "e1": ("embed", 0, 10, 0.9),
    "e2": ("embed", 1, 11, 0.5),
    "e3": ("embed", 1, "err", 0.05),
    "a0": ("L0.attn", 1, 3, 0.7),
    "m0": ("L0.mlp", 0, 4, -0.6),
    "r0": ("L0.resid", 1, "err", 0.2),
    "x": ("L0.attn", 0, 2, 0.35),
    "a1": ("L1.attn", 1, 7, 0.8),
    "m1": ("L1.mlp", 1, 8, 0.3),
    "d": ("L1.mlp", 0, 9, 0.4),
    "r1": ("L1.resid", 1, 1, 1.0),
}
EDGES = [
    ("e1", "a0", 0.6),
    ("e1", "m0", -0.5),
    ("e2", "a0", 0.4),
    ("e3", "r0", 0.02),
    ("e1", "x", 0.3),
    ("a0", "r0", 0.1),
    ("m0", "a1", -0.45),
    ("a0", "a1", 0.55),
    ("r0", "m1", 0.15),
    ("x", "d", 0.25),
    ("a1", "r1", 0.7),
    ("m1", "r1", 0.2),
    ("r1", "M", 0.9),
    ("a1", "M", 0.05),
]
MODES = {
    "token": ((1, 2), ["<bos>", "Mary", "John"]),
    "schema": (("IO", "END"), ["IO", "END"]),
    "agnostic": (("*", "*"), ["*"]),
}


def build(mode: str) -> tuple[nx.DiGraph, dict[str, str]]:
    """The graph in one position mode, and the map from short names to node ids."""
    slots, labels = MODES[mode]
    G = new_graph(
        model="toy",
        dictionaries="toy-saes",
        task="ioi",
        method="ig",
        positions=mode,
        position_labels=labels,
        n_layers=2,
    )
    ids = {"M": add_metric(G, effect=2.0, label="logit diff")}
    for name, (site, slot, index, effect) in NODES.items():
        ids[name] = add_node(G, site, slots[slot], index, effect=effect, label=name)
    for u, v, effect in EDGES:
        G.add_edge(ids[u], ids[v], effect=effect)
    validate_graph(G, require_metadata=True)
    return G, ids


@pytest.fixture(params=list(MODES))
def graph(request):
    return build(request.param)


def names(ids: dict[str, str], G: nx.DiGraph) -> tuple[set[str], set[tuple[str, str]]]:
    back = {v: k for k, v in ids.items()}
    return {back[n] for n in G if n != METRIC}, {(back[u], back[v]) for u, v in G.edges}


def chain(*pairs: str) -> set[tuple[str, str]]:
    return {tuple(p.split(">")) for p in pairs}


# ------------------------------------------------------------------------------------ structure


def test_graph_as_described(graph):
    G, ids = graph
    assert G.number_of_nodes() == 12 and count_nodes(G) == 11 and G.number_of_edges() == 14
    assert input_nodes(G) == [ids["e1"], ids["e2"], ids["e3"]]


def test_no_rule_drops_only_the_dangling_branch(graph):
    G, ids = graph
    result = prune_by_threshold(G)
    assert names(ids, result.graph) == (
        {"e1", "e2", "e3", "a0", "m0", "r0", "a1", "m1", "r1"},
        {(u, v) for u, v, _ in EDGES} - chain("e1>x", "x>d"),
    )
    assert result.dropped_nodes == [ids["x"], ids["d"]]
    assert (result.n_nodes, result.n_edges, result.selected_nodes, result.selected_edges) == (9, 12, 11, 14)


# ----------------------------------------------------------------------------------- thresholds


def test_node_threshold(graph):
    G, ids = graph
    result = prune_by_threshold(G, node_threshold=0.3)
    # |effect| >= .3 keeps m1 (.3) but its only input r0 (.2) goes, so m1 is dropped; x, d dangle
    assert names(ids, result.graph) == (
        {"e1", "e2", "a0", "m0", "a1", "r1"},
        chain("e1>a0", "e1>m0", "e2>a0", "m0>a1", "a0>a1", "a1>r1", "r1>M", "a1>M"),
    )
    assert result.dropped_nodes == [ids["x"], ids["m1"], ids["d"]]


def test_edge_threshold(graph):
    G, ids = graph
    result = prune_by_threshold(G, edge_threshold=0.3)
    assert names(ids, result.graph) == (
        {"e1", "e2", "a0", "m0", "a1", "r1"},
        chain("e1>a0", "e1>m0", "e2>a0", "m0>a1", "a0>a1", "a1>r1", "r1>M"),
    )


def test_node_and_edge_threshold(graph):
    G, ids = graph
    result = prune_by_threshold(G, node_threshold=0.65, edge_threshold=0.5)
    # nodes e1 .9, a0 .7, a1 .8, r1 1.0; edges among them with |effect| >= .5
    assert names(ids, result.graph) == ({"e1", "a0", "a1", "r1"}, chain("e1>a0", "a0>a1", "a1>r1", "r1>M"))


def test_threshold_that_leaves_nothing(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="empty circuit"):
        prune_by_threshold(G, node_threshold=0.95)  # only r1 is left, not reachable from an input


@pytest.mark.parametrize("kwargs", [{"node_threshold": -0.1}, {"edge_threshold": -1e-9}])
def test_negative_threshold(graph, kwargs):
    G, _ = graph
    with pytest.raises(CircuitError, match=">= 0"):
        prune_by_threshold(G, **kwargs)


def test_nan_threshold(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="number"):
        prune_by_threshold(G, node_threshold=float("nan"))


# ------------------------------------------------------------------------------------- top-k


def test_top_nodes_rank_by_magnitude(graph):
    G, ids = graph
    result = prune_top_nodes(G, 5)
    # r1 1.0, e1 .9, a1 .8, a0 .7, m0 |-.6| (ahead of d .4 and m1 .3 only by magnitude)
    assert names(ids, result.graph) == (
        {"r1", "e1", "a1", "a0", "m0"},
        chain("e1>a0", "e1>m0", "m0>a1", "a0>a1", "a1>r1", "r1>M", "a1>M"),
    )
    assert result.n_nodes == 5


def test_top_nodes_four(graph):
    G, ids = graph
    assert names(ids, prune_top_nodes(G, 4).graph) == (
        {"r1", "e1", "a1", "a0"},
        chain("e1>a0", "a0>a1", "a1>r1", "r1>M", "a1>M"),
    )


def test_top_nodes_unconnected_is_empty(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="empty circuit"):
        prune_top_nodes(G, 3)  # r1, e1, a1: no edge from e1 to a1


def test_top_edges(graph):
    G, ids = graph
    assert names(ids, prune_top_edges(G, 4).graph) == (
        {"e1", "a0", "a1", "r1"},
        chain("r1>M", "a1>r1", "e1>a0", "a0>a1"),
    )
    six = prune_top_edges(G, 6)
    assert names(ids, six.graph) == (
        {"e1", "a0", "a1", "r1", "m0"},
        chain("r1>M", "a1>r1", "e1>a0", "a0>a1", "e1>m0", "m0>a1"),
    )
    eight = prune_top_edges(G, 8)  # adds e2>a0 and e1>x; x leads nowhere
    assert names(ids, eight.graph)[0] == {"e1", "e2", "a0", "a1", "r1", "m0"}
    assert eight.dropped_nodes == [ids["x"]]
    assert (eight.n_edges, eight.selected_edges) == (7, 8)


def test_top_edges_unconnected_is_empty(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="empty circuit"):
        prune_top_edges(G, 3)  # r1>M, a1>r1, e1>a0: the path breaks at a0>a1


def test_top_k_ties_go_to_graph_order():
    G, ids = build("token")
    G.edges[ids["e1"], ids["a0"]]["effect"] = -0.55  # now ties with a0>a1 (.55), which comes later
    selection = select_top_edges(G, 3)
    assert selection.edges == {(ids[u], ids[v]) for u, v in chain("r1>M", "a1>r1", "e1>a0")}


@pytest.mark.parametrize(
    ("fn", "size", "message"),
    [
        (prune_top_nodes, 12, "n_nodes is 12, but the graph has only 11 nodes"),
        (prune_top_edges, 15, "n_edges is 15, but the graph has only 14 edges"),
        (prune_top_nodes, 0, "at least 1"),
        (prune_top_edges, 2.0, "must be an int"),
    ],
)
def test_size_out_of_range(graph, fn, size, message):
    G, _ = graph
    with pytest.raises(CircuitError, match=message):
        fn(G, size)


def test_full_size_is_allowed(graph):
    G, _ = graph
    assert prune_top_nodes(G, 11).n_nodes == 9
    assert prune_top_edges(G, 14).n_edges == 12


# ------------------------------------------------------------------------------------- greedy


def test_greedy_edges(graph):
    G, ids = graph
    four = prune_greedy(G, n_edges=4)
    # from metric: r1>M .9, a1>r1 .7, a0>a1 .55 (e1>a0 is not yet reachable), then e1>a0 .6
    assert names(ids, four.graph) == ({"r1", "a1", "a0", "e1"}, chain("r1>M", "a1>r1", "a0>a1", "e1>a0"))
    six = prune_greedy(G, n_edges=6)  # then m0>a1 .45 (ahead of e2>a0 .4), then e1>m0 .5
    assert names(ids, six.graph) == (
        {"r1", "a1", "a0", "e1", "m0"},
        chain("r1>M", "a1>r1", "a0>a1", "e1>a0", "m0>a1", "e1>m0"),
    )


def test_greedy_differs_from_top_edges():
    G, ids = build("token")
    greedy = select_greedy(G, n_edges=3)
    top = select_top_edges(G, 3)
    assert greedy.edges == {(ids[u], ids[v]) for u, v in chain("r1>M", "a1>r1", "a0>a1")}
    assert top.edges == {(ids[u], ids[v]) for u, v in chain("r1>M", "a1>r1", "e1>a0")}


def test_greedy_nodes_then_drops_the_unfed_node(graph):
    G, ids = graph
    result = prune_greedy(G, n_nodes=5)
    # nodes enter as r1, a1, a0, e1, m0 (via m0>a1); m0's own input was never chosen, so it goes
    assert result.selected_nodes == 5
    assert names(ids, result.graph) == ({"r1", "a1", "a0", "e1"}, chain("r1>M", "a1>r1", "a0>a1", "e1>a0"))
    assert result.dropped_nodes == [ids["m0"]]


def test_greedy_too_small_is_empty(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="empty circuit"):
        prune_greedy(G, n_edges=2)


def test_greedy_stops_when_nothing_leads_in(graph):
    G, ids = graph
    result = prune_greedy(G, n_edges=14)  # x>d and e1>x never lead into the circuit
    assert result.selected_edges == 12
    assert names(ids, result.graph) == names(ids, prune_by_threshold(G).graph)


def test_greedy_needs_one_size(graph):
    G, _ = graph
    with pytest.raises(CircuitError, match="exactly one"):
        prune_greedy(G)
    with pytest.raises(CircuitError, match="exactly one"):
        prune_greedy(G, n_edges=3, n_nodes=3)
    with pytest.raises(CircuitError, match="n_nodes is 20, but the graph has only 11"):
        prune_greedy(G, n_nodes=20)


# ------------------------------------------------------------------------------ copies, configs


def test_input_is_never_mutated_and_result_is_a_copy(graph):
    G, ids = graph
    snapshot = (copy.deepcopy(G.graph), list(G.nodes(data=True)), list(G.edges(data=True)))
    snapshot = copy.deepcopy(snapshot)
    result = prune_top_nodes(G, 5)
    H = result.graph
    assert (G.graph, list(G.nodes(data=True)), list(G.edges(data=True))) == snapshot
    assert H.graph["pruning"] == {"rule": "top_nodes", "n_nodes": 5}
    assert {k: v for k, v in H.graph.items() if k != "pruning"} == G.graph
    for n in H:
        assert H.nodes[n] == G.nodes[n]
    for u, v in H.edges:
        assert H.edges[u, v] == G.edges[u, v]
    H.nodes[ids["e1"]]["effect"] = 99.0
    H.graph["position_labels"].append("extra")
    assert G.nodes[ids["e1"]]["effect"] == 0.9
    assert "extra" not in G.graph["position_labels"]
    # order follows the input graph
    assert list(H) == [n for n in G if n in H]
    assert list(H.edges) == [e for e in G.edges if H.has_edge(*e)]
    validate_graph(H, require_metadata=True)


def test_missing_metric():
    G, ids = build("token")
    G.remove_node(ids["M"])
    for call in (lambda: prune_by_threshold(G), lambda: prune_top_nodes(G, 2), lambda: prune_greedy(G, n_edges=2)):
        with pytest.raises(CircuitError, match="no 'metric' node"):
            call()


def test_missing_effect():
    G, ids = build("token")
    del G.edges[ids["a0"], ids["a1"]]["effect"]
    with pytest.raises(CircuitError, match="has no 'effect'"):
        prune_top_edges(G, 3)


def test_connect_keeps_only_paths_from_inputs():
    G, ids = build("token")
    # a selection holding the dangling branch and a path that starts at a non-input (a0)
    selection = Selection(
        frozenset(ids[n] for n in ("M", "e1", "x", "d", "a0", "a1", "r1")),
        frozenset((ids[u], ids[v]) for u, v in chain("e1>x", "x>d", "a0>a1", "a1>r1", "r1>M")),
    )
    with pytest.raises(CircuitError, match="empty circuit"):
        connect_inputs_to_metric(G, selection)


@pytest.mark.parametrize(
    ("config", "rule", "n_nodes"),
    [
        (PruneConfig(node_threshold=0.3), "threshold", 6),
        (PruneConfig(n_nodes=5), "top_nodes", 5),
        (PruneConfig(n_edges=4), "top_edges", 4),
        (PruneConfig(n_nodes=5, greedy=True), "greedy", 4),
    ],
)
def test_prune_dispatches(graph, config, rule, n_nodes):
    G, _ = graph
    result = prune(G, config)
    assert (result.rule, result.n_nodes) == (rule, n_nodes)


@pytest.mark.parametrize(
    "config",
    [
        PruneConfig(),
        PruneConfig(node_threshold=0.1, n_nodes=3),
        PruneConfig(n_nodes=3, n_edges=3),
        PruneConfig(greedy=True),
        PruneConfig(edge_threshold=0.1, n_edges=3, greedy=True),
    ],
)
def test_prune_refuses_unclear_configs(graph, config):
    G, _ = graph
    with pytest.raises(CircuitError):
        prune(G, config)
