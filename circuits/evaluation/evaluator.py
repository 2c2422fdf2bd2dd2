"""Evaluating circuits by real ablation: :class:`Evaluator`, the entry point on one evaluation batch.

Every node of the replacement model (each feature and error node of every site, at every token of
every example) is either *in* a circuit or *ablated*: set to its ablation value
(:mod:`circuits.evaluation.ablation`) while the model runs, with downstream dictionaries re-encoding
the changed stream. With ``m`` the task metric averaged over the evaluation examples:

- ``m(M)``: the full model, nothing ablated;
- ``m(∅)``: every node ablated (the embedding included, unless ``ablate_embed=False``);
- ``m(C)``: every node outside the circuit ablated;
- ``m(M∖C)``: the circuit's nodes ablated, everything else live;

faithfulness ``(m(C) - m(∅)) / (m(M) - m(∅))`` and completeness ``(m(M∖C) - m(∅)) / (m(M) - m(∅))``,
at node level (:mod:`circuits.evaluation.node_level`) or at edge level, where the edges a circuit
leaves out are ablated too (:mod:`circuits.evaluation.edge_level`). Graph nodes are expanded onto
each example's tokens as :mod:`circuits.evaluation.masks` describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from circuits.data.inputs import batch_rows
from circuits.data.tasks import TaskBatch
from circuits.errors import CircuitError
from circuits.evaluation.ablation import AblationValues, EvalConfig, ablation_values
from circuits.evaluation.edge_level import evaluate_edges
from circuits.evaluation.masks import NodeMasks, SiteMasks
from circuits.evaluation.node_level import (
    Evaluation,
    check_circuit,
    evaluate_circuits,
    evaluate_node_sets,
    faithfulness_with_bound,
)
from circuits.evaluation.runner import Runner
from replacement.model import ReplacementModel

LEVELS = ("nodes", "edges")


class Evaluator:
    """Scores circuits on one evaluation batch by real ablation (see the module docstring).

    ``reference``: the counterfactual prompts of mean ablation (a batch of the same task), the batch
    whose counterfactuals patch ablation uses (the evaluation batch itself), or precomputed
    :class:`AblationValues` for this batch.
    """

    def __init__(
        self,
        rm: ReplacementModel,
        batch: TaskBatch,
        config: EvalConfig | None = None,
        reference: TaskBatch | AblationValues | None = None,
    ):
        self.rm = rm
        self.batch = batch.to(rm.device)
        config = EvalConfig() if config is None else config
        self.config = config
        if isinstance(reference, AblationValues):
            values = reference
        else:
            values = ablation_values(
                rm, self.batch, config.ablation, None if reference is None else reference.to(rm.device)
            )
        values.check(rm, self.batch)
        self.values = values
        self.masks = NodeMasks({s: rm.d_sae(s) for s in rm.site_names}, self.batch, config)
        self.runner = Runner(rm, self.batch, config, values, self.masks)

    def subset(self, n: int) -> Evaluator:
        """An evaluator on the first ``n`` examples, with the same ablation values (and reference means)."""
        if n >= len(self.batch):
            return self
        return Evaluator(self.rm, batch_rows(self.batch, slice(0, n)), self.config, self.values.first(n))

    @property
    def m_model(self) -> float:
        """The metric of the full model (mean over the evaluation examples)."""
        return self.runner.m_model

    @property
    def m_empty(self) -> float:
        """The metric with every node ablated (protected nodes excepted)."""
        return self.runner.m_empty

    def node_masks(self, nodes: Iterable[str]) -> SiteMasks:
        """Per site and graph position, a bool [d_sae + 1] of the given nodes (error node last)."""
        return self.masks.node_masks(nodes)

    def evaluate(self, circuit: nx.DiGraph, level: str = "nodes", completeness: bool = True) -> Evaluation:
        """Scores of a circuit graph at node level (its nodes) or edge level (its nodes and edges)."""
        check_circuit(circuit)
        if level == "nodes":
            return self.evaluate_circuits([circuit], completeness)[0]
        if level == "edges":
            return self.evaluate_edges(circuit, completeness)
        raise CircuitError(f"unknown evaluation level {level!r}; expected one of {', '.join(LEVELS)}")

    def evaluate_node_sets(self, node_sets: Sequence[Iterable[str]], completeness: bool = True) -> list[Evaluation]:
        """Node-level scores of plain node sets (the empty set allowed: faithfulness 0)."""
        return evaluate_node_sets(self.runner, node_sets, completeness)

    def evaluate_nodes(self, nodes: Iterable[str], completeness: bool = True) -> Evaluation:
        """Node-level scores of one node set (ids of :mod:`circuits.graph.ids`; ``"metric"`` is ignored)."""
        return self.evaluate_node_sets([list(nodes)], completeness)[0]

    def evaluate_circuits(self, circuits: Sequence[nx.DiGraph], completeness: bool = True) -> list[Evaluation]:
        """Node-level scores of several circuits, batched."""
        return evaluate_circuits(self.runner, circuits, completeness)

    def evaluate_edges(self, circuit: nx.DiGraph, completeness: bool = True) -> Evaluation:
        """Edge-level scores: the circuit's nodes live and only its edges carry live values."""
        return evaluate_edges(self.runner, circuit, completeness)

    def faithfulness_with_bound(
        self, node_sets: Sequence[Iterable[str]], confidence: float = 0.9, n_boot: int = 1000, seed: int = 0
    ) -> list[tuple[float, float]]:
        """Faithfulness of each node set and a bootstrap lower bound at ``confidence``
        (:func:`circuits.evaluation.node_level.faithfulness_with_bound`)."""
        return faithfulness_with_bound(self.runner, node_sets, confidence, n_boot, seed)


def evaluate_circuit(
    rm: ReplacementModel,
    batch: TaskBatch,
    circuit: nx.DiGraph,
    config: EvalConfig | None = None,
    *,
    level: str = "nodes",
    reference: TaskBatch | AblationValues | None = None,
) -> Evaluation:
    """Faithfulness and completeness of ``circuit`` on ``batch`` (see :class:`Evaluator`)."""
    return Evaluator(rm, batch, config, reference).evaluate(circuit, level)
