"""The attributed graph and the circuit: networkx ``DiGraph`` objects with a fixed schema.

An attributed graph holds every scored node and edge of a model on a task; a circuit is a pruned
copy of it. Both are plain :class:`networkx.DiGraph` objects, so any networkx algorithm applies;
this module fixes what their ids and attributes mean and offers the helpers that build, count, copy
and order them (:mod:`circuits.graph.io` validates, saves and loads them).

Node ids
--------
Ids are printable, stable strings; they are what ``circuit.json``, the diagrams and a user's
scripts refer to.

- feature node: ``"{site}/{position}/{index}"``, e.g. ``"L1.attn/5/123"`` or ``"embed/IO/17"``;
- error node: ``"{site}/{position}/err"``, e.g. ``"L0.resid/3/err"``;
- the single sink: ``"metric"``.

``site`` is a dictionary site name of :mod:`replacement.sites` (``embed``, ``L1.attn``,
``L1.mlp``, ``L1.transcoder``, ``L1.resid``). ``position`` is a token index written in decimal
(token-level graphs), a schema span name (span-level graphs) or ``"*"`` (position-agnostic graphs).
``index`` is the feature number in decimal. The form is canonical: no leading zeros, no signs, a span
name is never all digits and never contains ``/``, so ``node_id(*parse_node_id(i)) == i`` for every
valid id ``i``.

Node attributes
---------------
============ ======================================================================================
site         str: the site name (``"metric"`` for the sink)
layer        int: the site's layer; -1 for ``embed``; ``n_layers`` for the metric
sublayer     ``"embed" | "attn" | "mlp" | "transcoder" | "resid" | "metric"``
position     int (token index) | str (span name or ``"*"``) | None (metric)
feature      int (feature index) | None (error node, metric)
kind         ``"feature" | "error" | "metric"``
effect       float: the node's signed effect on the metric (the metric's own value for the sink)
label        str: a human-readable description, may be ``""``
============ ======================================================================================

Further node attributes are allowed and saved as long as they are JSON values.

Edge attributes: ``effect`` (float, signed), plus any JSON values. Edges point upwards: from a lower
row to a higher one (see below), so the graph is acyclic.

Graph attributes (``G.graph``): ``model``, ``dictionaries``, ``task``, ``method`` (non-empty str each;
required to save), ``positions`` (``"token" | "schema" | "agnostic"``), ``position_labels``
(list[str]: the example's tokens or the schema's span names, in column order), ``n_layers`` (int),
plus any JSON values.

Rows, bottom to top: ``embed``; then for each layer ``attn``, ``mlp`` | ``transcoder``, ``resid``;
``metric`` on top. :func:`row_key` sorts node attributes in that order.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

from circuits.errors import CircuitError
from replacement.sites import SITE_KINDS, Site

METRIC = "metric"
ERROR_INDEX = "err"
AGNOSTIC = "*"
POSITION_MODES = ("token", "schema", "agnostic")
SUBLAYERS = ("embed", "attn", "mlp", "transcoder", "resid", "metric")
NODE_KINDS = ("feature", "error", "metric")
REQUIRED_METADATA = ("model", "dictionaries", "task", "method")
NODE_FIELDS = ("site", "layer", "sublayer", "position", "feature", "kind", "effect", "label")

Position = int | str
Index = int | str  # a feature number, or ERROR_INDEX

# Row order inside a layer; the metric sits alone on the row above the last layer.
_SUBLAYER_RANK = {name: kind.rank for name, kind in SITE_KINDS.items()} | {METRIC: 0}


# --------------------------------------------------------------------------------------------- ids


def _canonical_int(text: str) -> bool:
    """True for a decimal non-negative integer without sign or leading zeros."""
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def _check_position(position: Any) -> Position:
    if isinstance(position, str):
        if not position or "/" in position or not position.isprintable():
            raise CircuitError(f"bad position {position!r}: a span name must be non-empty, printable and free of '/'")
        if position.isdigit():
            raise CircuitError(
                f"bad position {position!r}: a token position is an int, and a span name cannot be all digits"
            )
        return position
    if isinstance(position, bool):
        raise CircuitError(f"bad position {position!r}: expected a token index (int), a span name or {AGNOSTIC!r}")
    try:
        value = operator.index(position)
    except TypeError:
        raise CircuitError(
            f"bad position {position!r}: expected a token index (int), a span name or {AGNOSTIC!r}"
        ) from None
    if value < 0:
        raise CircuitError(f"bad position {value}: token indices are >= 0")
    return value


def _check_index(index: Any) -> Index:
    if index == ERROR_INDEX and isinstance(index, str):
        return ERROR_INDEX
    if isinstance(index, (str, bool)):
        raise CircuitError(f"bad feature index {index!r}: expected an int >= 0 or {ERROR_INDEX!r}")
    try:
        value = operator.index(index)
    except TypeError:
        raise CircuitError(f"bad feature index {index!r}: expected an int >= 0 or {ERROR_INDEX!r}") from None
    if value < 0:
        raise CircuitError(f"bad feature index {value}: feature indices are >= 0")
    return value


def site_of(name: Any) -> Site:
    """The :class:`~replacement.sites.Site` named ``name``; :class:`CircuitError` for anything else."""
    if not isinstance(name, str):
        raise CircuitError(f"bad site {name!r}: expected a site name such as 'embed' or 'L1.attn'")
    try:
        return Site.parse(name)
    except ValueError as err:
        raise CircuitError(str(err)) from None


def node_id(site: str, position: Position, index: Index) -> str:
    """The id of a feature node (``index`` an int) or an error node (``index == "err"``).

    >>> node_id("L1.attn", 5, 123), node_id("embed", "IO", 17), node_id("L0.resid", "*", "err")
    ('L1.attn/5/123', 'embed/IO/17', 'L0.resid/*/err')
    """
    site_name = site_of(site).name
    return f"{site_name}/{_check_position(position)}/{_check_index(index)}"


def parse_node_id(node: str) -> tuple[str, Position | None, Index | None]:
    """``"L1.attn/5/123"`` -> ``("L1.attn", 5, 123)``; ``"embed/IO/err"`` -> ``("embed", "IO", "err")``.

    The position is an int when it is all digits, else a str. ``"metric"`` gives
    ``("metric", None, None)``. Raises :class:`CircuitError` for anything that is not a canonical id.
    """
    if not isinstance(node, str):
        raise CircuitError(f"bad node id {node!r}: node ids are strings")
    if node == METRIC:
        return METRIC, None, None
    parts = node.split("/")
    if len(parts) != 3:
        raise CircuitError(f"bad node id {node!r}: expected 'site/position/index' (e.g. 'L1.attn/5/123') or 'metric'")
    site_text, pos_text, index_text = parts
    try:
        site = site_of(site_text)
    except CircuitError as err:
        raise CircuitError(f"bad node id {node!r}: {err}") from None
    if site.name != site_text:
        raise CircuitError(f"bad node id {node!r}: site {site_text!r} is not canonical (write {site.name!r})")
    position: Position
    if pos_text.isdigit():
        if not _canonical_int(pos_text):
            raise CircuitError(f"bad node id {node!r}: position {pos_text!r} has leading zeros")
        position = int(pos_text)
    else:
        position = _check_position(pos_text)
    index: Index
    if index_text == ERROR_INDEX:
        index = ERROR_INDEX
    elif _canonical_int(index_text):
        index = int(index_text)
    else:
        raise CircuitError(
            f"bad node id {node!r}: index {index_text!r} is neither a feature number nor {ERROR_INDEX!r}"
        )
    return site.name, position, index


# ------------------------------------------------------------------------------------- building


def node_attributes(
    site: str, position: Position, index: Index, *, effect: float = 0.0, label: str = ""
) -> dict[str, Any]:
    """The schema's attributes of a feature or error node (layer, sublayer and kind derived from the id)."""
    s = site_of(site)
    index = _check_index(index)
    return {
        "site": s.name,
        "layer": s.layer,
        "sublayer": s.kind,
        "position": _check_position(position),
        "feature": None if index == ERROR_INDEX else index,
        "kind": "error" if index == ERROR_INDEX else "feature",
        "effect": effect,
        "label": label,
    }


def metric_attributes(n_layers: int, *, effect: float = 0.0, label: str = "") -> dict[str, Any]:
    """The schema's attributes of the metric node of a model with ``n_layers`` layers."""
    return {
        "site": METRIC,
        "layer": n_layers,
        "sublayer": METRIC,
        "position": None,
        "feature": None,
        "kind": METRIC,
        "effect": effect,
        "label": label,
    }


def new_graph(
    *,
    model: str,
    dictionaries: str,
    task: str,
    method: str,
    positions: str,
    position_labels: Iterable[str],
    n_layers: int,
    **extra: Any,
) -> nx.DiGraph:
    """An empty graph carrying the schema's graph attributes (plus ``extra``)."""
    G = nx.DiGraph()
    G.graph.update(
        model=model,
        dictionaries=dictionaries,
        task=task,
        method=method,
        positions=positions,
        position_labels=list(position_labels),
        n_layers=n_layers,
        **extra,
    )
    check_metadata(G.graph, None)
    return G


def add_node(
    G: nx.DiGraph, site: str, position: Position, index: Index, *, effect: float = 0.0, label: str = "", **extra: Any
) -> str:
    """Add (or update) a feature or error node with the schema's attributes; returns its id."""
    nid = node_id(site, position, index)
    G.add_node(nid, **node_attributes(site, position, index, effect=effect, label=label), **extra)
    return nid


def add_metric(G: nx.DiGraph, *, effect: float = 0.0, label: str = "", **extra: Any) -> str:
    """Add (or update) the metric node; its layer is ``G.graph["n_layers"]``. Returns ``"metric"``."""
    if "n_layers" not in G.graph:
        raise CircuitError("the graph has no 'n_layers' attribute; build it with new_graph(...)")
    G.add_node(METRIC, **metric_attributes(G.graph["n_layers"], effect=effect, label=label), **extra)
    return METRIC


# ------------------------------------------------------------------------------------ ordering


def row_key(node_attrs: Mapping[str, Any]) -> tuple[int, int]:
    """Sort key of a node's row, bottom to top: embed; per layer attn, mlp | transcoder, resid; metric."""
    try:
        layer, sublayer = node_attrs["layer"], node_attrs["sublayer"]
    except KeyError as err:
        raise CircuitError(f"node attributes lack {err.args[0]!r}; cannot place the node in a row") from None
    if sublayer not in _SUBLAYER_RANK:
        raise CircuitError(f"unknown sublayer {sublayer!r}; expected one of {', '.join(SUBLAYERS)}")
    return int(layer), _SUBLAYER_RANK[sublayer]


def position_column(G: nx.DiGraph, node_attrs: Mapping[str, Any]) -> int | None:
    """The column of a node in a diagram: its index in ``G.graph["position_labels"]`` (0 for ``"*"``).

    None for the metric node and for a position that is not among the labels.
    """
    position = node_attrs.get("position")
    if position is None:
        return None
    if isinstance(position, int):
        return position
    if position == AGNOSTIC:
        return 0
    labels = list(G.graph.get("position_labels", []))
    return labels.index(position) if position in labels else None


def count_nodes(G: nx.DiGraph) -> int:
    """The number of nodes, not counting the metric node."""
    return G.number_of_nodes() - (1 if METRIC in G else 0)


def copy_graph(
    G: nx.DiGraph, nodes: Iterable[str] | None = None, edges: Iterable[tuple[str, str]] | None = None
) -> nx.DiGraph:
    """A new graph with ``G``'s metadata and the given nodes (default all) and edges, in ``G``'s order.

    ``edges`` defaults to every edge of ``G`` between the kept nodes. Attribute dicts and ``G.graph``
    are copied, so changing the copy never changes ``G``.
    """
    keep = set(G) if nodes is None else set(nodes)
    wanted = None if edges is None else set(edges)
    H = nx.DiGraph()
    H.graph.update(copy.deepcopy(G.graph))
    H.add_nodes_from((n, copy.deepcopy(attrs)) for n, attrs in G.nodes(data=True) if n in keep)
    H.add_edges_from(
        (u, v, copy.deepcopy(attrs))
        for u, v, attrs in G.edges(data=True)
        if u in keep and v in keep and (wanted is None or (u, v) in wanted)
    )
    return H


# ---------------------------------------------------------------------------- graph attributes


def source_prefix(source: str | None) -> str:
    """``"{source}: "`` to start a message about ``source``, or ``""``."""
    return f"{source}: " if source else ""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_metadata(meta: Mapping[str, Any], source: str | None, *, require: Iterable[str] = ()) -> None:
    """Raise :class:`CircuitError` unless the graph attributes ``meta`` follow the schema (``require``: keys that must be present)."""
    where = source_prefix(source)
    for key in require:
        if key not in meta:
            raise CircuitError(f"{where}circuit metadata lacks {key!r} (it must name {', '.join(REQUIRED_METADATA)})")
    for key in REQUIRED_METADATA:
        if key in meta and (not isinstance(meta[key], str) or not meta[key]):
            raise CircuitError(
                f"{where}circuit metadata {key!r} must be a non-empty string, not {short_repr(meta[key])}"
            )
    if "positions" in meta and meta["positions"] not in POSITION_MODES:
        raise CircuitError(
            f"{where}metadata 'positions' is {short_repr(meta['positions'])}; expected one of {', '.join(POSITION_MODES)}"
        )
    if "position_labels" in meta:
        labels = meta["position_labels"]
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise CircuitError(f"{where}metadata 'position_labels' must be a list of strings")
    if "n_layers" in meta:
        n = meta["n_layers"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CircuitError(f"{where}metadata 'n_layers' must be an int >= 0, not {short_repr(n)}")
