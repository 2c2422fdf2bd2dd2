"""The toy language: a seeded generator of an English-like corpus.

The language is small enough to train a model on in minutes, yet the constructions the
field studies occur in it with real variety:

- indirect object identification (IOI): 15 templates, each in ABBA and BABA order, with
  40 names, 32 places and 32 objects;
- subject-verb agreement (SVA): simple, across a prepositional phrase, within a relative
  clause and across a relative clause, with 20 noun pairs, 6 verb pairs, 6 prepositions
  and a second-noun list with both numbers (attractors);
- greater-than: "The war lasted from the year 17 32 to the year 17" with two-digit tokens;
- filler sentences of a dozen other shapes, so that it is a language and not five templates.

Text is written as space-separated words; punctuation and two-digit halves of years are
words of their own, so that every word is exactly one token of the word-level tokenizer.

Every generator takes a :class:`random.Random` and returns a :class:`Prompt`: the clean
prompt, its counterfactual, the schema spans, the answer and wrong-answer words, and the
continuation that completes the sentence in the training corpus. The word lists and templates
they draw from are in :mod:`circuits.toy.words`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from circuits.toy.words import (
    ADJECTIVES,
    CENTURIES,
    GT_NOUNS,
    IOI_TEMPLATES,
    NAMES,
    NOUNS,
    OBJECTS,
    PLACES,
    PP_NOUNS,
    PREPOSITIONS,
    RC_NOUNS,
    RC_VERBS,
    TWO_DIGITS,
    VERBS,
)


@dataclass
class Prompt:
    """One generated prompt with everything a task needs.

    ``spans`` are ``(name, first_word_index)`` in word coordinates of ``clean`` (without BOS),
    ordered, starting at 0; the last span holds the last word alone. ``answers`` and ``wrong``
    are the correct and counterfactual next words (several for greater-than).
    """

    clean: list[str]
    corrupted: list[str]
    spans: list[tuple[str, int]]
    answers: list[str]
    wrong: list[str]
    continuation: list[str] = field(default_factory=list)
    case: str = ""

    def training_sentence(self, rng: random.Random) -> list[str]:
        """The clean prompt completed with one correct answer and its continuation."""
        return self.clean + [rng.choice(self.answers)] + self.continuation


def _names(rng: random.Random, k: int, exclude: tuple[str, ...] = ()) -> list[str]:
    pool = [n for n in NAMES if n not in exclude]
    return rng.sample(pool, k)


def _fill(template: str, mapping: dict[str, str]) -> list[str]:
    return [mapping.get(w, w) for w in template.split()]


def generate_ioi(rng: random.Random, order: str | None = None, template: int | None = None) -> Prompt:
    """An IOI prompt ending in "to"; answer = IO, wrong = S; corrupted = ABC (three new names).

    Spans: prefix, IO, and, S1, S1+1, action1, S2, action2, end in ABBA order; in BABA order the
    first clause reads S1, and, IO and ``S1+1`` is the word after the name pair.
    """
    order = order or rng.choice(["ABBA", "BABA"])
    if order not in ("ABBA", "BABA"):
        raise ValueError(f"IOI order must be 'ABBA' or 'BABA', got {order!r}")
    t_index = rng.randrange(len(IOI_TEMPLATES)) if template is None else template
    words = IOI_TEMPLATES[t_index].split()
    io, s = _names(rng, 2)
    place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
    first, second = (io, s) if order == "ABBA" else (s, io)
    # Find the first clause's name pair ([B] and [A]) and the second mention of [B].
    i_b = words.index("[B]")
    i_s2 = len(words) - 1 - words[::-1].index("[B]")
    assert words[i_b + 1] == "and" and words[i_b + 2] == "[A]"
    prompt_words = words[:-1]  # drop the final [A]: the answer
    mapping_first = list(prompt_words)
    mapping_first[i_b] = first
    mapping_first[i_b + 2] = second
    mapping_first[i_s2] = s
    clean = _fill(" ".join(mapping_first), {"[PLACE]": place, "[OBJECT]": obj})
    # ABC counterfactual: the same frame with three names different from each other and from clean.
    a, b, c = _names(rng, 3, exclude=(io, s))
    corrupted = list(clean)
    corrupted[i_b], corrupted[i_b + 2], corrupted[i_s2] = a, b, c
    n = len(clean)
    first_name = "IO" if order == "ABBA" else "S1"
    second_name = "S1" if order == "ABBA" else "IO"
    spans = [
        ("prefix", 0),
        (first_name, i_b),
        ("and", i_b + 1),
        (second_name, i_b + 2),
        ("S1+1", i_b + 3),
        ("action1", i_b + 4),
        ("S2", i_s2),
        ("action2", i_s2 + 1),
        ("end", n - 1),
    ]
    return Prompt(clean, corrupted, spans, [io], [s], ["."], case=f"{order.lower()}_t{t_index}")


def _number(rng: random.Random) -> int:
    return rng.randrange(2)  # 0 singular, 1 plural


def _verb_and_continuation(rng: random.Random) -> tuple[tuple[str, str], list[str]]:
    forms, conts = rng.choice(VERBS)
    return forms, list(rng.choice(conts))


def _case(n: int) -> str:
    return "singular" if n == 0 else "plural"


def generate_sva(rng: random.Random, variant: str) -> Prompt:
    """A subject-verb agreement prompt; corrupted flips the number of the agreeing noun.

    Variants: ``simple`` ("The teachers" -> are), ``pp`` ("The teachers near the desk" -> are),
    ``within-rc`` ("The teacher that the dogs" -> like), ``across-rc`` ("The teachers that the
    dog likes" -> are).
    """
    noun = rng.choice(NOUNS)
    n = _number(rng)
    if variant == "simple":
        forms, cont = _verb_and_continuation(rng)
        clean = ["The", noun[n]]
        corrupted = ["The", noun[1 - n]]
        spans = [("prefix", 0), ("subj", 1)]
        answers, wrong = [forms[n]], [forms[1 - n]]
    elif variant == "pp":
        forms, cont = _verb_and_continuation(rng)
        prep, pp = rng.choice(PREPOSITIONS), rng.choice(PP_NOUNS)
        m = _number(rng)
        clean = ["The", noun[n], prep, "the", pp[m]]
        corrupted = ["The", noun[1 - n], prep, "the", pp[m]]
        spans = [("prefix", 0), ("subj", 1), ("prep", 2), ("det", 3), ("attractor", 4)]
        answers, wrong = [forms[n]], [forms[1 - n]]
    elif variant == "within-rc":
        rc_noun, rc_verb = rng.choice(RC_NOUNS), rng.choice(RC_VERBS)
        m = _number(rng)  # the relative clause's subject decides the verb
        forms, cont_main = _verb_and_continuation(rng)
        clean = ["The", noun[n], "that", "the", rc_noun[m]]
        corrupted = ["The", noun[n], "that", "the", rc_noun[1 - m]]
        spans = [("prefix", 0), ("subj", 1), ("that", 2), ("det", 3), ("rc_subj", 4)]
        answers, wrong = [rc_verb[m]], [rc_verb[1 - m]]
        cont = [forms[n]] + cont_main
        n = m
    elif variant == "across-rc":
        rc_noun, rc_verb = rng.choice(RC_NOUNS), rng.choice(RC_VERBS)
        m = _number(rng)
        forms, cont = _verb_and_continuation(rng)
        clean = ["The", noun[n], "that", "the", rc_noun[m], rc_verb[m]]
        corrupted = ["The", noun[1 - n], "that", "the", rc_noun[m], rc_verb[m]]
        spans = [("prefix", 0), ("subj", 1), ("that", 2), ("det", 3), ("rc_subj", 4), ("rc_verb", 5)]
        answers, wrong = [forms[n]], [forms[1 - n]]
    else:
        raise ValueError(f"unknown SVA variant {variant!r}; expected simple, pp, within-rc or across-rc")
    return Prompt(clean, corrupted, spans, answers, wrong, cont + ["."], case=_case(n))


def generate_greater_than(rng: random.Random) -> Prompt:
    """ "The war lasted from the year 17 32 to the year 17" -> a year above 32.

    Answers are every two-digit token above YY, wrong ones every token at or below it; the
    counterfactual start year is 01 (Hanna et al. 2023).
    """
    noun, century = rng.choice(GT_NOUNS), rng.choice(CENTURIES)
    yy = rng.randrange(2, 98)
    frame = ["The", noun, "lasted", "from", "the", "year", century]
    tail = ["to", "the", "year", century]
    clean = frame + [TWO_DIGITS[yy]] + tail
    corrupted = frame + ["01"] + tail
    spans = [("prefix", 0), ("XX1", 6), ("YY", 7), ("middle", 8), ("XX2", 11)]
    answers = TWO_DIGITS[yy + 1 :]
    wrong = TWO_DIGITS[: yy + 1]
    return Prompt(clean, corrupted, spans, answers, wrong, ["."], case=f"yy{yy:02d}")


# Filler: other shapes of sentence so that names, nouns, places, numbers and verbs appear
# outside the studied constructions.
def _filler(rng: random.Random) -> list[str]:
    name, other = _names(rng, 2)
    place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
    noun, n = rng.choice(NOUNS), _number(rng)
    forms, cont = _verb_and_continuation(rng)
    adj = rng.choice(ADJECTIVES)
    year = [rng.choice(CENTURIES), rng.choice(TWO_DIGITS)]
    shapes: list[Callable[[], list[str]]] = [
        lambda: [name, "went", "to", "the", place, "."],
        lambda: [name, "likes", "the", obj, "."],
        lambda: ["The", place, "was", adj, "."],
        lambda: ["The", noun[n], forms[n], *cont, "."],
        lambda: [name, "saw", "the", noun[n], "at", "the", place, "."],
        lambda: ["In", "the", "year", *year, ",", name, "built", "a", place, "."],
        lambda: [name, "and", other, "are", "friends", "."],
        lambda: [name, "found", "a", obj, "near", "the", place, "."],
        lambda: ["Then", ",", name, "had", "a", obj, "."],
        lambda: ["The", noun[n], "with", "the", obj, forms[n], *cont, "."],
        lambda: [name, "said", "that", "the", place, "was", adj, "."],
        lambda: ["The", rng.choice(GT_NOUNS), "ended", "in", "the", "year", *year, "."],
        lambda: [name, "gave", "the", obj, "back", "."],
    ]
    return rng.choice(shapes)()


# Share of each construction in the training corpus.
CORPUS_MIX: dict[str, float] = {
    "ioi": 0.30,
    "sva-simple": 0.08,
    "sva-pp": 0.12,
    "sva-within-rc": 0.10,
    "sva-across-rc": 0.12,
    "greater-than": 0.10,
    "filler": 0.18,
}

GENERATORS: dict[str, Callable[[random.Random], Prompt]] = {
    "ioi": generate_ioi,
    "sva-simple": lambda r: generate_sva(r, "simple"),
    "sva-pp": lambda r: generate_sva(r, "pp"),
    "sva-within-rc": lambda r: generate_sva(r, "within-rc"),
    "sva-across-rc": lambda r: generate_sva(r, "across-rc"),
    "greater-than": generate_greater_than,
}


def corpus_sentence(rng: random.Random) -> list[str]:
    """One sentence of the toy language, drawn from :data:`CORPUS_MIX`."""
    kind = rng.choices(list(CORPUS_MIX), weights=list(CORPUS_MIX.values()))[0]
    if kind == "filler":
        return _filler(rng)
    return GENERATORS[kind](rng).training_sentence(rng)


def generate_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of the toy language as strings; the same seed gives the same corpus."""
    rng = random.Random(seed)
    return [" ".join(corpus_sentence(rng)) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word the toy language can produce, sorted and without duplicates."""
    words: set[str] = set(NAMES) | set(PLACES) | set(OBJECTS) | set(ADJECTIVES)
    words |= set(PREPOSITIONS) | set(GT_NOUNS) | set(CENTURIES) | set(TWO_DIGITS)
    for pairs in (NOUNS, PP_NOUNS, RC_NOUNS, RC_VERBS):
        for pair in pairs:
            words |= set(pair)
    for forms, conts in VERBS:
        words |= set(forms)
        for c in conts:
            words |= set(c)
    for t in IOI_TEMPLATES:
        words |= {w for w in t.split() if not w.startswith("[")}
    # Words that only the filler, SVA and greater-than frames use.
    words |= set(
        [
            "The",
            "the",
            "a",
            "that",
            ".",
            ",",
            "to",
            "went",
            "likes",
            "was",
            "saw",
            "at",
            "In",
            "year",
            "built",
            "and",
            "are",
            "friends",
            "found",
            "near",
            "Then",
            "had",
            "with",
            "said",
            "ended",
            "in",
            "gave",
            "back",
            "lasted",
            "from",
        ]
    )
    return sorted(words)
