"""Rendering of circuits: graphviz diagrams, faithfulness-versus-size plots, HTML reports.

Takes plain data (networkx graphs with node attributes, lists of numbers) and imports none of
the other packages, so it can be used on its own.

The graph contract:

* Node ids are strings: a feature is ``"{site}/{pos}/{index}"`` (``"L1.attn/5/123"``,
  ``"embed/IO/17"``), an error node ``"{site}/{pos}/err"``, the single sink ``"metric"``. ``pos`` is
  a token index written in decimal (token-level graphs), a span name (schema-level) or ``"*"``
  (position-agnostic).
* Node attributes: ``site`` (``"embed"``, ``"L0.attn"``, ``"L2.resid"``, ``"L1.transcoder"``, ...),
  ``layer`` (int; -1 for embed, ``n_layers`` for the metric), ``sublayer`` (``"embed"``, ``"attn"``,
  ``"mlp"``, ``"transcoder"``, ``"resid"`` or ``"metric"``), ``position`` (int, str or None for the
  metric), ``feature`` (int or None), ``kind`` (``"feature"``, ``"error"`` or ``"metric"``),
  ``effect`` (signed float), ``label`` (str, may be empty); optionally ``activation``.
* A node of kind ``"group"`` stands for nodes a drawing leaves out (the rest of a large circuit):
  attribute ``members``, the list of their ids, and ``effect``, the sum of theirs. It is drawn as a
  dashed box "+N" whose tooltip lists every member id.
* Edge attribute: ``effect`` (signed float).
* Graph attributes: ``model``, ``dictionaries``, ``task``, ``method``, ``positions`` (``"token"``,
  ``"schema"`` or ``"agnostic"``), ``position_labels`` (column labels in order: the example's tokens
  or the span names), ``n_layers``.

Node attributes that are missing are inferred from the id where possible.
"""

from viz.diagram import dot_available, render, to_svg
from viz.dot import to_dot
from viz.export import to_circuit_tracer, write_circuit_tracer
from viz.plots import curve_svg, plot_curve
from viz.report import build_report, write_report

__all__ = [
    "build_report",
    "curve_svg",
    "dot_available",
    "plot_curve",
    "render",
    "to_circuit_tracer",
    "to_dot",
    "to_svg",
    "write_circuit_tracer",
    "write_report",
]
