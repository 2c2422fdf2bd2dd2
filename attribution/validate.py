"""Validation of attributions against the interventions they approximate.

- Nodes: Spearman correlation of ``atp`` and ``ig`` node effects with ``exact`` patching, over every
  node whose value differs between clean and target, and over the 100 largest by |exact|.
  Where clean and counterfactual prompts align token for token, each node is also patched the
  other way (its clean value into the counterfactual run): ``exact_contexts_spearman`` says how
  far the effect of one node depends on the context it is patched in. Integrated gradients
  average the gradient along the whole clean -> counterfactual path, so where the two contexts
  disagree no path estimate can match the clean-context patch alone; ``ig_spearman_two_contexts``
  compares ``ig`` with the mean of the two exact effects.
- Edges: for sampled edges ``u -> d`` of single examples at token level, the edge effect against
  real path patching: ``u`` is patched to its target value in ``d``'s input only (every other
  site passing on its clean output), the resulting value of ``d`` is patched into an otherwise
  clean run, and the change of the metric is the real edge effect.
- Graph edges (:func:`validate_graph_edges`): edges as the graph holds them, summed over the tokens
  of a position group and averaged over examples, against the same path patching done on whole
  aggregated nodes (the upstream node at every token of its group, then the downstream node at
  every token of its group, every example at once).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from attribution.core import ERROR, AttributionInputs, check_metric_values, rows_within_budget
from attribution.edges import Target, decoder_rows, edge_effects, edge_method
from attribution.nodes import moved_masks, node_effects
from attribution.positions import PositionMap
from replacement.model import NodeEdit, ReplacementModel


def _flat(effects) -> torch.Tensor:
    return torch.cat([torch.cat([effects.features[s].flatten(), effects.errors[s].flatten()]) for s in effects.sites])


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a.double().cpu().numpy(), b.double().cpu().numpy()).statistic)


@dataclass
class EdgeValidation:
    """Spearman correlation of sampled edges with path patching, overall and by upstream site."""

    spearman: float
    n_edges: int
    by_upstream_site: dict[str, float] = field(default_factory=dict)


@dataclass
class NodeValidation:
    atp_spearman: float
    ig_spearman: float
    atp_spearman_top100: float
    ig_spearman_top100: float
    n_nodes: int
    extra: dict[str, float] = field(default_factory=dict)


def _reversed(inputs: AttributionInputs, corrupted_lengths: torch.Tensor | None) -> AttributionInputs | None:
    """The same examples with clean and counterfactual swapped, where their tokens align one to one
    (same lengths, each position matched to itself)."""
    if (
        inputs.corrupted is None
        or inputs.corrupted_position is None
        or inputs.corrupted.shape != inputs.clean.shape
        or corrupted_lengths is None
    ):
        return None
    if not torch.equal(corrupted_lengths.to(inputs.clean_lengths.device), inputs.clean_lengths):
        return None
    pos = torch.arange(inputs.clean.shape[1], device=inputs.clean.device).expand_as(inputs.clean)
    if not bool((inputs.corrupted_position == torch.where(inputs.valid, pos, -1)).all()):
        return None
    return AttributionInputs(inputs.corrupted, inputs.clean_lengths, inputs.metric, inputs.clean)


def validate_nodes(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    steps: int = 10,
    ig_modes: tuple[str, ...] = ("inputs",),
    corrupted_lengths: torch.Tensor | None = None,
    progress: bool = False,
) -> NodeValidation:
    """Correlations of atp and ig (each ``ig_modes``; the first is reported as ``ig``) with exact patching.

    ``corrupted_lengths``: the counterfactual prompts' lengths; where they align with the clean
    prompts token for token, every node is also patched in the counterfactual run (see the module
    docstring)."""
    exact = _flat(node_effects(rm, inputs, method="exact", progress=progress))
    atp_effects = node_effects(rm, inputs, method="atp")
    atp = _flat(atp_effects)
    igs = {
        mode: _flat(node_effects(rm, inputs, method="ig", steps=steps, ig_mode=mode, progress=progress))
        for mode in ig_modes
    }
    moved = torch.cat(
        [torch.cat([f.flatten(), e.flatten()]) for f, e in moved_masks(atp_effects.values, inputs.valid).values()]
    )
    # the 100 moved nodes of largest |exact| (a node that does not move has no effect to rank)
    top = torch.nonzero(moved).flatten()[exact[moved].abs().argsort(descending=True)[:100]]
    extra = {}
    for mode, v in igs.items():
        extra[f"ig_{mode}_spearman"] = _spearman(v[moved], exact[moved])
        extra[f"ig_{mode}_spearman_top100"] = _spearman(v[top], exact[top])
    ig = igs[ig_modes[0]]
    swapped = _reversed(inputs, corrupted_lengths)
    if swapped is not None:
        # moving a node from target to clean in the target run, sign-aligned with clean -> target
        other = -_flat(node_effects(rm, swapped, method="exact", progress=progress))
        extra["exact_contexts_spearman"] = _spearman(other[moved], exact[moved])
        extra["ig_spearman_two_contexts"] = _spearman(ig[moved], (exact + other)[moved])
        extra["atp_spearman_two_contexts"] = _spearman(atp[moved], (exact + other)[moved])
    return NodeValidation(
        atp_spearman=_spearman(atp[moved], exact[moved]),
        ig_spearman=_spearman(ig[moved], exact[moved]),
        atp_spearman_top100=_spearman(atp[top], exact[top]),
        ig_spearman_top100=_spearman(ig[top], exact[top]),
        n_nodes=int(moved.sum()),
        extra=extra,
    )


def _single(inputs: AttributionInputs, b: int) -> AttributionInputs:
    sl = slice(b, b + 1)
    n = int(inputs.clean_lengths[b])

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return inputs.metric(logits, index + b)

    return AttributionInputs(
        clean=inputs.clean[sl, :n],
        clean_lengths=inputs.clean_lengths[sl],
        metric=metric,
        corrupted=None if inputs.corrupted is None else inputs.corrupted[sl],
        corrupted_position=None if inputs.corrupted_position is None else inputs.corrupted_position[sl, :n],
    )


def _largest_targets(rm: ReplacementModel, features, errors, per_site: int) -> list[Target]:
    """The ``per_site`` feature nodes of largest |effect| and the 2 largest error nodes of every site but
    the first; ``features(site)`` [positions, d_sae] and ``errors(site)`` [positions] give the effects."""
    targets = []
    for site in rm.site_names[1:]:
        f = features(site)
        top = f.abs().flatten().argsort(descending=True)[:per_site]
        targets += [Target(site, int(i) // f.shape[1], int(i) % f.shape[1]) for i in top if float(f.flatten()[i]) != 0]
        e = errors(site)
        targets += [Target(site, int(p), ERROR) for p in e.abs().argsort(descending=True)[:2]]
    return targets


def _sample(cands: list, k: int, rng: random.Random) -> list:
    """Half of ``k`` from the strongest candidates (by |last item|), half uniformly from the rest."""
    cands = sorted(cands, key=lambda c: -abs(c[-1]))
    k = min(k, len(cands))
    return cands[: k // 2] + rng.sample(cands[k // 2 :], min(k - k // 2, len(cands) - k // 2))


def _validation(scores: torch.Tensor, real: torch.Tensor, sources: list[str]) -> EdgeValidation:
    """Overall Spearman correlation, and by upstream site where a site has at least 10 sampled edges."""
    by_site = {}
    for site in dict.fromkeys(sources):
        sel = [i for i, s in enumerate(sources) if s == site]
        if len(sel) >= 10:
            by_site[site] = _spearman(scores[sel], real[sel])
    return EdgeValidation(_spearman(scores, real), len(scores), by_site)


def validate_edges(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    n_edges: int = 240,
    examples: int = 4,
    targets_per_site: int = 12,
    steps: int = 10,
    seed: int = 0,
    method: str = "ig",
    jacobian_steps: int = 1,
    local: str = "linear",
    progress: bool = False,
) -> EdgeValidation:
    """Spearman correlation of edge effects with path patching over ``n_edges`` sampled edges.

    ``method`` gives the downstream gradient: ``ig`` (integrated) or ``atp`` (at the clean input);
    ``local`` the downstream node's change (:func:`attribution.edges.edge_effects`).
    Sites with fewer than 10 sampled outgoing edges get no correlation of their own."""
    how = edge_method(local, jacobian_steps=jacobian_steps)
    rng = random.Random(seed)
    scores, real, sources = [], [], []
    examples = min(examples, inputs.batch_size)
    for b in tqdm(range(examples), desc=f"edge validation ({method}, {local})", disable=not progress, leave=False):
        per_example = n_edges // examples + (b < n_edges % examples)
        one = _single(inputs, b)
        nodes = node_effects(rm, one, method=method, steps=steps)
        pm = PositionMap.tokens(one.clean_lengths, one.clean.shape[1])
        targets = _largest_targets(
            rm,
            lambda site, nodes=nodes: nodes.features[site][0],
            lambda site, nodes=nodes: nodes.errors[site][0],
            targets_per_site,
        )
        ee = edge_effects(rm, one, nodes, targets, pm, how, progress=progress)
        chosen = _sample([c for c in ee.edges() if c[1] is not None], per_example, rng)
        if not chosen:
            continue
        r = _graph_path_patch(rm, one, nodes.values, pm, [(c[0], c[1]) for c in chosen])
        scores += [c[2] for c in chosen]
        real += r.tolist()
        sources += [c[0][0] for c in chosen]
    return _validation(torch.tensor(scores), torch.tensor(real), sources)


@torch.no_grad()
def _graph_path_patch(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    values,
    positions: PositionMap,
    edges: list[tuple],
    rows: int | None = None,
) -> torch.Tensor:
    """Real effect of aggregated edges ((site, group, idx), (site', group', idx')), averaged over examples
    (with a token map on one example: the path patching of single token-level edges).

    For each edge and example: the upstream node is patched at every token of its group in the
    downstream site's input only (every other site passing on its clean output), the downstream
    node takes its new values at every token of its group in an otherwise clean run, and the
    metric's change is averaged over the examples.
    """
    b, t = inputs.clean.shape
    dev = inputs.clean.device
    group = positions.group.to(dev)
    valid = inputs.valid & (group >= 0)
    clean = rm.run(inputs.clean)
    m0 = check_metric_values(inputs.metric(clean.logits, inputs.index()), b)
    decoders = {name: decoder_rows(rm.dictionaries[name], v.f_clean, v.df.dtype) for name, v in values.items()}
    per = max(1, (rows_within_budget(values, t) if rows is None else rows) // b)
    out = []
    for s in range(0, len(edges), per):
        chunk = edges[s : s + per]
        n = len(chunk) * b
        ex = torch.arange(b, device=dev).repeat(len(chunk))
        outs = {m: r.output[ex].clone() for m, r in clean.records.items()}
        for j, ((site, g, i), _) in enumerate(chunk):
            v = values[site]
            sel = (group == g) & valid  # [b, t]
            change = v.de if i == ERROR else v.df[..., i, None] * decoders[site][i]
            outs[site][j * b : (j + 1) * b] += (sel[..., None] * change).to(outs[site].dtype)
        recs = rm.run_with_outputs(inputs.clean[ex], outs).records
        edits: dict[str, NodeEdit] = {}
        for name in dict.fromkeys(d[0] for _, d in chunk):
            new_f, new_e = recs[name].features, recs[name].error
            fmask = torch.zeros_like(new_f, dtype=torch.bool)
            emask = torch.zeros(n, t, dtype=torch.bool, device=dev)
            for j, (_, (site, g, i)) in enumerate(chunk):
                if site != name:
                    continue
                sel = (group == g) & valid
                if i == ERROR:
                    emask[j * b : (j + 1) * b] = sel
                else:
                    fmask[j * b : (j + 1) * b, :, i] = sel
            edits[name] = NodeEdit(new_f, fmask, new_e, emask)
        patched = check_metric_values(inputs.metric(rm.run(inputs.clean[ex], edits).logits, ex), n)
        out.append((patched - m0[ex]).view(len(chunk), b).mean(1))
    return torch.cat(out)


def validate_graph_edges(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    positions: PositionMap | None = None,
    n_edges: int = 240,
    targets_per_site: int = 16,
    steps: int = 10,
    seed: int = 0,
    method: str = "ig",
    local: str = "linear",
    progress: bool = False,
) -> EdgeValidation:
    """Edges as the graph holds them (summed over the tokens of a position group and averaged over
    examples; by default one group, position-agnostic) against real path patching of the same
    aggregated nodes (:func:`_graph_path_patch`): half the sample from the strongest edges into the
    largest nodes of each site, half uniformly from the rest."""
    rng = random.Random(seed)
    positions = positions or PositionMap.agnostic(inputs.clean_lengths, inputs.clean.shape[1])
    nodes = node_effects(rm, inputs, method=method, steps=steps)
    targets = _largest_targets(
        rm,
        lambda site: positions.aggregate(nodes.features[site]),
        lambda site: positions.aggregate(nodes.errors[site]),
        targets_per_site,
    )
    ee = edge_effects(rm, inputs, nodes, targets, positions, edge_method(local), progress=progress)
    chosen = _sample([c for c in ee.edges() if c[1] is not None], n_edges, rng)
    if len(chosen) < 3:
        return EdgeValidation(float("nan"), len(chosen))
    real = _graph_path_patch(rm, inputs, nodes.values, positions, [(u, d) for u, d, _ in chosen])
    return _validation(torch.tensor([c[2] for c in chosen], dtype=real.dtype), real, [c[0][0] for c in chosen])
