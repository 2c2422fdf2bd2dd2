"""What both edge methods share: downstream targets, the aggregated result, decoder rows and input checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attribution.core import BUDGET, ERROR, AttributionError, AttributionInputs
from attribution.nodes import NodeEffects, PassCounter
from attribution.positions import PositionMap
from replacement.model import ReplacementModel

# A site's edge effects from each of its nodes: features [n_positions, d_sae], errors [n_positions].
NodePair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Target:
    """A downstream node in aggregated coordinates: site, aggregated position, feature (or ERROR)."""

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

    incoming: dict[Target, dict[str, NodePair]]
    to_metric: dict[str, NodePair]
    positions: PositionMap
    passes: PassCounter = field(default_factory=PassCounter)

    def edges(self, threshold: float = 0.0) -> list[tuple[tuple[str, int, int], tuple[str, int, int] | None, float]]:
        """Every edge with |effect| > threshold as ((site, pos, index), target or None for the metric, effect)."""
        out = []
        for tgt, by_site in [*self.incoming.items(), (None, self.to_metric)]:
            to = None if tgt is None else (tgt.site, tgt.position, tgt.index)
            for site, (f, e) in by_site.items():
                pf, ff = torch.nonzero(f.abs() > threshold, as_tuple=True)
                for p, i in zip(pf.tolist(), ff.tolist(), strict=True):
                    out.append(((site, p, i), to, float(f[p, i])))
                for p in torch.nonzero(e.abs() > threshold, as_tuple=True)[0].tolist():
                    out.append(((site, p, ERROR), to, float(e[p])))
        return out


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


def require_grads(nodes: NodeEffects) -> None:
    """Edges weight each downstream node by its metric gradient, which only gradient methods keep."""
    if not nodes.grads:
        raise AttributionError("edge effects need node effects computed with 'atp' or 'ig' (they carry the gradients)")


def check_targets(
    rm: ReplacementModel, inputs: AttributionInputs, targets: list[Target], positions: PositionMap
) -> list[Target]:
    """``targets`` without repeats, once the position map fits the batch and every target names a node."""
    targets = list(dict.fromkeys(targets))  # a target listed twice is one target
    if tuple(positions.group.shape) != tuple(inputs.clean.shape):
        raise AttributionError(
            f"the position map is [{', '.join(map(str, positions.group.shape))}] but the batch is "
            f"[{', '.join(map(str, inputs.clean.shape))}]"
        )
    for t in targets:
        if t.site not in rm.site_names:
            raise AttributionError(f"unknown site {t.site!r} in edge targets; sites are {', '.join(rm.site_names)}")
        if not 0 <= t.position < positions.n_positions:
            raise AttributionError(
                f"edge target {t}: position must lie in [0, {positions.n_positions}) ({positions.mode} positions)"
            )
        if not ERROR <= t.index < rm.d_sae(t.site):
            raise AttributionError(
                f"edge target {t}: index must be a feature of {t.site} (< {rm.d_sae(t.site)}) or {ERROR} for its error"
            )
    return targets


def site_order(rm: ReplacementModel) -> dict[str, int]:
    """Each site's rank in the forward pass."""
    return {s: i for i, s in enumerate(rm.site_names)}


def selection(targets: list[Target], group: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[k, batch, pos]: 1 where a real token belongs to each target's aggregated position."""
    return torch.stack([(group == t.position) & valid for t in targets]).to(dtype)
