"""A few words saying what a feature's top-activating contexts have in common.

:func:`describe` reads the token at each context's maximum (and the tokens before it): one token
covering most contexts gives ``'Mary'``, a word class covering most gives its name (``names``,
``plural nouns``, ...), else the token before the maximum (``after 'the'``), else the most frequent
token with its share (``'to' 38%``). Word classes are a parameter: a model's vocabulary has none
unless its caller supplies them (the toy model's are :data:`circuits.toy.word_classes.WORD_CLASSES`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: ``(class name, words)`` pairs, most specific first.
WordClasses = Sequence[tuple[str, frozenset[str]]]

INACTIVE_LABEL = "inactive"


def describe(contexts: Sequence[Mapping[str, Any]], min_share: float = 0.5, *, word_classes: WordClasses = ()) -> str:
    """A few words saying what a feature's top contexts have in common.

    Each context's last token is the token of the maximum. In order: the one token at the maximum
    in more than ``min_share`` of the contexts (``'Mary'``), prefixed, when that token is punctuation or
    a function word, by a content word that occurs earlier in the window of more than ``min_share`` of
    the contexts (``'Ben'→'.'``: the feature reads a name from context at the full stop); else the first of ``word_classes``
    covering that share (for the toy model ``names``, ``places``, ``objects``, ``singular nouns``, ...; a
    capitalised word counts as its lower-case form, so ``'Teachers'`` is a plural noun); else the token (or class) just before the maximum (``after 'the'``,
    ``after names``); else the most frequent token at the maximum and its share (``'to' 38%``).
    No context with a positive activation gives ``inactive``.

    Ties between words of equal count go to the word that sorts first (Python string order), so the
    description depends only on the multiset of contexts, never on their order or on hash order.
    """
    used = [c for c in contexts if c.get("tokens") and float(c.get("max_act", 0.0)) > 0]
    if not used:
        return INACTIVE_LABEL
    n = len(used)
    at_max = [_word(c["tokens"][-1]) for c in used]
    token, count = _most_common(Counter(at_max))
    if count / n > min_share:
        if _is_content(token):
            return f"'{token}'"
        earlier = Counter(w for c in used for w in {_word(t) for t in c["tokens"][:-1]} if _is_content(w))
        if earlier:
            word, seen = _most_common(earlier)
            if seen / n > min_share:
                return f"'{word}'→'{token}'"
        return f"'{token}'"
    cls = _dominant_class(at_max, n, min_share, word_classes)
    if cls is not None:
        return cls
    before = [_word(c["tokens"][-2]) for c in used if len(c["tokens"]) >= 2]
    if before:
        prev, prev_count = _most_common(Counter(before))
        if prev_count / n > min_share:
            return f"after '{prev}'"
        prev_cls = _dominant_class(before, n, min_share, word_classes)
        if prev_cls is not None:
            return f"after {prev_cls}"
    return f"'{token}' {round(100 * count / n)}%"


def _most_common(counts: Counter[str]) -> tuple[str, int]:
    """The word of highest count, ties going to the word that sorts first.

    ``Counter.most_common`` breaks ties by insertion order, which for words gathered through a set
    follows the string hash and so changes from one process to the next.
    """
    return min(counts.items(), key=lambda item: (-item[1], item[0]))


FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "to",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "as",
        "that",
        "this",
        "it",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "then",
        "than",
        "so",
        "if",
        "when",
        "while",
        "after",
        "before",
        "there",
        "here",
        "he",
        "she",
        "they",
        "we",
        "you",
        "i",
    ]
)


def _is_content(word: str) -> bool:
    """A word that says something: alphanumeric and not a function word (punctuation and markers are not)."""
    return word.isalnum() and word.lower() not in FUNCTION_WORDS


def _word(token: str) -> str:
    """A token as shown in a label: surrounding whitespace removed, whitespace tokens made visible."""
    stripped = str(token).strip()
    return stripped if stripped else str(token).replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423")


def _dominant_class(words: Sequence[str], n: int, min_share: float, word_classes: WordClasses) -> str | None:
    """The first word class holding more than ``min_share`` of ``n`` contexts, if any."""
    for name, members in word_classes:
        hits = sum(1 for w in words if w in members or (w.lower() != w and w.lower() in members))
        if hits / n > min_share:
            return name
    return None
