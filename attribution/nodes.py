"""Node effects: attribution patching, integrated gradients and exact patching.

Every (site, position, feature | error) node of every example gets the effect on that example's
metric of moving the node from its clean value to its target value (counterfactual, zero or
mean). Methods:

- ``atp``: first order, ``(target - clean) . grad`` at the clean input.
- ``ig``: integrated gradients. ``ig_mode="inputs"`` (the default with a counterfactual)
  interpolates the whole residual stream entering layer 0 from clean to target and reads the
  gradient at every site in the same backward pass: ``steps`` forward+backward passes in all.
  ``ig_mode="per-site"`` interpolates one site at a time (features and error jointly, the other sites computing freely), as Sparse
  Feature Circuits does: ``sites x steps`` passes. Both average the gradient at the midpoints
  ``alpha = (k + 1/2) / steps``. Where clean and counterfactual prompts differ in length, the
  input path ends at the counterfactual embeddings moved onto the clean positions
  (``corrupted_position``), which is close to but not the counterfactual run; the per-site path
  ends exactly at each site's aligned counterfactual values. A zero or mean baseline has no input
  to interpolate towards and needs ``ig_mode="per-site"``.
- ``exact``: real patching of each node on its own (ground truth; costly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from attribution.core import (
    ERROR,
    AttributionError,
    AttributionInputs,
    SiteValues,
    check_metric_values,
    feature_grad,
    rows_within_budget,
    site_output,
    site_values,
)
from replacement.model import NodeEdit, ReplacementModel

log = logging.getLogger(__name__)

METHODS = ("atp", "ig", "exact")
IG_MODES = ("inputs", "per-site")
HALF = (torch.float16, torch.bfloat16)  # gradients summed over steps in float32


@dataclass
class PassCounter:
    """Forward and backward passes made (a pass over n sequences counts n / batch)."""

    forward: float = 0.0
    backward: float = 0.0


@dataclass
class NodeEffects:
    """Per-example node effects on the metric.

    ``features[site]`` [batch, pos, d_sae], ``errors[site]`` [batch, pos]; ``grads[site]`` the
    (averaged) metric gradient at the site output [batch, pos, d] that produced them.
    """

    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    method: str
    valid: torch.Tensor
    values: dict[str, SiteValues]
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    metric_clean: torch.Tensor | None = None
    metric_target: torch.Tensor | None = None
    passes: PassCounter = field(default_factory=PassCounter)
    baseline: str = "corrupted"

    @property
    def sites(self) -> list[str]:
        return list(self.features)

    def total(self) -> float:
        """Sum of the effects of every node (features and errors of all sites), averaged over examples."""
        s = sum(float(f.sum()) for f in self.features.values()) + sum(float(e.sum()) for e in self.errors.values())
        return s / self.valid.shape[0]


def _effects_from_grads(rm: ReplacementModel, values: dict[str, SiteValues], grads: dict[str, torch.Tensor]):
    feats, errs = {}, {}
    for name, v in values.items():
        g = grads[name]
        feats[name] = v.df * feature_grad(rm, name, g)
        errs[name] = (v.de * g).sum(-1)
    return feats, errs


def _metric(inputs: AttributionInputs, logits: torch.Tensor, repeats: int = 1) -> torch.Tensor:
    return check_metric_values(inputs.metric(logits, inputs.index(repeats)), logits.shape[0], grad=logits.requires_grad)


def _grads_atp(rm: ReplacementModel, inputs: AttributionInputs, counter: PassCounter) -> dict[str, torch.Tensor]:
    run = rm.run_with_grads(inputs.clean)
    m = _metric(inputs, run.logits)
    counter.forward += 1
    counter.backward += 1
    return {k: v.detach() for k, v in run.site_grads(m.sum()).items()}


def _sum_steps(g: torch.Tensor, k: int, b: int) -> torch.Tensor:
    """The gradients of ``k`` interpolation steps of a batch of ``b`` ([k * b, ...]) summed over the steps,
    in float32 for a half-precision model."""
    return g.detach().view(k, b, *g.shape[1:]).sum(0, dtype=torch.float32 if g.dtype in HALF else g.dtype)


def midpoints(steps: int) -> list[float]:
    """The interpolation points ``alpha = (k + 1/2) / steps`` of integrated gradients."""
    return [(k + 0.5) / steps for k in range(steps)]


def _grads_ig_inputs(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    values: dict[str, SiteValues],
    steps: int,
    chunk: int,
    counter: PassCounter,
    progress: bool,
) -> dict[str, torch.Tensor]:
    b = inputs.batch_size
    x0 = embed_values(rm, inputs, values)
    total: dict[str, torch.Tensor] = {}
    alphas = midpoints(steps)
    per = max(1, chunk // b)
    for i in tqdm(range(0, steps, per), desc="integrated gradients", disable=not progress, leave=False):
        group = alphas[i : i + per]
        k = len(group)
        a = torch.tensor(group, device=x0[0].device, dtype=x0[0].dtype).repeat_interleave(b)[:, None, None]
        start, end = x0[0].repeat(k, 1, 1), x0[1].repeat(k, 1, 1)
        interp = start + a * (end - start)
        run = rm.run_with_grads(inputs.clean.repeat(k, 1), embed=interp)
        m = _metric(inputs, run.logits, k)
        grads = run.site_grads(m.sum())
        counter.forward += k
        counter.backward += k
        for name, g in grads.items():
            total[name] = total.get(name, 0) + _sum_steps(g, k, b)
    return {n: (g / steps).to(x0[0].dtype) for n, g in total.items()}


@torch.no_grad()
def embed_values(
    rm: ReplacementModel, inputs: AttributionInputs, values: dict[str, SiteValues]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and target residual stream entering layer 0, aligned to clean positions."""
    if "embed" in values:
        v = values["embed"]
        return site_output(rm, "embed", v.f_clean, v.e_clean), site_output(rm, "embed", v.f_target, v.e_target)
    clean = rm.embeddings(inputs.clean)
    if inputs.corrupted is None:
        raise AttributionError("integrated gradients over inputs without an embed site needs corrupted tokens")
    return clean, inputs.at_clean_positions(rm.embeddings(inputs.corrupted))


def _grads_ig_per_site(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    values: dict[str, SiteValues],
    steps: int,
    chunk: int,
    counter: PassCounter,
    progress: bool,
) -> dict[str, torch.Tensor]:
    b = inputs.batch_size
    alphas = midpoints(steps)
    per = max(1, chunk // b)
    out = {}
    for name in tqdm(list(values), desc="integrated gradients per site", disable=not progress, leave=False):
        v = values[name]
        with torch.no_grad():
            y0 = site_output(rm, name, v.f_clean, v.e_clean)
            y1 = site_output(rm, name, v.f_target, v.e_target)
        total: torch.Tensor | None = None
        for i in range(0, steps, per):
            group = alphas[i : i + per]
            k = len(group)
            a = torch.tensor(group, device=y0.device, dtype=y0.dtype).repeat_interleave(b)[:, None, None]
            interp = y0.repeat(k, 1, 1) + a * (y1 - y0).repeat(k, 1, 1)
            run = rm.run_with_grads(inputs.clean.repeat(k, 1), outputs={name: interp})
            m = _metric(inputs, run.logits, k)
            g = run.site_grads(m.sum(), [name])[name]
            counter.forward += k
            counter.backward += k
            step_sum = _sum_steps(g, k, b)
            total = 0 + step_sum if total is None else total + step_sum  # 0 + : a zero sum stays +0.0
        assert total is not None  # steps >= 1
        out[name] = (total / steps).to(y0.dtype)
    return out


def node_effects(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    method: str = "ig",
    steps: int = 10,
    baseline: str = "corrupted",
    ig_mode: str | None = None,
    chunk: int = 1024,
    progress: bool = False,
) -> NodeEffects:
    """Effect of every node on the metric, per example and position (see module docstring).

    ``ig_mode``: ``"inputs"`` or ``"per-site"``; by default ``"inputs"`` with the counterfactual
    baseline and ``"per-site"`` with a zero or mean one.
    ``chunk`` bounds the sequences in one forward pass: interpolation steps are batched up to it
    (at least one step, the whole batch, per pass); exact patching puts up to ``chunk`` patched
    nodes in one pass.
    """
    if method not in METHODS:
        raise AttributionError(f"unknown method {method!r}; expected one of {METHODS}")
    if steps < 1:
        raise AttributionError(f"steps must be at least 1, got {steps}")
    if ig_mode is None:  # the input path needs a counterfactual prompt to end at
        ig_mode = "inputs" if baseline == "corrupted" else "per-site"
    if ig_mode not in IG_MODES:
        raise AttributionError(f"unknown ig_mode {ig_mode!r}; expected one of {IG_MODES}")
    if method == "ig" and ig_mode == "inputs" and baseline != "corrupted":
        raise AttributionError(
            f"integrated gradients over the inputs interpolate toward the counterfactual prompt, which a "
            f"{baseline!r} baseline does not have; use ig_mode='per-site'"
        )
    if chunk < 1:
        raise AttributionError(f"chunk must be at least 1, got {chunk}")
    counter = PassCounter()
    values = site_values(rm, inputs, baseline)
    counter.forward += 1 + (baseline == "corrupted")
    if method == "exact":
        feats, errs = exact_node_effects(rm, inputs, values, chunk=chunk, progress=progress, counter=counter)
        grads: dict[str, torch.Tensor] = {}
    else:
        if method == "atp":
            grads = _grads_atp(rm, inputs, counter)
        elif ig_mode == "inputs":
            grads = _grads_ig_inputs(rm, inputs, values, steps, chunk, counter, progress)
        else:
            grads = _grads_ig_per_site(rm, inputs, values, steps, chunk, counter, progress)
        feats, errs = _effects_from_grads(rm, values, grads)
    return NodeEffects(feats, errs, method, inputs.valid, values, grads, passes=counter, baseline=baseline)


# ----------------------------------------------------------------------------- exact patching


def moved_masks(
    values: dict[str, SiteValues], valid: torch.Tensor, tol: float = 0.0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per site, the features [batch, pos, d_sae] and error nodes [batch, pos] on ``valid`` tokens whose
    target differs from their clean value by more than ``tol``."""
    return {
        name: ((v.df.abs() > tol) & valid[..., None], (v.de.abs().amax(-1) > tol) & valid) for name, v in values.items()
    }


def active_nodes(
    values: dict[str, SiteValues], valid: torch.Tensor, tol: float = 0.0
) -> list[tuple[str, int, int, int]]:
    """Every (site, example, position, feature | ERROR) whose target differs from its clean value."""
    nodes = []
    for name, (fmask, emask) in moved_masks(values, valid, tol).items():
        fb, fp, ff = torch.nonzero(fmask, as_tuple=True)
        nodes += [(name, int(b), int(p), int(f)) for b, p, f in zip(fb, fp, ff, strict=True)]
        eb, ep = torch.nonzero(emask, as_tuple=True)
        nodes += [(name, int(b), int(p), ERROR) for b, p in zip(eb, ep, strict=True)]
    return nodes


@torch.no_grad()
def exact_node_effects(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    values: dict[str, SiteValues],
    nodes: list[tuple[str, int, int, int]] | None = None,
    chunk: int = 1024,
    progress: bool = False,
    counter: PassCounter | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Patch each node alone to its target value and measure the change of its example's metric.

    Many (example, node) patches share one forward pass as rows of a large batch: at most ``chunk``,
    and no more than ``BUDGET`` allows for the rows' recorded activations.
    """
    counter = counter or PassCounter()
    b, t = inputs.clean.shape
    dev = inputs.clean.device
    clean_metric = _metric(inputs, rm.run(inputs.clean).logits)
    counter.forward += 1
    feats = {n: torch.zeros_like(v.f_clean) for n, v in values.items()}
    errs = {
        n: torch.zeros(v.e_clean.shape[:2], device=v.e_clean.device, dtype=v.e_clean.dtype) for n, v in values.items()
    }
    nodes = active_nodes(values, inputs.valid) if nodes is None else nodes
    if not nodes:
        return feats, errs
    names = list(values)
    site_of = torch.tensor([names.index(g[0]) for g in nodes], device=dev)
    ex_of, pos_of, idx_of = torch.tensor([g[1:] for g in nodes], device=dev).unbind(1)
    per = max(1, min(chunk, rows_within_budget(values, t)))
    for i in tqdm(range(0, len(nodes), per), desc="exact patching", disable=not progress, leave=False):
        sl = slice(i, i + per)
        site, ex, pos, idx = site_of[sl], ex_of[sl], pos_of[sl], idx_of[sl]
        n = len(ex)
        row = torch.arange(n, device=dev)
        # per site in this chunk: its rows that patch a feature, and those that patch the error
        kinds = {names[k]: ((site == k) & (idx != ERROR), (site == k) & (idx == ERROR)) for k in site.unique().tolist()}
        edits: dict[str, NodeEdit] = {}
        for name, (feature, error) in kinds.items():
            v = values[name]
            fmask = torch.zeros(n, *v.f_clean.shape[1:], dtype=torch.bool, device=dev)
            fmask[row[feature], pos[feature], idx[feature]] = True
            emask = torch.zeros(n, t, dtype=torch.bool, device=dev)
            emask[row[error], pos[error]] = True
            edits[name] = NodeEdit(v.f_target[ex], fmask, v.e_target[ex], emask)
        logits = rm.run(inputs.clean[ex], edits).logits
        delta = check_metric_values(inputs.metric(logits, ex), n) - clean_metric[ex]
        counter.forward += n / b
        for name, (feature, error) in kinds.items():
            feats[name][ex[feature], pos[feature], idx[feature]] = delta[feature].to(feats[name].dtype)
            errs[name][ex[error], pos[error]] = delta[error].to(errs[name].dtype)
    return feats, errs
