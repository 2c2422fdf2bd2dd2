"""Schemas: ordered, named spans that cover a prompt once, the last token alone."""

from __future__ import annotations

import pytest

from circuits.data.schema import Schema, Span, per_token_schema
from circuits.errors import SchemaError, TaskError


def spans(*triples: tuple[str, int, int]) -> tuple[Span, ...]:
    return tuple(Span(n, s, e) for n, s, e in triples)


def test_a_valid_schema_maps_each_position_to_its_span() -> None:
    s = Schema(spans(("prefix", 0, 2), ("subj", 2, 4), ("end", 4, 5)), 5)
    assert s.names == ("prefix", "subj", "end")
    assert s.starts == (0, 2, 4)
    assert s.span_index() == [0, 0, 1, 1, 2]
    assert [s.span_of(p) for p in range(5)] == ["prefix", "prefix", "subj", "subj", "end"]
    assert len(s) == 3


def test_from_starts_ends_each_span_where_the_next_begins() -> None:
    s = Schema.from_starts(["a", "b", "c"], [0, 3, 6], 7)
    assert [(x.name, x.start, x.end) for x in s.spans] == [("a", 0, 3), ("b", 3, 6), ("c", 6, 7)]


def test_per_token_schema_gives_every_token_its_own_span() -> None:
    s = per_token_schema(4)
    assert s.names == ("t0", "t1", "t2", "end")
    assert s.span_index() == [0, 1, 2, 3]
    one = per_token_schema(1)
    assert one.names == ("end",) and one.length == 1


@pytest.mark.parametrize(
    "bad, words",
    [
        (spans(("a", 0, 3), ("b", 2, 4), ("end", 4, 5)), ["overlap", "'a'", "'b'"]),
        (spans(("a", 0, 2), ("b", 3, 4), ("c", 2, 3), ("end", 4, 5)), ["out of order", "'c'", "'b'"]),
        (spans(("a", 0, 2), ("b", 3, 4), ("end", 4, 5)), ["not covered", "2..2"]),
        (spans(("a", 1, 2), ("b", 2, 4), ("end", 4, 5)), ["not covered", "0..0"]),
        (spans(("a", 0, 3), ("end", 3, 5)), ["last token alone", "'end'"]),
        (spans(("a", 0, 2), ("end", 2, 3)), ["not covered", "3..4"]),
        (spans(("a", 0, 2), ("end", 2, 6)), ["past the prompt"]),
        (spans(("a", 0, 2), ("b", 2, 2), ("end", 2, 5)), ["empty", "'b'"]),
        (spans(("a", 0, 2), ("a", 2, 4), ("end", 4, 5)), ["repeat", "a"]),
        ((), ["no spans"]),
    ],
    ids=[
        "overlap",
        "out-of-order",
        "gap",
        "start-uncovered",
        "last-not-alone",
        "end-uncovered",
        "past-end",
        "empty-span",
        "repeated-name",
        "no-spans",
    ],
)
def test_bad_schemas_are_refused_saying_what_is_wrong(bad: tuple[Span, ...], words: list[str]) -> None:
    length = 5 if bad else 1
    with pytest.raises(SchemaError) as info:
        Schema(bad, length)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "starts, length, words",
    [
        ([0, 2, 2, 4], 5, ["overlap", "'b'", "'c'", "token 2"]),
        ([0, 3, 2, 4], 5, ["out of order", "'c'", "'b'"]),
        ([1, 2, 3, 4], 5, ["not covered", "first span 'a'"]),
        ([0, 1, 2, 3], 5, ["last token alone", "'d'", "holds 2"]),
        ([0, 1, 2, 5], 5, ["'d'", "past the prompt"]),
        ([0, 1, 2], 5, ["4 span names but 3"]),
    ],
    ids=["overlap", "out-of-order", "uncovered", "last-not-alone", "past-end", "count-mismatch"],
)
def test_from_starts_errors_name_the_file_and_line(starts: list[int], length: int, words: list[str]) -> None:
    with pytest.raises(SchemaError) as info:
        Schema.from_starts(["a", "b", "c", "d"], starts, length, source="spans.csv", line=7)
    msg = str(info.value)
    assert msg.startswith("spans.csv, line 7: ")
    assert info.value.source == "spans.csv" and info.value.line == 7
    for w in words:
        assert w in msg


def test_schema_error_is_a_task_error() -> None:
    """Callers that catch TaskError (the CLI, make_task) also catch bad schemas."""
    assert issubclass(SchemaError, TaskError)
