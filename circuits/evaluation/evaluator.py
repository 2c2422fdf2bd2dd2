"""Evaluating circuits by real ablation: faithfulness, completeness and curves.

Every node of the replacement model (each feature and error node of every site, at every token of
every example) is either *in* a circuit or *ablated*: set to its ablation value while the model
runs, with downstream dictionaries re-encoding the changed stream (:meth:`ReplacementModel.run`
with node edits). With ``m`` the task metric averaged over the evaluation examples:

- ``m(M)``: the full model, nothing ablated;
- ``m(∅)``: every node ablated (the embedding included, unless ``ablate_embed=False``);
- ``m(C)``: every node outside the circuit ablated;
- ``m(M∖C)``: the circuit's nodes ablated, everything else live;

faithfulness ``(m(C) - m(∅)) / (m(M) - m(∅))`` and completeness ``(m(M∖C) - m(∅)) / (m(M) - m(∅))``.
Nodes that are not in the attributed graph are outside every circuit, so they are ablated too: a
circuit is judged against the whole model, not against the graph it was pruned from.

Graph nodes name aggregated positions; a node is expanded onto each evaluation example's own
tokens: a token node onto that token index, a span node onto every token of the span in that
example (spans may differ in length between examples), a position-agnostic node (``"*"``) onto
every token.

Ablation values (``EvalConfig.ablation``):

- ``mean``: the mean over a reference set of counterfactual prompts (by default the evaluation
  examples' own counterfactuals), taken per span and offset inside the span: the token at offset
  ``o`` of span ``s`` gets the mean, over reference prompts, of the activation at offset
  ``min(o, len_s - 1)`` of their span ``s``. With the one-span-per-token schema of a task without a
  schema, this is the per-position mean;
- ``zero``: features and error terms set to zero (the site passes on its decoder bias);
- ``patch``: each example's own counterfactual activations, position-aligned span by span
  (:func:`circuits.data.inputs.corrupted_positions`).

Error nodes are ordinary nodes unless ``ablate_errors=False``, which keeps every error node live in
every run (``m(∅)`` included); ``ablate_embed=False`` does the same for the embedding site, as
Sparse Feature Circuits leaves embeddings unablated. By default the embedding is ablated like any
other site, so ``m(∅)`` is "everything ablated" and a circuit has to name the embedding features it
uses. (When the last site is a residual site, as in the standard sets, ablating every site makes
the logits independent of the prompt's content anyway, so ``m(∅)`` is the same either way.)

Edge-level evaluation (:meth:`Evaluator.evaluate_edges`) also ablates the edges a circuit leaves
out. Sites are computed one at a time in forward order. A circuit node whose incoming edges were
scored when the graph was built (node attribute ``scored_inputs``; the metric too) receives from
each upstream circuit node that node's current value only when the circuit has an edge from it into
the node's (site, position) group, and that node's ablation value otherwise; nodes outside the
circuit always pass on their ablation value. A group's input is recomputed by a forward pass in
which the outputs of the sites that reach it directly (back to the last residual or embedding
site) are replaced by that mixture, so only direct paths count, as for the edges themselves.
What is exact and what is not:

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

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from tqdm.auto import tqdm

from circuits.data.inputs import corrupted_positions, task_metric
from circuits.evaluation.curves import (
    MIB_FRACTIONS,
    Curve,
    cmd,
    completeness_score,
    cpr,
    faithfulness_score,
    fraction_sizes,
    size_grid,
)
from circuits.errors import CircuitError
from circuits.graph.ids import AGNOSTIC, ERROR_INDEX, METRIC, count_nodes, parse_node_id
from circuits.graph.prune import Selection, connect_inputs_to_metric
from circuits.data.tasks import TaskBatch
from replacement.model import NodeEdit, ReplacementModel

log = logging.getLogger(__name__)

ABLATIONS = ("mean", "zero", "patch")
LEVELS = ("nodes", "edges")
# Site kinds whose output replaces the whole residual stream: nothing before them reaches later sites directly.
STREAM_KINDS = ("embed", "resid")
# Site kinds whose input at one token is computed from upstream outputs at other tokens too (attention);
# a site of another kind mixes positions too when an attention layer that is no site lies before it
# (:meth:`Evaluator._mixes_positions`).
POSITION_MIXING_KINDS = ("attn",)


@dataclass(frozen=True)
class EvalConfig:
    """How circuits are ablated.

    ``ablation``: ``"mean"``, ``"zero"`` or ``"patch"`` (see the module docstring).
    ``ablate_errors`` / ``ablate_embed``: False keeps every error node / every embedding node live in
    every run. ``max_rows``: sequences per forward pass (circuits are batched).
    """

    ablation: str = "mean"
    ablate_errors: bool = True
    ablate_embed: bool = True
    max_rows: int = 512

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise CircuitError(f"unknown ablation {self.ablation!r}; expected one of {', '.join(ABLATIONS)}")
        if self.max_rows < 1:
            raise CircuitError(f"max_rows must be at least 1, got {self.max_rows}")


@dataclass
class Evaluation:
    """The scores of one circuit and the metric values they come from."""

    faithfulness: float
    completeness: float | None
    m_model: float
    m_empty: float
    m_circuit: float
    m_complement: float | None
    nodes: int
    edges: int
    level: str
    ablation: str
    feature_nodes: int = 0
    error_nodes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------------------ ablation values


@dataclass
class AblationValues:
    """The value every node takes when ablated, on the evaluation batch's own positions.

    ``features[site]`` [batch, pos, d_sae] and ``errors[site]`` [batch, pos, d_out].
    """

    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    kind: str

    def check(self, rm: ReplacementModel, batch: TaskBatch) -> None:
        """Raise :class:`CircuitError` unless there is one value per node of ``batch`` at every site."""
        b, t = batch.clean.shape
        missing = [s for s in rm.site_names if s not in self.features or s not in self.errors]
        if missing:
            raise CircuitError(f"the ablation values lack the sites {', '.join(missing)}; compute them with ablation_values()")
        for site in rm.site_names:
            d_sae = rm.d_sae(site)
            f, e = self.features[site], self.errors[site]
            d_out = int(rm.dictionaries[site].W_dec.shape[1])
            if tuple(f.shape) != (b, t, d_sae) or tuple(e.shape) != (b, t, d_out):
                raise CircuitError(
                    f"ablation values of site {site} have shapes {list(f.shape)} and {list(e.shape)}, but the evaluation "
                    f"batch needs [{b}, {t}, {d_sae}] and [{b}, {t}, {d_out}]; compute them on the evaluation batch"
                )


def _span_starts(span: torch.Tensor, n_spans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example and span: the first token index and the length ([batch, n_spans] each; 0 when absent)."""
    b, t = span.shape
    starts = torch.zeros(b, n_spans, dtype=torch.long)
    lengths = torch.zeros(b, n_spans, dtype=torch.long)
    pos = torch.arange(t)
    for s in range(n_spans):
        inside = span == s
        lengths[:, s] = inside.sum(1)
        starts[:, s] = torch.where(inside, pos[None], torch.full_like(span, t)).min(1).values
    return starts, lengths


def _offsets(span: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Offset of each token inside its span ([batch, pos]; 0 on padding)."""
    idx = span.clamp(min=0)
    off = torch.arange(span.shape[1])[None] - starts.gather(1, idx)
    return torch.where(span >= 0, off, torch.zeros_like(off))


@torch.no_grad()
def _mean_by_span(
    rm: ReplacementModel, batch: TaskBatch, reference: TaskBatch
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    n_spans = len(batch.span_names)
    ref_span = reference.corrupted_span.cpu()
    ref_starts, ref_len = _span_starts(ref_span, n_spans)
    if bool((ref_len == 0).any()):
        raise CircuitError("a reference prompt lacks a span of the schema; every span needs a token to take a mean over")
    max_len = ref_len.max(0).values  # [n_spans]
    slot_of = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), max_len[:-1]]), 0)  # first slot of each span
    n_slots = int(max_len.sum())
    slot_span = torch.repeat_interleave(torch.arange(n_spans), max_len)
    slot_off = torch.arange(n_slots) - slot_of[slot_span]
    # reference position of every (example, slot): offset clipped to the span's length there
    ref_pos = ref_starts[:, slot_span] + torch.minimum(slot_off[None], ref_len[:, slot_span] - 1)  # [n_ref, n_slots]
    # evaluation token -> slot
    span = batch.clean_span.cpu()
    starts, _ = _span_starts(span, n_spans)
    off = _offsets(span, starts)
    s_idx = span.clamp(min=0)
    tok_slot = slot_of[s_idx] + torch.minimum(off, max_len[s_idx] - 1)  # [batch, pos]
    recs = rm.activations(reference.corrupted.to(rm.device))
    device = rm.device
    rows = torch.arange(ref_pos.shape[0])[:, None]
    feats, errs = {}, {}
    valid = (span >= 0).to(device)[..., None]
    for site, r in recs.items():
        table_f = r.features[rows, ref_pos].mean(0)  # [n_slots, d_sae]
        table_e = r.error[rows, ref_pos].mean(0)
        feats[site] = table_f[tok_slot.to(device)] * valid
        errs[site] = table_e[tok_slot.to(device)] * valid
    return feats, errs


@torch.no_grad()
def ablation_values(
    rm: ReplacementModel, batch: TaskBatch, ablation: str = "mean", reference: TaskBatch | None = None
) -> AblationValues:
    """Ablation values for every node of ``batch``.

    ``reference``: the prompts whose counterfactuals give the values (default ``batch`` itself). For
    ``mean`` it may be any batch of the same task (same span names); for ``patch`` it must hold the
    same examples as ``batch`` (each example is patched with its own counterfactual).
    """
    if ablation not in ABLATIONS:
        raise CircuitError(f"unknown ablation {ablation!r}; expected one of {', '.join(ABLATIONS)}")
    reference = batch if reference is None else reference
    b, t = batch.clean.shape
    device = rm.device
    if ablation == "zero":
        recs = rm.activations(batch.clean[:1].to(device))
        feats = {s: torch.zeros(b, t, r.features.shape[-1], device=device) for s, r in recs.items()}
        errs = {s: torch.zeros(b, t, r.error.shape[-1], device=device) for s, r in recs.items()}
        return AblationValues(feats, errs, ablation)
    if tuple(reference.span_names) != tuple(batch.span_names):
        raise CircuitError(
            f"the ablation reference has spans {list(reference.span_names)} but the evaluation task has "
            f"{list(batch.span_names)}; take the reference from the same task"
        )
    if ablation == "mean":
        feats, errs = _mean_by_span(rm, batch, reference)
        return AblationValues(feats, errs, ablation)
    if tuple(reference.clean.shape) != (b, t) or not torch.equal(reference.clean.cpu(), batch.clean.cpu()):
        raise CircuitError(
            f"patch ablation needs the counterfactuals of the evaluation examples themselves: the reference holds "
            f"{len(reference)} prompts of shape {list(reference.clean.shape)}, the evaluation batch {b} of shape {[b, t]} "
            "(different prompts)"
        )
    recs = rm.activations(reference.corrupted.to(device))
    pos = corrupted_positions(reference).to(device)
    idx = pos.clamp(min=0)
    rows = torch.arange(b, device=device)[:, None]
    valid = (pos >= 0)[..., None]
    feats = {s: r.features[rows, idx] * valid for s, r in recs.items()}
    errs = {s: r.error[rows, idx] * valid for s, r in recs.items()}
    return AblationValues(feats, errs, ablation)


# ---------------------------------------------------------------------------------- node masks


@dataclass
class _Groups:
    """Position groups of the evaluation batch for one position kind of graph node."""

    token: torch.Tensor  # [batch, pos] -> token index (or -1)
    span: torch.Tensor  # [batch, pos] -> span index (or -1)
    valid: torch.Tensor  # [batch, pos] bool
    span_names: tuple[str, ...]


NodeKey = tuple[str, int | str, int | str]  # (site, position, feature | "err")


class _RepeatedEdit(NodeEdit):
    """A node edit whose values hold one batch and whose masks hold ``repeats`` stacked copies."""

    def __init__(self, features: torch.Tensor, feature_mask: torch.Tensor, error: torch.Tensor, error_mask: torch.Tensor, repeats: int):
        super().__init__(features, feature_mask, error, error_mask)
        self.repeats = repeats

    def apply(self, f: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.repeats
        fv = f.view(k, -1, *f.shape[1:])
        ev = e.view(k, -1, *e.shape[1:])
        f2 = torch.where(self.feature_mask.view_as(fv), self.features[None].to(f.dtype), fv).view_as(f)
        e2 = torch.where(self.error_mask.view(*ev.shape[:-1], 1), self.error[None].to(e.dtype), ev).view_as(e)
        return f2, e2


class _StopForward(Exception):
    """Raised inside a hook once the activations a partial forward pass was run for are captured."""


@dataclass
class _EdgePlan:
    """What edge-level evaluation needs of a circuit, as per-site node masks over position groups."""

    live: dict[str, dict[Any, torch.Tensor]]  # site -> the circuit's nodes (node masks, see Evaluator)
    scored: dict[str, list[tuple[int | str, torch.Tensor]]]  # site -> [(position, scored node mask of that group)]
    feeds: dict[tuple[str, int | str], dict[str, dict[Any, torch.Tensor]]]  # (site, position) -> upstream masks
    metric_feeds: dict[str, dict[Any, torch.Tensor]]


class Evaluator:
    """Scores circuits on one evaluation batch by real ablation (see the module docstring).

    ``reference``: the counterfactual prompts of mean ablation (a batch of the same task), the batch
    whose counterfactuals patch ablation uses (the evaluation batch itself), or precomputed
    :class:`AblationValues` for this batch.
    """

    def __init__(
        self,
        rm: ReplacementModel,
        batch: TaskBatch,
        config: EvalConfig = EvalConfig(),
        reference: TaskBatch | AblationValues | None = None,
    ):
        self.rm = rm
        self.batch = batch.to(rm.device)
        self.config = config
        if isinstance(reference, AblationValues):
            values = reference
        else:
            values = ablation_values(rm, self.batch, config.ablation, None if reference is None else reference.to(rm.device))
        values.check(rm, self.batch)
        self.values = values
        self.sites = rm.site_names
        self.d_sae = {s: rm.d_sae(s) for s in self.sites}
        b, t = self.batch.clean.shape
        lengths = self.batch.clean_lengths.cpu()
        valid = torch.arange(t)[None] < lengths[:, None]
        self._groups = _Groups(
            token=torch.where(valid, torch.arange(t)[None].expand(b, t), torch.full((b, t), -1)),
            span=self.batch.clean_span.cpu(),
            valid=valid,
            span_names=tuple(self.batch.span_names),
        )
        self._metric = task_metric(self.batch)
        self._cache: dict[str, torch.Tensor] = {}
        self._grows: bool | None = None
        self._parsed: dict[str, NodeKey | None] = {}

    def subset(self, n: int) -> Evaluator:
        """An evaluator on the first ``n`` examples, with the same ablation values (and reference means)."""
        if n >= len(self.batch):
            return self
        values = AblationValues(
            {s: v[:n] for s, v in self.values.features.items()}, {s: v[:n] for s, v in self.values.errors.items()},
            self.values.kind,
        )
        return Evaluator(self.rm, slice_batch(self.batch, n), self.config, values)

    # -------------------------------------------------------------------------- node sets
    def _parse(self, node: str) -> NodeKey | None:
        """(site, position, index) of a node id, checked against the dictionaries and the task (cached)."""
        if node in self._parsed:
            return self._parsed[node]
        key = self._parse_new(node)
        self._parsed[node] = key
        return key

    def _parse_new(self, node: str) -> NodeKey | None:
        site, position, index = parse_node_id(node)
        if site == METRIC:
            return None
        if site not in self.d_sae:
            raise CircuitError(
                f"circuit node {node!r} is at site {site}, which the dictionaries in use do not have (sites: "
                f"{', '.join(self.sites)}); use the dictionary set the circuit was made with"
            )
        if index != ERROR_INDEX and index >= self.d_sae[site]:
            raise CircuitError(
                f"circuit node {node!r} names feature {index}, but site {site} has {self.d_sae[site]} features; "
                "use the dictionary set the circuit was made with"
            )
        if isinstance(position, str) and position != AGNOSTIC and position not in self._groups.span_names:
            raise CircuitError(
                f"circuit node {node!r} is at span {position!r}, which the evaluation task does not have (spans: "
                f"{', '.join(self._groups.span_names)}); evaluate on the task the circuit was made for"
            )
        return site, position, index

    def node_masks(self, nodes: Iterable[str]) -> dict[str, dict[Any, torch.Tensor]]:
        """Per site and graph position, a bool [d_sae + 1] of the given nodes (error node last)."""
        masks: dict[str, dict[Any, torch.Tensor]] = {}
        for node in nodes:
            key = self._parse(node)
            if key is None:
                continue
            site, position, index = key
            by_pos = masks.setdefault(site, {})
            if position not in by_pos:
                by_pos[position] = torch.zeros(self.d_sae[site] + 1, dtype=torch.bool)
            by_pos[position][self.d_sae[site] if index == ERROR_INDEX else index] = True
        return masks

    def _token_mask(self, position: int | str) -> torch.Tensor:
        """[batch, pos] bool: the tokens a graph position expands to in each evaluation example."""
        g = self._groups
        if position == AGNOSTIC:
            return g.valid
        if isinstance(position, int):
            return g.token == position
        return g.span == g.span_names.index(position)

    def _expand(self, site: str, masks: Mapping[Any, torch.Tensor]) -> torch.Tensor:
        """[batch, pos, d_sae + 1] bool: node masks of one site expanded onto tokens.

        One gather per kind of position: a table with a row per token index, span or ``"*"`` (and an
        all-False row for padding and for positions the batch does not have) indexed by each token's group.
        """
        g = self._groups
        b, t = g.valid.shape
        width = self.d_sae[site] + 1
        out: torch.Tensor | None = None
        kinds: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for position, m in masks.items():
            if position == AGNOSTIC:
                kinds.setdefault("agnostic", []).append((0, m))
            elif isinstance(position, int):
                if position < t:
                    kinds.setdefault("token", []).append((position, m))
            else:
                kinds.setdefault("span", []).append((g.span_names.index(position), m))
        for kind, rows in kinds.items():
            index = {"token": g.token, "span": g.span, "agnostic": torch.where(g.valid, 0, -1)}[kind]
            n_rows = {"token": t, "span": len(g.span_names), "agnostic": 1}[kind]
            table = torch.zeros(n_rows + 1, width, dtype=torch.bool)
            for row, m in rows:
                table[row] |= m
            part = table[torch.where(index >= 0, index, n_rows)]
            out = part if out is None else out | part
        return out if out is not None else torch.zeros(b, t, width, dtype=torch.bool)

    def _protected(self, site: str) -> torch.Tensor:
        """[d_sae + 1] bool: nodes of ``site`` that are never ablated (errors / embedding when so configured)."""
        m = torch.zeros(self.d_sae[site] + 1, dtype=torch.bool)
        if not self.config.ablate_errors:
            m[-1] = True
        if not self.config.ablate_embed and site == self.sites[0] and site == "embed":
            m[:] = True
        return m

    def _live_tokens(self, site: str, masks: Mapping[Any, torch.Tensor] | None, complement: bool = False) -> torch.Tensor:
        """[batch, pos, d_sae + 1] bool: True where a node keeps its value in the run."""
        expanded = self._expand(site, masks or {})
        if complement:
            expanded = ~expanded
        return expanded | self._protected(site)[None, None]

    # ----------------------------------------------------------------------------- running
    def _metric_rows(self, logits: torch.Tensor, repeats: int) -> torch.Tensor:
        """[repeats, batch]: the task metric of every example of each stacked copy of the batch."""
        b = len(self.batch)
        index = torch.arange(b, device=logits.device).repeat(repeats)
        return self._metric(logits, index).view(repeats, b).detach().double().cpu()

    def _metric_of(self, logits: torch.Tensor, repeats: int) -> torch.Tensor:
        return self._metric_rows(logits, repeats).mean(1)

    @torch.no_grad()
    def _run_live(self, lives: Sequence[Mapping[str, torch.Tensor] | None]) -> torch.Tensor:
        """Per-example metric of each run ([runs, batch]); ``lives[k][site]`` marks the live nodes
        ([batch, pos, d_sae + 1]), None = nothing ablated.

        Runs are batched. A site whose nodes are all ablated in every run of a batch passes on its
        ablated output without being encoded; one with nothing ablated passes its activation on.
        """
        b = len(self.batch)
        per = max(1, self.config.max_rows // b)
        out: list[torch.Tensor] = []
        dev = self.rm.device
        padding = ~self._groups.valid.to(dev)[..., None]
        base = self._ablated_outputs()
        for i in range(0, len(lives), per):
            group = lives[i : i + per]
            k = len(group)
            edits: dict[str, NodeEdit] = {}
            overrides: list[tuple[str, Any]] = []
            for site in self.sites:
                ablate = torch.stack([
                    torch.zeros(*padding.shape[:2], self.d_sae[site] + 1, dtype=torch.bool, device=dev)
                    if live is None else ~live[site].to(dev) & ~padding
                    for live in group
                ])  # [k, batch, pos, d_sae + 1]
                if not bool(ablate.any()):
                    continue  # the true activation
                if bool((ablate | padding).all()):
                    value = base[site].repeat(k, 1, 1)
                    overrides.append((self.rm.site(site).hook_out, lambda x, hook, v=value: v))
                    continue
                edits[site] = _RepeatedEdit(
                    self.values.features[site], ablate[..., :-1].reshape(k * b, *ablate.shape[2:-1], -1),
                    self.values.errors[site], ablate[..., -1].reshape(k * b, -1), k,
                )
            logits = self.rm.run(self.batch.clean.repeat(k, 1), edits, sites=list(edits), extra_hooks=overrides).logits
            out.append(self._metric_rows(logits, k))
        return torch.cat(out) if out else torch.zeros(0, b, dtype=torch.float64)

    def _reference_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example metric of the full model and of the empty circuit ([batch] each; cached)."""
        if "model" not in self._cache:
            with torch.no_grad():
                logits = self.rm.run(self.batch.clean).logits
            self._cache["model"] = self._metric_rows(logits, 1)[0]
            self._cache["empty"] = self._run_live([{s: self._live_tokens(s, None) for s in self.sites}])[0]
        return self._cache["model"], self._cache["empty"]

    @property
    def m_model(self) -> float:
        """The metric of the full model (mean over the evaluation examples)."""
        return float(self._reference_rows()[0].mean())

    @property
    def m_empty(self) -> float:
        """The metric with every node ablated (protected nodes excepted)."""
        return float(self._reference_rows()[1].mean())

    def _scores(self, m_circuit: float, m_complement: float | None) -> tuple[float, float | None]:
        f = faithfulness_score(m_circuit, self.m_model, self.m_empty)
        c = None if m_complement is None else completeness_score(m_complement, self.m_model, self.m_empty)
        return f, c

    # ------------------------------------------------------------------------------ node level
    def evaluate_node_sets(self, node_sets: Sequence[Iterable[str]], completeness: bool = True) -> list[Evaluation]:
        """Node-level scores of plain node sets (the empty set allowed: faithfulness 0)."""
        masks = [self.node_masks(ns) for ns in node_sets]
        lives: list[Mapping[str, torch.Tensor]] = []
        for m in masks:
            lives.append({s: self._live_tokens(s, m.get(s)) for s in self.sites})
            if completeness:
                lives.append({s: self._live_tokens(s, m.get(s), complement=True) for s in self.sites})
        values = self._run_live(lives).mean(1).tolist()
        step = 2 if completeness else 1
        out = []
        for i, m in enumerate(masks):
            mc = values[step * i]
            mcomp = values[step * i + 1] if completeness else None
            f, c = self._scores(mc, mcomp)
            n_err = sum(int(v[-1]) for by_pos in m.values() for v in by_pos.values())
            n_all = sum(int(v.sum()) for by_pos in m.values() for v in by_pos.values())
            out.append(Evaluation(f, c, self.m_model, self.m_empty, mc, mcomp, n_all, 0, "nodes", self.config.ablation,
                                  n_all - n_err, n_err))
        return out

    def evaluate_nodes(self, nodes: Iterable[str], completeness: bool = True) -> Evaluation:
        """Node-level scores of one node set (ids of :mod:`circuits.graph.ids`; ``"metric"`` is ignored)."""
        return self.evaluate_node_sets([list(nodes)], completeness)[0]

    def faithfulness_with_bound(
        self, node_sets: Sequence[Iterable[str]], confidence: float = 0.9, n_boot: int = 1000, seed: int = 0
    ) -> list[tuple[float, float]]:
        """Faithfulness of each node set and a one-sided lower bound at ``confidence``.

        The bound is the ``1 - confidence`` quantile of a bootstrap over examples (the same resampled
        examples for the circuit, the full model and the empty circuit).
        """
        if not 0 < confidence < 1:
            raise CircuitError(f"confidence must be in (0, 1), got {confidence}")
        rows = self._run_live([
            {s: self._live_tokens(s, m.get(s)) for s in self.sites} for m in (self.node_masks(ns) for ns in node_sets)
        ])
        full, empty = self._reference_rows()
        b = full.shape[0]
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, b, (n_boot, b), generator=gen)
        denominator = full[idx].mean(1) - empty[idx].mean(1)  # [n_boot]
        out = []
        for r in rows:
            f = faithfulness_score(float(r.mean()), self.m_model, self.m_empty)
            boot = (r[idx].mean(1) - empty[idx].mean(1)) / denominator
            out.append((f, float(torch.quantile(boot, 1 - confidence))))
        return out

    def evaluate(self, circuit: nx.DiGraph, level: str = "nodes", completeness: bool = True) -> Evaluation:
        """Scores of a circuit graph at node level (its nodes) or edge level (its nodes and edges)."""
        _check_circuit(circuit)
        if level == "nodes":
            return self.evaluate_circuits([circuit], completeness)[0]
        if level == "edges":
            return self.evaluate_edges(circuit, completeness)
        raise CircuitError(f"unknown evaluation level {level!r}; expected one of {', '.join(LEVELS)}")

    def evaluate_circuits(self, circuits: Sequence[nx.DiGraph], completeness: bool = True) -> list[Evaluation]:
        """Node-level scores of several circuits, batched."""
        for c in circuits:
            _check_circuit(c)
        evals = self.evaluate_node_sets([list(c.nodes) for c in circuits], completeness)
        for e, c in zip(evals, circuits):
            e.edges = c.number_of_edges()
        return evals

    # ------------------------------------------------------------------------------ edge level
    def _edge_plan(self, circuit: nx.DiGraph) -> _EdgePlan:
        live = self.node_masks(circuit.nodes)
        scored: dict[str, dict[Any, torch.Tensor]] = {}
        feeds: dict[tuple[str, Any], dict[str, dict[Any, torch.Tensor]]] = {}
        metric_feeds: dict[str, dict[Any, torch.Tensor]] = {}
        for node, attrs in circuit.nodes(data=True):
            if node == METRIC or not attrs.get("scored_inputs", False):
                continue
            site, position, index = self._parse(node)  # type: ignore[misc]
            by_pos = scored.setdefault(site, {})
            if position not in by_pos:
                by_pos[position] = torch.zeros(self.d_sae[site] + 1, dtype=torch.bool)
            by_pos[position][self.d_sae[site] if index == ERROR_INDEX else index] = True
            feeds.setdefault((site, position), {})
        for u, v in circuit.edges:
            if v == METRIC:
                target = metric_feeds
            else:
                if not circuit.nodes[v].get("scored_inputs", False):
                    continue
                vs, vp, _ = self._parse(v)  # type: ignore[misc]
                target = feeds[(vs, vp)]
            us, up, ui = self._parse(u)  # type: ignore[misc]
            by_pos = target.setdefault(us, {})
            if up not in by_pos:
                by_pos[up] = torch.zeros(self.d_sae[us] + 1, dtype=torch.bool)
            by_pos[up][self.d_sae[us] if ui == ERROR_INDEX else ui] = True
        return _EdgePlan(live, {s: list(p.items()) for s, p in scored.items()}, feeds, metric_feeds)

    def _direct_upstream(self, index: int) -> list[str]:
        """Sites whose outputs reach site ``index`` (or, with ``index == len(sites)``, the logits) directly:
        back to and including the last full-stream site (embedding or residual) before it."""
        out: list[str] = []
        for u in reversed(self.sites[:index]):
            out.append(u)
            if self.rm.site(u).kind in STREAM_KINDS:
                break
        return out[::-1]

    def _mixes_positions(self, index: int) -> bool:
        """Whether site ``index``'s input at a token depends on its direct upstream outputs at other
        tokens: an attention site, or an attention layer that is not a site between the last
        full-stream site and it (the transcoders composition, where attention runs inside the edges)."""
        s = self.rm.site(self.sites[index])
        if s.kind in POSITION_MIXING_KINDS:
            return True
        ups = [self.rm.site(u) for u in self._direct_upstream(index)]
        if not ups:
            return False  # nothing upstream: the input is the model's own
        start = next((u.layer + (u.kind == "resid") for u in ups if u.kind in STREAM_KINDS), 0)
        replaced = {u.layer for u in ups if u.kind == "attn"}
        return any(layer not in replaced for layer in range(max(start, 0), s.layer + 1))

    def _batch_can_grow(self) -> bool:
        """Whether the model accepts a site output with more rows than its input batch (checked once).

        When it does, a pass over ``k`` variants runs the layers before the first replaced site once,
        on the plain batch, instead of ``k`` times.
        """
        if self._grows is None:
            toks = self.batch.clean[:2]
            s = self.rm.site(self.sites[0])
            with torch.no_grad():
                value = self.rm.activations(toks)[s.name].output.repeat(2, 1, 1)
                hook = [(s.hook_out, lambda x, hook: value)]
                try:
                    grown = self.rm.run(toks, sites=[], extra_hooks=hook).logits
                    ref = self.rm.run(toks.repeat(2, 1), sites=[], extra_hooks=hook).logits
                    self._grows = grown.shape == ref.shape and bool(torch.allclose(grown, ref, atol=1e-4, rtol=1e-4))
                except (RuntimeError, ValueError, IndexError):
                    self._grows = False
        return self._grows

    def _run_with_outputs(self, repeats: int, outputs: Mapping[str, torch.Tensor], site: str | None) -> Any:
        """A forward pass over ``repeats`` stacked copies of the batch with the given site outputs
        ([repeats * batch, pos, d] each) put in place; with ``site``, stop once that site's input and
        true output are captured and return them, else return the logits."""
        tokens = self.batch.clean if (repeats == 1 or (outputs and self._batch_can_grow())) else self.batch.clean.repeat(repeats, 1)
        hooks = [(self.rm.site(u).hook_out, lambda x, hook, v=v: v) for u, v in outputs.items()]
        got: dict[str, torch.Tensor] = {}
        if site is not None:
            s = self.rm.site(site)

            def grab_in(x: torch.Tensor, hook: Any) -> torch.Tensor:
                got["in"] = x
                if s.hook_in == s.hook_out:
                    got["out"] = x
                    raise _StopForward
                return x

            def grab_out(x: torch.Tensor, hook: Any) -> torch.Tensor:
                got["out"] = x
                raise _StopForward

            hooks += [(s.hook_in, grab_in)] + ([(s.hook_out, grab_out)] if s.hook_in != s.hook_out else [])
        try:
            logits = self.rm.run(tokens, sites=[], extra_hooks=hooks).logits
        except _StopForward:
            if got["in"].shape[0] != repeats * len(self.batch):  # no replaced site upstream (the first site)
                return got["in"].repeat(repeats, 1, 1), got["out"].repeat(repeats, 1, 1)
            return got["in"], got["out"]
        if site is not None:
            raise CircuitError(f"site {site}: its hooks did not run in the forward pass")
        return logits

    @torch.no_grad()
    def _edge_metric(self, circuit: nx.DiGraph) -> float:
        plan = self._edge_plan(circuit)
        dev = self.rm.device
        b = len(self.batch)
        base = self._ablated_outputs()
        live_tok = {u: self._live_tokens(u, plan.live.get(u)).to(dev) for u in self.sites}
        feeds_cache: dict[tuple[Any, str], torch.Tensor] = {}
        delta_f: dict[str, torch.Tensor] = {}  # current minus ablation value, on the circuit's features only
        delta_e: dict[str, torch.Tensor] = {}
        cols: dict[str, torch.Tensor] = {}

        def mixed(u: str, live: torch.Tensor) -> torch.Tensor:
            """Output of site ``u`` with ``live`` nodes at their current value, the rest ablated."""
            out = base[u]
            if cols[u].numel():
                sel = live[..., :-1][..., cols[u]].to(delta_f[u].dtype)
                out = out + (sel * delta_f[u]) @ self.rm.dictionaries[u].W_dec[cols[u]].to(out.dtype)
            return out + live[..., -1:].to(out.dtype) * delta_e[u]

        def feeds_mask(key: tuple[str, Any], u: str) -> torch.Tensor:
            if (key, u) not in feeds_cache:
                fed = plan.feeds[key].get(u, {}) if key in plan.feeds else plan.metric_feeds.get(u, {})
                feeds_cache[(key, u)] = (self._expand(u, fed) | self._protected(u)[None, None]).to(dev)
            return feeds_cache[(key, u)]

        for i, site in enumerate(self.sites):
            live_here = live_tok[site]
            if bool(live_here.any()):
                ups = self._direct_upstream(i)
                node_mix = {u: live_tok[u] for u in ups}
                groups = [(pos, self._token_mask(pos).to(dev), m.to(dev)) for pos, m in plan.scored.get(site, [])]
                scored = torch.zeros_like(live_here)
                for _, tm, m in groups:
                    scored |= tm[..., None] & m[None, None] & live_here
                plain = live_here & ~scored
                runs: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []  # (upstream live masks, nodes it assigns)
                if self._mixes_positions(i):
                    if bool(plain.any()):
                        runs.append((node_mix, plain))
                    for pos, tm, m in groups:
                        runs.append(({u: feeds_mask((site, pos), u) for u in ups}, tm[..., None] & m[None, None] & live_here))
                else:  # the site's input at a token depends on upstream outputs at that token only: one run
                    merged = {u: node_mix[u].clone() for u in ups}
                    group_tokens = torch.zeros_like(live_here[..., 0])
                    for pos, tm, _ in groups:
                        group_tokens |= tm
                        for u in ups:
                            merged[u][tm] = feeds_mask((site, pos), u)[tm]
                    clash = plain & group_tokens[..., None]
                    runs.append((merged, scored | (plain & ~clash)))
                    if bool(clash.any()):
                        runs.append((node_mix, clash))
                k = len(runs)
                outputs = {u: torch.cat([mixed(u, mix[u]) for mix, _ in runs]) for u in ups}
                x_in, y_out = self._run_with_outputs(k, outputs, site)
                d = self.rm.dictionaries[site]
                f = d.encode(x_in)
                e = y_out - d.decode(f)
                f, e = f.view(k, b, *f.shape[1:]), e.view(k, b, *e.shape[1:])
                nf, ne = self.values.features[site], self.values.errors[site]
                for j, (_, assign) in enumerate(runs):
                    nf = torch.where(assign[..., :-1], f[j], nf)
                    ne = torch.where(assign[..., -1:], e[j], ne)
            else:
                nf, ne = self.values.features[site], self.values.errors[site]
            live_cols = live_here[..., :-1].flatten(0, 1).any(0)
            cols[site] = torch.nonzero(live_cols).flatten()
            delta_f[site] = (nf - self.values.features[site])[..., cols[site]]
            delta_e[site] = ne - self.values.errors[site]
        ups = self._direct_upstream(len(self.sites))
        outputs = {u: mixed(u, feeds_mask((METRIC, None), u)) for u in ups}
        logits = self._run_with_outputs(1, outputs, None)
        return float(self._metric_of(logits, 1)[0])

    def _ablated_outputs(self) -> dict[str, torch.Tensor]:
        """Each site's output with all of its nodes ablated (cached)."""
        if not hasattr(self, "_base_outputs"):
            with torch.no_grad():
                self._base_outputs = {
                    s: self.rm.dictionaries[s].decode(self.values.features[s]) + self.values.errors[s] for s in self.sites
                }
        return self._base_outputs

    def evaluate_edges(self, circuit: nx.DiGraph, completeness: bool = True) -> Evaluation:
        """Edge-level scores: the circuit's nodes live and only its edges carry live values (see module docstring).

        Completeness is the node-level completeness of the circuit's nodes.
        """
        _check_circuit(circuit)
        mc = self._edge_metric(circuit)
        node_eval = self.evaluate_node_sets([list(circuit.nodes)], completeness)[0] if completeness else None
        mcomp = node_eval.m_complement if node_eval is not None else None
        f, c = self._scores(mc, mcomp)
        masks = self.node_masks(circuit.nodes)
        n_err = sum(int(v[-1]) for by_pos in masks.values() for v in by_pos.values())
        n_all = count_nodes(circuit)
        return Evaluation(f, c, self.m_model, self.m_empty, mc, mcomp, n_all, circuit.number_of_edges(), "edges",
                          self.config.ablation, n_all - n_err, n_err)


def _check_circuit(circuit: nx.DiGraph) -> None:
    if not isinstance(circuit, nx.DiGraph):
        raise CircuitError(f"a circuit is a networkx DiGraph, not {type(circuit).__name__}")
    if count_nodes(circuit) == 0:
        raise CircuitError(
            "the circuit is empty: it has no node besides 'metric'; prune with a larger size or a lower threshold "
            "(the empty circuit's faithfulness is 0 by definition)"
        )


def evaluate_circuit(
    rm: ReplacementModel,
    batch: TaskBatch,
    circuit: nx.DiGraph,
    config: EvalConfig = EvalConfig(),
    *,
    level: str = "nodes",
    reference: TaskBatch | AblationValues | None = None,
) -> Evaluation:
    """Faithfulness and completeness of ``circuit`` on ``batch`` (see :class:`Evaluator`)."""
    return Evaluator(rm, batch, config, reference).evaluate(circuit, level)


# ---------------------------------------------------------------------------------------- curves


@dataclass
class Curves:
    """Faithfulness curves of one attributed graph: by nodes (top-k nodes, node-level ablation) and by
    edges (top-k edges at MIB's edge fractions, edge-level ablation). CPR and CMD come from the
    edge curve."""

    nodes: Curve
    edges: Curve | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cpr(self) -> float | None:
        return None if self.edges is None else self.edges.cpr

    @property
    def cmd(self) -> float | None:
        return None if self.edges is None else self.edges.cmd

    def to_curve(self) -> Curve:
        """The curve.json object: the node curve, with the edge curve under ``metadata["edge_curve"]``
        and its CPR / CMD at the top level."""
        meta = dict(self.nodes.metadata)
        if self.edges is not None:
            meta["edge_curve"] = self.edges.to_dict()
            meta["areas"] = "cpr and cmd: MIB areas over the edge curve (metadata.edge_curve)"
        return Curve(
            self.nodes.sizes_nodes, self.nodes.sizes_edges, self.nodes.faithfulness, self.nodes.completeness,
            self.nodes.total_nodes, self.nodes.total_edges, self.cpr, self.cmd, meta,
        )


def ranked_nodes(G: nx.DiGraph) -> list[str]:
    """The graph's nodes (metric excluded) by decreasing ``|effect|``, ties in graph order, as pruning ranks them."""
    nodes = [n for n in G if n != METRIC]
    order = {n: i for i, n in enumerate(nodes)}
    return sorted(nodes, key=lambda n: (-abs(float(G.nodes[n]["effect"])), order[n]))


def edges_within_top(G: nx.DiGraph, ranked: Sequence[str], sizes: Sequence[int]) -> list[int]:
    """For each k in ``sizes``, the number of edges of ``G`` between the top-k nodes of ``ranked`` (and the metric)."""
    rank = {n: i + 1 for i, n in enumerate(ranked)}
    rank[METRIC] = 0
    needed = sorted(max(rank.get(u, math.inf), rank.get(v, math.inf)) for u, v in G.edges)
    import bisect

    return [bisect.bisect_right(needed, k) for k in sizes]


def node_curve(
    evaluator: Evaluator,
    G: nx.DiGraph,
    n_points: int = 15,
    sizes: Sequence[int] | None = None,
    extra_sizes: Sequence[int] = (),
) -> Curve:
    """Faithfulness and completeness of the top-k nodes of ``G`` (by ``|effect|``) for k on a log grid
    (or the given ``sizes``), plus ``extra_sizes`` (e.g. the chosen circuit's).

    Each point is the node set itself, evaluated at node level as Sparse Feature Circuits does (no
    connectivity pruning); ``sizes_edges`` counts the graph's edges between its nodes.
    """
    ranked = ranked_nodes(G)
    total = len(ranked)
    if total == 0:
        raise CircuitError("the graph has no nodes to build a curve from")
    sizes = list(sizes) if sizes is not None else size_grid(total, n_points)
    sizes = sorted(set(sizes) | {k for k in extra_sizes if 0 < k <= total})
    evals = evaluator.evaluate_node_sets([ranked[:k] for k in sizes])
    return Curve(
        list(sizes), edges_within_top(G, ranked, sizes), [e.faithfulness for e in evals],
        [e.completeness for e in evals], total, G.number_of_edges(),
        metadata={
            "rule": "top_nodes", "level": "nodes", "ablation": evaluator.config.ablation,
            "m_model": evaluator.m_model, "m_empty": evaluator.m_empty, "examples": len(evaluator.batch),
        },
    )


@dataclass
class SizeSearch:
    """The result of :func:`smallest_faithful`: the size, its faithfulness and (with a confidence) its lower bound."""

    n_nodes: int
    faithfulness: float
    lower_bound: float | None
    reached: bool


def smallest_faithful(
    evaluator: Evaluator,
    G: nx.DiGraph,
    target: float,
    n_points: int = 8,
    refine: int = 5,
    confidence: float | None = None,
) -> SizeSearch:
    """The smallest k whose top-k nodes reach faithfulness ``target`` on the evaluator's batch.

    With ``confidence``, the criterion is the bootstrap lower bound of the faithfulness at that
    confidence (:meth:`Evaluator.faithfulness_with_bound`), so that the chosen size holds up on new
    examples rather than just crossing the target on these. A log grid brackets k, then bisection
    narrows it (``refine`` more evaluations). If no size reaches the target, the best grid point is
    returned with ``reached=False``.
    """
    ranked = ranked_nodes(G)
    if not ranked:
        raise CircuitError("the graph has no nodes to choose a circuit from")

    def score(sizes: Sequence[int]) -> list[tuple[float, float]]:
        sets = [ranked[:k] for k in sizes]
        if confidence is None:
            return [(e.faithfulness, e.faithfulness) for e in evaluator.evaluate_node_sets(sets, completeness=False)]
        return evaluator.faithfulness_with_bound(sets, confidence)

    sizes = size_grid(len(ranked), n_points)
    scores = score(sizes)
    hit = next((i for i, (_, low) in enumerate(scores) if low >= target), None)
    bound = (lambda fl: None if confidence is None else fl[1])
    if hit is None:
        best = max(range(len(sizes)), key=lambda i: scores[i][1])
        return SizeSearch(sizes[best], scores[best][0], bound(scores[best]), False)
    lo, hi, at_hi = (sizes[hit - 1] if hit > 0 else 0), sizes[hit], scores[hit]
    for _ in range(refine):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        at_mid = score([mid])[0]
        if at_mid[1] >= target:
            hi, at_hi = mid, at_mid
        else:
            lo = mid
    return SizeSearch(hi, at_hi[0], bound(at_hi), True)


def sizes_needed(evaluator: Evaluator, G: nx.DiGraph, levels: Sequence[float], n_points: int = 16, refine: int = 12) -> dict[str, int | None]:
    """For each faithfulness level, the smallest top-k node count reaching it (None: not reached)."""
    out: dict[str, int | None] = {}
    for level in levels:
        found = smallest_faithful(evaluator, G, level, n_points=n_points, refine=refine)
        out[str(level)] = found.n_nodes if found.reached else None
    return out


def _skeleton(G: nx.DiGraph) -> nx.DiGraph:
    """``G`` with only what pruning and edge-level evaluation read: effects and ``scored_inputs``."""
    H = nx.DiGraph()
    H.graph.update(G.graph)
    H.add_nodes_from((n, {"effect": a["effect"], "scored_inputs": a.get("scored_inputs", False)}) for n, a in G.nodes(data=True))
    H.add_edges_from((u, v, {"effect": a["effect"]}) for u, v, a in G.edges(data=True))
    return H


def edge_curve(evaluator: Evaluator, G: nx.DiGraph, fractions: Sequence[float] = MIB_FRACTIONS, progress: bool = False) -> Curve:
    """Faithfulness (edge-level ablation) of the top-k-edge circuits of ``G`` at the given edge fractions,
    with MIB's CPR and CMD over those fractions.

    Each circuit is what :func:`circuits.graph.prune.prune_top_edges` gives (the k edges of largest
    ``|effect|``, ties in graph order, then the connectivity phase); the edges are ranked once for all
    sizes. A size at which nothing connects the inputs to the metric is the empty circuit.
    """
    total = G.number_of_edges()
    if total == 0:
        raise CircuitError("the graph has no edges to build an edge curve from")
    sizes = fraction_sizes(total, fractions)
    skeleton = _skeleton(G)
    edges = list(skeleton.edges(data="effect"))
    order = sorted(range(len(edges)), key=lambda i: (-abs(float(edges[i][2])), i))
    ranked = [(edges[i][0], edges[i][1]) for i in order]
    f, comp, n_nodes, n_edges = [], [], [], []
    for k in tqdm(sizes, desc="edge curve", disable=not progress, leave=False):
        chosen = ranked[:k]
        selection = Selection(frozenset({n for e in chosen for n in e} | {METRIC}), frozenset(chosen))
        try:
            c, _ = connect_inputs_to_metric(skeleton, selection)
        except CircuitError:  # nothing connects the inputs to the metric at this size: the empty circuit
            f.append(0.0)
            comp.append(1.0)
            n_nodes.append(0)
            n_edges.append(0)
            continue
        e = evaluator.evaluate_edges(c)
        f.append(e.faithfulness)
        comp.append(e.completeness)
        n_nodes.append(count_nodes(c))
        n_edges.append(c.number_of_edges())
    k = list(fractions)
    return Curve(n_nodes, n_edges, f, comp, count_nodes(G), total, cpr(k, f), cmd(k, f), metadata={
        "rule": "top_edges", "fractions": k, "requested_edges": sizes, "level": "edges",
        "ablation": evaluator.config.ablation, "completeness": "node level (the circuit's nodes ablated)",
    })


def faithfulness_curves(
    evaluator: Evaluator,
    G: nx.DiGraph,
    n_points: int = 15,
    fractions: Sequence[float] | None = MIB_FRACTIONS,
    edge_examples: int | None = None,
    progress: bool = False,
    extra_sizes: Sequence[int] = (),
) -> Curves:
    """The node curve and (unless ``fractions`` is None) the edge curve of ``G``.

    ``edge_examples``: evaluate the edge curve on the first this many examples only (edge-level
    ablation costs a forward pass per site and position group); None uses them all.
    """
    import time

    t0 = time.perf_counter()
    nodes = node_curve(evaluator, G, n_points, extra_sizes=extra_sizes)
    t1 = time.perf_counter()
    edges = None
    if fractions is not None and G.number_of_edges():
        edge_eval = evaluator if edge_examples is None else evaluator.subset(edge_examples)
        edges = edge_curve(edge_eval, G, fractions, progress)
        edges.metadata["examples"] = len(edge_eval.batch)
    t2 = time.perf_counter()
    return Curves(nodes, edges, {"node_curve": t1 - t0, "edge_curve": t2 - t1})


def slice_batch(batch: TaskBatch, n: int) -> TaskBatch:
    """The first ``n`` examples of a batch (padding width unchanged)."""
    fields = {k: (v[:n] if isinstance(v, torch.Tensor) else v) for k, v in batch.__dict__.items()}
    return TaskBatch(**fields)
