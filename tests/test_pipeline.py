"""The discovery pipeline and the ``circuits discover`` / ``circuits evaluate`` commands on a small sample."""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _browser import CHROMIUM, browse

from circuits.app.cli import main
from circuits.app.config import CurveConfig, DataConfig, DiscoverConfig, EvaluateConfig, ModelConfig, SelectionConfig
from circuits.app.outputs import diagram_view
from circuits.app.pipeline import discover
from circuits.app.reevaluation import evaluate_saved
from circuits.errors import CircuitError
from circuits.evaluation.curves import Curve
from circuits.graph.build import BuildConfig
from circuits.graph.ids import count_nodes
from circuits.graph.io import load_circuit
from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
from replacement.sites import SAE_KINDS, model_sites
from viz.diagram import render

HAS_DOT = shutil.which("dot") is not None


def small(dict_dir: Path, **selection) -> DiscoverConfig:
    """A quick run on ioi with the dictionaries of ``dict_dir``."""
    return DiscoverConfig(
        data=DataConfig(task="ioi", n_attribution=8, n_eval=8, n_selection=8),
        model=ModelConfig(dictionaries=str(dict_dir), device="cpu"),
        attribution=BuildConfig(max_targets=16),
        selection=SelectionConfig(**selection),
        curves=CurveConfig(points=5, edge_examples=4),
    )


def evaluate(path: Path, task: str, **options):
    return evaluate_saved(EvaluateConfig(circuit=str(path), task=task, **options))


@pytest.fixture(scope="module")
def dict_dir(toy, tmp_path_factory) -> Path:
    """A saved set of small untrained TopK SAEs and transcoders for the toy model."""
    d = toy.model.cfg.d_model
    dicts = {
        s: create_dictionary(s, d, DictionaryConfig(architecture="topk", d_sae=24, k=6), seed=i)
        for i, s in enumerate(model_sites(toy.model.cfg.n_layers, (*SAE_KINDS, "transcoder")))
    }
    return DictionarySet(dicts, name="random-saes").save(tmp_path_factory.mktemp("dicts") / "random-saes")


@pytest.fixture(scope="module")
def run(dict_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = small(dict_dir)
    return discover(config, out=out), out


def test_discover_writes_the_four_files(run):
    result, out = run
    for name in ("circuit.json", "curve.json", "curve.png"):
        assert (out / name).stat().st_size > 0
    if HAS_DOT:
        assert (out / "circuit.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    circuit = load_circuit(out / "circuit.json")
    assert count_nodes(circuit) == result.evaluation.nodes
    assert circuit.graph["model"] == "toy" and circuit.graph["dictionaries"] == "random-saes"
    curve = Curve.from_json(out / "curve.json")
    assert len(curve) in (5, 6) and curve.cpr is not None and curve.cmd is not None  # the grid, plus the chosen size
    assert "edge_curve" in curve.metadata


def svg_names(path: Path) -> set[str]:
    """Node ids an SVG names: each node group's id, and the ids a "+N more" group lists in its tooltip."""
    named = set()
    for g in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g"):
        if "node" not in (g.get("class") or "").split():
            continue
        named.add(g.get("id"))
        if "group" in g.get("class").split():
            for a in g.iter("{http://www.w3.org/2000/svg}a"):
                tip = a.get("{http://www.w3.org/1999/xlink}title") or ""
                named.update(line.strip() for line in tip.splitlines()[1:])
    return named


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_the_diagram_names_every_node_of_circuit_json(run, tmp_path):
    result, out = run
    ids = {n["id"] for n in json.loads((out / "circuit.json").read_text())["nodes"]}
    assert ids <= svg_names(out / "circuit.svg")
    # A circuit too large to draw whole: the top nodes are drawn, the rest grouped per cell, still named.
    view, note = diagram_view(result.circuit, max_nodes=6, max_edges=10)
    groups = [n for n, d in view.nodes(data=True) if d.get("kind") == "group"]
    assert groups and "grouped" in note
    assert sum(len(view.nodes[g]["members"]) for g in groups) == count_nodes(result.circuit) - 6
    svg = render(view, tmp_path / "part", formats=("svg",))["svg"]
    assert ids <= svg_names(svg)
    assert view.number_of_edges() <= 10


def test_features_are_labelled_and_the_report_shows_them(run):
    result, out = run
    data = json.loads((out / "circuit.json").read_text())
    features = [n for n in data["nodes"] if n["id"] != "metric" and not n["id"].endswith("/err")]
    assert features and all(n.get("label") for n in features)
    page = (out / "report.html").read_text(encoding="utf-8")
    for n in data["nodes"]:
        assert f'data-node="{html.escape(n["id"])}"' in page  # a table row per node
    # The labels come from the feature's top-activating contexts, which the report shows.
    blocks = page.count('<details class="contexts"')
    assert 0 < blocks <= len(features)
    # Nothing to fetch: no external URL in a src/href/url(), no script or style file.
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "url(http" not in page and "@import" not in page and "<script src" not in page
    assert result.circuit.graph["task"] in page and "toy" in page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_discovered_report_loads_nothing_in_a_browser(run, tmp_path):
    import matplotlib.image as mpimg

    _, out = run
    shot, requested = browse((out / "report.html").resolve().as_uri(), tmp_path, "discovered")
    assert requested == []
    assert mpimg.imread(shot)[..., :3].var() > 0


def test_the_embedding_is_kept_and_left_out_of_the_circuit_by_default(run, dict_dir):
    result, out = run
    assert result.config.model.composition == "transcoders" and not result.config.evaluation.ablate_embed
    assert not any(d["site"] == "embed" for _, d in result.circuit.nodes(data=True))
    assert any(d["site"] == "embed" for _, d in result.graph.nodes(data=True))  # attributed all the same
    assert {d["site"].split(".")[-1] for n, d in result.circuit.nodes(data=True) if n != "metric"} == {"transcoder"}
    assert load_circuit(out / "circuit.json").graph["evaluation"]["ablate_embed"] is False
    # Ablating the embedding too is a different (lower) reference point and gives other numbers.
    ablated = evaluate(out / "circuit.json", "ioi", n_eval=8, device="cpu", ablate_embed=True)
    assert ablated.evaluation.m_empty != pytest.approx(result.evaluation.m_empty, abs=1e-6)


def test_the_summary_has_the_documented_fields(run):
    result, _ = run
    s = result.summary()
    for key in ("faithfulness", "completeness", "nodes", "edges", "faithfulness_edges", "cpr", "cmd", "nodes_needed"):
        assert key in s
    assert isinstance(s["faithfulness"], float) and isinstance(s["nodes"], int) and isinstance(s["edges"], int)
    json.dumps(s)  # plain JSON values only


def test_discover_is_deterministic(run, dict_dir):
    result, _ = run
    again = discover(small(dict_dir))
    assert set(again.circuit.nodes) == set(result.circuit.nodes)
    assert again.evaluation.faithfulness == result.evaluation.faithfulness


def test_a_saved_circuit_is_evaluated_again(run):
    result, out = run
    again = evaluate(out / "circuit.json", "ioi", n_eval=8, device="cpu")
    assert again.evaluation.faithfulness == pytest.approx(result.evaluation.faithfulness, abs=1e-6)
    assert again.evaluation.completeness == pytest.approx(result.evaluation.completeness, abs=1e-6)


def test_a_circuit_made_with_other_dictionaries_is_refused(run):
    _, out = run
    with pytest.raises(CircuitError, match="random-saes"):
        evaluate(out / "circuit.json", "ioi", dictionaries="neurons", n_eval=8, device="cpu")
    with pytest.raises(CircuitError, match="model"):
        evaluate(out / "circuit.json", "ioi", model="gpt2", n_eval=8, device="cpu")


def test_an_empty_circuit_file_is_refused(run, tmp_path):
    _, out = run
    data = json.loads((out / "circuit.json").read_text())
    data["nodes"] = [n for n in data["nodes"] if n["id"] == "metric"]
    data["edges"] = []
    (tmp_path / "empty.json").write_text(json.dumps(data))
    with pytest.raises(CircuitError, match="empty"):
        evaluate(tmp_path / "empty.json", "ioi", n_eval=8, device="cpu")


def test_a_size_larger_than_the_graph_is_refused(dict_dir):
    with pytest.raises(CircuitError, match="only"):
        discover(small(dict_dir, n_nodes=10**7))
    with pytest.raises(CircuitError, match="not both"):
        SelectionConfig(n_nodes=5, node_threshold=0.1)


def test_cli_discover_and_evaluate_json(dict_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "discover",
        "sva-simple",
        "--dictionaries",
        str(dict_dir),
        "--examples",
        "8",
        "--eval-examples",
        "8",
        "--max-targets",
        "16",
        "--curve-points",
        "4",
        "--nodes",
        "40",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"faithfulness", "completeness", "nodes", "edges"} <= set(summary)
    assert summary["nodes"] <= 40
    assert (
        main(["evaluate", str(out / "circuit.json"), "sva-simple", "--eval-examples", "8", "--device", "cpu", "--json"])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["faithfulness"] == pytest.approx(summary["faithfulness"], abs=1e-6)
    assert (
        main(["evaluate", str(out / "circuit.json"), "sva-simple", "--dictionaries", "neurons", "--device", "cpu"]) == 2
    )
    assert "random-saes" in capsys.readouterr().err


def test_a_task_file_is_cut_into_attribution_selection_and_evaluation(toy, tmp_path):
    from circuits.data.splits import load_data
    from circuits.data.taskfile import save_task
    from circuits.data.tasks import make_task

    task = make_task("ioi", toy.tokenizer, n=40, seed=5)
    save_task(task, tmp_path / "ioi.jsonl", schema=tmp_path / "ioi_schema.csv")
    data = load_data(
        str(tmp_path / "ioi.jsonl"),
        toy.tokenizer,
        n_attribution=16,
        n_eval=8,
        schema=str(tmp_path / "ioi_schema.csv"),
        n_selection=8,
    )
    texts = [e.clean_text for e in task.examples]
    assert [e.clean_text for e in data.attribution.examples] == texts[:16]
    assert [e.clean_text for e in data.selection.examples] == texts[16:24]
    assert [e.clean_text for e in data.evaluation.examples] == texts[24:32]
    small = load_data(
        str(tmp_path / "ioi.jsonl"),
        toy.tokenizer,
        n_attribution=32,
        n_eval=32,
        schema=str(tmp_path / "ioi_schema.csv"),
        n_selection=8,
    )
    assert small.selection is None and len(small.attribution) == 20 and len(small.evaluation) == 20
