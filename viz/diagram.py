"""Graphviz diagrams of a circuit: one row per sublayer, one column per token position or span.

Layout. Rows run bottom to top: ``embed``; then, per layer, ``attn``, ``mlp`` or ``transcoder``,
``resid``; the ``metric`` on top (only rows that hold a node are drawn). Columns are the graph's
positions, left to right in the order of ``G.graph["position_labels"]`` (the example's tokens for a
token-level graph, the span names for a schema-level graph); a position-agnostic graph has a single
column. Several nodes in one cell are laid out side by side, the largest ``|effect|`` first, wrapping
onto sub-rows. Node coordinates are computed here and pinned (Graphviz ``neato`` layout with fixed
``pos``), so rows and columns stay aligned however the edges run. Edges are straight lines drawn
beneath the nodes (``to_dot(..., splines="true")`` routes them around the nodes instead, at a cost
of seconds for larger graphs).

Styling. Fill is blue for a positive effect and red for a negative one, its intensity proportional to
``|effect|`` over the largest ``|effect|`` of the graph's non-metric nodes. Features are boxes
labelled with their index and (truncated) ``label``; error nodes are triangles labelled ``ε``; the
metric is a diamond; a ``group`` node (nodes left out of a drawing of a large circuit) is a dashed
box "+N" whose tooltip lists its members' ids. Edges are blue (positive) or red (negative) with a pen width proportional to
``|effect|``. Every node's id is its Graphviz name, so it is the ``<title>`` and the ``id`` of its
``<g>`` element in the SVG.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from viz._common import (
    METRIC_ID,
    NodeInfo,
    all_node_info,
    atomic_write_bytes,
    atomic_write_text,
    edge_effect,
    row_key,
    truncate,
)

logger = logging.getLogger(__name__)

POSITIVE_RGB = (33, 102, 172)  # blue
NEGATIVE_RGB = (178, 24, 43)  # red
ZERO_FILL = "#eeeeee"
FONT = "Helvetica,Arial,sans-serif"

SLOT_W = 1.05  # inches per node slot, horizontally
SLOT_H = 0.66  # inches per node slot, vertically
NODE_W = 0.9
NODE_H = 0.46
COL_GAP = 0.45
ROW_GAP = 0.42
LABEL_CHARS = 13
DOT_TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# Colours and quoting
# --------------------------------------------------------------------------------------------


def _mix(rgb: tuple[int, int, int], strength: float) -> str:
    """``rgb`` mixed with white: ``strength`` 0 gives white, 1 gives ``rgb``; as ``#rrggbb``."""
    s = min(max(strength, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * s) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def effect_fill(effect: float, max_abs: float) -> str:
    """Fill colour of a node: blue if ``effect > 0``, red if ``< 0``, grey if zero.

    The intensity grows with ``|effect| / max_abs`` from a light tint (so that even the weakest
    node keeps its sign's hue) to the full colour.
    """
    if effect == 0 or not math.isfinite(effect):
        return ZERO_FILL
    frac = abs(effect) / max_abs if max_abs > 0 else 1.0
    rgb = POSITIVE_RGB if effect > 0 else NEGATIVE_RGB
    return _mix(rgb, 0.15 + 0.85 * min(frac, 1.0))


def _font_colour(effect: float, max_abs: float) -> str:
    """Black text on light fills, white text on dark ones."""
    frac = abs(effect) / max_abs if max_abs > 0 else 1.0
    return "white" if effect != 0 and 0.15 + 0.85 * min(frac, 1.0) > 0.6 else "black"


def _edge_style(effect: float, max_abs: float) -> tuple[str, float]:
    """Colour (with alpha) and pen width of an edge."""
    frac = min(abs(effect) / max_abs, 1.0) if max_abs > 0 else 1.0
    rgb = POSITIVE_RGB if effect >= 0 else NEGATIVE_RGB
    alpha = round(255 * (0.35 + 0.6 * frac))
    colour = "#{:02x}{:02x}{:02x}{:02x}".format(*rgb, alpha)
    return colour, round(0.6 + 3.4 * frac, 2)


def _quote(text: str) -> str:
    """A DOT quoted string whose label text shows ``text`` literally.

    Backslashes are doubled (Graphviz would otherwise read escapes such as ``\\n`` or ``\\N``
    in labels) and double quotes escaped; newlines become DOT's centred line break.
    """
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    body = body.replace("\r\n", "\n").replace("\n", "\\n")
    return f'"{body}"'


def _quote_name(name: str) -> str:
    """A DOT quoted identifier for a node name (only double quotes need escaping)."""
    return '"' + name.replace('"', '\\"') + '"'


def _attrs(**attrs: object) -> str:
    """A DOT attribute list; values are quoted, except those already starting with ``<`` or ``"``."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        text = str(value)
        if isinstance(value, float):
            text = f"{value:.4g}"
        if not (text.startswith("<") and text.endswith(">")) and not text.startswith(
            '"'
        ):
            text = _quote(text)
        parts.append(f"{key}={text}")
    return "[" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
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


def _columns(graph: nx.DiGraph, infos: Sequence[NodeInfo]) -> _Columns:
    """Column labels and the position -> column map for a graph."""
    mode = graph.graph.get("positions")
    labels = [str(x) for x in (graph.graph.get("position_labels") or [])]
    positions = [
        _pos_key(i.position)
        for i in infos
        if i.kind != "metric" and i.position is not None
    ]

    if mode == "agnostic" or not positions or all(p == "*" for p in positions):
        return _Columns(["all positions"], {p: 0 for p in positions})

    if mode == "token" or all(isinstance(p, int) for p in positions):
        ints = sorted({p for p in positions if isinstance(p, int)})
        others = sorted({str(p) for p in positions if not isinstance(p, int)})
        n_tok = max([len(labels)] + [p + 1 for p in ints])
        col_labels = [
            f"{_show_token(labels[i]) if i < len(labels) else ''}\n[{i}]"
            for i in range(n_tok)
        ]
        index: dict[object, int] = {i: i for i in range(n_tok)}
        for name in others:
            index[name] = len(col_labels)
            col_labels.append(name)
        return _Columns(col_labels, index)

    # Schema spans: the order of position_labels first, then any other names as they come.
    order = list(dict.fromkeys(labels))
    for p in positions:
        if str(p) not in order:
            order.append(str(p))
    index = {name: i for i, name in enumerate(order)}
    index.update({_pos_key(name): i for i, name in enumerate(order)})
    return _Columns(order, index)


def _show_token(token: str) -> str:
    """A token as a column header: leading/trailing spaces made visible, long tokens cut."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t")
    if shown != shown.strip(" ") or shown == "":
        shown = shown.replace(" ", "␣")
    return truncate(shown, 14)


@dataclass(frozen=True)
class _Layout:
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


def _layout(infos: Sequence[NodeInfo], columns: _Columns) -> _Layout:
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

    col_x: list[float] = []
    x = 0.0
    for c in range(n_cols):
        col_x.append(x + col_w[c] / 2)
        x += col_w[c] + COL_GAP
    right = x - COL_GAP

    row_y: list[float] = []
    y = 0.0
    for r in range(len(rows)):
        height = sub_rows[r] * SLOT_H
        row_y.append(y + height / 2)
        y += height + ROW_GAP
    top = y - ROW_GAP

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

    return _Layout(
        pos=pos,
        rows=[(key, row_y[r]) for r, key in enumerate(rows)],
        separators=[
            row_y[r] + sub_rows[r] * SLOT_H / 2 + ROW_GAP / 2
            for r in range(len(rows) - 1)
        ],
        cols=[(columns.labels[c], col_x[c]) for c in range(n_cols)],
        bottom=0.0,
        top=top,
        left=0.0,
        right=right,
    )


# --------------------------------------------------------------------------------------------
# DOT text
# --------------------------------------------------------------------------------------------


def _node_label(info: NodeInfo) -> str:
    """Text inside a node: ε for errors, the feature index and label for features."""
    if info.kind == "error":
        return "ε"
    if info.kind == "metric":
        return "metric"
    if info.kind == "group":
        return f"+{len(info.members)} more\nΣ {info.effect:+.2g}"
    head = (
        f"#{info.feature}"
        if info.feature is not None
        else truncate(info.id, LABEL_CHARS)
    )
    return f"{head}\n{truncate(info.label, LABEL_CHARS)}" if info.label else head


def _tooltip(info: NodeInfo) -> str:
    """Hover text: id, effect, full label; for a group, every member id."""
    if info.kind == "group":
        return (
            f"{len(info.members)} nodes not drawn (sum of effects {info.effect:+.4g}):\n"
            + "\n".join(info.members)
        )
    text = f"{info.id}\neffect = {info.effect:+.4g}"
    return f"{text}\n{info.label}" if info.label else text


def _node_stmt(info: NodeInfo, xy: tuple[float, float], max_abs: float) -> str:
    """One node statement with its pinned position, shape and colours."""
    effect_scale = max(max_abs, abs(info.effect)) if info.kind == "metric" else max_abs
    common = {
        "pos": f"{xy[0]:.3f},{xy[1]:.3f}!",
        "fillcolor": effect_fill(info.effect, effect_scale),
        "fontcolor": _font_colour(info.effect, effect_scale),
        "label": _node_label(info),
        "tooltip": _tooltip(info),
    }
    if info.kind == "error":
        shape = {
            "shape": "triangle",
            "width": "0.62",
            "height": "0.5",
            "fontsize": "11",
        }
    elif info.kind == "metric":
        shape = {"shape": "diamond", "width": "1.0", "height": "0.6", "fontsize": "10"}
    elif info.kind == "group":
        common["fillcolor"] = ZERO_FILL
        common["fontcolor"] = "#333333"
        shape = {
            "shape": "box",
            "style": "filled,dashed",
            "width": f"{NODE_W}",
            "height": f"{NODE_H}",
            "fontsize": "8",
        }
    else:
        shape = {
            "shape": "box",
            "width": f"{NODE_W}",
            "height": f"{NODE_H}",
            "fontsize": "8",
        }
    # The SVG <g> of the node gets class "node feature" / "node error" / "node metric".
    return (
        f"  {_quote_name(info.id)} {_attrs(**shape, **common, **{'class': info.kind})};"
    )


def _legend_label(max_node: float, max_edge: float) -> str:
    """An HTML-like table explaining colours, shapes and scales."""
    pos_full, pos_light = _mix(POSITIVE_RGB, 1.0), _mix(POSITIVE_RGB, 0.3)
    neg_full, neg_light = _mix(NEGATIVE_RGB, 1.0), _mix(NEGATIVE_RGB, 0.3)
    rows = [
        '<TR><TD COLSPAN="3" ALIGN="LEFT"><B>Legend</B></TD></TR>',
        (
            f'<TR><TD BGCOLOR="{pos_light}" WIDTH="14"></TD><TD BGCOLOR="{pos_full}" WIDTH="14"></TD>'
            '<TD ALIGN="LEFT">positive effect</TD></TR>'
        ),
        (
            f'<TR><TD BGCOLOR="{neg_light}" WIDTH="14"></TD><TD BGCOLOR="{neg_full}" WIDTH="14"></TD>'
            '<TD ALIGN="LEFT">negative effect</TD></TR>'
        ),
        f'<TR><TD COLSPAN="3" ALIGN="LEFT">node shade: |effect| / {max_node:.3g}</TD></TR>',
        '<TR><TD COLSPAN="2">▭</TD><TD ALIGN="LEFT">feature (#index, label)</TD></TR>',
        '<TR><TD COLSPAN="2">▲</TD><TD ALIGN="LEFT">error node (ε)</TD></TR>',
        '<TR><TD COLSPAN="2">◆</TD><TD ALIGN="LEFT">metric</TD></TR>',
        '<TR><TD COLSPAN="2">+N</TD><TD ALIGN="LEFT">nodes not drawn (dashed)</TD></TR>',
        (
            f'<TR><TD COLSPAN="2"><FONT COLOR="{pos_full}">→</FONT> <FONT COLOR="{neg_full}">→'
            f'</FONT></TD><TD ALIGN="LEFT">edge sign; width: |effect| / {max_edge:.3g}</TD></TR>'
        ),
    ]
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">'
        + "".join(rows)
        + "</TABLE>>"
    )


def _title_text(graph: nx.DiGraph, title: str | None) -> str:
    """Title line plus a line naming task, method, model and position mode."""
    attrs = graph.graph
    details = [
        f"{key}: {attrs[key]}"
        for key in ("task", "method", "model", "positions")
        if attrs.get(key) not in (None, "")
    ]
    lines = [title] if title else []
    if details:
        lines.append("   ".join(details))
    return "\n".join(lines)


def _row_label(key: tuple[int, int, str]) -> str:
    """Row header: the site name."""
    return key[2]


def _max_abs(values: Iterable[float]) -> float:
    """Largest absolute value (0.0 for none)."""
    return max((abs(v) for v in values), default=0.0)


def to_dot(G: nx.DiGraph, title: str | None = None, *, splines: str = "line") -> str:
    """The DOT text of a circuit diagram (see the module docstring for the layout).

    Args:
        G: a circuit graph following the contract in ``viz`` (node ids and attributes as
            documented there; missing attributes are inferred from the ids).
        title: optional first line of the diagram's caption; a second line names the graph's
            task, method, model and position mode when those graph attributes are set.
        splines: Graphviz ``splines`` value for the edges. ``"line"`` (straight edges) renders
            in well under a second for hundreds of nodes; ``"true"`` routes curved edges around
            the nodes, which reads better for small circuits but takes seconds beyond ~50 nodes.

    Returns:
        DOT source that Graphviz renders with its ``neato`` engine (set in the text, so
        ``dot -Tsvg file.dot`` works).
    """
    infos = all_node_info(G)
    columns = _columns(G, infos)
    layout = (
        _layout(infos, columns)
        if infos
        else _Layout({}, [], [], [], 0.0, 0.0, 0.0, 0.0)
    )
    max_node = _max_abs(i.effect for i in infos if i.kind not in ("metric", "group"))
    max_edge = _max_abs(edge_effect(G, u, v) for u, v in G.edges)

    lines = [
        "digraph circuit {",
        "  "
        + " ".join(
            f"{k}={v};"
            for k, v in {
                "layout": "neato",
                "splines": _quote(splines),
                "overlap": "true",
                "outputorder": "edgesfirst",
                "bgcolor": "white",
                "pad": "0.3",
                "labelloc": "t",
                "fontname": _quote(FONT),
                "fontsize": "14",
            }.items()
        ),
    ]
    caption = _title_text(G, title)
    if caption:
        lines.append(f"  label={_quote(caption)};")
    # id="\N": Graphviz substitutes each node's name, so the SVG <g> carries the node id.
    node_defaults = _attrs(
        style="filled", fixedsize="true", fontname=FONT, penwidth="0.8", color="#555555"
    )
    lines.append('  node [id="\\N", ' + node_defaults[1:] + ";")
    lines.append("  edge " + _attrs(arrowsize="0.5", arrowhead="vee") + ";")

    # Row headers on the left, column headers below and (for tall diagrams) above the grid.
    decoration = " ".join(
        f"{k}={v}"
        for k, v in dict(
            shape="plaintext",
            style="solid",
            fixedsize="false",
            **{"class": "decoration"},
        ).items()
    )
    for key, y in layout.rows:
        name = f"__row__/{key[2]}"
        lines.append(
            f'  {_quote_name(name)} [{decoration}, fontsize=11, fontcolor="#333333", '
            f'pos="{layout.left - 1.0:.3f},{y:.3f}!", label={_quote(_row_label(key))}];'
        )
    # Faint lines between rows, drawn as edges between invisible end points.
    for k, y in enumerate(layout.separators):
        ends = [f"__sep__/{k}/a", f"__sep__/{k}/b"]
        for name, x in zip(ends, (layout.left - 1.5, layout.right + 0.2)):
            lines.append(
                f"  {_quote_name(name)} [shape=point, style=invis, width=0.01, class=decoration, "
                f'pos="{x:.3f},{y:.3f}!"];'
            )
        lines.append(
            f"  {_quote_name(ends[0])} -> {_quote_name(ends[1])} "
            '[dir=none, color="#d0d0d0", penwidth=0.6, style=dashed, class=decoration];'
        )
    header_rows = [layout.bottom - 0.62]
    if len(layout.rows) > 6:
        header_rows.append(layout.top + 0.62)
    for c, (label, x) in enumerate(layout.cols):
        for h, y in enumerate(header_rows):
            name = f"__col__/{c}/{h}"
            lines.append(
                f'  {_quote_name(name)} [{decoration}, fontsize=11, fontcolor="#222222", '
                f'pos="{x:.3f},{y:.3f}!", label={_quote(label)}];'
            )
    if infos:
        lines.append(
            f"  {_quote_name('__legend__')} [{decoration}, fontsize=9, "
            f'pos="{layout.right + 1.9:.3f},{max(layout.top - 0.9, 0.0):.3f}!", '
            f"label={_legend_label(max_node, max_edge)}];"
        )

    for info in infos:
        lines.append(_node_stmt(info, layout.pos[info.id], max_node))

    # Strongest edges drawn last so that they stay on top.
    edges = sorted(G.edges, key=lambda e: abs(edge_effect(G, *e)))
    for u, v in edges:
        effect = edge_effect(G, u, v)
        colour, width = _edge_style(effect, max_edge)
        edge_id = f"{u}->{v}"
        lines.append(
            f"  {_quote_name(str(u))} -> {_quote_name(str(v))} "
            + _attrs(
                id=edge_id,
                color=colour,
                **{"class": "positive" if effect >= 0 else "negative"},
                penwidth=f"{width}",
                tooltip=f"{u} -> {v}\neffect = {effect:+.4g}",
            )
            + ";"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def _run_dot(dot_text: str, fmt: str) -> bytes:
    """Render DOT text to ``fmt`` bytes with the ``dot`` program."""
    exe = shutil.which("dot")
    if exe is None:
        raise FileNotFoundError("Graphviz's `dot` program is not on the PATH")
    with tempfile.TemporaryDirectory(prefix="viz-dot-") as tmp:
        src = Path(tmp) / "graph.dot"
        src.write_text(dot_text, encoding="utf-8")
        proc = subprocess.run(
            [exe, f"-T{fmt}", str(src)],
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"dot -T{fmt} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:500]}"
        )
    return proc.stdout


def to_svg(G: nx.DiGraph, title: str | None = None) -> str | None:
    """The diagram as SVG text, or None (with a logged warning) when ``dot`` is absent."""
    if not dot_available():
        logger.warning(
            "Graphviz `dot` not found: no SVG diagram (install graphviz to get one)"
        )
        return None
    return _run_dot(to_dot(G, title), "svg").decode("utf-8")


def render(
    G: nx.DiGraph,
    out_stem: str | Path,
    formats: Sequence[str] = ("svg", "png"),
    title: str | None = None,
) -> dict[str, Path]:
    """Write the diagram next to ``out_stem``: always ``out_stem.dot``, plus each of ``formats``.

    The other formats need Graphviz's ``dot`` program; when it is missing (or fails) a warning
    is logged and only the files that could be made are written. All writes are atomic.

    Args:
        G: the circuit graph.
        out_stem: output path without suffix (``runs/ioi/circuit`` gives ``circuit.dot``,
            ``circuit.svg``, ``circuit.png``).
        formats: Graphviz output formats to render.
        title: optional caption (see ``to_dot``).

    Returns:
        A map from format (``"dot"`` and each rendered format) to the written path.
    """
    stem = Path(out_stem)
    if stem.suffix in {".dot", ".svg", ".png", ".pdf"}:
        stem = stem.with_suffix("")
    dot_text = to_dot(G, title)
    written: dict[str, Path] = {
        "dot": atomic_write_text(stem.with_name(stem.name + ".dot"), dot_text)
    }
    wanted = [f for f in formats if f != "dot"]
    if not wanted:
        return written
    if not dot_available():
        logger.warning(
            "Graphviz `dot` not found: wrote %s only (install graphviz for %s)",
            written["dot"],
            ", ".join(wanted),
        )
        return written
    for fmt in wanted:
        try:
            data = _run_dot(dot_text, fmt)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            logger.warning("Could not render the diagram as %s: %s", fmt, err)
            continue
        written[fmt] = atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), data)
    return written


__all__ = ["METRIC_ID", "dot_available", "effect_fill", "render", "to_dot", "to_svg"]
