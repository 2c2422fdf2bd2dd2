"""Dictionary sites: the one place that says where in a model each kind of dictionary sits.

A *site* is a place in the model where a dictionary reads an activation (``hook_in``) and writes
its reconstruction (``hook_out``): the same hook for an SAE, two hooks for a transcoder. Site names
end in their kind: ``embed``, ``L1.attn``, ``L1.mlp``, ``L1.resid``, ``L1.transcoder``. Adding a site
kind is one entry in :data:`SITE_KINDS`.

Order: sites are sorted by their position in the forward pass (embed, then per layer attn,
mlp | transcoder, resid), which is the order of the sparse feature graph's layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SiteKind:
    """A kind of site: hook name templates (``{layer}`` filled in) and its rank within a layer."""

    name: str
    hook_in: str
    hook_out: str
    per_layer: bool
    rank: int  # order inside a layer: attn 0, mlp/transcoder 1, resid 2; embed comes before layer 0
    description: str

    @property
    def is_transcoder(self) -> bool:
        return self.hook_in != self.hook_out


SITE_KINDS: dict[str, SiteKind] = {
    k.name: k
    for k in (
        SiteKind(
            "embed",
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_pre",
            False,
            -1,
            "token + position embedding (the residual stream entering layer 0)",
        ),
        SiteKind(
            "attn",
            "blocks.{layer}.hook_attn_out",
            "blocks.{layer}.hook_attn_out",
            True,
            0,
            "attention output of a layer",
        ),
        SiteKind("mlp", "blocks.{layer}.hook_mlp_out", "blocks.{layer}.hook_mlp_out", True, 1, "MLP output of a layer"),
        # The transcoder reads the MLP's own input (LayerNorm applied, affine included), so it
        # imitates the MLP function alone and, with LayerNorm scales frozen, feature-to-feature
        # edges through it are linear.
        SiteKind(
            "transcoder",
            "blocks.{layer}.ln2.hook_out",
            "blocks.{layer}.hook_mlp_out",
            True,
            1,
            "transcoder: MLP input -> MLP output",
        ),
        SiteKind(
            "resid",
            "blocks.{layer}.hook_resid_post",
            "blocks.{layer}.hook_resid_post",
            True,
            2,
            "residual stream after a layer",
        ),
    )
}

_NAME = re.compile(r"^(?:L(?P<layer>\d+)\.)?(?P<kind>[a-z_]+)$")


@dataclass(frozen=True)
class Site:
    """One dictionary site of a model."""

    kind: str
    layer: int  # -1 for embed

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ValueError(f"unknown site kind {self.kind!r}; known kinds: {', '.join(SITE_KINDS)}")
        per_layer = SITE_KINDS[self.kind].per_layer
        if per_layer and self.layer < 0:
            raise ValueError(f"site kind {self.kind!r} needs a layer >= 0")
        if not per_layer and self.layer != -1:
            raise ValueError(f"site kind {self.kind!r} has no layer")

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.kind}" if SITE_KINDS[self.kind].per_layer else self.kind

    @property
    def hook_in(self) -> str:
        return SITE_KINDS[self.kind].hook_in.format(layer=self.layer)

    @property
    def hook_out(self) -> str:
        return SITE_KINDS[self.kind].hook_out.format(layer=self.layer)

    @property
    def is_transcoder(self) -> bool:
        return SITE_KINDS[self.kind].is_transcoder

    @property
    def order(self) -> tuple[int, int]:
        """Sort key in forward-pass order."""
        return (self.layer, SITE_KINDS[self.kind].rank)

    @classmethod
    def parse(cls, name: str) -> Site:
        """``"L1.attn"`` -> Site("attn", 1); ``"embed"`` -> Site("embed", -1)."""
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"bad site name {name!r}; expected e.g. 'embed' or 'L1.attn'")
        layer = int(m["layer"]) if m["layer"] is not None else -1
        return cls(m["kind"], layer)

    def __str__(self) -> str:
        return self.name


def model_sites(n_layers: int, kinds: tuple[str, ...] = ("embed", "attn", "mlp", "resid")) -> list[Site]:
    """Every site of the given kinds in a model with ``n_layers`` layers, in forward order."""
    sites: list[Site] = []
    for kind in kinds:
        if SITE_KINDS[kind].per_layer:
            sites.extend(Site(kind, layer) for layer in range(n_layers))
        else:
            sites.append(Site(kind, -1))
    return sorted(sites, key=lambda s: s.order)


# Standard compositions of a dictionary set.
SAE_KINDS = ("embed", "attn", "mlp", "resid")
MIXED_KINDS = ("embed", "attn", "transcoder", "resid")
