"""Batched ablated runs of the replacement model on one evaluation batch.

A :class:`Runner` holds the batch, its ablation values and node masks, and runs the replacement
model with some nodes live and the rest set to their ablation values, many variants per forward
pass (stacked copies of the batch). It returns the task metric per example and caches what every
evaluation on the batch shares (the full model's and the empty circuit's metric, the fully ablated
site outputs) as cached properties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

import torch

from circuits.data.inputs import task_metric
from circuits.data.tasks import TaskBatch
from circuits.evaluation.ablation import AblationValues, EvalConfig
from circuits.evaluation.masks import NodeMasks
from replacement.model import NodeEdit, ReplacementModel

LiveMasks = Mapping[str, torch.Tensor]  # site -> [batch, pos, d_sae + 1] bool, True where a node keeps its value


class _RepeatedEdit(NodeEdit):
    """A node edit whose values hold one batch and whose masks hold ``repeats`` stacked copies."""

    def __init__(
        self,
        features: torch.Tensor,
        feature_mask: torch.Tensor,
        error: torch.Tensor,
        error_mask: torch.Tensor,
        repeats: int,
    ):
        super().__init__(features, feature_mask, error, error_mask)
        self.repeats = repeats
        self._stacked = (features, feature_mask, error, error_mask)

    def apply(self, f: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, feature_mask, error, error_mask = self._stacked
        k = self.repeats
        fv = f.view(k, -1, *f.shape[1:])
        ev = e.view(k, -1, *e.shape[1:])
        f2 = torch.where(feature_mask.view_as(fv), features[None].to(f.dtype), fv).view_as(f)
        e2 = torch.where(error_mask.view(*ev.shape[:-1], 1), error[None].to(e.dtype), ev).view_as(e)
        return f2, e2


class Runner:
    """Runs of the replacement model on ``batch`` with chosen nodes live and the rest ablated."""

    def __init__(
        self, rm: ReplacementModel, batch: TaskBatch, config: EvalConfig, values: AblationValues, masks: NodeMasks
    ):
        self.rm = rm
        self.batch = batch
        self.config = config
        self.values = values
        self.masks = masks
        self.sites = rm.site_names
        self.metric = task_metric(batch)

    # ------------------------------------------------------------------------------ metric
    def metric_rows(self, logits: torch.Tensor, repeats: int) -> torch.Tensor:
        """[repeats, batch]: the task metric of every example of each stacked copy of the batch."""
        b = len(self.batch)
        index = torch.arange(b, device=logits.device).repeat(repeats)
        return self.metric(logits, index).view(repeats, b).detach().double().cpu()

    def metric_of(self, logits: torch.Tensor, repeats: int) -> torch.Tensor:
        """[repeats]: the mean metric of each stacked copy of the batch."""
        return self.metric_rows(logits, repeats).mean(1)

    # ------------------------------------------------------------------------- node-level runs
    @torch.no_grad()
    def run_live(self, lives: Sequence[LiveMasks | None]) -> torch.Tensor:
        """Per-example metric of each run ([runs, batch]); ``lives[k][site]`` marks the live nodes
        ([batch, pos, d_sae + 1]), None = nothing ablated.

        Runs are batched. A site whose nodes are all ablated in every run of a batch passes on its
        ablated output without being encoded; one with nothing ablated passes its activation on.
        """
        b = len(self.batch)
        per = max(1, self.config.max_rows // b)
        out: list[torch.Tensor] = []
        dev = self.rm.device
        padding = ~self.masks.valid.to(dev)[..., None]
        base = self.ablated_outputs
        for i in range(0, len(lives), per):
            group = lives[i : i + per]
            k = len(group)
            edits: dict[str, NodeEdit] = {}
            outputs: dict[str, torch.Tensor] = {}
            for site in self.sites:
                ablate = torch.stack(
                    [
                        torch.zeros(*padding.shape[:2], self.masks.d_sae[site] + 1, dtype=torch.bool, device=dev)
                        if live is None
                        else ~live[site].to(dev) & ~padding
                        for live in group
                    ]
                )  # [k, batch, pos, d_sae + 1]
                if not bool(ablate.any()):
                    continue  # the true activation
                if bool((ablate | padding).all()):
                    outputs[site] = base[site].repeat(k, 1, 1)
                    continue
                edits[site] = _RepeatedEdit(
                    self.values.features[site],
                    ablate[..., :-1].reshape(k * b, *ablate.shape[2:-1], -1),
                    self.values.errors[site],
                    ablate[..., -1].reshape(k * b, -1),
                    k,
                )
            tokens = self.batch.clean.repeat(k, 1)
            logits = self.rm.run_with_outputs(tokens, outputs, edits=edits, sites=list(edits)).logits
            out.append(self.metric_rows(logits, k))
        return torch.cat(out) if out else torch.zeros(0, b, dtype=torch.float64)

    @cached_property
    def reference_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example metric of the full model and of the empty circuit ([batch] each)."""
        with torch.no_grad():
            logits = self.rm.run(self.batch.clean).logits
        full = self.metric_rows(logits, 1)[0]
        empty = self.run_live([{s: self.masks.live(s, None) for s in self.sites}])[0]
        return full, empty

    @property
    def m_model(self) -> float:
        """The metric of the full model (mean over the evaluation examples)."""
        return float(self.reference_rows[0].mean())

    @property
    def m_empty(self) -> float:
        """The metric with every node ablated (protected nodes excepted)."""
        return float(self.reference_rows[1].mean())

    # ----------------------------------------------------------------- runs with site outputs
    @cached_property
    def ablated_outputs(self) -> dict[str, torch.Tensor]:
        """Each site's output with all of its nodes ablated ([batch, pos, d_out] per site)."""
        with torch.no_grad():
            return {
                s: self.rm.dictionaries[s].decode(self.values.features[s]) + self.values.errors[s] for s in self.sites
            }

    @cached_property
    def batch_can_grow(self) -> bool:
        """Whether the model accepts a site output with more rows than its input batch.

        When it does, a pass over ``k`` variants runs the layers before the first replaced site once,
        on the plain batch, instead of ``k`` times.
        """
        toks = self.batch.clean[:2]
        first = self.sites[0]
        with torch.no_grad():
            value = {first: self.rm.activations(toks).records[first].output.repeat(2, 1, 1)}
            try:
                grown = self.rm.run_with_outputs(toks, value, sites=[]).logits
                ref = self.rm.run_with_outputs(toks.repeat(2, 1), value, sites=[]).logits
                return grown.shape == ref.shape and bool(torch.allclose(grown, ref, atol=1e-4, rtol=1e-4))
            except (RuntimeError, ValueError, IndexError):
                return False

    def _tokens(self, repeats: int, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The tokens of a pass over ``repeats`` stacked copies of the batch with ``outputs`` put in place."""
        if repeats == 1 or (outputs and self.batch_can_grow):
            return self.batch.clean
        return self.batch.clean.repeat(repeats, 1)

    def logits_with_outputs(self, repeats: int, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The logits of ``repeats`` stacked copies of the batch with the given site outputs
        ([repeats * batch, pos, d] each) put in place, every other site as in the original model."""
        return self.rm.run_with_outputs(self._tokens(repeats, outputs), outputs, sites=[]).logits

    def site_with_outputs(
        self, repeats: int, outputs: Mapping[str, torch.Tensor], site: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The input and true output of ``site`` ([repeats * batch, pos, d] each) in a pass over ``repeats``
        stacked copies of the batch with the given site outputs put in place; stops at ``site``."""
        x_in, y_out = self.rm.run_until(self._tokens(repeats, outputs), site, outputs=outputs)
        if x_in.shape[0] != repeats * len(self.batch):  # no replaced site upstream (the first site)
            return x_in.repeat(repeats, 1, 1), y_out.repeat(repeats, 1, 1)
        return x_in, y_out
