"""Circuit evaluation by real ablation: invariants, hand-made ablations, edge level, bad inputs."""

from __future__ import annotations

import dataclasses

import networkx as nx
import pytest
import torch

from attribution.edges import ExactEdges, edge_effects
from circuits.app.pipeline import choose_circuit
from circuits.data.inputs import attribution_inputs, corrupted_positions, task_metric
from circuits.data.tasks import make_task
from circuits.errors import CircuitError
from circuits.evaluation import AblationValues, EvalConfig, Evaluator, ablation_values, edge_curve, node_curve
from circuits.graph.build import BuildConfig, attribute_graph, first_examples
from circuits.graph.ids import METRIC, copy_graph, node_id, row_key
from circuits.graph.io import load_circuit, save_circuit
from circuits.graph.prune import input_nodes, prune_top_edges
from circuits.graph.ranking import ranked_nodes
from replacement.dictionaries import DictionaryConfig, create_dictionary
from replacement.model import NodeEdit, ReplacementModel
from replacement.sites import SAE_KINDS, model_sites

META = {"model": "toy", "dictionaries": "random-saes", "task": "ioi"}


@pytest.fixture(scope="module")
def rm(toy) -> ReplacementModel:
    """The toy model with small untrained TopK SAEs: large error nodes, few features (a complete graph stays small)."""
    d = toy.model.cfg.d_model
    dicts = {
        s.name: create_dictionary(s, d, DictionaryConfig(architecture="topk", d_sae=24, k=6), seed=i)
        for i, s in enumerate(model_sites(toy.model.cfg.n_layers, SAE_KINDS))
    }
    return ReplacementModel(toy.model, dicts)


@pytest.fixture(scope="module")
def batches(toy):
    pad = toy.tokenizer.pad_id
    return make_task("ioi", toy.tokenizer, n=6, seed=0).batch(pad), make_task("ioi", toy.tokenizer, n=6, seed=1).batch(
        pad
    )


def complete_graph(rm: ReplacementModel, batch, positions: str, targets: int = 0) -> nx.DiGraph:
    """Every node of the replacement model on ``batch`` (zero effects included)."""
    config = BuildConfig(method="atp", positions=positions, min_effect=None, max_nodes=None, max_targets=targets)
    return attribute_graph(rm, batch, attribution_inputs(batch), config, metadata=META).graph


@pytest.fixture(scope="module")
def schema_graph(rm, batches) -> nx.DiGraph:
    return complete_graph(rm, batches[0], "schema", targets=24)


# ------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("positions", ["schema", "token", "agnostic"])
@pytest.mark.parametrize("ablation", ["mean", "zero", "patch"])
def test_the_full_graph_is_faithful_and_its_complement_empty(rm, batches, positions, ablation):
    batch = batches[1]
    G = complete_graph(rm, batch, positions)
    ev = Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation=ablation))
    assert abs(ev.m_model - ev.m_empty) > 0.1
    result = ev.evaluate(G)
    assert result.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert result.completeness == pytest.approx(0.0, abs=1e-4)


def test_the_empty_circuit_has_faithfulness_zero(rm, batches, schema_graph):
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="mean"))
    empty = ev.evaluate_nodes([])
    assert empty.faithfulness == 0.0
    assert empty.completeness == pytest.approx(1.0, abs=1e-4)
    assert empty.nodes == 0
    only_metric = copy_graph(schema_graph, [METRIC])
    with pytest.raises(CircuitError, match="empty"):
        ev.evaluate(only_metric)


def test_batched_runs_equal_single_runs(rm, batches, schema_graph):
    ranked = ranked_nodes(schema_graph)
    sets = [ranked[:5], ranked[:40], ranked[:300]]
    together = Evaluator(
        rm, batches[1], EvalConfig(ablate_embed=True, ablation="mean", max_rows=12)
    ).evaluate_node_sets(sets)
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="mean"))
    for joint, nodes in zip(together, sets, strict=True):
        alone = ev.evaluate_nodes(nodes)
        assert joint.m_circuit == pytest.approx(alone.m_circuit, abs=1e-5)
        assert joint.m_complement == pytest.approx(alone.m_complement, abs=1e-5)


@pytest.mark.parametrize("ablation", ["mean", "zero", "patch"])
def test_ablating_one_span_node_is_the_hand_made_edit(rm, batches, schema_graph, ablation):
    """Everything but one feature node of span S2 in the circuit: the same as editing that feature on
    every S2 token of every example to its ablation value, and nothing else."""
    batch = batches[1]
    ev = Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation=ablation))
    site, span = "L1.resid", "S2"
    s2 = batch.clean_span == batch.span_names.index(span)
    feats = rm.activations(batch.clean).records[site].features
    feature = int(feats[s2].abs().sum(0).argmax())
    dropped = node_id(site, span, feature)
    nodes = [n for n in schema_graph if n != dropped]
    result = ev.evaluate_nodes(nodes, completeness=False)

    mask = torch.zeros_like(feats, dtype=torch.bool)
    mask[..., feature] = s2
    edit = NodeEdit(features=ev.values.features[site], feature_mask=mask)
    logits = rm.run(batch.clean, {site: edit}).logits
    expected = float(task_metric(batch)(logits, torch.arange(len(batch))).mean())
    assert result.m_circuit == pytest.approx(expected, abs=1e-5)
    assert abs(expected - ev.m_model) > 1e-4  # the edit does something


def test_mean_ablation_is_the_mean_at_the_same_span_and_offset(rm, batches):
    """The value at offset o of span s is the mean over reference counterfactuals of their token at
    offset min(o, length - 1) of span s (spans differ in length between prompts)."""
    batch, reference = batches
    values = ablation_values(rm, batch, "mean", reference=reference)
    acts = rm.activations(reference.corrupted).records["L0.mlp"].features
    spans = reference.corrupted_span
    for b in range(len(batch)):
        for p in range(int(batch.clean_lengths[b])):
            s = int(batch.clean_span[b, p])
            offset = p - int((batch.clean_span[b] == s).nonzero()[0])
            rows = []
            for r in range(len(reference)):
                where = (spans[r] == s).nonzero().flatten()
                rows.append(acts[r, int(where[min(offset, len(where) - 1)])])
            torch.testing.assert_close(values.features["L0.mlp"][b, p], torch.stack(rows).mean(0), atol=1e-5, rtol=1e-5)


def test_patch_ablation_is_the_aligned_counterfactual(rm, batches):
    batch = batches[0]
    values = ablation_values(rm, batch, "patch")
    corrupted = rm.activations(batch.corrupted).records["L2.attn"]
    pos = corrupted_positions(batch)
    for b in range(len(batch)):
        for p in range(int(batch.clean_lengths[b])):
            torch.testing.assert_close(values.errors["L2.attn"][b, p], corrupted.error[b, int(pos[b, p])])


# ------------------------------------------------------------------------------------- edge level


def with_all_pairs(circuit: nx.DiGraph) -> nx.DiGraph:
    """The circuit plus an edge from every earlier circuit node into every node whose inputs were scored."""
    full = circuit.copy()
    for v, attrs in circuit.nodes(data=True):
        if attrs.get("scored_inputs"):
            for u in circuit.nodes:
                if u != METRIC and row_key(circuit.nodes[u]) < row_key(attrs):
                    full.add_edge(u, v, effect=1.0)
    return full


@pytest.mark.parametrize("ablation", ["mean", "patch"])
def test_edge_level_with_every_edge_is_node_level(rm, batches, schema_graph, ablation):
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation=ablation))
    circuit = choose_circuit(schema_graph, n_nodes=200).graph
    node_level = ev.evaluate(circuit, completeness=False)
    edge_level = ev.evaluate(with_all_pairs(circuit), level="edges", completeness=False)
    assert edge_level.m_circuit == pytest.approx(node_level.m_circuit, abs=1e-5)


def test_edge_level_without_edges_into_the_metric_is_the_empty_circuit(rm, batches, schema_graph):
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="mean"))
    circuit = with_all_pairs(choose_circuit(schema_graph, n_nodes=200).graph)
    circuit.remove_edges_from(list(circuit.in_edges(METRIC)))
    result = ev.evaluate(circuit, level="edges", completeness=False)
    assert result.m_circuit == pytest.approx(ev.m_empty, abs=1e-5)
    assert result.faithfulness == pytest.approx(0.0, abs=1e-5)


def test_cutting_scored_edges_changes_the_result(rm, batches, schema_graph):
    """Edges of the circuit matter at edge level: dropping half of them moves the metric."""
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="patch"))
    circuit = choose_circuit(schema_graph, n_nodes=200).graph
    full = ev.evaluate(with_all_pairs(circuit), level="edges", completeness=False)
    cut = with_all_pairs(circuit)
    scored = [e for e in cut.edges if e[1] != METRIC]
    cut.remove_edges_from(scored[::2])
    assert abs(ev.evaluate(cut, level="edges", completeness=False).m_circuit - full.m_circuit) > 1e-4


def test_curves_cover_the_grid(rm, batches, schema_graph):
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="patch"))
    nodes = node_curve(ev, schema_graph, n_points=6)
    assert nodes.sizes_nodes[-1] == nodes.total_nodes == len(ranked_nodes(schema_graph))
    assert nodes.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
    assert nodes.completeness[-1] == pytest.approx(0.0, abs=1e-4)
    edges = edge_curve(ev, schema_graph, fractions=(0.01, 0.1, 1.0))
    assert edges.total_edges == schema_graph.number_of_edges()
    assert edges.cpr is not None and edges.cmd is not None
    assert len(edges) == 3
    for k, n, m in zip(edges.metadata["requested_edges"], edges.sizes_nodes, edges.sizes_edges, strict=True):
        if n == 0:  # nothing connected: pruning at this size is an error, the curve's point the empty circuit
            with pytest.raises(CircuitError):
                prune_top_edges(schema_graph, k)
            continue
        pruned = prune_top_edges(schema_graph, k)  # the curve's circuits are exactly these
        assert (n, m) == (pruned.n_nodes, pruned.n_edges)


# ------------------------------------------------------------------------------------- files, pruning


def test_a_saved_circuit_evaluates_the_same(rm, batches, schema_graph, tmp_path):
    circuit = choose_circuit(schema_graph, n_nodes=120).graph
    path = save_circuit(circuit, tmp_path / "circuit.json")
    loaded = load_circuit(path)
    assert set(loaded.nodes) == set(circuit.nodes) and set(loaded.edges) == set(circuit.edges)
    ev = Evaluator(rm, batches[1], EvalConfig(ablate_embed=True, ablation="mean"))
    a, b = ev.evaluate(circuit), ev.evaluate(loaded)
    assert (a.faithfulness, a.completeness) == (b.faithfulness, b.completeness)
    assert ev.evaluate(loaded, level="edges").faithfulness == ev.evaluate(circuit, level="edges").faithfulness


@pytest.mark.parametrize("rule", [{"n_nodes": 150}, {"node_threshold": 1e-3}])
def test_no_dangling_nodes_after_pruning(schema_graph, rule):
    circuit = choose_circuit(schema_graph, **rule).graph
    inputs = set(input_nodes(schema_graph))
    reaches_metric = nx.ancestors(circuit, METRIC)
    for node in circuit:
        if node == METRIC:
            continue
        assert node in reaches_metric, f"{node} has no path to the metric"
        assert node in inputs or any(u in inputs for u in nx.ancestors(circuit, node)), f"{node} has no input upstream"
    top_edges = prune_top_edges(schema_graph, 40).graph
    assert all(circuit.degree(n) > 0 for n in circuit) and all(top_edges.degree(n) > 0 for n in top_edges)


# ------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_circuit_errors(rm, batches, schema_graph, toy):
    batch, other = batches
    ev = Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation="mean"))
    with pytest.raises(CircuitError, match="only"):
        choose_circuit(schema_graph, n_nodes=10**7)
    with pytest.raises(CircuitError, match="ablation"):
        EvalConfig(ablate_embed=True, ablation="resample")
    # ablation values of the wrong shape
    good = ev.values
    short = AblationValues({s: v[:, :3] for s, v in good.features.items()}, good.errors, "mean")
    with pytest.raises(CircuitError, match="shape"):
        Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation="mean"), reference=short)
    missing = AblationValues({"L0.attn": good.features["L0.attn"]}, good.errors, "mean")
    with pytest.raises(CircuitError, match="lack"):
        Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation="mean"), reference=missing)
    # patch ablation needs the evaluation examples' own counterfactuals
    with pytest.raises(CircuitError, match="counterfactuals"):
        Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation="patch"), reference=other)
    # a mean reference from another task
    sva = make_task("sva-pp", toy.tokenizer, n=4).batch(toy.tokenizer.pad_id)
    with pytest.raises(CircuitError, match="spans"):
        Evaluator(rm, batch, EvalConfig(ablate_embed=True, ablation="mean"), reference=sva)
    # nodes the dictionaries or the task do not have
    for bad, what in (
        (node_id("L1.transcoder", "IO", 3), "do not have"),
        (node_id("L1.attn", "IO", 999), "features"),
        (node_id("L1.attn", "subj", 3), "span"),
    ):
        with pytest.raises(CircuitError, match=what):
            ev.evaluate_nodes([bad])
    with pytest.raises(CircuitError, match="level"):
        ev.evaluate(choose_circuit(schema_graph, n_nodes=50).graph, level="heads")


def test_per_site_integrated_gradients_build_the_graph(rm, batches):
    """``ig_mode="per-site"`` reaches node attribution: per-site node effects of each site sum to the real
    change of patching that whole site, and the mode is recorded; a bad mode is a clear error."""
    train, _ = batches
    inputs = attribution_inputs(train)
    config = BuildConfig(method="ig", ig_mode="per-site", steps=16, positions="agnostic", max_targets=0)
    built = attribute_graph(
        rm, train, inputs, config, metadata={"model": "toy", "dictionaries": "random", "task": "ioi"}
    )
    assert built.graph.graph["ig_mode"] == "per-site"
    site = "L1.attn"
    v = built.nodes.values[site]
    with torch.no_grad():
        m0 = inputs.metric(rm.run(inputs.clean).logits, inputs.index())
        m1 = inputs.metric(
            rm.run(inputs.clean, {site: NodeEdit(v.f_target, None, v.e_target, None)}).logits, inputs.index()
        )
    total = built.nodes.features[site].sum((1, 2)) + built.nodes.errors[site].sum(1)
    assert torch.allclose(total, m1 - m0, rtol=0.03, atol=0.03)
    with pytest.raises(CircuitError, match="ig_mode"):
        BuildConfig(ig_mode="sideways")


def test_exact_local_edges_build_the_graph(rm, batches):
    """``edge_local="exact"`` reaches edge attribution: the graph's edges are the exact local ones of
    :func:`attribution.edges.edge_effects` and the choice is recorded; a bad choice is a clear error."""
    train, _ = batches
    inputs = attribution_inputs(train)
    meta = {"model": "toy", "dictionaries": "random", "task": "ioi"}
    config = BuildConfig(method="atp", positions="agnostic", max_targets=6, edge_examples=2, edge_local="exact")
    built = attribute_graph(rm, train, inputs, config, metadata=meta)
    linear = attribute_graph(rm, train, inputs, dataclasses.replace(config, edge_local="linear"), metadata=meta)
    assert built.graph.graph["edge_local"] == "exact" and linear.graph.graph["edge_local"] == "linear"
    assert built.graph.graph["edge_examples"] == 2
    assert built.targets == linear.targets
    e_inputs, e_nodes, e_positions = first_examples(inputs, built.nodes, built.positions, 2)
    direct = edge_effects(rm, e_inputs, e_nodes, built.targets, e_positions, ExactEdges())
    for t in built.targets:
        for site, (f, e) in direct.incoming[t].items():
            assert torch.allclose(built.edges.incoming[t][site][0], f) and torch.allclose(
                built.edges.incoming[t][site][1], e
            )
    differs = [
        not torch.allclose(built.edges.incoming[t][s][0], linear.edges.incoming[t][s][0], atol=1e-6)
        for t in built.targets
        for s in built.edges.incoming[t]
    ]
    assert any(differs)
    with pytest.raises(CircuitError, match="edge_local"):
        BuildConfig(edge_local="sideways")


def test_transcoder_edges_across_positions_are_cut():
    """With transcoders, attention is no site and runs inside the edges, so a transcoder's input at one
    token reads upstream outputs at earlier tokens: leaving out an edge from another position (the
    upstream node's only edge into that group) changes the edge-level metric, and the circuit with
    every edge between its nodes still evaluates as at node level."""
    from circuits.app.loading import load_model, load_replacement
    from circuits.graph.ids import parse_node_id

    loaded = load_model("toy", device="cpu")
    rm = load_replacement(loaded, None, "transcoders")
    pad = loaded.tokenizer.pad_id
    train = make_task("ioi", loaded.tokenizer, n=16, seed=0).batch(pad)
    held = make_task("ioi", loaded.tokenizer, n=16, seed=1).batch(pad)
    config = BuildConfig(method="atp", positions="schema", max_targets=64)
    G = attribute_graph(
        rm, train, attribution_inputs(train), config, metadata={"model": "toy", "dictionaries": "toy", "task": "ioi"}
    ).graph
    C = choose_circuit(G, n_nodes=60).graph
    ev = Evaluator(rm, held, EvalConfig(ablate_embed=True, ablation="mean"))
    full = ev.evaluate(with_all_pairs(C), level="edges", completeness=False).m_circuit
    assert full == pytest.approx(ev.evaluate(C, completeness=False).m_circuit, abs=1e-4)
    base = ev.evaluate(C, level="edges", completeness=False).m_circuit

    def group(n):
        site, pos = parse_node_id(n)[:2]
        return site, pos

    into = {}
    for u, v in C.edges:
        if v != METRIC:
            into.setdefault((u, group(v)), []).append(v)
    cross = [(u, v) for u, v in C.edges if v != METRIC and group(u)[1] != group(v)[1] and len(into[(u, group(v))]) == 1]
    assert cross
    moved = 0
    for e in sorted(cross, key=lambda e: -abs(C.edges[e]["effect"]))[:3]:
        cut = C.copy()
        cut.remove_edge(*e)
        moved += abs(ev.evaluate(cut, level="edges", completeness=False).m_circuit - base) > 1e-4
    assert moved >= 2
