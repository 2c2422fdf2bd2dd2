"""Attribution checked against real interventions on a task: ``atp`` and ``ig`` node and edge
effects against exact and path patching (:mod:`attribution.validate`), as ``circuits
validate-attribution`` reports them.

:func:`validate_attribution` loads the model and the dictionaries of a composition as ``circuits
discover`` does, moves them to float64 (unless ``float32``) and returns an
:class:`AttributionValidation` of rank correlations.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any

from circuits.app.config import ModelConfig


@dataclass(frozen=True)
class ValidationConfig:
    """What ``circuits validate-attribution`` checks: ``examples`` examples of ``task`` (token-level
    edges use the first 4), integrated gradients of ``steps`` steps, ``edges`` sampled edges."""

    task: str = field(
        default="ioi", metadata={"flag": "task", "positional": True, "help": "built-in task name or JSONL file"}
    )
    schema: str | None = field(default=None, metadata={"flag": "--schema", "help": "schema CSV for a JSONL task"})
    model: ModelConfig = field(default_factory=ModelConfig)
    examples: int = field(
        default=8,
        metadata={
            "flag": "--examples",
            "short": "-n",
            "type": "positive_int",
            "help": "examples validated (exact patching is costly); token-level edges use the first 4 of them",
        },
    )
    steps: int = field(
        default=10, metadata={"flag": "--steps", "type": "positive_int", "help": "integrated-gradient steps"}
    )
    edges: int = field(
        default=240,
        metadata={
            "flag": "--edges",
            "type": "at_least_3",
            "help": "sampled edges checked against path patching (default 240; use >= 200 for a stable correlation)",
        },
    )
    seed: int = field(
        default=0,
        metadata={"flag": "--seed", "type": "seed", "help": "seed of the examples and of the edge sample (default 0)"},
    )
    float32: bool = field(
        default=False,
        metadata={
            "flag": "--float32",
            "action": "store_true",
            "help": "validate in float32 (default float64, so that tiny exact effects are not rounding noise)",
        },
    )


@dataclass
class AttributionValidation:
    """The correlations of one validation, in the order ``circuits validate-attribution`` prints them
    (``values``; a correlation that cannot be computed is NaN)."""

    values: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """``values`` as JSON allows: a NaN correlation (too few nodes or edges) becomes None."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in self.values.items()}


def _replacement(config: ValidationConfig) -> tuple[Any, Any, Any]:
    """The replacement model of the composition's sites, as ``circuits discover`` builds it (a set
    lacking them is refused), in float64 unless ``config.float32``; its tokenizer and device."""
    import torch

    from circuits.app.loading import check_dictionaries, load_model, load_replacement

    model = config.model
    check_dictionaries(model.dictionaries)
    loaded = load_model(model.model, device=model.device)
    rm = load_replacement(loaded, model.dictionaries, model.composition)
    if not config.float32:
        with contextlib.redirect_stdout(io.StringIO()):  # the model's dtype change prints a notice
            rm.model.to(torch.float64)
        for d in rm.dictionaries.values():
            d.to(torch.float64)
    return rm, loaded.tokenizer, loaded.device


def validate_attribution(config: ValidationConfig, progress: bool = False) -> AttributionValidation:
    """Node and edge attribution of ``config.task`` against exact and path patching."""
    import torch

    from attribution.validate import validate_edges, validate_graph_edges, validate_nodes
    from circuits.data.inputs import attribution_inputs
    from circuits.data.splits import resolve_task

    torch.manual_seed(config.seed)
    rm, tokenizer, device = _replacement(config)
    task = resolve_task(config.task, tokenizer, n=config.examples, seed=config.seed, schema=config.schema)
    task.check_fits(rm.model.cfg.n_ctx)
    batch = task.batch(tokenizer.pad_id, task.examples[: config.examples])
    inputs = attribution_inputs(batch, device=device)
    t0 = time.perf_counter()
    nodes = validate_nodes(
        rm,
        inputs,
        steps=config.steps,
        ig_modes=("inputs", "per-site"),
        corrupted_lengths=batch.corrupted_lengths,
        progress=progress,
    )
    common: dict[str, Any] = dict(n_edges=config.edges, steps=config.steps, seed=config.seed, progress=progress)
    edges = validate_edges(rm, inputs, **common)
    atp_edges = validate_edges(rm, inputs, method="atp", **common)
    exact_local = {
        method: validate_edges(rm, inputs, method=method, local="exact", **common) for method in ("ig", "atp")
    }
    graph = {
        (method, local): validate_graph_edges(rm, inputs, method=method, local=local, **common)
        for method in ("ig", "atp")
        for local in ("linear", "exact")
    }
    return AttributionValidation(
        {
            "task": task.name,
            "ig_spearman": nodes.ig_spearman,
            "atp_spearman": nodes.atp_spearman,
            "ig_spearman_top100": nodes.ig_spearman_top100,
            "atp_spearman_top100": nodes.atp_spearman_top100,
            "edge_spearman": edges.spearman,
            "atp_edge_spearman": atp_edges.spearman,
            "edge_spearman_exact_local": exact_local["ig"].spearman,
            "atp_edge_spearman_exact_local": exact_local["atp"].spearman,
            "graph_edge_spearman": graph[("ig", "linear")].spearman,
            "atp_graph_edge_spearman": graph[("atp", "linear")].spearman,
            "graph_edge_spearman_exact_local": graph[("ig", "exact")].spearman,
            "atp_graph_edge_spearman_exact_local": graph[("atp", "exact")].spearman,
            "ig_mode": "inputs",
            "n_nodes": nodes.n_nodes,
            "n_edges": edges.n_edges,
            "examples": len(batch),
            "steps": config.steps,
            **nodes.extra,
            **{f"edge_spearman_from_{site}": rho for site, rho in edges.by_upstream_site.items()},
            **{f"atp_edge_spearman_from_{site}": rho for site, rho in atp_edges.by_upstream_site.items()},
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
