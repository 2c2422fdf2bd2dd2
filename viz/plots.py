"""Faithfulness and completeness of a circuit versus its size.

A curve is a plain dict::

    {
        "nodes": [4, 10, 31, 96],             # circuit sizes (number of nodes)
        "edges": [3, 20, 80, 400],            # optional: number of edges at the same thresholds
        "faithfulness": [0.1, 0.4, 0.8, 0.97],
        "completeness": [0.9, 0.7, 0.3, 0.05],
        "series": {                           # optional: other methods for comparison
            "attribution patching": {"nodes": [...], "faithfulness": [...]},
        },
    }

The layout of a ``curve.json`` file is read as well: ``sizes_nodes`` / ``sizes_edges`` stand for
``nodes`` / ``edges``, an edge-level curve under ``metadata["edge_curve"]`` is drawn in the edges
panel, and ``cpr`` / ``cmd`` (MIB's areas) are printed there when present, on a second line of that
panel's title: above the axes, so never over the legend or the curves inside them.

Sizes are drawn on a logarithmic axis that stays linear below 1 (``symlog``), so a size of 0
(the empty circuit) is still shown. Figures are built on ``matplotlib.figure.Figure`` and drawn
with the Agg canvas, so nothing here touches ``pyplot``'s global state or the user's backend.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from viz._common import write_atomic

logger = logging.getLogger(__name__)

FAITHFULNESS_COLOUR = "#2166ac"
COMPLETENESS_COLOUR = "#b2182b"
SERIES_COLOURS = [
    "#4d9221",
    "#762a83",
    "#e08214",
    "#01665e",
    "#8c510a",
    "#c51b7d",
    "#35978f",
]


def _numbers(values: Any) -> list[float]:
    """A list of floats (empty for None)."""
    return [float(v) for v in values] if values is not None else []


def _pairs(xs: Sequence[float], ys: Sequence[float], what: str) -> tuple[list[float], list[float]]:
    """Points sorted by x; mismatched lengths are truncated with a warning."""
    if len(xs) != len(ys):
        logger.warning(
            "curve: %s has %d x values and %d y values; using the first %d",
            what,
            len(xs),
            len(ys),
            min(len(xs), len(ys)),
        )
    points = sorted(zip(xs, ys, strict=False))  # the longer one is cut, as warned
    return [p[0] for p in points], [p[1] for p in points]


def _panel(ax: Axes, curve: Mapping[str, Any], size_key: str, xlabel: str) -> None:
    """One panel: faithfulness and completeness (and comparison series) versus ``size_key``."""
    sizes = _numbers(curve.get(size_key))
    for key, colour, marker in (
        ("faithfulness", FAITHFULNESS_COLOUR, "o"),
        ("completeness", COMPLETENESS_COLOUR, "s"),
    ):
        values = _numbers(curve.get(key))
        if sizes and values:
            xs, ys = _pairs(sizes, values, key)
            ax.plot(xs, ys, marker=marker, markersize=4, color=colour, linewidth=1.8, label=key)

    series = curve.get("series") or {}
    for i, (name, data) in enumerate(series.items()):
        s_sizes = _numbers(data.get(size_key))
        s_faith = _numbers(data.get("faithfulness"))
        if not (s_sizes and s_faith):
            continue
        xs, ys = _pairs(s_sizes, s_faith, f"series {name!r}")
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        label = f"{name} (faithfulness)"
        ax.plot(xs, ys, marker="^", markersize=4, color=colour, linewidth=1.3, linestyle="--", label=label)
        s_comp = _numbers(data.get("completeness"))
        if s_comp:
            xs, ys = _pairs(s_sizes, s_comp, f"series {name!r} completeness")
            label = data.get("completeness_label") or f"{name} (completeness)"
            ax.plot(xs, ys, marker="v", markersize=3, color=colour, linewidth=1.0, linestyle=":", label=label)

    ax.axhline(1.0, color="#777777", linewidth=0.8, linestyle=":")
    ax.axhline(0.0, color="#777777", linewidth=0.8, linestyle=":")
    ax.set_xscale("symlog", linthresh=1.0)
    series_sizes = [v for data in series.values() for v in _numbers(data.get(size_key))]
    ax.set_xlim(0, max(sizes + series_sizes + [1.0]) * 1.35)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of the model's metric")
    ax.grid(True, which="major", color="#e5e5e5", linewidth=0.6)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", frameon=False)


def normalise_curve(curve: Mapping[str, Any]) -> dict[str, Any]:
    """A curve in this module's layout, also accepting the ``curve.json`` layout (see above)."""
    out = dict(curve)
    for short, long in (("nodes", "sizes_nodes"), ("edges", "sizes_edges")):
        if out.get(short) is None and out.get(long) is not None:
            out[short] = out[long]
    series = dict(out.get("series") or {})
    metadata = out.get("metadata")
    edge_curve = metadata.get("edge_curve") if isinstance(metadata, Mapping) else None
    if isinstance(edge_curve, Mapping) and edge_curve.get("sizes_edges") is not None:
        series.setdefault(
            "edge-level ablation",
            {
                "edges": edge_curve.get("sizes_edges"),
                "faithfulness": edge_curve.get("faithfulness"),
                "completeness": edge_curve.get("completeness"),
                # completeness of these circuits is measured with their nodes ablated, not their edges
                "completeness_label": "top-edge circuits (completeness, node level)",
            },
        )
    out["series"] = series
    return out


def _areas_text(curve: Mapping[str, Any]) -> str:
    """``CPR ... CMD ...`` when the curve carries MIB's areas."""
    parts = [
        f"{name.upper()} {float(curve[name]):.3g}"
        for name in ("cpr", "cmd")
        if isinstance(curve.get(name), (int, float))
    ]
    return "   ".join(parts)


def curve_figure(curve: Mapping[str, Any], title: str | None = None) -> Figure:
    """The curve figure, not yet drawn or saved: one panel by nodes, a second by edges when the
    curve has edges (whose title's second line gives CPR and CMD when the curve has them)."""
    curve = normalise_curve(curve)
    with_edges = bool(curve.get("edges")) or any(data.get("edges") for data in curve["series"].values())
    fig = Figure(figsize=(11.0 if with_edges else 6.2, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if with_edges else 1, squeeze=False)[0]
    _panel(axes[0], curve, "nodes", "circuit size (nodes)")
    axes[0].set_title("versus nodes", fontsize=10)
    if with_edges:
        _panel(axes[1], curve, "edges", "circuit size (edges)")
        areas = _areas_text(curve)
        axes[1].set_title("versus edges" + (f"\n{areas}" if areas else ""), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _save(fig: Figure, fmt: str) -> bytes:
    """The figure's bytes in ``fmt``, with dates and software metadata left out."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt in {"svg", "pdf"} else {"Software": None}
    # A fixed salt makes the SVG's element ids, and so the whole file, reproducible.
    with rc_context({"svg.hashsalt": "viz-curve"}):
        fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata)
    return buffer.getvalue()


def plot_curve(curve: Mapping[str, Any], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Plot faithfulness and completeness versus circuit size and write it to ``path``.

    Args:
        curve: the curve dict described in the module docstring.
        path: output file; its suffix picks the format (``.png``, ``.svg``, ``.pdf``).
        title: optional figure title.

    Returns:
        The written path (written atomically).
    """
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    return write_atomic(target, _save(curve_figure(curve, title), fmt))


_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def curve_svg(curve: Mapping[str, Any], title: str | None = None) -> str:
    """The curve plot as SVG text ready to be inlined in HTML.

    The XML declaration, DOCTYPE and the RDF metadata block are removed; the remaining
    ``<svg>`` element loads nothing from outside.
    """
    text = _save(curve_figure(curve, title), "svg").decode("utf-8")
    text = _SVG_PROLOGUE.sub("", text, count=1)
    return _SVG_METADATA.sub("", text)


__all__ = ["curve_figure", "curve_svg", "plot_curve"]
