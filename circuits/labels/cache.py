"""The on-disk cache of feature contexts: one safetensors file per scan, named by what it depends on.

:func:`cache_key` hashes the model's weights, each site's dictionary (class, config, weights), the
corpus, ``k`` and ``window``; :func:`save_labels` and :func:`load_labels` write and read one
:class:`~circuits.labels.scan.FeatureLabels` under :func:`cache_dir`. Tensors up to 4M elements are
hashed in full, larger ones on an evenly strided sample of 4M elements.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from circuits.data.corpus import Corpus
from circuits.files import atomic_write
from circuits.labels.scan import DEFAULT_K, DEFAULT_WINDOW, FeatureLabels, SiteContexts, TopContexts

CACHE_ENV = "CIRCUITS_CACHE"
CACHE_FORMAT = "sparse-circuits/feature-contexts"
CACHE_VERSION = 1
_HASH_FULL_LIMIT = 1 << 22


def cache_dir() -> Path:
    """Where label caches live: ``$CIRCUITS_CACHE/labels``, else ``~/.cache/sparse-circuits/labels``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "labels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sparse-circuits" / "labels"


def _update_tensor(h: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.reshape(-1)
    if flat.numel() > _HASH_FULL_LIMIT:
        flat = flat[:: math.ceil(flat.numel() / _HASH_FULL_LIMIT)]
    flat = flat.to("cpu")
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    h.update(flat.contiguous().numpy().tobytes())


def _cfg_text(dictionary: Any) -> str:
    cfg = dictionary.cfg
    try:
        data = dict(cfg.to_dict())
    except (AttributeError, TypeError, ValueError):  # a config that does not serialise: its repr tells kinds apart
        return repr(cfg)
    data.pop("device", None)
    return json.dumps(data, sort_keys=True, default=str)


def cache_key(rm: Any, corpus: Corpus, k: int = DEFAULT_K, window: int = DEFAULT_WINDOW) -> str:
    """Hash of what a scan depends on: the model's weights, each site's dictionary (class, config,
    weights), the corpus, ``k`` and ``window``."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{CACHE_FORMAT}|{CACHE_VERSION}|k={k}|window={window}|corpus={corpus.digest()}|".encode())
    for name, p in sorted(dict(rm.model.named_parameters()).items()):
        _update_tensor(h, f"model.{name}", p)
    for site in rm.site_names:
        d = rm.dictionaries[site]
        h.update(f"site={site}|{type(d).__module__}.{type(d).__qualname__}|{_cfg_text(d)}|".encode())
        for name, p in sorted(d.state_dict().items()):
            _update_tensor(h, f"{site}.{name}", p)
    return h.hexdigest()


def save_labels(labels: FeatureLabels, path: str | os.PathLike[str]) -> Path:
    """Write ``labels`` to one safetensors file, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, sc in enumerate(labels.top.sites.values()):
        tensors[f"{i}.features"] = sc.features.long().contiguous()
        tensors[f"{i}.values"] = sc.values.float().contiguous()
        tensors[f"{i}.seq"] = sc.seq.int().contiguous()
        tensors[f"{i}.pos"] = sc.pos.int().contiguous()
        tensors[f"{i}.acts"] = sc.acts.float().contiguous()
    vocab: dict[str, int] = {}
    rows = []
    for text in labels.texts:
        rows.append([vocab.setdefault(t, len(vocab)) for t in text])
    width = max((len(r) for r in rows), default=0)
    tensors["corpus.tokens"] = torch.tensor([r + [-1] * (width - len(r)) for r in rows] or [[]], dtype=torch.int32)
    meta = {
        "format": CACHE_FORMAT,
        "version": str(CACHE_VERSION),
        "key": labels.key,
        "info": json.dumps(
            {
                "sites": list(labels.top.sites),
                "k": labels.top.k,
                "window": labels.top.window,
                "n_texts": labels.top.n_texts,
                "corpus": labels.corpus_name,
                "strings": list(vocab),
            },
            ensure_ascii=False,
        ),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_labels(path: str | os.PathLike[str]) -> FeatureLabels:
    """Read a file written by :func:`save_labels` (``ValueError`` if it is not one)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != str(CACHE_VERSION):
            raise ValueError(f"{path} is not a feature-contexts file of version {CACHE_VERSION}")
        info = json.loads(meta["info"])
        sites = {}
        for i, site in enumerate(info["sites"]):
            sites[site] = SiteContexts(
                f.get_tensor(f"{i}.features").long(),
                f.get_tensor(f"{i}.values").float(),
                f.get_tensor(f"{i}.seq").long(),
                f.get_tensor(f"{i}.pos").long(),
                f.get_tensor(f"{i}.acts").float(),
            )
        coded = f.get_tensor("corpus.tokens").tolist()
    strings = info["strings"]
    texts = [[strings[c] for c in row if c >= 0] for row in coded][: int(info["n_texts"])]
    top = TopContexts(sites, int(info["k"]), int(info["window"]), int(info["n_texts"]))
    return FeatureLabels(top, str(info["corpus"]), texts, meta.get("key", ""))
