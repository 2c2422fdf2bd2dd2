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

A context's tokens are shown as the tokenizer decodes them (``spacing``): tokens that carry their
own whitespace (byte-level BPE tokens decoded one at a time, ``" Mary"``) are put side by side, and
tokens that carry none (a word-level tokenizer such as the toy model's) get a space between them.
``spacing="auto"`` (the default) tells the two apart by looking at every token of every context: if
any of them starts or ends with whitespace the tokens carry their spacing, otherwise they do not.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from viz import diagram, plots
from viz._common import NodeInfo, all_node_info, atomic_write_text, count_nodes

logger = logging.getLogger(__name__)

#: Header fields shown first, in this order (taken from ``metadata``, else from ``graph.graph``).
HEADER_KEYS = ("task", "model", "dictionaries", "method", "positions", "n_layers")

#: How the tokens of a context are joined (see the module docstring).
SPACINGS = ("auto", "words", "pieces")

_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)

_CSS = """
:root { --blue: #2166ac; --red: #b2182b; --ink: #1f2328; --muted: #59636e; --line: #d8dee4; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: var(--ink); background: #fff; }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: #f6f8fa; }
h1 { margin: 0 0 8px; font-size: 22px; }
h2 { font-size: 17px; margin: 0 0 10px; }
main { padding: 8px 28px 40px; }
section { margin: 22px 0 30px; }
nav a { margin-right: 14px; color: var(--blue); text-decoration: none; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0 0 8px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
             font-size: 13px; word-break: break-word; }
.note { color: var(--muted); font-style: italic; }
.figure { border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow: auto;
          background: #fff; }
.figure.fit svg { max-width: 100%; height: auto; }
.diagram svg g.node:not(.decoration) { cursor: pointer; }
.diagram svg g.node.selected polygon { stroke: #f0a000; stroke-width: 3px; }
button { font: inherit; font-size: 12px; padding: 2px 10px; margin-bottom: 6px; cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { position: sticky; top: 0; background: #f6f8fa; cursor: pointer; user-select: none;
     white-space: nowrap; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
td.pos { color: var(--blue); }
td.neg { color: var(--red); }
tr.selected td { background: #fff3c4; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border: 1px solid #888;
          vertical-align: baseline; }
.table-wrap { max-height: 640px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
details.contexts { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
details.contexts summary { cursor: pointer; }
details.contexts summary code { font-size: 13px; }
.ctx { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
       margin: 6px 0; line-height: 1.9; }
.ctx .max { color: var(--muted); font-size: 11px; margin-right: 8px; }
.tok { white-space: pre; padding: 1px 0; border-radius: 2px; }
"""

_JS = """
(function () {
  "use strict";
  var table = document.getElementById("node-table");
  if (table) {
    var body = table.tBodies[0];
    var heads = table.tHead.rows[0].cells;
    function sortBy(col, dir) {
      var numeric = heads[col].getAttribute("data-type") === "num";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        var c = numeric ? (parseFloat(x) - parseFloat(y)) : x.localeCompare(y, undefined, {numeric: true});
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
      heads[col].setAttribute("aria-sort", dir);
    }
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var now = th.getAttribute("aria-sort");
        var numeric = th.getAttribute("data-type") === "num";
        var dir = now ? (now === "descending" ? "ascending" : "descending")
                      : (numeric ? "descending" : "ascending");
        sortBy(col, dir);
      });
    });
  }
  var rowsById = {};
  if (table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      rowsById[r.getAttribute("data-node")] = r;
    });
  }
  var selected = [];
  function select(id) {
    selected.forEach(function (el) { el.classList.remove("selected"); });
    selected = [];
    var row = rowsById[id];
    if (row) { row.classList.add("selected"); selected.push(row); }
    var g = document.querySelector(".diagram svg") ? findNode(id) : null;
    if (g) { g.classList.add("selected"); selected.push(g); }
    return row;
  }
  function findNode(id) {
    var nodes = document.querySelectorAll(".diagram svg g.node:not(.decoration)");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute("id") === id) { return nodes[i]; }
    }
    return null;
  }
  document.querySelectorAll(".diagram svg g.node:not(.decoration)").forEach(function (g) {
    g.addEventListener("click", function () {
      var row = select(g.getAttribute("id"));
      if (row) { row.scrollIntoView({block: "center"}); }
    });
  });
  if (table) {
    table.tBodies[0].addEventListener("click", function (ev) {
      var tr = ev.target.closest("tr");
      if (tr && ev.target.tagName !== "A") { select(tr.getAttribute("data-node")); }
    });
  }
  document.querySelectorAll("button[data-toggle-fit]").forEach(function (b) {
    b.addEventListener("click", function () {
      var fig = document.getElementById(b.getAttribute("data-toggle-fit"));
      fig.classList.toggle("fit");
      b.textContent = fig.classList.contains("fit") ? "actual size" : "fit to width";
    });
  });
})();
"""


def _esc(value: object) -> str:
    """HTML-escaped text (quotes included, so it is also safe inside attributes)."""
    return html.escape(str(value), quote=True)


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
    items = "".join(
        f"<dt>{_esc(k)}</dt><dd>{_esc(_show_value(v))}</dd>" for k, v in fields.items()
    )
    nav = (
        '<nav><a href="#diagram">Diagram</a><a href="#curve">Faithfulness</a>'
        '<a href="#nodes">Nodes</a><a href="#contexts">Contexts</a></nav>'
    )
    return f'<header><h1>{_esc(title)}</h1><dl class="meta">{items}</dl>{nav}</header>'


def _diagram_section(graph: nx.DiGraph, diagram_svg: str | None) -> str:
    """The diagram as inline SVG, or a note saying why there is none."""
    svg = diagram_svg
    if svg is None:
        if diagram.dot_available():
            try:
                svg = diagram.to_svg(graph)
            except (RuntimeError, OSError) as err:
                logger.warning("Could not render the diagram for the report: %s", err)
                body = f'<p class="note">The diagram could not be rendered: {_esc(err)}</p>'
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
    cls = "num" + (
        (" pos" if value > 0 else " neg" if value < 0 else "") if signed else ""
    )
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return f'<td class="{cls}" data-v="{value!r}">{_esc(text)}</td>'


def _text_cell(text: str, cls: str = "", inner: str | None = None) -> str:
    """A text table cell with a sortable ``data-v``."""
    attr = f' class="{cls}"' if cls else ""
    return f'<td{attr} data-v="{_esc(text)}">{inner if inner is not None else _esc(text)}</td>'


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
        f'<th data-type="{kind}"'
        + (' aria-sort="descending"' if name == "|effect|" else "")
        + f">{_esc(name)}</th>"
        for name, kind in columns
    )
    rows = []
    for info in sorted(infos, key=lambda i: (-abs(i.effect), i.id)):
        colour = diagram.effect_fill(
            info.effect, max_abs if info.kind != "metric" else abs(info.effect)
        )
        anchor = context_anchor.get(info.id)
        id_html = f'<span class="swatch" style="background:{colour}"></span>' + (
            f'<a href="#{anchor}">{_esc(info.id)}</a>' if anchor else _esc(info.id)
        )
        position = "" if info.position is None else str(info.position)
        rows.append(
            f'<tr data-node="{_esc(info.id)}">'
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


def _token_html(token: str, act: float, max_act: float) -> str:
    """One token shaded by its activation relative to the context's maximum."""
    frac = act / max_act if max_act > 0 and math.isfinite(act) else 0.0
    frac = min(max(frac, 0.0), 1.0)
    shown = token.replace("\n", "↵").replace("\t", "⇥")
    style = f"background: rgba(33, 102, 172, {0.85 * frac:.3f});"
    if frac > 0.6:
        style += " color: #fff;"
    return f'<span class="tok" style="{style}" title="{_esc(f"{act:.4g}")}">{_esc(shown)}</span>'


def token_spacing(contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> str:
    """``"pieces"`` when some token of some context starts or ends with whitespace, else ``"words"``.

    Tokens decoded one at a time by a byte-level BPE tokenizer carry their spaces (``" Mary"``); a
    word-level tokenizer's tokens never do, and need a space put between them.
    """
    for items in (contexts or {}).values():
        for context in items:
            for token in context.get("tokens", []):
                token = str(token)
                if token and (token[0].isspace() or token[-1].isspace()):
                    return "pieces"
    return "words"


def _separator(spacing: str) -> str:
    """What goes between two tokens of a context under ``spacing`` (``"words"`` or ``"pieces"``)."""
    if spacing not in ("words", "pieces"):
        raise ValueError(f"unknown token spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return " " if spacing == "words" else ""


def context_text(tokens: Sequence[str], spacing: str = "words") -> str:
    """A context's tokens as plain text, joined as the report shows them (see :func:`token_spacing`)."""
    return _separator(spacing).join(str(t) for t in tokens)


def _one_context(context: Mapping[str, Any], spacing: str = "words") -> str:
    """One top-activating context as a line of shaded tokens, joined per ``spacing``.

    A separating space stays outside the tokens' shaded spans, so only the tokens are shaded and the
    line can wrap between words.
    """
    tokens = [str(t) for t in context.get("tokens", [])]
    acts = [float(a) for a in context.get("acts", [])]
    acts += [0.0] * (len(tokens) - len(acts))
    finite = [a for a in acts if math.isfinite(a)]
    max_act = float(context.get("max_act", max(finite, default=0.0)))
    scale = max(max(finite, default=0.0), max_act)
    spans = _separator(spacing).join(_token_html(t, a, scale) for t, a in zip(tokens, acts))
    return f'<div class="ctx"><span class="max">max {_esc(f"{max_act:.3g}")}</span>{spans}</div>'


def _contexts_section(
    infos: Sequence[NodeInfo],
    contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    spacing: str = "auto",
) -> tuple[str, dict[str, str]]:
    """Each node's top-activating contexts; also the node id -> anchor map for the table."""
    if spacing != "auto":
        _separator(spacing)  # an unknown spacing is an error, contexts or not
    if not contexts:
        body = '<p class="note">No top-activating contexts were given.</p>'
        return (
            f'<section id="contexts"><h2>Top-activating contexts</h2>{body}</section>',
            {},
        )
    if spacing == "auto":
        spacing = token_spacing(contexts)
    by_id = {i.id: i for i in infos}
    ordered = sorted(
        (n for n in contexts if contexts[n]),
        key=lambda n: (-abs(by_id[n].effect) if n in by_id else 0.0, str(n)),
    )
    anchors = {str(n): f"ctx-{k}" for k, n in enumerate(ordered)}
    blocks = []
    for k, node_id in enumerate(ordered):
        info = by_id.get(str(node_id))
        label = f" — {info.label}" if info is not None and info.label else ""
        effect = f" (effect {info.effect:+.3g})" if info is not None else ""
        items = "".join(_one_context(c, spacing) for c in contexts[node_id])
        blocks.append(
            f'<details class="contexts" id="ctx-{k}"{" open" if k < 3 else ""}>'
            f"<summary><code>{_esc(node_id)}</code>{_esc(label)}{_esc(effect)}</summary>"
            f"{items}</details>"
        )
    return (
        f'<section id="contexts"><h2>Top-activating contexts</h2>{"".join(blocks)}</section>',
        anchors,
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
    contexts_html, anchors = _contexts_section(infos, contexts, spacing)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may be fetched: the policy blocks every load except inline style and script.
        (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        ),
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        _header(title, graph, metadata or {}),
        "<main>",
        _diagram_section(graph, diagram_svg),
        _curve_section(curve),
        _node_table(infos, anchors),
        contexts_html,
        "</main>",
        f"<script>{_JS}</script>",
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
            whitespace) or ``"auto"`` (the default; see :func:`token_spacing`).
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
    return atomic_write_text(path, text)


__all__ = ["SPACINGS", "build_report", "context_text", "token_spacing", "write_report"]
