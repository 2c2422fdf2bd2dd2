"""Loading a model and its replacement: the embedded toy model by default, any HuggingFace causal LM by
name, and a dictionary set by name (a folder, ``neurons``, ``release:NAME``) spliced into it
(:func:`load_dictionaries`, :func:`load_replacement`; :func:`load_setup`: both, as a run loads them).

``load_model()`` returns a :class:`LoadedModel` holding a TransformerLens ``TransformerBridge``
and a tokenizer that tasks can use. Real models go through ``TransformerBridge.boot_transformers``;
with no network and no local cache the call fails at once with one sentence, never a series of
retries.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuits.errors import ModelLoadError, TaskError, VocabularyError
from replacement.errors import ReplacementError
from replacement.model import ReplacementModel
from replacement.sites import MIXED_KINDS, SAE_KINDS

log = logging.getLogger(__name__)

TOY = "toy"


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (default: :func:`default_device`), refused at once if it is not available."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from err
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or mps")
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ModelLoadError(f"device {device!r}: there is one CPU device; use --device cpu")
        return torch.device("cpu")  # 'cpu:0' is the CPU, but some loaders refuse the indexed name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r}: no CUDA device is available to this PyTorch; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelLoadError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev


class HFTokenizer:
    """Adapter giving a HuggingFace tokenizer the interface tasks use (BOS first, words with spaces)."""

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        bos = hf_tokenizer.bos_token_id
        if bos is None:
            bos = hf_tokenizer.eos_token_id
        if bos is None:
            raise ModelLoadError("the tokenizer has neither a BOS nor an EOS token to start prompts with")
        self.bos_id = int(bos)
        pad = hf_tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.bos_id
        self.unk_id = hf_tokenizer.unk_token_id

    def __len__(self) -> int:
        return len(self.hf)

    def _ids(self, text: str, source: str | None, line: int | None) -> list[int]:
        ids = list(self.hf(text, add_special_tokens=False)["input_ids"])
        if self.unk_id is not None and self.unk_id in ids:
            raise VocabularyError(
                f"{text!r} contains text the tokenizer maps to its unknown token", source=source, line=line
            )
        return ids

    def encode(self, text: str, *, bos: bool = True, source: str | None = None, line: int | None = None) -> list[int]:
        ids = self._ids(text, source, line)
        return [self.bos_id, *ids] if bos else ids

    def encode_words(
        self, words: Sequence[str], *, source: str | None = None, line: int | None = None
    ) -> tuple[list[int], list[int]]:
        ids, starts = [self.bos_id], []
        for i, w in enumerate(words):
            starts.append(len(ids))
            ids.extend(self._ids(w if i == 0 else " " + w, source, line))
        return ids, starts

    def token_id(self, word: str, *, source: str | None = None, line: int | None = None) -> int:
        """The single token of an answer; a bare word gets the leading space it has mid-sentence."""
        text = word if word.startswith(" ") else " " + word
        ids = self._ids(text, source, line)
        if len(ids) != 1:
            raise TaskError(f"answer {word!r} is {len(ids)} tokens, an answer must be one", source=source, line=line)
        return ids[0]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids])


@dataclass
class LoadedModel:
    """A TransformerBridge, the tokenizer tasks use, and the name it was loaded by."""

    model: Any
    tokenizer: Any
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _offline_error(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"the weights of {name!r} are not available offline: they are neither in the local "
        f"HuggingFace cache nor reachable over the network (use the built-in 'toy' model, or a local folder)"
    )


def load_model(
    name: str = TOY, device: str | torch.device | None = None, hf_model: Any = None, hf_tokenizer: Any = None
) -> LoadedModel:
    """The toy model (``"toy"``, the default), a folder with a saved toy model, or a HuggingFace
    causal LM by name or as a ready ``hf_model`` (with ``hf_tokenizer``) wrapped in a TransformerBridge."""
    device = resolve_device(device)
    if hf_model is None and name == TOY:
        from circuits.toy.model import load_model as load_toy

        model, tok = load_toy(device=device)
        return LoadedModel(model, tok, TOY)
    if hf_model is None and Path(name).is_dir() and (Path(name) / "model.json").exists():
        from circuits.toy.model import load_model as load_toy

        model, tok = load_toy(name, device=device)
        return LoadedModel(model, tok, str(name))
    if hf_model is None:
        _check_model_name(name)
        hf_model, hf_tokenizer = _load_hf(name)
    from transformer_lens.model_bridge import TransformerBridge

    if hf_tokenizer is None:
        raise ModelLoadError(f"a tokenizer is needed with the model object given for {name!r}")
    # The bridge sets BOS, padding and special tokens on the tokenizer: work on a copy, so that the
    # caller's tokenizer keeps encoding as it did.
    hf_tokenizer = copy.deepcopy(hf_tokenizer)
    if getattr(hf_tokenizer, "bos_token", None) is None and getattr(hf_tokenizer, "eos_token", None) is not None:
        hf_tokenizer.bos_token = hf_tokenizer.eos_token
    hf_tokenizer.add_bos_token = True
    # TransformerBridge reads the tokenizer's name from init_kwargs; one built in memory
    # (PreTrainedTokenizerFast(tokenizer_object=...)) has none.
    init_kwargs = getattr(hf_tokenizer, "init_kwargs", None)
    if isinstance(init_kwargs, dict) and "name_or_path" not in init_kwargs:
        init_kwargs["name_or_path"] = getattr(hf_tokenizer, "name_or_path", "") or name
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=hf_tokenizer, device=device)
    bridge.eval()
    return LoadedModel(bridge, HFTokenizer(bridge.tokenizer), name)


def _check_model_name(name: str) -> None:
    """Refuse at once a model name that can be neither a folder with a model nor a hub name."""
    if not name.strip():
        raise ModelLoadError(
            "the model name is empty: give 'toy', a saved toy-model folder or a HuggingFace name such as gpt2"
        )
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model folder {name!r} holds neither a saved toy model (model.json) nor a HuggingFace model "
                f"(config.json): give 'toy', a folder written by `circuits toy train`, or a HuggingFace name"
            )
    elif path.exists():
        raise ModelLoadError(f"model {name!r} is a file, not a model: give its folder, 'toy', or a HuggingFace name")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelLoadError(
            f"model folder {name!r} does not exist (a HuggingFace name has the form NAME or OWNER/NAME)"
        )


def _load_hf(name: str):
    """Model and tokenizer from the local cache, or the hub when it is reachable; fails fast offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from replacement.dictionaries.hub import hub_reachable

    local = Path(name).is_dir()
    offline_only = os.environ.get("HF_HUB_OFFLINE") == "1" or (not local and not hub_reachable())
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=offline_only)
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=offline_only, attn_implementation="eager")
    except (OSError, ValueError) as err:
        if offline_only or "connect" in str(err).lower() or "offline" in str(err).lower():
            raise _offline_error(name) from None
        raise ModelLoadError(f"could not load {name!r}: {str(err).splitlines()[0]}") from None
    return model, tok


# What replaces each sublayer: SAEs everywhere, transcoders in place of MLP SAEs, or raw neurons.
COMPOSITIONS: dict[str, tuple[str, ...]] = {
    "sae": SAE_KINDS,
    "mixed": MIXED_KINDS,
    "transcoders": ("embed", "transcoder"),
}
NEURONS = "neurons"


def check_dictionaries(dictionaries: str | None) -> None:
    """Refuse, before any model is loaded, a dictionary-set folder that does not exist, is a file or
    has no index, and an empty name or release name."""
    from replacement.dictionaries import check_set_folder
    from replacement.errors import DictionaryError

    if dictionaries is None or dictionaries == NEURONS:
        return
    if not dictionaries.strip():
        raise DictionaryError("the dictionary set is an empty name; give a folder, 'neurons' or release:NAME")
    if dictionaries.startswith("release:"):
        if not dictionaries.split(":", 1)[1].strip():
            raise DictionaryError(
                f"{dictionaries!r} names no release; write release:NAME, e.g. release:gpt2-small-res-jb"
            )
        return
    check_set_folder(dictionaries)


def load_dictionaries(loaded: LoadedModel, dictionaries: str | None = None, composition: str | None = None):
    """The dictionary set named by ``dictionaries``: ``None`` (the shipped toy set, for the toy
    model), ``"neurons"`` (identity dictionaries: the neuron baseline), a folder, or
    ``"release:NAME"`` (a SAELens pretrained release), checked against the model (its hooks and
    widths: :meth:`~replacement.dictionaries.DictionarySet.validate_for`).

    ``composition`` (:data:`COMPOSITIONS`) keeps the sites it replaces; a set lacking any of them but
    the embedding is refused (:class:`ModelLoadError`). None keeps every site of the set.
    """
    from circuits.toy.model import shipped_dictionary_set
    from replacement.dictionaries import DictionarySet

    if composition is not None and composition not in COMPOSITIONS:
        raise ModelLoadError(f"unknown composition {composition!r}; expected one of {', '.join(COMPOSITIONS)}")
    wanted = COMPOSITIONS[composition] if composition is not None else None
    if dictionaries is None:
        if loaded.name != TOY:
            raise ModelLoadError(
                f"no default dictionaries for {loaded.name!r}: pass --dictionaries FOLDER, release:NAME or neurons"
            )
        dset = DictionarySet.load(shipped_dictionary_set(), device=loaded.device)
    elif dictionaries == NEURONS:
        dset = DictionarySet.identity(loaded.model, **({} if wanted is None else {"kinds": wanted}), name=NEURONS)
    elif dictionaries.startswith("release:"):
        dset = DictionarySet.from_pretrained(dictionaries.split(":", 1)[1], device=loaded.device, model=loaded.model)
    else:
        dset = DictionarySet.load(Path(dictionaries), device=loaded.device)
        try:
            dset.validate_for(loaded.model)
        except ReplacementError as err:
            raise type(err)(f"{dictionaries}: {err}") from None
    if wanted is None:
        return dset
    available = {s.kind for s in dset.sites}
    missing = [k for k in wanted if k not in available and k != "embed"]
    if missing:
        raise ModelLoadError(
            f"the dictionary set {dset.name!r} has no {', '.join(missing)} sites, which the composition {composition!r} "
            f"needs (it has {', '.join(sorted(available))})"
        )
    dset = dset.select(kinds=[k for k in wanted if k in available])
    dset.validate_for(loaded.model)
    return dset


def load_replacement(
    loaded: LoadedModel, dictionaries: str | None = None, composition: str = "sae"
) -> ReplacementModel:
    """A :class:`ReplacementModel` of ``loaded`` with the dictionaries of ``composition``
    (:func:`load_dictionaries`)."""
    return ReplacementModel(loaded.model, load_dictionaries(loaded, dictionaries, composition))


@dataclass
class Setup:
    """The model, the replacement model and the names a run records in circuit.json."""

    loaded: LoadedModel
    rm: ReplacementModel
    model_name: str
    dictionaries_name: str
    dictionaries_source: str


def load_setup(model: str, dictionaries: str | None, composition: str, device: str | None = None) -> Setup:
    """Load the model and the dictionaries of its composition (:func:`load_dictionaries`), the first
    phase of a run (the fields of :class:`circuits.app.config.ModelConfig`); a missing dictionary
    folder is reported before the model loads."""
    check_dictionaries(dictionaries)
    loaded = load_model(model, device=device)
    ds = load_dictionaries(loaded, dictionaries, composition)
    source = dictionaries if dictionaries is not None else "default"
    return Setup(loaded, ReplacementModel(loaded.model, ds), loaded.name, ds.name, source)
