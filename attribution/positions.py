"""Position handling: per token, per schema span, or position-agnostic.

A :class:`PositionMap` assigns every (example, token position) to a group: its position (token
mode), its span (schema mode) or a single group (agnostic mode). Aggregation sums scores within a
group and averages over examples, as position-aware EAP defines for spans:
``g_S(e) = (1/|D|) sum_x sum_{e' in S(x)} g_x(e')``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attribution.core import AttributionError

MODES = ("token", "schema", "agnostic")


@dataclass
class PositionMap:
    """``group[b, p]``: the aggregated position of token ``p`` of example ``b`` (-1 on padding)."""

    group: torch.Tensor  # [batch, pos] long
    labels: list[str]  # one per aggregated position
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AttributionError(f"unknown position mode {self.mode!r}; expected one of {MODES}")
        if int(self.group.max()) >= len(self.labels):
            raise AttributionError(
                f"position groups go up to {int(self.group.max())} but only {len(self.labels)} labels were given"
            )

    @property
    def n_positions(self) -> int:
        return len(self.labels)

    @classmethod
    def tokens(cls, lengths: torch.Tensor, width: int, labels: list[str] | None = None) -> PositionMap:
        """One group per token position (examples of different lengths share position indices)."""
        pos = torch.arange(width)[None].expand(len(lengths), width).clone()
        pos[pos >= lengths.cpu()[:, None]] = -1
        return cls(pos, labels or [str(i) for i in range(width)], "token")

    @classmethod
    def spans(cls, span_index: torch.Tensor, span_names: list[str] | tuple[str, ...]) -> PositionMap:
        """One group per schema span; ``span_index`` [batch, pos] as a task batch carries it."""
        return cls(span_index.cpu().clone(), list(span_names), "schema")

    @classmethod
    def agnostic(cls, lengths: torch.Tensor, width: int) -> PositionMap:
        """A single group: scores summed over positions."""
        pos = torch.zeros(len(lengths), width, dtype=torch.long)
        pos[torch.arange(width)[None].expand(len(lengths), width) >= lengths.cpu()[:, None]] = -1
        return cls(pos, ["*"], "agnostic")

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, pos, *rest] -> [n_positions, *rest]: sum within a group, mean over examples."""
        b, t = self.group.shape
        if x.shape[:2] != (b, t):
            raise AttributionError(f"scores of shape {list(x.shape)} do not match the position map [{b}, {t}]")
        rest = x.shape[2:]
        g = self.group.to(x.device)
        keep = g >= 0
        out = torch.zeros(self.n_positions, *rest, device=x.device, dtype=x.dtype)
        out.index_add_(0, g[keep], x[keep])
        return out / b
