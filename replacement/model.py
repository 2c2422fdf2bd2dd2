"""The replacement model: a TransformerBridge with a dictionary spliced in at every site.

At each site the activation ``x`` becomes ``decode(f) + e`` with ``f = encode(x_in)`` and
``e = x - decode(f)`` computed on the fly, so with error terms the replaced model computes
exactly what the original does. Features ``f`` and errors ``e`` are the nodes of the sparse
feature graph, one per (site, position, feature | error).

Entry points of :class:`ReplacementModel` (each returns a :class:`RunResult`: logits and one
:class:`SiteRecord` per spliced site):

- :meth:`~ReplacementModel.run` and :meth:`~ReplacementModel.activations`: a plain forward pass;
  with ``edits`` any node is ablated, patched or set to a value, and downstream dictionaries
  re-encode the changed stream with their errors recomputed from it, so a site that is not edited
  passes its true activation on.
- :meth:`~ReplacementModel.run_with_grads`: every site output is an autograd node and
  :meth:`RunResult.site_grads` returns the gradient of a scalar at each site output. Because the
  error is recomputed from the true activation, this is the original model's gradient (upstream
  sites see the true gradient), and the gradient reaching the features is ``W_dec @ g`` — the error
  term's own path is cut, which is the bookkeeping first-order attribution needs (Marks et al., 2025).
- :meth:`~ReplacementModel.run_leaf`: every site output is rebuilt from detached leaf tensors
  ``decode(F) + E``, so the gradient of a downstream site's live features with respect to an
  upstream site's leaves is the direct effect between the two sites, every other site held fixed
  (the graph's edges). Only the gradients are direct: the forward values are those of a normal
  run. For direct *values*, pass every site's output to :meth:`~ReplacementModel.run_with_outputs`
  (:func:`attribution.edges.direct_outputs`).
- :meth:`~ReplacementModel.run_until`: a partial forward pass that stops at one site.

Attention patterns and LayerNorm scales can be frozen to the values of a reference run
(:meth:`ReplacementModel.freeze`), making every edge a linear direct effect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from replacement.errors import DictionaryError, SiteError
from replacement.sites import Site


@dataclass
class NodeEdit:
    """Changes to the nodes of one site for one run.

    ``feature_mask`` (bool, broadcastable to [batch, pos, d_sae]) marks features replaced by
    ``features`` (broadcastable to the same shape); ``error_mask`` (bool, broadcastable to
    [batch, pos]) marks error nodes replaced by ``error`` ([batch | 1, pos | 1, d_out]). A mask of
    ``None`` with values given replaces everything.
    """

    features: torch.Tensor | None = None
    feature_mask: torch.Tensor | None = None
    error: torch.Tensor | None = None
    error_mask: torch.Tensor | None = None

    def apply(self, f: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.features is not None:
            vals = self.features.to(f.dtype)
            f = vals.expand_as(f) if self.feature_mask is None else torch.where(self.feature_mask, vals, f)
        if self.error is not None:
            vals = self.error.to(e.dtype)
            e = vals.expand_as(e) if self.error_mask is None else torch.where(self.error_mask[..., None], vals, e)
        return f, e


@dataclass
class SiteRecord:
    """What one run saw at one site: input, features, error and the output passed on."""

    x_in: torch.Tensor  # [batch, pos, d_in]
    features: torch.Tensor  # [batch, pos, d_sae]
    error: torch.Tensor  # [batch, pos, d_out]
    output: torch.Tensor  # [batch, pos, d_out]
    # leaf mode: the detached leaves the output is rebuilt from, and the live (non-detached) values
    leaf_features: torch.Tensor | None = None
    leaf_error: torch.Tensor | None = None


@dataclass
class RunResult:
    logits: torch.Tensor
    records: dict[str, SiteRecord] = field(default_factory=dict)

    def site_grads(
        self, scalar: torch.Tensor, sites: Iterable[str] | None = None, retain_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """Gradient of ``scalar`` at each site's output (a run made with :meth:`ReplacementModel.run_with_grads`)."""
        names = list(self.records) if sites is None else list(sites)
        outs = [self.records[n].output for n in names]
        grads = torch.autograd.grad(scalar, outs, retain_graph=retain_graph, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(o)) for n, o, g in zip(names, outs, grads, strict=True)}


@dataclass
class FrozenState:
    """Attention patterns and LayerNorm scales captured from a reference run."""

    values: dict[str, torch.Tensor]


def _freeze_hook_names(n_layers: int) -> list[str]:
    names = []
    for layer in range(n_layers):
        names += [
            f"blocks.{layer}.attn.hook_pattern",
            f"blocks.{layer}.ln1.hook_scale",
            f"blocks.{layer}.ln2.hook_scale",
        ]
    return [*names, "ln_final.hook_scale"]


EMBED_HOOK = "blocks.0.hook_resid_pre"  # the residual stream entering layer 0


class _Reached(Exception):
    """Raised inside a hook once the site a partial forward pass runs to has been seen."""


@dataclass
class _Plan:
    """What one forward pass does: the public entry points each fill in the parts that make sense."""

    edits: dict[str, NodeEdit]
    mode: Literal["plain", "grad", "leaf"] = "plain"
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    sites: Iterable[str] | None = None  # spliced sites; None: all
    embed: torch.Tensor | None = None
    frozen: FrozenState | None = None
    until: Site | None = None
    reached: dict[str, torch.Tensor] = field(default_factory=dict)  # "in" / "out" of ``until``


def _stop_hooks(site: Site, reached: dict[str, torch.Tensor]) -> list[tuple[str, Callable]]:
    """Hooks that capture ``site``'s input and true output into ``reached`` and stop the forward pass."""

    def grab_in(x: torch.Tensor, hook: Any) -> torch.Tensor:
        reached["in"] = x
        if site.hook_in == site.hook_out:
            reached["out"] = x
            raise _Reached
        return x

    def grab_out(x: torch.Tensor, hook: Any) -> torch.Tensor:
        reached["out"] = x
        raise _Reached

    if site.hook_in == site.hook_out:
        return [(site.hook_in, grab_in)]
    return [(site.hook_in, grab_in), (site.hook_out, grab_out)]


class ReplacementModel:
    """A TransformerBridge and one dictionary per site.

    ``dictionaries`` maps site names (``"L1.attn"``) to dictionaries with ``encode``, ``decode``
    and ``W_dec`` (SAELens SAEs and transcoders, or :class:`~replacement.dictionaries.IdentityDictionary`),
    or is an object with ``sites`` and item access by site name (a dictionary set).
    """

    def __init__(self, model: Any, dictionaries: Mapping[str, Any] | Any):
        self.model = model
        if hasattr(dictionaries, "sites"):
            self.dictionary_set = dictionaries
            sites = list(dictionaries.sites)
            dicts = {s.name: dictionaries[s.name] for s in sites}
        else:
            self.dictionary_set = None
            dicts = dict(dictionaries)
            sites = [Site.parse(n) for n in dicts]
        self.sites: list[Site] = sorted(sites, key=lambda s: s.order)
        self.dictionaries: dict[str, Any] = {s.name: dicts[s.name] for s in self.sites}
        self._check()
        # Attribution differentiates with respect to activations, never weights.
        for module in [model, *self.dictionaries.values()]:
            for p in module.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ structure
    def _check(self) -> None:
        hooks = set(self.model.hook_dict)
        out_hooks: dict[str, str] = {}
        for site in self.sites:
            for hook in {site.hook_in, site.hook_out}:
                if hook not in hooks:
                    raise SiteError(f"site {site.name}: the model has no hook {hook!r}")
            if site.hook_out in out_hooks:
                raise SiteError(
                    f"sites {out_hooks[site.hook_out]} and {site.name} both write {site.hook_out}; "
                    "choose one, e.g. DictionarySet.select(kinds=SAE_KINDS) or MIXED_KINDS"
                )
            out_hooks[site.hook_out] = site.name
            d = self.dictionaries[site.name]
            d_model = self.model.cfg.d_model
            d_in = int(d.cfg.d_in)
            if d_in != d_model:
                raise DictionaryError(
                    f"site {site.name}: the dictionary's d_in is {d_in} but {site.hook_in} has width {d_model}"
                )

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise SiteError(f"unknown site {name!r}; this model's sites are {', '.join(self.site_names)}")

    def d_sae(self, name: str) -> int:
        return int(self.dictionaries[name].cfg.d_sae)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ running
    @torch.no_grad()
    def run(
        self,
        tokens: torch.Tensor,
        edits: Mapping[str, NodeEdit] | None = None,
        *,
        sites: Iterable[str] | None = None,
        frozen: FrozenState | None = None,
    ) -> RunResult:
        """Run the replaced model on ``tokens`` [batch, pos] without gradients.

        ``edits``: per-site node changes. ``sites``: splice only these sites (the others run as in
        the original model). ``frozen``: attention patterns and LayerNorm scales of a reference run.
        """
        plan = _Plan(edits=dict(edits or {}), sites=sites, frozen=frozen)
        return self._forward(tokens, plan)

    def run_with_grads(
        self,
        tokens: torch.Tensor,
        edits: Mapping[str, NodeEdit] | None = None,
        *,
        outputs: Mapping[str, torch.Tensor] | None = None,
        embed: torch.Tensor | None = None,
        frozen: FrozenState | None = None,
    ) -> RunResult:
        """Run with every site output an autograd node (gradients via :meth:`RunResult.site_grads`).

        ``outputs``: per-site tensors [batch, pos, d_out] that replace the site's output outright
        (interpolation of one site). ``embed``: the residual stream entering layer 0
        [batch, pos, d_model], replacing the model's own embedding (interpolation of the inputs).
        """
        plan = _Plan(edits=dict(edits or {}), mode="grad", outputs=dict(outputs or {}), embed=embed, frozen=frozen)
        return self._forward(tokens, plan)

    def run_leaf(
        self,
        tokens: torch.Tensor,
        edits: Mapping[str, NodeEdit] | None = None,
        *,
        embed: torch.Tensor | None = None,
        frozen: FrozenState | None = None,
    ) -> RunResult:
        """Run with every site output rebuilt from detached leaves ``decode(F) + E`` (direct effects).

        The records carry the leaves (``leaf_features``, ``leaf_error``) and the live values;
        ``embed`` replaces the residual stream entering layer 0 as in :meth:`run_with_grads`.
        """
        plan = _Plan(edits=dict(edits or {}), mode="leaf", embed=embed, frozen=frozen)
        return self._forward(tokens, plan)

    @torch.no_grad()
    def run_with_outputs(
        self,
        tokens: torch.Tensor,
        outputs: Mapping[str, torch.Tensor],
        *,
        edits: Mapping[str, NodeEdit] | None = None,
        sites: Iterable[str] | None = None,
    ) -> RunResult:
        """Run without gradients with the outputs of some sites replaced by ``outputs[site]`` [n, pos, d_out].

        Spliced sites (``sites``, by default all) are recorded; a site with an output that is not
        spliced just passes the given output on (which may have more rows than ``tokens``: the
        batch grows there).
        """
        plan = _Plan(edits=dict(edits or {}), outputs=dict(outputs), sites=sites)
        return self._forward(tokens, plan)

    @torch.no_grad()
    def run_until(
        self,
        tokens: torch.Tensor,
        site: str,
        *,
        edits: Mapping[str, NodeEdit] | None = None,
        outputs: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run until ``site`` is reached and return its input and its true output ([n, pos, d] each;
        the same tensor for an SAE site); the rest of the forward pass is skipped.

        Only the sites with an edit are spliced and only the sites with an output replaced; every
        other site runs as in the original model.
        """
        edits = dict(edits or {})
        target = self.site(site)
        if outputs and site in outputs:
            raise SiteError(f"site {site}: run_until returns its true output, which cannot also be given")
        plan = _Plan(edits=edits, outputs=dict(outputs or {}), sites=list(edits), until=target)
        try:
            self._forward(tokens, plan)
        except _Reached:
            return plan.reached["in"], plan.reached["out"]
        raise SiteError(f"site {site}: its hooks did not run in the forward pass")

    @torch.no_grad()
    def activations(self, tokens: torch.Tensor, edits: Mapping[str, NodeEdit] | None = None) -> RunResult:
        """The logits and every site's features and errors (no gradients)."""
        return self.run(tokens, edits)

    def embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream entering layer 0 of the original model [batch, pos, d_model] (no gradients)."""
        with torch.no_grad():
            _, cache = self.model.run_with_cache(tokens, names_filter=lambda n: n == EMBED_HOOK)
        return cache[EMBED_HOOK]

    def _forward(self, tokens: torch.Tensor, plan: _Plan) -> RunResult:
        for name in list(plan.edits) + list(plan.outputs):
            self.site(name)  # unknown sites are an error, not a silent no-op
        active = self.sites if plan.sites is None else [self.site(n) for n in plan.sites]
        records: dict[str, SiteRecord] = {}
        hooks: list[tuple[str, Callable]] = []
        if plan.embed is not None:  # before the sites' hooks: the embed site reads the replaced stream
            hooks.append((EMBED_HOOK, lambda x, hook, v=plan.embed: v))
        if plan.until is not None:
            hooks += _stop_hooks(plan.until, plan.reached)
        for site in active:
            hooks += self._site_hooks(site, plan, records)
        spliced = {s.name for s in active}
        for name, value in plan.outputs.items():
            if name not in spliced:
                hooks.append((self.site(name).hook_out, lambda x, hook, v=value: v))
        if plan.frozen is not None:
            for name, value in plan.frozen.values.items():
                hooks.append((name, lambda x, hook, v=value: v.detach().to(x.dtype)))
        ctx = torch.enable_grad() if plan.mode != "plain" else contextlib.nullcontext()
        with ctx, self.model.hooks(fwd_hooks=hooks):
            logits = self.model(tokens)
        return RunResult(logits, records)

    def _site_hooks(self, site: Site, plan: _Plan, records: dict[str, SiteRecord]) -> list[tuple[str, Callable]]:
        """The hooks that splice ``site``'s dictionary in: encode at ``hook_in``, rebuild at ``hook_out``."""
        d = self.dictionaries[site.name]
        edit = plan.edits.get(site.name)
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []

        def read_in(x: torch.Tensor, hook: Any) -> torch.Tensor:
            pending.append((x, d.encode(x)))
            return x

        def write_out(x: torch.Tensor, hook: Any) -> torch.Tensor:
            x_in, f = pending.pop()
            e = x - d.decode(f)
            if plan.mode == "leaf":
                lf = f.detach().requires_grad_(True)
                le = e.detach().requires_grad_(True)
                lf2, le2 = edit.apply(lf, le) if edit is not None else (lf, le)
                y = d.decode(lf2) + le2
                records[site.name] = SiteRecord(x_in, f, e, y, lf, le)
                return y
            if site.name in plan.outputs:
                y = plan.outputs[site.name]
            elif edit is not None:
                f2, e2 = edit.apply(f, e)
                y = d.decode(f2) + e2
            else:
                # The spliced value: equal to x up to rounding, with gradient exactly the identity.
                y = d.decode(f) + e
            if plan.mode == "grad":
                y = y if y.requires_grad else y.detach().requires_grad_(True)
                y = y * 1.0  # a distinct autograd node per site
            records[site.name] = SiteRecord(x_in.detach(), f.detach(), e.detach(), y)
            return y

        if site.hook_in == site.hook_out:
            return [(site.hook_in, lambda x, hook: write_out(read_in(x, hook), hook))]
        return [(site.hook_in, read_in), (site.hook_out, write_out)]

    @torch.no_grad()
    def freeze(self, tokens: torch.Tensor) -> FrozenState:
        """Capture attention patterns and LayerNorm scales on ``tokens`` for frozen runs."""
        names = [n for n in _freeze_hook_names(self.model.cfg.n_layers) if n in self.model.hook_dict]
        _, cache = self.model.run_with_cache(tokens, names_filter=lambda n: n in names)
        return FrozenState({n: cache[n].detach() for n in names})

    @torch.no_grad()
    def mean_activations(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, per_position: bool = True
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Mean features and errors over a reference batch: per position ([1, pos, *]) or overall ([1, 1, *]).

        Padding positions (at or past ``lengths``) are left out of the means.
        """
        recs = self.activations(tokens).records
        b, t = tokens.shape
        if lengths is None:
            mask = torch.ones(b, t, device=tokens.device)
        else:
            mask = (torch.arange(t, device=tokens.device)[None] < lengths.to(tokens.device)[:, None]).float()
        out = {}
        for name, r in recs.items():
            if per_position:
                denom = mask.sum(0).clamp(min=1)[None, :, None]
                f = (r.features * mask[..., None]).sum(0, keepdim=True) / denom
                e = (r.error * mask[..., None]).sum(0, keepdim=True) / denom
            else:
                denom = mask.sum().clamp(min=1)
                f = (r.features * mask[..., None]).sum((0, 1), keepdim=True) / denom
                e = (r.error * mask[..., None]).sum((0, 1), keepdim=True) / denom
            out[name] = (f, e)
        return out
