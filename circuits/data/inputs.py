"""Glue between tasks and the task-agnostic attribution package.

Offers the task's metric in attribution's contract (:func:`task_metric`), the rows of a batch
(:func:`batch_rows`), the alignment of tokens by span and offset inside the span
(:func:`span_starts`, :func:`span_offsets`, :func:`corrupted_positions`) and the attribution
inputs of a batch (:func:`attribution_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attribution.core import AttributionInputs
from circuits.data.tasks import TaskBatch, metric_per_example
from circuits.errors import TaskError


def batch_rows(batch: TaskBatch, rows: slice | torch.Tensor) -> TaskBatch:
    """The examples ``rows`` of a batch (a slice or an index tensor; padding width unchanged)."""
    return TaskBatch(
        clean=batch.clean[rows],
        corrupted=batch.corrupted[rows],
        clean_lengths=batch.clean_lengths[rows],
        corrupted_lengths=batch.corrupted_lengths[rows],
        answers=batch.answers[rows],
        wrong=batch.wrong[rows],
        clean_span=batch.clean_span[rows],
        corrupted_span=batch.corrupted_span[rows],
        span_names=batch.span_names,
        metric=batch.metric,
    )


def task_metric(batch: TaskBatch) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's metric in attribution's contract: ``metric(logits, index) -> [n]``."""

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return metric_per_example(logits, batch_rows(batch, index.to(batch.answers.device)))

    return metric


def span_starts(span: torch.Tensor, n_spans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example and span: the first token index and the length ([batch, n_spans] each).

    ``span`` [batch, pos] holds each token's span index (-1 on padding). A span an example lacks
    has length 0 and start ``pos``.
    """
    b, t = span.shape
    starts = torch.zeros(b, n_spans, dtype=torch.long)
    lengths = torch.zeros(b, n_spans, dtype=torch.long)
    pos = torch.arange(t)
    for s in range(n_spans):
        inside = span == s
        lengths[:, s] = inside.sum(1)
        starts[:, s] = torch.where(inside, pos[None], torch.full_like(span, t)).min(1).values
    return starts, lengths


def span_offsets(span: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Offset of each token inside its span ([batch, pos]; 0 on padding); ``starts`` from :func:`span_starts`."""
    idx = span.clamp(min=0)
    off = torch.arange(span.shape[1])[None] - starts.gather(1, idx)
    return torch.where(span >= 0, off, torch.zeros_like(off))


def corrupted_positions(batch: TaskBatch) -> torch.Tensor:
    """For each clean position, the counterfactual position of the same span and offset (clipped
    to the span's length there); -1 on padding. The identity when both prompts share a schema."""
    clean, corrupted = batch.clean_span.cpu(), batch.corrupted_span.cpu()
    out = torch.full(clean.shape, -1, dtype=torch.long)
    every = torch.cat([clean.flatten(), corrupted.flatten(), torch.tensor([-1])])
    n_spans = int(every.max()) + 1
    if n_spans == 0:
        return out
    c_starts, _ = span_starts(clean, n_spans)
    k_starts, k_len = span_starts(corrupted, n_spans)
    idx = clean.clamp(min=0)
    inside = clean >= 0
    length = k_len.gather(1, idx)  # [batch, pos]: the length of the token's span in the counterfactual
    if bool((inside & (length == 0)).any()):
        raise TaskError("a counterfactual prompt lacks a span its clean prompt has; both need every span of the schema")
    aligned = k_starts.gather(1, idx) + torch.minimum(span_offsets(clean, c_starts), length - 1)
    return torch.where(inside, aligned, out)


def attribution_inputs(batch: TaskBatch, device: torch.device | str | None = None) -> AttributionInputs:
    """Attribution inputs of a task batch: tokens, lengths, metric and position alignment."""
    if device is not None:
        batch = batch.to(device)
    return AttributionInputs(
        clean=batch.clean,
        clean_lengths=batch.clean_lengths,
        metric=task_metric(batch),
        corrupted=batch.corrupted,
        corrupted_position=corrupted_positions(batch).to(batch.clean.device),
    )
