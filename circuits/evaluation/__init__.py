"""Circuits evaluated by real ablation: faithfulness, completeness, curves, task behaviour.

:class:`Evaluator` scores circuits on one evaluation batch at node or edge level
(``Evaluator(rm, batch, EvalConfig(...)).evaluate(circuit, level=...)``); :func:`faithfulness_curves`,
:func:`smallest_faithful` and :func:`sizes_needed` search over circuit sizes; :mod:`.curves` holds
the curve arithmetic (CPR, CMD) and curve.json; :func:`run_task` measures a model on a task. The
parts: :mod:`.ablation`, :mod:`.masks`, :mod:`.runner`, :mod:`.node_level`, :mod:`.edge_level`,
:mod:`.search`.
"""

from circuits.evaluation.ablation import ABLATIONS, AblationValues, EvalConfig, ablation_values
from circuits.evaluation.behaviour import TaskResult, run_task
from circuits.evaluation.curves import MIB_FRACTIONS, Curve, cmd, cpr
from circuits.evaluation.evaluator import LEVELS, Evaluator, evaluate_circuit
from circuits.evaluation.node_level import Evaluation, circuit_summary
from circuits.evaluation.search import (
    Curves,
    SizeSearch,
    edge_curve,
    faithfulness_curves,
    node_curve,
    sizes_needed,
    smallest_faithful,
)

__all__ = [
    "ABLATIONS",
    "LEVELS",
    "MIB_FRACTIONS",
    "AblationValues",
    "Curve",
    "Curves",
    "EvalConfig",
    "Evaluation",
    "Evaluator",
    "SizeSearch",
    "TaskResult",
    "ablation_values",
    "circuit_summary",
    "cmd",
    "cpr",
    "edge_curve",
    "evaluate_circuit",
    "faithfulness_curves",
    "node_curve",
    "run_task",
    "sizes_needed",
    "smallest_faithful",
]
