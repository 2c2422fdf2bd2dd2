"""The toy language, its word-level tokenizer and the shipped toy model."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import torch

from circuits.data.tasks import make_task
from circuits.errors import TaskError, VocabularyError
from circuits.evaluation.behaviour import run_task
from circuits.toy import language, words
from circuits.toy.model import ToyModelConfig, ToyTrainConfig, train_model
from circuits.toy.tokenizer import WordTokenizer

BUILT_IN = ["ioi", "ioi-baba", "sva-simple", "sva-pp", "sva-within-rc", "sva-across-rc", "greater-than"]


# ----------------------------------------------------------------------------- the language


def test_corpus_is_seeded() -> None:
    assert language.generate_corpus(300, seed=5) == language.generate_corpus(300, seed=5)
    assert language.generate_corpus(300, seed=5) != language.generate_corpus(300, seed=6)


def test_every_generated_word_is_in_the_shipped_vocabulary(toy_tokenizer: WordTokenizer) -> None:
    words = Counter(w for s in language.generate_corpus(3000, seed=0) for w in s.split())
    for name, gen in language.GENERATORS.items():
        rng = random.Random(name)
        for _ in range(200):
            p = gen(rng)
            words.update(p.clean + p.corrupted + p.answers + p.wrong + p.continuation)
    unknown = sorted(w for w in words if w not in toy_tokenizer.vocab)
    assert not unknown
    assert set(language.vocabulary()) <= set(toy_tokenizer.vocab)


def test_the_shipped_tokenizer_is_the_one_built_from_the_language(toy_tokenizer: WordTokenizer) -> None:
    assert WordTokenizer.from_words(language.vocabulary()).vocab == toy_tokenizer.vocab


def test_word_lists_have_the_variety_the_language_promises() -> None:
    assert len(words.IOI_TEMPLATES) >= 10
    for pool in (words.NAMES, words.PLACES, words.OBJECTS):
        assert len(set(pool)) == len(pool) >= 30
    assert len(set(words.NOUNS)) >= 15
    assert len(words.VERBS) >= 4
    assert len(set(words.PREPOSITIONS)) >= 3
    assert len(words.PP_NOUNS) >= 5 and len(words.RC_NOUNS) >= 5  # second nouns
    # Second nouns come in both numbers and are not subjects, so they can be attractors.
    subjects = {w for pair in words.NOUNS for w in pair}
    assert not subjects & {w for pair in words.PP_NOUNS + words.RC_NOUNS for w in pair}
    assert all(sg != pl for sg, pl in words.NOUNS + words.PP_NOUNS + words.RC_NOUNS)


def test_ioi_generation_uses_every_template_in_both_orders_and_the_word_lists() -> None:
    rng = random.Random(0)
    prompts = [language.generate_ioi(rng, order) for _ in range(400) for order in ("ABBA", "BABA")]
    cases = Counter(p.case for p in prompts)
    for order in ("abba", "baba"):
        templates = {c for c in cases if c.startswith(order)}
        assert len(templates) == len(words.IOI_TEMPLATES) >= 10
    seen = Counter(w for p in prompts for w in p.clean)
    for pool in (words.NAMES, words.PLACES, words.OBJECTS):
        assert sum(1 for w in pool if seen[w]) >= 30
    with pytest.raises(ValueError, match="ABBA"):
        language.generate_ioi(rng, "AABB")


def test_sva_generation_uses_the_noun_verb_and_preposition_lists() -> None:
    rng = random.Random(0)
    pp = [language.generate_sva(rng, "pp") for _ in range(600)]
    subjects = {p.clean[1] for p in pp}
    pairs_seen = sum(1 for pair in words.NOUNS if set(pair) & subjects)
    assert pairs_seen >= 15
    assert len({p.clean[2] for p in pp}) >= 3  # prepositions
    verb_pairs = {tuple(sorted(p.answers + p.wrong)) for p in pp}
    assert len(verb_pairs) >= 4
    attractors = {p.clean[4] for p in pp}
    assert {sg for sg, _ in words.PP_NOUNS} & attractors and {pl for _, pl in words.PP_NOUNS} & attractors
    # The attractor's number is independent of the subject's: both match and mismatch occur.
    plural = {pl for _, pl in words.NOUNS + words.PP_NOUNS}
    agree = Counter((p.clean[1] in plural) == (p.clean[4] in plural) for p in pp)
    assert agree[True] > 100 and agree[False] > 100
    with pytest.raises(ValueError, match="unknown SVA variant"):
        language.generate_sva(rng, "across-pp")


def test_greater_than_years_are_two_digit_tokens() -> None:
    rng = random.Random(0)
    for _ in range(200):
        p = language.generate_greater_than(rng)
        century, yy = p.clean[6], p.clean[7]
        assert re.fullmatch(r"\d\d", century) and re.fullmatch(r"\d\d", yy)
        assert p.clean[-1] == century
        assert sorted(p.answers + p.wrong) == words.TWO_DIGITS


def test_training_sentences_complete_the_prompt_with_its_answer() -> None:
    rng = random.Random(1)
    p = language.generate_sva(rng, "across-rc")
    sentence = p.training_sentence(random.Random(2))
    assert sentence[: len(p.clean)] == p.clean
    assert sentence[len(p.clean)] in p.answers
    assert sentence[-1] == "."


# ----------------------------------------------------------------------------- the tokenizer


def test_tokenizer_prepends_bos_and_reads_words_digits_and_punctuation(toy_tokenizer: WordTokenizer) -> None:
    tok = toy_tokenizer
    ids = tok.encode("Then, John went to the store.")
    assert ids[0] == tok.bos_id
    assert tok.decode(ids) == "<bos> Then , John went to the store ."
    assert tok.encode("In the year 1732") == tok.encode("In the year 17 32")
    assert tok.encode("The teachers", bos=False) == [tok.token_id("The"), tok.token_id("teachers")]
    assert tok.decode([*tok.encode("John"), tok.pad_id, tok.pad_id]) == "<bos> John"


def test_unknown_words_are_an_error_that_names_them(toy_tokenizer: WordTokenizer) -> None:
    with pytest.raises(VocabularyError) as info:
        toy_tokenizer.encode("The teachers near the spaceship and the zeppelin", source="my.jsonl", line=4)
    msg = str(info.value)
    assert msg.startswith("my.jsonl, line 4: ")
    assert "'spaceship'" in msg and "'zeppelin'" in msg and "'teachers'" not in msg


def test_a_multi_word_answer_is_refused(toy_tokenizer: WordTokenizer) -> None:
    with pytest.raises(TaskError, match="2 tokens"):
        toy_tokenizer.token_id("is happy")


def test_encode_words_reports_where_each_word_starts(toy_tokenizer: WordTokenizer) -> None:
    ids, starts = toy_tokenizer.encode_words(["The", "war", "1732"])
    assert starts == [1, 2, 3] and len(ids) == 5  # "1732" is two tokens


def test_transformer_bridge_accepts_the_tokenizer(toy) -> None:
    text = "Then , John and Mary went to the park . John gave a ring to"
    assert toy.model.to_tokens(text)[0].tolist() == toy.tokenizer.encode(text)
    assert toy.model.tokenizer.pad_token_id == toy.tokenizer.pad_id
    assert toy.model.to_string(torch.tensor(toy.tokenizer.encode("Mary", bos=False))) == "Mary"


# ----------------------------------------------------------------------------- the shipped model


@pytest.mark.parametrize("name", BUILT_IN)
def test_shipped_model_solves_every_built_in_task(toy, name: str) -> None:
    task = make_task(name, toy.tokenizer, n=64, seed=1)
    result = run_task(toy.model, task, toy.tokenizer.pad_id)
    assert len(result.values) == 64
    assert result.accuracy >= 0.95
    assert result.logit_diff > 0
    assert result.accuracy == sum(v > 0 for v in result.values) / 64


def test_counterfactual_prompts_flip_the_model_towards_the_wrong_answer(toy) -> None:
    task = make_task("sva-pp", toy.tokenizer, n=32, seed=1)
    clean = run_task(toy.model, task, toy.tokenizer.pad_id)
    corrupted = run_task(toy.model, task, toy.tokenizer.pad_id, corrupted=True)
    assert corrupted.logit_diff < 0 < clean.logit_diff


def test_training_is_seeded() -> None:
    mcfg = ToyModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=24)
    tcfg = ToyTrainConfig(steps=3, batch_size=4, warmup=1)
    _, _, a = train_model(mcfg, tcfg, progress=False)
    _, _, b = train_model(mcfg, tcfg, progress=False)
    assert a == b and len(a) == 3
