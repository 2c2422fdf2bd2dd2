"""Export a circuit graph to circuit-tracer's graph JSON (the layout its frontends read).

circuit-tracer's file has four top-level keys: ``metadata`` (``slug``, ``scan``,
``transcoder_list``, ``prompt_tokens``, ``prompt``, ``node_threshold``, ``schema_version``),
``qParams`` (the viewer's state: pinned ids, supernodes, link type, clicked id, subgraph position),
``nodes`` and ``links`` (``source``, ``target``, ``weight``). Its graphs have one transcoder per
layer, token embeddings at the bottom, error nodes per (layer, position) and logits on top; node ids
read ``"{layer}_{index}_{ctx_idx}"`` with layer ``"E"`` for embeddings.

How a graph of this project maps onto it:

=======================  ========================================================================
this project             circuit-tracer field
=======================  ========================================================================
feature at ``L{l}.*``     ``feature_type`` "cross layer transcoder", ``layer`` ``str(l)``
feature at ``embed``      ``feature_type`` "embedding", ``layer`` "E"
error node (any site)     ``feature_type`` "mlp reconstruction error" (the format's only error
                          type), ``feature`` -1 - slot (see below)
``metric``                ``feature_type`` "logit", ``layer`` ``str(n_layers + 1)``,
                          ``is_target_logit`` true
position                  ``ctx_idx``: the token index (token-level graphs), the span's index in
                          ``position_labels`` (schema-level), 0 (position-agnostic)
``position_labels``       ``metadata.prompt_tokens`` (``["*"]`` for agnostic graphs)
node ``effect``           ``influence`` (signed effect on the metric, not circuit-tracer's
                          cumulative influence fraction)
node ``activation``       ``activation`` (None when the graph has none)
node ``label``            ``clerp``, prefixed with the site and feature index
edge ``effect``           link ``weight``
``dictionaries``          ``metadata.scan`` and ``metadata.transcoder_list``
=======================  ========================================================================

Several dictionary sites per layer. circuit-tracer has one feature family per layer, so its ids
``"{layer}_{index}_{ctx}"`` would collide when a layer has, say, ``attn``, ``mlp`` and ``resid``
SAEs. Each sublayer kind that occurs in the graph gets a slot ``s`` (``mlp``/``transcoder`` first,
then ``attn``, ``resid``, then any other kind by name) and the exported index of feature ``i`` is
``i * n_slots + s``; error nodes get ``-1 - s``. A graph with one sublayer kind (a plain transcoder
graph) keeps its feature indices unchanged. The slot table is stored in
``metadata.info.sublayer_slots`` and every node keeps this project's id in ``circuit_node_id``
and its site in ``site`` (extra keys that circuit-tracer's loader ignores), so nothing is lost.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import networkx as nx

from viz._common import (
    SUBLAYER_RANK,
    NodeInfo,
    all_node_info,
    edge_effect,
    n_layers_of,
    write_atomic,
)

SCHEMA_VERSION = 1

FEATURE_TYPE = "cross layer transcoder"
ERROR_TYPE = "mlp reconstruction error"
EMBEDDING_TYPE = "embedding"
LOGIT_TYPE = "logit"


def _sublayer_slots(infos: list[NodeInfo]) -> dict[str, int]:
    """Slot of each non-embedding sublayer kind present in the graph."""
    kinds = {i.sublayer for i in infos if i.kind != "metric" and i.sublayer != "embed"}
    ordered = sorted(kinds, key=lambda k: (SUBLAYER_RANK.get(k, 3) != 1, SUBLAYER_RANK.get(k, 3), k))
    return {kind: slot for slot, kind in enumerate(ordered)}


def _ctx_index(graph: nx.DiGraph, info: NodeInfo, labels: list[str]) -> int:
    """``ctx_idx`` of a node: token index, span index, or 0 for agnostic graphs."""
    mode = graph.graph.get("positions")
    n_ctx = max(len(labels), 1)
    if info.kind == "metric" or info.position is None:
        return n_ctx - 1 if mode != "agnostic" else 0
    if mode == "agnostic" or info.position == "*":
        return 0
    if isinstance(info.position, int):
        return info.position
    text = str(info.position)
    if text.isdigit():
        return int(text)
    if text in labels:
        return labels.index(text)
    raise ValueError(
        f"node {info.id!r} has position {text!r}, which is not in the graph's position_labels "
        f"{labels}; add it there to export this graph"
    )


def _prompt_tokens(graph: nx.DiGraph, infos: list[NodeInfo]) -> list[str]:
    """``metadata.prompt_tokens``: the column labels, padded to cover every token index."""
    if graph.graph.get("positions") == "agnostic":
        return ["*"]
    labels = [str(x) for x in (graph.graph.get("position_labels") or [])]
    token_positions = [i.position for i in infos if isinstance(i.position, int)]
    if token_positions and max(token_positions) >= len(labels):
        labels += [""] * (max(token_positions) + 1 - len(labels))
    return labels or ["*"]


def _slug(graph: nx.DiGraph) -> str:
    """A file-name-safe slug from the graph's task and method."""
    raw = graph.graph.get("slug") or "-".join(str(graph.graph[k]) for k in ("task", "method") if graph.graph.get(k))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(raw or "circuit")).strip("-") or "circuit"


def _export_node(
    info: NodeInfo,
    ctx: int,
    n_ctx: int,
    n_layers: int,
    slots: dict[str, int],
    task: str,
) -> dict[str, Any]:
    """One node in circuit-tracer's layout (plus this project's id and site)."""
    n_slots = max(len(slots), 1)
    common: dict[str, Any] = {
        "ctx_idx": ctx,
        "reverse_ctx_idx": n_ctx - 1 - ctx,
        "run_idx": 0,
        "token_prob": 0.0,
        "is_target_logit": False,
        "influence": info.effect,
        "activation": info.activation,
        "circuit_node_id": info.id,
        "site": info.site,
    }
    if info.kind == "metric":
        layer = str(n_layers + 1)
        return {
            "node_id": f"{layer}_0_{ctx}",
            "feature": 0,
            "layer": layer,
            "feature_type": LOGIT_TYPE,
            "jsNodeId": f"L_0-{ctx}",
            "clerp": f"metric ({task})" if task else "metric",
            **common,
            "is_target_logit": True,
            "token_prob": 1.0,
        }
    embed = info.sublayer == "embed"
    layer = "E" if embed else str(info.layer)
    slot = 0 if embed else slots[info.sublayer]
    if info.kind == "error":
        code = -1 - slot
        return {
            "node_id": f"{layer}_{code}_{ctx}",
            "feature": code,
            "layer": layer,
            "feature_type": ERROR_TYPE,
            "jsNodeId": f"{layer}_{code}-{ctx}",
            "clerp": f"{info.site} error",
            **common,
        }
    index = info.feature if info.feature is not None else 0
    code = index if embed else index * n_slots + slot
    clerp = f"{info.site} #{index}" + (f": {info.label}" if info.label else "")
    return {
        "node_id": f"{layer}_{code}_{ctx}",
        "feature": code,
        "layer": layer,
        "feature_type": EMBEDDING_TYPE if embed else FEATURE_TYPE,
        "jsNodeId": f"{layer}_{code}-{ctx}" if embed else f"{layer}_{code}-0",
        "clerp": clerp,
        **common,
    }


def _metadata(G: nx.DiGraph, labels: list[str], n_layers: int, slots: dict[str, int]) -> dict[str, Any]:
    """The export's ``metadata``: slug, scan, transcoder list, prompt and the graph's own attributes."""
    dictionaries = G.graph.get("dictionaries")
    if isinstance(dictionaries, (list, tuple)):
        transcoder_list = [str(d) for d in dictionaries]
        scan = "-".join(transcoder_list)
    else:
        transcoder_list = [str(dictionaries)] if dictionaries else []
        scan = str(dictionaries or G.graph.get("model") or "")

    metadata: dict[str, Any] = {
        "slug": _slug(G),
        "scan": scan,
        "transcoder_list": transcoder_list,
        "prompt_tokens": labels,
        "prompt": str(G.graph.get("prompt") or " ".join(labels)),
        "node_threshold": G.graph.get("node_threshold"),
        "schema_version": SCHEMA_VERSION,
        "info": {
            "model": G.graph.get("model"),
            "task": G.graph.get("task"),
            "method": G.graph.get("method"),
            "positions": G.graph.get("positions"),
            "n_layers": n_layers,
            "sublayer_slots": slots,
        },
    }
    return metadata


def to_circuit_tracer(G: nx.DiGraph) -> dict[str, Any]:
    """The graph as a circuit-tracer graph JSON dict (see the module docstring for the mapping).

    Raises:
        ValueError: when two nodes would get the same exported id (two sites with the same layer
            and sublayer kind) or a span position is missing from ``position_labels``.
    """
    infos = all_node_info(G)
    n_layers = n_layers_of(G)
    labels = _prompt_tokens(G, infos)
    slots = _sublayer_slots(infos)
    task = str(G.graph.get("task") or "")

    nodes: list[dict[str, Any]] = []
    id_map: dict[str, str] = {}
    owner: dict[str, str] = {}
    for info in infos:
        ctx = _ctx_index(G, info, labels)
        node = _export_node(info, ctx, len(labels), n_layers, slots, task)
        clash = owner.setdefault(node["node_id"], info.id)
        if clash != info.id:
            raise ValueError(
                f"nodes {clash!r} and {info.id!r} both export as {node['node_id']!r}: two sites "
                "share a layer and sublayer kind, which circuit-tracer's ids cannot tell apart"
            )
        id_map[info.id] = node["node_id"]
        nodes.append(node)

    links = [
        {
            "source": id_map[str(u)],
            "target": id_map[str(v)],
            "weight": edge_effect(G, u, v),
        }
        for u, v in G.edges
    ]

    metadata = _metadata(G, labels, n_layers, slots)
    q_params = {
        "pinnedIds": [],
        "supernodes": [],
        "linkType": "both",
        "clickedId": "",
        "sg_pos": "",
    }
    return {"metadata": metadata, "qParams": q_params, "nodes": nodes, "links": links}


def write_circuit_tracer(G: nx.DiGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``to_circuit_tracer(G)`` as JSON to ``path`` (atomically) and return the path."""
    return write_atomic(path, json.dumps(to_circuit_tracer(G), indent=1, default=str) + "\n")


__all__ = ["to_circuit_tracer", "write_circuit_tracer"]
