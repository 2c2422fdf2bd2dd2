"""A dictionary set: the dictionaries of one model keyed by site, and its folder on disk.

A set folder holds ``index.json`` naming each site, its kind and hooks, and the sub-folder holding
its dictionary in SAELens's disk format (``cfg.json`` + ``sae_weights.safetensors``)::

    my_set/
      index.json
      embed/cfg.json, embed/sae_weights.safetensors
      L0.attn/...  L0.mlp/...  L0.transcoder/...  L0.resid/...  L1.attn/...
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE

from replacement.dictionaries.factories import identity_dictionary, mlp_neuron_dictionary
from replacement.dictionaries.folders import (
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    SAE_CFG_FILE,
    SAE_WEIGHTS_FILE,
    _read_index,
    _recast_weights,
    _replace_dir,
    _short,
    load_dictionary,
)
from replacement.dictionaries.hub import pretrained_dictionaries
from replacement.dictionaries.protocol import d_out_of, is_transcoder
from replacement.errors import DictionaryError, SiteError
from replacement.sites import SITE_KINDS, Site, model_sites

log = logging.getLogger(__name__)


def _as_site(site: Site | str) -> Site:
    if isinstance(site, Site):
        return site
    try:
        return Site.parse(site)
    except ValueError as err:
        raise SiteError(str(err)) from None


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DictionarySet(Mapping[str, SAE]):
    """The dictionaries of one model, keyed by site name (``set["L1.attn"]``), in forward order.

    A set may hold an SAE and a transcoder for the same layer's MLP (``L1.mlp`` and
    ``L1.transcoder``); :meth:`select` picks the sites a replacement model uses.
    """

    def __init__(
        self,
        dictionaries: Mapping[Site, SAE] | Mapping[str, SAE],
        name: str = "dictionaries",
        info: Mapping[str, Any] | None = None,
    ):
        items: dict[Site, SAE] = {}
        for key, dictionary in dictionaries.items():
            site = _as_site(key)
            if site in items:
                raise DictionaryError(f"site {site.name} appears twice in the dictionary set {name!r}")
            _check_kind_matches(site, dictionary, f"dictionary {site.name} of set {name!r}")
            items[site] = dictionary
        self._sites = sorted(items, key=lambda s: (s.order, s.name))
        self._dicts = {s.name: items[s] for s in self._sites}
        self.name = name
        self.info: dict[str, Any] = dict(info or {})

    # -- mapping ------------------------------------------------------------------------------
    @property
    def sites(self) -> list[Site]:
        """The sites in forward-pass order."""
        return list(self._sites)

    def __getitem__(self, site: Site | str) -> SAE:
        key = site.name if isinstance(site, Site) else site
        try:
            return self._dicts[key]
        except KeyError:
            raise SiteError(
                f"the dictionary set {self.name!r} has no site {key!r}; its sites are {', '.join(self._dicts) or '(none)'}"
            ) from None

    def get(self, site: Site | str, default: Any = None) -> Any:
        """The dictionary at ``site``, or ``default`` when the set has no such site."""
        key = site.name if isinstance(site, Site) else site
        return self._dicts.get(key, default)

    def __contains__(self, site: object) -> bool:
        key = site.name if isinstance(site, Site) else site
        return key in self._dicts

    def __iter__(self) -> Iterator[str]:
        return iter(self._dicts)

    def __len__(self) -> int:
        return len(self._dicts)

    def __repr__(self) -> str:
        return f"DictionarySet({self.name!r}, sites=[{', '.join(self._dicts)}])"

    # -- views ----------------------------------------------------------------------------------
    def select(self, kinds: Sequence[str] | None = None, sites: Sequence[Site | str] | None = None) -> DictionarySet:
        """A set holding only the given site kinds (e.g. ``replacement.sites.SAE_KINDS``) and/or sites."""
        chosen = self._sites
        if kinds is not None:
            unknown = [k for k in kinds if k not in SITE_KINDS]
            if unknown:
                raise SiteError(f"unknown site kinds {unknown}; known kinds: {', '.join(SITE_KINDS)}")
            chosen = [s for s in chosen if s.kind in kinds]
        if sites is not None:
            wanted = [_as_site(s) for s in sites]
            for s in wanted:
                self[s]  # raises SiteError for a site the set lacks
            chosen = [s for s in chosen if s in wanted]
        return DictionarySet({s: self._dicts[s.name] for s in chosen}, name=self.name, info=self.info)

    def to(self, device: str | torch.device) -> DictionarySet:
        """Move every dictionary to ``device`` (in place); returns the set."""
        for name, d in self._dicts.items():
            self._dicts[name] = d.to(device)
        return self

    @property
    def device(self) -> torch.device:
        for d in self._dicts.values():
            return d.W_dec.device
        return torch.device("cpu")

    # -- checks -----------------------------------------------------------------------------------
    def validate_for(self, model: Any) -> None:
        """Check that ``model`` (a TransformerBridge) has every site's hooks and that widths match.

        Raises :class:`SiteError` for a hook the model lacks and :class:`DictionaryError` for a
        dictionary whose ``d_in`` (or output width) differs from its hook's width.
        """
        hooks = model.hook_dict
        n_layers = getattr(model.cfg, "n_layers", None)
        for site in self._sites:
            for hook in {site.hook_in, site.hook_out}:
                if hook not in hooks:
                    raise SiteError(
                        f"dictionary set {self.name!r}: site {site.name} needs hook {hook!r}, which the model does not have"
                        + (f" (it has {n_layers} layers)" if n_layers is not None else "")
                        + "; use a dictionary set made for this model"
                    )
            d = self._dicts[site.name]
            width_in, width_out = hook_width(model, site.hook_in), hook_width(model, site.hook_out)
            if d.cfg.d_in != width_in:
                raise DictionaryError(
                    f"dictionary set {self.name!r}: dictionary {site.name} has d_in {d.cfg.d_in} but hook "
                    f"{site.hook_in!r} of the model is {width_in} wide; use dictionaries trained on this model"
                )
            if d_out_of(d) != width_out:
                raise DictionaryError(
                    f"dictionary set {self.name!r}: dictionary {site.name} writes {d_out_of(d)} values but hook "
                    f"{site.hook_out!r} of the model is {width_out} wide; use dictionaries trained on this model"
                )

    # -- disk ---------------------------------------------------------------------------------------
    def save(self, path: str | Path, weights_dtype: str | None = None) -> Path:
        """Write the set as a folder (index + one SAELens folder per site), atomically.

        Everything is written into a temporary folder beside ``path`` which then replaces
        ``path``; a failure leaves ``path`` as it was. ``weights_dtype="float16"`` stores the
        weights at half precision (each folder's ``cfg.json`` keeps the dictionary's own dtype,
        so SAELens loads them back at that precision).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
        try:
            entries = []
            for site in self._sites:
                d = self._dicts[site.name]
                d.save_model(tmp / site.name)
                if weights_dtype is not None:
                    _recast_weights(tmp / site.name / SAE_WEIGHTS_FILE, weights_dtype)
                entries.append(
                    {
                        "site": site.name,
                        "kind": site.kind,
                        "layer": site.layer,
                        "hook_in": site.hook_in,
                        "hook_out": site.hook_out,
                        "path": site.name,
                        "architecture": d.cfg.architecture(),
                        "d_in": d.cfg.d_in,
                        "d_sae": d.cfg.d_sae,
                        "d_out": d_out_of(d),
                    }
                )
            index = {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "name": self.name,
                "sites": entries,
                "info": self.info,
            }
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            for p in [tmp, *tmp.rglob("*")]:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
            _replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> DictionarySet:
        """Read a set written by :meth:`save` (or by hand: an index plus SAELens folders).

        Every dictionary is loaded with ``SAE.load_from_disk``. A missing index or folder, an
        unknown architecture, weights that do not fit their config, a dictionary whose kind does
        not fit its site, or NaN/inf weights raise :class:`DictionaryError`; an unknown site name
        raises :class:`SiteError`.
        """
        path = Path(path)
        device = torch.device(device) if device is not None else _default_device()
        index = _read_index(path)
        dictionaries: dict[Site, SAE] = {}
        for i, entry in enumerate(index["sites"]):
            where = f"{path / INDEX_FILE}, site entry {i}"
            if not isinstance(entry, dict) or "site" not in entry:
                raise DictionaryError(f"{where}: each site entry needs at least a 'site' name and a 'path'")
            if not isinstance(entry["site"], str):
                raise SiteError(
                    f"{where}: the site is {_short(entry['site'])}; expected a site name such as 'embed' or 'L1.attn'"
                )
            try:
                site = _as_site(entry["site"])
            except SiteError as err:
                raise SiteError(f"{where}: {err}") from None
            if site.name in {s.name for s in dictionaries}:
                raise DictionaryError(f"{where}: site {site.name} appears twice in the index; keep one entry per site")
            if "kind" in entry and entry["kind"] != site.kind:
                raise DictionaryError(
                    f"{where}: site {site.name} is of kind {site.kind!r}, the index says {_short(entry['kind'])}"
                )
            for key, expected in (("hook_in", site.hook_in), ("hook_out", site.hook_out)):
                if key in entry and entry[key] != expected:
                    raise DictionaryError(
                        f"{where}: site {site.name} has {key} {expected!r}, the index says {_short(entry[key])}; fix the index"
                    )
            sub = entry.get("path", site.name)
            if not isinstance(sub, str) or not sub:
                raise DictionaryError(
                    f"{where}: 'path' is {_short(sub)}; it must name the site's folder inside the set"
                )
            folder = path / sub
            what = f"dictionary {site.name} of {path}"
            dictionaries[site] = load_dictionary(folder, device=device, what=what)
            _check_kind_matches(site, dictionaries[site], what)
            for key, width in (
                ("d_in", dictionaries[site].cfg.d_in),
                ("d_sae", dictionaries[site].cfg.d_sae),
                ("d_out", d_out_of(dictionaries[site])),
            ):
                if key in entry and entry[key] != width:
                    raise DictionaryError(
                        f"{where}: the index says {key} {_short(entry[key])} but {folder / SAE_CFG_FILE} says {width}; fix the index"
                    )
            hook_name = dictionaries[site].cfg.metadata.hook_name
            if hook_name is not None and hook_name != site.hook_in:
                log.info(
                    "dictionary %s of %s was made for hook %s and is used at %s",
                    site.name,
                    path,
                    hook_name,
                    site.hook_in,
                )
        return cls(dictionaries, name=index.get("name") or path.name, info=index.get("info") or {})

    # -- other sources --------------------------------------------------------------------------
    @classmethod
    def identity(
        cls, model: Any, kinds: Sequence[str] = ("embed", "attn", "mlp", "resid"), name: str = "neurons"
    ) -> DictionarySet:
        """The neuron baseline for ``model``: identity dictionaries at SAE sites, the MLP's own
        neurons at transcoder sites. Every reconstruction is exact, so error nodes are zero."""
        d_model = int(model.cfg.d_model)
        device = next(model.parameters()).device
        model_name = getattr(model.cfg, "model_name", None)
        dicts: dict[Site, SAE] = {}
        for site in model_sites(int(model.cfg.n_layers), tuple(kinds)):
            if site.is_transcoder:
                dicts[site] = mlp_neuron_dictionary(model, site.layer, model_name=model_name).to(device)
            else:
                dicts[site] = identity_dictionary(site, d_model, model_name=model_name, device=device)
        return cls(dicts, name=name, info={"kind": "neuron baseline"})

    @classmethod
    def from_pretrained(
        cls,
        release: str,
        sae_ids: Sequence[str] | None = None,
        *,
        device: str | torch.device | None = None,
        model: Any = None,
    ) -> DictionarySet:
        """A set assembled from a SAELens pretrained release (e.g. ``"gpt2-small-res-jb"``).

        Each SAE's hook is mapped to a site: ``blocks.0.hook_resid_pre`` -> ``embed``,
        ``blocks.L.hook_resid_pre`` -> ``L(L-1).resid``, ``hook_resid_post`` -> ``resid``,
        ``hook_attn_out`` -> ``attn``, ``hook_mlp_out`` -> ``mlp``, and a transcoder writing
        ``hook_mlp_out`` -> ``transcoder``. ``sae_ids`` picks SAEs of the release (default all).
        Needs the HuggingFace hub; when it is unreachable one :class:`DictionaryError` says so at once.
        With ``model`` the set is checked against it (:meth:`validate_for`).
        """
        device = torch.device(device) if device is not None else _default_device()
        dicts, info = pretrained_dictionaries(release, sae_ids, device)
        result = cls(dicts, name=release, info=info)
        if model is not None:
            result.validate_for(model)
        return result


def hook_width(model: Any, hook: str) -> int:
    """Width of a site hook's activation: every hook a site kind uses carries the residual width."""
    return int(model.cfg.d_model)


def _check_kind_matches(site: Site, dictionary: Any, what: str) -> None:
    for attr in ("encode", "decode", "cfg", "W_dec"):
        if not hasattr(dictionary, attr):
            raise DictionaryError(f"{what}: a dictionary needs encode, decode, W_dec and cfg; this one lacks {attr}")
    if site.is_transcoder and not is_transcoder(dictionary):
        raise DictionaryError(f"{what}: site {site.name} needs a transcoder, got a {dictionary.cfg.architecture()} SAE")
    if not site.is_transcoder and is_transcoder(dictionary):
        raise DictionaryError(f"{what}: site {site.name} needs an SAE, got a transcoder")
