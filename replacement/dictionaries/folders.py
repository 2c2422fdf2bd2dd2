"""Dictionaries on disk: one SAELens folder per dictionary, and the ``index.json`` of a set folder.

Everything here checks what it reads before SAELens sees it, so that a broken file is one
:class:`~replacement.errors.DictionaryError` naming the file rather than a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY

from replacement.dictionaries.protocol import check_finite, d_out_of
from replacement.errors import DictionaryError

INDEX_FILE = "index.json"
INDEX_FORMAT = "sparse-circuits/dictionary-set"
INDEX_VERSION = 1
SAE_CFG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"


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
            raise DictionaryError(
                f"{what}: {folder} is a file, not a folder; a dictionary folder holds {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE}"
            )
        raise DictionaryError(f"{what}: folder {folder} does not exist; fix the index or restore the folder")
    for f in (SAE_CFG_FILE, SAE_WEIGHTS_FILE):
        if not (folder / f).is_file():
            state = "is not a file" if (folder / f).exists() else "is missing"
            raise DictionaryError(
                f"{what}: {folder / f} {state}; a dictionary folder needs {SAE_CFG_FILE} and {SAE_WEIGHTS_FILE}"
            )
    cfg = _read_cfg(folder / SAE_CFG_FILE, what)
    _check_weight_shapes(folder / SAE_WEIGHTS_FILE, cfg, what)
    try:
        sae = SAE.load_from_disk(folder, device=str(device))
    except Exception as err:
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
        raise DictionaryError(
            f"{what}: {file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
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
            raise DictionaryError(
                f"{what}: k in {file} is {_short(k)}; a TopK dictionary needs 1 <= k <= d_sae ({cfg['d_sae']})"
            )
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
        raise DictionaryError(
            f"dictionary set {path} does not exist; give a folder written by `circuits dictionaries train`"
        )
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
