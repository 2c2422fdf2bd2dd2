"""Attributions against the interventions they approximate."""

from __future__ import annotations

import pytest
import torch

from attribution.core import ERROR, AttributionError, AttributionInputs, SiteValues
from attribution.edges import ExactEdges, LinearEdges, Target, edge_effects, edge_method
from attribution.nodes import exact_node_effects, node_effects
from attribution.positions import PositionMap
from attribution.validate import validate_edges
from circuits.data.inputs import attribution_inputs, corrupted_positions
from circuits.data.tasks import make_task
from replacement.dictionaries import DictionaryConfig, create_dictionary
from replacement.model import NodeEdit, ReplacementModel
from replacement.sites import SAE_KINDS, model_sites


def dictionaries(model, kinds=SAE_KINDS, seed=0):
    d = model.cfg.d_model
    return {
        s.name: create_dictionary(s, d, DictionaryConfig(architecture="relu", expansion=2), seed=seed + i)
        for i, s in enumerate(model_sites(model.cfg.n_layers, kinds))
    }


@pytest.fixture(scope="module")
def rm64(toy):
    """The toy model with fresh dictionaries, in float64 so that exact effects are not rounding noise."""
    from circuits.app.loading import load_model

    loaded = load_model("toy", device="cpu")
    loaded.model.to(torch.float64)
    dicts = {k: v.to(torch.float64) for k, v in dictionaries(loaded.model).items()}
    return loaded, ReplacementModel(loaded.model, dicts)


@pytest.fixture(scope="module")
def ioi(rm64):
    loaded, _ = rm64
    task = make_task("ioi", loaded.tokenizer, n=3)
    return attribution_inputs(task.batch(loaded.tokenizer.pad_id))


@pytest.fixture(scope="module")
def linear_model():
    """A tiny model without LayerNorm: the metric is linear in the last residual site."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        n_ctx=16,
        d_vocab=12,
        act_fn="gelu",
        normalization_type=None,
        seed=3,
    )
    model = TransformerBridge.boot_native(cfg).to(torch.float64)
    model.eval()
    dicts = {k: v.to(torch.float64) for k, v in dictionaries(model, seed=5).items()}
    return ReplacementModel(model, dicts)


def logit_diff_metric(a: int, b: int):
    def metric(logits, index):
        return logits[:, -1, a] - logits[:, -1, b]

    return metric


def random_inputs(seed: int, lengths: list[int], width: int = 7) -> AttributionInputs:
    """Random clean and counterfactual prompts for the tiny model (vocabulary 12), logit difference 1 - 2."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 12, (len(lengths), width), generator=g)
    corrupted = torch.randint(0, 12, (len(lengths), width), generator=g)
    return AttributionInputs(clean, torch.tensor(lengths), logit_diff_metric(1, 2), corrupted)


def test_methods_agree_where_the_metric_is_linear_in_the_node(linear_model):
    rm = linear_model
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 12, (4, 7), generator=g)
    corrupted = torch.randint(0, 12, (4, 7), generator=g)
    inputs = AttributionInputs(clean, torch.full((4,), 7), logit_diff_metric(1, 2), corrupted)
    last = rm.site_names[-1]
    assert last == "L1.resid"
    out = {m: node_effects(rm, inputs, method=m, steps=4) for m in ("atp", "ig", "exact")}
    for method in ("atp", "ig"):
        assert torch.allclose(out[method].features[last], out["exact"].features[last], atol=1e-5)
        assert torch.allclose(out[method].errors[last], out["exact"].errors[last], atol=1e-5)
    assert out["exact"].features[last].abs().max() > 1e-3  # something real was compared
    # a nonlinear site really differs between the methods (the test above is not vacuous)
    assert not torch.allclose(out["atp"].features["L0.attn"], out["exact"].features["L0.attn"], atol=1e-5)
    # for the last site the direct edges into the metric are its total effects
    nodes = out["atp"]
    pm = PositionMap.tokens(inputs.clean_lengths, 7)
    edges = edge_effects(rm, inputs, nodes, [], pm)
    f, e = edges.to_metric[last]
    assert torch.allclose(f, pm.aggregate(nodes.features[last]), atol=1e-8)
    assert torch.allclose(e, pm.aggregate(nodes.errors[last]), atol=1e-8)
    # patched the other way (clean value into the counterfactual run), a node the metric is linear
    # in has the opposite effect; a nonlinear site's node does not
    from attribution.validate import _reversed

    swapped = _reversed(inputs, torch.full((4,), 7))
    assert swapped is not None and torch.equal(swapped.clean, corrupted) and torch.equal(swapped.corrupted, clean)
    back = node_effects(rm, swapped, method="exact")
    assert torch.allclose(back.features[last], -out["exact"].features[last], atol=1e-8)
    assert torch.allclose(back.errors[last], -out["exact"].errors[last], atol=1e-8)
    assert not torch.allclose(back.features["L0.attn"], -out["exact"].features["L0.attn"], atol=1e-5)
    # prompts of different lengths have no one-to-one reversal
    shorter = AttributionInputs(
        clean, torch.full((4,), 7), logit_diff_metric(1, 2), corrupted[:, :6], torch.arange(7).clamp(max=5).expand(4, 7)
    )
    assert _reversed(shorter, torch.full((4,), 6)) is None
    # a longer counterfactual padded to the same width, or lengths unknown: no reversal either
    assert _reversed(inputs, torch.full((4,), 8)) is None and _reversed(inputs, None) is None


def test_attribution_patching_is_the_derivative_of_exact_patching(rm64, ioi):
    """Exact patching with the change scaled by eps, divided by eps, tends to atp."""
    _, rm = rm64
    atp = node_effects(rm, ioi, method="atp")
    eps = 1e-5
    scaled = {
        n: SiteValues(v.f_clean, v.e_clean, v.f_clean + eps * v.df, v.e_clean + eps * v.de)
        for n, v in atp.values.items()
    }
    nodes = []
    for site in ("L0.attn", "L1.mlp", "L2.resid"):
        f = atp.features[site]
        flat = f.abs().flatten().argsort(descending=True)[:5]
        for i in flat.tolist():
            b, rest = divmod(i, f.shape[1] * f.shape[2])
            p, k = divmod(rest, f.shape[2])
            nodes.append((site, b, p, k))
        nodes.append((site, 0, 4, -1))
    feats, errs = exact_node_effects(rm, ioi, scaled, nodes=nodes)
    for site, b, p, k in nodes:
        fd = (feats[site][b, p, k] if k >= 0 else errs[site][b, p]) / eps
        a = atp.features[site][b, p, k] if k >= 0 else atp.errors[site][b, p]
        assert abs(float(fd - a)) <= 1e-3 * max(1.0, abs(float(a))), (site, b, p, k, float(fd), float(a))


def test_input_integrated_gradients_are_complete(rm64, ioi):
    """Summed over every node of the embedding site, IG over inputs is m(corrupted) - m(clean)."""
    _, rm = rm64
    ig = node_effects(rm, ioi, method="ig", steps=32)
    total = ig.features["embed"].sum((1, 2)) + ig.errors["embed"].sum(1)
    with torch.no_grad():
        m_clean = ioi.metric(rm.model(ioi.clean), ioi.index())
        m_corr = ioi.metric(rm.model(ioi.corrupted), ioi.index())
    # midpoint rule: error O(1/steps^2) of the curvature along the path
    assert torch.allclose(total, m_corr - m_clean, rtol=0.02, atol=0.02)


def test_per_site_integrated_gradients_are_complete_for_each_site(rm64, ioi):
    """Summed over one site's nodes, per-site IG is the effect of patching the whole site."""
    _, rm = rm64
    ig = node_effects(rm, ioi, method="ig", steps=32, ig_mode="per-site")
    for site in ("L0.mlp", "L1.attn"):
        v = ig.values[site]
        with torch.no_grad():
            m0 = ioi.metric(rm.run(ioi.clean).logits, ioi.index())
            m1 = ioi.metric(rm.run(ioi.clean, {site: NodeEdit(v.f_target, None, v.e_target, None)}).logits, ioi.index())
        total = ig.features[site].sum((1, 2)) + ig.errors[site].sum(1)
        assert torch.allclose(total, m1 - m0, rtol=0.02, atol=0.02)


def test_edges_agree_with_path_patching(rm64, ioi):
    """Neuron dictionaries (no encoder thresholds): first-order edges track path patching closely.

    With random ReLU dictionaries the clean-point Jacobian misses features pushed across their
    threshold, so the bar there is lower; trained dictionaries are measured by the
    ``validate-attribution`` command."""
    from replacement.dictionaries import DictionarySet

    loaded, rm = rm64
    neurons = ReplacementModel(loaded.model, DictionarySet.identity(loaded.model).to(torch.float64))
    v = validate_edges(neurons, ioi, n_edges=200, examples=2, steps=8)
    assert v.n_edges >= 100
    assert v.spearman > 0.9
    assert v.by_upstream_site and all(-1 <= r <= 1 for r in v.by_upstream_site.values())
    v = validate_edges(rm, ioi, n_edges=120, examples=1, steps=8)
    assert v.n_edges >= 60
    assert v.spearman > 0.4


def test_exact_local_edges_are_path_patching_where_the_metric_is_linear_in_the_target(linear_model):
    """Edges into the last site, where the metric is linear in the downstream node: an exact local
    edge is the real path-patching effect, computed here by hand (the upstream node's change added
    to the downstream site's input, the downstream feature re-encoded and patched into a clean run)
    and by the validation's path patching."""
    from attribution.validate import _graph_path_patch

    rm = linear_model
    inputs = random_inputs(1, [7])
    clean = inputs.clean
    nodes = node_effects(rm, inputs, method="atp")
    pm = PositionMap.tokens(inputs.clean_lengths, 7)
    last = rm.site_names[-1]
    f = nodes.features[last][0]
    targets = [Target(last, p, i) for p, i in torch.nonzero(f.abs() > 0)[:6].tolist()] + [Target(last, 6, ERROR)]
    exact = edge_effects(rm, inputs, nodes, targets, pm, ExactEdges(rows_per_run=7))
    scored = [(u, d, w) for u, d, w in exact.edges() if d is not None]
    by_kind = {}
    for u, d, w in scored:
        by_kind.setdefault((u[0], d[2] == ERROR), []).append((u, d, w))
    sample = [e for group in by_kind.values() for e in sorted(group, key=lambda e: -abs(e[2]))[:6]]
    assert len(sample) >= 12 and any(d[2] == ERROR for _, d, _ in sample)
    real = _graph_path_patch(rm, inputs, nodes.values, pm, [(u, d) for u, d, _ in sample])
    assert torch.allclose(torch.tensor([w for _, _, w in sample], dtype=real.dtype), real, atol=1e-9, rtol=1e-7)
    assert real.abs().max() > 1e-3
    # by hand, for the feature targets: L1.resid reads the residual stream, the sum of what L0.resid,
    # L1.attn and L1.mlp pass on
    with torch.no_grad():
        run = rm.run(clean)
        m0 = inputs.metric(run.logits, torch.zeros(1, dtype=torch.long))
        rec, dic = run.records[last], rm.dictionaries[last]
        checked = 0
        for u, d, w in sample:
            if d[2] == ERROR:
                continue
            v = nodes.values[u[0]]
            change = v.de[0, u[1]] if u[2] == ERROR else v.df[0, u[1], u[2]] * rm.dictionaries[u[0]].W_dec[u[2]]
            x = rec.x_in.clone()
            x[0, u[1]] += change
            f_new = rec.features.clone()
            f_new[0, d[1], d[2]] = dic.encode(x)[0, d[1], d[2]]
            mask = torch.zeros_like(f_new, dtype=torch.bool)
            mask[0, d[1], d[2]] = True
            edit = NodeEdit(f_new, mask, rec.error, torch.zeros(1, 7, dtype=torch.bool))
            by_hand = inputs.metric(rm.run(clean, {last: edit}).logits, torch.zeros(1, dtype=torch.long)) - m0
            assert abs(float(by_hand) - w) < 1e-9 + 1e-7 * abs(w)
            checked += 1
    assert checked >= 6
    # ... and the direct edges into the metric are exact too: for the last site they are its total
    # effects; every other site reaches the metric only through L1.resid, so has no direct edge
    fm, em = exact.to_metric[last]
    assert torch.allclose(fm, pm.aggregate(nodes.features[last]), atol=1e-9)
    assert torch.allclose(em, pm.aggregate(nodes.errors[last]), atol=1e-9)
    for site in rm.site_names[:-1]:
        assert exact.to_metric[site][0].abs().max() < 1e-12 and exact.to_metric[site][1].abs().max() < 1e-12
    # edges are direct: L0.resid replaces the stream, so nothing before it reaches layer 1 directly
    for t in targets:
        for site in ("embed", "L0.attn", "L0.mlp"):
            assert exact.incoming[t][site][0].abs().max() < 1e-12 and exact.incoming[t][site][1].abs().max() < 1e-12
    assert max(float(exact.incoming[t]["L0.resid"][0].abs().max()) for t in targets) > 1e-3


def test_graph_path_patching_is_the_exact_local_edge_where_both_are_exact(linear_model):
    """Position-agnostic edges into the last site of a LayerNorm-free model: the metric is linear in
    the downstream node and each token of it reads its upstream sites at that token only, so patching
    the upstream node at every token (in the downstream input only) and then the downstream node at
    every token changes the metric by exactly the aggregated exact local edge; validate_graph_edges
    correlates them perfectly."""
    from attribution.validate import _graph_path_patch, validate_graph_edges

    rm = linear_model
    inputs = random_inputs(5, [7, 6, 7])
    nodes = node_effects(rm, inputs, method="atp")
    pm = PositionMap.agnostic(inputs.clean_lengths, 7)
    last = rm.site_names[-1]
    f = pm.aggregate(nodes.features[last])[0]
    targets = [Target(last, 0, int(i)) for i in f.abs().argsort(descending=True)[:5]] + [Target(last, 0, ERROR)]
    exact = edge_effects(rm, inputs, nodes, targets, pm, ExactEdges())
    by_site = {}
    for u, d, w in exact.edges(threshold=1e-12):  # what comes before L0.resid has no direct path (rounding only)
        if d is not None:
            by_site.setdefault(u[0], []).append((u, d, w))
    sample = [e for es in by_site.values() for e in sorted(es, key=lambda e: -abs(e[2]))[:5]]
    assert {u[0] for u, _, _ in sample} == {"L0.resid", "L1.attn", "L1.mlp"} and any(
        d[2] == ERROR for _, d, _ in sample
    )
    real = _graph_path_patch(rm, inputs, nodes.values, pm, [(u, d) for u, d, _ in sample], rows=7)
    assert real.abs().max() > 1e-3
    assert torch.allclose(torch.tensor([w for _, _, w in sample], dtype=real.dtype), real, atol=1e-9, rtol=1e-7)
    v = validate_graph_edges(rm, inputs, n_edges=60, method="atp", local="exact", targets_per_site=4)
    assert v.n_edges >= 30 and v.spearman > 0.9


def test_graph_path_patching_is_the_per_example_intervention(linear_model):
    """Token groups, edges across positions (into attention) included: the batched graph path patching
    equals the intervention done example by example and edge by edge."""
    from attribution.edges import decoder_rows
    from attribution.validate import _graph_path_patch

    rm = linear_model
    inputs = random_inputs(6, [7, 5, 7])
    clean = inputs.clean
    nodes = node_effects(rm, inputs, method="atp")
    pm = PositionMap.tokens(inputs.clean_lengths, 7)
    edges = [
        (("L0.resid", 1, int(nodes.values["L0.resid"].df[0, 1].abs().argmax())), ("L1.attn", 4, 3)),
        (("L0.resid", 2, ERROR), ("L1.attn", 6, ERROR)),
        (("embed", 0, int(nodes.values["embed"].df[0, 0].abs().argmax())), ("L0.mlp", 0, 5)),
        (("L1.attn", 6, 2), ("L1.resid", 6, 7)),
    ]
    real = _graph_path_patch(rm, inputs, nodes.values, pm, edges, rows=4)  # two edges of 3 examples per run
    with torch.no_grad():
        clean_run = rm.run(clean)
        m0 = inputs.metric(clean_run.logits, torch.arange(3))
        for k, ((s, gu, i), (s2, gd, j)) in enumerate(edges):
            total = 0.0
            for b in range(3):
                if gu >= int(inputs.clean_lengths[b]) or gd >= int(inputs.clean_lengths[b]):
                    continue  # the group has no token in this example
                v = nodes.values[s]
                outs = {m: r.output[b : b + 1].clone() for m, r in clean_run.records.items()}
                change = (
                    v.de[b, gu]
                    if i == ERROR
                    else v.df[b, gu, i] * decoder_rows(rm.dictionaries[s], v.f_clean, v.df.dtype)[i]
                )
                outs[s][0, gu] += change
                rec = rm.run_with_outputs(clean[b : b + 1], outs).records[s2]
                ref = clean_run.records[s2]
                f_new, e_new = ref.features[b : b + 1].clone(), ref.error[b : b + 1].clone()
                if j == ERROR:
                    e_new[0, gd] = rec.error[0, gd]
                else:
                    f_new[0, gd, j] = rec.features[0, gd, j]
                logits = rm.run(clean[b : b + 1], {s2: NodeEdit(f_new, None, e_new, None)}).logits
                total += float(inputs.metric(logits, torch.tensor([b])) - m0[b])
            assert abs(float(real[k]) - total / 3) < 1e-10
    assert real.abs().max() > 1e-4


def test_exact_local_edges_tend_to_the_linear_ones_for_small_changes(linear_model):
    """Moving every node a fraction eps of the way to its target, exact local edges / eps approach the
    linear edges (the derivative) with an error of order eps: the two measure the same direct paths."""
    from attribution.core import SiteValues

    rm = linear_model
    inputs = random_inputs(4, [7, 7])
    nodes = node_effects(rm, inputs, method="atp")
    eps = 1e-6
    nodes.values = {
        n: SiteValues(v.f_clean, v.e_clean, v.f_clean + eps * v.df, v.e_clean + eps * v.de)
        for n, v in nodes.values.items()
    }
    pm = PositionMap.tokens(inputs.clean_lengths, 7)
    targets = []
    for site in ("L0.resid", "L1.attn", "L1.mlp", "L1.resid"):
        f = pm.aggregate(nodes.features[site])
        targets += [Target(site, p, i) for p, i in torch.nonzero(f.abs() > 0)[:8].tolist()] + [Target(site, 5, ERROR)]
    linear = edge_effects(rm, inputs, nodes, targets, pm)
    exact = edge_effects(rm, inputs, nodes, targets, pm, ExactEdges())
    scale = max(float(linear.incoming[t][s][0].abs().max()) for t in targets for s in linear.incoming[t])
    assert scale > 0
    for t in targets:
        for site, (f, e) in linear.incoming[t].items():
            assert torch.allclose(exact.incoming[t][site][0], f, atol=1e-4 * scale, rtol=0)
            assert torch.allclose(exact.incoming[t][site][1], e, atol=1e-4 * scale, rtol=0)
    for site, (f, _) in linear.to_metric.items():
        assert torch.allclose(exact.to_metric[site][0], f, atol=1e-4 * scale, rtol=0)


def test_exact_local_edges_aggregate_like_the_scores(linear_model):
    """Token-level exact local edges summed over downstream and upstream positions (and averaged over
    examples) are the position-agnostic ones; fewer rows per run change nothing."""
    rm = linear_model
    inputs = random_inputs(2, [7, 5, 6])
    nodes = node_effects(rm, inputs, method="ig", steps=2)
    tok = PositionMap.tokens(inputs.clean_lengths, 7)
    agn = PositionMap.agnostic(inputs.clean_lengths, 7)
    site = "L1.mlp"
    feats = [int(i) for i in nodes.features[site].abs().sum((0, 1)).argsort(descending=True)[:3]]
    tok_targets = [Target(site, p, i) for p in range(7) for i in feats] + [Target(site, p, ERROR) for p in range(7)]
    agn_targets = [Target(site, 0, i) for i in feats] + [Target(site, 0, ERROR)]
    by_tok = edge_effects(rm, inputs, nodes, tok_targets, tok, ExactEdges())
    by_agn = edge_effects(rm, inputs, nodes, agn_targets, agn, ExactEdges(rows_per_run=33))
    biggest = 0.0
    for t in agn_targets:
        for up, (f, e) in by_agn.incoming[t].items():
            tf = sum(by_tok.incoming[Target(site, p, t.index)][up][0].sum(0) for p in range(7))
            te = sum(by_tok.incoming[Target(site, p, t.index)][up][1].sum() for p in range(7))
            assert torch.allclose(f[0], tf, atol=1e-10) and torch.allclose(e[0], te, atol=1e-10)
            biggest = max(biggest, float(f.abs().max()))
    assert biggest > 1e-4
    assert set(by_agn.incoming[agn_targets[0]]) == {"embed", "L0.attn", "L0.mlp", "L0.resid", "L1.attn"}


def test_exact_local_edges_track_path_patching_better_than_linear_ones(toy):
    """The shipped transcoders on IOI: the clean-point derivative misses name features switching off and
    attention moving; the exact local change does not."""
    import contextlib
    import io

    from circuits.app.loading import load_model, load_replacement

    loaded = load_model("toy", device="cpu")
    rm = load_replacement(loaded, None, "transcoders")
    with contextlib.redirect_stdout(io.StringIO()):
        rm.model.to(torch.float64)
    for d in rm.dictionaries.values():
        d.to(torch.float64)
    task = make_task("ioi", loaded.tokenizer, n=2)
    inputs = attribution_inputs(task.batch(loaded.tokenizer.pad_id))
    linear = validate_edges(rm, inputs, n_edges=120, examples=2, steps=4, method="atp")
    exact = validate_edges(rm, inputs, n_edges=120, examples=2, steps=4, method="atp", local="exact")
    assert exact.n_edges >= 100
    assert exact.spearman > 0.95 and exact.spearman > linear.spearman + 0.05


class _DoubledEncoder(torch.nn.Module):
    """A dictionary whose features are twice its pre-activations: not ``mask * (x W_enc + b_enc)``."""

    def __init__(self, d):
        super().__init__()
        self.d, self.cfg, self.W_enc, self.b_enc, self.W_dec = d, d.cfg, d.W_enc, d.b_enc, d.W_dec

    def process_sae_in(self, x):
        return self.d.process_sae_in(x)

    def encode(self, x):
        return 2 * self.d.encode(x)

    def decode(self, f):
        return self.d.decode(f)


def test_encoder_shortcut_gives_the_autograd_edges(rm64, ioi):
    """Rows started at the site input with an encoder column equal rows differentiated through the encoder;
    a dictionary the shortcut does not fit is detected and takes the autograd path."""
    from attribution.edges.linear import _encoder_columns

    loaded, rm = rm64
    odd = ReplacementModel(loaded.model, {**rm.dictionaries, "L1.mlp": _DoubledEncoder(rm.dictionaries["L1.mlp"])})
    pm = PositionMap.tokens(ioi.clean_lengths, ioi.clean.shape[1])
    for model, fits in ((rm, True), (odd, False)):
        nodes = node_effects(model, ioi, method="atp")
        run = model.run_leaf(ioi.clean)
        rec = run.records["L1.mlp"]
        assert _encoder_columns(model.dictionaries["L1.mlp"], rec.x_in, rec.features) is fits
        targets = []
        for site in ("L1.mlp", "L2.resid"):
            f = pm.aggregate(nodes.features[site])
            targets += [Target(site, p, i) for p, i in torch.nonzero(f.abs() > 0)[:20].tolist()] + [
                Target(site, 6, ERROR)
            ]
        fast = edge_effects(model, ioi, nodes, targets, pm, LinearEdges(rows_per_pass=16))
        slow = edge_effects(model, ioi, nodes, targets, pm, LinearEdges(encoder_shortcut=False))
        biggest = 0.0
        for t in targets:
            for site, (f, e) in slow.incoming[t].items():
                assert torch.allclose(fast.incoming[t][site][0], f, atol=1e-12)
                assert torch.allclose(fast.incoming[t][site][1], e, atol=1e-12)
                biggest = max(biggest, float(f.abs().max()))
        assert biggest > 1e-3


def test_sparse_contraction_equals_the_dense_product(monkeypatch):
    """Edges contracted at the changed features only (few change) or densely (most change) equal
    (G W_dec^T) * df aggregated, in one step or example by example."""
    from attribution.edges import linear as E

    g = torch.Generator().manual_seed(0)
    b, t, d_sae, d = 5, 7, 40, 8
    W = torch.randn(d_sae, d, generator=g, dtype=torch.float64)
    de = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    pm = PositionMap.tokens(torch.tensor([7, 5, 6, 7, 3]), t)
    G = torch.randn(3, b, t, d, generator=g, dtype=torch.float64)
    valid = pm.group >= 0
    for density, sparse in ((0.05, True), (0.6, False)):
        df = torch.randn(b, t, d_sae, generator=g, dtype=torch.float64) * (
            torch.rand(b, t, d_sae, generator=g) < density
        )
        dense_f = torch.stack([pm.aggregate((G[r] @ W.T) * df * valid[..., None]) for r in range(3)])
        dense_e = torch.stack([pm.aggregate((G[r] * de).sum(-1) * valid) for r in range(3)])
        c = E._Contraction(W, df, de, pm, 1.0)
        assert c.sparse is sparse
        for budget in (E.BUDGET, 1):
            monkeypatch.setattr(E, "BUDGET", budget)
            f, e = c(G, 3)
            assert torch.allclose(f, dense_f, atol=1e-12) and torch.allclose(e, dense_e, atol=1e-12)
        assert dense_f.abs().max() > 0.1


class _NormScaledDecoder(torch.nn.Module):
    """A linear decoder that is not ``f @ W_dec + b_dec``: features are scaled by decoder row norms."""

    def __init__(self, W):
        super().__init__()
        self.W_dec = W

    def decode(self, f):
        return (f / self.W_dec.norm(dim=-1)) @ self.W_dec + 1.0


def test_decoder_rows_measure_any_linear_decoder():
    from attribution.edges import decoder_rows
    from attribution.edges.linear import _encoder_columns

    g = torch.Generator().manual_seed(1)
    W = torch.randn(30, 6, generator=g, dtype=torch.float64)
    d = _NormScaledDecoder(W)
    f = torch.rand(2, 3, 30, generator=g, dtype=torch.float64)
    rows = decoder_rows(d, f, torch.float64)
    assert torch.allclose(rows, W / W.norm(dim=-1, keepdim=True), atol=1e-12)
    assert torch.allclose(f @ rows + 1.0, d.decode(f), atol=1e-12)
    # a dictionary without SAELens' process_sae_in is not given the encoder shortcut
    d.cfg, d.W_enc, d.b_enc = object(), torch.zeros(6, 30, dtype=torch.float64), torch.zeros(30, dtype=torch.float64)
    assert (
        _encoder_columns(d, torch.zeros(2, 3, 6, dtype=torch.float64), torch.zeros(2, 3, 30, dtype=torch.float64))
        is False
    )


def test_span_aggregation_sums_within_spans_and_averages_examples():
    group = torch.tensor([[0, 0, 1, 2, -1], [0, 1, 1, 1, 2]])
    pm = PositionMap(group, ["a", "b", "c"], "schema")
    x = torch.arange(10, dtype=torch.float).view(2, 5)
    out = pm.aggregate(x)
    assert out.tolist() == [((0 + 1) + 5) / 2, (2 + (6 + 7 + 8)) / 2, (3 + 9) / 2]
    agn = PositionMap.agnostic(torch.tensor([4, 5]), 5)
    assert agn.aggregate(x).tolist() == [(0 + 1 + 2 + 3 + 5 + 6 + 7 + 8 + 9) / 2]


def test_counterfactual_positions_follow_the_schema(toy):
    from circuits.data.schema import Schema
    from circuits.data.tasks import Example, Task

    tok = toy.tokenizer
    clean = tok.encode("The teachers near the desk")
    corr = (
        tok.encode("The teacher near the big desk")
        if "big" in tok.vocab
        else tok.encode("The teacher near the the desk")
    )
    s1 = Schema.from_starts(["prefix", "subj", "prep", "det", "end"], [0, 2, 3, 4, 5], len(clean))
    s2 = Schema.from_starts(["prefix", "subj", "prep", "det", "end"], [0, 2, 3, 4, 6], len(corr))
    task = Task("t", [Example(clean, corr, [tok.vocab["are"]], [tok.vocab["is"]], s1, s2)])
    pos = corrupted_positions(task.batch(tok.pad_id))
    assert pos.tolist() == [[0, 1, 2, 3, 4, 6]]


def test_bad_inputs_are_clear_errors(rm64, ioi):
    _, rm = rm64
    two = AttributionInputs(ioi.clean, ioi.clean_lengths, lambda logits, idx: logits[:, -1, :2], ioi.corrupted)
    with pytest.raises(AttributionError, match="one value per example"):
        node_effects(rm, two, method="atp")
    nan = AttributionInputs(
        ioi.clean, ioi.clean_lengths, lambda logits, idx: logits[:, -1, 0] * float("nan"), ioi.corrupted
    )
    with pytest.raises(AttributionError, match="NaN"):
        node_effects(rm, nan, method="atp")
    with pytest.raises(AttributionError, match="corrupted"):
        AttributionInputs(ioi.clean, ioi.clean_lengths, ioi.metric, ioi.corrupted[:2])
    with pytest.raises(AttributionError, match="differ in length"):
        AttributionInputs(ioi.clean, ioi.clean_lengths, ioi.metric, ioi.corrupted[:, :-1])
    with pytest.raises(AttributionError, match="steps"):
        node_effects(rm, ioi, method="ig", steps=0)
    with pytest.raises(AttributionError, match="method"):
        node_effects(rm, ioi, method="magic")
    nodes = node_effects(rm, ioi, method="atp")
    pm = PositionMap.tokens(ioi.clean_lengths, ioi.clean.shape[1])
    with pytest.raises(AttributionError, match="unknown site"):
        edge_effects(rm, ioi, nodes, [Target("L9.attn", 0, ERROR)], pm)
    with pytest.raises(AttributionError, match="unknown local"):
        edge_effects(rm, ioi, nodes, [], pm, edge_method("sideways"))
    with pytest.raises(AttributionError, match="jacobian_steps"):
        edge_effects(rm, ioi, nodes, [], pm, edge_method("exact", jacobian_steps=2))


def test_more_bad_inputs_are_clear_errors(rm64, ioi):
    _, rm = rm64
    detached = AttributionInputs(
        ioi.clean, ioi.clean_lengths, lambda logits, idx: ioi.metric(logits, idx).detach(), ioi.corrupted
    )
    for method in ("atp", "ig"):
        with pytest.raises(AttributionError, match="no gradient"):
            node_effects(rm, detached, method=method, steps=2)
    with pytest.raises(AttributionError, match="per-site"):
        node_effects(rm, ioi, method="ig", baseline="zero", ig_mode="inputs")
    zero = node_effects(rm, ioi, method="ig", steps=2, baseline="zero")  # per site by default
    explicit = node_effects(rm, ioi, method="ig", steps=2, baseline="zero", ig_mode="per-site")
    assert zero.baseline == "zero" and all(torch.equal(zero.features[s], explicit.features[s]) for s in zero.sites)
    pm = PositionMap.tokens(ioi.clean_lengths, ioi.clean.shape[1])
    with pytest.raises(AttributionError, match="counterfactual prompt"):
        edge_effects(rm, ioi, zero, [], pm, LinearEdges(jacobian_steps=2))
    with pytest.raises(AttributionError, match="chunk"):
        node_effects(rm, ioi, method="exact", chunk=0)
    # corrupted positions: -1 only on padding, never on a real token
    pos = ioi.corrupted_position.clone()
    pos[0, 0] = -1
    with pytest.raises(AttributionError, match="real token"):
        AttributionInputs(ioi.clean, ioi.clean_lengths, ioi.metric, ioi.corrupted, pos)
    with pytest.raises(AttributionError, match="clean_lengths"):
        AttributionInputs(ioi.clean, ioi.clean_lengths + ioi.clean.shape[1], ioi.metric, ioi.corrupted)
    # edge targets outside the position map or the dictionary, and a map of another batch
    nodes = node_effects(rm, ioi, method="atp")
    site = rm.site_names[-1]
    with pytest.raises(AttributionError, match="position must lie"):
        edge_effects(rm, ioi, nodes, [Target(site, pm.n_positions, 0)], pm)
    with pytest.raises(AttributionError, match="index must be a feature"):
        edge_effects(rm, ioi, nodes, [Target(site, 0, rm.d_sae(site))], pm)
    with pytest.raises(AttributionError, match="position map"):
        edge_effects(rm, ioi, nodes, [], PositionMap.tokens(ioi.clean_lengths, ioi.clean.shape[1] + 1))


def test_half_precision_models_run_every_method(toy):
    """bf16 models: every method runs in the model's dtype and gives the float32 numbers to bf16 precision."""
    from circuits.app.loading import load_model

    def setup(dtype):
        loaded = load_model("toy", device="cpu")
        loaded.model.to(dtype)
        rm = ReplacementModel(loaded.model, {k: v.to(dtype) for k, v in dictionaries(loaded.model).items()})
        task = make_task("sva-simple", loaded.tokenizer, n=2)
        return rm, attribution_inputs(task.batch(loaded.tokenizer.pad_id))

    (rm32, in32), (rm16, in16) = setup(torch.float32), setup(torch.bfloat16)
    for mode in ("inputs", "per-site"):
        ref, half = (node_effects(rm, x, method="ig", steps=4, ig_mode=mode) for rm, x in ((rm32, in32), (rm16, in16)))
        assert all(f.dtype == torch.bfloat16 for f in half.features.values())
        for site in ref.sites:  # each site's total effect (its nodes summed)
            a = float(ref.features[site].sum() + ref.errors[site].sum())
            b = float(half.features[site].float().sum() + half.errors[site].float().sum())
            assert abs(a - b) < 0.06 * abs(a) + 0.05, (mode, site, a, b)
    pm = PositionMap.tokens(in16.clean_lengths, in16.clean.shape[1])
    target = Target(rm16.site_names[-1], int(in16.clean_lengths[0]) - 1, ERROR)
    for method in (LinearEdges(), ExactEdges(), LinearEdges(jacobian_steps=2)):
        assert edge_effects(rm16, in16, half, [target], pm, method).edges()


def test_exact_patching_is_the_same_in_any_number_of_rows_per_pass(linear_model, monkeypatch):
    """Rows per forward pass are sized by the memory budget; one row per pass gives the same effects
    (up to float64 rounding), and an effect equals patching that one node by hand."""
    import attribution.core as C

    inputs = random_inputs(11, [7, 5, 6])
    full = node_effects(linear_model, inputs, method="exact")
    monkeypatch.setattr(C, "BUDGET", 1)
    single = node_effects(linear_model, inputs, method="exact", chunk=1)
    for s in full.sites:  # the same up to float64 rounding (batch shape changes the kernels' summation order)
        torch.testing.assert_close(full.features[s], single.features[s], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(full.errors[s], single.errors[s], rtol=1e-9, atol=1e-12)
    site = linear_model.site_names[1]
    v = full.values[site]
    b, p, f = (int(i) for i in torch.nonzero(v.df != 0)[0])
    fmask = torch.zeros_like(v.f_clean[b : b + 1], dtype=torch.bool)
    fmask[0, p, f] = True
    run = linear_model.run(inputs.clean[b : b + 1], {site: NodeEdit(v.f_target[b : b + 1], fmask)})
    one = inputs.metric(run.logits, torch.tensor([b])) - inputs.metric(
        linear_model.run(inputs.clean[b : b + 1]).logits, torch.tensor([b])
    )
    assert float(full.features[site][b, p, f]) == pytest.approx(float(one), abs=1e-12)
