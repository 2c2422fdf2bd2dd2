"""The HuggingFace hub: whether it can be reached, and dictionaries from SAELens pretrained releases."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import torch
from sae_lens import SAE

from replacement.dictionaries.protocol import check_finite
from replacement.errors import DictionaryError
from replacement.sites import SITE_KINDS, Site


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick HTTP request to the endpoint the HuggingFace libraries will use, so that an offline
    machine fails at once instead of going through their retries.

    An HTTP request rather than a bare TCP connection: it goes through the proxy settings the hub
    client also honours, and an interceptor that accepts connections but never answers as a web
    server does not pass for the hub. Any answer but a server error or rate limit counts as reachable.
    """
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    from huggingface_hub import constants

    try:
        with urlopen(Request(constants.ENDPOINT, method="HEAD"), timeout=timeout):
            return True
    except HTTPError as err:
        return err.code < 500 and err.code != 429
    except (URLError, OSError, ValueError):
        return False


def site_for_hooks(hook_in: str | None, hook_out: str | None = None) -> Site:
    """The site a dictionary trained on ``hook_in`` (-> ``hook_out``) belongs to."""
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


def pretrained_dictionaries(
    release: str, sae_ids: Sequence[str] | None, device: torch.device
) -> tuple[dict[Site, SAE], dict[str, Any]]:
    """The SAEs of a SAELens pretrained release by site (``sae_ids``: some of them, default all), and
    the set's info; see :meth:`~replacement.dictionaries.DictionarySet.from_pretrained`."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise DictionaryError(
            f"the SAELens release {release!r} cannot be downloaded: the HuggingFace hub is not reachable "
            f"from this machine (use a local dictionary-set folder or the shipped toy set instead)"
        )
    directory = get_pretrained_saes_directory()
    if release not in directory:
        near = sorted(r for r in directory if release.split("-")[0] in r)[:8]
        raise DictionaryError(
            f"{release!r} is not a SAELens pretrained release" + (f"; similar names: {', '.join(near)}" if near else "")
        )
    lookup = directory[release]
    ids = list(sae_ids) if sae_ids is not None else list(lookup.saes_map)
    missing = [i for i in ids if i not in lookup.saes_map]
    if missing:
        raise DictionaryError(
            f"release {release!r} has no SAE {missing[0]!r}; it has {', '.join(list(lookup.saes_map)[:6])}, ..."
        )
    dicts: dict[Site, SAE] = {}
    for sae_id in ids:
        try:
            sae = SAE.from_pretrained(release, sae_id, device=str(device))
        except Exception as err:
            raise DictionaryError(
                f"could not load SAE {sae_id!r} of release {release!r}: {str(err).splitlines()[0]}"
            ) from None
        site = site_for_hooks(sae.cfg.metadata.hook_name, getattr(sae.cfg.metadata, "hook_name_out", None))
        check_finite(sae, f"SAE {sae_id!r} of release {release!r}")
        if site in dicts:
            raise DictionaryError(f"release {release!r}: SAEs for site {site.name} appear twice; pick sae_ids")
        dicts[site] = sae
    return dicts, {"release": release, "model": lookup.model}
