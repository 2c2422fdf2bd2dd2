"""Loading a replacement model: a model plus a dictionary set, by name, as the CLI does it."""

from __future__ import annotations

from pathlib import Path

from circuits.errors import ModelLoadError
from circuits.models import TOY, LoadedModel
from replacement.errors import ReplacementError
from replacement.model import ReplacementModel
from replacement.sites import MIXED_KINDS, SAE_KINDS

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
            raise DictionaryError(f"{dictionaries!r} names no release; write release:NAME, e.g. release:gpt2-small-res-jb")
        return
    check_set_folder(dictionaries)


def load_dictionaries(loaded: LoadedModel, dictionaries: str | None = None):
    """The dictionary set named by ``dictionaries``: ``None`` (the shipped toy set, for the toy
    model), ``"neurons"`` (identity dictionaries: the neuron baseline), a folder, or
    ``"release:NAME"`` (a SAELens pretrained release). A folder's set is checked against the model
    (its hooks and widths: :meth:`~replacement.dictionaries.DictionarySet.validate_for`)."""
    from replacement.dictionaries import DictionarySet, shipped_toy_set

    if dictionaries is None:
        if loaded.name != TOY:
            raise ModelLoadError(
                f"no default dictionaries for {loaded.name!r}: pass --dictionaries FOLDER, release:NAME or neurons"
            )
        return DictionarySet.load(shipped_toy_set(), device=loaded.device)
    if dictionaries == NEURONS:
        return DictionarySet.identity(loaded.model)
    if dictionaries.startswith("release:"):
        return DictionarySet.from_pretrained(dictionaries.split(":", 1)[1], device=loaded.device, model=loaded.model)
    dset = DictionarySet.load(Path(dictionaries), device=loaded.device)
    try:
        dset.validate_for(loaded.model)
    except ReplacementError as err:
        raise type(err)(f"{dictionaries}: {err}") from None
    return dset


def load_replacement(loaded: LoadedModel, dictionaries: str | None = None, composition: str = "sae") -> ReplacementModel:
    """A :class:`ReplacementModel` of ``loaded`` with the chosen dictionaries and composition."""
    if composition not in COMPOSITIONS:
        raise ModelLoadError(f"unknown composition {composition!r}; expected one of {', '.join(COMPOSITIONS)}")
    dset = load_dictionaries(loaded, dictionaries)
    kinds = [k for k in COMPOSITIONS[composition] if any(s.kind == k for s in dset.sites)]
    dset.validate_for(loaded.model)
    return ReplacementModel(loaded.model, dset.select(kinds=kinds))
