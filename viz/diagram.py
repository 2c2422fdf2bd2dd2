"""Graphviz diagrams of a circuit: one row per sublayer, one column per token position or span.

Layout. Rows run bottom to top: ``embed``; then, per layer, ``attn``, ``mlp`` or ``transcoder``,
``resid``; the ``metric`` on top (only rows that hold a node are drawn). Columns are the graph's
positions, left to right in the order of ``G.graph["position_labels"]`` (the example's tokens for a
token-level graph, the span names for a schema-level graph); a position-agnostic graph has a single
column. Several nodes in one cell are laid out side by side, the largest ``|effect|`` first, wrapping
onto sub-rows. Node coordinates are computed here and pinned (Graphviz ``neato`` layout with fixed
``pos``), so rows and columns stay aligned however the edges run. Edges are straight lines drawn
beneath the nodes (``to_dot(..., splines="true")`` routes them around the nodes instead, at a cost
of seconds for larger graphs).

Styling. Fill is blue for a positive effect and red for a negative one, its intensity proportional to
``|effect|`` over the largest ``|effect|`` of the graph's non-metric nodes. Features are boxes
labelled with their index and (truncated) ``label``; error nodes are triangles labelled ``ε``; the
metric is a diamond; a ``group`` node (nodes left out of a drawing of a large circuit) is a dashed
box "+N" whose tooltip lists its members' ids. Edges are blue (positive) or red (negative) with a pen width proportional to
``|effect|``. Every node's id is its Graphviz name, so it is the ``<title>`` and the ``id`` of its
``<g>`` element in the SVG.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import networkx as nx

from viz._common import write_atomic
from viz.dot import to_dot

logger = logging.getLogger(__name__)

DOT_TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def _run_dot(dot_text: str, fmt: str) -> bytes:
    """Render DOT text to ``fmt`` bytes with the ``dot`` program."""
    exe = shutil.which("dot")
    if exe is None:
        raise FileNotFoundError("Graphviz's `dot` program is not on the PATH")
    with tempfile.TemporaryDirectory(prefix="viz-dot-") as tmp:
        src = Path(tmp) / "graph.dot"
        src.write_text(dot_text, encoding="utf-8")
        proc = subprocess.run(
            [exe, f"-T{fmt}", str(src)],
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:500]}")
    return proc.stdout


def to_svg(G: nx.DiGraph, title: str | None = None) -> str | None:
    """The diagram as SVG text, or None (with a logged warning) when ``dot`` is absent."""
    if not dot_available():
        logger.warning("Graphviz `dot` not found: no SVG diagram (install graphviz to get one)")
        return None
    return _run_dot(to_dot(G, title), "svg").decode("utf-8")


def render(
    G: nx.DiGraph,
    out_stem: str | Path,
    formats: Sequence[str] = ("svg", "png"),
    title: str | None = None,
) -> dict[str, Path]:
    """Write the diagram next to ``out_stem``: always ``out_stem.dot``, plus each of ``formats``.

    The other formats need Graphviz's ``dot`` program; when it is missing (or fails) a warning
    is logged and only the files that could be made are written. All writes are atomic.

    Args:
        G: the circuit graph.
        out_stem: output path without suffix (``runs/ioi/circuit`` gives ``circuit.dot``,
            ``circuit.svg``, ``circuit.png``).
        formats: Graphviz output formats to render.
        title: optional caption (see ``to_dot``).

    Returns:
        A map from format (``"dot"`` and each rendered format) to the written path.
    """
    stem = Path(out_stem)
    if stem.suffix in {".dot", ".svg", ".png", ".pdf"}:
        stem = stem.with_suffix("")
    dot_text = to_dot(G, title)
    written: dict[str, Path] = {"dot": write_atomic(stem.with_name(stem.name + ".dot"), dot_text)}
    wanted = [f for f in formats if f != "dot"]
    if not wanted:
        return written
    if not dot_available():
        logger.warning(
            "Graphviz `dot` not found: wrote %s only (install graphviz for %s)",
            written["dot"],
            ", ".join(wanted),
        )
        return written
    for fmt in wanted:
        try:
            data = _run_dot(dot_text, fmt)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            logger.warning("Could not render the diagram as %s: %s", fmt, err)
            continue
        written[fmt] = write_atomic(stem.with_name(f"{stem.name}.{fmt}"), data)
    return written


__all__ = ["dot_available", "render", "to_svg"]
