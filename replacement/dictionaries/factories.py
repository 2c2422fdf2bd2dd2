"""Creating one dictionary for a site: a trainable SAE or transcoder, or a neuron-baseline dictionary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig, Transcoder, TranscoderConfig
from sae_lens.saes.sae import SAEMetadata

from replacement.dictionaries.architectures import (
    _MLP_ACTIVATIONS,
    IdentityConfig,
    IdentityDictionary,
    MLPNeuronConfig,
    MLPNeuronTranscoder,
    TopKTranscoder,
    TopKTranscoderConfig,
)
from replacement.errors import DictionaryError
from replacement.sites import Site

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
        raise DictionaryError(
            f"site {site.name} reads and writes one hook, so d_out must equal d_in ({d_in}), got {d_out}"
        )
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
                return TopKTranscoder(
                    TopKTranscoderConfig(d_out=d_out, k=config.k, apply_b_dec_to_input=False, **common)
                )
            return Transcoder(TranscoderConfig(d_out=d_out, apply_b_dec_to_input=False, **common))
        if config.architecture == "topk":
            return TopKSAE(TopKSAEConfig(k=config.k, **common))
        return StandardSAE(StandardSAEConfig(**common))
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)


def identity_dictionary(
    site: Site, d_in: int, *, model_name: str | None = None, device: str | torch.device = "cpu"
) -> IdentityDictionary:
    """The neuron baseline for an SAE site: the site's own basis, reconstruction exact."""
    if site.is_transcoder:
        raise DictionaryError(
            f"{site.name} is a transcoder site (input and output differ); use mlp_neuron_dictionary(model, layer) for its neurons"
        )
    return IdentityDictionary(
        IdentityConfig(d_in=d_in, d_sae=d_in, device=str(device), metadata=site_metadata(site, model_name))
    )


def mlp_neuron_dictionary(model: Any, layer: int, *, model_name: str | None = None) -> MLPNeuronTranscoder:
    """The neuron baseline for a transcoder site: the model's own MLP ``layer`` (reconstruction exact).

    Reads ``W_in``, ``b_in``, ``W_out``, ``b_out`` and ``cfg.act_fn`` from a TransformerBridge.
    """
    cfg = model.cfg
    act_fn = (getattr(cfg, "act_fn", None) or "gelu").lower()
    if act_fn not in _MLP_ACTIVATIONS:
        raise DictionaryError(
            f"the model's MLP activation {act_fn!r} has no neuron dictionary; supported: {', '.join(_MLP_ACTIVATIONS)}"
        )
    if getattr(cfg, "gated_mlp", False):
        raise DictionaryError("the model's MLPs are gated; a neuron dictionary needs a plain two-layer MLP")
    site = Site("transcoder", layer)
    with torch.no_grad():
        W_in, b_in = model.W_in[layer].detach(), model.b_in[layer].detach()
        W_out, b_out = model.W_out[layer].detach(), model.b_out[layer].detach()
    d_model, d_mlp = W_in.shape
    tc = MLPNeuronTranscoder(
        MLPNeuronConfig(
            d_in=d_model,
            d_sae=d_mlp,
            d_out=W_out.shape[1],
            act_fn=act_fn,
            apply_b_dec_to_input=False,
            device=str(W_in.device),
            metadata=site_metadata(site, model_name),
        )
    )
    with torch.no_grad():
        tc.W_enc.copy_(W_in)
        tc.b_enc.copy_(b_in)
        tc.W_dec.copy_(W_out)
        tc.b_dec.copy_(b_out)
    return tc
