"""Node-level scores: a circuit's nodes live, every other node of the model ablated.

With ``m`` the task metric averaged over the evaluation examples, ``m(C)`` is the metric with every
node outside the circuit ablated and ``m(M∖C)`` the metric with the circuit's nodes ablated;
faithfulness and completeness normalise them by ``m(M)`` and ``m(∅)``
(:func:`circuits.evaluation.curves.faithfulness_score`). Nodes that are not in the attributed graph
are outside every circuit, so they are ablated too: a circuit is judged against the whole model, not
against the graph it was pruned from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from circuits.errors import CircuitError
from circuits.evaluation.curves import completeness_score, faithfulness_score
from circuits.evaluation.masks import SiteMasks, count_masked
from circuits.evaluation.runner import LiveMasks, Runner
from circuits.graph.ids import count_nodes


@dataclass
class Evaluation:
    """The scores of one circuit and the metric values they come from."""

    faithfulness: float
    completeness: float | None
    m_model: float
    m_empty: float
    m_circuit: float
    m_complement: float | None
    nodes: int
    edges: int
    level: str
    ablation: str
    feature_nodes: int = 0
    error_nodes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def circuit_summary(circuit: nx.DiGraph, evaluation: Evaluation, edge_evaluation: Evaluation | None) -> dict[str, Any]:
    """The scores both ``circuits discover --json`` and ``circuits evaluate --json`` print for a circuit."""
    e = evaluation
    return {
        "faithfulness": e.faithfulness,
        "completeness": e.completeness,
        "nodes": e.nodes,
        "edges": circuit.number_of_edges(),
        "feature_nodes": e.feature_nodes,
        "error_nodes": e.error_nodes,
        "faithfulness_edges": None if edge_evaluation is None else edge_evaluation.faithfulness,
        "m_model": e.m_model,
        "m_empty": e.m_empty,
        "m_circuit": e.m_circuit,
    }


def check_circuit(circuit: nx.DiGraph) -> None:
    """Raise :class:`CircuitError` unless ``circuit`` is a graph with a node besides the metric."""
    if not isinstance(circuit, nx.DiGraph):
        raise CircuitError(f"a circuit is a networkx DiGraph, not {type(circuit).__name__}")
    if count_nodes(circuit) == 0:
        raise CircuitError(
            "the circuit is empty: it has no node besides 'metric'; prune with a larger size or a lower threshold "
            "(the empty circuit's faithfulness is 0 by definition)"
        )


def evaluation(
    runner: Runner, masks: SiteMasks, m_circuit: float, m_complement: float | None, level: str, edges: int
) -> Evaluation:
    """The :class:`Evaluation` of the nodes ``masks`` given the metric of the circuit and of its complement."""
    f = faithfulness_score(m_circuit, runner.m_model, runner.m_empty)
    c = None if m_complement is None else completeness_score(m_complement, runner.m_model, runner.m_empty)
    n_all, n_err = count_masked(masks)
    return Evaluation(
        f,
        c,
        runner.m_model,
        runner.m_empty,
        m_circuit,
        m_complement,
        n_all,
        edges,
        level,
        runner.config.ablation,
        n_all - n_err,
        n_err,
    )


def _live(runner: Runner, masks: SiteMasks, complement: bool = False) -> LiveMasks:
    return {s: runner.masks.live(s, masks.get(s), complement) for s in runner.sites}


def evaluate_node_sets(
    runner: Runner, node_sets: Sequence[Iterable[str]], completeness: bool = True
) -> list[Evaluation]:
    """Node-level scores of plain node sets (the empty set allowed: faithfulness 0), batched."""
    masks = [runner.masks.node_masks(ns) for ns in node_sets]
    lives: list[LiveMasks] = []
    for m in masks:
        lives.append(_live(runner, m))
        if completeness:
            lives.append(_live(runner, m, complement=True))
    values = runner.run_live(lives).mean(1).tolist()
    step = 2 if completeness else 1
    out = []
    for i, m in enumerate(masks):
        m_complement = values[step * i + 1] if completeness else None
        out.append(evaluation(runner, m, values[step * i], m_complement, "nodes", 0))
    return out


def evaluate_circuits(runner: Runner, circuits: Sequence[nx.DiGraph], completeness: bool = True) -> list[Evaluation]:
    """Node-level scores of several circuit graphs, batched (their edge counts recorded)."""
    for c in circuits:
        check_circuit(c)
    evals = evaluate_node_sets(runner, [list(c.nodes) for c in circuits], completeness)
    for e, c in zip(evals, circuits, strict=True):
        e.edges = c.number_of_edges()
    return evals


def faithfulness_with_bound(
    runner: Runner, node_sets: Sequence[Iterable[str]], confidence: float = 0.9, n_boot: int = 1000, seed: int = 0
) -> list[tuple[float, float]]:
    """Faithfulness of each node set and a one-sided lower bound at ``confidence``.

    The bound is the ``1 - confidence`` quantile of a bootstrap over examples (the same resampled
    examples for the circuit, the full model and the empty circuit).
    """
    if not 0 < confidence < 1:
        raise CircuitError(f"confidence must be in (0, 1), got {confidence}")
    rows = runner.run_live([_live(runner, runner.masks.node_masks(ns)) for ns in node_sets])
    full, empty = runner.reference_rows
    b = full.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, b, (n_boot, b), generator=gen)
    denominator = full[idx].mean(1) - empty[idx].mean(1)  # [n_boot]
    out = []
    for r in rows:
        f = faithfulness_score(float(r.mean()), runner.m_model, runner.m_empty)
        boot = (r[idx].mean(1) - empty[idx].mean(1)) / denominator
        out.append((f, float(torch.quantile(boot, 1 - confidence))))
    return out
