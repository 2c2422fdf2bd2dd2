"""Exact local edges: the downstream node's actual direct change when one upstream node is patched.

Each changed upstream node is patched alone in a run where every site passes on its clean output
(one batch row per node, :func:`direct_outputs`), and ``g_d . (d(u -> target) - d(clean))`` is the
edge into downstream node ``d`` (``g_d`` its metric gradient). Where a sublayer is far from linear
in one upstream node (a name token's features switching attention from one position to another)
this is what path patching measures, at the price of one forward row per changed upstream node
instead of one backward row per downstream node (:mod:`attribution.edges.linear`); it is meant
for small graphs and for checking the linear edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from attribution.core import (
    ERROR,
    AttributionError,
    AttributionInputs,
    SiteValues,
    check_metric_values,
    rows_within_budget,
)
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
from attribution.nodes import NodeEffects, PassCounter, active_nodes, moved_masks
from attribution.positions import PositionMap
from replacement.model import ReplacementModel, RunResult

MAX_EXACT_ROWS = 5_000_000  # upstream nodes exact local edges patch one by one, at most


@dataclass(frozen=True)
class ExactEdges:
    """Options of the exact local edges: ``rows_per_run`` patched upstream nodes per forward pass
    (by default as many as ``BUDGET`` allows)."""

    name: ClassVar[str] = "exact"
    rows_per_run: int | None = None


@dataclass
class _SiteTargets:
    """The targets at one site: feature targets with their gradient weights [k, batch, pos] on the
    change of each feature (``coef``) and feature indices, error targets with their position
    selections [k, batch, pos]."""

    feats: list[Target]
    coef: torch.Tensor | None
    idx: torch.Tensor | None
    errs: list[Target]
    esel: torch.Tensor | None

    @property
    def ordered(self) -> list[Target]:
        """The order of the targets in a score matrix: feature targets, then error targets."""
        return self.feats + self.errs


def direct_outputs(
    values: dict[str, SiteValues],
    clean_outputs: dict[str, torch.Tensor],
    decoders: dict[str, torch.Tensor],
    nodes: list[tuple[str, int, int, int]],
) -> dict[str, torch.Tensor]:
    """Every site's output for a batch of rows, row ``j`` patching ``nodes[j]`` = (site, example,
    position, feature | ERROR) alone: each site passes on its clean output, except that the node's own
    site adds the node's change (``delta_f * decoder row``, or the error's change) at its position.

    Run with ``rm.run_with_outputs(tokens, outputs)``, every later site then sees only the node's direct
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
def exact_edges(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    targets: list[Target],
    positions: PositionMap,
    config: ExactEdges = ExactEdges(),
    progress: bool = False,
) -> EdgeEffects:
    """Edges from the actual direct change of every downstream node (see the module docstring).

    Each changed upstream node ``(site, example, position, feature | error)`` is one row of a run in
    which every site passes on its clean output except for that node's change
    (:func:`direct_outputs`): every site's input is then the clean input plus that node's direct
    contribution, so the row's records hold the direct change of every later node, and its metric
    the direct edge into the metric.
    """
    require_grads(nodes)
    targets = check_targets(rm, inputs, targets, positions)
    counter = PassCounter()
    values, valid, b = nodes.values, inputs.valid, inputs.batch_size
    group = positions.group.to(inputs.clean.device)
    order = site_order(rm)
    clean = rm.run(inputs.clean)
    counter.forward += 1
    m_clean = check_metric_values(inputs.metric(clean.logits, inputs.index()), b)
    decoders = {n: decoder_rows(rm.dictionaries[n], v.f_clean, v.df.dtype) for n, v in values.items()}
    per_site = _site_targets(nodes, targets, group, valid, decoders)
    to_metric = {n: _zeros(None, positions.n_positions, v.df) for n, v in values.items()}
    # acc[(target site, upstream site)]: (features [k, groups, d_sae], errors [k, groups]) for the
    # site's targets in the order of _SiteTargets.ordered
    acc = {
        (site, up): _zeros(len(st.ordered), positions.n_positions, values[up].df)
        for site, st, up in _pairs(per_site, order)
    }
    keep = valid & (group >= 0)
    _check_row_count(values, keep)
    upstream = active_nodes(values, keep)
    rows_per_run = (
        config.rows_per_run if config.rows_per_run is not None else rows_within_budget(values, inputs.clean.shape[1])
    )
    for i in tqdm(range(0, len(upstream), rows_per_run), desc="exact local edges", disable=not progress, leave=False):
        chunk = upstream[i : i + rows_per_run]
        counter.forward += len(chunk) / b
        _add_chunk(rm, inputs, nodes, clean, m_clean, decoders, chunk, group, per_site, to_metric, acc)
    return EdgeEffects(_incoming(acc, per_site, targets), to_metric, positions, counter)


def _add_chunk(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    clean: RunResult,
    m_clean: torch.Tensor,
    decoders: dict[str, torch.Tensor],
    chunk: list[tuple[str, int, int, int]],
    group: torch.Tensor,
    per_site: dict[str, _SiteTargets],
    to_metric: dict[str, NodePair],
    acc: dict[tuple[str, str], NodePair],
) -> None:
    """Run the upstream nodes of ``chunk`` (one row each) and add their direct effects on the metric
    to ``to_metric`` and on every downstream target to ``acc`` (see :func:`exact_edges`)."""
    values, b, dev = nodes.values, inputs.batch_size, inputs.clean.device
    order = site_order(rm)
    n_rows = len(chunk)
    ex = torch.tensor([u[1] for u in chunk], device=dev)
    g_up = group[ex, torch.tensor([u[2] for u in chunk], device=dev)]
    src_idx = torch.tensor([u[3] for u in chunk], device=dev)
    rows_of = {
        name: torch.tensor([j for j, u in enumerate(chunk) if u[0] == name], device=dev)
        for name in dict.fromkeys(u[0] for u in chunk)
    }
    clean_outputs = {m: r.output for m, r in clean.records.items()}
    run = rm.run_with_outputs(inputs.clean[ex], direct_outputs(values, clean_outputs, decoders, chunk))
    direct = (check_metric_values(inputs.metric(run.logits, ex), n_rows) - m_clean[ex]) / b
    for name, rows in rows_of.items():
        _scatter(to_metric[name], g_up[rows], src_idx[rows], direct[rows][None])
    for site, st in per_site.items():
        sources = [name for name in rows_of if order[name] < order[site]]
        if not sources:
            continue
        score = _scores(run, clean, site, st, nodes.grads[site], ex, b)  # [rows, targets of this site]
        for name in sources:
            rows = rows_of[name]
            _scatter(acc[(site, name)], g_up[rows], src_idx[rows], score[rows].T)


def _pairs(per_site: dict[str, _SiteTargets], order: dict[str, int]) -> list[tuple[str, _SiteTargets, str]]:
    """(target site, its targets, upstream site) for every site upstream of a target site."""
    return [(site, st, up) for site, st in per_site.items() for up in order if order[up] < order[site]]


def _incoming(
    acc: dict[tuple[str, str], NodePair], per_site: dict[str, _SiteTargets], targets: list[Target]
) -> dict[Target, dict[str, NodePair]]:
    """The accumulated scores split into one pair per (target, upstream site)."""
    incoming: dict[Target, dict[str, NodePair]] = {t: {} for t in targets}
    for (site, name), (f, e) in acc.items():
        for k, tgt in enumerate(per_site[site].ordered):
            incoming[tgt][name] = (f[k], e[k])
    return incoming


def _zeros(k: int | None, n_groups: int, like: torch.Tensor) -> NodePair:
    """A zero pair (features [k, groups, d_sae], errors [k, groups]) shaped after ``like``
    [..., d_sae]; without ``k`` the leading dimension is left out."""
    lead = () if k is None else (k,)
    return (
        torch.zeros(*lead, n_groups, like.shape[-1], dtype=like.dtype, device=like.device),
        torch.zeros(*lead, n_groups, dtype=like.dtype, device=like.device),
    )


def _site_targets(
    nodes: NodeEffects,
    targets: list[Target],
    group: torch.Tensor,
    valid: torch.Tensor,
    decoders: dict[str, torch.Tensor],
) -> dict[str, _SiteTargets]:
    """The targets grouped by site, in the order their sites first appear in ``targets``."""
    per_site: dict[str, _SiteTargets] = {}
    for site in dict.fromkeys(t.site for t in targets):
        g = nodes.grads[site]
        feats = [t for t in targets if t.site == site and t.index != ERROR]
        errs = [t for t in targets if t.site == site and t.index == ERROR]
        coef, idx = None, None
        if feats:
            idx = torch.tensor([t.index for t in feats], device=g.device)
            coef = selection(feats, group, valid, g.dtype) * torch.einsum(
                "btd,kd->kbt", g, decoders[site][idx].to(g.dtype)
            )
        esel = selection(errs, group, valid, g.dtype) if errs else None
        per_site[site] = _SiteTargets(feats, coef, idx, errs, esel)
    return per_site


def _check_row_count(values: dict[str, SiteValues], keep: torch.Tensor) -> None:
    """Refuse, before listing them, more upstream nodes to patch than :data:`MAX_EXACT_ROWS`."""
    n_rows = sum(int(f.sum()) + int(e.sum()) for f, e in moved_masks(values, keep).values())
    if n_rows > MAX_EXACT_ROWS:
        raise AttributionError(
            f"exact local edges would patch {n_rows} upstream nodes one by one (more than {MAX_EXACT_ROWS}); "
            "use local='linear', fewer examples, or a counterfactual baseline (a mean or zero baseline changes most features)"
        )


def _scores(
    run: RunResult, clean: RunResult, site: str, st: _SiteTargets, g: torch.Tensor, ex: torch.Tensor, b: int
) -> torch.Tensor:
    """[rows, targets]: each row's direct change of every target node at ``site``, weighted by the
    target's metric gradient ``g`` [batch, pos, d] and divided by the batch size ``b``."""
    rec, ref = run.records[site], clean.records[site]
    scores = []
    if st.feats:
        assert st.idx is not None and st.coef is not None  # set together with feats
        dfe = rec.features[..., st.idx] - ref.features[..., st.idx][ex]  # [rows, pos, k]
        scores.append(torch.einsum("ntk,knt->nk", dfe.to(st.coef.dtype), st.coef[:, ex]) / b)
    if st.errs:
        assert st.esel is not None  # set together with errs
        de = torch.einsum("ntd,ntd->nt", (rec.error - ref.error[ex]).to(g.dtype), g[ex])
        scores.append(torch.einsum("nt,knt->nk", de, st.esel[:, ex]) / b)
    return torch.cat(scores, 1)


def _scatter(
    pair: tuple[torch.Tensor, torch.Tensor], groups: torch.Tensor, index: torch.Tensor, values: torch.Tensor
) -> None:
    """Add ``values`` [k, rows] into ``pair`` = (features [k, groups, d_sae], errors [k, groups]) at each
    row's (group, index), index ERROR meaning the error; a pair without the leading k takes k = 1."""
    f, e = pair
    if f.dim() == 2:
        f, e = f[None], e[None]
    k = torch.arange(f.shape[0], device=f.device)[:, None]
    err = index == ERROR
    if bool((~err).any()):
        f.index_put_((k, groups[~err][None], index[~err][None]), values[:, ~err].to(f.dtype), accumulate=True)
    if bool(err.any()):
        e.index_put_((k, groups[err][None]), values[:, err].to(e.dtype), accumulate=True)
