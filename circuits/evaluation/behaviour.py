"""Run a model on a task: per-example metric values, accuracy and mean metric."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits.data.tasks import Task, metric_per_example


@dataclass
class TaskResult:
    """How a model does on a task. ``accuracy``: share of examples with metric > 0, i.e. whose
    answer beats the counterfactual answer; ``logit_diff``: the mean metric (a probability
    difference for greater-than)."""

    task: str
    accuracy: float
    logit_diff: float
    metric: str
    values: list[float]

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "logit_diff": self.logit_diff}


@torch.no_grad()
def run_task(model, task: Task, pad_id: int, batch_size: int = 128, corrupted: bool = False) -> TaskResult:
    """Metric of ``model`` on every example of ``task`` (clean prompts, or the counterfactuals)."""
    device = next(model.parameters()).device
    values: list[torch.Tensor] = []
    for batch in task.batches(pad_id, batch_size):
        batch = batch.to(device)
        toks = batch.corrupted if corrupted else batch.clean
        lengths = batch.corrupted_lengths if corrupted else batch.clean_lengths
        logits = model(toks)
        values.append(metric_per_example(logits, batch, lengths).float().cpu())
    v = torch.cat(values)
    return TaskResult(task.name, float((v > 0).float().mean()), float(v.mean()), task.metric, v.tolist())
