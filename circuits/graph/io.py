"""Checking, saving and loading circuits: the circuit.json format.

:func:`validate_graph` checks a graph against the schema of :mod:`circuits.graph.ids`;
:func:`circuit_to_dict` / :func:`circuit_from_dict` convert between a graph and its circuit.json
object, :func:`save_circuit` / :func:`load_circuit` write and read the file (:func:`read_json` reads
any JSON file strictly), and :func:`check_compatible` compares a loaded circuit with the model and
dictionaries in use. ``SCHEMA_VERSION`` is the version of the format written and read.

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

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.errors import CircuitError
from circuits.files import write_text_atomic
from circuits.graph.ids import (
    AGNOSTIC,
    METRIC,
    NODE_FIELDS,
    REQUIRED_METADATA,
    check_metadata,
    node_attributes,
    parse_node_id,
    row_key,
    short_repr,
    site_of,
    source_prefix,
)

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------- validation


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
                f"{where}the metric node has layer={short_repr(layer)} but metadata 'n_layers' is {short_repr(n_layers)}; the metric sits "
                "above the last layer, so they must be equal"
            )
    else:
        assert position is not None and index is not None  # parse_node_id gives None only for the metric
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
            raise CircuitError(f"{where}node {node!r} has {key}={short_repr(got)}, but its id says {want!r}")
    if not isinstance(attrs["layer"], int) or isinstance(attrs["layer"], bool):
        raise CircuitError(f"{where}node {node!r} has layer={short_repr(attrs['layer'])}; expected an int")
    effect = attrs["effect"]
    if not _is_finite_number(effect):
        raise CircuitError(f"{where}node {node!r} has effect={short_repr(effect)}; expected a finite number")
    if not isinstance(attrs["label"], str):
        raise CircuitError(f"{where}node {node!r} has label={short_repr(attrs['label'])}; expected a string")
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
    where = source_prefix(source)
    check_metadata(G.graph, source, require=REQUIRED_METADATA if require_metadata else ())
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
            raise CircuitError(f"{where}edge {u!r} -> {v!r} has effect={short_repr(effect)}; expected a finite number")
        if row_key(G.nodes[u]) >= row_key(G.nodes[v]):
            raise CircuitError(
                f"{where}edge {u!r} -> {v!r} does not go up a row (edges run from earlier sites to later ones)"
            )


# ----------------------------------------------------------------------------------------- I/O


def _json_default(value: Any) -> Any:
    """Turn numpy / torch scalars into Python numbers; refuse anything else."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False, default=_json_default, indent=indent)


def circuit_to_dict(G: nx.DiGraph) -> dict[str, Any]:
    """The circuit.json object of ``G`` (validated; see the module docstring)."""
    validate_graph(G, require_metadata=True, require_metric=True)
    for node, attrs in G.nodes(data=True):
        if "id" in attrs:
            raise CircuitError(
                f"node {node!r} has an attribute named 'id', which circuit.json reserves for the node id"
            )
    for u, v, attrs in G.edges(data=True):
        if "source" in attrs or "target" in attrs:
            raise CircuitError(
                f"edge {u!r} -> {v!r} has an attribute named 'source' or 'target', which circuit.json reserves"
            )
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
        raise CircuitError(
            f"cannot write {path}: a graph, node or edge attribute is not a JSON value ({err})"
        ) from None
    return write_text_atomic(path, text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file strictly (no NaN / Infinity); :class:`CircuitError` naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark some editors add is not an error
    except OSError as err:
        raise CircuitError(f"cannot read {what} file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise CircuitError(f"{path} is not a {what} file: it is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise CircuitError(
            f"{path} is not a {what} file: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg})"
        ) from None
    except RecursionError:
        raise CircuitError(f"{path} is not a {what} file: its JSON is nested too deeply") from None
    except ValueError as err:
        raise CircuitError(f"{path} is not a {what} file: {str(err).split(';')[0]}") from None


def circuit_from_dict(data: Any, *, source: str | None = None) -> nx.DiGraph:
    """Build the graph of a circuit.json object; :class:`CircuitError` for anything malformed."""
    where = source_prefix(source)
    if not isinstance(data, dict) or "schema_version" not in data:
        raise CircuitError(
            f"{where}not a circuit file: expected a JSON object with 'schema_version', 'metadata', 'nodes', 'edges'"
        )
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise CircuitError(
            f"{where}circuit schema_version is {short_repr(version)}; this version of the library reads schema_version {SCHEMA_VERSION}"
        )
    for key, kind in (("metadata", dict), ("nodes", list), ("edges", list)):
        if key not in data:
            raise CircuitError(f"{where}circuit file lacks the {key!r} field")
        if not isinstance(data[key], kind):
            raise CircuitError(f"{where}circuit field {key!r} must be a JSON {'object' if kind is dict else 'array'}")
    check_metadata(data["metadata"], source, require=REQUIRED_METADATA)
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
                raise CircuitError(
                    f"{where}edge #{i} ({short_repr(u)} -> {short_repr(v)}) refers to {short_repr(end)}, which is not a node of the file"
                )
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
            key=lambda name: (site_of(name).order, name) if isinstance(name, str) else (0, 0),
        )
        if used:
            raise CircuitError(
                f"{what} has nodes at {', '.join(map(str, used[:6]))}{', ...' if len(used) > 6 else ''}, which the "
                f"dictionaries in use do not replace (they have {', '.join(available) or 'no sites'}); use the "
                "dictionaries and composition the circuit was made with"
            )
