"""How circuits are ablated (:class:`EvalConfig`) and the value each node takes when ablated.

Ablation values (``EvalConfig.ablation``, computed by :func:`ablation_values`):

- ``mean``: the mean over a reference set of counterfactual prompts (by default the evaluation
  examples' own counterfactuals), taken per span and offset inside the span: the token at offset
  ``o`` of span ``s`` gets the mean, over reference prompts, of the activation at offset
  ``min(o, len_s - 1)`` of their span ``s``. With the one-span-per-token schema of a task without a
  schema, this is the per-position mean;
- ``zero``: features and error terms set to zero (the site passes on its decoder bias);
- ``patch``: each example's own counterfactual activations, position-aligned span by span
  (:func:`circuits.data.inputs.corrupted_positions`).

Error nodes are ordinary nodes unless ``ablate_errors=False``, which keeps every error node live in
every run (``m(∅)`` included); ``ablate_embed=False`` (the default) does the same for the embedding
site, as Sparse Feature Circuits leaves embeddings unablated. With ``ablate_embed=True`` the embedding
is ablated like any other site, so ``m(∅)`` is "everything ablated" and a circuit has to name the
embedding features it uses. (When the last site is a residual site, as in the standard sets, ablating
every site makes the logits independent of the prompt's content anyway, so ``m(∅)`` is the same either
way.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuits.data.inputs import corrupted_positions, span_offsets, span_starts
from circuits.data.tasks import TaskBatch
from circuits.errors import CircuitError
from replacement.model import ReplacementModel

ABLATIONS = ("mean", "zero", "patch")

SiteValues = dict[str, torch.Tensor]  # site -> [batch, pos, d_sae] features or [batch, pos, d_out] errors


@dataclass(frozen=True)
class EvalConfig:
    """How circuits are ablated.

    ``ablation``: ``"mean"``, ``"zero"`` or ``"patch"`` (see the module docstring).
    ``ablate_errors`` / ``ablate_embed``: False keeps every error node / every embedding node live in
    every run. ``max_rows``: sequences per forward pass (circuits are batched).
    """

    # The metadata name each field's ``circuits discover`` flag (see :mod:`circuits.app.config`).
    ablation: str = field(
        default="mean",
        metadata={
            "flag": "--ablation",
            "choices": ("mean", "patch", "zero"),
            "help": "how nodes outside the circuit are ablated: the mean over counterfactual prompts per position "
            "or span (default), each example's own counterfactual, or zero",
        },
    )
    ablate_errors: bool = field(
        default=True,
        metadata={"flag": "--keep-errors", "action": "store_true", "invert": True, "help": "never ablate error nodes"},
    )
    ablate_embed: bool = field(
        default=False,
        metadata={
            "flag": "--keep-embed",
            "action": "optional_bool",
            "invert": True,
            "help": "never ablate the embedding, and choose the circuit among the other nodes (default, Sparse "
            "Feature Circuits' convention); --no-keep-embed ablates it like any other site",
        },
    )
    max_rows: int = field(default=512, metadata={"flag": None})

    def __post_init__(self) -> None:
        _check_ablation(self.ablation)
        if self.max_rows < 1:
            raise CircuitError(f"max_rows must be at least 1, got {self.max_rows}")


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise CircuitError(f"unknown ablation {ablation!r}; expected one of {', '.join(ABLATIONS)}")


@dataclass
class AblationValues:
    """The value every node takes when ablated, on the evaluation batch's own positions.

    ``features[site]`` [batch, pos, d_sae] and ``errors[site]`` [batch, pos, d_out].
    """

    features: SiteValues
    errors: SiteValues
    kind: str

    def first(self, n: int) -> AblationValues:
        """The values of the first ``n`` examples."""
        return AblationValues(
            {s: v[:n] for s, v in self.features.items()}, {s: v[:n] for s, v in self.errors.items()}, self.kind
        )

    def check(self, rm: ReplacementModel, batch: TaskBatch) -> None:
        """Raise :class:`CircuitError` unless there is one value per node of ``batch`` at every site."""
        b, t = batch.clean.shape
        missing = [s for s in rm.site_names if s not in self.features or s not in self.errors]
        if missing:
            raise CircuitError(
                f"the ablation values lack the sites {', '.join(missing)}; compute them with ablation_values()"
            )
        for site in rm.site_names:
            d_sae = rm.d_sae(site)
            f, e = self.features[site], self.errors[site]
            d_out = int(rm.dictionaries[site].W_dec.shape[1])
            if tuple(f.shape) != (b, t, d_sae) or tuple(e.shape) != (b, t, d_out):
                raise CircuitError(
                    f"ablation values of site {site} have shapes {list(f.shape)} and {list(e.shape)}, but the evaluation "
                    f"batch needs [{b}, {t}, {d_sae}] and [{b}, {t}, {d_out}]; compute them on the evaluation batch"
                )


@torch.no_grad()
def mean_by_span(rm: ReplacementModel, batch: TaskBatch, reference: TaskBatch) -> tuple[SiteValues, SiteValues]:
    """Mean ablation values: per span and offset, the mean over ``reference``'s counterfactuals.

    The reference means are laid out in slots, one per (span, offset) up to the longest reference
    span; each evaluation token reads the slot of its span at its offset, clipped to that length.
    """
    n_spans = len(batch.span_names)
    ref_span = reference.corrupted_span.cpu()
    ref_starts, ref_len = span_starts(ref_span, n_spans)
    if bool((ref_len == 0).any()):
        raise CircuitError(
            "a reference prompt lacks a span of the schema; every span needs a token to take a mean over"
        )
    max_len = ref_len.max(0).values  # [n_spans]
    slot_of = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), max_len[:-1]]), 0)  # first slot of each span
    n_slots = int(max_len.sum())
    slot_span = torch.repeat_interleave(torch.arange(n_spans), max_len)
    slot_off = torch.arange(n_slots) - slot_of[slot_span]
    # reference position of every (example, slot): offset clipped to the span's length there
    ref_pos = ref_starts[:, slot_span] + torch.minimum(slot_off[None], ref_len[:, slot_span] - 1)  # [n_ref, n_slots]
    # evaluation token -> slot
    span = batch.clean_span.cpu()
    starts, _ = span_starts(span, n_spans)
    off = span_offsets(span, starts)
    s_idx = span.clamp(min=0)
    tok_slot = slot_of[s_idx] + torch.minimum(off, max_len[s_idx] - 1)  # [batch, pos]
    recs = rm.activations(reference.corrupted.to(rm.device)).records
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
    _check_ablation(ablation)
    reference = batch if reference is None else reference
    b, t = batch.clean.shape
    device = rm.device
    if ablation == "zero":
        recs = rm.activations(batch.clean[:1].to(device)).records
        feats = {s: torch.zeros(b, t, r.features.shape[-1], device=device) for s, r in recs.items()}
        errs = {s: torch.zeros(b, t, r.error.shape[-1], device=device) for s, r in recs.items()}
        return AblationValues(feats, errs, ablation)
    if tuple(reference.span_names) != tuple(batch.span_names):
        raise CircuitError(
            f"the ablation reference has spans {list(reference.span_names)} but the evaluation task has "
            f"{list(batch.span_names)}; take the reference from the same task"
        )
    if ablation == "mean":
        feats, errs = mean_by_span(rm, batch, reference)
        return AblationValues(feats, errs, ablation)
    if tuple(reference.clean.shape) != (b, t) or not torch.equal(reference.clean.cpu(), batch.clean.cpu()):
        raise CircuitError(
            f"patch ablation needs the counterfactuals of the evaluation examples themselves: the reference holds "
            f"{len(reference)} prompts of shape {list(reference.clean.shape)}, the evaluation batch {b} of shape {[b, t]} "
            "(different prompts)"
        )
    recs = rm.activations(reference.corrupted.to(device)).records
    pos = corrupted_positions(reference).to(device)
    idx = pos.clamp(min=0)
    rows = torch.arange(b, device=device)[:, None]
    valid = (pos >= 0)[..., None]
    feats = {s: r.features[rows, idx] * valid for s, r in recs.items()}
    errs = {s: r.error[rows, idx] * valid for s, r in recs.items()}
    return AblationValues(feats, errs, ablation)
