"""Tests of the viz package: diagrams, curve plots, the HTML report and the circuit-tracer export.

The graphs are built by hand here (viz depends on no other package of the project). Tests that
need Graphviz's ``dot`` or a headless Chromium skip when those programs are absent; the DOT text
tests always run.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
from _browser import CHROMIUM, browse, dump_dom

import viz
from viz import diagram, export, plots

SVG_NS = "{http://www.w3.org/2000/svg}"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")

SUBLAYER_OF = {
    "attn": "attn",
    "mlp": "mlp",
    "resid": "resid",
    "transcoder": "transcoder",
}


# ------------------------------------------------------------------------------------------
# Hand-made graphs
# ------------------------------------------------------------------------------------------


def _add(
    G: nx.DiGraph,
    site: str,
    pos: int | str,
    index: int | str,
    effect: float,
    label: str = "",
) -> str:
    """Add a feature (int index) or error node (index "err") following the graph contract."""
    if site == "embed":
        layer, sublayer = -1, "embed"
    else:
        layer, sublayer = int(site[1 : site.index(".")]), site.split(".", 1)[1]
    node_id = f"{site}/{pos}/{index}"
    G.add_node(
        node_id,
        site=site,
        layer=layer,
        sublayer=sublayer,
        position=pos,
        feature=None if index == "err" else index,
        kind="error" if index == "err" else "feature",
        effect=effect,
        label=label,
    )
    return node_id


def _add_metric(G: nx.DiGraph, effect: float = 2.5) -> str:
    G.add_node(
        "metric",
        site="metric",
        layer=G.graph["n_layers"],
        sublayer="metric",
        position=None,
        feature=None,
        kind="metric",
        effect=effect,
        label="logit(IO) - logit(S)",
    )
    return "metric"


def token_graph() -> nx.DiGraph:
    """A 2-layer token-level IOI-like circuit: 16 nodes, error nodes, negative effects."""
    tokens = [
        "<bos>",
        "When",
        " Mary",
        " and",
        " John",
        " went",
        ",",
        " John",
        " gave",
        " to",
    ]
    G = nx.DiGraph(
        model="toy-2l",
        dictionaries="toy-saes-v1",
        task="ioi",
        method="ig",
        positions="token",
        position_labels=tokens,
        n_layers=2,
    )
    e_mary = _add(G, "embed", 2, 17, 0.4, "name: Mary")
    e_john = _add(G, "embed", 7, 21, -0.3, "name: John")
    a0 = _add(G, "L0.attn", 7, 5, 0.9, "duplicate token")
    a0e = _add(G, "L0.attn", 7, "err", -0.2)
    m0 = _add(G, "L0.mlp", 2, 301, 0.35, 'quote " and back\\slash <tag>')
    m0b = _add(G, "L0.mlp", 9, 302, -0.6, "")
    r0 = _add(G, "L0.resid", 7, 44, 1.1, "S is repeated")
    r0e = _add(G, "L0.resid", 9, "err", 0.15)
    a1 = _add(G, "L1.attn", 9, 8, 1.6, "moves the indirect object name to the end")
    a1b = _add(G, "L1.attn", 9, 9, -1.2, "negative name mover")
    a1e = _add(G, "L1.attn", 9, "err", 0.05)
    m1 = _add(G, "L1.mlp", 9, 77, 0.7, "")
    r1 = _add(G, "L1.resid", 9, 12, 2.0, "says Mary")
    r1b = _add(G, "L1.resid", 9, 13, -0.8, "says John")
    r1e = _add(G, "L1.resid", 9, "err", -0.4)
    metric = _add_metric(G)
    edges = [
        (e_mary, m0, 0.3),
        (e_john, a0, 0.5),
        (a0e, r0, -0.1),
        (a0, r0, 0.8),
        (m0, a1, 0.4),
        (r0, a1b, 0.6),
        (r0, a1, -0.5),
        (r0e, m1, 0.1),
        (m0b, m1, -0.3),
        (a1, r1, 1.2),
        (a1b, r1b, 0.9),
        (a1e, r1, 0.05),
        (m1, r1, 0.5),
        (r1, metric, 2.0),
        (r1b, metric, -0.8),
        (r1e, metric, -0.4),
    ]
    for u, v, w in edges:
        G.add_edge(u, v, effect=w)
    return G


SPANS = ["Prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]


def schema_graph() -> nx.DiGraph:
    """A schema-level circuit: positions are span names (one contains '+')."""
    G = nx.DiGraph(
        model="toy-2l",
        dictionaries="toy-saes-v1",
        task="ioi",
        method="attribution patching",
        positions="schema",
        position_labels=SPANS,
        n_layers=2,
    )
    io = _add(G, "embed", "IO", 3, 0.5, "IO name")
    s1p = _add(G, "L0.resid", "S1+1", 40, -0.7, "after the subject")
    s2 = _add(G, "L0.attn", "S2", 6, 0.9)
    s2e = _add(G, "L0.attn", "S2", "err", -0.1)
    to = _add(G, "L1.transcoder", "to", 600, 1.3, "name mover")
    toe = _add(G, "L1.transcoder", "to", "err", 0.2)
    metric = _add_metric(G)
    for u, v, w in [
        (io, to, 0.6),
        (s1p, s2, -0.4),
        (s2, to, 0.7),
        (s2e, to, -0.1),
        (to, metric, 1.3),
        (toe, metric, 0.2),
    ]:
        G.add_edge(u, v, effect=w)
    return G


def agnostic_graph() -> nx.DiGraph:
    """A position-agnostic circuit: every position is '*'."""
    G = nx.DiGraph(
        model="toy-2l",
        dictionaries="toy-saes-v1",
        task="sva-simple",
        method="ig",
        positions="agnostic",
        position_labels=[],
        n_layers=2,
    )
    nodes = [
        _add(G, "embed", "*", 1, 0.3),
        _add(G, "L0.mlp", "*", 2, -0.5, "plural subject"),
        _add(G, "L0.mlp", "*", 3, 0.6),
        _add(G, "L0.mlp", "*", "err", 0.1),
        _add(G, "L1.resid", "*", 4, 0.9, "verb number"),
    ]
    metric = _add_metric(G, 1.0)
    for u, v in zip(nodes, [*nodes[1:], metric], strict=True):
        G.add_edge(u, v, effect=0.5 if G.nodes[u]["effect"] > 0 else -0.5)
    return G


ALL_GRAPHS = {"token": token_graph, "schema": schema_graph, "agnostic": agnostic_graph}


# ------------------------------------------------------------------------------------------
# DOT text (always runs)
# ------------------------------------------------------------------------------------------

_NODE_POS = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[.*?pos="([-\d.]+),([-\d.]+)!"', re.MULTILINE)


def _positions(dot_text: str) -> dict[str, tuple[float, float]]:
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in _NODE_POS.finditer(dot_text)}


@pytest.mark.parametrize("kind", sorted(ALL_GRAPHS))
def test_dot_text_has_every_node_with_its_shape(kind: str) -> None:
    G = ALL_GRAPHS[kind]()
    text = viz.to_dot(G, title="A circuit")
    pos = _positions(text)
    for node, data in G.nodes(data=True):
        assert node in pos, node
        stmt = next(line for line in text.splitlines() if line.strip().startswith(f'"{node}" ['))
        shape = {"error": "triangle", "metric": "diamond", "feature": "box"}[data["kind"]]
        assert f'shape="{shape}"' in stmt
        if data["kind"] == "error":
            assert 'label="ε"' in stmt
    for u, v in G.edges:
        assert f'"{u}" -> "{v}"' in text
    assert "A circuit" in text and f"task: {G.graph['task']}" in text


def test_dot_rows_run_bottom_to_top_by_layer_and_sublayer() -> None:
    G = token_graph()
    pos = _positions(viz.to_dot(G))
    order = [
        "embed",
        "L0.attn",
        "L0.mlp",
        "L0.resid",
        "L1.attn",
        "L1.mlp",
        "L1.resid",
        "metric",
    ]
    ys: dict[str, list[float]] = {}
    for node, data in G.nodes(data=True):
        ys.setdefault(data["site"], []).append(pos[node][1])
    for lower, upper in itertools.pairwise(order):
        assert max(ys[lower]) < min(ys[upper]), (lower, upper)


def test_dot_columns_follow_token_positions_and_labels() -> None:
    G = token_graph()
    text = viz.to_dot(G)
    pos = _positions(text)
    # Every token is a column header (with its index); columns are left to right.
    for i, tok in enumerate(G.graph["position_labels"]):
        assert f"[{i}]" in text and tok.strip() in text
    assert pos["embed/2/17"][0] < pos["L0.attn/7/5"][0] < pos["L1.attn/9/8"][0]
    # Nodes of one position share a column, whatever their row.
    col9 = [x for n, (x, _) in pos.items() if G.nodes.get(n, {}).get("position") == 9]
    col7 = [x for n, (x, _) in pos.items() if G.nodes.get(n, {}).get("position") == 7]
    assert max(col7) < min(col9)


def test_dot_schema_columns_are_the_spans_in_order() -> None:
    G = schema_graph()
    text = viz.to_dot(G)
    pos = _positions(text)
    for span in SPANS:
        assert f'label="{span}"' in text
    xs = [
        pos[n][0]
        for n in [
            "embed/IO/3",
            "L0.resid/S1+1/40",
            "L0.attn/S2/6",
            "L1.transcoder/to/600",
        ]
    ]
    assert xs == sorted(xs)


def test_dot_agnostic_graph_has_one_column() -> None:
    text = viz.to_dot(agnostic_graph())
    headers = set(re.findall(r'"__col__/(\d+)/\d+"', text))
    assert headers == {"0"}


def test_dot_escapes_labels() -> None:
    text = viz.to_dot(token_graph())
    assert r"quote \" and back\\\\slash <tag>" in text or r"quote \" and back\\slash" in text


def test_render_without_dot_writes_dot_only(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="viz.diagram"):
        out = viz.render(token_graph(), tmp_path / "circuit")
    assert set(out) == {"dot"}
    assert out["dot"].read_text(encoding="utf-8").startswith("digraph")
    assert not (tmp_path / "circuit.svg").exists()
    assert "dot" in caplog.text
    assert viz.to_svg(token_graph()) is None


# ------------------------------------------------------------------------------------------
# SVG (needs dot)
# ------------------------------------------------------------------------------------------


def _svg_nodes(svg_text: str) -> dict[str, ET.Element]:
    """Circuit-node <g> elements of a Graphviz SVG by id, checking that <title> says the same
    (row/column headers and the legend carry the class "decoration" and are left out)."""
    root = ET.fromstring(svg_text)
    found: dict[str, ET.Element] = {}
    for g in root.iter(f"{SVG_NS}g"):
        classes = (g.get("class") or "").split()
        if "node" not in classes or "decoration" in classes:
            continue
        title = g.find(f"{SVG_NS}title")
        assert title is not None and title.text == g.get("id")
        found[g.get("id", "")] = g
    return found


def _rgb(colour: str) -> tuple[int, int, int]:
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", colour), colour
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _polygon_points(g: ET.Element) -> tuple[str, int]:
    """Fill colour and number of distinct corners of a node's polygon."""
    polygon = next(g.iter(f"{SVG_NS}polygon"))
    points = polygon.get("points", "").split()
    if points[0] == points[-1]:
        points = points[:-1]
    return polygon.get("fill", ""), len(points)


@needs_dot
@pytest.mark.parametrize("kind", sorted(ALL_GRAPHS))
def test_svg_nodes_by_id_with_colour_and_shape(kind: str, tmp_path: Path) -> None:
    G = ALL_GRAPHS[kind]()
    out = viz.render(G, tmp_path / "circuit", formats=("svg",))
    svg_nodes = _svg_nodes(out["svg"].read_text(encoding="utf-8"))
    for node, data in G.nodes(data=True):
        assert node in svg_nodes, node
        assert data["kind"] in svg_nodes[node].get("class", "").split()
        fill, corners = _polygon_points(svg_nodes[node])
        r, _, b = _rgb(fill)
        if data["effect"] > 0:
            assert b > r, (node, fill)
        elif data["effect"] < 0:
            assert r > b, (node, fill)
        assert corners == (3 if data["kind"] == "error" else 4), (node, corners)


@needs_dot
def test_svg_intensity_grows_with_effect(tmp_path: Path) -> None:
    G = token_graph()
    svg_nodes = _svg_nodes(viz.to_svg(G) or "")
    weak, strong = (
        _rgb(_polygon_points(svg_nodes["L0.resid/9/err"])[0]),
        _rgb(_polygon_points(svg_nodes["L1.resid/9/12"])[0]),
    )
    assert sum(strong) < sum(weak)  # darker = more intense


@needs_dot
def test_render_writes_svg_png_and_dot(tmp_path: Path) -> None:
    out = viz.render(token_graph(), tmp_path / "circuit")
    assert set(out) == {"dot", "svg", "png"}
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    edge_ids = {
        g.get("id")
        for g in ET.parse(out["svg"]).getroot().iter(f"{SVG_NS}g")
        if "edge" in (g.get("class") or "").split()
    }
    assert "L1.resid/9/12->metric" in edge_ids
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# ------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------

CURVE = {
    "nodes": [0, 2, 5, 11, 16],
    "edges": [0, 1, 6, 12, 16],
    "faithfulness": [0.0, 0.31, 0.62, 0.9, 1.0],
    "completeness": [1.0, 0.7, 0.35, 0.08, 0.0],
    "series": {
        "attribution patching": {
            "nodes": [0, 3, 8, 16],
            "faithfulness": [0.0, 0.2, 0.5, 1.0],
        }
    },
}


def test_plot_curve_png(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    path = viz.plot_curve(CURVE, tmp_path / "curve.png")
    data = path.read_bytes()
    assert path == tmp_path / "curve.png" and len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[1] > 2 * image.shape[0]  # two panels side by side (nodes, edges)
    one = viz.plot_curve(
        {k: CURVE[k] for k in ("nodes", "faithfulness", "completeness")},
        tmp_path / "one.png",
    )
    assert mpimg.imread(one).shape[1] < image.shape[1]


def test_plot_curve_reads_the_curve_json_layout(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    curve_json = {
        "schema_version": 1,
        "sizes_nodes": [1, 4, 16],
        "sizes_edges": [0, 3, 15],
        "faithfulness": [0.1, 0.6, 1.0],
        "completeness": None,
        "cpr": 1.2,
        "cmd": 0.3,
        "metadata": {"edge_curve": {"sizes_edges": [1, 5, 15], "faithfulness": [0.2, 0.7, 1.0]}},
    }
    normalised = plots.normalise_curve(curve_json)
    assert normalised["nodes"] == [1, 4, 16] and "edge-level ablation" in normalised["series"]
    image = mpimg.imread(viz.plot_curve(curve_json, tmp_path / "curve.png"))
    assert image.shape[1] > 2 * image.shape[0]


def test_curve_svg_is_inline_svg() -> None:
    svg = viz.curve_svg(CURVE)
    assert svg.startswith("<svg") and "<?xml" not in svg and "<!DOCTYPE" not in svg
    ET.fromstring(svg)
    assert svg == viz.curve_svg(CURVE)  # reproducible


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

CONTEXTS = {
    "L1.attn/9/8": [
        {
            "tokens": ["When", " Mary", " and", " <John>"],
            "acts": [0.0, 2.5, 0.1, 0.7],
            "max_act": 2.5,
        },
        {
            "tokens": ["Then", " Anna", " &", " Tom"],
            "acts": [0.2, 1.9, 0.0, 0.3],
            "max_act": 1.9,
        },
    ],
}

_EXTERNAL_LOAD = re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _write_report(tmp_path: Path, **kwargs) -> tuple[Path, str]:
    args = {
        "graph": token_graph(),
        "curve": CURVE,
        "title": "IOI <circuit> & friends",
        "metadata": {"task": "ioi", "seed": 0, "node_threshold": 0.1},
        "contexts": CONTEXTS,
    }
    args.update(kwargs)
    path = viz.write_report(tmp_path / "report.html", **args)
    return path, path.read_text(encoding="utf-8")


def test_report_is_self_contained(tmp_path: Path) -> None:
    G = token_graph()
    _, text = _write_report(tmp_path, graph=G)
    assert not _EXTERNAL_LOAD.search(text)
    assert "@import" not in text and "url(" not in text.replace("url(#", "")
    assert "<link" not in text
    # Every node id is a table row; the first row has the largest |effect|.
    rows = re.findall(r'<tr data-node="([^"]+)"', text)
    assert sorted(rows) == sorted(G.nodes)
    effects = {n: abs(d["effect"]) for n, d in G.nodes(data=True)}
    assert effects[rows[0]] == max(effects.values())
    # Text is escaped.
    assert "IOI &lt;circuit&gt; &amp; friends" in text and "<circuit>" not in text
    assert "&lt;tag&gt;" in text and " &lt;John&gt;" in text
    # Header fields, the curve and the contexts are there.
    for value in ("toy-2l", "toy-saes-v1", "ig", "node_threshold"):
        assert value in text
    assert text.count("<svg") == (2 if HAS_DOT else 1)
    assert 'id="ctx-0"' in text and "Mary" in text


@needs_dot
def test_report_inlines_the_diagram_svg(tmp_path: Path) -> None:
    G = token_graph()
    _, text = _write_report(tmp_path, graph=G)
    start = text.index('<div class="figure diagram')
    svg = text[text.index("<svg", start) : text.index("</svg>", start) + len("</svg>")]
    assert set(_svg_nodes(svg)) == set(G.nodes)


def test_report_without_dot_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    _, text = _write_report(tmp_path, curve=None, contexts=None)
    assert "No diagram" in text and "<svg" not in text
    assert "No faithfulness curve" in text


def test_report_uses_a_given_svg(tmp_path: Path) -> None:
    given = '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><g id="given"/></svg>'
    _, text = _write_report(tmp_path, diagram_svg=given, curve=None)
    assert '<g id="given"/>' in text and "<?xml" not in text


# ------------------------------------------------------------------------------------------
# Headless browser
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    path, _ = _write_report(tmp_path)
    shot, requested = browse(path.resolve().as_uri(), tmp_path, "report")
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 800 and pixels[..., :3].var() > 0
    assert requested == []

    # The page's script works: header clicks sort the table, a diagram click selects a row.
    probe = """<script>
      var th = document.querySelectorAll('#node-table th'), out = {};
      function col(i) { return [].map.call(document.querySelectorAll('#node-table tbody tr'),
                                           function (r) { return r.cells[i].getAttribute('data-v'); }); }
      th[1].click(); out.site = col(1);
      th[4].click(); out.effect_desc = col(4).map(Number);
      th[4].click(); out.effect_asc = col(4).map(Number);
      var g = document.querySelector('.diagram svg g.node:not(.decoration)');
      if (g) { g.dispatchEvent(new MouseEvent('click'));
               out.clicked = [g.id, document.querySelector('tr.selected').getAttribute('data-node')]; }
      document.body.setAttribute('data-probe', JSON.stringify(out));
    </script></body>"""
    probed = tmp_path / "probe.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    dom = dump_dom(probed.as_uri(), tmp_path / "probe-profile")
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the report's script did not run"
    result = json.loads(html.unescape(found.group(1)))
    assert result["site"] == sorted(result["site"], key=str.casefold)  # locale order
    assert result["effect_desc"] == sorted(result["effect_desc"], reverse=True)
    assert result["effect_asc"] == sorted(result["effect_asc"])
    if HAS_DOT:
        assert result["clicked"][0] == result["clicked"][1]

    # The same check sees a page that does load from the network.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png">x</body></html>')
    _, control_requested = browse(control.as_uri(), tmp_path, "control")
    assert control_requested == ["http://example.invalid/x.png"]


# ------------------------------------------------------------------------------------------
# circuit-tracer export
# ------------------------------------------------------------------------------------------


def test_circuit_tracer_export_token_graph(tmp_path: Path) -> None:
    G = token_graph()
    data = viz.to_circuit_tracer(G)
    assert set(data) >= {"metadata", "nodes", "links"}
    assert data["metadata"]["prompt_tokens"] == G.graph["position_labels"]
    nodes = {n["circuit_node_id"]: n for n in data["nodes"]}
    assert set(nodes) == set(G.nodes)
    assert len({n["node_id"] for n in data["nodes"]}) == len(data["nodes"])
    assert nodes["metric"]["feature_type"] == "logit" and nodes["metric"]["layer"] == "3"
    assert nodes["metric"]["is_target_logit"] is True
    assert nodes["embed/2/17"]["feature_type"] == "embedding" and nodes["embed/2/17"]["layer"] == "E"
    assert nodes["L0.attn/7/err"]["feature_type"] == "mlp reconstruction error"
    feature = nodes["L1.attn/9/8"]
    assert feature["feature_type"] == "cross layer transcoder" and feature["layer"] == "1"
    assert feature["ctx_idx"] == 9 and feature["influence"] == pytest.approx(1.6)
    assert {n["feature_type"] for n in data["nodes"]} == {
        "cross layer transcoder",
        "mlp reconstruction error",
        "embedding",
        "logit",
    }
    by_new = {n["node_id"]: n["circuit_node_id"] for n in data["nodes"]}
    links = {(by_new[link["source"]], by_new[link["target"]]): link["weight"] for link in data["links"]}
    assert links == {(u, v): d["effect"] for u, v, d in G.edges(data=True)}
    path = export.write_circuit_tracer(G, tmp_path / "graph.json")
    assert json.loads(path.read_text())["metadata"]["schema_version"] == 1


def test_circuit_tracer_export_schema_and_single_site_indices() -> None:
    data = viz.to_circuit_tracer(schema_graph())
    nodes = {n["circuit_node_id"]: n for n in data["nodes"]}
    assert nodes["L0.resid/S1+1/40"]["ctx_idx"] == SPANS.index("S1+1")
    assert data["metadata"]["prompt_tokens"] == SPANS
    # A graph with a single sublayer kind keeps circuit-tracer's plain feature indices.
    G = nx.DiGraph(positions="token", position_labels=["a", "b"], n_layers=1)
    _add(G, "L0.transcoder", 1, 123, 0.5)
    _add_metric(G)
    G.add_edge("L0.transcoder/1/123", "metric", effect=0.5)
    ids = {n["node_id"] for n in viz.to_circuit_tracer(G)["nodes"]}
    assert "0_123_1" in ids


def test_package_imports_nothing_else_from_the_project() -> None:
    for path in Path(viz.__file__).parent.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(
            r"^\s*(from|import)\s+(circuits|replacement|attribution)\b",
            source,
            re.MULTILINE,
        )
