"""Faithfulness curves: size grids, the normalised scores, MIB's CPR and CMD, and curve.json.

The metric values themselves come from real ablations (the evaluation code); this module holds the
arithmetic and the storage.

Scores (Marks et al. 2025; MIB, Mueller et al. 2025), with ``m`` the task metric averaged over the
examples, ``M`` the full model, ``C`` the circuit and ``empty`` the circuit with nothing in it:

- faithfulness ``f(C) = (m(C) - m(empty)) / (m(M) - m(empty))``: 1 when the circuit alone does
  what the model does, 0 when it does no better than nothing;
- completeness ``(m(M \\ C) - m(empty)) / (m(M) - m(empty))``: the faithfulness of everything but
  the circuit; near 0 when the circuit holds all of the mechanism.

CPR and CMD (MIB's circuit localisation track) integrate faithfulness over circuit sizes given as
fractions ``k`` of the graph's edges (MIB uses :data:`MIB_FRACTIONS`). With the points sorted so that
``k_1 < k_2 < ... < k_n`` and ``f_i = f(k_i)``:

- ``CPR = sum_{i<n} (k_{i+1} - k_i) * (f_i + f_{i+1}) / 2`` (trapezoid rule; higher is better);
- ``CMD = sum_{i<n} (k_{i+1} - k_i) * (|1 - f_i| + |1 - f_{i+1}|) / 2`` (lower is better; 0 when the
  circuit matches the model at every size).

The integral runs from the smallest to the largest fraction given; nothing is extrapolated beyond
them, and ``|1 - f|`` is taken at the points before the trapezoid rule is applied.

curve.json is a UTF-8 JSON object: ``{"schema_version": 1, "sizes_nodes": [...], "sizes_edges":
[...], "faithfulness": [...], "completeness": [...] | null, "total_nodes": int | null,
"total_edges": int | null, "cpr": float | null, "cmd": float | null, "metadata": {...}}``; lists are
aligned (point ``i`` of every list belongs to the same circuit). Written atomically; floats come back
bit-identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from circuits.errors import CircuitError
from circuits.files import write_text_atomic
from circuits.graph.ids import AGNOSTIC, METRIC, parse_node_id
from circuits.graph.io import read_json

SCHEMA_VERSION = 1
MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


# ---------------------------------------------------------------------------------------- sizes


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CircuitError(f"{name} must be an int >= 1, not {value!r}")
    return int(value)


def size_grid(max_size: int, n_points: int = 15) -> list[int]:
    """``min(n_points, max_size)`` distinct integer sizes from 1 to ``max_size``, log-spaced, ascending.

    Points follow ``geomspace(1, max_size, n)`` rounded; where rounding would repeat a size, the
    point moves up to the next free integer, so small grids become ``1, 2, 3, ...``.
    """
    max_size = _positive_int(max_size, "max_size")
    n_points = _positive_int(n_points, "n_points")
    n = min(n_points, max_size)
    if n == 1:
        return [max_size]
    targets = np.geomspace(1.0, float(max_size), n)
    sizes = [1]
    for i in range(1, n):
        lowest = sizes[-1] + 1
        highest = max_size - (n - 1 - i)  # leave room for the points still to come
        sizes.append(min(max(lowest, round(float(targets[i]))), highest))
    return sizes


def fraction_sizes(total: int, fractions: Sequence[float] = MIB_FRACTIONS) -> list[int]:
    """The number of edges (or nodes) for each fraction of ``total``: ``ceil(k * total)``, at least 1."""
    total = _positive_int(total, "total")
    sizes: list[int] = []
    for k in fractions:
        if not isinstance(k, numbers.Real) or not 0 < k <= 1:
            raise CircuitError(f"fraction {k!r} is not in (0, 1]")
        sizes.append(max(1, math.ceil(round(k * total, 9))))  # round: 0.1 * 30 is 3.0000000000000004
    return sizes


# --------------------------------------------------------------------------------------- scores


def _normalised(m_value: float, m_model: float, m_empty: float, what: str) -> float:
    denominator = m_model - m_empty
    if denominator == 0 or not math.isfinite(denominator):
        raise CircuitError(
            f"{what} is undefined: the full model scores {m_model!r} and the empty circuit {m_empty!r} on the metric; "
            "the task needs a metric on which ablating everything changes the model's output"
        )
    return (m_value - m_empty) / denominator


def faithfulness_score(m_circuit: float, m_model: float, m_empty: float) -> float:
    """``(m(C) - m(empty)) / (m(M) - m(empty))``."""
    return _normalised(m_circuit, m_model, m_empty, "faithfulness")


def completeness_score(m_complement: float, m_model: float, m_empty: float) -> float:
    """``(m(M \\ C) - m(empty)) / (m(M) - m(empty))``: the faithfulness of the circuit's complement."""
    return _normalised(m_complement, m_model, m_empty, "completeness")


def _points(fractions: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(list(fractions), dtype=np.float64)
    f = np.asarray(list(values), dtype=np.float64)
    if k.ndim != 1 or f.ndim != 1 or len(k) != len(f):
        raise CircuitError(f"{len(k)} fractions but {len(f)} faithfulness values; give one value per fraction")
    if len(k) < 2:
        raise CircuitError("an area needs at least 2 points")
    if not np.all(np.isfinite(k)) or not np.all(np.isfinite(f)):
        raise CircuitError("fractions and faithfulness values must be finite numbers")
    if np.any(k < 0) or np.any(k > 1):
        raise CircuitError(f"fractions must lie in [0, 1]; got {sorted(set(k.tolist()))}")
    order = np.argsort(k, kind="stable")
    k, f = k[order], f[order]
    if np.any(np.diff(k) == 0):
        raise CircuitError("fractions repeat; give each circuit size once")
    return k, f


def _trapezoid(k: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(k) * (y[:-1] + y[1:]) / 2.0))


def cpr(fractions: Sequence[float], f: Sequence[float]) -> float:
    """MIB's CPR: the trapezoid area under ``f(k)`` over the edge fractions ``k`` (higher is better)."""
    k, values = _points(fractions, f)
    return _trapezoid(k, values)


def cmd(fractions: Sequence[float], f: Sequence[float]) -> float:
    """MIB's CMD: the trapezoid area under ``|1 - f(k)|`` over the edge fractions ``k`` (lower is better)."""
    k, values = _points(fractions, f)
    return _trapezoid(k, np.abs(1.0 - values))


# ---------------------------------------------------------------------------------------- curve


def _check_numbers(values: Any, name: str, kind: type) -> list:
    if not isinstance(values, (list, tuple)):
        raise CircuitError(f"curve {name} must be a list, not {type(values).__name__}")
    out = []
    for v in values:
        ok = isinstance(v, numbers.Integral) if kind is int else isinstance(v, numbers.Real)
        if isinstance(v, bool) or not ok or (kind is float and not math.isfinite(v)):
            raise CircuitError(f"curve {name} holds {v!r}; expected {'ints' if kind is int else 'finite numbers'}")
        out.append(int(v) if kind is int else v)
    return out


@dataclass
class Curve:
    """Faithfulness (and completeness) of circuits of several sizes; point ``i`` of each list is one circuit."""

    sizes_nodes: list[int]
    sizes_edges: list[int]
    faithfulness: list[float]
    completeness: list[float] | None = None
    total_nodes: int | None = None  # nodes of the unpruned graph, metric not counted
    total_edges: int | None = None  # edges of the unpruned graph
    cpr: float | None = None
    cmd: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes_nodes = _check_numbers(self.sizes_nodes, "sizes_nodes", int)
        self.sizes_edges = _check_numbers(self.sizes_edges, "sizes_edges", int)
        self.faithfulness = _check_numbers(self.faithfulness, "faithfulness", float)
        lengths = {name: len(getattr(self, name)) for name in ("sizes_nodes", "sizes_edges", "faithfulness")}
        if self.completeness is not None:
            self.completeness = _check_numbers(self.completeness, "completeness", float)
            lengths["completeness"] = len(self.completeness)
        if len(set(lengths.values())) != 1:
            raise CircuitError("curve lists differ in length: " + ", ".join(f"{k} {v}" for k, v in lengths.items()))
        for name in ("total_nodes", "total_edges"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
                raise CircuitError(f"curve {name} must be an int >= 0 or None, not {value!r}")
        for name in ("cpr", "cmd"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            ):
                raise CircuitError(f"curve {name} must be a finite number or None, not {value!r}")
        if not isinstance(self.metadata, dict):
            raise CircuitError("curve metadata must be a dict")

    def __len__(self) -> int:
        return len(self.faithfulness)

    def edge_fractions(self) -> list[float]:
        """Each point's size as a fraction of ``total_edges``."""
        if not self.total_edges:
            raise CircuitError("the curve has no total_edges, so its sizes cannot be turned into edge fractions")
        return [s / self.total_edges for s in self.sizes_edges]

    def with_areas(self) -> Curve:
        """A copy with ``cpr`` and ``cmd`` computed over :meth:`edge_fractions`."""
        k = self.edge_fractions()
        f = self.faithfulness
        return dataclasses.replace(self, cpr=cpr(k, f), cmd=cmd(k, f), metadata=dict(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        """The curve.json object."""
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Curve:
        """Build a curve from a curve.json object; :class:`CircuitError` for anything malformed."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise CircuitError(
                f"{where}not a curve file: expected a JSON object with 'schema_version' and the curve's lists"
            )
        if data["schema_version"] != SCHEMA_VERSION or isinstance(data["schema_version"], bool):
            raise CircuitError(
                f"{where}curve schema_version is {data['schema_version']!r}; this version reads schema_version {SCHEMA_VERSION}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in ("sizes_nodes", "sizes_edges", "faithfulness") if n not in data]
        if missing:
            raise CircuitError(f"{where}curve file lacks {', '.join(repr(m) for m in missing)}")
        unknown = sorted(set(data) - set(names) - {"schema_version"})
        if unknown:
            raise CircuitError(f"{where}curve file has unknown fields {', '.join(repr(u) for u in unknown)}")
        try:
            return cls(**{n: data[n] for n in names if n in data})
        except CircuitError as err:
            raise CircuitError(f"{where}{err}") from None

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write curve.json atomically; returns the path."""
        try:
            text = json.dumps(self.to_dict(), allow_nan=False, ensure_ascii=False, indent=2)
        except (TypeError, ValueError) as err:
            raise CircuitError(f"cannot write {path}: the curve's metadata is not JSON ({err})") from None
        return write_text_atomic(path, text + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Curve:
        """Read a curve.json written by :meth:`to_json`."""
        return cls.from_dict(read_json(path, "curve"), source=str(path))


def nodes_needed(curve: Curve, level: float) -> int | None:
    """The smallest size on the curve's grid (in nodes) whose faithfulness is at least ``level``; None if
    no point reaches it. An upper bound on the smallest such circuit: sizes between grid points are not tried."""
    sizes = [s for s, f in zip(curve.sizes_nodes, curve.faithfulness, strict=True) if f >= level]
    return min(sizes) if sizes else None


def edges_needed(curve: Curve, level: float) -> int | None:
    """The smallest size in edges whose faithfulness is at least ``level``; None if no point reaches it."""
    sizes = [s for s, f in zip(curve.sizes_edges, curve.faithfulness, strict=True) if f >= level]
    return min(sizes) if sizes else None


def span_footprint(nodes: Sequence[str], positional: Any) -> int:
    """How many nodes of a positional (token- or span-level) graph a set of nodes stands for.

    A position-agnostic node ``site/*/i`` keeps feature ``i`` live at every position, so it counts as
    all the nodes ``site/p/i`` of ``positional`` (a networkx graph of the same task, attributed per
    span or token; only positions where the feature has an effect are nodes there); a positional node
    counts once. This puts agnostic and position-aware circuits on one scale, as position-aware EAP
    compares them: an agnostic circuit of k nodes is as large as the k' span nodes it keeps live.
    """
    by_feature: dict[tuple[str, Any], int] = {}
    for node in positional:
        if node == METRIC:
            continue
        site, _, index = parse_node_id(str(node))
        by_feature[(site, index)] = by_feature.get((site, index), 0) + 1
    total = 0
    for node in nodes:
        if node == METRIC:
            continue
        site, position, index = parse_node_id(str(node))
        total += by_feature.get((site, index), 0) if position == AGNOSTIC else 1
    return total
