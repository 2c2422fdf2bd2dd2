"""A saved circuit evaluated again (``circuits evaluate``): :func:`evaluate_saved` reads circuit.json,
loads the model and dictionaries it records, and evaluates it on the held-out examples it records
(:func:`circuits.data.splits.evaluation_split`) or on the ones :class:`EvaluateConfig` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from circuits.app.config import EvaluateConfig, ModelConfig
from circuits.app.loading import COMPOSITIONS, load_setup
from circuits.data.splits import evaluation_split, load_data, load_split
from circuits.data.tasks import Task, TaskBatch
from circuits.errors import CircuitError
from circuits.evaluation import EvalConfig, Evaluation, Evaluator, circuit_summary
from circuits.graph.build import check_token_positions
from circuits.graph.ids import count_nodes
from circuits.graph.io import check_compatible, load_circuit

# What a circuit.json that records none of these was made with (the versions before they were recorded).
LEGACY_COMPOSITION = "sae"
LEGACY_EVALUATION: dict[str, Any] = {"ablation": "mean", "ablate_errors": True, "ablate_embed": True}
LEGACY_EVAL_EXAMPLES = 64


@dataclass
class SavedEvaluation:
    """A saved circuit re-evaluated on a task.

    ``examples`` are the examples it was evaluated on, ``split`` says which (as
    :func:`evaluation_split` chose them; None for a circuit.json that records no splits).
    """

    circuit: nx.DiGraph
    evaluation: Evaluation
    edge_evaluation: Evaluation | None
    examples: Task | None = None
    split: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``circuits evaluate --json`` prints."""
        e = self.evaluation
        return {
            **circuit_summary(self.circuit, e, self.edge_evaluation),
            "ablation": e.ablation,
            "task": self.circuit.graph.get("task"),
            "model": self.circuit.graph.get("model"),
            "dictionaries": self.circuit.graph.get("dictionaries"),
            "evaluation_examples": None if self.examples is None else len(self.examples),
            "split": self.split,
        }


def _recorded_evaluation(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The evaluation settings circuit.json records (metadata 'evaluation'), checked: a value of the
    wrong type would otherwise be read as another setting."""
    recorded = meta.get("evaluation")
    if recorded is None:
        return {}
    if not isinstance(recorded, dict):
        raise CircuitError(f"{source}: metadata 'evaluation' must be a JSON object, got {type(recorded).__name__}")
    ablation = recorded.get("ablation", LEGACY_EVALUATION["ablation"])
    if ablation not in ("mean", "patch", "zero"):
        raise CircuitError(
            f"{source}: metadata 'evaluation' records ablation {ablation!r}; expected mean, patch or zero"
        )
    for key in ("ablate_errors", "ablate_embed"):
        if not isinstance(recorded.get(key, True), bool):
            raise CircuitError(
                f"{source}: metadata 'evaluation' records {key} {recorded[key]!r}; expected true or false"
            )
    return recorded


def _settings(config: EvaluateConfig, meta: dict[str, Any]) -> tuple[ModelConfig, EvalConfig]:
    """The model and the evaluation settings: those ``config`` gives, else those circuit.json records."""
    source = config.dictionaries if config.dictionaries is not None else meta.get("dictionaries_source")
    composition = meta.get("composition", LEGACY_COMPOSITION)
    if composition not in COMPOSITIONS:
        raise CircuitError(
            f"{config.circuit}: metadata 'composition' is {composition!r}; expected one of {', '.join(COMPOSITIONS)}"
        )
    model = ModelConfig(
        model=config.model or meta["model"],
        dictionaries=None if source == "default" else source,
        composition=composition,
        device=config.device,
    )
    recorded = {**LEGACY_EVALUATION, **_recorded_evaluation(meta, config.circuit)}
    evaluation = EvalConfig(
        ablation=recorded["ablation"] if config.ablation is None else config.ablation,
        ablate_errors=recorded["ablate_errors"] if config.ablate_errors is None else config.ablate_errors,
        ablate_embed=recorded["ablate_embed"] if config.ablate_embed is None else config.ablate_embed,
    )
    return model, evaluation


def _examples(
    config: EvaluateConfig, meta: dict[str, Any], split: dict[str, Any] | None, tokenizer: Any
) -> tuple[Task, TaskBatch]:
    """The examples :func:`evaluation_split` chose, or (a circuit.json that records no splits) those
    earlier versions held out: ``n_eval`` (default 64) at the run's evaluation seed, or a task file's
    rows after the attributed ones."""
    if split is not None:
        examples = load_split(split, tokenizer, explicit_rows=config.rows is not None)
        return examples, examples.batch(tokenizer.pad_id)
    recorded_seed = meta.get("eval_seed")
    eval_seed = int(config.seed if config.seed is not None else recorded_seed if recorded_seed is not None else 1)
    n = LEGACY_EVAL_EXAMPLES if config.n_eval is None else config.n_eval
    n_attr = int(meta.get("examples") or n)  # a task file is split as the run split it
    data = load_data(config.task, tokenizer, n_attribution=n_attr, n_eval=n, seed=eval_seed - 1, schema=config.schema)
    return data.evaluation, data.evaluation_batch


def evaluate_saved(config: EvaluateConfig) -> SavedEvaluation:
    """Re-evaluate ``config.circuit`` (a circuit.json) on ``config.task``'s held-out examples.

    The examples default to the held-out part circuit.json records, so the faithfulness is the one the
    run reported; ``seed``, ``n_eval`` and ``rows`` override it, and a task other than the circuit's
    own, or a task file changed since, is refused (see :func:`evaluation_split`). A circuit.json that
    records no splits is evaluated as earlier versions did (``seed`` defaulting to the run's
    evaluation seed, ``n_eval`` to 64), with a warning.
    The model and dictionaries default to those recorded in the file; given explicitly, they must be
    the ones the circuit was made with (:class:`CircuitError` otherwise). ``ablation``,
    ``ablate_errors`` and ``ablate_embed`` default to the run's settings.
    """
    path, task = config.circuit, config.task
    G = load_circuit(path)
    meta = G.graph
    if count_nodes(G) == 0:
        raise CircuitError(f"{path}: the circuit is empty (no node besides 'metric'); nothing to evaluate")
    split = evaluation_split(
        meta,
        task,
        n_eval=config.n_eval,
        seed=config.seed,
        rows=config.rows,
        schema=config.schema,
        allow_other_task=config.allow_other_task,
        source=str(path),
    )
    model, eval_config = _settings(config, meta)
    check_compatible(G, model=model.model, source=str(path))
    setup = load_setup(model.model, model.dictionaries, model.composition, model.device)
    check_compatible(G, model=setup.model_name, dictionaries=setup.dictionaries_name, source=str(path))
    n_layers = int(setup.rm.model.cfg.n_layers)
    if int(meta.get("n_layers", n_layers)) != n_layers:
        raise CircuitError(f"{path} was made for a model with {meta['n_layers']} layers; this one has {n_layers}")
    examples, batch = _examples(config, meta, split, setup.loaded.tokenizer)
    examples.check_fits(setup.loaded.model.cfg.n_ctx)
    if meta.get("positions") == "token":
        check_token_positions({"evaluation": batch}, task)
        width = len(meta.get("position_labels") or [])
        length = int(batch.clean_lengths[0])
        if width and length != width:
            raise CircuitError(
                f"{path} has token positions for prompts of {width} tokens, but the prompts of {task} "
                f"have {length}, so its position indices would mean other tokens"
            )
    evaluator = Evaluator(setup.rm, batch, eval_config)
    evaluation = evaluator.evaluate(G)
    edge_eval = evaluator.evaluate(G, level="edges", completeness=False) if config.edges else None
    return SavedEvaluation(G, evaluation, edge_eval, examples, split)
