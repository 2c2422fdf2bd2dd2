"""The attributed graph and the circuit: networkx ``DiGraph`` objects with a fixed schema.

An attributed graph holds every scored node and edge of a model on a task; a circuit is a pruned
copy of it. Both are plain :class:`networkx.DiGraph` objects, so any networkx algorithm applies;
this module fixes what their ids and attributes mean and how they are saved.

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

circuit.json
------------
A UTF-8 JSON object::

    {
      "schema_version": 1,
      "metadata": {"model": "toy", "dictionaries": "toy-saes", "task": "ioi", "method": "ig",
                   "positions": "token", "position_labels": ["<bos>", "Then", ...], "n_layers": 3},
      "nodes": [
        {"id": "embed/1/17", "site": "embed", "layer": -1, "sublayer": "embed", "position": 1,
         "feature": 17, "kind": "feature", "effect": 0.25, "label": ""},
        ...
        {"id": "metric", "site": "metric", "layer": 3, "sublayer": "metric", "position": null,
         "feature": null, "kind": "metric", "effect": 2.5, "label": "logit diff"}
      ],
      "edges": [
        {"source": "embed/1/17", "target": "L0.attn/4/3", "effect": -0.125},
        ...
      ]
    }

``metadata`` is ``G.graph``. Each node object is ``{"id": ..., **attributes}``, each edge object is
``{"source": ..., "target": ..., **attributes}``, with attributes in their insertion order. Nodes and
edges are listed in the graph's order (``G.nodes``, ``G.edges``). Floats are written in their shortest
round-tripping form, so :func:`load_circuit` gives back bit-identical values (``-0.0`` included); an
int position stays an int and a span name stays a str. NaN and infinities are refused (they are not
JSON). Tuples come back as lists. Files are written atomically (a temporary file in the same folder,
then :func:`os.replace`).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import operator
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import networkx as nx

from circuits.errors import CircuitError
from circuits.files import write_text_atomic
from replacement.sites import SITE_KINDS, Site

SCHEMA_VERSION = 1
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
            raise CircuitError(f"bad position {position!r}: a token position is an int, and a span name cannot be all digits")
        return position
    if isinstance(position, bool):
        raise CircuitError(f"bad position {position!r}: expected a token index (int), a span name or {AGNOSTIC!r}")
    try:
        value = operator.index(position)
    except TypeError:
        raise CircuitError(f"bad position {position!r}: expected a token index (int), a span name or {AGNOSTIC!r}") from None
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


def _site(name: Any) -> Site:
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
    site_name = _site(site).name
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
        site = _site(site_text)
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
        raise CircuitError(f"bad node id {node!r}: index {index_text!r} is neither a feature number nor {ERROR_INDEX!r}")
    return site.name, position, index


# ------------------------------------------------------------------------------------- building


def node_attributes(site: str, position: Position, index: Index, *, effect: float = 0.0, label: str = "") -> dict[str, Any]:
    """The schema's attributes of a feature or error node (layer, sublayer and kind derived from the id)."""
    s = _site(site)
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
        "site": METRIC, "layer": n_layers, "sublayer": METRIC, "position": None,
        "feature": None, "kind": METRIC, "effect": effect, "label": label,
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
        model=model, dictionaries=dictionaries, task=task, method=method, positions=positions,
        position_labels=list(position_labels), n_layers=n_layers, **extra,
    )
    _check_metadata(G.graph, None)
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


# ---------------------------------------------------------------------------------- validation


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is finite as a float (an int too large for a float is not)."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_metadata(meta: Mapping[str, Any], source: str | None, *, require: Iterable[str] = ()) -> None:
    where = _where(source)
    for key in require:
        if key not in meta:
            raise CircuitError(f"{where}circuit metadata lacks {key!r} (it must name {', '.join(REQUIRED_METADATA)})")
    for key in REQUIRED_METADATA:
        if key in meta and (not isinstance(meta[key], str) or not meta[key]):
            raise CircuitError(f"{where}circuit metadata {key!r} must be a non-empty string, not {_short(meta[key])}")
    if "positions" in meta and meta["positions"] not in POSITION_MODES:
        raise CircuitError(f"{where}metadata 'positions' is {_short(meta['positions'])}; expected one of {', '.join(POSITION_MODES)}")
    if "position_labels" in meta:
        labels = meta["position_labels"]
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise CircuitError(f"{where}metadata 'position_labels' must be a list of strings")
    if "n_layers" in meta:
        n = meta["n_layers"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CircuitError(f"{where}metadata 'n_layers' must be an int >= 0, not {_short(n)}")


def _check_node(node: Any, attrs: Mapping[str, Any], meta: Mapping[str, Any], where: str) -> None:
    try:
        site, position, index = parse_node_id(node)
    except CircuitError as err:
        raise CircuitError(f"{where}{err}") from None
    missing = [f for f in NODE_FIELDS if f not in attrs]
    if missing:
        raise CircuitError(f"{where}node {node!r} lacks {', '.join(repr(m) for m in missing)}")
    n_layers = meta.get("n_layers")
    if node == METRIC:
        expected = {"site": METRIC, "sublayer": METRIC, "position": None, "feature": None, "kind": METRIC}
        layer = attrs["layer"]
        if n_layers is not None and (layer != n_layers or type(layer) is not int):
            raise CircuitError(
                f"{where}the metric node has layer={_short(layer)} but metadata 'n_layers' is {_short(n_layers)}; the metric sits "
                "above the last layer, so they must be equal"
            )
    else:
        expected = node_attributes(site, position, index)
        del expected["effect"], expected["label"]
        if n_layers is not None and expected["layer"] >= n_layers:
            raise CircuitError(
                f"{where}node {node!r} is at layer {expected['layer']}, but metadata 'n_layers' says the model has "
                + (f"{n_layers} layer{'s' if n_layers != 1 else ''} (0 to {n_layers - 1})" if n_layers else "no layers")
            )
    for key, want in expected.items():
        got = attrs[key]
        if got != want or type(got) is not type(want):
            raise CircuitError(f"{where}node {node!r} has {key}={_short(got)}, but its id says {want!r}")
    if not isinstance(attrs["layer"], int) or isinstance(attrs["layer"], bool):
        raise CircuitError(f"{where}node {node!r} has layer={_short(attrs['layer'])}; expected an int")
    effect = attrs["effect"]
    if not _is_finite_number(effect):
        raise CircuitError(f"{where}node {node!r} has effect={_short(effect)}; expected a finite number")
    if not isinstance(attrs["label"], str):
        raise CircuitError(f"{where}node {node!r} has label={_short(attrs['label'])}; expected a string")
    mode = meta.get("positions")
    if node == METRIC or mode is None:
        return
    labels = meta.get("position_labels")
    if mode == "token":
        ok = isinstance(position, int) and (labels is None or position < len(labels))
        want = f"a token index below {len(labels)}" if labels is not None else "a token index"
    elif mode == "schema":
        ok = isinstance(position, str) and position != AGNOSTIC and (labels is None or position in labels)
        want = "one of the span names " + ", ".join(labels) if labels is not None else "a span name"
    else:
        ok = position == AGNOSTIC
        want = repr(AGNOSTIC)
    if not ok:
        raise CircuitError(f"{where}node {node!r} has position {position!r}, but a {mode}-level graph needs {want}")


def validate_graph(
    G: nx.DiGraph, *, source: str | None = None, require_metadata: bool = False, require_metric: bool = False
) -> None:
    """Raise :class:`CircuitError` unless ``G`` follows the schema of this module.

    Checks ids, node attributes against ids, finite effects, positions against ``G.graph``'s
    ``positions`` mode, layers against ``n_layers``, and that every edge goes up a row.
    ``require_metadata`` also demands ``model``, ``dictionaries``, ``task`` and ``method``, and
    ``require_metric`` the ``"metric"`` node (as saving and loading a circuit do: without its sink a
    circuit's edges reach nothing).
    """
    where = _where(source)
    _check_metadata(G.graph, source, require=REQUIRED_METADATA if require_metadata else ())
    if require_metric and METRIC not in G:
        raise CircuitError(
            f"{where}the circuit has no {METRIC!r} node; every circuit keeps its sink {METRIC!r}, which its edges lead to"
        )
    for node, attrs in G.nodes(data=True):
        _check_node(node, attrs, G.graph, where)
    for u, v, attrs in G.edges(data=True):
        if "effect" not in attrs:
            raise CircuitError(f"{where}edge {u!r} -> {v!r} has no 'effect'")
        effect = attrs["effect"]
        if not _is_finite_number(effect):
            raise CircuitError(f"{where}edge {u!r} -> {v!r} has effect={_short(effect)}; expected a finite number")
        if row_key(G.nodes[u]) >= row_key(G.nodes[v]):
            raise CircuitError(f"{where}edge {u!r} -> {v!r} does not go up a row (edges run from earlier sites to later ones)")


# ----------------------------------------------------------------------------------------- I/O


def _json_default(value: Any) -> Any:
    """Turn numpy / torch scalars into Python numbers; refuse anything else."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False, default=_json_default, indent=indent)


def write_json_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`circuits.files.write_text_atomic`)."""
    return write_text_atomic(path, text)


def circuit_to_dict(G: nx.DiGraph) -> dict[str, Any]:
    """The circuit.json object of ``G`` (validated; see the module docstring)."""
    validate_graph(G, require_metadata=True, require_metric=True)
    for node, attrs in G.nodes(data=True):
        if "id" in attrs:
            raise CircuitError(f"node {node!r} has an attribute named 'id', which circuit.json reserves for the node id")
    for u, v, attrs in G.edges(data=True):
        if "source" in attrs or "target" in attrs:
            raise CircuitError(f"edge {u!r} -> {v!r} has an attribute named 'source' or 'target', which circuit.json reserves")
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": dict(G.graph),
        "nodes": [{"id": n, **attrs} for n, attrs in G.nodes(data=True)],
        "edges": [{"source": u, "target": v, **attrs} for u, v, attrs in G.edges(data=True)],
    }


def _circuit_text(data: Mapping[str, Any]) -> str:
    """JSON text with one line per node and per edge: valid JSON that also reads and diffs well."""
    lines = ["{", f'  "schema_version": {_dumps(data["schema_version"])},']
    meta = [f"    {_dumps(str(k))}: {_dumps(v)}" for k, v in data["metadata"].items()]
    lines.append('  "metadata": {' + ("\n" + ",\n".join(meta) + "\n  }," if meta else "},"))
    for key, last in (("nodes", False), ("edges", True)):
        items = data[key]
        if not items:
            lines.append(f'  "{key}": []' + ("" if last else ","))
            continue
        lines.append(f'  "{key}": [')
        lines.extend("    " + _dumps(item) + ("," if i < len(items) - 1 else "") for i, item in enumerate(items))
        lines.append("  ]" + ("" if last else ","))
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_circuit(G: nx.DiGraph, path: str | os.PathLike) -> Path:
    """Validate ``G`` and write it to ``path`` as circuit.json, atomically. Returns the path."""
    data = circuit_to_dict(G)
    try:
        text = _circuit_text(data)
    except (TypeError, ValueError) as err:
        raise CircuitError(f"cannot write {path}: a graph, node or edge attribute is not a JSON value ({err})") from None
    return write_json_atomic(path, text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file strictly (no NaN / Infinity); :class:`CircuitError` naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CircuitError(f"cannot read {what} file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise CircuitError(f"{path} is not a {what} file: it is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise CircuitError(f"{path} is not a {what} file: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg})") from None
    except RecursionError:
        raise CircuitError(f"{path} is not a {what} file: its JSON is nested too deeply") from None
    except ValueError as err:
        raise CircuitError(f"{path} is not a {what} file: {str(err).split(';')[0]}") from None


def circuit_from_dict(data: Any, *, source: str | None = None) -> nx.DiGraph:
    """Build the graph of a circuit.json object; :class:`CircuitError` for anything malformed."""
    where = _where(source)
    if not isinstance(data, dict) or "schema_version" not in data:
        raise CircuitError(f"{where}not a circuit file: expected a JSON object with 'schema_version', 'metadata', 'nodes', 'edges'")
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise CircuitError(f"{where}circuit schema_version is {_short(version)}; this version of the library reads schema_version {SCHEMA_VERSION}")
    for key, kind in (("metadata", dict), ("nodes", list), ("edges", list)):
        if key not in data:
            raise CircuitError(f"{where}circuit file lacks the {key!r} field")
        if not isinstance(data[key], kind):
            raise CircuitError(f"{where}circuit field {key!r} must be a JSON {'object' if kind is dict else 'array'}")
    _check_metadata(data["metadata"], source, require=REQUIRED_METADATA)
    G = nx.DiGraph()
    G.graph.update(data["metadata"])
    for i, obj in enumerate(data["nodes"]):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise CircuitError(f"{where}node #{i} is not an object with a string 'id'")
        attrs = {k: v for k, v in obj.items() if k != "id"}
        if obj["id"] in G:
            raise CircuitError(f"{where}node {obj['id']!r} is listed twice")
        _check_node(obj["id"], attrs, G.graph, where)
        G.add_node(obj["id"], **attrs)
    for i, obj in enumerate(data["edges"]):
        if not isinstance(obj, dict):
            raise CircuitError(f"{where}edge #{i} is not an object")
        missing = [k for k in ("source", "target", "effect") if k not in obj]
        if missing:
            raise CircuitError(f"{where}edge #{i} lacks {', '.join(repr(m) for m in missing)}")
        u, v = obj["source"], obj["target"]
        for end in (u, v):
            if not isinstance(end, str) or end not in G:
                raise CircuitError(f"{where}edge #{i} ({_short(u)} -> {_short(v)}) refers to {_short(end)}, which is not a node of the file")
        if G.has_edge(u, v):
            raise CircuitError(f"{where}edge {u!r} -> {v!r} is listed twice")
        G.add_edge(u, v, **{k: val for k, val in obj.items() if k not in ("source", "target")})
    validate_graph(G, source=source, require_metadata=True, require_metric=True)
    return G


def load_circuit(path: str | os.PathLike) -> nx.DiGraph:
    """Read a circuit.json written by :func:`save_circuit`; the graph comes back exactly as saved."""
    return circuit_from_dict(read_json(path, "circuit"), source=str(path))


def check_compatible(
    G: nx.DiGraph,
    *,
    model: str | None = None,
    dictionaries: str | None = None,
    source: str | None = None,
    n_layers: int | None = None,
    sites: Iterable[str] | None = None,
) -> None:
    """Raise :class:`CircuitError` if ``G`` was made with another model or dictionary set than given.

    Only the arguments that are not None are compared: the recorded ``model`` and ``dictionaries``
    names, the recorded ``n_layers`` with the model's layer count, and the sites of ``G``'s nodes
    with the ``sites`` the replacement model has. The message names both sides.
    """
    what = f"circuit {source}" if source else "the circuit"
    problems = []
    for key, want in (("model", model), ("dictionaries", dictionaries)):
        if want is None:
            continue
        have = G.graph.get(key)
        if have != want:
            problems.append(f"{key} {have!r} (you are using {want!r})")
    if problems:
        raise CircuitError(
            f"{what} was made with {' and '.join(problems)}; use the matching model and dictionaries, "
            "or discover the circuit again with the current ones"
        )
    have_layers = G.graph.get("n_layers")
    if n_layers is not None and have_layers is not None and have_layers != n_layers:
        raise CircuitError(
            f"{what} was made for a model with {have_layers} layers, but the model in use has {n_layers}; "
            "use the model the circuit was made with, or discover the circuit again"
        )
    if sites is not None:
        available = list(sites)
        used = sorted(
            {attrs.get("site") for n, attrs in G.nodes(data=True) if n != METRIC} - set(available),
            key=lambda name: (_site(name).order, name) if isinstance(name, str) else (0, 0),
        )
        if used:
            raise CircuitError(
                f"{what} has nodes at {', '.join(map(str, used[:6]))}{', ...' if len(used) > 6 else ''}, which the "
                f"dictionaries in use do not replace (they have {', '.join(available) or 'no sites'}); use the "
                "dictionaries and composition the circuit was made with"
            )


def copy_graph(G: nx.DiGraph, nodes: Iterable[str] | None = None, edges: Iterable[tuple[str, str]] | None = None) -> nx.DiGraph:
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
