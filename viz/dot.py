"""The DOT text of a circuit diagram: colours, shapes, labels, headers, legend and edges.

:func:`to_dot` places every node where :mod:`viz.layout` puts it (pinned ``pos``, Graphviz ``neato``
layout) and styles it: fill blue for a positive effect and red for a negative one, its intensity
proportional to ``|effect|`` over the largest ``|effect|`` of the graph's non-metric nodes
(:func:`effect_fill`); features are boxes labelled with their index and (truncated) ``label``, error
nodes triangles labelled ``ε``, the metric a diamond, a ``group`` node a dashed box "+N". Edges are
blue or red with a pen width proportional to ``|effect|``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import networkx as nx

from viz._common import NodeInfo, all_node_info, edge_effect, truncate
from viz.layout import EMPTY_LAYOUT, Layout, columns_of, grid_layout

POSITIVE_RGB = (33, 102, 172)  # blue
NEGATIVE_RGB = (178, 24, 43)  # red
ZERO_FILL = "#eeeeee"
FONT = "Helvetica,Arial,sans-serif"
NODE_W = 0.9
NODE_H = 0.46
LABEL_CHARS = 13


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
        if not (text.startswith("<") and text.endswith(">")) and not text.startswith('"'):
            text = _quote(text)
        parts.append(f"{key}={text}")
    return "[" + ", ".join(parts) + "]"


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
    head = f"#{info.feature}" if info.feature is not None else truncate(info.id, LABEL_CHARS)
    return f"{head}\n{truncate(info.label, LABEL_CHARS)}" if info.label else head


def _tooltip(info: NodeInfo) -> str:
    """Hover text: id, effect, full label; for a group, every member id."""
    if info.kind == "group":
        return f"{len(info.members)} nodes not drawn (sum of effects {info.effect:+.4g}):\n" + "\n".join(info.members)
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
    return f"  {_quote_name(info.id)} {_attrs(**shape, **common, **{'class': info.kind})};"


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
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


def _title_text(graph: nx.DiGraph, title: str | None) -> str:
    """Title line plus a line naming task, method, model and position mode."""
    attrs = graph.graph
    details = [
        f"{key}: {attrs[key]}" for key in ("task", "method", "model", "positions") if attrs.get(key) not in (None, "")
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


_DECORATION = " ".join(
    f"{k}={v}" for k, v in dict(shape="plaintext", style="solid", fixedsize="false", **{"class": "decoration"}).items()
)


def _preamble(G: nx.DiGraph, title: str | None, splines: str) -> list[str]:
    """The graph, node and edge defaults, and the caption."""
    settings = {
        "layout": "neato",
        "splines": _quote(splines),
        "overlap": "true",
        "outputorder": "edgesfirst",
        "bgcolor": "white",
        "pad": "0.3",
        "labelloc": "t",
        "fontname": _quote(FONT),
        "fontsize": "14",
    }
    lines = ["  " + " ".join(f"{k}={v};" for k, v in settings.items())]
    caption = _title_text(G, title)
    if caption:
        lines.append(f"  label={_quote(caption)};")
    # id="\N": Graphviz substitutes each node's name, so the SVG <g> carries the node id.
    node_defaults = _attrs(style="filled", fixedsize="true", fontname=FONT, penwidth="0.8", color="#555555")
    lines.append('  node [id="\\N", ' + node_defaults[1:] + ";")
    lines.append("  edge " + _attrs(arrowsize="0.5", arrowhead="vee") + ";")
    return lines


def _decorations(layout: Layout) -> list[str]:
    """Row headers on the left, faint lines between rows, column headers below and (for tall diagrams) above."""
    lines = []
    for key, y in layout.rows:
        name = f"__row__/{key[2]}"
        lines.append(
            f'  {_quote_name(name)} [{_DECORATION}, fontsize=11, fontcolor="#333333", '
            f'pos="{layout.left - 1.0:.3f},{y:.3f}!", label={_quote(_row_label(key))}];'
        )
    # The lines between rows are edges between invisible end points.
    for k, y in enumerate(layout.separators):
        ends = [f"__sep__/{k}/a", f"__sep__/{k}/b"]
        for name, x in zip(ends, (layout.left - 1.5, layout.right + 0.2), strict=True):
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
                f'  {_quote_name(name)} [{_DECORATION}, fontsize=11, fontcolor="#222222", '
                f'pos="{x:.3f},{y:.3f}!", label={_quote(label)}];'
            )
    return lines


def _edge_stmts(G: nx.DiGraph, max_edge: float) -> list[str]:
    """One statement per edge, the strongest last so that they are drawn on top."""
    lines = []
    for u, v in sorted(G.edges, key=lambda e: abs(edge_effect(G, *e))):
        effect = edge_effect(G, u, v)
        colour, width = _edge_style(effect, max_edge)
        lines.append(
            f"  {_quote_name(str(u))} -> {_quote_name(str(v))} "
            + _attrs(
                id=f"{u}->{v}",
                color=colour,
                **{"class": "positive" if effect >= 0 else "negative"},
                penwidth=f"{width}",
                tooltip=f"{u} -> {v}\neffect = {effect:+.4g}",
            )
            + ";"
        )
    return lines


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
    layout = grid_layout(infos, columns_of(G, infos)) if infos else EMPTY_LAYOUT
    max_node = _max_abs(i.effect for i in infos if i.kind not in ("metric", "group"))
    max_edge = _max_abs(edge_effect(G, u, v) for u, v in G.edges)
    lines = ["digraph circuit {", *_preamble(G, title, splines), *_decorations(layout)]
    if infos:
        lines.append(
            f"  {_quote_name('__legend__')} [{_DECORATION}, fontsize=9, "
            f'pos="{layout.right + 1.9:.3f},{max(layout.top - 0.9, 0.0):.3f}!", '
            f"label={_legend_label(max_node, max_edge)}];"
        )
    lines.extend(_node_stmt(info, layout.pos[info.id], max_node) for info in infos)
    lines.extend(_edge_stmts(G, max_edge))
    lines.append("}")
    return "\n".join(lines) + "\n"
