"""The discovery pipeline: a task in, a pruned, evaluated and rendered circuit out.

One named function per phase, each returning a dataclass; :func:`discover` chains them and
:func:`write_outputs` writes the run folder. The ``circuits discover`` and ``circuits evaluate``
commands are thin wrappers over :func:`discover` and :func:`evaluate_saved`.

1. :func:`load_setup`: the model, its dictionary set and the replacement model;
2. :func:`load_data`: attribution examples (seed ``seed``), held-out evaluation examples
   (seed ``seed + 1``) and selection examples that choose the circuit's size (seed ``seed + 2``);
   a task file is cut into parts in that order (attribution, selection, evaluation); circuit.json
   records the parts (metadata ``splits``) and :func:`evaluate_saved` reuses its held-out one;
3. :func:`circuits.graph.build.attribute_graph`: node and edge effects, the attributed graph;
4. :func:`choose_size` and :func:`choose_circuit`: the circuit, by size (top-N nodes), by node
   threshold, or (the default) the smallest top-N whose faithfulness on the *selection* examples
   reaches a target, pruned to what connects the inputs to the metric;
5. :class:`circuits.evaluation.evaluator.Evaluator`: faithfulness and completeness on the held-out examples,
   at node and at edge level, and the curves (:func:`circuits.evaluation.evaluator.faithfulness_curves`);
6. feature labels (:func:`circuits.labels.features.label_circuit`: top-activating contexts on the toy corpus or
   ``label_corpus``, cached per dictionary set) written into the circuit's node ``label`` attributes;
7. :func:`write_outputs`: circuit.json, circuit.svg, curve.json, curve.png and report.html.

Python::

    from circuits.app.pipeline import DiscoverConfig, discover
    result = discover(DiscoverConfig(task="ioi"), out="runs/ioi")
    print(result.summary()["faithfulness"], result.circuit.number_of_nodes())
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.data.inputs import attribution_inputs
from circuits.graph.build import (
    AttributedGraph,
    BuildConfig,
    attribute_graph,
    check_token_positions,
)
from circuits.evaluation.curves import nodes_needed
from circuits.errors import CircuitError, TaskError
from circuits.evaluation.evaluator import (
    Curves,
    EvalConfig,
    Evaluation,
    Evaluator,
    faithfulness_curves,
    ranked_nodes,
    smallest_faithful,
)
from circuits.graph.ids import (
    METRIC,
    check_compatible,
    copy_graph,
    count_nodes,
    load_circuit,
    save_circuit,
)
from circuits.labels.features import label_circuit
from circuits.app.loading import TOY, LoadedModel, load_model
from circuits.graph.prune import PruneResult, prune_by_threshold, prune_top_nodes
from circuits.app.loading import COMPOSITIONS, NEURONS, check_dictionaries
from circuits.app.loading import load_dictionaries as load_named_dictionaries
from circuits.data.tasks import TASKS, Task, TaskBatch, make_task
from replacement.model import ReplacementModel
from viz.diagram import render
from viz.plots import plot_curve
from viz.report import write_report

log = logging.getLogger(__name__)

LEVELS = (0.5, 0.8, 0.9)


@dataclass(frozen=True)
class DiscoverConfig:
    """Everything a discovery run depends on.

    ``task``: a built-in task name or a JSONL task file (``schema``: its schema CSV).
    ``dictionaries``: a dictionary-set folder, ``"neurons"`` (the identity / MLP-neuron baseline) or
    None (the model's shipped set; the toy model only), or ``"release:NAME"`` (a SAELens release).
    ``composition``: what replaces each sublayer (:data:`circuits.app.loading.COMPOSITIONS`):
    ``"transcoders"`` (the default: embed SAE and MLP transcoders; attention is not replaced, so its
    computation runs inside the edges, as in circuit-tracer), ``"sae"`` (embed, attn, mlp, resid:
    Sparse Feature Circuits' graph) or ``"mixed"`` (embed, attn, transcoder, resid).
    ``ablate_embed`` False (the default, Sparse Feature Circuits' convention) keeps the embedding live
    in every evaluation, and the circuit is chosen among the other nodes (:func:`circuit_candidates`).
    ``method``, ``ig_mode``, ``steps``: node attribution; ``edge_local``: how edges measure the downstream
    node's change (:class:`circuits.graph.build.BuildConfig`).
    The circuit is the top ``n_nodes`` nodes by |effect|, or the nodes with |effect| >= ``node_threshold``, or (neither given) the smallest
    top-N whose faithfulness on ``selection_examples`` fresh examples reaches ``faithfulness`` (with
    ``confidence``: its bootstrap lower bound at that confidence does); it is then evaluated on
    ``n_eval`` held-out examples. Edges are scored on the first ``edge_examples``
    attribution examples (None: all); the edge curve is evaluated on the first ``edge_curve_examples`` held-out ones.
    """

    task: str = "ioi"
    schema: str | None = None
    model: str = TOY
    dictionaries: str | None = None
    composition: str = "transcoders"
    method: str = "ig"
    ig_mode: str = "inputs"
    edge_local: str = "linear"
    positions: str = "agnostic"
    steps: int = 5
    n_nodes: int | None = None
    node_threshold: float | None = None
    faithfulness: float = 0.9
    confidence: float | None = 0.9
    ablation: str = "mean"
    ablate_errors: bool = True
    ablate_embed: bool = False
    n_attribution: int = 128
    n_eval: int = 64
    seed: int = 0
    max_nodes: int | None = None
    max_targets: int = 96
    edge_examples: int | None = None
    selection_examples: int = 128
    curve_points: int = 8
    edge_curve: bool = True
    edge_curve_examples: int | None = 16
    labels: bool = True
    label_corpus: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        import numbers

        def _count(value: Any) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1

        if self.composition not in COMPOSITIONS:
            raise CircuitError(f"unknown composition {self.composition!r}; expected one of {', '.join(COMPOSITIONS)}")
        if self.n_nodes is not None and self.node_threshold is not None:
            raise CircuitError("choose the circuit by --nodes or by --node-threshold, not both")
        if self.n_nodes is not None and self.n_nodes < 1:
            raise CircuitError(f"--nodes must be at least 1, got {self.n_nodes}")
        if self.node_threshold is not None and not 0 <= self.node_threshold < float("inf"):
            raise CircuitError(f"--node-threshold must be a finite number >= 0, got {self.node_threshold}")
        if not 0 < self.faithfulness <= 1:
            raise CircuitError(f"the target faithfulness must be in (0, 1], got {self.faithfulness}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise CircuitError(f"the confidence must be in (0, 1), got {self.confidence}")
        for flag, value in (
            ("--examples", self.n_attribution), ("--eval-examples", self.n_eval), ("selection_examples", self.selection_examples),
            ("--steps", self.steps), ("--curve-points", self.curve_points),
        ):
            if not _count(value):
                raise CircuitError(f"{flag} must be an integer of at least 1, got {value!r}")
        for flag, optional in (("--edge-examples", self.edge_examples), ("edge_curve_examples", self.edge_curve_examples),
                               ("--max-nodes", self.max_nodes)):
            if optional is not None and not _count(optional):
                raise CircuitError(f"{flag} must be an integer of at least 1 (or None), got {optional!r}")
        if self.edge_examples is not None and self.edge_examples > self.n_attribution:
            raise CircuitError(
                f"--edge-examples {self.edge_examples} is more than the {self.n_attribution} attribution examples "
                f"(--examples): give at most {self.n_attribution}, or leave it out to use them all"
            )
        if not self.labels and self.label_corpus is not None:
            raise CircuitError(f"--label-corpus {self.label_corpus} has no use with --no-labels: drop one of the two")
        if self.labels and self.label_corpus is not None:
            from circuits.labels.features import corpus_lines

            corpus_lines(self.label_corpus)  # a missing, non-UTF-8 or blank file fails now, not after the run
        self.build_config()  # validates method, positions, steps
        self.eval_config()  # validates the ablation

    def build_config(self) -> BuildConfig:
        return BuildConfig(
            method=self.method, ig_mode=self.ig_mode, edge_local=self.edge_local, positions=self.positions, steps=self.steps,
            max_nodes=self.max_nodes, max_targets=self.max_targets, edge_examples=self.edge_examples,
        )

    def eval_config(self) -> EvalConfig:
        return EvalConfig(ablation=self.ablation, ablate_errors=self.ablate_errors, ablate_embed=self.ablate_embed)


# ------------------------------------------------------------------------------------ phase 1


@dataclass
class Setup:
    """The model, the replacement model and the names recorded in circuit.json."""

    loaded: LoadedModel
    rm: ReplacementModel
    model_name: str
    dictionaries_name: str
    dictionaries_source: str


def load_dictionaries(loaded: LoadedModel, source: str | None, composition: str = "sae"):
    """The dictionary set of a run (``source`` as :func:`circuits.app.loading.load_dictionaries` reads it),
    restricted to ``composition``; a composition whose sites the set lacks is an error."""
    from replacement.dictionaries import DictionarySet

    if composition not in COMPOSITIONS:
        raise CircuitError(f"unknown composition {composition!r}; expected one of {', '.join(COMPOSITIONS)}")
    wanted = COMPOSITIONS[composition]
    if source == NEURONS:
        return DictionarySet.identity(loaded.model, kinds=wanted, name=NEURONS)
    ds = load_named_dictionaries(loaded, source)
    available = {s.kind for s in ds.sites}
    missing = [k for k in wanted if k not in available and k != "embed"]
    if missing:
        raise CircuitError(
            f"the dictionary set {ds.name!r} has no {', '.join(missing)} sites, which the composition {composition!r} "
            f"needs (it has {', '.join(sorted(available))})"
        )
    return ds.select(kinds=[k for k in wanted if k in available])


def load_setup(config: DiscoverConfig, model_name: str | None = None, dictionaries: str | None = None) -> Setup:
    """Load the model and its dictionaries (``model_name`` / ``dictionaries`` override the config's)."""
    name = model_name or config.model
    source = dictionaries if dictionaries is not None else config.dictionaries
    check_dictionaries(source)  # a missing folder is reported before the model loads
    loaded = load_model(name, device=config.device)
    ds = load_dictionaries(loaded, source, config.composition)
    ds.validate_for(loaded.model)
    rm = ReplacementModel(loaded.model, ds)
    return Setup(loaded, rm, loaded.name, ds.name, source if source is not None else "default")


# ------------------------------------------------------------------------------------ phase 2


@dataclass
class TaskData:
    """Attribution, selection (validation) and held-out evaluation examples of one task.

    ``selection`` is None when a task file is too small for three parts; the size is then chosen on
    the attribution examples. ``splits`` says how the parts were drawn, as circuit.json records it
    (graph metadata ``splits``): for a built-in task ``{"kind": "builtin", "task": name, "attribution":
    {"seed": s, "examples": n}, "selection": {...} | None, "evaluation": {...}}``; for a task file
    ``{"kind": "file", "path": ..., "sha256": ..., "schema": ... | None, "schema_sha256": ... | None,
    "attribution": {"rows": [start, stop]}, "selection": ..., "evaluation": ...}`` (rows 0-based, stop
    excluded, in file order; the hashes are the sha256 of the files' bytes).
    """

    name: str
    attribution: Task
    evaluation: Task
    attribution_batch: TaskBatch
    evaluation_batch: TaskBatch
    eval_seed: int | None
    selection: Task | None = None
    selection_batch: TaskBatch | None = None
    splits: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def task_file_identity(path: str | Path, schema: str | Path | None = None) -> dict[str, Any]:
    """A task file (and its schema CSV) as circuit.json records it: resolved paths and sha256 hashes."""
    return {
        "path": str(Path(path).resolve()), "sha256": file_sha256(path),
        "schema": None if schema is None else str(Path(schema).resolve()),
        "schema_sha256": None if schema is None else file_sha256(schema),
    }


def load_data(
    spec: str,
    tokenizer: Any,
    n_attribution: int = 64,
    n_eval: int = 64,
    seed: int = 0,
    schema: str | None = None,
    n_selection: int = 0,
    *,
    positions: str | None = None,
) -> TaskData:
    """Examples of a built-in task or a task file, in disjoint parts.

    Built-in tasks: attribution seed ``seed``, held-out evaluation seed ``seed + 1``, selection seed
    ``seed + 2`` (``n_selection`` examples, none when 0); ``schema`` is refused (their spans are built
    in). A task file: its first ``n_attribution`` examples, then ``n_selection``, then ``n_eval``; a file
    too small for that is split in two (half for attribution at most) and has no selection part.
    ``positions="token"`` refuses prompts of different lengths (:func:`circuits.graph.build.check_token_positions`),
    before anything is attributed. :attr:`TaskData.splits` records the parts.
    """
    from circuits.app.commands.tasks import resolve_task

    pad = tokenizer.pad_id
    selection: Task | None = None
    if spec in TASKS:
        if schema is not None:
            raise TaskError(f"--schema applies to task files only, and {spec!r} is a built-in task")
        attr = make_task(spec, tokenizer, n=n_attribution, seed=seed)
        ev = make_task(spec, tokenizer, n=n_eval, seed=seed + 1)
        selection = make_task(spec, tokenizer, n=n_selection, seed=seed + 2) if n_selection else None
        eval_seed: int | None = seed + 1
        splits: dict[str, Any] = {
            "kind": "builtin", "task": spec,
            "attribution": {"seed": seed, "examples": len(attr)},
            "selection": None if selection is None else {"seed": seed + 2, "examples": len(selection)},
            "evaluation": {"seed": seed + 1, "examples": len(ev)},
        }
    else:
        task = resolve_task(spec, tokenizer, schema=schema)
        if len(task) < 2:
            raise CircuitError(f"{spec}: a task file needs at least 2 examples (attribution and held-out evaluation)")
        exs = task.examples
        if n_selection and len(task) >= n_attribution + n_selection + n_eval:
            n_first, n_sel = n_attribution, n_selection
        else:
            n_first = min(n_attribution, len(task) // 2) if len(task) < n_attribution + n_eval else n_attribution
            if n_first < n_attribution:
                log.warning("%s has %d examples, too few for %d attribution and %d held-out ones: the first %d are "
                            "attributed and the other %d held out", spec, len(task), n_attribution, n_eval, n_first,
                            min(n_eval, len(task) - n_first))
            if n_selection:
                log.warning("%s has too few examples for a separate selection split (%d needed): the circuit size is "
                            "chosen on the attribution examples", spec, n_attribution + n_selection + n_eval)
            n_sel = 0
        e_start = n_first + n_sel
        e_stop = min(len(task), e_start + n_eval)
        attr = Task(task.name, exs[:n_first], task.metric, task.description)
        if n_sel:
            selection = Task(task.name, exs[n_first:e_start], task.metric, task.description)
        ev = Task(task.name, exs[e_start:e_stop], task.metric, task.description)
        eval_seed = None
        splits = {
            "kind": "file", **task_file_identity(spec, schema),
            "attribution": {"rows": [0, n_first]},
            "selection": {"rows": [n_first, e_start]} if n_sel else None,
            "evaluation": {"rows": [e_start, e_stop]},
        }
    data = TaskData(
        attr.name, attr, ev, attr.batch(pad), ev.batch(pad), eval_seed,
        selection, None if selection is None else selection.batch(pad), splits,
    )
    if positions == "token":
        check_token_positions(
            {"attribution": data.attribution_batch, "selection": data.selection_batch, "evaluation": data.evaluation_batch},
            spec,
        )
    return data


def token_labels(tokenizer: Any, batch: TaskBatch) -> list[str]:
    """Column labels of a token-level graph: the tokens of the longest prompt."""
    longest = int(batch.clean_lengths.argmax())
    return [tokenizer.decode([int(t)]) or f"<{int(t)}>" for t in batch.clean[longest]]


# ------------------------------------------------------------------------------------ phase 4


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
    """The circuit size of a run: ``config.n_nodes``, ``config.node_threshold``, or the smallest top-N whose
    faithfulness reaches ``config.faithfulness`` on the selection examples (fresh examples, apart from
    both the attribution and the held-out ones; for a small task file, the attribution examples)."""
    if config.n_nodes is not None:
        return SizeChoice("nodes", config.n_nodes)
    if config.node_threshold is not None:
        return SizeChoice("threshold", None)
    batch = data.selection_batch if data.selection_batch is not None else data.attribution_batch
    evaluator = Evaluator(rm, batch, config.eval_config()).subset(config.selection_examples)
    found = smallest_faithful(evaluator, G, config.faithfulness, confidence=config.confidence)
    if not found.reached:
        log.warning("no circuit of the graph reaches faithfulness %.2f on the selection examples (best %.3f at %d nodes)",
                    config.faithfulness, found.faithfulness, found.n_nodes)
    return SizeChoice("faithfulness", found.n_nodes, config.faithfulness, found.faithfulness, found.lower_bound,
                      config.confidence)


# ------------------------------------------------------------------------------------ results


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
        e = self.evaluation
        meta = self.graph.graph
        node_curve = self.curves.nodes
        return {
            "faithfulness": e.faithfulness,
            "completeness": e.completeness,
            "nodes": e.nodes,
            "edges": self.circuit.number_of_edges(),
            "feature_nodes": e.feature_nodes,
            "error_nodes": e.error_nodes,
            "faithfulness_edges": None if self.edge_evaluation is None else self.edge_evaluation.faithfulness,
            "m_model": e.m_model,
            "m_empty": e.m_empty,
            "m_circuit": e.m_circuit,
            "cpr": self.curves.cpr,
            "cmd": self.curves.cmd,
            "nodes_needed": {str(level): nodes_needed(node_curve, level) for level in LEVELS},
            "size_rule": self.size.rule,
            "selection_faithfulness": self.size.selection_faithfulness,
            "selection_lower_bound": self.size.selection_lower_bound,
            "graph_nodes": count_nodes(self.graph),
            "graph_edges": self.graph.number_of_edges(),
            "task": meta.get("task"),
            "model": meta.get("model"),
            "dictionaries": meta.get("dictionaries"),
            "method": meta.get("method"),
            "positions": meta.get("positions"),
            "ablation": e.ablation,
            "attribution_examples": len(self.attributed.nodes.valid),
            "evaluation_examples": meta.get("evaluation_examples"),
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


# ------------------------------------------------------------------------------------ phase 6


DIAGRAM_NODES = 150
DIAGRAM_EDGES = 400


def diagram_view(circuit: nx.DiGraph, max_nodes: int = DIAGRAM_NODES, max_edges: int = DIAGRAM_EDGES) -> tuple[nx.DiGraph, str]:
    """The part of a circuit that is drawn, plus a caption note.

    A circuit of at most ``max_nodes`` nodes and ``max_edges`` edges is drawn whole. A larger one is
    drawn as its ``max_nodes`` nodes of largest ``|effect|`` (and the metric) with the ``max_edges``
    largest edges between them; the other nodes of each (site, position) cell become one ``group``
    node ("+N more", the sum of their effects) whose tooltip lists their ids, so every node of the
    circuit is named in the drawing.
    """
    n, m = count_nodes(circuit), circuit.number_of_edges()
    if n <= max_nodes and m <= max_edges:
        return circuit, ""
    keep = set(ranked_nodes(circuit)[:max_nodes]) | {METRIC}
    inner = [(u, v) for u, v in circuit.edges if u in keep and v in keep]
    inner.sort(key=lambda e: -abs(float(circuit.edges[e]["effect"])))
    view = copy_graph(circuit, keep, inner[:max_edges])
    cells: dict[tuple[str, str], list[str]] = {}
    for node, attrs in circuit.nodes(data=True):
        if node not in keep:
            cells.setdefault((str(attrs.get("site")), str(attrs.get("position"))), []).append(str(node))
    for (site, position), members in cells.items():
        first = circuit.nodes[members[0]]
        view.add_node(
            f"{site}/{position}/more", kind="group", members=members, label="",
            effect=float(sum(float(circuit.nodes[u].get("effect", 0.0)) for u in members)),
            **{k: first[k] for k in ("site", "layer", "sublayer", "position") if k in first},
        )
    left_out = sum(len(members) for members in cells.values())
    grouped = f"; the other {left_out} grouped as +N" if left_out else ""
    return view, f" (drawn: {n - left_out} of {n} nodes, {view.number_of_edges()} of {m} edges{grouped})"


REPORT_CONTEXT_NODES = 300


def write_outputs(
    out: str | Path,
    circuit: nx.DiGraph,
    curves: Curves,
    title: str | None = None,
    contexts: dict[str, list[dict[str, Any]]] | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    atomic: bool = True,
) -> dict[str, Path]:
    """Write circuit.json, circuit.svg (Graphviz, with circuit.dot), curve.json, curve.png and
    report.html into ``out``.

    A circuit too large to read is drawn in part (see :func:`diagram_view`); circuit.json holds all of
    it. ``contexts`` (node id -> top-activating contexts, :func:`circuits.labels.features.contexts_for`) go into
    the report for the ``REPORT_CONTEXT_NODES`` nodes of largest ``|effect|``; ``metadata`` is shown in
    its header.

    The folder is written as a unit (:func:`circuits.files.run_folder`): under the lock ``OUT.lock``,
    into a temporary sibling that replaces ``out`` as a whole once every file is written, so a failed
    or interrupted write leaves ``out`` as it was. An existing ``out`` must be empty or an earlier run
    folder (holding circuit.json). ``atomic=False`` writes straight into ``out``, for a caller that
    stages the folder itself (as :func:`discover` does).
    """
    if atomic:
        from circuits.files import run_folder

        with run_folder(out, replaces="circuit.json") as staging:
            written = write_outputs(staging, circuit, curves, title, contexts, metadata, atomic=False)
        return {name: Path(out) / path.relative_to(staging) for name, path in written.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"circuit.json": save_circuit(circuit, out / "circuit.json")}
    curve = curves.to_curve()
    files["curve.json"] = curve.to_json(out / "curve.json")
    curve_data = curve.to_dict()
    view, note = diagram_view(circuit)
    written = render(view, out / "circuit", formats=("svg",), title=(title or "") + note or None)
    files.update({f"circuit.{k}": v for k, v in written.items()})
    files["curve.png"] = plot_curve(curve_data, out / "curve.png", title=title)
    svg = files["circuit.svg"].read_text(encoding="utf-8") if "circuit.svg" in files else None
    if contexts:
        shown = set(ranked_nodes(circuit)[:REPORT_CONTEXT_NODES])
        contexts = {k: v for k, v in contexts.items() if k in shown}
    files["report.html"] = write_report(
        out / "report.html", graph=circuit, curve=curve_data, title=title or "Circuit report",
        metadata=metadata, diagram_svg=svg, contexts=contexts,
    )
    return files


# ------------------------------------------------------------------------------------ the run


def discover(config: DiscoverConfig = DiscoverConfig(), out: str | Path | None = None, progress: bool = False) -> DiscoverResult:
    """Attribute, prune, evaluate on held-out examples and (with ``out``) write the run folder.

    With ``out`` the whole run, from before the model loads until the folder is in place, holds the
    folder's lock and writes into a temporary sibling that replaces ``out`` as a whole when complete
    (:func:`circuits.files.run_folder`). So an unwritable ``out`` raises
    :class:`~circuits.errors.OutputError` and a folder another run is writing raises
    :class:`~circuits.errors.OutputLockedError`, both before anything is loaded, and a run that fails
    or is interrupted leaves ``out`` as it was. An existing ``out`` must be empty or an earlier run
    folder (holding circuit.json); files in it that the run does not write are not kept.
    """
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
    t = time.perf_counter()
    setup = load_setup(config)
    n_selection = 0 if (config.n_nodes is not None or config.node_threshold is not None) else config.selection_examples
    data = load_data(
        config.task, setup.loaded.tokenizer, config.n_attribution, config.n_eval, config.seed, config.schema, n_selection,
        positions=config.positions,
    )
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    batch = data.attribution_batch.to(setup.loaded.device)
    labels = token_labels(setup.loaded.tokenizer, batch) if config.positions == "token" else None
    metadata = {
        "model": setup.model_name, "dictionaries": setup.dictionaries_name, "task": data.name,
        "dictionaries_source": setup.dictionaries_source, "composition": config.composition, "seed": config.seed,
        "eval_seed": data.eval_seed, "evaluation_examples": len(data.evaluation), "splits": data.splits,
    }
    attributed = attribute_graph(
        setup.rm, batch, attribution_inputs(batch), config.build_config(), metadata=metadata,
        token_labels=labels, progress=progress,
    )
    seconds["attribute"] = time.perf_counter() - t

    t = time.perf_counter()
    candidates = circuit_candidates(attributed.graph, config.ablate_embed)
    size = choose_size(config, setup.rm, candidates, data)
    pruned = choose_circuit(candidates, size.n_nodes, config.node_threshold)
    evaluator = Evaluator(setup.rm, data.evaluation_batch, config.eval_config())
    evaluation = evaluator.evaluate(pruned.graph)
    edge_eval = evaluator.evaluate(pruned.graph, level="edges", completeness=False) if config.edge_curve else None
    seconds["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    curves = faithfulness_curves(
        evaluator, candidates, config.curve_points, fractions=None if not config.edge_curve else _fractions(),
        edge_examples=config.edge_curve_examples, progress=progress,
        extra_sizes=[size.n_nodes] if size.n_nodes is not None else [],
    )
    seconds["curves"] = time.perf_counter() - t

    circuit = pruned.graph
    circuit.graph["evaluation"] = {
        "ablation": evaluation.ablation, "faithfulness": evaluation.faithfulness, "completeness": evaluation.completeness,
        "faithfulness_edges": None if edge_eval is None else edge_eval.faithfulness,
        "m_model": evaluation.m_model, "m_empty": evaluation.m_empty, "m_circuit": evaluation.m_circuit,
        "ablate_errors": config.ablate_errors, "ablate_embed": config.ablate_embed,
    }
    curves.nodes.metadata.update({k: attributed.graph.graph[k] for k in ("model", "dictionaries", "task", "method", "positions")})
    circuit.graph["size_choice"] = asdict(size)
    contexts = None
    if config.labels:
        t = time.perf_counter()
        contexts = label_circuit(circuit, setup.rm, setup.loaded.tokenizer, config.label_corpus, progress=progress)
        seconds["labels"] = time.perf_counter() - t
    result = DiscoverResult(config, attributed, pruned, evaluation, edge_eval, curves, size, seconds=seconds)
    if out is not None:
        t = time.perf_counter()
        title = f"{data.name}: {evaluation.nodes} nodes, faithfulness {evaluation.faithfulness:.2f}"
        report_meta = {
            "faithfulness": round(evaluation.faithfulness, 4), "completeness": round(evaluation.completeness, 4),
            "ablation": evaluation.ablation, "evaluation examples": len(data.evaluation),
        }
        result.files = write_outputs(out, circuit, curves, title=title, contexts=contexts, metadata=report_meta, atomic=False)
        seconds["write"] = time.perf_counter() - t
    return result


def _fractions() -> tuple[float, ...]:
    from circuits.evaluation.curves import MIB_FRACTIONS

    return MIB_FRACTIONS


# ------------------------------------------------------------------------------------ re-evaluation


@dataclass
class SavedEvaluation:
    """A saved circuit re-evaluated on a task.

    ``examples`` are the examples it was evaluated on, ``split`` says which (as
    :func:`evaluation_split` chose them; None for a circuit.json that records no splits).
    """

    circuit: nx.DiGraph
    evaluation: Evaluation
    edge_evaluation: Evaluation | None
    examples: Task | None = None
    split: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``circuits evaluate --json`` prints."""
        e = self.evaluation
        return {
            "faithfulness": e.faithfulness, "completeness": e.completeness, "nodes": e.nodes,
            "edges": self.circuit.number_of_edges(), "feature_nodes": e.feature_nodes, "error_nodes": e.error_nodes,
            "faithfulness_edges": None if self.edge_evaluation is None else self.edge_evaluation.faithfulness,
            "m_model": e.m_model, "m_empty": e.m_empty, "m_circuit": e.m_circuit, "ablation": e.ablation,
            "task": self.circuit.graph.get("task"), "model": self.circuit.graph.get("model"),
            "dictionaries": self.circuit.graph.get("dictionaries"),
            "evaluation_examples": None if self.examples is None else len(self.examples),
            "split": self.split,
        }


def _recorded_splits(meta: dict[str, Any], source: str) -> dict[str, Any] | None:
    """circuit.json's ``splits`` (see :class:`TaskData`), checked; None when the file records none."""
    splits = meta.get("splits")
    if splits is None:
        return None
    bad = CircuitError(f"{source}: metadata 'splits' is malformed (expected what `circuits discover` records)")
    if not isinstance(splits, dict) or splits.get("kind") not in ("builtin", "file"):
        raise bad
    ev = splits.get("evaluation")
    if not isinstance(ev, dict):
        raise bad
    if splits["kind"] == "builtin":
        if not isinstance(splits.get("task"), str) or not all(
            isinstance(ev.get(k), int) and not isinstance(ev.get(k), bool) for k in ("seed", "examples")
        ):
            raise bad
    else:
        rows = ev.get("rows")
        if not isinstance(splits.get("sha256"), str) or not isinstance(splits.get("path"), str) or not (
            isinstance(rows, list) and len(rows) == 2 and all(isinstance(r, int) and not isinstance(r, bool) for r in rows)
            and 0 <= rows[0] < rows[1]
        ):
            raise bad
    return splits


def _recorded_count(splits: dict[str, Any]) -> int:
    ev = splits["evaluation"]
    return int(ev["examples"]) if splits["kind"] == "builtin" else int(ev["rows"][1] - ev["rows"][0])


def _task_words(kind: str, task: str, path: str | None = None) -> str:
    return f"the built-in task {task!r}" if kind == "builtin" else f"the task file {path or task} (task {task!r})"


def evaluation_split(
    meta: dict[str, Any],
    task: str,
    *,
    n_eval: int | None = None,
    seed: int | None = None,
    rows: tuple[int, int] | None = None,
    schema: str | None = None,
    allow_other_task: bool = False,
    source: str = "circuit.json",
) -> dict[str, Any] | None:
    """Which examples of ``task`` a saved circuit (graph metadata ``meta``) is evaluated on.

    By default the held-out part circuit.json records (``meta["splits"]``, see :class:`TaskData`): the
    same examples, in the same order, as the run that made it evaluated. ``seed`` (built-in tasks)
    and ``n_eval`` override the recorded seed and count; for a task file ``n_eval`` counts rows from
    the start of the recorded held-out part and ``rows`` ``(start, stop)`` (0-based, stop excluded)
    names the rows outright. Returns ``{"kind": "builtin", "task", "seed", "examples"}`` or ``{"kind":
    "file", "path", "rows", "schema", ...}``, or None when circuit.json records no splits (saved by an
    earlier version: the caller splits the task as those versions did, with a warning).

    Refused (:class:`TaskError` / :class:`CircuitError`, one sentence each): ``schema`` or ``rows``
    with a built-in task, ``seed`` with a task file, ``rows`` with ``n_eval``; a task other than the
    circuit's own unless ``allow_other_task`` (then a warning, and the same number of examples: a
    built-in task at its held-out seed, a task file from its first row); a task file whose sha256 (or
    its schema's) differs from the recorded one, unless ``rows`` are given (then a warning).
    """
    builtin = task in TASKS
    if builtin and schema is not None:
        raise TaskError(f"--schema applies to task files only, and {task!r} is a built-in task")
    if builtin and rows is not None:
        raise TaskError(f"--rows applies to task files only; {task!r} is a built-in task, whose examples --seed and --eval-examples choose")
    if not builtin and seed is not None:
        raise TaskError(f"--seed applies to built-in tasks only; choose the examples of the task file {task} with --rows START:STOP")
    if rows is not None and n_eval is not None:
        raise TaskError("give --rows or --eval-examples, not both")
    if rows is not None and not (0 <= rows[0] < rows[1]):
        raise TaskError(f"--rows {rows[0]}:{rows[1]} is empty or negative; give START:STOP with 0 <= START < STOP")
    if n_eval is not None and n_eval < 1:
        raise TaskError(f"--eval-examples must be at least 1, got {n_eval}")
    if not builtin and not Path(task).is_file():  # an unknown task or a missing file: loading it says which
        return {"kind": "file", "path": task, "rows": [0, 1], "schema": schema}
    recorded_task = str(meta.get("task"))
    name = task if builtin else Path(task).stem
    splits = _recorded_splits(meta, source)
    if splits is None:
        if name != recorded_task:
            if not allow_other_task:
                raise CircuitError(f"{source} is a circuit for the task {recorded_task!r}, not {name!r}; pass "
                                   "--allow-other-task to evaluate it on another task")
            log.warning("evaluating %s, a circuit for the task %r, on %r", source, recorded_task, name)
        log.warning("%s records no example splits (it was saved by an earlier version): %s is split as those versions "
                    "did, which may not give the examples the run held out", source, task)
        return None
    rec_kind = splits["kind"]
    rec_words = _task_words(rec_kind, recorded_task, splits.get("path"))
    count = _recorded_count(splits)

    def other_task() -> None:
        here = _task_words("builtin" if builtin else "file", name, None if builtin else task)
        if not allow_other_task:
            raise CircuitError(f"{source} is a circuit for {rec_words}, not {here}; pass --allow-other-task to evaluate "
                               "it on another task")
        log.warning("evaluating %s, a circuit for %s, on %s", source, rec_words, here)

    if builtin:
        same = rec_kind == "builtin" and splits["task"] == task
        if not same:
            other_task()
        held_out_seed = int(splits["evaluation"]["seed"]) if rec_kind == "builtin" else 1
        return {"kind": "builtin", "task": task, "seed": held_out_seed if seed is None else int(seed),
                "examples": count if n_eval is None else int(n_eval)}
    resolved, digest = str(Path(task).resolve()), file_sha256(task)
    same_file = rec_kind == "file" and digest == splits["sha256"]
    changed = rec_kind == "file" and not same_file and (resolved == splits["path"] or name == recorded_task)
    what = task
    if schema is None and (same_file or changed) and splits.get("schema") is not None:
        schema = splits["schema"]  # the run's own schema CSV
        if not Path(schema).is_file():
            raise TaskError(f"the schema CSV {schema} that {source} records for {task} is missing; pass --schema")
    schema_digest = None if schema is None else file_sha256(schema)
    if same_file and splits.get("schema_sha256") is not None and schema_digest not in (None, splits["schema_sha256"]):
        changed, what = True, f"the schema CSV {schema}"
    if changed:
        if rows is None:
            raise CircuitError(f"{what} has changed since {source} was made (its sha256 differs from the recorded one), "
                               "so the recorded held-out rows may hold other examples; pass --rows START:STOP to evaluate "
                               "chosen rows anyway")
        log.warning("%s has changed since %s was made; evaluating rows %d:%d as asked", what, source, *rows)
    elif not same_file:
        other_task()
        rows = rows or (0, count if n_eval is None else int(n_eval))
    if rows is None:
        start = int(splits["evaluation"]["rows"][0])
        rows = (start, start + (count if n_eval is None else int(n_eval)))
    return {"kind": "file", "path": resolved, "sha256": digest, "schema": schema, "schema_sha256": schema_digest,
            "rows": [int(rows[0]), int(rows[1])]}


def load_split(split: dict[str, Any], tokenizer: Any, *, explicit_rows: bool = False) -> Task:
    """The examples :func:`evaluation_split` names. Rows past the end of a task file are an error when
    given explicitly (``explicit_rows``); otherwise the part is cut at the end, with a warning."""
    from circuits.app.commands.tasks import resolve_task

    if split["kind"] == "builtin":
        return make_task(split["task"], tokenizer, n=int(split["examples"]), seed=int(split["seed"]))
    full = resolve_task(split["path"], tokenizer, schema=split.get("schema"))
    start, stop = split["rows"]
    if stop > len(full):
        if explicit_rows or start >= len(full):
            raise TaskError(f"rows {start}:{stop} are outside the file's {len(full)} examples (rows 0:{len(full)})",
                            source=split["path"])
        log.warning("%s has %d examples: evaluating rows %d:%d, not %d:%d", split["path"], len(full), start, len(full),
                    start, stop)
        stop = len(full)
        split["rows"] = [start, stop]
    return Task(full.name, full.examples[start:stop], full.metric, full.description)


def evaluate_saved(
    path: str | Path,
    task: str,
    *,
    model: str | None = None,
    dictionaries: str | None = None,
    ablation: str | None = None,
    ablate_errors: bool | None = None,
    ablate_embed: bool | None = None,
    edges: bool = True,
    n_eval: int | None = None,
    seed: int | None = None,
    rows: tuple[int, int] | None = None,
    schema: str | None = None,
    allow_other_task: bool = False,
    device: str | None = None,
) -> SavedEvaluation:
    """Re-evaluate circuit.json on ``task``'s held-out examples.

    The examples default to the held-out part circuit.json records, so the faithfulness is the one the
    run reported; ``seed``, ``n_eval`` and ``rows`` override it, and a task other than the circuit's
    own, or a task file changed since, is refused (see :func:`evaluation_split`). A circuit.json that
    records no splits is evaluated as earlier versions did (``seed`` defaulting to the run's
    evaluation seed, ``n_eval`` to 64), with a warning.
    The model and dictionaries default to those recorded in the file; given explicitly, they must be
    the ones the circuit was made with (:class:`CircuitError` otherwise). ``ablation``,
    ``ablate_errors`` and ``ablate_embed`` default to the run's settings.
    """
    G = load_circuit(path)
    meta = G.graph
    if count_nodes(G) == 0:
        raise CircuitError(f"{path}: the circuit is empty (no node besides 'metric'); nothing to evaluate")
    split = evaluation_split(meta, task, n_eval=n_eval, seed=seed, rows=rows, schema=schema,
                             allow_other_task=allow_other_task, source=str(path))
    model_name = model or meta["model"]
    source = dictionaries if dictionaries is not None else meta.get("dictionaries_source")
    source = None if source == "default" else source
    recorded = meta.get("evaluation") or {}
    if ablation is None:
        ablation = str(recorded.get("ablation", "mean"))
    if ablate_errors is None:
        ablate_errors = bool(recorded.get("ablate_errors", True))
    if ablate_embed is None:
        ablate_embed = bool(recorded.get("ablate_embed", True))
    config = DiscoverConfig(
        task=task, model=model_name, dictionaries=source, composition=meta.get("composition", "sae"), ablation=ablation,
        ablate_errors=ablate_errors, ablate_embed=ablate_embed, device=device, schema=schema,
    )
    check_compatible(G, model=model_name, source=str(path))
    setup = load_setup(config)
    check_compatible(G, model=setup.model_name, dictionaries=setup.dictionaries_name, source=str(path))
    if int(meta.get("n_layers", setup.rm.model.cfg.n_layers)) != int(setup.rm.model.cfg.n_layers):
        raise CircuitError(f"{path} was made for a model with {meta['n_layers']} layers; this one has {setup.rm.model.cfg.n_layers}")
    if split is not None:
        examples = load_split(split, setup.loaded.tokenizer, explicit_rows=rows is not None)
        batch = examples.batch(setup.loaded.tokenizer.pad_id)
    else:
        eval_seed = seed if seed is not None else (meta.get("eval_seed") if meta.get("eval_seed") is not None else 1)
        # a task file is split as the run split it: its first ``examples`` prompts were attributed
        n = 64 if n_eval is None else n_eval
        n_attr = int(meta.get("examples") or n)
        data = load_data(task, setup.loaded.tokenizer, n_attribution=n_attr, n_eval=n, seed=int(eval_seed) - 1, schema=schema)
        examples, batch = data.evaluation, data.evaluation_batch
    if meta.get("positions") == "token":
        check_token_positions({"evaluation": batch}, task)
        width = len(meta.get("position_labels") or [])
        length = int(batch.clean_lengths[0])
        if width and length != width:
            raise CircuitError(f"{path} has token positions for prompts of {width} tokens, but the prompts of {task} "
                               f"have {length}, so its position indices would mean other tokens")
    evaluator = Evaluator(setup.rm, batch, config.eval_config())
    evaluation = evaluator.evaluate(G)
    edge_eval = evaluator.evaluate(G, level="edges", completeness=False) if edges else None
    return SavedEvaluation(G, evaluation, edge_eval, examples, split)


def config_dict(config: DiscoverConfig) -> dict[str, Any]:
    return asdict(config)
