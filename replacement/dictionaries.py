"""Dictionaries (SAEs, transcoders, neuron bases) and dictionary sets.

A *dictionary* is a SAELens module placed at a :class:`~replacement.sites.Site`: it reads the
site's ``hook_in`` activation, ``encode`` turns it into feature activations and ``decode`` turns
those back into the site's ``hook_out`` activation. Supported architectures, all registered with
SAELens so that ``SAE.load_from_disk`` reads them back:

=====================  =========================================================================
``topk``               SAELens ``TopKSAE`` (the default for SAE sites)
``standard``           SAELens ``StandardSAE``: ReLU features, trained with an L1 penalty
``transcoder``         SAELens ``Transcoder``: ReLU features, MLP input -> MLP output
``topk_transcoder``    :class:`TopKTranscoder`, a transcoder with TopK features (defined here)
``identity``           :class:`IdentityDictionary`: the site's raw basis, decode(encode(x)) == x
``mlp_neurons``        :class:`MLPNeuronTranscoder`: a model's own MLP neurons as a transcoder
=====================  =========================================================================

The last two are the *neuron baseline*: they reconstruct exactly (their error is zero), so the
same circuit pipeline runs on neurons, as Sparse Feature Circuits compares features with neurons.

A *dictionary set* is a folder: ``index.json`` names each site, its kind and hooks, and the
sub-folder holding its dictionary in SAELens's disk format (``cfg.json`` +
``sae_weights.safetensors``)::

    my_set/
      index.json
      embed/cfg.json, embed/sae_weights.safetensors
      L0.attn/...  L0.mlp/...  L0.transcoder/...  L0.resid/...  L1.attn/...

Importing this module registers the architectures defined here with SAELens.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Protocol,
    runtime_checkable,
)
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from sae_lens import (
    SAE,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.sae import SAEConfig, SAEMetadata
from sae_lens.saes.topk_sae import TopK
from torch import nn

from replacement.errors import DictionaryError, SiteError
from replacement.sites import SITE_KINDS, Site

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = "sparse-circuits/dictionary-set"
INDEX_VERSION = 1
SAE_CFG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"


# --------------------------------------------------------------------------------------------
# The interface every dictionary offers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Dictionary(Protocol):
    """What the rest of the project relies on: a SAELens-style encoder/decoder.

    ``encode(x_in)`` maps ``[..., d_in]`` to ``[..., d_sae]`` feature activations;
    ``decode(f)`` maps them to ``[..., d_out]`` (``d_out == d_in`` except for transcoders);
    ``W_dec`` is ``[d_sae, d_out]``; ``cfg.d_in``, ``cfg.d_sae`` and ``cfg.metadata.hook_name``
    (plus ``hook_name_out`` for a transcoder) describe it.
    """

    cfg: SAEConfig
    W_dec: torch.Tensor

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor: ...


def d_out_of(dictionary: Dictionary) -> int:
    """Width of what ``decode`` returns."""
    return int(getattr(dictionary.cfg, "d_out", dictionary.cfg.d_in))


def is_transcoder(dictionary: Dictionary) -> bool:
    """Whether ``dictionary`` maps one hook to another (a SAELens ``Transcoder`` or subclass)."""
    return isinstance(dictionary, Transcoder)


# --------------------------------------------------------------------------------------------
# Architectures SAELens lacks: TopK transcoder, identity, MLP neurons
# --------------------------------------------------------------------------------------------


@dataclass
class TopKTranscoderConfig(TranscoderConfig):
    """A transcoder whose features are the ``k`` largest ReLU pre-activations."""

    k: int = 16

    @classmethod
    def architecture(cls) -> str:
        return "topk_transcoder"


class TopKTranscoder(Transcoder):
    """SAELens ``Transcoder`` with a TopK activation: ``decode(topk(x W_enc + b_enc))``."""

    cfg: TopKTranscoderConfig  # type: ignore[assignment]

    def __init__(self, cfg: TopKTranscoderConfig):
        super().__init__(cfg)
        self.cfg = cfg

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return TopK(self.cfg.k)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TopKTranscoder:
        return cls(TopKTranscoderConfig.from_dict(config_dict))


@dataclass
class IdentityConfig(SAEConfig):
    """The identity dictionary: ``d_sae == d_in``, no parameters that matter."""

    apply_b_dec_to_input: bool = False

    @classmethod
    def architecture(cls) -> str:
        return "identity"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_sae != self.d_in:
            raise ValueError(f"an identity dictionary has d_sae == d_in, got d_in {self.d_in}, d_sae {self.d_sae}")


class IdentityDictionary(SAE[IdentityConfig]):
    """A site's raw basis as a dictionary: feature i is coordinate i, and nothing is left over.

    ``encode(x) == x`` and ``decode(f) == f``; ``W_enc`` and ``W_dec`` are identity matrices and
    ``b_dec`` is zero (kept frozen), so code written for SAEs runs on neurons unchanged.
    """

    def initialize_weights(self) -> None:
        eye = torch.eye(self.cfg.d_in, dtype=self.dtype, device=self.device)
        self.W_enc = nn.Parameter(eye.clone(), requires_grad=False)
        self.W_dec = nn.Parameter(eye.clone(), requires_grad=False)
        self.b_dec = nn.Parameter(torch.zeros(self.cfg.d_in, dtype=self.dtype, device=self.device), requires_grad=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_sae_acts_post(self.hook_sae_input(x.to(self.dtype)))

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        return self.hook_sae_recons(feature_acts)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        for p in self.parameters():
            p.requires_grad_(False)
        return result


_MLP_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class MLPNeuronConfig(TranscoderConfig):
    """A model's MLP as a transcoder: features are the MLP's hidden neurons."""

    act_fn: str = "gelu"

    @classmethod
    def architecture(cls) -> str:
        return "mlp_neurons"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.act_fn not in _MLP_ACTIVATIONS:
            raise ValueError(f"unsupported MLP activation {self.act_fn!r}; supported: {', '.join(_MLP_ACTIVATIONS)}")


class MLPNeuronTranscoder(Transcoder):
    """The MLP itself, ``act(x W_in + b_in) W_out + b_out``, with its neurons as features (exact)."""

    cfg: MLPNeuronConfig  # type: ignore[assignment]

    def __init__(self, cfg: MLPNeuronConfig):
        super().__init__(cfg)
        self.cfg = cfg

    def get_activation_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _MLP_ACTIVATIONS[self.cfg.act_fn]

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> MLPNeuronTranscoder:
        return cls(MLPNeuronConfig.from_dict(config_dict))


def _register(architecture: str, sae_class: type, config_class: type) -> None:
    """Register with SAELens once; a name SAELens already owns is left to SAELens."""
    if architecture in SAE_CLASS_REGISTRY:
        if SAE_CLASS_REGISTRY[architecture][0] is not sae_class:
            log.debug("SAELens already defines architecture %r; using its class", architecture)
        return
    register_sae_class(architecture, sae_class, config_class)


_register("topk_transcoder", TopKTranscoder, TopKTranscoderConfig)
_register("identity", IdentityDictionary, IdentityConfig)
_register("mlp_neurons", MLPNeuronTranscoder, MLPNeuronConfig)


# --------------------------------------------------------------------------------------------
# Creating a dictionary for a site
# --------------------------------------------------------------------------------------------

ARCHITECTURES = ("topk", "relu")
"""Trainable architectures; each names an SAE class and a transcoder class."""


@dataclass(frozen=True)
class DictionaryConfig:
    """Shape and sparsity of a trainable dictionary.

    ``architecture``: ``"topk"`` (TopK SAE / TopK transcoder) or ``"relu"`` (ReLU SAE / transcoder,
    trained with an L1 penalty). ``expansion``: ``d_sae = expansion * d_in`` unless ``d_sae`` is
    given. ``k``: active features per token for TopK.
    """

    architecture: str = "topk"
    expansion: int = 8
    d_sae: int | None = None
    k: int = 16

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise DictionaryError(
                f"unknown dictionary architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        if self.k < 1 or self.expansion < 1 or (self.d_sae is not None and self.d_sae < 1):
            raise DictionaryError(f"k, expansion and d_sae must be positive, got {self}")

    def width(self, d_in: int) -> int:
        return self.d_sae if self.d_sae is not None else self.expansion * d_in


def site_metadata(site: Site, model_name: str | None = None, **extra: Any) -> SAEMetadata:
    """SAELens metadata naming the site's hook(s) (``hook_name``; ``hook_name_out`` for transcoders)."""
    meta = SAEMetadata(hook_name=site.hook_in, model_name=model_name, site=site.name, **extra)
    if site.is_transcoder:
        meta.hook_name_out = site.hook_out
    return meta


def create_dictionary(
    site: Site,
    d_in: int,
    config: DictionaryConfig | None = None,
    *,
    d_out: int | None = None,
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> SAE:
    """A freshly initialised SAELens dictionary for ``site`` (a transcoder for transcoder sites).

    ``d_in`` is the width of the site's input hook; ``d_out`` that of its output hook (default
    ``d_in``). With ``seed`` the initial weights are reproducible.
    """
    config = config or DictionaryConfig()
    d_out = d_in if d_out is None else d_out
    if not site.is_transcoder and d_out != d_in:
        raise DictionaryError(f"site {site.name} reads and writes one hook, so d_out must equal d_in ({d_in}), got {d_out}")
    d_sae = config.width(d_in)
    if config.architecture == "topk" and config.k > d_sae:
        raise DictionaryError(f"k = {config.k} is more than the {d_sae} features of the dictionary for {site.name}")
    common = {"d_in": d_in, "d_sae": d_sae, "device": str(device), "metadata": site_metadata(site, model_name)}
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        if site.is_transcoder:
            if config.architecture == "topk":
                return TopKTranscoder(TopKTranscoderConfig(d_out=d_out, k=config.k, apply_b_dec_to_input=False, **common))
            return Transcoder(TranscoderConfig(d_out=d_out, apply_b_dec_to_input=False, **common))
        if config.architecture == "topk":
            return TopKSAE(TopKSAEConfig(k=config.k, **common))
        return StandardSAE(StandardSAEConfig(**common))
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)


def identity_dictionary(site: Site, d_in: int, *, model_name: str | None = None, device: str | torch.device = "cpu") -> IdentityDictionary:
    """The neuron baseline for an SAE site: the site's own basis, reconstruction exact."""
    if site.is_transcoder:
        raise DictionaryError(
            f"{site.name} is a transcoder site (input and output differ); use mlp_neuron_dictionary(model, layer) for its neurons"
        )
    return IdentityDictionary(IdentityConfig(d_in=d_in, d_sae=d_in, device=str(device), metadata=site_metadata(site, model_name)))


def mlp_neuron_dictionary(model: Any, layer: int, *, model_name: str | None = None) -> MLPNeuronTranscoder:
    """The neuron baseline for a transcoder site: the model's own MLP ``layer`` (reconstruction exact).

    Reads ``W_in``, ``b_in``, ``W_out``, ``b_out`` and ``cfg.act_fn`` from a TransformerBridge.
    """
    cfg = model.cfg
    act_fn = (getattr(cfg, "act_fn", None) or "gelu").lower()
    if act_fn not in _MLP_ACTIVATIONS:
        raise DictionaryError(f"the model's MLP activation {act_fn!r} has no neuron dictionary; supported: {', '.join(_MLP_ACTIVATIONS)}")
    if getattr(cfg, "gated_mlp", False):
        raise DictionaryError("the model's MLPs are gated; a neuron dictionary needs a plain two-layer MLP")
    site = Site("transcoder", layer)
    with torch.no_grad():
        W_in, b_in = model.W_in[layer].detach(), model.b_in[layer].detach()
        W_out, b_out = model.W_out[layer].detach(), model.b_out[layer].detach()
    d_model, d_mlp = W_in.shape
    tc = MLPNeuronTranscoder(
        MLPNeuronConfig(
            d_in=d_model, d_sae=d_mlp, d_out=W_out.shape[1], act_fn=act_fn, apply_b_dec_to_input=False,
            device=str(W_in.device), metadata=site_metadata(site, model_name),
        )
    )
    with torch.no_grad():
        tc.W_enc.copy_(W_in)
        tc.b_enc.copy_(b_in)
        tc.W_dec.copy_(W_out)
        tc.b_dec.copy_(b_out)
    return tc


def check_finite(dictionary: nn.Module, what: str) -> None:
    """Raise :class:`DictionaryError` if any weight of ``dictionary`` is NaN or infinite."""
    for name, tensor in list(dictionary.named_parameters()) + list(dictionary.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise DictionaryError(f"{what}: weight {name} has {bad} NaN or infinite values; retrain or re-export this dictionary")


# --------------------------------------------------------------------------------------------
# Dictionary sets
# --------------------------------------------------------------------------------------------


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

    def __init__(self, dictionaries: Mapping[Site | str, SAE], name: str = "dictionaries", info: Mapping[str, Any] | None = None):
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

    def get(self, site: Site | str, default: Any = None) -> Any:  # type: ignore[override]
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
                        "site": site.name, "kind": site.kind, "layer": site.layer,
                        "hook_in": site.hook_in, "hook_out": site.hook_out,
                        "path": site.name, "architecture": d.cfg.architecture(),
                        "d_in": d.cfg.d_in, "d_sae": d.cfg.d_sae, "d_out": d_out_of(d),
                    }
                )
            index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "name": self.name, "sites": entries, "info": self.info}
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
                raise SiteError(f"{where}: the site is {_short(entry['site'])}; expected a site name such as 'embed' or 'L1.attn'")
            try:
                site = _as_site(entry["site"])
            except SiteError as err:
                raise SiteError(f"{where}: {err}") from None
            if site.name in {s.name for s in dictionaries}:
                raise DictionaryError(f"{where}: site {site.name} appears twice in the index; keep one entry per site")
            if "kind" in entry and entry["kind"] != site.kind:
                raise DictionaryError(f"{where}: site {site.name} is of kind {site.kind!r}, the index says {_short(entry['kind'])}")
            for key, expected in (("hook_in", site.hook_in), ("hook_out", site.hook_out)):
                if key in entry and entry[key] != expected:
                    raise DictionaryError(
                        f"{where}: site {site.name} has {key} {expected!r}, the index says {_short(entry[key])}; fix the index"
                    )
            sub = entry.get("path", site.name)
            if not isinstance(sub, str) or not sub:
                raise DictionaryError(f"{where}: 'path' is {_short(sub)}; it must name the site's folder inside the set")
            folder = path / sub
            what = f"dictionary {site.name} of {path}"
            dictionaries[site] = load_dictionary(folder, device=device, what=what)
            _check_kind_matches(site, dictionaries[site], what)
            for key, width in (("d_in", dictionaries[site].cfg.d_in), ("d_sae", dictionaries[site].cfg.d_sae),
                               ("d_out", d_out_of(dictionaries[site]))):
                if key in entry and entry[key] != width:
                    raise DictionaryError(
                        f"{where}: the index says {key} {_short(entry[key])} but {folder / SAE_CFG_FILE} says {width}; fix the index"
                    )
            hook_name = dictionaries[site].cfg.metadata.hook_name
            if hook_name is not None and hook_name != site.hook_in:
                log.info("dictionary %s of %s was made for hook %s and is used at %s", site.name, path, hook_name, site.hook_in)
        return cls(dictionaries, name=index.get("name") or path.name, info=index.get("info") or {})

    # -- other sources --------------------------------------------------------------------------
    @classmethod
    def identity(
        cls, model: Any, kinds: Sequence[str] = ("embed", "attn", "mlp", "resid"), name: str = "neurons"
    ) -> DictionarySet:
        """The neuron baseline for ``model``: identity dictionaries at SAE sites, the MLP's own
        neurons at transcoder sites. Every reconstruction is exact, so error nodes are zero."""
        from replacement.sites import model_sites

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
        from sae_lens.loading.pretrained_saes_directory import (
            get_pretrained_saes_directory,
        )

        if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
            raise DictionaryError(
                f"the SAELens release {release!r} cannot be downloaded: the HuggingFace hub is not reachable "
                f"from this machine (use a local dictionary-set folder or the shipped toy set instead)"
            )
        directory = get_pretrained_saes_directory()
        if release not in directory:
            near = sorted(r for r in directory if release.split("-")[0] in r)[:8]
            raise DictionaryError(
                f"{release!r} is not a SAELens pretrained release"
                + (f"; similar names: {', '.join(near)}" if near else "")
            )
        lookup = directory[release]
        ids = list(sae_ids) if sae_ids is not None else list(lookup.saes_map)
        missing = [i for i in ids if i not in lookup.saes_map]
        if missing:
            raise DictionaryError(f"release {release!r} has no SAE {missing[0]!r}; it has {', '.join(list(lookup.saes_map)[:6])}, ...")
        device = torch.device(device) if device is not None else _default_device()
        dicts: dict[Site, SAE] = {}
        for sae_id in ids:
            try:
                sae = SAE.from_pretrained(release, sae_id, device=str(device))
            except Exception as err:  # noqa: BLE001 - network, hub or format failure: one sentence, not a traceback
                raise DictionaryError(f"could not load SAE {sae_id!r} of release {release!r}: {str(err).splitlines()[0]}") from None
            site = site_for_hooks(sae.cfg.metadata.hook_name, getattr(sae.cfg.metadata, "hook_name_out", None))
            check_finite(sae, f"SAE {sae_id!r} of release {release!r}")
            if site in dicts:
                raise DictionaryError(f"release {release!r}: SAEs for site {site.name} appear twice; pick sae_ids")
            dicts[site] = sae
        result = cls(dicts, name=release, info={"release": release, "model": lookup.model})
        if model is not None:
            result.validate_for(model)
        return result


def hook_width(model: Any, hook: str) -> int:
    """Width of a site hook's activation: every hook a site kind uses carries the residual width."""
    return int(model.cfg.d_model)


def site_for_hooks(hook_in: str | None, hook_out: str | None = None) -> Site:
    """The site a dictionary trained on ``hook_in`` (-> ``hook_out``) belongs to."""
    import re

    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook_in or "")
    if m is None:
        raise DictionaryError(f"hook {hook_in!r} does not belong to a known site kind")
    layer, rest = int(m[1]), m[2]
    if hook_out is not None and hook_out != hook_in:
        if hook_out == f"blocks.{layer}.hook_mlp_out":
            return Site("transcoder", layer)
        raise DictionaryError(f"a transcoder from {hook_in!r} to {hook_out!r} does not fit a known site kind")
    if rest == "hook_resid_pre":
        return Site("embed", -1) if layer == 0 else Site("resid", layer - 1)
    kinds = {"hook_resid_post": "resid", "hook_attn_out": "attn", "hook_mlp_out": "mlp"}
    if rest in kinds:
        return Site(kinds[rest], layer)
    raise DictionaryError(f"hook {hook_in!r} does not belong to a known site kind ({', '.join(SITE_KINDS)})")


def load_dictionary(folder: str | Path, device: str | torch.device = "cpu", what: str | None = None) -> SAE:
    """One SAELens folder through ``SAE.load_from_disk``, with clear errors and a NaN/inf check.

    Before SAELens sees the folder, ``cfg.json`` must be a JSON object naming a registered
    architecture with positive integer widths, and the tensor shapes in the weights file must be
    the ones those widths imply; anything else is one :class:`DictionaryError` naming the file.
    """
    folder = Path(folder)
    what = what or f"dictionary {folder}"
    if not folder.is_dir():
        if folder.exists():
            raise DictionaryError(f"{what}: {folder} is a file, not a folder; a dictionary folder holds {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE}")
        raise DictionaryError(f"{what}: folder {folder} does not exist; fix the index or restore the folder")
    for f in (SAE_CFG_FILE, SAE_WEIGHTS_FILE):
        if not (folder / f).is_file():
            state = "is not a file" if (folder / f).exists() else "is missing"
            raise DictionaryError(f"{what}: {folder / f} {state}; a dictionary folder needs {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE}")
    cfg = _read_cfg(folder / SAE_CFG_FILE, what)
    _check_weight_shapes(folder / SAE_WEIGHTS_FILE, cfg, what)
    try:
        sae = SAE.load_from_disk(folder, device=str(device))
    except Exception as err:  # noqa: BLE001 - SAELens raises KeyError/RuntimeError/ValueError/... on malformed folders
        raise DictionaryError(f"{what}: SAELens could not load {folder} ({_first_line(err)})") from None
    check_finite(sae, what)
    _check_runs(sae, folder, what)
    return sae


def _check_runs(sae: SAE, folder: Path, what: str) -> None:
    """Encode and decode one zero activation, so that a config SAELens accepts but cannot run with
    (a TopK ``k`` above ``d_sae``, a flag that is not a bool, ...) fails here and not mid-run."""
    k = getattr(sae.cfg, "k", None)
    if isinstance(k, (int, float)) and not 0 < k <= sae.cfg.d_sae:
        raise DictionaryError(
            f"{what}: k is {_short(k)} in {folder / SAE_CFG_FILE}; a TopK dictionary needs 1 <= k <= d_sae ({sae.cfg.d_sae})"
        )
    try:
        with torch.no_grad():
            x = torch.zeros(1, sae.cfg.d_in, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
            out = sae.decode(sae.encode(x))
    except Exception as err:  # whatever the config breaks, the user gets one sentence
        raise DictionaryError(
            f"{what}: the dictionary in {folder} does not run ({_first_line(err)}); check {SAE_CFG_FILE} against SAELens's format"
        ) from None
    if tuple(out.shape) != (1, d_out_of(sae)):
        raise DictionaryError(
            f"{what}: the dictionary in {folder} decodes to shape {list(out.shape)}, not [1, {d_out_of(sae)}]; check {SAE_CFG_FILE}"
        )


def _read_json_file(file: Path, what: str) -> Any:
    """The JSON value in ``file``; :class:`DictionaryError` naming the file if it cannot be read or parsed."""
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DictionaryError(f"{what}: {file} is not UTF-8 text (byte {err.start}); restore or rewrite it") from None
    except OSError as err:
        raise DictionaryError(f"{what}: cannot read {file} ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DictionaryError(f"{what}: {file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise DictionaryError(f"{what}: {file} is not usable JSON (nested too deeply)") from None
    except ValueError as err:  # an integer of thousands of digits
        raise DictionaryError(f"{what}: {file} is not usable JSON ({str(err).split(';')[0]})") from None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _read_cfg(file: Path, what: str) -> dict[str, Any]:
    """A dictionary's ``cfg.json``, checked as far as loading it safely needs."""
    cfg = _read_json_file(file, what)
    if not isinstance(cfg, dict):
        raise DictionaryError(f"{what}: {file} must hold a JSON object (SAELens's config of the dictionary)")
    architecture = cfg.get("architecture", "standard")
    if not isinstance(architecture, str) or architecture not in SAE_CLASS_REGISTRY:
        raise DictionaryError(
            f"{what}: architecture {_short(architecture)} in {file} is unknown to SAELens; known: {', '.join(sorted(SAE_CLASS_REGISTRY))}"
        )
    for key in ("d_in", "d_sae") + (("d_out",) if "d_out" in cfg else ()):
        if key not in cfg:
            raise DictionaryError(f"{what}: {file} lacks {key!r}; a dictionary's config gives d_in and d_sae")
        if not _is_count(cfg[key]):
            raise DictionaryError(f"{what}: {key} in {file} is {_short(cfg[key])}; it must be a positive integer")
    if "k" in cfg and architecture in ("topk", "topk_transcoder"):
        k = cfg["k"]
        if not _is_count(k) or k > cfg["d_sae"]:
            raise DictionaryError(f"{what}: k in {file} is {_short(k)}; a TopK dictionary needs 1 <= k <= d_sae ({cfg['d_sae']})")
    return cfg


def _check_weight_shapes(file: Path, cfg: Mapping[str, Any], what: str) -> None:
    """Refuse a weights file that is not safetensors, or whose shapes do not fit ``cfg``'s widths."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DictionaryError(f"{what}: {file} is not a readable safetensors file ({_first_line(err)})") from None
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    d_out = cfg.get("d_out", d_in)
    expected = {"W_enc": [d_in, d_sae], "W_dec": [d_sae, d_out], "b_enc": [d_sae]}
    for key, shape in expected.items():
        if key in shapes and shapes[key] != shape:
            raise DictionaryError(
                f"{what}: {key} in {file} has shape {shapes[key]}, but {SAE_CFG_FILE} (d_in {d_in}, d_sae {d_sae}, "
                f"d_out {d_out}) needs {shape}; the weights and the config do not belong together"
            )


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(err: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit``."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _check_kind_matches(site: Site, dictionary: Any, what: str) -> None:
    for attr in ("encode", "decode", "cfg", "W_dec"):
        if not hasattr(dictionary, attr):
            raise DictionaryError(f"{what}: a dictionary needs encode, decode, W_dec and cfg; this one lacks {attr}")
    if site.is_transcoder and not is_transcoder(dictionary):
        raise DictionaryError(f"{what}: site {site.name} needs a transcoder, got a {dictionary.cfg.architecture()} SAE")
    if not site.is_transcoder and is_transcoder(dictionary):
        raise DictionaryError(f"{what}: site {site.name} needs an SAE, got a transcoder")


def check_set_folder(path: str | Path) -> Path:
    """``path`` if it looks like a dictionary-set folder (a folder with an index); a clear error otherwise.
    Cheap: callers check before loading a model."""
    path = Path(path)
    if not path.is_dir():
        if path.exists():
            hint = f" (to use this index, give its folder {path.parent})" if path.name == INDEX_FILE else ""
            raise DictionaryError(
                f"dictionary set {path} is a file, not a folder{hint}; give a folder written by `circuits dictionaries train`"
            )
        raise DictionaryError(f"dictionary set {path} does not exist; give a folder written by `circuits dictionaries train`")
    if not (path / INDEX_FILE).is_file():
        raise DictionaryError(
            f"{path} has no {INDEX_FILE}, so it is not a dictionary set; give a folder written by "
            "`circuits dictionaries train` (or DictionarySet.save)"
        )
    return path


def _read_index(path: Path) -> dict[str, Any]:
    index_path = check_set_folder(path) / INDEX_FILE
    index = _read_json_file(index_path, f"dictionary set {path}")
    if not isinstance(index, dict) or not isinstance(index.get("sites"), list):
        raise DictionaryError(f"{index_path} needs a 'sites' list")
    if not index["sites"]:
        raise DictionaryError(f"{index_path} lists no sites; a dictionary set needs at least one dictionary")
    version = index.get("version", INDEX_VERSION)
    if index.get("format", INDEX_FORMAT) != INDEX_FORMAT or not isinstance(version, int) or version > INDEX_VERSION:
        raise DictionaryError(
            f"{index_path} has format {_short(index.get('format'))} version {_short(index.get('version'))}; "
            f"this code reads {INDEX_FORMAT} up to version {INDEX_VERSION}"
        )
    if "name" in index and not isinstance(index["name"], str):
        raise DictionaryError(f"{index_path}: 'name' is {_short(index['name'])}; it must be a string")
    if index.get("info") is not None and not isinstance(index["info"], dict):
        raise DictionaryError(f"{index_path}: 'info' is {_short(index['info'])}; it must be a JSON object")
    return index


def _recast_weights(file: Path, dtype: str) -> None:
    from safetensors.torch import load_file, save_file

    target = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype)
    if target is None:
        raise DictionaryError(f"weights_dtype must be float32, float16 or bfloat16, got {dtype!r}")
    state = load_file(str(file))
    save_file({k: v.to(target).contiguous() if v.is_floating_point() else v for k, v in state.items()}, str(file))


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing what was there only at the end."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
    os.rmdir(old)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connection to the hub, so an offline machine fails at once."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def shipped_toy_set() -> Path:
    """Folder of the dictionary set trained for the embedded toy model (shipped in the package)."""
    spec = importlib.util.find_spec("circuits")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DictionaryError("the circuits package (which ships the toy dictionary set) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "toy" / "data" / "dictionaries"


__all__ = [
    "ARCHITECTURES", "Dictionary", "DictionaryConfig", "DictionarySet", "IdentityDictionary", "MLPNeuronTranscoder",
    "TopKTranscoder", "check_finite", "create_dictionary", "d_out_of", "hook_width", "identity_dictionary",
    "is_transcoder", "load_dictionary", "mlp_neuron_dictionary", "shipped_toy_set", "site_for_hooks", "site_metadata",
]
