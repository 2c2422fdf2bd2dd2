"""The toy language's word classes, used to label features of the toy model only.

:data:`WORD_CLASSES` lists ``(class name, words)`` pairs, most specific first: ``names``,
``places``, ``objects``, ``singular nouns``, ``plural nouns``, ``singular verbs``, ``plural verbs``,
``numbers``, ``prepositions``, ``adjectives``, ``nouns``, ``verbs``. They are what
:func:`circuits.labels.describe.describe` is given as ``word_classes`` for the toy model (a feature
whose top tokens are mostly names reads ``names``); other models' vocabularies get none.
"""

from __future__ import annotations

from circuits.toy import words


def _word_classes() -> list[tuple[str, frozenset[str]]]:
    """Word classes of the toy language, most specific first."""
    singular_nouns = {s for pairs in (words.NOUNS, words.PP_NOUNS, words.RC_NOUNS) for s, _ in pairs}
    singular_nouns |= set(words.PLACES) | set(words.OBJECTS) | set(words.GT_NOUNS)
    plural_nouns = {p for pairs in (words.NOUNS, words.PP_NOUNS, words.RC_NOUNS) for _, p in pairs}
    singular_verbs = {forms[0] for forms, _ in words.VERBS} | {s for s, _ in words.RC_VERBS}
    plural_verbs = {forms[1] for forms, _ in words.VERBS} | {p for _, p in words.RC_VERBS}
    other_verbs = {
        "went",
        "gave",
        "give",
        "said",
        "saw",
        "built",
        "found",
        "had",
        "ended",
        "lasted",
        "decided",
        "wanted",
        "got",
    }
    classes = [
        ("names", set(words.NAMES)),
        ("places", set(words.PLACES)),
        ("objects", set(words.OBJECTS)),
        ("singular nouns", singular_nouns),
        ("plural nouns", plural_nouns),
        ("singular verbs", singular_verbs),
        ("plural verbs", plural_verbs),
        ("numbers", set(words.TWO_DIGITS)),
        ("prepositions", set(words.PREPOSITIONS)),
        ("adjectives", set(words.ADJECTIVES)),
        ("nouns", singular_nouns | plural_nouns),
        ("verbs", singular_verbs | plural_verbs | other_verbs),
    ]
    return [(name, frozenset(words)) for name, words in classes]


WORD_CLASSES: list[tuple[str, frozenset[str]]] = _word_classes()
