"""Glue between tasks and the task-agnostic attribution package."""

from __future__ import annotations

import torch

from attribution.core import AttributionInputs
from circuits.data.tasks import TaskBatch, metric_per_example


def task_metric(batch: TaskBatch):
    """The task's metric in attribution's contract: ``metric(logits, index) -> [n]``."""

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        index = index.to(batch.answers.device)
        sub = TaskBatch(
            clean=batch.clean[index], corrupted=batch.corrupted[index],
            clean_lengths=batch.clean_lengths[index], corrupted_lengths=batch.corrupted_lengths[index],
            answers=batch.answers[index], wrong=batch.wrong[index],
            clean_span=batch.clean_span[index], corrupted_span=batch.corrupted_span[index],
            span_names=batch.span_names, metric=batch.metric,
        )
        return metric_per_example(logits, sub)

    return metric


def corrupted_positions(batch: TaskBatch) -> torch.Tensor:
    """For each clean position, the counterfactual position of the same span and offset (clipped
    to the span's length there); -1 on padding. The identity when both prompts share a schema."""
    b, t = batch.clean.shape
    out = torch.full((b, t), -1, dtype=torch.long)
    for i in range(b):
        c_span, k_span = batch.clean_span[i].tolist(), batch.corrupted_span[i].tolist()
        k_start: dict[int, int] = {}
        k_len: dict[int, int] = {}
        for p, s in enumerate(k_span):
            if s >= 0:
                k_start.setdefault(s, p)
                k_len[s] = k_len.get(s, 0) + 1
        c_start: dict[int, int] = {}
        for p, s in enumerate(c_span):
            if s < 0:
                continue
            c_start.setdefault(s, p)
            offset = p - c_start[s]
            out[i, p] = k_start[s] + min(offset, k_len[s] - 1)
    return out


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
