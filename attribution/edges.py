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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from attribution.core import AttributionError, AttributionInputs
from attribution.nodes import EMBED_HOOK, NodeEffects, PassCounter, _alphas, _embed_values
from attribution.positions import PositionMap
from replacement.model import ReplacementModel

log = logging.getLogger(__name__)

ERROR = -1  # index of a site's error node


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


def edge_effects(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    targets: list[Target],
    positions: PositionMap,
    rows_per_pass: int = 64,
    progress: bool = False,
    jacobian_steps: int = 1,
) -> EdgeEffects:
    """Edges from every upstream node into each of ``targets``, and every node's direct edge into the metric.

    ``nodes`` supplies the downstream gradients (IG-averaged when computed with ``ig``) and the
    upstream changes; ``positions`` the aggregation (token, span or agnostic). With
    ``jacobian_steps`` > 1 the direct derivative is averaged over that many points of the
    clean -> counterfactual input path (midpoints) instead of taken at the clean input alone,
    which follows downstream features that the change pushes across their threshold.
    """
    if jacobian_steps < 1:
        raise AttributionError(f"jacobian_steps must be at least 1, got {jacobian_steps}")
    if not nodes.grads:
        raise AttributionError("edge effects need node effects computed with 'atp' or 'ig' (they carry the gradients)")
    site_order = {s: i for i, s in enumerate(rm.site_names)}
    for t in targets:
        if t.site not in site_order:
            raise AttributionError(f"unknown site {t.site!r} in edge targets; sites are {', '.join(rm.site_names)}")
    counter = PassCounter()
    valid = inputs.valid
    values = nodes.values
    by_site: dict[str, list[Target]] = {}
    for t in targets:
        by_site.setdefault(t.site, []).append(t)
    incoming: dict[Target, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {t: {} for t in targets}
    to_metric: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def contract(name: str, gf: torch.Tensor | None, ge: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn gradients at one upstream site's leaves into aggregated edge effects (one step's share)."""
        v = values[name]
        f_eff = gf * v.df if gf is not None else torch.zeros_like(v.df)
        e_eff = (ge * v.de).sum(-1) if ge is not None else torch.zeros(v.de.shape[:-1], device=v.de.device, dtype=v.de.dtype)
        return positions.aggregate(f_eff) / jacobian_steps, positions.aggregate(e_eff) / jacobian_steps

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
    bar = tqdm(total=len(targets) * len(hooks_per_step), desc="edge attribution", disable=not progress, leave=False)
    for hooks in hooks_per_step:
        run = rm.run(inputs.clean, leaf=True, pre_hooks=hooks)
        counter.forward += 1
        recs = run.records
        leaves = {n: (r.leaf_features, r.leaf_error) for n, r in recs.items()}
        names = list(leaves)
        # Direct edges into the metric: one backward of the metric in leaf mode.
        m = inputs.metric(run.logits, inputs.index()).sum()
        flat = [t for n in names for t in leaves[n]]
        grads = torch.autograd.grad(m, flat, retain_graph=True, allow_unused=True)
        counter.backward += 1
        for i, n in enumerate(names):
            add(to_metric, n, contract(n, grads[2 * i], grads[2 * i + 1]))
        for site, tgts in by_site.items():
            upstream = [n for n in names if site_order[n] < site_order[site]]
            if not upstream:
                bar.update(len(tgts))
                continue
            up_flat = [t for n in upstream for t in leaves[n]]
            live_f, live_e = recs[site].features, recs[site].error
            g = nodes.grads[site]  # [batch, pos, d_out]
            g_f = g @ rm.dictionaries[site].W_dec.T.to(g.dtype)  # [batch, pos, d_sae]
            group = positions.group.to(g.device)  # [batch, pos]
            for i in range(0, len(tgts), rows_per_pass):
                chunk = tgts[i : i + rows_per_pass]
                k = len(chunk)
                cot_f = torch.zeros(k, *live_f.shape, device=g.device, dtype=live_f.dtype)
                cot_e = torch.zeros(k, *live_e.shape, device=g.device, dtype=live_e.dtype)
                for j, t in enumerate(chunk):
                    sel = (group == t.position) & valid
                    if t.index == ERROR:
                        cot_e[j][sel] = g[sel]
                    else:
                        cot_f[j][sel, t.index] = g_f[sel][:, t.index]
                outs = torch.autograd.grad(
                    [live_f, live_e], up_flat, grad_outputs=[cot_f, cot_e],
                    retain_graph=True, allow_unused=True, is_grads_batched=True,
                )
                counter.backward += 1
                for j, t in enumerate(chunk):
                    for u, n in enumerate(upstream):
                        gf, ge = outs[2 * u], outs[2 * u + 1]
                        add(incoming[t], n, contract(n, None if gf is None else gf[j], None if ge is None else ge[j]))
                bar.update(k)
        del run, recs, leaves
    bar.close()
    return EdgeEffects(incoming, to_metric, positions, counter)
