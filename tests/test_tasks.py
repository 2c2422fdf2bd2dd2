"""Built-in tasks: seeded generation, schemas, answers and counterfactuals; the metrics."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.data.schema import Schema
from circuits.data.tasks import (
    TASKS,
    Example,
    Task,
    TaskSpec,
    available_tasks,
    make_batch,
    make_task,
    metric_per_example,
    register_task,
)
from circuits.errors import SchemaError, TaskError
from circuits.toy import language
from circuits.toy.tokenizer import WordTokenizer
from circuits.toy.words import NAMES, NOUNS, RC_NOUNS, RC_VERBS, VERBS

BUILT_IN = ["ioi", "ioi-baba", "sva-simple", "sva-pp", "sva-within-rc", "sva-across-rc", "greater-than"]
N_SCHEMA = 300  # examples per task in the coverage checks: several hundred, still fast


def test_every_built_in_task_of_the_issue_is_registered() -> None:
    assert set(BUILT_IN) <= set(available_tasks())
    assert TASKS["greater-than"].metric == "prob_diff"
    assert all(TASKS[n].metric == "logit_diff" for n in BUILT_IN if n != "greater-than")


def test_a_second_task_with_a_registered_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task(TaskSpec("ioi", language.generate_ioi, "logit_diff", "duplicate"))


@pytest.fixture(scope="module")
def big_tasks(toy_tokenizer: WordTokenizer) -> dict[str, Task]:
    return {name: make_task(name, toy_tokenizer, n=N_SCHEMA) for name in BUILT_IN}


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", BUILT_IN)
def test_tasks_are_deterministic_in_their_seed(toy_tokenizer: WordTokenizer, name: str) -> None:
    a = make_task(name, toy_tokenizer, n=40, seed=3)
    b = make_task(name, toy_tokenizer, n=40, seed=3)
    c = make_task(name, toy_tokenizer, n=40, seed=4)
    key = lambda t: [(e.clean, e.corrupted, e.answers, e.wrong, e.schema.starts) for e in t.examples]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_the_first_examples_do_not_depend_on_how_many_are_asked_for(toy_tokenizer: WordTokenizer) -> None:
    short = make_task("sva-pp", toy_tokenizer, n=10)
    long = make_task("sva-pp", toy_tokenizer, n=30)
    assert [e.clean for e in short.examples] == [e.clean for e in long.examples[:10]]


def test_unknown_task_and_empty_task_are_task_errors(toy_tokenizer: WordTokenizer) -> None:
    with pytest.raises(TaskError, match="unknown task 'ioi-typo'") as info:
        make_task("ioi-typo", toy_tokenizer)
    assert "sva-pp" in str(info.value)  # lists what exists
    with pytest.raises(TaskError, match="at least one example"):
        make_task("ioi", toy_tokenizer, n=0)


# ----------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name", BUILT_IN)
def test_schemas_cover_every_token_exactly_once(big_tasks: dict[str, Task], name: str) -> None:
    task = big_tasks[name]
    assert len(task) == N_SCHEMA
    for ex in task.examples:
        for toks, schema in ((ex.clean, ex.schema), (ex.corrupted, ex.corrupted_schema)):
            covered = [p for s in schema.spans for p in range(s.start, s.end)]
            assert covered == list(range(len(toks)))  # each position once, in order
            assert schema.length == len(toks)
            last = schema.spans[-1]
            assert (last.start, last.end) == (len(toks) - 1, len(toks))
        assert ex.schema.names == ex.corrupted_schema.names == task.span_names
        assert ex.clean[0] == ex.corrupted[0]  # BOS


@pytest.mark.parametrize("name", BUILT_IN)
def test_named_spans_hold_the_words_they_are_named_after(
    big_tasks: dict[str, Task], toy_tokenizer: WordTokenizer, name: str
) -> None:
    dec = toy_tokenizer.decode
    for ex in big_tasks[name].examples[:50]:
        span = {s.name: dec(ex.clean[s.start : s.end]) for s in ex.schema.spans}
        assert span["prefix"].startswith("<bos>")
        if name.startswith("ioi"):
            assert span["IO"] == ex.answer_texts[0] and span["S1"] == span["S2"] == ex.wrong_texts[0]
            assert span["and"] == "and" and span["end"] == "to"
        elif name.startswith("sva"):
            assert span["prefix"] == "<bos> The"
        else:
            assert span["XX1"] == span["XX2"] and span["YY"] == ex.case[2:]


# ----------------------------------------------------------------------------- answers and counterfactuals


@pytest.mark.parametrize("name", ["ioi", "ioi-baba"])
def test_ioi_answer_is_the_io_name_and_the_counterfactual_is_abc(
    big_tasks: dict[str, Task], toy_tokenizer: WordTokenizer, name: str
) -> None:
    names = set(NAMES)
    for ex in big_tasks[name].examples:
        words = toy_tokenizer.decode(ex.clean[1:]).split()
        io, s = ex.answer_texts[0], ex.wrong_texts[0]
        assert [toy_tokenizer.token_id(io)] == ex.answers and [toy_tokenizer.token_id(s)] == ex.wrong
        clean_names = [w for w in words if w in names]
        assert sorted(clean_names) == sorted([io, s, s])  # IO once, S twice
        order = "ABBA" if clean_names[0] == io else "BABA"
        assert order == ("BABA" if name == "ioi-baba" else "ABBA")
        corrupted_words = toy_tokenizer.decode(ex.corrupted[1:]).split()
        abc = [w for w in corrupted_words if w in names]
        assert len(abc) == 3 and len(set(abc)) == 3  # three different names
        assert not set(abc) & {io, s}
        # Only the names differ between clean and corrupted.
        assert [w for w in words if w not in names] == [w for w in corrupted_words if w not in names]


SVA_AGREEING_SPAN = {"sva-simple": "subj", "sva-pp": "subj", "sva-across-rc": "subj", "sva-within-rc": "rc_subj"}


@pytest.mark.parametrize("name", list(SVA_AGREEING_SPAN))
def test_sva_counterfactual_flips_the_number_of_the_agreeing_noun(
    big_tasks: dict[str, Task], toy_tokenizer: WordTokenizer, name: str
) -> None:
    number = {}
    for pairs in (NOUNS, RC_NOUNS):
        for sg, pl in pairs:
            number[sg], number[pl] = 0, 1
    verbs = [forms for forms, _ in VERBS] + RC_VERBS
    other_form = {f[i]: f[1 - i] for f in verbs for i in (0, 1)}
    for ex in big_tasks[name].examples:
        span = next(s for s in ex.schema.spans if s.name == SVA_AGREEING_SPAN[name])
        clean_noun = toy_tokenizer.decode(ex.clean[span.start : span.end])
        corrupted_noun = toy_tokenizer.decode(ex.corrupted[span.start : span.end])
        assert number[clean_noun] != number[corrupted_noun]
        assert ex.case == ("plural" if number[clean_noun] else "singular")
        # Everything else is unchanged, and the wrong answer is the other form of the right one.
        diff = [i for i, (a, b) in enumerate(zip(ex.clean, ex.corrupted)) if a != b]
        assert diff == [span.start]
        assert other_form[ex.answer_texts[0]] == ex.wrong_texts[0]


def test_greater_than_answers_and_wrong_partition_the_two_digit_tokens(
    big_tasks: dict[str, Task], toy_tokenizer: WordTokenizer
) -> None:
    two_digit = {toy_tokenizer.token_id(f"{i:02d}") for i in range(100)}
    assert len(two_digit) == 100
    for ex in big_tasks["greater-than"].examples:
        yy = int(ex.case[2:])
        assert set(ex.answers) | set(ex.wrong) == two_digit
        assert not set(ex.answers) & set(ex.wrong)
        assert ex.answer_texts == [f"{i:02d}" for i in range(yy + 1, 100)]
        assert ex.wrong_texts == [f"{i:02d}" for i in range(yy + 1)]
        yy_span = next(s for s in ex.schema.spans if s.name == "YY")
        assert toy_tokenizer.decode(ex.corrupted[yy_span.start : yy_span.end]) == "01"


# ----------------------------------------------------------------------------- metrics


def _example(clean: list[int], answers: list[int], wrong: list[int]) -> Example:
    schema = Schema.from_starts(["prefix", "end"], [0, len(clean) - 1], len(clean))
    return Example(clean, list(clean), answers, wrong, schema, schema)


def test_logit_diff_on_hand_made_logits() -> None:
    ex = _example([1, 5, 6], answers=[2], wrong=[3])
    batch = make_batch([ex], 0, ("prefix", "end"), "logit_diff")
    logits = torch.zeros(1, 3, 8)
    logits[0, 2, 2], logits[0, 2, 3] = 4.5, 1.25
    logits[0, 1, 2] = 100.0  # another position: must not be read
    assert metric_per_example(logits, batch).tolist() == [pytest.approx(3.25)]


def test_logit_diff_with_several_answers_compares_means() -> None:
    ex = _example([1, 5], answers=[2, 4], wrong=[3])
    batch = make_batch([ex], 0, ("prefix", "end"), "logit_diff")
    logits = torch.zeros(1, 2, 8)
    logits[0, 1, 2], logits[0, 1, 4], logits[0, 1, 3] = 3.0, 1.0, 0.5
    assert metric_per_example(logits, batch).item() == pytest.approx((3.0 + 1.0) / 2 - 0.5)


def test_prob_diff_on_hand_made_logits() -> None:
    ex = _example([1, 5, 6], answers=[0, 1], wrong=[2, 3])
    batch = make_batch([ex], 7, ("prefix", "end"), "prob_diff")
    logits = torch.zeros(1, 3, 4)
    logits[0, 2] = torch.tensor([0.0, math.log(2.0), math.log(3.0), math.log(4.0)])
    # probabilities 1/10, 2/10, 3/10, 4/10: (0.1 + 0.2) - (0.3 + 0.4)
    assert metric_per_example(logits, batch).item() == pytest.approx(-0.4)


def test_metric_reads_each_examples_own_last_token_under_right_padding() -> None:
    short, long = _example([1, 5], [2], [3]), _example([1, 5, 6, 7], [3], [2])
    batch = make_batch([short, long], 0, ("prefix", "end"), "logit_diff")
    assert batch.clean.tolist() == [[1, 5, 0, 0], [1, 5, 6, 7]]
    assert batch.clean_lengths.tolist() == [2, 4]
    logits = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    expected = [
        (logits[0, 1, 2] - logits[0, 1, 3]).item(),
        (logits[1, 3, 3] - logits[1, 3, 2]).item(),
    ]
    assert metric_per_example(logits, batch).tolist() == pytest.approx(expected)


def test_padded_batch_gives_the_same_values_as_one_example_at_a_time(toy, toy_tokenizer: WordTokenizer) -> None:
    task = make_task("ioi", toy_tokenizer, n=12)
    lengths = {len(e.clean) for e in task.examples}
    assert len(lengths) > 1, "the check needs prompts of different lengths"
    pad = toy.tokenizer.pad_id
    with torch.no_grad():
        batch = task.batch(pad)
        together = metric_per_example(toy.model(batch.clean), batch)
        alone = []
        for ex in task.examples:
            b = task.batch(pad, [ex])
            alone.append(metric_per_example(toy.model(b.clean), b).item())
    assert together.tolist() == pytest.approx(alone, abs=1e-4)


def test_batch_span_map_lines_up_clean_and_corrupted_by_name(toy_tokenizer: WordTokenizer) -> None:
    task = make_task("ioi", toy_tokenizer, n=8)
    batch = task.batch(toy_tokenizer.pad_id)
    assert batch.span_names == task.span_names
    for row, ex in enumerate(task.examples):
        n = len(ex.clean)
        assert batch.clean_span[row, :n].tolist() == ex.schema.span_index()
        assert (batch.clean_span[row, n:] == -1).all()
        assert batch.clean_span[row, n - 1].item() == len(task.span_names) - 1


def test_task_refuses_examples_with_other_span_names(toy_tokenizer: WordTokenizer) -> None:
    a = make_task("sva-simple", toy_tokenizer, n=2).examples
    b = make_task("sva-pp", toy_tokenizer, n=1).examples
    with pytest.raises(SchemaError, match="line 3") as info:
        Task("mixed", a + b)
    assert "differ from the first example's" in str(info.value)


def test_task_refuses_an_unknown_metric_and_splits_in_two(toy_tokenizer: WordTokenizer) -> None:
    task = make_task("sva-simple", toy_tokenizer, n=10)
    with pytest.raises(TaskError, match="unknown metric 'kl'"):
        Task("t", task.examples, "kl")
    first, rest = task.split(4)
    assert len(first) == 4 and len(rest) == 6
    assert first.examples + rest.examples == task.examples
    with pytest.raises(TaskError, match="cannot split"):
        task.split(10)
