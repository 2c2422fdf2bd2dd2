"""The diagram's grid: one row per sublayer, one column per token position or span.

:func:`columns_of` decides the columns (the graph's positions, in the order of
``G.graph["position_labels"]``; one column for a position-agnostic graph) and :func:`grid_layout` the
pinned coordinates (inches) of every node and of the row and column headers. Several nodes in one
cell are laid out side by side, the largest ``|effect|`` first, wrapping onto sub-rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx

from viz._common import NodeInfo, row_key, truncate

SLOT_W = 1.05  # inches per node slot, horizontally
SLOT_H = 0.66  # inches per node slot, vertically
COL_GAP = 0.45
ROW_GAP = 0.42


@dataclass(frozen=True)
class Columns:
    """The diagram's columns: their labels and which column each position goes to."""

    labels: list[str]
    index: dict[object, int]

    def of(self, info: NodeInfo) -> int:
        """Column of a node; the metric and unknown positions go to the last column."""
        if info.kind == "metric" or info.position is None:
            return len(self.labels) - 1
        return self.index.get(_pos_key(info.position), len(self.labels) - 1)


def _pos_key(position: object) -> object:
    """Positions compared as ints when they look like ints (``5`` and ``"5"`` are one column)."""
    if isinstance(position, str) and position.isdigit():
        return int(position)
    return position


def columns_of(graph: nx.DiGraph, infos: Sequence[NodeInfo]) -> Columns:
    """Column labels and the position -> column map for a graph."""
    mode = graph.graph.get("positions")
    labels = [str(x) for x in (graph.graph.get("position_labels") or [])]
    positions = [_pos_key(i.position) for i in infos if i.kind != "metric" and i.position is not None]

    if mode == "agnostic" or not positions or all(p == "*" for p in positions):
        return Columns(["all positions"], {p: 0 for p in positions})

    if mode == "token" or all(isinstance(p, int) for p in positions):
        ints = sorted({p for p in positions if isinstance(p, int)})
        others = sorted({str(p) for p in positions if not isinstance(p, int)})
        n_tok = max([len(labels)] + [p + 1 for p in ints])
        col_labels = [f"{_show_token(labels[i]) if i < len(labels) else ''}\n[{i}]" for i in range(n_tok)]
        index: dict[object, int] = {i: i for i in range(n_tok)}
        for name in others:
            index[name] = len(col_labels)
            col_labels.append(name)
        return Columns(col_labels, index)

    # Schema spans: the order of position_labels first, then any other names as they come.
    order = list(dict.fromkeys(labels))
    for p in positions:
        if str(p) not in order:
            order.append(str(p))
    index = {name: i for i, name in enumerate(order)}
    index.update({_pos_key(name): i for i, name in enumerate(order)})
    return Columns(order, index)


def _show_token(token: str) -> str:
    """A token as a column header: leading/trailing spaces made visible, long tokens cut."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t")
    if shown != shown.strip(" ") or shown == "":
        shown = shown.replace(" ", "␣")
    return truncate(shown, 14)


@dataclass(frozen=True)
class Layout:
    """Pinned coordinates (inches) of nodes and decorations."""

    pos: dict[str, tuple[float, float]]
    rows: list[tuple[tuple[int, int, str], float]]  # row key, centre y
    separators: list[float]  # y of the lines between adjacent rows
    cols: list[tuple[str, float]]  # label, centre x
    bottom: float
    top: float
    left: float
    right: float


def _cell_order(info: NodeInfo) -> tuple[int, float, str]:
    """Order inside one cell: features, then error nodes, then groups; larger |effect| first."""
    return ({"error": 1, "group": 2}.get(info.kind, 0), -abs(info.effect), info.id)


def _centres(sizes: Sequence[float], gap: float) -> tuple[list[float], float]:
    """Centres of consecutive bands of the given sizes with ``gap`` between them, from 0; and where the last ends."""
    centres: list[float] = []
    at = 0.0
    for size in sizes:
        centres.append(at + size / 2)
        at += size + gap
    return centres, at - gap


def grid_layout(infos: Sequence[NodeInfo], columns: Columns) -> Layout:
    """Grid coordinates: rows by sublayer, columns by position, cells wrapped into sub-rows."""
    rows = sorted({row_key(i) for i in infos})
    row_index = {key: r for r, key in enumerate(rows)}
    n_cols = len(columns.labels)

    cells: dict[tuple[int, int], list[NodeInfo]] = defaultdict(list)
    for info in infos:
        cells[row_index[row_key(info)], columns.of(info)].append(info)
    for members in cells.values():
        members.sort(key=_cell_order)

    # Each column is as wide as its fullest cell, wrapped at about a 2:1 width:height ratio.
    wrap = []
    for c in range(n_cols):
        most = max((len(v) for (r, cc), v in cells.items() if cc == c), default=1)
        wrap.append(max(1, min(most, max(4, math.ceil(math.sqrt(2 * most))), 16)))
    col_w = [
        max(
            wrap[c] * SLOT_W,
            0.12 * max(len(line) for line in columns.labels[c].split("\n")) + 0.3,
        )
        for c in range(n_cols)
    ]
    sub_rows = [
        max(
            (math.ceil(len(v) / wrap[cc]) for (rr, cc), v in cells.items() if rr == r),
            default=1,
        )
        for r in range(len(rows))
    ]

    col_x, right = _centres(col_w, COL_GAP)
    row_y, top = _centres([sub_rows[r] * SLOT_H for r in range(len(rows))], ROW_GAP)

    pos: dict[str, tuple[float, float]] = {}
    for (r, c), members in cells.items():
        w = wrap[c]
        n_sub = math.ceil(len(members) / w)
        for i, info in enumerate(members):
            j, k = divmod(i, w)
            in_row = min(w, len(members) - j * w)
            px = col_x[c] + (k - (in_row - 1) / 2) * SLOT_W
            py = row_y[r] + ((n_sub - 1) / 2 - j) * SLOT_H
            pos[info.id] = (px, py)

    return Layout(
        pos=pos,
        rows=[(key, row_y[r]) for r, key in enumerate(rows)],
        separators=[row_y[r] + sub_rows[r] * SLOT_H / 2 + ROW_GAP / 2 for r in range(len(rows) - 1)],
        cols=[(columns.labels[c], col_x[c]) for c in range(n_cols)],
        bottom=0.0,
        top=top,
        left=0.0,
        right=right,
    )


EMPTY_LAYOUT = Layout({}, [], [], [], 0.0, 0.0, 0.0, 0.0)
