"""Edge effects: how much of an upstream node's effect flows through a downstream node.

Two methods measure the downstream node's direct change, one module each:
:mod:`~attribution.edges.linear` (``"linear"``, the direct derivative from batched backward passes)
and :mod:`~attribution.edges.exact` (``"exact"``, one upstream node patched per forward row);
:mod:`~attribution.edges.common` holds the targets and the result they share. :func:`edge_effects`
runs either, given its options (:class:`LinearEdges` or :class:`ExactEdges`), and
:func:`edge_method` turns a method's name into those options.
"""

from __future__ import annotations

from attribution.core import AttributionError, AttributionInputs
from attribution.edges.common import EdgeEffects, Target, decoder_rows
from attribution.edges.exact import ExactEdges, direct_outputs, exact_edges
from attribution.edges.linear import LinearEdges, linear_edges
from attribution.nodes import NodeEffects
from attribution.positions import PositionMap
from replacement.model import ReplacementModel

EdgeMethod = LinearEdges | ExactEdges
LOCAL = (LinearEdges.name, ExactEdges.name)  # how an edge measures the downstream node's direct change


def edge_method(local: str, *, jacobian_steps: int = 1, rows_per_pass: int = 64) -> EdgeMethod:
    """The options of the method named ``local`` (one of :data:`LOCAL`); ``jacobian_steps`` and
    ``rows_per_pass`` are options of the linear method (the exact one sizes its runs by the memory
    budget, and asking it for ``jacobian_steps`` is an error)."""
    if local not in LOCAL:
        raise AttributionError(f"unknown local {local!r}; expected one of {LOCAL}")
    if local == ExactEdges.name:
        if jacobian_steps != 1:
            raise AttributionError(
                "jacobian_steps applies to linear edges only; exact local changes need no derivative"
            )
        return ExactEdges()
    return LinearEdges(rows_per_pass=rows_per_pass, jacobian_steps=jacobian_steps)


def edge_effects(
    rm: ReplacementModel,
    inputs: AttributionInputs,
    nodes: NodeEffects,
    targets: list[Target],
    positions: PositionMap,
    method: EdgeMethod | None = None,
    *,
    progress: bool = False,
) -> EdgeEffects:
    """Edges from every upstream node into each of ``targets``, and every node's direct edge into the
    metric, by ``method`` (default: the linear edges with their default options).

    ``nodes`` supplies the downstream gradients and the upstream changes (node effects computed with
    ``atp`` or ``ig``); ``positions`` the aggregation (token, span or agnostic).
    """
    method = method or LinearEdges()
    if isinstance(method, ExactEdges):
        return exact_edges(rm, inputs, nodes, targets, positions, method, progress)
    return linear_edges(rm, inputs, nodes, targets, positions, method, progress)


__all__ = [
    "LOCAL",
    "EdgeEffects",
    "EdgeMethod",
    "ExactEdges",
    "LinearEdges",
    "Target",
    "decoder_rows",
    "direct_outputs",
    "edge_effects",
    "edge_method",
]
