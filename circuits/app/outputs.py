"""The files of a run folder: circuit.json, the circuit diagram (circuit.svg, circuit.dot), the
faithfulness curve (curve.json, curve.png) and report.html (:func:`write_outputs`); a circuit too
large to read is drawn in part (:func:`diagram_view`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from circuits.evaluation import Curves
from circuits.graph.ids import METRIC, copy_graph, count_nodes
from circuits.graph.io import save_circuit
from circuits.graph.ranking import ranked_nodes
from viz.diagram import render
from viz.plots import plot_curve
from viz.report import write_report

DIAGRAM_NODES = 150
DIAGRAM_EDGES = 400


def diagram_view(
    circuit: nx.DiGraph, max_nodes: int = DIAGRAM_NODES, max_edges: int = DIAGRAM_EDGES
) -> tuple[nx.DiGraph, str]:
    """The part of a circuit that is drawn, plus a caption note.

    A circuit of at most ``max_nodes`` nodes and ``max_edges`` edges is drawn whole. A larger one is
    drawn as its ``max_nodes`` nodes of largest ``|effect|`` (and the metric) with the ``max_edges``
    largest edges between them; the other nodes of each (site, position) cell become one ``group``
    node ("+N more", the sum of their effects) whose tooltip lists their ids, so every node of the
    circuit is named in the drawing.
    """
    n, m = count_nodes(circuit), circuit.number_of_edges()
    if n <= max_nodes and m <= max_edges:
        return circuit, ""
    keep = set(ranked_nodes(circuit)[:max_nodes]) | {METRIC}
    inner = [(u, v) for u, v in circuit.edges if u in keep and v in keep]
    inner.sort(key=lambda e: -abs(float(circuit.edges[e]["effect"])))
    view = copy_graph(circuit, keep, inner[:max_edges])
    cells: dict[tuple[str, str], list[str]] = {}
    for node, attrs in circuit.nodes(data=True):
        if node not in keep:
            cells.setdefault((str(attrs.get("site")), str(attrs.get("position"))), []).append(str(node))
    for (site, position), members in cells.items():
        first = circuit.nodes[members[0]]
        view.add_node(
            f"{site}/{position}/more",
            kind="group",
            members=members,
            label="",
            effect=float(sum(float(circuit.nodes[u].get("effect", 0.0)) for u in members)),
            **{k: first[k] for k in ("site", "layer", "sublayer", "position") if k in first},
        )
    left_out = sum(len(members) for members in cells.values())
    grouped = f"; the other {left_out} grouped as +N" if left_out else ""
    return view, f" (drawn: {n - left_out} of {n} nodes, {view.number_of_edges()} of {m} edges{grouped})"


REPORT_CONTEXT_NODES = 300


def write_outputs(
    out: str | Path,
    circuit: nx.DiGraph,
    curves: Curves,
    title: str | None = None,
    contexts: dict[str, list[dict[str, Any]]] | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    atomic: bool = True,
) -> dict[str, Path]:
    """Write circuit.json, circuit.svg (Graphviz, with circuit.dot), curve.json, curve.png and
    report.html into ``out``.

    A circuit too large to read is drawn in part (see :func:`diagram_view`); circuit.json holds all of
    it. ``contexts`` (node id -> top-activating contexts, :func:`circuits.labels.contexts_for`) go into
    the report for the ``REPORT_CONTEXT_NODES`` nodes of largest ``|effect|``; ``metadata`` is shown in
    its header.

    The folder is written as a unit (:func:`circuits.files.run_folder`): under the lock ``OUT.lock``,
    into a temporary sibling that replaces ``out`` as a whole once every file is written, so a failed
    or interrupted write leaves ``out`` as it was. An existing ``out`` must be empty or an earlier run
    folder (holding circuit.json). ``atomic=False`` writes straight into ``out``, for a caller that
    stages the folder itself (as :func:`circuits.app.pipeline.discover` does).
    """
    if atomic:
        from circuits.files import run_folder

        with run_folder(out, replaces="circuit.json") as staging:
            written = write_outputs(staging, circuit, curves, title, contexts, metadata, atomic=False)
        return {name: Path(out) / path.relative_to(staging) for name, path in written.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"circuit.json": save_circuit(circuit, out / "circuit.json")}
    curve = curves.to_curve()
    files["curve.json"] = curve.to_json(out / "curve.json")
    curve_data = curve.to_dict()
    view, note = diagram_view(circuit)
    written = render(view, out / "circuit", formats=("svg",), title=(title or "") + note or None)
    files.update({f"circuit.{k}": v for k, v in written.items()})
    files["curve.png"] = plot_curve(curve_data, out / "curve.png", title=title)
    svg = files["circuit.svg"].read_text(encoding="utf-8") if "circuit.svg" in files else None
    if contexts:
        shown = set(ranked_nodes(circuit)[:REPORT_CONTEXT_NODES])
        contexts = {k: v for k, v in contexts.items() if k in shown}
    files["report.html"] = write_report(
        out / "report.html",
        graph=circuit,
        curve=curve_data,
        title=title or "Circuit report",
        metadata=metadata,
        diagram_svg=svg,
        contexts=contexts,
    )
    return files
