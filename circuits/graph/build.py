"""Building the attributed graph of a task: node effects, edge effects, one networkx graph.

:func:`attribute_graph` runs the two attribution phases of :mod:`attribution` on a task batch and
turns their scores into the graph of :mod:`circuits.graph.ids`:

1. *Nodes.* Per-example node effects (``atp`` or ``ig``) are aggregated with a
   :class:`~attribution.positions.PositionMap`: per token position (``token``), per schema span
   (``schema``) or over every position (``agnostic``); a score is summed within its position group
   and averaged over examples. The graph keeps the nodes with ``|effect| > min_effect`` (every node
   when ``min_effect`` is None), at most ``max_nodes`` of them, largest ``|effect|`` first.
2. *Edges.* The ``max_targets`` kept nodes of largest ``|effect|`` (embedding nodes have no inputs
   and are never targets) get their incoming edges scored by :func:`attribution.edges.edge_effects`
   (on the first ``edge_examples`` examples);
   every node gets its direct edge into the metric. An edge enters the graph when both of its ends
   are graph nodes and ``|effect| > edge_threshold``. Nodes whose incoming edges were scored carry
   ``scored_inputs=True``; evaluation at edge level relies on it (see :mod:`circuits.evaluation.edge_level`).

The metric node's ``effect`` is the mean task metric on the clean prompts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from attribution.core import ERROR, AttributionInputs, SiteValues, node_index, with_error_column
from attribution.edges import LOCAL, EdgeEffects, Target, edge_effects, edge_method
from attribution.nodes import IG_MODES, NodeEffects, node_effects
from attribution.positions import PositionMap
from circuits.data.tasks import TaskBatch
from circuits.errors import CircuitError, check_counts
from circuits.graph.ids import ERROR_INDEX, METRIC, POSITION_MODES, add_metric, new_graph, node_id
from replacement.model import ReplacementModel
from replacement.sites import Site

log = logging.getLogger(__name__)

BUILD_METHODS = ("atp", "ig")
METRIC_LABELS = {"logit_diff": "logit diff", "prob_diff": "prob diff"}


@dataclass(frozen=True)
class BuildConfig:
    """How the attributed graph is built.

    ``method``: node/edge attribution, ``"ig"`` (integrated gradients, ``steps`` steps) or ``"atp"``
    (attribution patching). ``ig_mode``: ``"inputs"`` (interpolate the input, every site at once) or
    ``"per-site"`` (one site at a time, ``sites x steps`` passes). ``positions``: ``"token"``, ``"schema"`` or
    ``"agnostic"``. ``min_effect``: nodes need ``|effect| > min_effect`` (None keeps every node, even
    those of zero effect: the complete graph). ``max_nodes``: at most this many nodes (None: no
    bound). ``max_targets``: nodes whose incoming edges are scored. ``edge_threshold``: edges need
    ``|effect| > edge_threshold``. ``edge_examples``: edges are scored on the first this many
    examples (None: all; edge scoring costs a backward pass per target and example).
    ``rows_per_pass``: targets per backward pass. ``edge_local``: ``"linear"`` (the downstream node's
    derivative, batched backward passes) or ``"exact"`` (its actual direct change, one forward row
    per changed upstream node; :func:`attribution.edges.edge_effects`).
    """

    # The metadata name each field's ``circuits discover`` flag (see :mod:`circuits.app.config`).
    method: str = field(
        default="ig",
        metadata={
            "flag": "--method",
            "choices": ("ig", "atp"),
            "help": "integrated gradients (default) or attribution patching",
        },
    )
    positions: str = field(
        default="agnostic",
        metadata={
            "flag": "--positions",
            "choices": ("token", "schema", "agnostic"),
            "help": "node positions: token indices, schema spans, or none (default: agnostic, the smallest "
            "faithful circuits on the toy tasks)",
        },
    )
    steps: int = field(
        default=5,
        metadata={
            "flag": "--steps",
            "type": "positive_int",
            "help": "integrated-gradient steps (default 5, the EAP-IG convention)",
        },
    )
    ig_mode: str = field(
        default="inputs",
        metadata={
            "flag": "--ig-mode",
            "choices": ("inputs", "per-site"),
            "help": "interpolate the input, every site at once (default), or one site at a time (sites x steps passes)",
        },
    )
    min_effect: float | None = field(default=0.0, metadata={"flag": None})
    max_nodes: int | None = field(
        default=None,
        metadata={
            "flag": "--max-nodes",
            "type": "positive_int",
            "help": "at most this many nodes in the attributed graph (default: every node of nonzero effect)",
        },
    )
    max_targets: int = field(
        default=96,
        metadata={
            "flag": "--max-targets",
            "type": "positive_int",
            "help": "nodes whose incoming edges are scored (default 96)",
        },
    )
    edge_threshold: float = field(default=0.0, metadata={"flag": None})
    edge_examples: int | None = field(
        default=None,
        metadata={
            "flag": "--edge-examples",
            "type": "positive_int",
            "help": "score the edges on the first N attribution examples only (default: all of them)",
        },
    )
    rows_per_pass: int = field(default=32, metadata={"flag": None})
    edge_local: str = field(
        default="linear",
        metadata={
            "flag": "--edge-local",
            "choices": ("linear", "exact"),
            "help": "edges from the downstream node's derivative (default, batched backward passes) or its actual "
            "direct change (one forward row per changed upstream node: exact through attention, slower)",
        },
    )

    def __post_init__(self) -> None:
        if self.method not in BUILD_METHODS:
            raise CircuitError(
                f"unknown attribution method {self.method!r}; expected one of {', '.join(BUILD_METHODS)}"
            )
        if self.positions not in POSITION_MODES:
            raise CircuitError(
                f"unknown positions mode {self.positions!r}; expected one of {', '.join(POSITION_MODES)}"
            )
        check_counts({"--steps": self.steps}, {"--max-nodes": self.max_nodes, "--edge-examples": self.edge_examples})
        if self.ig_mode not in IG_MODES:
            raise CircuitError(f"unknown ig_mode {self.ig_mode!r}; expected one of {', '.join(IG_MODES)}")
        if self.edge_local not in LOCAL:
            raise CircuitError(f"unknown edge_local {self.edge_local!r}; expected one of {', '.join(LOCAL)}")
        if self.max_targets < 0:
            raise CircuitError(f"max_targets must be >= 0, got {self.max_targets}")
        if self.min_effect is not None and self.min_effect < 0:
            raise CircuitError(f"min_effect must be >= 0 (or None), got {self.min_effect}")
        if self.edge_threshold < 0:
            raise CircuitError(f"edge_threshold must be >= 0, got {self.edge_threshold}")


@dataclass
class AttributedGraph:
    """The attributed graph and what produced it."""

    graph: nx.DiGraph
    nodes: NodeEffects
    edges: EdgeEffects | None
    positions: PositionMap
    targets: list[Target]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return self.graph.number_of_nodes() - 1

    @property
    def n_edges(self) -> int:
        return self.graph.number_of_edges()


# ------------------------------------------------------------------------------------ positions


def position_map(batch: TaskBatch, mode: str, token_labels: Sequence[str] | None = None) -> PositionMap:
    """The position groups of ``batch`` for ``mode`` (``token`` | ``schema`` | ``agnostic``).

    Token labels default to the position numbers; span names come from the batch's schema.
    """
    width = batch.clean.shape[1]
    if mode == "token":
        labels = list(token_labels) if token_labels is not None else [str(i) for i in range(width)]
        if len(labels) != width:
            raise CircuitError(f"{len(labels)} token labels for prompts of {width} positions")
        return PositionMap.tokens(batch.clean_lengths, width, labels)
    if mode == "schema":
        for name in batch.span_names:
            if name.isdigit() or "/" in name or not name:
                raise CircuitError(f"span name {name!r} cannot name a graph position (all digits, empty or with '/')")
        return PositionMap.spans(batch.clean_span, batch.span_names)
    if mode == "agnostic":
        return PositionMap.agnostic(batch.clean_lengths, width)
    raise CircuitError(f"unknown positions mode {mode!r}; expected one of {', '.join(POSITION_MODES)}")


def check_token_positions(batches: Mapping[str, TaskBatch | None], source: str = "") -> None:
    """Refuse token positions (``--positions token``) unless every prompt of ``batches`` has the same
    number of tokens: a token-level node is a position index, and in prompts of different lengths the
    same index is a different token. ``batches`` maps a part's name (attribution, selection, ...) to
    its batch (None: no such part); :class:`CircuitError` names the lengths found."""
    lengths: dict[int, str] = {}
    for part, batch in batches.items():
        if batch is None:
            continue
        for n in sorted({int(x) for x in batch.clean_lengths.tolist()}):
            lengths.setdefault(n, part)
    if len(lengths) > 1:
        where = f"{source}: " if source else ""
        found = ", ".join(f"{n} ({part})" for n, part in sorted(lengths.items()))
        raise CircuitError(
            f"{where}--positions token needs prompts of one length, but these have {found} tokens, so the same "
            "position index would mean different tokens; use --positions schema (with --schema for a task file) "
            "or --positions agnostic"
        )


def graph_position(positions: PositionMap, group: int) -> int | str:
    """The graph's name of a position group: a token index, a span name or ``"*"``."""
    if positions.mode == "token":
        return group
    if positions.mode == "agnostic":
        return "*"
    return positions.labels[group]


# ---------------------------------------------------------------------------------------- nodes


@dataclass
class AggregatedNodes:
    """Aggregated node effects of one site: features [n_positions, d_sae] and errors [n_positions]."""

    features: torch.Tensor
    errors: torch.Tensor

    def as_matrix(self) -> torch.Tensor:
        """[n_positions, d_sae + 1]: the error node in the last column (:func:`attribution.core.node_index`)."""
        return with_error_column(self.features, self.errors)


def aggregate_nodes(nodes: NodeEffects, positions: PositionMap) -> dict[str, AggregatedNodes]:
    """Node effects summed within position groups and averaged over examples, per site."""
    return {
        site: AggregatedNodes(
            positions.aggregate(nodes.features[site]).cpu(), positions.aggregate(nodes.errors[site]).cpu()
        )
        for site in nodes.sites
    }


def select_nodes(
    agg: Mapping[str, AggregatedNodes], min_effect: float | None, max_nodes: int | None
) -> dict[str, torch.Tensor]:
    """Per site a bool [n_positions, d_sae + 1] of the nodes the graph keeps (see :class:`BuildConfig`)."""
    mats = {s: a.as_matrix().abs() for s, a in agg.items()}
    keep = {
        s: (m > min_effect) if min_effect is not None else torch.ones_like(m, dtype=torch.bool) for s, m in mats.items()
    }
    total = sum(int(k.sum()) for k in keep.values())
    if max_nodes is not None and total > max_nodes:
        flat = torch.cat([torch.where(keep[s], mats[s], torch.full_like(mats[s], -1.0)).flatten() for s in mats])
        top = torch.topk(flat, max_nodes).indices
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[top] = True
        offset = 0
        for s, m in mats.items():
            keep[s] = chosen[offset : offset + m.numel()].view_as(m)
            offset += m.numel()
    return keep


def choose_targets(
    agg: Mapping[str, AggregatedNodes], keep: Mapping[str, torch.Tensor], max_targets: int, site_order: Sequence[str]
) -> list[Target]:
    """The ``max_targets`` kept nodes of largest ``|effect|`` that have upstream sites (not the first site)."""
    candidates: list[tuple[float, int, str, int, int]] = []
    for rank, site in enumerate(site_order):
        if rank == 0:
            continue  # nothing upstream of the first site (the embedding)
        mat = agg[site].as_matrix().abs()
        d_sae = agg[site].features.shape[1]
        pos, idx = torch.nonzero(keep[site], as_tuple=True)
        for p, i, v in zip(pos.tolist(), idx.tolist(), mat[pos, idx].tolist()):
            candidates.append((-v, rank, site, p, node_index(i, d_sae)))
    candidates.sort(key=lambda c: (c[0], c[1], c[3], c[4]))
    return [Target(site, p, i) for _, _, site, p, i in candidates[:max_targets]]


def first_examples(
    inputs: AttributionInputs, nodes: NodeEffects, positions: PositionMap, n: int | None
) -> tuple[AttributionInputs, NodeEffects, PositionMap]:
    """The attribution inputs, node effects and position map of the first ``n`` examples (all when None)."""
    if n is None or n >= inputs.batch_size:
        return inputs, nodes, positions

    def cut(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[:n]

    sub_inputs = AttributionInputs(
        clean=inputs.clean[:n],
        clean_lengths=inputs.clean_lengths[:n],
        metric=inputs.metric,
        corrupted=cut(inputs.corrupted),
        corrupted_position=cut(inputs.corrupted_position),
    )
    sub_nodes = NodeEffects(
        features={s: v[:n] for s, v in nodes.features.items()},
        errors={s: v[:n] for s, v in nodes.errors.items()},
        method=nodes.method,
        valid=nodes.valid[:n],
        values={
            s: SiteValues(v.f_clean[:n], v.e_clean[:n], v.f_target[:n], v.e_target[:n]) for s, v in nodes.values.items()
        },
        grads={s: g[:n] for s, g in nodes.grads.items()},
        baseline=nodes.baseline,
    )
    return sub_inputs, sub_nodes, PositionMap(positions.group[:n], positions.labels, positions.mode)


# ---------------------------------------------------------------------------------------- graph


def graph_index(index: int) -> int | str:
    """The graph id's index of an attribution node index: a feature stays, :data:`~attribution.core.ERROR` becomes
    :data:`~circuits.graph.ids.ERROR_INDEX` (the one place where the two encodings meet)."""
    return ERROR_INDEX if index == ERROR else index


def _add_edges(
    G: nx.DiGraph,
    target_id: str,
    by_site: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    keep: Mapping[str, torch.Tensor],
    positions: PositionMap,
    threshold: float,
) -> None:
    for site, (f, e) in by_site.items():
        mat = with_error_column(f.cpu(), e.cpu())
        d_sae = f.shape[1]
        mask = keep[site] & (mat.abs() > threshold) & (mat != 0)
        pos, idx = torch.nonzero(mask, as_tuple=True)
        for p, i, v in zip(pos.tolist(), idx.tolist(), mat[pos, idx].tolist()):
            src = node_id(site, graph_position(positions, p), graph_index(node_index(i, d_sae)))
            G.add_edge(src, target_id, effect=float(v))


def graph_from_effects(
    agg: Mapping[str, AggregatedNodes],
    keep: Mapping[str, torch.Tensor],
    edges: EdgeEffects | None,
    targets: Sequence[Target],
    positions: PositionMap,
    *,
    metadata: Mapping[str, Any],
    n_layers: int,
    metric_value: float,
    metric_label: str = "",
    edge_threshold: float = 0.0,
) -> nx.DiGraph:
    """The attributed graph: kept nodes in forward order, edges into targets and into the metric."""
    G = new_graph(
        positions=positions.mode,
        position_labels=[str(x) for x in positions.labels],
        n_layers=n_layers,
        **dict(metadata),
    )
    targeted = {(t.site, t.position, t.index) for t in targets}
    for site, a in agg.items():
        d_sae = a.features.shape[1]
        mat = a.as_matrix()
        kind = Site.parse(site)
        pos, idx = torch.nonzero(keep[site], as_tuple=True)
        for p, i, v in zip(pos.tolist(), idx.tolist(), mat[pos, idx].tolist()):
            node = node_index(i, d_sae)
            index = graph_index(node)
            scored = (site, p, node) in targeted
            position = graph_position(positions, p)
            G.add_node(
                node_id(kind.name, position, index),
                site=kind.name,
                layer=kind.layer,
                sublayer=kind.kind,
                position=position,
                feature=None if index == ERROR_INDEX else index,
                kind="error" if index == ERROR_INDEX else "feature",
                effect=float(v),
                label="",
                scored_inputs=scored,
            )
    add_metric(G, effect=float(metric_value), label=metric_label, scored_inputs=True)
    if edges is not None:
        for t in targets:
            tid = node_id(t.site, graph_position(positions, t.position), graph_index(t.index))
            _add_edges(G, tid, edges.incoming.get(t, {}), keep, positions, edge_threshold)
        _add_edges(G, METRIC, edges.to_metric, keep, positions, edge_threshold)
    return G


def attribute_graph(
    rm: ReplacementModel,
    batch: TaskBatch,
    inputs: AttributionInputs,
    config: BuildConfig = BuildConfig(),
    *,
    metadata: Mapping[str, Any],
    token_labels: Sequence[str] | None = None,
    progress: bool = False,
) -> AttributedGraph:
    """Score every node and the edges into the largest ones on ``batch``; build the graph.

    ``inputs`` are the batch's attribution inputs (:func:`circuits.data.inputs.attribution_inputs`).
    ``metadata`` must name ``model``, ``dictionaries`` and ``task`` (graph attributes; ``method``
    defaults to ``config.method``);
    ``token_labels`` label the columns of a token-level graph.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    nodes = node_effects(
        rm, inputs, method=config.method, steps=config.steps, ig_mode=config.ig_mode, progress=progress
    )
    seconds["nodes"] = time.perf_counter() - t0
    positions = position_map(batch, config.positions, token_labels)
    agg = aggregate_nodes(nodes, positions)
    keep = select_nodes(agg, config.min_effect, config.max_nodes)
    n_kept = sum(int(k.sum()) for k in keep.values())
    if n_kept == 0:
        raise CircuitError(
            "no node has a nonzero effect on the metric: the clean and counterfactual prompts may not differ, "
            "or the model ignores the task"
        )
    targets = choose_targets(agg, keep, config.max_targets, rm.site_names)
    t0 = time.perf_counter()
    e_inputs, e_nodes, e_positions = first_examples(inputs, nodes, positions, config.edge_examples)
    method = edge_method(config.edge_local, rows_per_pass=config.rows_per_pass)
    edges = edge_effects(rm, e_inputs, e_nodes, targets, e_positions, method, progress=progress)
    seconds["edges"] = time.perf_counter() - t0
    with torch.no_grad():
        clean_metric = float(inputs.metric(rm.run(inputs.clean).logits, inputs.index()).mean())
    t0 = time.perf_counter()
    G = graph_from_effects(
        agg,
        keep,
        edges,
        targets,
        positions,
        metadata={
            "method": config.method,
            **dict(metadata),
            "examples": len(batch),
            "steps": config.steps if config.method == "ig" else None,
            "ig_mode": config.ig_mode if config.method == "ig" else None,
            "edge_local": config.edge_local,
            "edge_examples": e_inputs.batch_size,
        },
        n_layers=int(rm.model.cfg.n_layers),
        metric_value=clean_metric,
        metric_label=METRIC_LABELS.get(batch.metric, batch.metric),
        edge_threshold=config.edge_threshold,
    )
    seconds["graph"] = time.perf_counter() - t0
    log.info(
        "attributed graph: %d nodes, %d edges, %d targets", G.number_of_nodes() - 1, G.number_of_edges(), len(targets)
    )
    return AttributedGraph(G, nodes, edges, positions, list(targets), seconds)
