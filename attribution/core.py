"""Shared pieces of attribution: the metric contract, the inputs, and clean/counterfactual values.

A *metric* is a callable ``metric(logits, index) -> values``: ``logits`` [n, pos, vocab] of ``n``
sequences, ``index`` [n] the example each sequence belongs to (sequences are repeated when many
interventions share one forward pass), ``values`` [n], one number per sequence. Attribution sums
it over examples, so every per-example score is an effect on that example's metric.

Positions: clean and counterfactual prompts may differ in length. ``corrupted_position[b, p]``
names the counterfactual position whose activation stands in for clean position ``p`` (built by
the caller from the two schemas); padding positions are ``-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from replacement.model import ReplacementModel

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BUDGET = 2**24  # numbers one intermediate (a contraction, or a batch of patched rows) may hold, roughly

ERROR = -1
"""The index of a site's error node beside its features ``0 .. d_sae - 1`` (node tuples, edge targets)."""


def with_error_column(features: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """A site's nodes as one matrix: features [..., d_sae] and errors [...] -> [..., d_sae + 1], the
    error node in the last column (see :func:`node_index`)."""
    return torch.cat([features, errors[..., None]], dim=-1)


def node_index(column: int, d_sae: int) -> int:
    """The node index (a feature, or :data:`ERROR`) of a column of a [..., d_sae + 1] node matrix."""
    return ERROR if column == d_sae else column


class AttributionError(ValueError):
    """Bad input to attribution: a metric that is not one finite value per example, mismatched batches, ..."""


def check_metric_values(values: torch.Tensor, n: int, grad: bool = False) -> torch.Tensor:
    """Raise unless ``values`` is one finite number per sequence (``grad``: and differentiable in the logits)."""
    if not isinstance(values, torch.Tensor):
        raise AttributionError(f"the metric must return a tensor, it returned {type(values).__name__}")
    if values.shape != (n,):
        raise AttributionError(
            f"the metric must return one value per example, shape [{n}]; it returned shape {list(values.shape)}"
        )
    if not torch.isfinite(values).all():
        raise AttributionError("the metric returned NaN or inf")
    if grad and not values.requires_grad:
        raise AttributionError(
            "the metric has no gradient: it must be differentiable in the logits (no argmax, .item() or .detach())"
        )
    return values


@dataclass
class AttributionInputs:
    """Token batches and the metric, everything attribution needs besides the model."""

    clean: torch.Tensor  # [batch, pos] long, right-padded
    clean_lengths: torch.Tensor  # [batch]
    metric: Metric
    corrupted: torch.Tensor | None = None  # [batch, pos'] long; None with a zero or mean baseline
    corrupted_position: torch.Tensor | None = None  # [batch, pos] long, -1 on padding

    def __post_init__(self) -> None:
        b, t = self.clean.shape
        if self.clean_lengths.shape != (b,):
            raise AttributionError(f"clean_lengths must have shape [{b}], got {list(self.clean_lengths.shape)}")
        if b and (int(self.clean_lengths.min()) < 1 or int(self.clean_lengths.max()) > t):
            raise AttributionError(f"clean_lengths must lie between 1 and the batch width {t}")
        if self.corrupted is not None:
            if self.corrupted.shape[0] != b:
                raise AttributionError(f"{b} clean examples but {self.corrupted.shape[0]} corrupted ones")
            if self.corrupted_position is None:
                if self.corrupted.shape[1] != t:
                    raise AttributionError(
                        "clean and corrupted prompts differ in length: give corrupted_position (from the schemas)"
                    )
                pos = torch.arange(t, device=self.clean.device).expand(b, t).clone()
                pos[~self.valid] = -1
                self.corrupted_position = pos
            if self.corrupted_position.shape != (b, t):
                raise AttributionError(
                    f"corrupted_position must have shape [{b}, {t}], got {list(self.corrupted_position.shape)}"
                )
            self.corrupted_position = self.corrupted_position.to(self.clean.device)
            valid = self.valid
            if bool((self.corrupted_position[valid] < 0).any()):
                raise AttributionError(
                    "corrupted_position is negative on a real token: every clean token needs a counterfactual position"
                )
            if bool((self.corrupted_position[~valid] != -1).any()):
                raise AttributionError("corrupted_position must be -1 on padding")
            if int(self.corrupted_position.max()) >= self.corrupted.shape[1]:
                raise AttributionError("corrupted_position points past the end of the corrupted prompts")

    @property
    def valid(self) -> torch.Tensor:
        """[batch, pos] bool: True on real (non-padding) positions."""
        t = self.clean.shape[1]
        return torch.arange(t, device=self.clean.device)[None] < self.clean_lengths.to(self.clean.device)[:, None]

    @property
    def batch_size(self) -> int:
        return self.clean.shape[0]

    def index(self, repeats: int = 1) -> torch.Tensor:
        return torch.arange(self.batch_size, device=self.clean.device).repeat(repeats)

    def at_clean_positions(self, values: torch.Tensor) -> torch.Tensor:
        """Values of a counterfactual run [batch, pos', ...] at the clean positions [batch, pos, ...]."""
        if self.corrupted_position is None:
            raise AttributionError("these inputs have no counterfactual prompts to align")
        return align(values, self.corrupted_position)


def align(values: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``values[b, position[b, p]]`` ([batch, pos', ...] -> [batch, pos, ...]); zero where position is -1."""
    idx = position.clamp(min=0)
    gathered = values[torch.arange(values.shape[0], device=values.device)[:, None], idx]
    mask = (position >= 0).to(values.dtype)
    return gathered * mask.view(*mask.shape, *([1] * (values.dim() - 2)))


@dataclass
class SiteValues:
    """Features, errors and outputs of one site: clean, and the target (counterfactual or baseline)."""

    f_clean: torch.Tensor  # [batch, pos, d_sae]
    e_clean: torch.Tensor  # [batch, pos, d]
    f_target: torch.Tensor
    e_target: torch.Tensor

    @property
    def df(self) -> torch.Tensor:
        return self.f_target - self.f_clean

    @property
    def de(self) -> torch.Tensor:
        return self.e_target - self.e_clean


BASELINES = ("corrupted", "zero", "mean")


@torch.no_grad()
def site_values(rm: ReplacementModel, inputs: AttributionInputs, baseline: str = "corrupted") -> dict[str, SiteValues]:
    """Clean and target node values at every site, aligned to clean positions, zero on padding."""
    if baseline not in BASELINES:
        raise AttributionError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    valid = inputs.valid
    clean = rm.activations(inputs.clean).records
    out: dict[str, SiteValues] = {}
    if baseline == "corrupted":
        if inputs.corrupted is None:
            raise AttributionError("the 'corrupted' baseline needs corrupted tokens; use baseline='zero' or 'mean'")
        corr = rm.activations(inputs.corrupted).records
    elif baseline == "mean":
        means = rm.mean_activations(inputs.clean, inputs.clean_lengths, per_position=False)
    for name, rec in clean.items():
        m = valid[..., None].to(rec.features.dtype)
        f_c, e_c = rec.features * m, rec.error * m
        if baseline == "corrupted":
            f_t = inputs.at_clean_positions(corr[name].features)
            e_t = inputs.at_clean_positions(corr[name].error)
        elif baseline == "zero":
            f_t, e_t = torch.zeros_like(f_c), torch.zeros_like(e_c)
        else:
            f_t = means[name][0].expand_as(f_c) * m
            e_t = means[name][1].expand_as(e_c) * m
        out[name] = SiteValues(f_c, e_c, f_t, e_t)
    return out


def site_output(rm: ReplacementModel, site: str, f: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The value a site passes on for given features and error: ``decode(f) + e``."""
    return rm.dictionaries[site].decode(f) + e


def feature_grad(rm: ReplacementModel, site: str, g_out: torch.Tensor) -> torch.Tensor:
    """Gradient reaching the features from a gradient at the site's output: ``g @ W_dec.T``."""
    return g_out @ rm.dictionaries[site].W_dec.T.to(g_out.dtype)


def rows_within_budget(values: dict[str, SiteValues], width: int) -> int:
    """Sequences of ``width`` tokens one forward pass may hold when it records every site's features,
    error and output (what a run keeps per row), within ``BUDGET`` numbers."""
    return max(1, BUDGET // (width * sum(v.df.shape[-1] + 2 * v.de.shape[-1] for v in values.values())))
