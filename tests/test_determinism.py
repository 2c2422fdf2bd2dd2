"""Reproducible outputs and what a reader of them sees.

* The same ``circuits discover`` command, run in two processes with different ``PYTHONHASHSEED`` and
  separate fresh label caches, writes byte-identical files.
* Feature descriptions break ties in a stated order, whatever the order of the contexts.
* The report shows a context's tokens with spaces between words, its header counts the nodes as the
  title does, and the curve plot keeps CPR/CMD clear of the legend.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.text
import networkx as nx
import pytest

from circuits.graph.ids import count_nodes as circuits_count_nodes
from circuits.graph.io import load_circuit
from circuits.labels.describe import describe
from circuits.toy.word_classes import WORD_CLASSES
from viz import plots, report
from viz._common import count_nodes as viz_count_nodes
from viz.contexts import context_text, token_spacing

HAS_DOT = shutil.which("dot") is not None
OUTPUTS = ("circuit.json", "circuit.dot", "circuit.svg", "curve.json", "curve.png", "report.html")
#: Small counts keep each run to some seconds; labels stay on (they were what changed between runs).
RUN = ["discover", "ioi", "--examples", "8", "--eval-examples", "8", "--curve-points", "2", "--quiet", "--json"]
HASH_SEEDS = (1, 2)
CLI = "import sys; from circuits.app.cli import main; sys.exit(main(sys.argv[1:]))"


# ------------------------------------------------------------------------------ two processes


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """The output folders of the same run in two concurrent processes (hash seeds 1 and 2), each
    with a fresh label cache of its own."""
    started: list[tuple[Path, Path, subprocess.Popen]] = []
    try:
        for seed in HASH_SEEDS:
            root = tmp_path_factory.mktemp(f"hashseed{seed}")
            env = dict(os.environ, PYTHONHASHSEED=str(seed), CIRCUITS_CACHE=str(root / "cache"))
            proc = subprocess.Popen(
                [sys.executable, "-c", CLI, *RUN, "--out", str(root / "out")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append((root, root / "out", proc))
        outs = []
        for root, out, proc in started:
            stdout, stderr = proc.communicate(timeout=400)
            assert proc.returncode == 0, f"hash seed run failed:\n{stderr[-3000:]}"
            json.loads(stdout)
            # Each process scanned the label corpus itself: its own cache holds the result.
            assert list((root / "cache" / "labels").glob("*.safetensors")), "the run wrote no label cache"
            outs.append(out)
        return outs
    finally:
        for _, _, proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _first_difference(a: bytes, b: bytes) -> str:
    """Where two files part, as the first differing line (text) or byte offset."""
    try:
        lines = zip(a.decode().splitlines(), b.decode().splitlines(), strict=False)  # the shorter one ends
    except UnicodeDecodeError:
        offset = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return f"first difference at byte {offset} (sizes {len(a)} and {len(b)})"
    for number, (x, y) in enumerate(lines, 1):
        if x != y:
            return f"line {number}:\n  {x[:300]}\n  {y[:300]}"
    return f"one is a prefix of the other (sizes {len(a)} and {len(b)})"


@pytest.mark.slow
def test_outputs_are_byte_identical_across_processes(runs):
    first, second = runs
    expected = {name for name in OUTPUTS if HAS_DOT or name != "circuit.svg"}
    names = {p.name for p in first.iterdir()}
    assert names == {p.name for p in second.iterdir()}
    assert expected <= names
    for name in sorted(names):
        a, b = (first / name).read_bytes(), (second / name).read_bytes()
        assert a == b, (
            f"{name} differs between PYTHONHASHSEED={HASH_SEEDS[0]} and {HASH_SEEDS[1]}: {_first_difference(a, b)}"
        )
    # The labels, whose tie-breaks were hash-dependent, are part of what was compared.
    circuit = load_circuit(first / "circuit.json")
    labels = [d.get("label") for _, d in circuit.nodes(data=True) if d.get("kind") == "feature"]
    assert any(label and label not in ("inactive", "error") for label in labels)


@pytest.mark.slow
def test_report_header_counts_the_nodes_as_the_title_does(runs):
    out = runs[0]
    text = (out / "report.html").read_text(encoding="utf-8")
    n = circuits_count_nodes(load_circuit(out / "circuit.json"))
    title = re.search(r"<title>[^<]*?(\d+) nodes", text)
    header = re.search(r"<dt>nodes / edges</dt><dd>(\d+) / (\d+)</dd>", text)
    assert title and header
    assert int(title.group(1)) == int(header.group(1)) == n
    assert f"<h2>Nodes ({n} and the metric)</h2>" in text


@pytest.mark.slow
def test_report_contexts_have_spaces_between_words(runs):
    text = (runs[0] / "report.html").read_text(encoding="utf-8")
    contexts = re.findall(r'<div class="ctx">(.*?)</div>', text)
    assert contexts, "the report has no top-activating contexts"
    for ctx in contexts:
        tokens = re.findall(r'<span class="tok"[^>]*>(.*?)</span>', ctx)
        between = re.findall(r'<span class="tok"[^>]*>.*?</span>(.*?)(?=<span class="tok")', ctx)
        assert len(tokens) >= 1 and between == [" "] * (len(tokens) - 1), ctx[:400]
    # As plain text a context reads as words: "<bos> While Kate and ..." rather than "<bos>WhileKateand...".
    plain = re.sub(r"<[^>]+>", "", contexts[0])
    assert re.search(r"\w \w", plain)


# ------------------------------------------------------------------------------ descriptions


def ctx(*tokens: str, act: float = 1.0) -> dict:
    return {"tokens": list(tokens), "acts": [0.0] * (len(tokens) - 1) + [act], "max_act": act}


@pytest.mark.parametrize(
    "contexts, expected",
    [
        # 'argument' and 'long' each occur in 2 of 3 windows: the tie goes to the word that sorts first.
        ([ctx("argument", "long", "."), ctx("long", "argument", "."), ctx("the", ".")], "'argument'→'.'"),
        ([ctx("a", "long", "to"), ctx("the", "argument", "long", "to"), ctx("argument", "to")], "'argument'→'to'"),
        # No token holds the majority at the maximum: the most frequent one, ties to the first in order.
        ([ctx("x", "."), ctx("y", ","), ctx("z", "."), ctx("w", ",")], "',' 50%"),
        ([ctx("x", "Paris"), ctx("y", "ball"), ctx("z", "ball"), ctx("w", "Paris")], "'Paris' 50%"),
    ],
)
def test_describe_breaks_ties_in_a_stated_order(contexts, expected):
    """The answer is the same for every order of the contexts (and of the words inside them)."""
    for order in itertools.permutations(contexts):
        assert describe(list(order), word_classes=WORD_CLASSES) == expected
        flipped = [dict(c, tokens=list(reversed(c["tokens"][:-1])) + c["tokens"][-1:]) for c in order]
        assert describe(flipped, word_classes=WORD_CLASSES) == expected


def test_describe_ignores_the_hash_order_of_words():
    """Many words tied in every window: the same answer as from their sorted order."""
    words = [f"w{i:02d}" for i in range(40)]
    contexts = [ctx(*words, "."), ctx(*reversed(words), "."), ctx(*words[::2], *words[1::2], ".")]
    assert describe(contexts, word_classes=WORD_CLASSES) == "'w00'→'.'"


# ------------------------------------------------------------------------------ report


def _graph(n_features: int = 3) -> nx.DiGraph:
    G = nx.DiGraph(model="m", dictionaries="d", task="t", method="ig", positions="agnostic", n_layers=2)
    for i in range(n_features):
        G.add_node(
            f"L0.attn/*/{i}",
            site="L0.attn",
            layer=0,
            sublayer="attn",
            position="*",
            feature=i,
            kind="feature",
            effect=1.0 + i,
            label="",
        )
        G.add_edge(f"L0.attn/*/{i}", "metric", effect=0.5)
    G.nodes["metric"].update(
        site="metric",
        layer=2,
        sublayer="metric",
        position=None,
        feature=None,
        kind="metric",
        effect=3.0,
        label="logit diff",
    )
    return G


def test_viz_count_nodes_is_the_circuits_count():
    G = _graph(3)
    assert viz_count_nodes(G) == circuits_count_nodes(G) == 3
    G.remove_node("metric")
    assert viz_count_nodes(G) == circuits_count_nodes(G) == 3


def test_report_header_does_not_count_the_metric():
    text = report.build_report(graph=_graph(3), title="t: 3 nodes", diagram_svg="<svg></svg>")
    assert "<dt>nodes / edges</dt><dd>3 / 3</dd>" in text
    assert "<h2>Nodes (3 and the metric)</h2>" in text


WORD_CONTEXT = {
    "tokens": ["<bos>", "While", "Kate", "and", "Oliver"],
    "acts": [0.0, 0.1, 0.2, 0.4, 2.0],
    "max_act": 2.0,
}
PIECE_CONTEXT = {
    "tokens": ["<|endoftext|>", "While", " Kate", " and", " Oliver"],
    "acts": [0.0, 0.1, 0.2, 0.4, 2.0],
    "max_act": 2.0,
}


def test_context_text_joins_words_and_keeps_pieces():
    assert token_spacing({"a": [WORD_CONTEXT]}) == "words"
    assert token_spacing({"a": [WORD_CONTEXT], "b": [PIECE_CONTEXT]}) == "pieces"
    assert context_text(WORD_CONTEXT["tokens"], "words") == "<bos> While Kate and Oliver"
    assert context_text(PIECE_CONTEXT["tokens"], "pieces") == "<|endoftext|>While Kate and Oliver"
    with pytest.raises(ValueError, match="spacing"):
        context_text(["a"], "spaces")


@pytest.mark.parametrize(
    "context, spacing, shown",
    [
        (WORD_CONTEXT, "auto", "&lt;bos&gt; While Kate and Oliver"),
        (PIECE_CONTEXT, "auto", "&lt;|endoftext|&gt;While Kate and Oliver"),
        (WORD_CONTEXT, "pieces", "&lt;bos&gt;WhileKateandOliver"),
    ],
)
def test_report_contexts_read_as_the_tokenizer_decodes(context, spacing, shown):
    G = _graph(1)
    text = report.build_report(graph=G, diagram_svg="<svg></svg>", contexts={"L0.attn/*/0": [context]}, spacing=spacing)
    line = re.search(r'<div class="ctx">(.*?)</div>', text).group(1)
    assert re.sub(r"<[^>]+>", "", line) == f"max 2{shown}"
    # The token of the maximum is still the one shaded darkest.
    styles = re.findall(r'<span class="tok" style="background: rgba\(33, 102, 172, ([0-9.]+)\);( color: #fff;)?"', line)
    assert [float(a) for a, _ in styles] == sorted(float(a) for a, _ in styles)
    assert styles[-1] == ("0.850", " color: #fff;")


# ------------------------------------------------------------------------------ curve plot


def _crowded_curve() -> dict:
    """Lines everywhere but the top left corner: where the legend goes when placed at "best"."""
    sizes = [round(10 ** (i / 4)) for i in range(16)]

    def zigzag(phase: int) -> list[float]:
        return [((1.2 if x < 40 else 2.5) if (i + phase) % 2 else -0.1) for i, x in enumerate(sizes)]

    return {
        "nodes": sizes,
        "edges": sizes,
        "faithfulness": zigzag(0),
        "completeness": zigzag(1),
        "cpr": 0.5,
        "cmd": 0.2,
        "series": {"edge-level ablation": {"edges": sizes, "faithfulness": zigzag(0), "completeness": zigzag(1)}},
    }


def _run_like_curve() -> dict:
    """The layout of a run's curve.json: an edge curve in the metadata and MIB's areas."""
    return {
        "schema_version": 1,
        "sizes_nodes": [0, 1, 32, 128, 1002],
        "sizes_edges": [0, 1, 120, 1100, 5385],
        "faithfulness": [0.0, 0.01, 0.55, 0.88, 1.0],
        "completeness": [1.0, 1.0, 0.82, 0.33, 0.0],
        "cpr": 0.943,
        "cmd": 0.056,
        "metadata": {
            "edge_curve": {
                "sizes_edges": [6, 11, 27, 54, 108, 270, 540, 1080, 2700, 5385],
                "faithfulness": [0.17, 0.17, 0.2, 0.53, 0.54, 0.8, 0.92, 0.9, 1.0, 1.0],
                "completeness": [1.02, 1.13, 1.39, 1.04, 0.64, 0.32, 0.22, 0.19, -0.01, 0.0],
            }
        },
    }


@pytest.mark.parametrize("curve", [_crowded_curve(), _run_like_curve()], ids=["crowded", "run"])
def test_curve_areas_text_is_clear_of_the_legend(curve):
    fig = plots.curve_figure(curve, title="ioi: 128 nodes, faithfulness 0.88")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    areas = [t for t in fig.findobj(matplotlib.text.Text) if "CPR" in t.get_text() and t.get_visible()]
    assert len(areas) == 1 and "CMD" in areas[0].get_text()
    box = areas[0].get_window_extent(renderer)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        assert not box.overlaps(legend.get_window_extent(renderer))
    # Nor is it over any panel's plotting area.
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
