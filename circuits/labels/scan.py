"""The corpus scan: each feature's top-activating contexts, for every feature of every site at once.

:func:`top_contexts` streams token batches through a replacement model and keeps, for every
(site, feature), the ``k`` texts where the feature reaches its highest activation, with the position
of that maximum and the feature's activation on the ``window`` tokens up to and including it
(:class:`TopContexts`, one :class:`SiteContexts` per site). :class:`FeatureLabels` pairs such a scan
with the token strings of the corpus it indexes and reads off each feature's contexts and description.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits.labels.describe import WordClasses, describe

DEFAULT_K = 8
DEFAULT_WINDOW = 24


@dataclass
class SiteContexts:
    """The top contexts of some features of one site; row ``r`` is feature ``features[r]``.

    ``values[r, j]`` is the ``j``-th highest per-text maximum of the feature (descending; ties keep
    the earlier text), reached in text ``seq[r, j]`` at position ``pos[r, j]``; ``acts[r, j, w]`` is
    the feature's activation at position ``pos - (window - 1) + w`` (0 before the text's start), so
    ``acts[r, j, -1] == values[r, j]``. Unused slots have ``seq == -1`` and ``values == -inf``.
    """

    features: torch.Tensor  # [n] long
    values: torch.Tensor  # [n, k] float32
    seq: torch.Tensor  # [n, k] long
    pos: torch.Tensor  # [n, k] long
    acts: torch.Tensor  # [n, k, window] float32
    _rows: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def row(self, feature: int) -> int | None:
        """The row of ``feature``, or None if it was not scanned."""
        if self._rows is None:
            self._rows = {f: r for r, f in enumerate(self.features.tolist())}
        return self._rows.get(int(feature))


@dataclass
class TopContexts:
    """Per site, the top contexts of its scanned features (see :class:`SiteContexts`)."""

    sites: dict[str, SiteContexts]
    k: int
    window: int
    n_texts: int


class _Running:
    """The running top-``k`` of one site while batches stream through."""

    def __init__(self, features: torch.Tensor, k: int, window: int, device: torch.device):
        n = features.numel()
        self.features = features
        self.values = torch.full((n, k), -math.inf, device=device)
        self.seq = torch.full((n, k), -1, dtype=torch.long, device=device)
        self.pos = torch.full((n, k), -1, dtype=torch.long, device=device)
        self.acts = torch.zeros((n, k, window), device=device)
        self.k, self.window = k, window

    def update(self, feats_BTF: torch.Tensor, valid_BT: torch.Tensor, offset: int) -> None:
        """Merge one batch: each text's maximum per feature competes with the kept ones.

        ``feats_BTF`` is overwritten with -inf at invalid positions.
        """
        t = feats_BTF.shape[1]
        k, w = self.k, self.window
        dev = feats_BTF.device
        if not bool(valid_BT.all()):
            feats_BTF[~valid_BT] = -math.inf
        vmax_FB = feats_BTF.amax(dim=1).T
        # Only features where some text of the batch beats the k-th kept value change.
        rows = (vmax_FB > self.values[:, -1:]).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        cand_v = torch.cat([self.values[rows], vmax_FB[rows]], dim=1)  # kept entries first (earlier texts)
        order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, :k]
        values = cand_v.gather(1, order)
        from_batch = order >= k
        b_idx = (order - k).clamp(min=0)
        cols = rows[:, None, None]  # row r of the running state is column r of the features passed in
        # The first position of each new winner's maximum, and the window ending there.
        seq_RKT = feats_BTF[b_idx[..., None], torch.arange(t, device=dev), cols]
        pos = (seq_RKT == values[..., None]).int().argmax(dim=-1)
        at = pos[..., None] - (w - 1) + torch.arange(w, device=dev)
        acts = feats_BTF[b_idx[..., None], at.clamp(min=0), cols].masked_fill(at < 0, 0.0)
        kept = order.clamp(max=k - 1)
        old_acts = self.acts[rows].gather(1, kept[..., None].expand(-1, -1, w))
        self.values[rows] = values
        self.acts[rows] = torch.where(from_batch[..., None], acts, old_acts)
        self.seq[rows] = torch.where(from_batch, b_idx + offset, self.seq[rows].gather(1, kept))
        self.pos[rows] = torch.where(from_batch, pos, self.pos[rows].gather(1, kept))

    def result(self) -> SiteContexts:
        cpu = torch.device("cpu")
        return SiteContexts(
            self.features.to(cpu), self.values.to(cpu), self.seq.to(cpu), self.pos.to(cpu), self.acts.to(cpu)
        )


def _as_batch(
    item: torch.Tensor | tuple[torch.Tensor, torch.Tensor], pad_id: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, valid mask)`` from a tokens tensor or a ``(tokens, lengths)`` pair."""
    if isinstance(item, (tuple, list)):
        tokens, lengths = item
        valid = torch.arange(tokens.shape[1])[None, :] < torch.as_tensor(lengths).cpu()[:, None]
        return tokens, valid
    tokens = item
    if pad_id is None:
        return tokens, torch.ones(tokens.shape, dtype=torch.bool)
    # Right padding: a position is padding when it and everything after it is the pad id.
    not_pad = (tokens != pad_id).long()
    last = torch.where(not_pad.any(1), tokens.shape[1] - 1 - not_pad.flip(1).argmax(1), torch.zeros_like(not_pad[:, 0]))
    return tokens, (torch.arange(tokens.shape[1])[None, :] <= last.cpu()[:, None])


@torch.no_grad()
def top_contexts(
    rm: Any,
    token_batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    sites_features: Mapping[str, Sequence[int]] | None = None,
    k: int = DEFAULT_K,
    window: int = DEFAULT_WINDOW,
    *,
    pad_id: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> TopContexts:
    """Stream ``token_batches`` through the replacement model ``rm`` and keep each feature's top ``k`` texts.

    ``token_batches``: right-padded ``[batch, pos]`` tensors (positions holding ``pad_id`` at the
    end of a row are ignored; with ``pad_id=None`` every position counts) or ``(tokens, lengths)``
    pairs. Texts are numbered across batches in order. ``sites_features`` limits the scan to some
    sites and features (default: every feature of every site). ``total``: number of batches, for
    the progress bar.
    """
    if k < 1 or window < 1:
        raise ValueError(f"k and window must be positive, got k={k}, window={window}")
    device = rm.device
    if sites_features is None:
        chosen = {name: torch.arange(rm.d_sae(name)) for name in rm.site_names}
    else:
        chosen = {}
        for name, feats in sites_features.items():
            rm.site(name)  # an unknown site is an error
            idx = torch.as_tensor(list(feats), dtype=torch.long)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= rm.d_sae(name)):
                raise ValueError(f"site {name}: feature indices must lie in [0, {rm.d_sae(name)})")
            chosen[name] = idx
    order = [n for n in rm.site_names if n in chosen]
    running = {n: _Running(chosen[n].to(device), k, window, device) for n in order}
    full = {n: chosen[n].numel() == rm.d_sae(n) and bool((chosen[n] == torch.arange(rm.d_sae(n))).all()) for n in order}
    offset = 0
    for item in tqdm(token_batches, total=total, desc="feature contexts", unit="batch", disable=not progress):
        tokens, valid = _as_batch(item, pad_id)
        records = rm.run(tokens.to(device), sites=order).records
        valid = valid.to(device)
        for name in order:
            feats = records[name].features.float()
            if not full[name]:
                feats = feats[..., running[name].features]
            running[name].update(feats, valid, offset)
        offset += tokens.shape[0]
    return TopContexts({n: running[n].result() for n in order}, k, window, offset)


@dataclass
class FeatureLabels:
    """Top contexts of every feature plus the corpus they index: contexts and descriptions per feature."""

    top: TopContexts
    corpus_name: str
    texts: list[list[str]]  # token strings of every corpus text
    key: str = ""

    @property
    def sites(self) -> list[str]:
        return list(self.top.sites)

    def __contains__(self, site: object) -> bool:
        return site in self.top.sites

    def contexts(self, site: str, feature: int) -> list[dict[str, Any]]:
        """The feature's top contexts, highest first, as ``{"tokens", "acts", "max_act"}`` dicts.

        ``tokens`` run up to and including the token of the maximum (at most ``window`` of them);
        texts where the feature never exceeds 0 are left out.
        """
        sc = self.top.sites.get(site)
        row = None if sc is None else sc.row(int(feature))
        if sc is None or row is None:
            return []
        out = []
        w = self.top.window
        for j in range(sc.values.shape[1]):
            value, seq, pos = float(sc.values[row, j]), int(sc.seq[row, j]), int(sc.pos[row, j])
            if seq < 0 or not value > 0:
                continue
            start = max(0, pos - (w - 1))
            acts = sc.acts[row, j, w - 1 - (pos - start) :].tolist()
            out.append({"tokens": list(self.texts[seq][start : pos + 1]), "acts": acts, "max_act": value})
        return out

    def describe(self, site: str, feature: int, word_classes: WordClasses = ()) -> str:
        """:func:`~circuits.labels.describe.describe` of the feature's contexts."""
        return describe(self.contexts(site, feature), word_classes=word_classes)
