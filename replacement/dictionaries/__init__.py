"""Dictionaries (SAEs, transcoders, neuron bases) and dictionary sets.

- :mod:`~replacement.dictionaries.protocol`: the :class:`Dictionary` interface (``encode``, ``decode``, ``W_dec``, ``cfg``).
- :mod:`~replacement.dictionaries.architectures`: TopK transcoder, identity and MLP-neuron
  dictionaries, registered with SAELens (next to its ``topk``, ``standard`` and ``transcoder``).
- :mod:`~replacement.dictionaries.factories`: a new dictionary for a site (:func:`create_dictionary`,
  :func:`identity_dictionary`, :func:`mlp_neuron_dictionary`).
- :mod:`~replacement.dictionaries.sets`: :class:`DictionarySet`, one model's dictionaries by site, saved as a folder.
- :mod:`~replacement.dictionaries.folders`: reading and checking dictionary folders and ``index.json``.
- :mod:`~replacement.dictionaries.hub`: the HuggingFace hub probe and SAELens pretrained releases.
"""

from replacement.dictionaries.architectures import IdentityDictionary, MLPNeuronTranscoder, TopKTranscoder
from replacement.dictionaries.factories import (
    ARCHITECTURES,
    DictionaryConfig,
    create_dictionary,
    identity_dictionary,
    mlp_neuron_dictionary,
    site_metadata,
)
from replacement.dictionaries.folders import INDEX_FILE, check_set_folder, load_dictionary
from replacement.dictionaries.hub import hub_reachable, site_for_hooks
from replacement.dictionaries.protocol import Dictionary, check_finite, d_out_of, is_transcoder
from replacement.dictionaries.sets import DictionarySet, hook_width

__all__ = [
    "ARCHITECTURES",
    "INDEX_FILE",
    "Dictionary",
    "DictionaryConfig",
    "DictionarySet",
    "IdentityDictionary",
    "MLPNeuronTranscoder",
    "TopKTranscoder",
    "check_finite",
    "check_set_folder",
    "create_dictionary",
    "d_out_of",
    "hook_width",
    "hub_reachable",
    "identity_dictionary",
    "is_transcoder",
    "load_dictionary",
    "mlp_neuron_dictionary",
    "site_for_hooks",
    "site_metadata",
]
