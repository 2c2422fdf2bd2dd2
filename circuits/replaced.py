"""Loading a replacement model: a model plus a dictionary set, by name, as the CLI does it."""

from __future__ import annotations

from pathlib import Path

from circuits.errors import ModelLoadError
from circuits.models import TOY, LoadedModel
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
    """Refuse a dictionary-set folder that does not exist, before any model is loaded."""
    from replacement.dictionaries import check_set_folder

    if dictionaries is not None and dictionaries != NEURONS and not dictionaries.startswith("release:"):
        check_set_folder(dictionaries)


def load_dictionaries(loaded: LoadedModel, dictionaries: str | None = None):
    """The dictionary set named by ``dictionaries``: ``None`` (the shipped toy set, for the toy
    model), ``"neurons"`` (identity dictionaries: the neuron baseline), a folder, or
    ``"release:NAME"`` (a SAELens pretrained release)."""
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
    return DictionarySet.load(Path(dictionaries), device=loaded.device)


def load_replacement(loaded: LoadedModel, dictionaries: str | None = None, composition: str = "sae") -> ReplacementModel:
    """A :class:`ReplacementModel` of ``loaded`` with the chosen dictionaries and composition."""
    if composition not in COMPOSITIONS:
        raise ModelLoadError(f"unknown composition {composition!r}; expected one of {', '.join(COMPOSITIONS)}")
    dset = load_dictionaries(loaded, dictionaries)
    kinds = [k for k in COMPOSITIONS[composition] if any(s.kind == k for s in dset.sites)]
    dset.validate_for(loaded.model)
    return ReplacementModel(loaded.model, dset.select(kinds=kinds))
