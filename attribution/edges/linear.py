"""Linear edges: the direct derivative between two nodes, from batched vector-Jacobian products.

For an upstream node ``u`` (site ``s``) and a downstream node ``d`` (a later site ``s'``), the edge
effect is ``g_d . (d d / d u) . delta_u``: the downstream node's (integrated) metric gradient, times
the direct derivative of ``d`` with respect to ``u`` at the clean input, times the upstream node's
change. "Direct" means every site other than ``s`` and ``s'`` is held fixed: the model is run
once in leaf mode (:meth:`~replacement.model.ReplacementModel.run_leaf`: each site output rebuilt
from detached leaves ``decode(F) + E``), so the derivative of a downstream site's live features
with respect to an upstream site's leaves follows only paths that cross no other site. With SAEs
on attn, mlp and resid this yields exactly the edge kinds of Sparse Feature Circuits
(embed/resid -> attn, resid -> mlp, attn -> mlp, attn/mlp -> resid, resid -> resid); with
transcoders it yields feature -> feature edges. Edges across positions arise only through
attention and are indexed by (upstream, downstream) position.

Rows are batched: one backward pass computes the edges into many downstream nodes at once
(``torch.autograd.grad`` with ``is_grads_batched``), the way circuit-tracer batches adjacency rows.
Scores are aggregated on the fly over examples (mean) and over positions of the same group
(token, schema span, or everything), so memory holds only aggregated rows.

Two shortcuts keep the rows cheap without changing a number: a row is differentiated back to the
upstream site *outputs* (model width), and contracted only with the features that actually
change at each position (a few per position, not ``d_sae``); and a feature row of a ReLU / TopK /
JumpReLU dictionary starts at the site input with the feature's encoder column instead of a
backward pass through the whole encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from attribution.core import BUDGET, ERROR, AttributionError, AttributionInputs, check_metric_values
from attribution.edges.common import (
    EdgeEffects,
    NodePair,
    Target,
    check_targets,
    decoder_rows,
    require_grads,
    selection,
    site_order,
)
from attribution.nodes import NodeEffects, PassCounter, embed_values, midpoints
from attribution.positions import PositionMap
from replacement.model import ReplacementModel, RunResult, SiteRecord


@dataclass(frozen=True)
class LinearEdges:
    """Options of the linear edges.

    ``rows_per_pass``: downstream nodes per batched backward pass. ``jacobian_steps`` > 1: average
    the direct derivative over that many points of the clean -> counterfactual input path
    (midpoints) instead of taking it at the clean input alone. ``encoder_shortcut``: start a
    feature row at the target site's input with its encoder column where the encoder allows it
    (:func:`_encoder_columns`; the same numbers, much less work); ``False`` always differentiates
    through the encoder.
    """

    name: ClassVar[str] = "linear"
    rows_per_pass: int = 64
    jacobian_steps: int = 1
    encoder_shortcut: bool = True

    def __post_init__(self) -> None:
        if self.jacobian_steps < 1:
            raise AttributionError(f"jacobian_steps must be at least 1, got {self.jacobian_steps}")


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
    if (
        not isinstance(W, torch.Tensor)
        or not isinstance(b, torch.Tensor)
        or tuple(W.shape) != (x_in.shape[-1], f.shape[-1])
    ):
        return False
    with torch.no_grad():
        pre = d.process_sae_in(x_in.detach()) @ W + b
        gated = torch.where(f != 0, pre, torch.zeros_like(pre))
        return bool((gated - f.detach()).abs().max() <= 1e-4 * (1.0 + float(f.detach().abs().max())))


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


def linear_edges(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    targets: list[Target],
    positions: PositionMap,
    config: LinearEdges = LinearEdges(),
    progress: bool = False,
) -> EdgeEffects:
    """Edges from every upstream node into each of ``targets`` and every node's direct edge into the
    metric, from the direct derivative (see the module docstring).

    ``nodes`` supplies the downstream gradients (IG-averaged when computed with ``ig``) and the
    upstream changes; ``positions`` the aggregation (token, span or agnostic).
    """
    require_grads(nodes)
    if config.jacobian_steps > 1 and nodes.baseline != "corrupted":
        raise AttributionError(
            "jacobian_steps > 1 averages along the input path to the counterfactual prompt; it needs the 'corrupted' baseline"
        )
    targets = check_targets(rm, inputs, targets, positions)
    order = site_order(rm)
    counter = PassCounter()
    values = nodes.values
    by_site: dict[str, list[Target]] = {}
    for t in targets:
        by_site.setdefault(t.site, []).append(t)
    incoming: dict[Target, dict[str, NodePair]] = {t: {} for t in targets}
    to_metric: dict[str, NodePair] = {}
    contractions = {
        n: _Contraction(
            decoder_rows(rm.dictionaries[n], v.f_clean, v.df.dtype), v.df, v.de, positions, 1.0 / config.jacobian_steps
        )
        for n, v in values.items()
    }
    if config.jacobian_steps == 1:
        embeds: list[torch.Tensor | None] = [None]
    else:
        x0, x1 = embed_values(rm, inputs, values)
        embeds = [x0 + a * (x1 - x0) for a in midpoints(config.jacobian_steps)]
    rows = _Rows(rm, nodes, positions.group.to(inputs.clean.device), inputs.valid, config)
    bar = tqdm(total=len(targets) * len(embeds), desc="edge attribution", disable=not progress, leave=False)
    for embed in embeds:
        # Leaf mode: each site output is rebuilt from detached leaves, so the gradient at an upstream
        # site's output follows only the direct paths that cross no other site.
        run = rm.run_leaf(inputs.clean, embed=embed)
        counter.forward += 1
        _metric_edges(run, inputs, contractions, to_metric)
        counter.backward += 1
        for site, tgts in by_site.items():
            upstream = [n for n in run.records if order[n] < order[site]]
            if upstream:
                counter.backward += rows.into(run.records, site, tgts, upstream, contractions, incoming)
            bar.update(len(tgts))
        del run
    bar.close()
    return EdgeEffects(incoming, to_metric, positions, counter)


def _add(store: dict[str, NodePair], name: str, pair: NodePair) -> None:
    if name in store:
        store[name] = (store[name][0] + pair[0], store[name][1] + pair[1])
    else:
        store[name] = pair


def _metric_edges(
    run: RunResult, inputs: AttributionInputs, contractions: dict[str, _Contraction], to_metric: dict[str, NodePair]
) -> None:
    """Direct edges into the metric: one backward pass of the metric to every site output."""
    names = list(run.records)
    outputs = [run.records[n].output for n in names]
    m = check_metric_values(inputs.metric(run.logits, inputs.index()), inputs.batch_size, grad=True).sum()
    grads = torch.autograd.grad(m, outputs, retain_graph=True, allow_unused=True)
    for n, g in zip(names, grads, strict=True):
        f, e = contractions[n](None if g is None else g[None], 1)
        _add(to_metric, n, (f[0], e[0]))


class _Rows:
    """Batched rows of edges into the targets of one site, from a leaf run's records."""

    def __init__(
        self, rm: ReplacementModel, nodes: NodeEffects, group: torch.Tensor, valid: torch.Tensor, config: LinearEdges
    ):
        self.rm, self.nodes, self.group, self.valid, self.config = rm, nodes, group, valid, config

    def into(
        self,
        recs: dict[str, SiteRecord],
        site: str,
        targets: list[Target],
        upstream: list[str],
        contractions: dict[str, _Contraction],
        incoming: dict[Target, dict[str, NodePair]],
    ) -> int:
        """Add the edges from every node of ``upstream`` into ``targets`` (all at ``site``) to
        ``incoming``; returns the backward passes made."""
        up_out = [recs[n].output for n in upstream]
        rec, d = recs[site], self.rm.dictionaries[site]
        g = self.nodes.grads[site]  # [batch, pos, d_out]
        W_dec = contractions[site].W_dec.to(g.dtype)  # the decoder rows the upstream side uses too
        shortcut = self.config.encoder_shortcut and _encoder_columns(d, rec.x_in, rec.features)
        passes = 0
        # feature rows and error rows start from different tensors; each kind is batched on its own
        for rows in ([t for t in targets if t.index != ERROR], [t for t in targets if t.index == ERROR]):
            for i in range(0, len(rows), self.config.rows_per_pass):
                chunk = rows[i : i + self.config.rows_per_pass]
                start, cot = self._start(chunk, rec, d, g, W_dec, shortcut)
                outs = torch.autograd.grad(
                    [start],
                    up_out,
                    grad_outputs=[cot.to(start.dtype)],
                    retain_graph=True,
                    allow_unused=True,
                    is_grads_batched=True,
                )
                passes += 1
                for n, G in zip(upstream, outs, strict=True):
                    f, e = contractions[n](G, len(chunk))
                    for j, t in enumerate(chunk):
                        _add(incoming[t], n, (f[j], e[j]))
        return passes

    def _start(
        self, chunk: list[Target], rec: SiteRecord, d, g: torch.Tensor, W_dec: torch.Tensor, shortcut: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where a batch of rows (all feature targets or all error targets) starts its backward pass,
        and the cotangents there ([k, *start.shape])."""
        k = len(chunk)
        sel = selection(chunk, self.group, self.valid, g.dtype)  # [k, batch, pos]
        if chunk[0].index == ERROR:
            return rec.error, sel[..., None] * g
        idx = torch.tensor([t.index for t in chunk], device=g.device)
        coef = sel * torch.einsum("btd,kd->kbt", g, W_dec[idx])  # downstream gradient of each feature
        if shortcut:
            active = rec.features.detach()[..., idx].permute(2, 0, 1) != 0
            W_enc = d.W_enc.to(g.dtype)[:, idx].T  # [k, d_in]
            return rec.x_in, (coef * active)[..., None] * W_enc[:, None, None, :]
        cot = torch.zeros(k, *rec.features.shape, device=g.device, dtype=rec.features.dtype)
        cot.scatter_(-1, idx.view(k, 1, 1, 1).expand(k, *rec.features.shape[:2], 1), coef[..., None])
        return rec.features, cot
