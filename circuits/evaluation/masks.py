"""Graph node ids as masks over the replacement model's nodes on one evaluation batch.

Graph nodes name aggregated positions; a node is expanded onto each evaluation example's own
tokens: a token node onto that token index, a span node onto every token of the span in that
example (spans may differ in length between examples), a position-agnostic node (``"*"``) onto
every token. The three groupings are :class:`attribution.positions.PositionMap` objects, the ones
attribution aggregates over.

A *node mask* of a site is a bool [d_sae + 1] per graph position (error node last); a *token mask*
is a bool [batch, pos, d_sae + 1] over every node of the site on the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from attribution.positions import PositionMap
from circuits.data.tasks import TaskBatch
from circuits.errors import CircuitError
from circuits.evaluation.ablation import EvalConfig
from circuits.graph.ids import AGNOSTIC, ERROR_INDEX, METRIC, Index, Position, parse_node_id

NodeKey = tuple[str, Position, Index]  # (site, position, feature | "err")
PositionMasks = dict[Position, torch.Tensor]  # graph position -> [d_sae + 1] bool
SiteMasks = dict[str, PositionMasks]  # site -> its node masks


def position_mode(position: Position) -> str:
    """The position mode a graph position belongs to: ``"token"``, ``"schema"`` or ``"agnostic"``."""
    if position == AGNOSTIC:
        return "agnostic"
    return "token" if isinstance(position, int) else "schema"


def count_masked(masks: SiteMasks) -> tuple[int, int]:
    """(all nodes, error nodes) marked in ``masks``."""
    n_all = sum(int(v.sum()) for by_pos in masks.values() for v in by_pos.values())
    n_err = sum(int(v[-1]) for by_pos in masks.values() for v in by_pos.values())
    return n_all, n_err


class NodeMasks:
    """Parses node ids against the dictionaries and the task, and expands them onto the batch's tokens."""

    def __init__(self, d_sae: Mapping[str, int], batch: TaskBatch, config: EvalConfig):
        self.d_sae = dict(d_sae)
        self.sites = list(d_sae)
        self.config = config
        t = batch.clean.shape[1]
        lengths = batch.clean_lengths.cpu()
        maps = [
            PositionMap.tokens(lengths, t),
            PositionMap.spans(batch.clean_span, batch.span_names),
            PositionMap.agnostic(lengths, t),
        ]
        self.maps = {m.mode: m for m in maps}
        self.span_names = tuple(batch.span_names)
        self.valid = self.maps["agnostic"].group >= 0  # [batch, pos]: not padding
        self._parsed: dict[str, NodeKey | None] = {}  # node id -> key (ids repeat across the sets of a curve)

    # ------------------------------------------------------------------------------ parsing
    def parse(self, node: str) -> NodeKey | None:
        """(site, position, index) of a node id, checked against the dictionaries and the task; None for the metric."""
        if node not in self._parsed:
            self._parsed[node] = self._check(node)
        return self._parsed[node]

    def _check(self, node: str) -> NodeKey | None:
        site, position, index = parse_node_id(node)
        if site == METRIC or position is None or index is None:
            return None
        if site not in self.d_sae:
            raise CircuitError(
                f"circuit node {node!r} is at site {site}, which the dictionaries in use do not have (sites: "
                f"{', '.join(self.sites)}); use the dictionary set the circuit was made with"
            )
        if index != ERROR_INDEX and int(index) >= self.d_sae[site]:
            raise CircuitError(
                f"circuit node {node!r} names feature {index}, but site {site} has {self.d_sae[site]} features; "
                "use the dictionary set the circuit was made with"
            )
        if position_mode(position) == "schema" and position not in self.span_names:
            raise CircuitError(
                f"circuit node {node!r} is at span {position!r}, which the evaluation task does not have (spans: "
                f"{', '.join(self.span_names)}); evaluate on the task the circuit was made for"
            )
        return site, position, index

    def mark(self, masks: SiteMasks, key: NodeKey) -> None:
        """Set the node ``key`` in ``masks`` (adding its site and position as needed)."""
        site, position, index = key
        by_pos = masks.setdefault(site, {})
        if position not in by_pos:
            by_pos[position] = torch.zeros(self.d_sae[site] + 1, dtype=torch.bool)
        by_pos[position][self.d_sae[site] if index == ERROR_INDEX else int(index)] = True

    def node_masks(self, nodes: Iterable[str]) -> SiteMasks:
        """Per site and graph position, a bool [d_sae + 1] of the given nodes (error node last; metric ignored)."""
        masks: SiteMasks = {}
        for node in nodes:
            key = self.parse(node)
            if key is not None:
                self.mark(masks, key)
        return masks

    # ---------------------------------------------------------------------------- expanding
    def _row(self, position: Position) -> tuple[str, int | None]:
        """The position map of a graph position and its group there (None: the batch does not have it)."""
        mode = position_mode(position)
        if mode == "agnostic":
            return mode, 0
        if mode == "token":
            return mode, int(position) if int(position) < self.valid.shape[1] else None
        return mode, self.span_names.index(str(position))

    def token_mask(self, position: Position) -> torch.Tensor:
        """[batch, pos] bool: the tokens a graph position expands to in each evaluation example."""
        mode, row = self._row(position)
        if row is None:
            return torch.zeros_like(self.valid)
        return self.maps[mode].group == row

    def expand(self, site: str, masks: Mapping[Position, torch.Tensor]) -> torch.Tensor:
        """[batch, pos, d_sae + 1] bool: node masks of one site expanded onto tokens.

        One gather per position mode: a table with a row per group of the mode's position map (and
        an all-False row for padding) indexed by each token's group.
        """
        b, t = self.valid.shape
        width = self.d_sae[site] + 1
        rows: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for position, m in masks.items():
            mode, row = self._row(position)
            if row is not None:
                rows.setdefault(mode, []).append((row, m))
        out = torch.zeros(b, t, width, dtype=torch.bool)
        for mode, marked in rows.items():
            group = self.maps[mode].group
            n_rows = self.maps[mode].n_positions
            table = torch.zeros(n_rows + 1, width, dtype=torch.bool)
            for row, m in marked:
                table[row] |= m
            out |= table[torch.where(group >= 0, group, n_rows)]
        return out

    def protected(self, site: str) -> torch.Tensor:
        """[d_sae + 1] bool: nodes of ``site`` that are never ablated (errors / embedding when so configured)."""
        m = torch.zeros(self.d_sae[site] + 1, dtype=torch.bool)
        if not self.config.ablate_errors:
            m[-1] = True
        if not self.config.ablate_embed and site == self.sites[0] and site == "embed":
            m[:] = True
        return m

    def live(self, site: str, masks: Mapping[Position, torch.Tensor] | None, complement: bool = False) -> torch.Tensor:
        """[batch, pos, d_sae + 1] bool: True where a node keeps its value in the run.

        The nodes of ``masks`` (all others with ``complement``) and the protected ones are live.
        """
        expanded = self.expand(site, masks or {})
        if complement:
            expanded = ~expanded
        return expanded | self.protected(site)[None, None]
