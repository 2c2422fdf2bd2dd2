"""Ranking nodes and edges by ``|effect|``.

One order everywhere (pruning, curves, diagrams): decreasing magnitude, ties to the key that comes
first (a graph's node or edge order). :func:`ranked` and :func:`top_k` order any mapping of
magnitudes; :func:`ranked_nodes` and :func:`ranked_edges` read the ``effect`` attributes of a graph.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

import networkx as nx

from circuits.graph.ids import METRIC

K = TypeVar("K", bound=Hashable)


def ranked(magnitudes: Mapping[K, float]) -> list[K]:
    """The keys by decreasing magnitude; ties go to the earlier key (mappings keep insertion order)."""
    order = sorted(enumerate(magnitudes.items()), key=lambda item: (-item[1][1], item[0]))
    return [key for _, (key, _) in order]


def top_k(magnitudes: Mapping[K, float], k: int) -> list[K]:
    """The ``k`` keys of largest magnitude, in :func:`ranked` order."""
    return ranked(magnitudes)[:k]


def ranked_nodes(G: nx.DiGraph) -> list[str]:
    """The graph's nodes (metric excluded) by decreasing ``|effect|``, ties in graph order."""
    return ranked({n: abs(float(a["effect"])) for n, a in G.nodes(data=True) if n != METRIC})


def ranked_edges(G: nx.DiGraph) -> list[tuple[str, str]]:
    """The graph's edges by decreasing ``|effect|``, ties in graph order."""
    return ranked({(u, v): abs(float(effect)) for u, v, effect in G.edges(data="effect")})
