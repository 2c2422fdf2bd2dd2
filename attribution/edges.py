"""Edge effects: how much of an upstream node's effect flows through a downstream node.

For an upstream node ``u`` (site ``s``) and a downstream node ``d`` (a later site ``s'``), the edge
effect is ``g_d . (d d / d u) . delta_u``: the downstream node's (integrated) metric gradient, times
the direct derivative of ``d`` with respect to ``u`` at the clean input, times the upstream node's
change. "Direct" means every site other than ``s`` and ``s'`` is held fixed: the model is run
once in leaf mode (each site output rebuilt from detached leaves ``decode(F) + E``), so the
derivative of a downstream site's live features with respect to an upstream site's leaves follows
only paths that cross no other site. With SAEs on attn, mlp and resid this yields exactly the
edge kinds of Sparse Feature Circuits (embed/resid -> attn, resid -> mlp, attn -> mlp,
attn/mlp -> resid, resid -> resid); with transcoders it yields feature -> feature edges. Edges
across positions arise only through attention and are indexed by (upstream, downstream) position.

Rows are batched: one backward pass computes the edges into many downstream nodes at once
(``torch.autograd.grad`` with ``is_grads_batched``), the way circuit-tracer batches adjacency rows.
Scores are aggregated on the fly over examples (mean) and over positions of the same group
(token, schema span, or everything), so memory holds only aggregated rows.

``local="exact"`` replaces the direct derivative by the downstream node's actual direct change:
each changed upstream node is patched alone in a run where every site passes on its clean output
(one batch row per node, :func:`direct_outputs`), and ``g_d . (d(u -> target) - d(clean))`` is the
edge. Where a sublayer is far from linear in one upstream node (a name token's features switching
attention from one position to another) this is what path patching measures, at the price of one
forward row per changed upstream node instead of one backward row per downstream node; it is
meant for small graphs and for checking the linear edges.

Two shortcuts keep the linear rows cheap without changing a number: a row is differentiated back to the
upstream site *outputs* (model width), and contracted only with the features that actually
change at each position (a few per position, not ``d_sae``); and a feature row of a ReLU / TopK /
JumpReLU dictionary starts at the site input with the feature's encoder column instead of a
backward pass through the whole encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from attribution.core import BUDGET, AttributionError, AttributionInputs, SiteValues, check_metric_values, rows_within_budget
from attribution.nodes import EMBED_HOOK, NodeEffects, PassCounter, _alphas, _embed_values, active_nodes, moved_masks
from attribution.positions import PositionMap
from replacement.model import ReplacementModel

log = logging.getLogger(__name__)

ERROR = -1  # index of a site's error node
LOCAL = ("linear", "exact")  # how an edge measures the downstream node's direct change
MAX_EXACT_ROWS = 5_000_000  # upstream nodes exact local edges patch one by one, at most


@dataclass(frozen=True)
class Target:
    """A downstream node in aggregated coordinates: site, aggregated position, feature (-1: error)."""

    site: str
    position: int
    index: int


@dataclass
class EdgeEffects:
    """Aggregated edges into each target.

    ``incoming[target][site]`` is a pair (features [n_positions, d_sae], errors [n_positions]) of
    edge effects from every node of that upstream site into ``target``; ``to_metric[site]`` the
    direct edges from each node into the metric.
    """

    incoming: dict[Target, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    to_metric: dict[str, tuple[torch.Tensor, torch.Tensor]]
    positions: PositionMap
    passes: PassCounter = field(default_factory=PassCounter)

    def edges(self, threshold: float = 0.0) -> list[tuple[tuple[str, int, int], tuple[str, int, int] | None, float]]:
        """Every edge with |effect| > threshold as ((site, pos, index), target or None for the metric, effect)."""
        out = []
        for tgt, by_site in list(self.incoming.items()) + [(None, self.to_metric)]:
            for site, (f, e) in by_site.items():
                pf, ff = torch.nonzero(f.abs() > threshold, as_tuple=True)
                for p, i in zip(pf.tolist(), ff.tolist()):
                    out.append(((site, p, i), None if tgt is None else (tgt.site, tgt.position, tgt.index), float(f[p, i])))
                for p in torch.nonzero(e.abs() > threshold, as_tuple=True)[0].tolist():
                    out.append(((site, p, ERROR), None if tgt is None else (tgt.site, tgt.position, tgt.index), float(e[p])))
        return out


def _encoder_columns(d, x_in: torch.Tensor, f: torch.Tensor) -> bool:
    """Whether ``f = mask * (x_in W_enc + b_enc)`` with ``mask = (f != 0)`` (ReLU, TopK, JumpReLU, identity).

    Then the derivative of feature ``i`` with respect to the site input is ``W_enc[:, i]`` where it
    is active and zero elsewhere, and a row needs one column of ``W_enc`` instead of a backward pass
    through the whole encoder. Checked on the values at hand: gated or normalising encoders fail
    the check and take the autograd path.
    """
    if getattr(d.cfg, "normalize_activations", "none") not in (None, "none"):
        return False
    W, b = getattr(d, "W_enc", None), getattr(d, "b_enc", None)
    if not callable(getattr(d, "process_sae_in", None)):
        return False
    if not isinstance(W, torch.Tensor) or not isinstance(b, torch.Tensor) or tuple(W.shape) != (x_in.shape[-1], f.shape[-1]):
        return False
    with torch.no_grad():
        pre = d.process_sae_in(x_in.detach()) @ W + b
        gated = torch.where(f != 0, pre, torch.zeros_like(pre))
        return bool((gated - f.detach()).abs().max() <= 1e-4 * (1.0 + float(f.detach().abs().max())))


@torch.no_grad()
def decoder_rows(d, f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What one unit of each feature adds to a site's output: ``decode(e_i) - decode(0)``, [d_sae, d].

    That is ``W_dec`` for the usual ``f @ W_dec + b_dec`` (checked on the features ``f`` at hand);
    any other linear decoder (one that rescales by decoder norms, say) is measured by decoding one
    feature at a time.
    """
    W = d.W_dec
    sample = f.reshape(-1, f.shape[-1])[:256].to(W.dtype)
    zero = d.decode(torch.zeros(1, W.shape[0], dtype=W.dtype, device=W.device))
    if torch.allclose(d.decode(sample) - zero, sample @ W, rtol=1e-4, atol=1e-5 * (1.0 + float(sample.abs().max()))):
        return W.to(dtype)
    rows = []
    chunk = max(1, BUDGET // 4 // W.shape[0])
    for s in range(0, W.shape[0], chunk):
        eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)[s : s + chunk]
        rows.append(d.decode(eye) - zero)
    return torch.cat(rows).to(dtype)


class _Contraction:
    """Edge effects of one upstream site from metric gradients at its output, without d_sae-wide tensors.

    An upstream feature changes only where clean and target differ, a few features per (example,
    position); the edge from feature ``i`` is ``(G[b, p] . W_dec[i]) * df[b, p, i]``, computed for
    those features alone and summed into position groups (mean over examples). Where most features
    change (a mean or zero baseline) the dense product ``G @ W_dec^T`` is cheaper and is used instead.
    Work is split over examples so that no intermediate holds much more than ``BUDGET`` numbers.
    """

    def __init__(self, W_dec: torch.Tensor, df: torch.Tensor, de: torch.Tensor, positions: PositionMap, scale: float):
        b, t, d_sae = df.shape
        self.d_sae, self.n_groups, self.d = d_sae, positions.n_positions, W_dec.shape[-1]
        group = positions.group.to(df.device)
        valid = group >= 0
        moved = (df != 0) & valid[..., None]
        self.k = max(1, int(moved.sum(-1).max()))
        self.sparse = 4 * self.k <= d_sae
        if self.sparse:
            self.idx = torch.topk(moved.to(torch.float32), self.k, dim=-1).indices  # [b, t, k]: moved features first
            self.val = df.gather(-1, self.idx) * moved.gather(-1, self.idx).to(df.dtype) * (scale / b)
        else:
            self.idx = torch.arange(d_sae, device=df.device).expand(b, t, d_sae)
            self.val = df * moved.to(df.dtype) * (scale / b)
        self.W_dec = W_dec.to(df.dtype)
        self.de = de * (scale / b)
        self.valid = valid
        self.group = group

    def __call__(self, G: torch.Tensor | None, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``G`` [rows, batch, pos, d] (or None: no path) -> features [rows, groups, d_sae], errors [rows, groups]."""
        f = torch.zeros(rows, self.n_groups * self.d_sae, device=self.val.device, dtype=self.val.dtype)
        e = torch.zeros(rows, self.n_groups, device=self.val.device, dtype=self.val.dtype)
        if G is None:
            return f.view(rows, self.n_groups, self.d_sae), e
        G = G.to(self.val.dtype)
        t = G.shape[2]
        per_example = t * (self.k * (self.d + rows) if self.sparse else rows * self.d_sae)
        step = max(1, BUDGET // max(1, per_example))
        for s in range(0, G.shape[1], step):
            sl = slice(s, s + step)
            if self.sparse:
                proj = torch.einsum("rbtd,btkd->rbtk", G[:, sl], self.W_dec[self.idx[sl]])
            else:
                proj = G[:, sl] @ self.W_dec.T
            flat = self.group[sl].clamp(min=0)[..., None] * self.d_sae + self.idx[sl]
            f.index_add_(1, flat.flatten(), (proj * self.val[sl]).reshape(rows, -1))
            valid = self.valid[sl]
            e.index_add_(1, self.group[sl][valid], torch.einsum("rbtd,btd->rbt", G[:, sl], self.de[sl])[:, valid])
        return f.view(rows, self.n_groups, self.d_sae), e


def edge_effects(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    targets: list[Target],
    positions: PositionMap,
    rows_per_pass: int = 64,
    progress: bool = False,
    jacobian_steps: int = 1,
    encoder_shortcut: bool = True,
    local: str = "linear",
    rows_per_run: int | None = None,
) -> EdgeEffects:
    """Edges from every upstream node into each of ``targets``, and every node's direct edge into the metric.

    ``nodes`` supplies the downstream gradients (IG-averaged when computed with ``ig``) and the
    upstream changes; ``positions`` the aggregation (token, span or agnostic). With
    ``jacobian_steps`` > 1 the direct derivative is averaged over that many points of the
    clean -> counterfactual input path (midpoints) instead of taken at the clean input alone.
    ``encoder_shortcut``: start a feature row at the target site's input with its encoder column
    where the encoder allows it (:func:`_encoder_columns`; the same numbers, much less work);
    ``False`` always differentiates through the encoder.
    ``local``: ``"linear"`` (the derivative, batched vector-Jacobian products) or ``"exact"`` (the
    actual direct change of each downstream node, ``rows_per_run`` patched upstream nodes per
    forward pass, by default as many as ``BUDGET`` allows; see the module docstring).
    """
    if jacobian_steps < 1:
        raise AttributionError(f"jacobian_steps must be at least 1, got {jacobian_steps}")
    if local not in LOCAL:
        raise AttributionError(f"unknown local {local!r}; expected one of {LOCAL}")
    if local == "exact" and jacobian_steps != 1:
        raise AttributionError("jacobian_steps applies to linear edges only; exact local changes need no derivative")
    if not nodes.grads:
        raise AttributionError("edge effects need node effects computed with 'atp' or 'ig' (they carry the gradients)")
    if jacobian_steps > 1 and nodes.baseline != "corrupted":
        raise AttributionError("jacobian_steps > 1 averages along the input path to the counterfactual prompt; it needs the 'corrupted' baseline")
    targets = list(dict.fromkeys(targets))  # a target listed twice is one target
    site_order = {s: i for i, s in enumerate(rm.site_names)}
    if tuple(positions.group.shape) != tuple(inputs.clean.shape):
        raise AttributionError(
            f"the position map is [{', '.join(map(str, positions.group.shape))}] but the batch is "
            f"[{', '.join(map(str, inputs.clean.shape))}]"
        )
    for t in targets:
        if t.site not in site_order:
            raise AttributionError(f"unknown site {t.site!r} in edge targets; sites are {', '.join(rm.site_names)}")
        if not 0 <= t.position < positions.n_positions:
            raise AttributionError(f"edge target {t}: position must lie in [0, {positions.n_positions}) ({positions.mode} positions)")
        if not ERROR <= t.index < rm.d_sae(t.site):
            raise AttributionError(f"edge target {t}: index must be a feature of {t.site} (< {rm.d_sae(t.site)}) or {ERROR} for its error")
    if local == "exact":
        return _exact_local_edges(rm, inputs, nodes, targets, positions, rows_per_run, progress)
    counter = PassCounter()
    valid = inputs.valid
    values = nodes.values
    by_site: dict[str, list[Target]] = {}
    for t in targets:
        by_site.setdefault(t.site, []).append(t)
    incoming: dict[Target, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {t: {} for t in targets}
    to_metric: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    contractions = {
        n: _Contraction(decoder_rows(rm.dictionaries[n], v.f_clean, v.df.dtype), v.df, v.de, positions, 1.0 / jacobian_steps)
        for n, v in values.items()
    }

    def add(store: dict, name: str, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
        if name in store:
            store[name] = (store[name][0] + pair[0], store[name][1] + pair[1])
        else:
            store[name] = pair

    if jacobian_steps == 1:
        hooks_per_step: list[list] = [[]]
    else:
        x0, x1 = _embed_values(rm, inputs, values)
        hooks_per_step = [
            [(EMBED_HOOK, lambda x, hook, v=x0 + a * (x1 - x0): v)] for a in _alphas(jacobian_steps)
        ]
    group = positions.group.to(inputs.clean.device)
    bar = tqdm(total=len(targets) * len(hooks_per_step), desc="edge attribution", disable=not progress, leave=False)
    for hooks in hooks_per_step:
        # Leaf mode: each site output is rebuilt from detached leaves, so the gradient at an upstream
        # site's output follows only the direct paths that cross no other site.
        run = rm.run(inputs.clean, leaf=True, pre_hooks=hooks)
        counter.forward += 1
        recs = run.records
        names = list(recs)
        outputs = [recs[n].output for n in names]
        # Direct edges into the metric: one backward of the metric.
        m = check_metric_values(inputs.metric(run.logits, inputs.index()), inputs.batch_size, grad=True).sum()
        grads = torch.autograd.grad(m, outputs, retain_graph=True, allow_unused=True)
        counter.backward += 1
        for n, g in zip(names, grads):
            f, e = contractions[n](None if g is None else g[None], 1)
            add(to_metric, n, (f[0], e[0]))
        for site, tgts in by_site.items():
            upstream = [n for n in names if site_order[n] < site_order[site]]
            if not upstream:
                bar.update(len(tgts))
                continue
            up_out = [recs[n].output for n in upstream]
            rec, d = recs[site], rm.dictionaries[site]
            g = nodes.grads[site]  # [batch, pos, d_out]
            W_dec = contractions[site].W_dec.to(g.dtype)  # the decoder rows the upstream side uses too
            shortcut = encoder_shortcut and _encoder_columns(d, rec.x_in, rec.features)
            # feature rows and error rows start from different tensors; each kind is batched on its own
            kinds = [[t for t in tgts if t.index != ERROR], [t for t in tgts if t.index == ERROR]]
            for kind, rows in zip(("feature", "error"), kinds):
                for i in range(0, len(rows), rows_per_pass):
                    chunk = rows[i : i + rows_per_pass]
                    k = len(chunk)
                    sel = torch.stack([(group == t.position) & valid for t in chunk]).to(g.dtype)  # [k, batch, pos]
                    if kind == "error":
                        start, cot = rec.error, sel[..., None] * g
                    else:
                        idx = torch.tensor([t.index for t in chunk], device=g.device)
                        coef = sel * torch.einsum("btd,kd->kbt", g, W_dec[idx])  # downstream gradient of each feature
                        if shortcut:
                            active = rec.features.detach()[..., idx].permute(2, 0, 1) != 0
                            W_enc = d.W_enc.to(g.dtype)[:, idx].T  # [k, d_in]
                            start, cot = rec.x_in, (coef * active)[..., None] * W_enc[:, None, None, :]
                        else:
                            cot = torch.zeros(k, *rec.features.shape, device=g.device, dtype=rec.features.dtype)
                            cot.scatter_(-1, idx.view(k, 1, 1, 1).expand(k, *rec.features.shape[:2], 1), coef[..., None])
                            start = rec.features
                    outs = torch.autograd.grad(
                        [start], up_out, grad_outputs=[cot.to(start.dtype)],
                        retain_graph=True, allow_unused=True, is_grads_batched=True,
                    )
                    counter.backward += 1
                    for n, G in zip(upstream, outs):
                        f, e = contractions[n](G, k)
                        for j, t in enumerate(chunk):
                            add(incoming[t], n, (f[j], e[j]))
                    bar.update(k)
        del run, recs, outputs
    bar.close()
    return EdgeEffects(incoming, to_metric, positions, counter)


def direct_outputs(
    values: dict[str, SiteValues], clean_outputs: dict[str, torch.Tensor], decoders: dict[str, torch.Tensor],
    nodes: list[tuple[str, int, int, int]],
) -> dict[str, torch.Tensor]:
    """Every site's output for a batch of rows, row ``j`` patching ``nodes[j]`` = (site, example,
    position, feature | -1) alone: each site passes on its clean output, except that the node's own
    site adds the node's change (``delta_f * decoder row``, or the error's change) at its position.

    Run with ``rm.run(tokens, outputs=...)``, every later site then sees only the node's direct
    contribution at its input (its features and error are recomputed from that input, but what it
    passes on stays clean), and the logits only the node's direct path to the metric.
    """
    dev = next(iter(clean_outputs.values())).device
    ex = torch.tensor([n[1] for n in nodes], device=dev)
    outs = {m: o[ex].clone() for m, o in clean_outputs.items()}
    for name in dict.fromkeys(n[0] for n in nodes):
        sel = [j for j, n in enumerate(nodes) if n[0] == name]
        rows = torch.tensor(sel, device=dev)
        b, pos = ex[rows], torch.tensor([nodes[j][2] for j in sel], device=dev)
        idx = torch.tensor([nodes[j][3] for j in sel], device=dev)
        v, out = values[name], outs[name]
        err = idx == ERROR
        if bool(err.any()):
            out[rows[err], pos[err]] += (v.e_target - v.e_clean)[b[err], pos[err]].to(out.dtype)
        if bool((~err).any()):
            f = ~err
            delta = (v.f_target - v.f_clean)[b[f], pos[f], idx[f]]
            out[rows[f], pos[f]] += (delta[:, None] * decoders[name][idx[f]]).to(out.dtype)
    return outs


@torch.no_grad()
def _exact_local_edges(
    rm: ReplacementModel, inputs: AttributionInputs, nodes: NodeEffects, targets: list[Target], positions: PositionMap,
    rows_per_run: int | None, progress: bool,
) -> EdgeEffects:
    """Edges from the actual direct change of every downstream node (``edge_effects(local="exact")``).

    Each changed upstream node ``(site, example, position, feature | error)`` is one row of a run in
    which every site passes on its clean output except for that node's change
    (:func:`direct_outputs`): every site's input is then the clean input plus that node's direct
    contribution, so the row's records hold the direct change of every later node, and its metric
    the direct edge into the metric.
    """
    counter = PassCounter()
    values, valid, b = nodes.values, inputs.valid, inputs.batch_size
    group = positions.group.to(inputs.clean.device)
    site_order = {s: i for i, s in enumerate(rm.site_names)}
    n_groups = positions.n_positions
    clean = rm.run(inputs.clean)
    counter.forward += 1
    m_clean = check_metric_values(inputs.metric(clean.logits, inputs.index()), b)
    clean_outputs = {m: r.output for m, r in clean.records.items()}
    decoders = {n: decoder_rows(rm.dictionaries[n], v.f_clean, v.df.dtype) for n, v in values.items()}

    def selection(ts: list[Target], dtype: torch.dtype) -> torch.Tensor | None:
        """[k, batch, pos]: 1 where a token belongs to the target's aggregated position."""
        return torch.stack([(group == t.position) & valid for t in ts]).to(dtype) if ts else None

    # per target site: feature targets, their gradient weights [k, batch, pos] on the change of each
    # feature, the feature indices, error targets and their position selections
    per_site: dict[str, tuple[list[Target], torch.Tensor | None, torch.Tensor | None, list[Target], torch.Tensor | None]] = {}
    for site in dict.fromkeys(t.site for t in targets):
        g = nodes.grads[site]
        feats = [t for t in targets if t.site == site and t.index != ERROR]
        errs = [t for t in targets if t.site == site and t.index == ERROR]
        coef, idx = None, None
        if feats:
            idx = torch.tensor([t.index for t in feats], device=g.device)
            coef = selection(feats, g.dtype) * torch.einsum("btd,kd->kbt", g, decoders[site][idx].to(g.dtype))
        per_site[site] = (feats, coef, idx, errs, selection(errs, g.dtype))
    to_metric = {
        n: (torch.zeros(n_groups, v.df.shape[-1], dtype=v.df.dtype, device=v.df.device),
            torch.zeros(n_groups, dtype=v.df.dtype, device=v.df.device))
        for n, v in values.items()
    }
    # acc[(target site, upstream site)]: (features [k, groups, d_sae], errors [k, groups]) for the
    # site's targets in the order feature targets, then error targets
    acc: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for site, (feats, _, _, errs, _) in per_site.items():
        for n in rm.site_names:
            if site_order[n] < site_order[site]:
                v = values[n].df
                k = len(feats) + len(errs)
                acc[(site, n)] = (torch.zeros(k, n_groups, v.shape[-1], dtype=v.dtype, device=v.device),
                                  torch.zeros(k, n_groups, dtype=v.dtype, device=v.device))
    keep = valid & (group >= 0)
    n_rows = sum(int(f.sum()) + int(e.sum()) for f, e in moved_masks(values, keep).values())  # counted before listing them
    if n_rows > MAX_EXACT_ROWS:
        raise AttributionError(
            f"exact local edges would patch {n_rows} upstream nodes one by one (more than {MAX_EXACT_ROWS}); "
            "use local='linear', fewer examples, or a counterfactual baseline (a mean or zero baseline changes most features)"
        )
    upstream = active_nodes(values, keep)
    t = inputs.clean.shape[1]
    if rows_per_run is None:
        rows_per_run = rows_within_budget(values, t)
    for i in tqdm(range(0, len(upstream), rows_per_run), desc="exact local edges", disable=not progress, leave=False):
        chunk = upstream[i : i + rows_per_run]
        n = len(chunk)
        dev = inputs.clean.device
        ex = torch.tensor([u[1] for u in chunk], device=dev)
        pos = torch.tensor([u[2] for u in chunk], device=dev)
        src_idx = torch.tensor([u[3] for u in chunk], device=dev)
        rows_of: dict[str, torch.Tensor] = {}
        for name in dict.fromkeys(u[0] for u in chunk):
            rows_of[name] = torch.tensor([j for j, u in enumerate(chunk) if u[0] == name], device=dev)
        run = rm.run(inputs.clean[ex], outputs=direct_outputs(values, clean_outputs, decoders, chunk))
        counter.forward += n / b
        direct = (check_metric_values(inputs.metric(run.logits, ex), n) - m_clean[ex]) / b
        g_up = group[ex, pos]
        for name, rows in rows_of.items():
            _scatter(to_metric[name], g_up[rows], src_idx[rows], direct[rows][None])
        for site, (feats, coef, idx, errs, esel) in per_site.items():
            sources = [name for name in rows_of if site_order[name] < site_order[site]]
            if not sources:
                continue
            rec, ref = run.records[site], clean.records[site]
            scores = []
            if feats:
                dfe = rec.features[..., idx] - ref.features[..., idx][ex]  # [n, pos, k]
                scores.append(torch.einsum("ntk,knt->nk", dfe.to(coef.dtype), coef[:, ex]) / b)
            if errs:
                g = nodes.grads[site]
                de = torch.einsum("ntd,ntd->nt", (rec.error - ref.error[ex]).to(g.dtype), g[ex])
                scores.append(torch.einsum("nt,knt->nk", de, esel[:, ex]) / b)
            score = torch.cat(scores, 1)  # [n, targets of this site]
            for name in sources:
                rows = rows_of[name]
                _scatter(acc[(site, name)], g_up[rows], src_idx[rows], score[rows].T)
    incoming: dict[Target, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {t: {} for t in targets}
    for (site, name), (f, e) in acc.items():
        feats, _, _, errs, _ = per_site[site]
        for k, tgt in enumerate(feats + errs):
            incoming[tgt][name] = (f[k], e[k])
    return EdgeEffects(incoming, to_metric, positions, counter)


def _scatter(pair: tuple[torch.Tensor, torch.Tensor], groups: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """Add ``values`` [k, rows] into ``pair`` = (features [k, groups, d_sae], errors [k, groups]) at each
    row's (group, index), index -1 meaning the error; a pair without the leading k takes k = 1."""
    f, e = pair
    if f.dim() == 2:
        f, e = f[None], e[None]
    k = torch.arange(f.shape[0], device=f.device)[:, None]
    err = index == ERROR
    if bool((~err).any()):
        f.index_put_((k, groups[~err][None], index[~err][None]), values[:, ~err].to(f.dtype), accumulate=True)
    if bool(err.any()):
        e.index_put_((k, groups[err][None]), values[:, err].to(e.dtype), accumulate=True)
