"""Architectures SAELens lacks, registered in its registry so that ``SAE.load_from_disk`` reads them back.

=====================  =========================================================================
``topk_transcoder``    :class:`TopKTranscoder`, a transcoder with TopK features
``identity``           :class:`IdentityDictionary`: the site's raw basis, decode(encode(x)) == x
``mlp_neurons``        :class:`MLPNeuronTranscoder`: a model's own MLP neurons as a transcoder
=====================  =========================================================================

The last two are the *neuron baseline*: they reconstruct exactly (their error is zero), so the
same circuit pipeline runs on neurons, as Sparse Feature Circuits compares features with neurons.
Importing this module registers the three.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import SAE, Transcoder, TranscoderConfig
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.sae import SAEConfig
from sae_lens.saes.topk_sae import TopK
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class TopKTranscoderConfig(TranscoderConfig):
    """A transcoder whose features are the ``k`` largest ReLU pre-activations."""

    k: int = 16

    @classmethod
    def architecture(cls) -> str:
        return "topk_transcoder"


class TopKTranscoder(Transcoder):
    """SAELens ``Transcoder`` with a TopK activation: ``decode(topk(x W_enc + b_enc))``."""

    cfg: TopKTranscoderConfig

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

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
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

    cfg: MLPNeuronConfig

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
