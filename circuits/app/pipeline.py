"""The discovery pipeline: a task in, a pruned, evaluated and rendered circuit out.

:func:`discover` runs the phases in order, one named function each, each returning a dataclass;
the ``circuits discover`` command is a thin wrapper over it (and ``circuits evaluate`` over
:func:`circuits.app.reevaluation.evaluate_saved`).

1. :func:`circuits.app.loading.load_setup`: the model, its dictionary set and the replacement model;
2. :func:`load_task_data`: attribution examples (seed ``seed``), held-out evaluation examples
   (seed ``seed + 1``) and selection examples that choose the circuit's size (seed ``seed + 2``);
   a task file is cut into parts in that order (:func:`circuits.data.splits.load_data`); circuit.json
   records the parts (metadata ``splits``) and ``circuits evaluate`` reuses its held-out one;
3. :func:`attribute`: node and edge effects, the attributed graph
   (:func:`circuits.graph.build.attribute_graph`);
4. :func:`select_circuit`: the circuit, by size (top-N nodes), by node threshold, or (the default)
   the smallest top-N whose faithfulness on the *selection* examples reaches a target, pruned to what
   connects the inputs to the metric (:class:`ChosenCircuit`);
5. :func:`evaluate_held_out`: faithfulness and completeness on the held-out examples, at node and at
   edge level (:class:`HeldOut`); :func:`curves`: the faithfulness curves
   (:func:`circuits.evaluation.faithfulness_curves`);
6. :func:`label_features`: top-activating contexts (:func:`circuits.labels.label_circuit`, on the toy
   corpus or ``labels.corpus``, cached per dictionary set) written into the nodes' ``label`` attributes;
7. :func:`circuits.app.outputs.write_outputs`: circuit.json, circuit.svg, curve.json, curve.png and
   report.html.

Python::

    from circuits.app.config import DataConfig, DiscoverConfig
    from circuits.app.pipeline import discover
    result = discover(DiscoverConfig(data=DataConfig(task="ioi")), out="runs/ioi")
    print(result.summary()["faithfulness"], result.circuit.number_of_nodes())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.app.config import DiscoverConfig
from circuits.app.loading import TOY, Setup, load_setup
from circuits.app.outputs import write_outputs
from circuits.data.inputs import attribution_inputs
from circuits.data.splits import TaskData, load_data
from circuits.data.tasks import TaskBatch
from circuits.errors import CircuitError
from circuits.evaluation import Curves, Evaluation, Evaluator, circuit_summary, faithfulness_curves, smallest_faithful
from circuits.evaluation.curves import MIB_FRACTIONS, nodes_needed
from circuits.graph.build import AttributedGraph, attribute_graph, check_token_positions
from circuits.graph.ids import METRIC, copy_graph, count_nodes
from circuits.graph.prune import PruneResult, prune_by_threshold, prune_top_nodes
from circuits.labels import label_circuit
from circuits.toy.word_classes import WORD_CLASSES
from replacement.model import ReplacementModel

log = logging.getLogger(__name__)

LEVELS = (0.5, 0.8, 0.9)


@contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    seconds[phase] = time.perf_counter() - t


# ------------------------------------------------------------------------------------ 2. data


def load_task_data(config: DiscoverConfig, setup: Setup) -> TaskData:
    """The run's examples (:func:`circuits.data.splits.load_data`; selection examples only when the
    size is chosen on them). ``--positions token`` refuses prompts of different lengths
    (:func:`circuits.graph.build.check_token_positions`), before anything is attributed."""
    d = config.data
    n_selection = d.n_selection if config.selection.by_faithfulness else 0
    data = load_data(d.task, setup.loaded.tokenizer, d.n_attribution, d.n_eval, d.seed, d.schema, n_selection)
    for part in (data.attribution, data.selection, data.evaluation):
        if part is not None:
            part.check_fits(setup.loaded.model.cfg.n_ctx)
    if config.attribution.positions == "token":
        parts = {
            "attribution": data.attribution_batch,
            "selection": data.selection_batch,
            "evaluation": data.evaluation_batch,
        }
        check_token_positions(parts, d.task)
    return data


def token_labels(tokenizer: Any, batch: TaskBatch) -> list[str]:
    """Column labels of a token-level graph: the tokens of the longest prompt."""
    longest = int(batch.clean_lengths.argmax())
    return [tokenizer.decode([int(t)]) or f"<{int(t)}>" for t in batch.clean[longest]]


# ------------------------------------------------------------------------------------ 3. attribution


def attribute(config: DiscoverConfig, setup: Setup, data: TaskData, progress: bool = False) -> AttributedGraph:
    """The attributed graph of the attribution examples, with the run's metadata."""
    batch = data.attribution_batch.to(setup.loaded.device)
    labels = token_labels(setup.loaded.tokenizer, batch) if config.attribution.positions == "token" else None
    metadata = {
        "model": setup.model_name,
        "dictionaries": setup.dictionaries_name,
        "task": data.name,
        "dictionaries_source": setup.dictionaries_source,
        "composition": config.model.composition,
        "seed": config.data.seed,
        "eval_seed": data.eval_seed,
        "evaluation_examples": len(data.evaluation),
        "splits": data.splits,
    }
    return attribute_graph(
        setup.rm,
        batch,
        attribution_inputs(batch),
        config.attribution,
        metadata=metadata,
        token_labels=labels,
        progress=progress,
    )


# ------------------------------------------------------------------------------------ 4. selection


def choose_circuit(G: nx.DiGraph, n_nodes: int | None = None, node_threshold: float | None = None) -> PruneResult:
    """The circuit: the top ``n_nodes`` nodes, or every node with ``|effect| >= node_threshold``;
    then only what connects the inputs to the metric (:mod:`circuits.graph.prune`)."""
    if (n_nodes is None) == (node_threshold is None):
        raise CircuitError("choose the circuit by a number of nodes or by a node threshold (exactly one)")
    if node_threshold is not None:
        effects = [abs(float(d["effect"])) for n, d in G.nodes(data=True) if n != METRIC and "effect" in d]
        if effects and max(effects) < node_threshold:
            raise CircuitError(
                f"--node-threshold {node_threshold:g} selects no node: the largest |effect| in the attributed graph is "
                f"{max(effects):.4g}; give a smaller threshold"
            )
        return prune_by_threshold(G, node_threshold=node_threshold)
    assert n_nodes is not None
    total = count_nodes(G)
    if n_nodes > total:
        raise CircuitError(
            f"asked for a circuit of {n_nodes} nodes, but the attributed graph has only {total} to choose from; "
            f"give --nodes {total} or fewer"
        )
    return prune_top_nodes(G, n_nodes)


def circuit_candidates(G: nx.DiGraph, ablate_embed: bool = True) -> nx.DiGraph:
    """The part of the attributed graph a circuit is chosen from: all of it, or, when the embedding is
    never ablated (``ablate_embed=False``, Sparse Feature Circuits' convention), all but the embedding
    nodes: they stay live in every evaluation whatever the circuit holds, so they are part of the
    input rather than of the circuit, and the earliest sites' nodes become its inputs."""
    if ablate_embed:
        return G
    return copy_graph(G, [n for n, d in G.nodes(data=True) if d.get("site") != "embed"])


@dataclass
class SizeChoice:
    """How the circuit's size was chosen: given, or the smallest reaching a faithfulness on the selection examples."""

    rule: str  # "nodes" | "threshold" | "faithfulness"
    n_nodes: int | None
    target: float | None = None
    selection_faithfulness: float | None = None
    selection_lower_bound: float | None = None
    confidence: float | None = None


def choose_size(config: DiscoverConfig, rm: ReplacementModel, G: nx.DiGraph, data: TaskData) -> SizeChoice:
    """The circuit size of a run: ``selection.n_nodes``, ``selection.node_threshold``, or the smallest
    top-N whose faithfulness reaches ``selection.faithfulness`` on the selection examples (fresh
    examples, apart from both the attribution and the held-out ones; for a small task file, the
    attribution examples)."""
    s = config.selection
    if s.n_nodes is not None:
        return SizeChoice("nodes", s.n_nodes)
    if s.node_threshold is not None:
        return SizeChoice("threshold", None)
    batch = data.selection_batch if data.selection_batch is not None else data.attribution_batch
    evaluator = Evaluator(rm, batch, config.evaluation).subset(config.data.n_selection)
    found = smallest_faithful(evaluator, G, s.faithfulness, confidence=s.confidence)
    if not found.reached:
        log.warning(
            "no circuit of the graph reaches faithfulness %.2f on the selection examples (best %.3f at %d nodes)",
            s.faithfulness,
            found.faithfulness,
            found.n_nodes,
        )
    return SizeChoice(
        "faithfulness", found.n_nodes, s.faithfulness, found.faithfulness, found.lower_bound, s.confidence
    )


@dataclass
class ChosenCircuit:
    """The nodes a circuit is chosen from, how its size was chosen, and the pruned circuit."""

    candidates: nx.DiGraph
    size: SizeChoice
    prune: PruneResult


def select_circuit(config: DiscoverConfig, setup: Setup, data: TaskData, attributed: AttributedGraph) -> ChosenCircuit:
    """The circuit of the attributed graph (:func:`circuit_candidates`, :func:`choose_size`, :func:`choose_circuit`)."""
    ablate_embed = config.evaluation.ablate_embed
    candidates = circuit_candidates(attributed.graph, ablate_embed)
    if count_nodes(candidates) == 0:
        kept = " (the embedding nodes, never ablated with --keep-embed, are not candidates)" if not ablate_embed else ""
        raise CircuitError(
            f"the attributed graph has {count_nodes(attributed.graph)} nodes and none to choose a circuit from{kept}: "
            "raise --max-nodes, or check that the task's metric depends on the model's features"
        )
    size = choose_size(config, setup.rm, candidates, data)
    return ChosenCircuit(candidates, size, choose_circuit(candidates, size.n_nodes, config.selection.node_threshold))


# ------------------------------------------------------------------------------------ 5. evaluation


@dataclass
class HeldOut:
    """The circuit evaluated on the held-out examples: at node level and (unless skipped) at edge level."""

    evaluator: Evaluator
    nodes: Evaluation
    edges: Evaluation | None


def evaluate_held_out(config: DiscoverConfig, setup: Setup, data: TaskData, circuit: nx.DiGraph) -> HeldOut:
    """Faithfulness and completeness of ``circuit`` on the held-out examples."""
    evaluator = Evaluator(setup.rm, data.evaluation_batch, config.evaluation)
    nodes = evaluator.evaluate(circuit)
    edges = evaluator.evaluate(circuit, level="edges", completeness=False) if config.curves.edge_curve else None
    return HeldOut(evaluator, nodes, edges)


def curves(config: DiscoverConfig, held_out: HeldOut, chosen: ChosenCircuit, progress: bool = False) -> Curves:
    """The node (and edge) faithfulness curves of the candidates on the held-out examples; the chosen
    size is a point of the node curve."""
    c = config.curves
    n_nodes = chosen.size.n_nodes
    return faithfulness_curves(
        held_out.evaluator,
        chosen.candidates,
        c.points,
        fractions=MIB_FRACTIONS if c.edge_curve else None,
        edge_examples=c.edge_examples,
        progress=progress,
        extra_sizes=[n_nodes] if n_nodes is not None else [],
    )


def record_evaluation(config: DiscoverConfig, circuit: nx.DiGraph, held_out: HeldOut, size: SizeChoice) -> None:
    """Write the held-out scores and the evaluation settings into the circuit's metadata."""
    e, edges = held_out.nodes, held_out.edges
    circuit.graph["evaluation"] = {
        "ablation": e.ablation,
        "faithfulness": e.faithfulness,
        "completeness": e.completeness,
        "faithfulness_edges": None if edges is None else edges.faithfulness,
        "m_model": e.m_model,
        "m_empty": e.m_empty,
        "m_circuit": e.m_circuit,
        "ablate_errors": config.evaluation.ablate_errors,
        "ablate_embed": config.evaluation.ablate_embed,
    }
    circuit.graph["size_choice"] = asdict(size)


# ------------------------------------------------------------------------------------ 6. labels


def label_features(
    config: DiscoverConfig, setup: Setup, circuit: nx.DiGraph, progress: bool = False
) -> dict[str, list[dict[str, Any]]] | None:
    """The top-activating contexts of the circuit's features (None with labels off), written into the
    nodes' ``label`` attributes; the toy language's word classes name them for the toy model only."""
    if not config.labels.enabled:
        return None
    word_classes = WORD_CLASSES if setup.loaded.name == TOY else None
    return label_circuit(
        circuit, setup.rm, setup.loaded.tokenizer, config.labels.corpus, progress=progress, word_classes=word_classes
    )


# ------------------------------------------------------------------------------------ the run


@dataclass
class DiscoverResult:
    """Everything a discovery run produced."""

    config: DiscoverConfig
    attributed: AttributedGraph
    prune: PruneResult
    evaluation: Evaluation
    edge_evaluation: Evaluation | None
    curves: Curves
    size: SizeChoice
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def circuit(self) -> nx.DiGraph:
        return self.prune.graph

    @property
    def graph(self) -> nx.DiGraph:
        return self.attributed.graph

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``circuits discover --json`` prints."""
        e, meta = self.evaluation, self.graph.graph
        return {
            **circuit_summary(self.circuit, e, self.edge_evaluation),
            "cpr": self.curves.cpr,
            "cmd": self.curves.cmd,
            "nodes_needed": {str(level): nodes_needed(self.curves.nodes, level) for level in LEVELS},
            "size_rule": self.size.rule,
            "selection_faithfulness": self.size.selection_faithfulness,
            "selection_lower_bound": self.size.selection_lower_bound,
            "graph_nodes": count_nodes(self.graph),
            "graph_edges": self.graph.number_of_edges(),
            **{k: meta.get(k) for k in ("task", "model", "dictionaries", "method", "positions")},
            "ablation": e.ablation,
            "attribution_examples": len(self.attributed.nodes.valid),
            "evaluation_examples": meta.get("evaluation_examples"),
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def discover(
    config: DiscoverConfig | None = None, out: str | Path | None = None, progress: bool = False
) -> DiscoverResult:
    """Attribute, prune, evaluate on held-out examples and (with ``out``) write the run folder
    (``config`` None: every default).

    With ``out`` the whole run, from before the model loads until the folder is in place, holds the
    folder's lock and writes into a temporary sibling that replaces ``out`` as a whole when complete
    (:func:`circuits.files.run_folder`). So an unwritable ``out`` raises
    :class:`~circuits.errors.OutputError` and a folder another run is writing raises
    :class:`~circuits.errors.OutputLockedError`, both before anything is loaded, and a run that fails
    or is interrupted leaves ``out`` as it was. An existing ``out`` must be empty or an earlier run
    folder (holding circuit.json); files in it that the run does not write are not kept.
    """
    config = DiscoverConfig() if config is None else config
    if out is None:
        return _discover_run(config, None, progress)
    from circuits.files import run_folder

    with run_folder(out, replaces="circuit.json") as staging:
        result = _discover_run(config, staging, progress)
    result.files = {name: Path(out) / path.relative_to(staging) for name, path in result.files.items()}
    return result


def _discover_run(config: DiscoverConfig, out: Path | None, progress: bool) -> DiscoverResult:
    """The phases of :func:`discover`; the run folder is written straight into ``out`` (the staging folder)."""
    seconds: dict[str, float] = {}
    with _timed(seconds, "load"):
        setup = load_setup(config.model.model, config.model.dictionaries, config.model.composition, config.model.device)
        data = load_task_data(config, setup)
    with _timed(seconds, "attribute"):
        attributed = attribute(config, setup, data, progress)
    with _timed(seconds, "evaluate"):
        chosen = select_circuit(config, setup, data, attributed)
        held_out = evaluate_held_out(config, setup, data, chosen.prune.graph)
    with _timed(seconds, "curves"):
        found = curves(config, held_out, chosen, progress)
    circuit, evaluation = chosen.prune.graph, held_out.nodes
    record_evaluation(config, circuit, held_out, chosen.size)
    found.nodes.metadata.update(
        {k: attributed.graph.graph[k] for k in ("model", "dictionaries", "task", "method", "positions")}
    )
    contexts = None
    if config.labels.enabled:
        with _timed(seconds, "labels"):
            contexts = label_features(config, setup, circuit, progress)
    result = DiscoverResult(
        config, attributed, chosen.prune, evaluation, held_out.edges, found, chosen.size, seconds=seconds
    )
    if out is not None:
        with _timed(seconds, "write"):
            title = f"{data.name}: {evaluation.nodes} nodes, faithfulness {evaluation.faithfulness:.2f}"
            report_meta = {
                "faithfulness": round(evaluation.faithfulness, 4),
                "completeness": None if evaluation.completeness is None else round(evaluation.completeness, 4),
                "ablation": evaluation.ablation,
                "evaluation examples": len(data.evaluation),
            }
            result.files = write_outputs(
                out, circuit, found, title=title, contexts=contexts, metadata=report_meta, atomic=False
            )
    return result
