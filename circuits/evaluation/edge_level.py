"""Edge-level evaluation: the circuit's nodes live and only its edges carry live values.

Sites are computed one at a time in forward order. A circuit node whose incoming edges were scored
when the graph was built (node attribute ``scored_inputs``; the metric too) receives from each
upstream circuit node that node's current value only when the circuit has an edge from it into the
node's (site, position) group, and that node's ablation value otherwise; nodes outside the circuit
always pass on their ablation value. A group's input is recomputed by a forward pass in which the
outputs of the sites that reach it directly (back to the last residual or embedding site) are
replaced by that mixture, so only direct paths count, as for the edges themselves. What is exact and
what is not:

- exact for the metric and whenever the circuit nodes of one (site, position) group share their
  circuit inputs, e.g. when every scored node has edges from all earlier circuit nodes: such a
  circuit evaluates exactly as at node level (tested);
- otherwise an upstream node with a circuit edge into *some* node of a group feeds the whole group
  (union within a group), so some left-out edges are not cut;
- circuit nodes whose incoming edges were never scored take their input from every live upstream
  node, as at node level.

Completeness is reported at node level only (the circuit's nodes ablated); an edge-level
complement would need every unscored edge of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch

from circuits.errors import CircuitError
from circuits.evaluation.masks import NodeKey, NodeMasks, SiteMasks
from circuits.evaluation.node_level import Evaluation, check_circuit, evaluate_node_sets, evaluation
from circuits.evaluation.runner import Runner
from circuits.graph.ids import METRIC, Position
from replacement.model import ReplacementModel

# Site kinds whose output replaces the whole residual stream: nothing before them reaches later sites directly.
STREAM_KINDS = ("embed", "resid")
# Site kinds whose input at one token is computed from upstream outputs at other tokens too (attention);
# a site of another kind mixes positions too when an attention layer that is no site lies before it
# (:func:`mixes_positions`).
POSITION_MIXING_KINDS = ("attn",)

Group = tuple[str, Position | None]  # (site, position) of scored nodes; (METRIC, None) for the metric
Mix = dict[str, torch.Tensor]  # upstream site -> [batch, pos, d_sae + 1] bool: nodes passing their current value


@dataclass
class EdgePlan:
    """What edge-level evaluation needs of a circuit, as per-site node masks over position groups."""

    live: SiteMasks  # the circuit's nodes
    scored: dict[str, list[tuple[Position, torch.Tensor]]]  # site -> [(position, scored node mask of that group)]
    feeds: dict[Group, SiteMasks]  # group -> the upstream circuit nodes with an edge into it


def _key(masks: NodeMasks, node: str) -> NodeKey:
    key = masks.parse(node)
    if key is None:
        raise CircuitError(f"the circuit has an edge out of {METRIC!r}; the metric is the graph's sink")
    return key


def edge_plan(masks: NodeMasks, circuit: nx.DiGraph) -> EdgePlan:
    """The circuit's nodes, its scored nodes by (site, position) group and each group's circuit inputs."""
    live = masks.node_masks(circuit.nodes)
    scored: SiteMasks = {}
    feeds: dict[Group, SiteMasks] = {(METRIC, None): {}}
    for node, attrs in circuit.nodes(data=True):
        if node == METRIC or not attrs.get("scored_inputs", False):
            continue
        key = _key(masks, node)
        masks.mark(scored, key)
        feeds.setdefault((key[0], key[1]), {})
    for u, v in circuit.edges:
        if v == METRIC:
            group: Group = (METRIC, None)
        elif circuit.nodes[v].get("scored_inputs", False):
            site, position, _ = _key(masks, v)
            group = (site, position)
        else:
            continue
        masks.mark(feeds[group], _key(masks, u))
    return EdgePlan(live, {s: list(p.items()) for s, p in scored.items()}, feeds)


def direct_upstream(rm: ReplacementModel, index: int) -> list[str]:
    """Sites whose outputs reach site ``index`` (or, with ``index == len(sites)``, the logits) directly:
    back to and including the last full-stream site (embedding or residual) before it."""
    out: list[str] = []
    for u in reversed(rm.site_names[:index]):
        out.append(u)
        if rm.site(u).kind in STREAM_KINDS:
            break
    return out[::-1]


def mixes_positions(rm: ReplacementModel, index: int) -> bool:
    """Whether site ``index``'s input at a token depends on its direct upstream outputs at other
    tokens: an attention site, or an attention layer that is not a site between the last
    full-stream site and it (the transcoders composition, where attention runs inside the edges)."""
    s = rm.sites[index]
    if s.kind in POSITION_MIXING_KINDS:
        return True
    ups = [rm.site(u) for u in direct_upstream(rm, index)]
    if not ups:
        return False  # nothing upstream: the input is the model's own
    start = next((u.layer + (u.kind == "resid") for u in ups if u.kind in STREAM_KINDS), 0)
    replaced = {u.layer for u in ups if u.kind == "attn"}
    return any(layer not in replaced for layer in range(max(start, 0), s.layer + 1))


class _EdgeRun:
    """One circuit's edge-level run: each site's nodes recomputed from the circuit's edges, in forward order."""

    def __init__(self, runner: Runner, circuit: nx.DiGraph):
        self.runner = runner
        self.rm = runner.rm
        self.dev = runner.rm.device
        self.plan = edge_plan(runner.masks, circuit)
        self.live = {u: runner.masks.live(u, self.plan.live.get(u)).to(self.dev) for u in runner.sites}
        self._feeds: dict[tuple[Group, str], torch.Tensor] = {}  # expanded feeds masks, built once per group
        # per site done so far: current minus ablation value, on the circuit's features (cols) only
        self.delta_f: dict[str, torch.Tensor] = {}
        self.delta_e: dict[str, torch.Tensor] = {}
        self.cols: dict[str, torch.Tensor] = {}

    def mixed(self, u: str, live: torch.Tensor) -> torch.Tensor:
        """Output of site ``u`` with ``live`` nodes at their current value, the rest ablated."""
        out = self.runner.ablated_outputs[u]
        cols = self.cols[u]
        if cols.numel():
            sel = live[..., :-1][..., cols].to(self.delta_f[u].dtype)
            out = out + (sel * self.delta_f[u]) @ self.rm.dictionaries[u].W_dec[cols].to(out.dtype)
        return out + live[..., -1:].to(out.dtype) * self.delta_e[u]

    def feeds(self, group: Group, u: str) -> torch.Tensor:
        """[batch, pos, d_sae + 1] bool: the nodes of upstream site ``u`` with a circuit edge into ``group``."""
        if (group, u) not in self._feeds:
            masks = self.runner.masks
            fed = self.plan.feeds[group].get(u, {})
            self._feeds[(group, u)] = (masks.expand(u, fed) | masks.protected(u)[None, None]).to(self.dev)
        return self._feeds[(group, u)]

    def site_runs(self, index: int, site: str) -> list[tuple[Mix, torch.Tensor]]:
        """The passes that compute the live nodes of ``site``: (upstream mix, the nodes the pass assigns)."""
        live_here = self.live[site]
        ups = direct_upstream(self.rm, index)
        node_mix = {u: self.live[u] for u in ups}
        groups = [
            (pos, self.runner.masks.token_mask(pos).to(self.dev), m.to(self.dev))
            for pos, m in self.plan.scored.get(site, [])
        ]
        scored = torch.zeros_like(live_here)
        for _, tm, m in groups:
            scored |= tm[..., None] & m[None, None] & live_here
        plain = live_here & ~scored
        runs: list[tuple[Mix, torch.Tensor]] = []
        if mixes_positions(self.rm, index):
            if bool(plain.any()):
                runs.append((node_mix, plain))
            for pos, tm, m in groups:
                runs.append(({u: self.feeds((site, pos), u) for u in ups}, tm[..., None] & m[None, None] & live_here))
            return runs
        # the site's input at a token depends on upstream outputs at that token only: one run
        merged = {u: node_mix[u].clone() for u in ups}
        group_tokens = torch.zeros_like(live_here[..., 0])
        for pos, tm, _ in groups:
            group_tokens |= tm
            for u in ups:
                merged[u][tm] = self.feeds((site, pos), u)[tm]
        clash = plain & group_tokens[..., None]
        runs.append((merged, scored | (plain & ~clash)))
        if bool(clash.any()):
            runs.append((node_mix, clash))
        return runs

    def compute_site(self, index: int, site: str) -> None:
        """The features and errors of ``site`` under the circuit's edges, kept as deltas from the ablation values."""
        ablated_f, ablated_e = self.runner.values.features[site], self.runner.values.errors[site]
        nf, ne = ablated_f, ablated_e
        live_here = self.live[site]
        if bool(live_here.any()):
            runs = self.site_runs(index, site)
            k, b = len(runs), len(self.runner.batch)
            outputs = {
                u: torch.cat([self.mixed(u, mix[u]) for mix, _ in runs]) for u in direct_upstream(self.rm, index)
            }
            x_in, y_out = self.runner.site_with_outputs(k, outputs, site)
            d = self.rm.dictionaries[site]
            f = d.encode(x_in)
            e = y_out - d.decode(f)
            f, e = f.view(k, b, *f.shape[1:]), e.view(k, b, *e.shape[1:])
            for j, (_, assign) in enumerate(runs):
                nf = torch.where(assign[..., :-1], f[j], nf)
                ne = torch.where(assign[..., -1:], e[j], ne)
        self.cols[site] = torch.nonzero(live_here[..., :-1].flatten(0, 1).any(0)).flatten()
        self.delta_f[site] = (nf - ablated_f)[..., self.cols[site]]
        self.delta_e[site] = ne - ablated_e

    @torch.no_grad()
    def metric(self) -> float:
        """The mean metric with the circuit's edges alone carrying live values."""
        for i, site in enumerate(self.runner.sites):
            self.compute_site(i, site)
        ups = direct_upstream(self.rm, len(self.runner.sites))
        outputs = {u: self.mixed(u, self.feeds((METRIC, None), u)) for u in ups}
        return float(self.runner.metric_of(self.runner.logits_with_outputs(1, outputs), 1)[0])


def evaluate_edges(runner: Runner, circuit: nx.DiGraph, completeness: bool = True) -> Evaluation:
    """Edge-level scores of a circuit graph (see the module docstring).

    Completeness is the node-level completeness of the circuit's nodes.
    """
    check_circuit(circuit)
    m_circuit = _EdgeRun(runner, circuit).metric()
    node_eval = evaluate_node_sets(runner, [list(circuit.nodes)], completeness)[0] if completeness else None
    m_complement = node_eval.m_complement if node_eval is not None else None
    masks = runner.masks.node_masks(circuit.nodes)
    return evaluation(runner, masks, m_circuit, m_complement, "edges", circuit.number_of_edges())
