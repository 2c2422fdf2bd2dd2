"""The interface every dictionary offers, and the checks that need nothing but that interface.

A *dictionary* is a SAELens module placed at a :class:`~replacement.sites.Site`: it reads the
site's ``hook_in`` activation, ``encode`` turns it into feature activations and ``decode`` turns
those back into the site's ``hook_out`` activation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from sae_lens import Transcoder
from sae_lens.saes.sae import SAEConfig
from torch import nn

from replacement.errors import DictionaryError


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


def check_finite(dictionary: nn.Module, what: str) -> None:
    """Raise :class:`DictionaryError` if any weight of ``dictionary`` is NaN or infinite."""
    for name, tensor in list(dictionary.named_parameters()) + list(dictionary.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise DictionaryError(
                f"{what}: weight {name} has {bad} NaN or infinite values; retrain or re-export this dictionary"
            )
