"""Helpers shared by the renderers: reading node attributes and writing files atomically.

:func:`node_info` reads a node's attributes into a :class:`NodeInfo`; :func:`write_atomic` writes
one output file atomically; the rest are small readers (:func:`count_nodes`, :func:`edge_effect`,
:func:`row_key`, :func:`truncate`).

The graph contract (also documented in ``viz/__init__.py``):

* node ids are strings: ``"{site}/{pos}/{index}"`` for a feature, ``"{site}/{pos}/err"`` for an
  error node and ``"metric"`` for the single sink;
* node attributes: ``site``, ``layer``, ``sublayer``, ``position``, ``feature``, ``kind``,
  ``effect``, ``label``; edge attribute ``effect``;
* a ``kind="group"`` node stands for nodes left out of a drawing (attribute ``members``: their ids);
* graph attributes: ``model``, ``dictionaries``, ``task``, ``method``, ``positions``,
  ``position_labels``, ``n_layers``.

Graphs made by ``circuits`` carry every attribute and are read as they are. A hand-made graph
that lacks some is completed from its node ids (:func:`_attributes_from_id`), so one with only ids
and effects still renders.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

METRIC_ID = "metric"
ERROR_INDEX = "err"

#: Order of sublayers inside one layer, bottom to top.
SUBLAYER_RANK: dict[str, int] = {"attn": 0, "mlp": 1, "transcoder": 1, "resid": 2}

_SITE_RE = re.compile(r"^L(\d+)\.(\w+)$")


@dataclass(frozen=True)
class NodeInfo:
    """One node's attributes, completed from its id where the graph left them out."""

    id: str
    site: str
    layer: int
    sublayer: str
    position: int | str | None
    feature: int | None
    kind: str
    effect: float
    label: str
    activation: float | None = None
    members: tuple[str, ...] = ()


def _parse_position(text: str) -> int | str:
    """A position field of a node id: an int for token indices, otherwise the text itself."""
    return int(text) if text.isdigit() else text


def _site_layer(site: str, n_layers: int) -> tuple[int, str]:
    """Layer and sublayer named by a site string such as ``"L1.attn"`` or ``"embed"``."""
    if site == "embed":
        return -1, "embed"
    if site == METRIC_ID:
        return n_layers, "metric"
    match = _SITE_RE.match(site)
    if match:
        return int(match.group(1)), match.group(2)
    return 0, site


def _as_float(value: Any) -> float:
    """``value`` as a finite float (0.0 for missing or non-numeric values)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0


def n_layers_of(graph: nx.DiGraph) -> int:
    """The model's layer count from ``graph.graph["n_layers"]``, else from the node layers."""
    value = graph.graph.get("n_layers")
    if isinstance(value, int):
        return value
    layers = [d.get("layer") for _, d in graph.nodes(data=True) if d.get("kind") != "metric"]
    ints = [v for v in layers if isinstance(v, int)]
    return max(ints) + 1 if ints else 0


#: The node attributes that place a node; a graph carrying them all is read without parsing ids.
PLACING_ATTRIBUTES = ("site", "layer", "sublayer", "position", "feature", "kind")


def _attributes_from_id(node_id: str, data: Mapping[str, Any], n_layers: int) -> dict[str, Any]:
    """The placing attributes read off a node id, for a graph made by hand with only ids and effects.

    viz imports none of the project's packages, so it cannot call ``circuits.graph.ids.parse_node_id``;
    graphs made by ``circuits`` carry every placing attribute (its ``validate_graph`` demands them), so
    this parse only ever serves hand-made graphs. It is lenient where ``parse_node_id`` is strict: an
    id of another form keeps the whole id as its site. Attributes the graph does carry win.
    """
    if node_id == METRIC_ID or data.get("kind") == "metric":
        site, pos_text, index = METRIC_ID, None, None
    else:
        parts = node_id.rsplit("/", 2)
        site, pos_text, index = (parts[0], parts[1], parts[2]) if len(parts) == 3 else (node_id, None, None)
    site = str(data.get("site", site))
    layer, sublayer = _site_layer(site, n_layers)
    kind = "metric" if site == METRIC_ID else "error" if index == ERROR_INDEX else "feature"
    return {
        "site": site,
        "layer": layer,
        "sublayer": sublayer,
        "position": None if pos_text is None else _parse_position(pos_text),
        "feature": int(index) if index is not None and index.lstrip("-").isdigit() else None,
        "kind": kind,
    }


def node_info(graph: nx.DiGraph, node: Hashable, n_layers: int | None = None) -> NodeInfo:
    """Read one node's attributes; only a node lacking some placing attribute has its id parsed."""
    data = graph.nodes[node]
    node_id = str(node)
    if n_layers is None:
        n_layers = n_layers_of(graph)
    attrs: Mapping[str, Any] = data
    if not all(key in data for key in PLACING_ATTRIBUTES):
        attrs = {**_attributes_from_id(node_id, data, n_layers), **data}
    site = str(attrs["site"])
    layer = attrs["layer"]
    layer = int(layer) if isinstance(layer, (int, float)) else _site_layer(site, n_layers)[0]
    kind = str(attrs["kind"])
    feature = attrs["feature"]
    activation = data.get("activation")
    members = tuple(str(m) for m in data.get("members") or ()) if kind == "group" else ()
    return NodeInfo(
        id=node_id,
        site=site,
        layer=layer,
        sublayer=str(attrs["sublayer"]) if kind != "metric" else "metric",
        position=attrs["position"],
        feature=int(feature) if isinstance(feature, (int, float)) else None,
        kind=kind,
        effect=_as_float(data.get("effect", 0.0)),
        label=str(data.get("label") or ""),
        activation=_as_float(activation) if activation is not None else None,
        members=members,
    )


def all_node_info(graph: nx.DiGraph) -> list[NodeInfo]:
    """``node_info`` for every node, in the graph's node order."""
    n_layers = n_layers_of(graph)
    return [node_info(graph, n, n_layers) for n in graph.nodes]


def is_metric(graph: nx.DiGraph, node: Hashable) -> bool:
    """Whether ``node`` is the metric sink (id ``"metric"`` or ``kind="metric"``)."""
    return str(node) == METRIC_ID or graph.nodes[node].get("kind") == "metric"


def count_nodes(graph: nx.DiGraph) -> int:
    """The circuit's size: its nodes, not counting the metric sink.

    The same count as ``circuits.graph.ids.count_nodes`` (which the run's title and summary use), so a
    report's header and its title agree.
    """
    return sum(1 for node in graph.nodes if not is_metric(graph, node))


def edge_effect(graph: nx.DiGraph, source: Hashable, target: Hashable) -> float:
    """The signed effect of one edge (0.0 when absent)."""
    return _as_float(graph.edges[source, target].get("effect", 0.0))


def row_key(info: NodeInfo) -> tuple[int, int, str]:
    """Sort key of the diagram row a node belongs to: embed, per layer attn/mlp/resid, metric."""
    if info.kind == "metric":
        return (10**9, 0, METRIC_ID)
    if info.sublayer == "embed":
        return (-1, 0, info.site)
    return (info.layer, SUBLAYER_RANK.get(info.sublayer, 1), info.site)


def esc(value: object) -> str:
    """HTML-escaped text (quotes included, so it is also safe inside attributes)."""
    return html.escape(str(value), quote=True)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (a str as UTF-8) to ``path`` through a temporary file in the same folder and a rename.

    ``circuits.files`` has the project's atomic writes; viz keeps this one small writer because it
    imports none of the project's packages (it can be installed and used on its own).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        # mkstemp creates the file private (0600); give it the usual permissions of an output.
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
