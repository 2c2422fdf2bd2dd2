"""A self-contained HTML report of one circuit.

One file, no network: the diagram and the curve are inline SVG, the style sheet and the small
script (table sorting, diagram-to-table links, fit/actual-size toggle) are inline, and only the
browser's local fonts are used. Every piece of text that comes from the data is HTML-escaped.

Sections: a header (title, task, model, dictionaries, method and any other metadata), the circuit
diagram (``viz.diagram`` when no SVG is passed and Graphviz's ``dot`` is present; otherwise a note),
the faithfulness/completeness-versus-size plot, a node table sortable by any column (initially by
``|effect|``, largest first) and, when given, each node's top-activating contexts with the tokens
shaded by activation.

The header's node count is the circuit's size, the metric not counted (``viz._common.count_nodes``,
the count ``circuits.graph.ids.count_nodes`` gives and the run's title uses).

The contexts section and its token spacing are :mod:`viz.contexts`; the page's style sheet and
script are :mod:`viz.report_assets`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from viz import diagram, plots
from viz._common import NodeInfo, all_node_info, count_nodes, esc, write_atomic
from viz.contexts import contexts_section
from viz.dot import effect_fill
from viz.report_assets import SCRIPT, STYLE

logger = logging.getLogger(__name__)

#: Header fields shown first, in this order (taken from ``metadata``, else from ``graph.graph``).
HEADER_KEYS = ("task", "model", "dictionaries", "method", "positions", "n_layers")

_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)


def _inline_svg(svg: str) -> str:
    """An SVG document cut down to its ``<svg>`` element (no XML declaration or DOCTYPE)."""
    match = _SVG_START.search(svg)
    return svg[match.start() :] if match else svg


def _show_value(value: Any) -> str:
    """A metadata value as display text."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _header(title: str, graph: nx.DiGraph, metadata: Mapping[str, Any]) -> str:
    """Title and a definition list of the run's metadata."""
    fields: dict[str, Any] = {}
    for key in HEADER_KEYS:
        value = metadata.get(key, graph.graph.get(key))
        if value not in (None, ""):
            fields[key] = value
    fields["nodes / edges"] = f"{count_nodes(graph)} / {graph.number_of_edges()}"
    for key, value in metadata.items():
        if key not in fields and value not in (None, ""):
            fields[key] = value
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(_show_value(v))}</dd>" for k, v in fields.items())
    nav = (
        '<nav><a href="#diagram">Diagram</a><a href="#curve">Faithfulness</a>'
        '<a href="#nodes">Nodes</a><a href="#contexts">Contexts</a></nav>'
    )
    return f'<header><h1>{esc(title)}</h1><dl class="meta">{items}</dl>{nav}</header>'


def _diagram_section(graph: nx.DiGraph, diagram_svg: str | None) -> str:
    """The diagram as inline SVG, or a note saying why there is none."""
    svg = diagram_svg
    if svg is None:
        if diagram.dot_available():
            try:
                svg = diagram.to_svg(graph)
            except (RuntimeError, OSError) as err:
                logger.warning("Could not render the diagram for the report: %s", err)
                body = f'<p class="note">The diagram could not be rendered: {esc(err)}</p>'
                return f'<section id="diagram"><h2>Circuit diagram</h2>{body}</section>'
        else:
            logger.warning("Graphviz `dot` not found: the report has no diagram")
    if not svg:
        body = (
            '<p class="note">No diagram: Graphviz\'s <code>dot</code> program was not found '
            "when this report was written (install graphviz and write the report again).</p>"
        )
    else:
        body = (
            '<button type="button" data-toggle-fit="diagram-figure">actual size</button>'
            '<div class="figure diagram fit" id="diagram-figure">'
            f"{_inline_svg(svg)}</div>"
            '<p class="note">Click a node to find it in the table; hover for its id and effect.</p>'
        )
    return f'<section id="diagram"><h2>Circuit diagram</h2>{body}</section>'


def _curve_section(curve: Mapping[str, Any] | None) -> str:
    """The faithfulness/completeness plot as inline SVG, or a note."""
    if not curve or not plots.normalise_curve(curve).get("nodes"):
        body = '<p class="note">No faithfulness curve was given.</p>'
    else:
        body = f'<div class="figure fit">{plots.curve_svg(curve)}</div>'
    return f'<section id="curve"><h2>Faithfulness and completeness versus size</h2>{body}</section>'


def _num_cell(value: float | None, signed: bool = False) -> str:
    """A numeric table cell with a sortable ``data-v``; blank for None."""
    if value is None:
        return '<td class="num" data-v="-Infinity"></td>'
    cls = "num" + ((" pos" if value > 0 else " neg" if value < 0 else "") if signed else "")
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return f'<td class="{cls}" data-v="{value!r}">{esc(text)}</td>'


def _text_cell(text: str, cls: str = "", inner: str | None = None) -> str:
    """A text table cell with a sortable ``data-v``."""
    attr = f' class="{cls}"' if cls else ""
    return f'<td{attr} data-v="{esc(text)}">{inner if inner is not None else esc(text)}</td>'


def _node_table(infos: Sequence[NodeInfo], context_anchor: Mapping[str, str]) -> str:
    """The node table, rows sorted by |effect| descending."""
    columns = [
        ("id", "text"),
        ("site", "text"),
        ("position", "text"),
        ("feature", "num"),
        ("effect", "num"),
        ("|effect|", "num"),
        ("label", "text"),
    ]
    max_abs = max((abs(i.effect) for i in infos if i.kind != "metric"), default=0.0)
    head = "".join(
        f'<th data-type="{kind}"' + (' aria-sort="descending"' if name == "|effect|" else "") + f">{esc(name)}</th>"
        for name, kind in columns
    )
    rows = []
    for info in sorted(infos, key=lambda i: (-abs(i.effect), i.id)):
        colour = effect_fill(info.effect, max_abs if info.kind != "metric" else abs(info.effect))
        anchor = context_anchor.get(info.id)
        id_html = f'<span class="swatch" style="background:{colour}"></span>' + (
            f'<a href="#{anchor}">{esc(info.id)}</a>' if anchor else esc(info.id)
        )
        position = "" if info.position is None else str(info.position)
        rows.append(
            f'<tr data-node="{esc(info.id)}">'
            + _text_cell(info.id, "id", id_html)
            + _text_cell(info.site)
            + _text_cell(position)
            + _num_cell(float(info.feature) if info.feature is not None else None)
            + _num_cell(info.effect, signed=True)
            + _num_cell(abs(info.effect))
            + _text_cell(info.label)
            + "</tr>"
        )
    table = (
        f'<div class="table-wrap"><table id="node-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    n_metric = sum(1 for i in infos if i.kind == "metric")
    count = f"{len(infos) - n_metric} and the metric" if n_metric else f"{len(infos)}"
    return (
        f'<section id="nodes"><h2>Nodes ({count})</h2>'
        '<p class="note">Click a column header to sort.</p>'
        f"{table}</section>"
    )


def build_report(
    *,
    graph: nx.DiGraph,
    curve: Mapping[str, Any] | None = None,
    title: str = "Circuit report",
    metadata: Mapping[str, Any] | None = None,
    diagram_svg: str | None = None,
    contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    spacing: str = "auto",
) -> str:
    """The report's HTML text (see ``write_report``)."""
    infos = all_node_info(graph)
    contexts_html, anchors = contexts_section(infos, contexts, spacing)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may be fetched: the policy blocks every load except inline style and script.
        (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        ),
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        _header(title, graph, metadata or {}),
        "<main>",
        _diagram_section(graph, diagram_svg),
        _curve_section(curve),
        _node_table(infos, anchors),
        contexts_html,
        "</main>",
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    path: str | os.PathLike[str],
    *,
    graph: nx.DiGraph,
    curve: Mapping[str, Any] | None = None,
    title: str = "Circuit report",
    metadata: Mapping[str, Any] | None = None,
    diagram_svg: str | None = None,
    contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    spacing: str = "auto",
) -> Path:
    """Write one self-contained HTML report (atomically) and return its path.

    Args:
        path: the output ``.html`` file.
        graph: the circuit graph (node ids and attributes as in the ``viz`` contract).
        curve: optional faithfulness curve (see ``viz.plots``).
        title: page title and heading.
        metadata: header fields; ``task``, ``model``, ``dictionaries``, ``method`` come first
            (falling back to the graph's attributes), then every other key.
        diagram_svg: SVG text of the diagram; when None it is rendered with ``viz.diagram`` if
            Graphviz's ``dot`` is present, otherwise the report says that it has no diagram.
        contexts: per node id, a list of ``{"tokens": [str], "acts": [float], "max_act": float}``
            shown with each token shaded by its activation.
        spacing: how a context's tokens are joined: ``"words"`` (a space between tokens: a
            word-level tokenizer), ``"pieces"`` (side by side: the tokens carry their own
            whitespace) or ``"auto"`` (the default; see :func:`viz.contexts.token_spacing`).
    """
    text = build_report(
        graph=graph,
        curve=curve,
        title=title,
        metadata=metadata,
        diagram_svg=diagram_svg,
        contexts=contexts,
        spacing=spacing,
    )
    return write_atomic(path, text)


__all__ = ["build_report", "write_report"]
