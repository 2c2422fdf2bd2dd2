"""How good a dictionary set is: sparsity, reconstruction and the loss it costs the model.

For each site, over held-out token batches the caller gives (padding excluded):

- ``l0``: mean number of active features per token;
- ``variance_explained``: ``1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` where ``y`` is the
  site's ``hook_out`` activation and ``y_hat = decode(encode(hook_in activation))``;
- ``dead_fraction``: features that are zero on every token;
- ``ce_recovered``: ``(CE_zero - CE_spliced) / (CE_zero - CE_clean)``, with the site alone spliced
  in *without* its error term (``hook_out`` replaced by ``y_hat``) and ``CE_zero`` the loss with
  ``hook_out`` zeroed (for ``embed``: ``blocks.0.hook_resid_pre`` zeroed).

``all_spliced_ce_recovered`` is the same ratio with every SAE site (not transcoders) spliced at
once, each dictionary reading the already-spliced stream, against the model with all those sites
zeroed at once.

All interventions go through :func:`scoped_hooks`, which removes exactly the hooks it added when
the block ends, even when it raises.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from replacement.dictionaries import DictionarySet
from replacement.errors import SiteError
from replacement.sites import Site

HookFn = Callable[..., Any]


@contextlib.contextmanager
def scoped_hooks(
    model: Any, hooks: Sequence[tuple[str, HookFn]], hook_dict: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Add forward hooks ``(hook_name, fn(activation, hook))`` for the duration of the block.

    Only the hooks added here are removed afterwards; hooks someone else placed on the model
    stay. A hook name the model lacks raises :class:`SiteError` before anything is added.
    ``hook_dict`` may pass ``model.hook_dict`` in, read once (it is slow to build on a bridge).
    """
    hook_dict = model.hook_dict if hook_dict is None else hook_dict
    points = []
    for name, fn in hooks:
        if name not in hook_dict:
            raise SiteError(f"the model has no hook {name!r}")
        points.append((hook_dict[name], fn))
    added = []
    try:
        for point, fn in points:
            point.add_hook(fn, dir="fwd")
            added.append((point, point.fwd_hooks[-1]))
        yield
    finally:
        for point, handle in reversed(added):
            handle.hook.remove()
            if handle in point.fwd_hooks:
                point.fwd_hooks.remove(handle)


def splice_hooks(dictionaries: Mapping[Site, Any]) -> list[tuple[str, HookFn]]:
    """Hooks that replace each site's ``hook_out`` activation by ``decode(encode(hook_in))``, no error term."""
    hooks: list[tuple[str, HookFn]] = []
    for site, d in dictionaries.items():
        if site.hook_in == site.hook_out:
            hooks.append((site.hook_out, lambda x, hook, d=d: d.decode(d.encode(x)).to(x.dtype)))
            continue
        captured: dict[str, torch.Tensor] = {}

        def capture(x: torch.Tensor, hook: Any, captured: dict = captured) -> None:
            captured["x"] = x

        def replace(
            x: torch.Tensor, hook: Any, d: Any = d, captured: dict = captured, site: Site = site
        ) -> torch.Tensor:
            if "x" not in captured:
                raise SiteError(f"{site.name}: hook {site.hook_in!r} did not run before {site.hook_out!r}")
            return d.decode(d.encode(captured.pop("x"))).to(x.dtype)

        hooks.extend([(site.hook_in, capture), (site.hook_out, replace)])
    return hooks


def zero_hooks(sites: Sequence[Site]) -> list[tuple[str, HookFn]]:
    """Hooks that zero each site's ``hook_out`` activation (for ``embed``, ``blocks.0.hook_resid_pre``)."""
    return [(site.hook_out, lambda x, hook: torch.zeros_like(x)) for site in sites]


@dataclass
class SiteQuality:
    """Quality of one site's dictionary (see the module docstring)."""

    kind: str
    l0: float
    variance_explained: float
    dead_fraction: float
    ce_recovered: float
    ce_spliced: float = math.nan
    ce_zero_ablated: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        """The report's per-site JSON object."""
        return {k: getattr(self, k) for k in ("kind", "l0", "variance_explained", "dead_fraction", "ce_recovered")}


@dataclass
class QualityReport:
    """Per-site quality, plus the loss with every SAE site spliced at once."""

    sites: dict[str, SiteQuality] = field(default_factory=dict)
    all_spliced_ce_recovered: float = math.nan
    ce_clean: float = math.nan
    ce_all_spliced: float = math.nan
    ce_all_zero_ablated: float = math.nan
    n_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """``{"sites": {SITE: {...}}, "all_spliced_ce_recovered": float}``."""
        return {
            "sites": {name: q.as_dict() for name, q in self.sites.items()},
            "all_spliced_ce_recovered": self.all_spliced_ce_recovered,
        }

    def details(self) -> dict[str, Any]:
        """Everything, including the raw cross-entropies."""
        return {
            "sites": {name: asdict(q) for name, q in self.sites.items()},
            **{k: v for k, v in asdict(self).items() if k != "sites"},
        }


def recovered(ce_zero: float, ce_spliced: float, ce_clean: float) -> float:
    """``(CE_zero - CE_spliced) / (CE_zero - CE_clean)``; NaN when zero-ablating costs nothing."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_spliced) / gap if abs(gap) > 1e-12 else math.nan


class _Mean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, total: float, count: int) -> None:
        self.total += total
        self.count += count

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else math.nan


def _ce_sum(logits: torch.Tensor, tokens: torch.Tensor, pad_id: int | None) -> tuple[float, int]:
    """Summed next-token cross-entropy over targets that are not padding, and their number."""
    targets = tokens[:, 1:]
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    losses = F.cross_entropy(flat, targets.reshape(-1), reduction="none")
    keep = (targets != pad_id).reshape(-1) if pad_id is not None else torch.ones_like(losses, dtype=torch.bool)
    return float(losses[keep].sum()), int(keep.sum())


@torch.no_grad()
class _SiteTally:
    """Running sums of one site over the measured tokens: reconstruction statistics and CE losses."""

    def __init__(self, d_sae: int, device: torch.device) -> None:
        self.n = 0
        self.l0 = 0.0
        self.err2 = 0.0
        self.y_sum: torch.Tensor | None = None  # [d_out], float64
        self.y2 = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.bool, device=device)  # [d_sae]
        self.ce_spliced = _Mean()
        self.ce_zero = _Mean()

    def add(self, dictionary: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        """Reconstruct ``y`` ``[n, d_out]`` from ``x`` ``[n, d_in]`` and add the statistics."""
        f = dictionary.encode(x)
        y_hat = dictionary.decode(f)
        active = f > 0
        self.n += len(x)
        self.l0 += float(active.sum())
        self.fired |= active.any(0)
        self.err2 += float(((y - y_hat) ** 2).sum())
        self.y_sum = y.double().sum(0) if self.y_sum is None else self.y_sum + y.double().sum(0)
        self.y2 += float((y.double() ** 2).sum())

    def quality(self, site: Site, ce_clean: float) -> SiteQuality:
        """The site's :class:`SiteQuality` (call after at least one token)."""
        assert self.y_sum is not None  # set with the first of its n tokens
        total_var = self.y2 - float((self.y_sum**2).sum()) / self.n
        return SiteQuality(
            kind=site.kind,
            l0=self.l0 / self.n,
            variance_explained=1.0 - self.err2 / total_var if total_var > 0 else math.nan,
            dead_fraction=float((~self.fired).float().mean()),
            ce_recovered=recovered(self.ce_zero.value, self.ce_spliced.value, ce_clean),
            ce_spliced=self.ce_spliced.value,
            ce_zero_ablated=self.ce_zero.value,
        )


def quality_report(
    model: Any,
    dictionaries: DictionarySet,
    token_batches: Sequence[torch.Tensor],
    *,
    pad_id: int | None = None,
    progress: bool = False,
    per_site_ce: bool = True,
) -> QualityReport:
    """Measure every site of ``dictionaries`` on ``model`` over ``token_batches`` (``[batch, pos]`` ids).

    The set is checked against the model first (:meth:`DictionarySet.validate_for`). Each batch
    costs ``3 + 2 * n_sites`` forward passes; ``per_site_ce=False`` skips the per-site splices
    (``ce_recovered`` is then NaN) and leaves 3.
    """
    dictionaries.validate_for(model)
    hook_dict = model.hook_dict
    sites = dictionaries.sites
    device = next(model.parameters()).device
    hooks = sorted({h for s in sites for h in (s.hook_in, s.hook_out)})
    tally = {s.name: _SiteTally(dictionaries[s].cfg.d_sae, device) for s in sites}
    ce_clean = _Mean()
    sae_sites = [s for s in sites if not s.is_transcoder]
    ce_all, ce_all_zero = _Mean(), _Mean()
    n_tokens = 0

    def ce_with(hooks: list[tuple[str, HookFn]], tokens: torch.Tensor) -> tuple[float, int]:
        with scoped_hooks(model, hooks, hook_dict):
            return _ce_sum(model(tokens), tokens, pad_id)

    for tokens in tqdm(token_batches, desc="measuring dictionaries", disable=not progress, leave=False):
        tokens = tokens.to(device)
        keep = (tokens != pad_id) if pad_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        n_tokens += int(keep.sum())
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
        ce_clean.add(*_ce_sum(logits, tokens, pad_id))
        for site in sites:
            d, t = dictionaries[site], tally[site.name]
            t.add(d, cache[site.hook_in][keep].float(), cache[site.hook_out][keep].float())
            if per_site_ce:
                t.ce_spliced.add(*ce_with(splice_hooks({site: d}), tokens))
                t.ce_zero.add(*ce_with(zero_hooks([site]), tokens))
        if sae_sites:
            ce_all.add(*ce_with(splice_hooks({s: dictionaries[s] for s in sae_sites}), tokens))
            ce_all_zero.add(*ce_with(zero_hooks(sae_sites), tokens))
    report = QualityReport(ce_clean=ce_clean.value, n_tokens=n_tokens)
    for site in sites:
        if tally[site.name].n:
            report.sites[site.name] = tally[site.name].quality(site, ce_clean.value)
    if sae_sites:
        report.ce_all_spliced = ce_all.value
        report.ce_all_zero_ablated = ce_all_zero.value
        report.all_spliced_ce_recovered = recovered(ce_all_zero.value, ce_all.value, ce_clean.value)
    return report
