"""A node's top-activating contexts in the report: each token shaded by its activation.

A context's tokens are shown as the tokenizer decodes them (``spacing``): tokens that carry their
own whitespace (byte-level BPE tokens decoded one at a time, ``" Mary"``) are put side by side, and
tokens that carry none (a word-level tokenizer such as the toy model's) get a space between them.
``spacing="auto"`` (the default) tells the two apart by looking at every token of every context: if
any of them starts or ends with whitespace the tokens carry their spacing, otherwise they do not
(:func:`token_spacing`); :func:`context_text` joins a context's tokens the same way as plain text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from viz._common import NodeInfo, esc

#: How the tokens of a context are joined (see the module docstring).
SPACINGS = ("auto", "words", "pieces")


def _token_html(token: str, act: float, max_act: float) -> str:
    """One token shaded by its activation relative to the context's maximum."""
    frac = act / max_act if max_act > 0 and math.isfinite(act) else 0.0
    frac = min(max(frac, 0.0), 1.0)
    shown = token.replace("\n", "↵").replace("\t", "⇥")
    style = f"background: rgba(33, 102, 172, {0.85 * frac:.3f});"
    if frac > 0.6:
        style += " color: #fff;"
    return f'<span class="tok" style="{style}" title="{esc(f"{act:.4g}")}">{esc(shown)}</span>'


def token_spacing(contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> str:
    """``"pieces"`` when some token of some context starts or ends with whitespace, else ``"words"``.

    Tokens decoded one at a time by a byte-level BPE tokenizer carry their spaces (``" Mary"``); a
    word-level tokenizer's tokens never do, and need a space put between them.
    """
    for items in (contexts or {}).values():
        for context in items:
            for token in context.get("tokens", []):
                token = str(token)
                if token and (token[0].isspace() or token[-1].isspace()):
                    return "pieces"
    return "words"


def _separator(spacing: str) -> str:
    """What goes between two tokens of a context under ``spacing`` (``"words"`` or ``"pieces"``)."""
    if spacing not in ("words", "pieces"):
        raise ValueError(f"unknown token spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return " " if spacing == "words" else ""


def context_text(tokens: Sequence[str], spacing: str = "words") -> str:
    """A context's tokens as plain text, joined as the report shows them (see :func:`token_spacing`)."""
    return _separator(spacing).join(str(t) for t in tokens)


def _one_context(context: Mapping[str, Any], spacing: str = "words") -> str:
    """One top-activating context as a line of shaded tokens, joined per ``spacing``.

    A separating space stays outside the tokens' shaded spans, so only the tokens are shaded and the
    line can wrap between words.
    """
    tokens = [str(t) for t in context.get("tokens", [])]
    acts = [float(a) for a in context.get("acts", [])]
    acts += [0.0] * (len(tokens) - len(acts))
    finite = [a for a in acts if math.isfinite(a)]
    max_act = float(context.get("max_act", max(finite, default=0.0)))
    scale = max(max(finite, default=0.0), max_act)
    spans = _separator(spacing).join(
        _token_html(t, a, scale) for t, a in zip(tokens, acts, strict=False)
    )  # extra acts are ignored
    return f'<div class="ctx"><span class="max">max {esc(f"{max_act:.3g}")}</span>{spans}</div>'


def contexts_section(
    infos: Sequence[NodeInfo],
    contexts: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    spacing: str = "auto",
) -> tuple[str, dict[str, str]]:
    """Each node's top-activating contexts; also the node id -> anchor map for the table."""
    if spacing != "auto":
        _separator(spacing)  # an unknown spacing is an error, contexts or not
    if not contexts:
        body = '<p class="note">No top-activating contexts were given.</p>'
        return (
            f'<section id="contexts"><h2>Top-activating contexts</h2>{body}</section>',
            {},
        )
    if spacing == "auto":
        spacing = token_spacing(contexts)
    by_id = {i.id: i for i in infos}
    ordered = sorted(
        (n for n in contexts if contexts[n]),
        key=lambda n: (-abs(by_id[n].effect) if n in by_id else 0.0, str(n)),
    )
    anchors = {str(n): f"ctx-{k}" for k, n in enumerate(ordered)}
    blocks = []
    for k, node_id in enumerate(ordered):
        info = by_id.get(str(node_id))
        label = f" — {info.label}" if info is not None and info.label else ""
        effect = f" (effect {info.effect:+.3g})" if info is not None else ""
        items = "".join(_one_context(c, spacing) for c in contexts[node_id])
        blocks.append(
            f'<details class="contexts" id="ctx-{k}"{" open" if k < 3 else ""}>'
            f"<summary><code>{esc(node_id)}</code>{esc(label)}{esc(effect)}</summary>"
            f"{items}</details>"
        )
    return (
        f'<section id="contexts"><h2>Top-activating contexts</h2>{"".join(blocks)}</section>',
        anchors,
    )
