"""A user's own tasks: Sparse-Feature-Circuits JSONL and schema CSV, round trips and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from circuits.data.taskfile import load_task, read_schema_csv, save_task
from circuits.data.tasks import Task, make_task
from circuits.errors import SchemaError, TaskError, VocabularyError
from circuits.toy.tokenizer import WordTokenizer

BUILT_IN = ["ioi", "ioi-baba", "sva-simple", "sva-pp", "sva-within-rc", "sva-across-rc", "greater-than"]

SFC_LINES = [
    {
        "clean_prefix": "The teachers near the desk",
        "patch_prefix": "The teacher near the desk",
        "clean_answer": " are",
        "patch_answer": " is",
        "case": "plural_singular",
    },
    {
        "clean_prefix": "The doctor behind the cars",
        "patch_prefix": "The doctors behind the cars",
        "clean_answer": " is",
        "patch_answer": " are",
        "case": "singular_plural",
    },
]
SFC_SCHEMA = "prompt,prefix,subj,prep,det,attractor,length\n" + "".join(
    f"{r['clean_prefix']},0,2,3,4,5,6\n" for r in SFC_LINES
)


def _content(task: Task) -> list[tuple]:
    return [
        (e.clean, e.corrupted, e.answers, e.wrong, e.schema, e.corrupted_schema, e.clean_text, e.corrupted_text, e.case)
        for e in task.examples
    ]


@pytest.mark.parametrize("name", BUILT_IN)
def test_jsonl_and_schema_csv_round_trip(tmp_path: Path, toy_tokenizer: WordTokenizer, name: str) -> None:
    task = make_task(name, toy_tokenizer, n=20)
    paths = tmp_path / "t.jsonl", tmp_path / "t_schema.csv", tmp_path / "t_corrupted_schema.csv"
    save_task(task, *paths)
    loaded = load_task(
        paths[0], toy_tokenizer, schema=paths[1], corrupted_schema=paths[2], metric=task.metric, name=name
    )
    assert loaded.name == name and loaded.metric == task.metric
    assert loaded.span_names == task.span_names
    assert _content(loaded) == _content(task)
    # With the clean schema alone, counterfactuals of the same length share it.
    again = load_task(paths[0], toy_tokenizer, schema=paths[1], metric=task.metric)
    assert _content(again) == _content(task)
    # And saving the loaded task writes the same files.
    save_task(again, tmp_path / "u.jsonl", tmp_path / "u_schema.csv")
    assert (tmp_path / "u.jsonl").read_text() == paths[0].read_text()
    assert (tmp_path / "u_schema.csv").read_text() == paths[1].read_text()


def test_saved_files_are_in_the_public_formats(tmp_path: Path, toy_tokenizer: WordTokenizer) -> None:
    task = make_task("greater-than", toy_tokenizer, n=3)
    save_task(task, tmp_path / "gt.jsonl", schema=tmp_path / "gt.csv")
    first = json.loads((tmp_path / "gt.jsonl").read_text().splitlines()[0])
    ex = task.examples[0]
    assert first["clean_prefix"] == ex.clean_text and first["patch_prefix"] == ex.corrupted_text
    assert first["clean_answer"] == " " + ex.answer_texts[0]  # answers carry their leading space
    assert first["clean_answers"] == [" " + a for a in ex.answer_texts]
    assert first["patch_answers"] == [" " + w for w in ex.wrong_texts]
    header, row = (tmp_path / "gt.csv").read_text().splitlines()[:2]
    assert header == "prompt,prefix,XX1,YY,middle,XX2,length"
    assert row == f"{ex.clean_text},0,7,8,9,12,13"


def test_a_hand_written_sfc_file_loads(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES, "rc.jsonl")
    task = load_task(path, toy_tokenizer)
    assert task.name == "rc" and len(task) == 2 and task.metric == "logit_diff"
    ex = task.examples[0]
    assert ex.clean == toy_tokenizer.encode("The teachers near the desk")
    assert ex.corrupted == toy_tokenizer.encode("The teacher near the desk")
    assert ex.answers == [toy_tokenizer.token_id("are")] and ex.wrong == [toy_tokenizer.token_id("is")]
    assert ex.case == "plural_singular"
    assert task.span_names == ("t0", "t1", "t2", "t3", "t4", "end")  # no schema file: one span per token
    with_schema = load_task(path, toy_tokenizer, schema=write_text(SFC_SCHEMA, "rc_schema.csv"))
    assert with_schema.span_names == ("prefix", "subj", "prep", "det", "attractor")
    assert [(s.start, s.end) for s in with_schema.examples[1].schema.spans] == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(
    write_jsonl: Callable, toy_tokenizer: WordTokenizer
) -> None:
    bad = dict(SFC_LINES[0], clean_answer=" are happy")
    path = write_jsonl([SFC_LINES[0], "", "   ", bad])
    with pytest.raises(TaskError, match=r"line 4: "):
        load_task(path, toy_tokenizer)


def test_prompts_of_different_lengths_line_up_through_their_schemas(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    # "1732" is two tokens, "01" one: the counterfactual is one token shorter.
    line = {
        "clean_prefix": "The war lasted from the year 1732 to the year 17",
        "patch_prefix": "The war lasted from the year 01 to the year 17",
        "clean_answer": " 33",
        "patch_answer": " 31",
    }
    path = write_jsonl([line])
    clean = write_text(f"prompt,prefix,year,middle,end,length\n{line['clean_prefix']},0,7,9,12,13\n", "c.csv")
    corrupted = write_text(f"prompt,prefix,year,middle,end,length\n{line['patch_prefix']},0,7,8,11,12\n", "p.csv")
    task = load_task(path, toy_tokenizer, schema=clean, corrupted_schema=corrupted)
    ex = task.examples[0]
    assert len(ex.clean) == 13 and len(ex.corrupted) == 12
    assert [len(s) for s in ex.schema.spans] == [7, 2, 3, 1] and [len(s) for s in ex.corrupted_schema.spans] == [
        7,
        1,
        3,
        1,
    ]
    assert ex.schema.names == ex.corrupted_schema.names
    # Without the counterfactual's schema, the length difference is an error saying what to add.
    with pytest.raises(SchemaError, match="different lengths need") as info:
        load_task(path, toy_tokenizer, schema=clean)
    assert str(path) in str(info.value) and "line 1" in str(info.value)
    with pytest.raises(SchemaError, match="different lengths need"):
        load_task(path, toy_tokenizer)


# ----------------------------------------------------------------------------- bad input


def _assert_names(err: pytest.ExceptionInfo, path: Path, line: int, *words: str) -> None:
    msg = str(err.value)
    assert msg.startswith(f"{path}, line {line}: "), msg
    assert err.value.source == str(path) and err.value.line == line
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg


def test_multi_token_answer(write_jsonl: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl([SFC_LINES[0], dict(SFC_LINES[1], patch_answer=" are happy")])
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 2, "' are happy'", "2 tokens", "must be one")


@pytest.mark.parametrize("field", ["clean_prefix", "patch_prefix", "clean_answer", "patch_answer"])
def test_missing_field(write_jsonl: Callable, toy_tokenizer: WordTokenizer, field: str) -> None:
    broken = {k: v for k, v in SFC_LINES[1].items() if k != field}
    path = write_jsonl([SFC_LINES[0], SFC_LINES[0], broken])
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 3, "missing field", repr(field))


def test_field_of_the_wrong_type(write_jsonl: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl([dict(SFC_LINES[0], clean_answer=7)])
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 1, "'clean_answer'", "must be a string")


def test_missing_schema_column(write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl(SFC_LINES)
    schema = write_text(SFC_SCHEMA.replace(",length", "", 1), "no_length.csv")
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer, schema=schema)
    _assert_names(err, schema, 1, "missing column 'length'")


def test_unknown_word(write_jsonl: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl([SFC_LINES[0], dict(SFC_LINES[1], patch_prefix="The doctors behind the spaceship")])
    with pytest.raises(VocabularyError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 2, "not in the vocabulary", "'spaceship'")
    assert isinstance(err.value, TaskError)


def test_unknown_answer_word(write_jsonl: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl([dict(SFC_LINES[0], clean_answer=" sparkle")])
    with pytest.raises(VocabularyError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 1, "'sparkle'")


def test_clean_and_corrupted_schemas_with_different_span_names(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES)
    clean = write_text(SFC_SCHEMA, "clean.csv")
    corrupted_csv = "prompt,prefix,subject,prep,det,attractor,length\n" + "".join(
        f"{r['patch_prefix']},0,2,3,4,5,6\n" for r in SFC_LINES
    )
    corrupted = write_text(corrupted_csv, "patch.csv")
    with pytest.raises(SchemaError) as err:
        load_task(path, toy_tokenizer, schema=clean, corrupted_schema=corrupted)
    _assert_names(err, path, 1, "different span names", "'subj'", "'subject'")


@pytest.mark.parametrize(
    "starts, words",
    [
        ("0,2,2,4,5", ["'subj' and 'prep' overlap"]),
        ("0,3,2,4,5", ["out of order", "'prep'", "'subj'"]),
        ("1,2,3,4,5", ["not covered", "0..0"]),
        ("0,1,2,3,4", ["last token alone", "'attractor'"]),
    ],
    ids=["overlap", "out-of-order", "uncovered", "last-not-alone"],
)
def test_bad_schema_rows(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer, starts: str, words: list[str]
) -> None:
    path = write_jsonl(SFC_LINES)
    lines = SFC_SCHEMA.splitlines()
    lines[2] = f"{SFC_LINES[1]['clean_prefix']},{starts},6"
    schema = write_text("\n".join(lines) + "\n", "schema.csv")
    with pytest.raises(SchemaError) as err:
        load_task(path, toy_tokenizer, schema=schema)
    _assert_names(err, schema, 3, *words)
    with pytest.raises(SchemaError):
        read_schema_csv(schema)


def test_schema_length_that_does_not_match_the_prompt(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES)
    schema = write_text(SFC_SCHEMA.replace(",5,6\n", ",6,7\n"), "long.csv")
    with pytest.raises(SchemaError) as err:
        load_task(path, toy_tokenizer, schema=schema)
    _assert_names(err, schema, 2, "length 7", "6 tokens")
    # a wrong length alone (spans unchanged) is reported as the length, not as a span that no longer fits
    for length in (9, 5):
        schema = write_text(SFC_SCHEMA.replace(",5,6\n", f",5,{length}\n"), f"len{length}.csv")
        with pytest.raises(SchemaError) as err:
            load_task(path, toy_tokenizer, schema=schema)
        _assert_names(err, schema, 2, f"length {length}", "6 tokens")


def test_schema_row_for_another_prompt(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES)
    schema = write_text(SFC_SCHEMA.replace("The doctor behind", "The doctor near"), "other.csv")
    with pytest.raises(SchemaError) as err:
        load_task(path, toy_tokenizer, schema=schema)
    _assert_names(err, schema, 3, "does not match", "line 2")


def test_schema_cell_that_is_not_a_number(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES)
    schema = write_text(SFC_SCHEMA.replace(",0,2,3,4,5,6\n", ",0,two,3,4,5,6\n", 1), "nan.csv")
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer, schema=schema)
    _assert_names(err, schema, 2, "must be integers")


def test_schema_with_another_number_of_rows(
    write_jsonl: Callable, write_text: Callable, toy_tokenizer: WordTokenizer
) -> None:
    path = write_jsonl(SFC_LINES[:1])
    schema = write_text(SFC_SCHEMA, "two_rows.csv")
    with pytest.raises(TaskError, match="2 rows for 1 examples") as err:
        load_task(path, toy_tokenizer, schema=schema)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "raw, words",
    [
        ('{"clean_prefix": "The teachers", ', ["not valid JSON"]),
        ('["The teachers", "The teacher", " are", " is"]', ["must be a JSON object"]),
    ],
    ids=["malformed", "not-an-object"],
)
def test_malformed_json_line(write_jsonl: Callable, toy_tokenizer: WordTokenizer, raw: str, words: list[str]) -> None:
    path = write_jsonl([SFC_LINES[0], raw])
    with pytest.raises(TaskError) as err:
        load_task(path, toy_tokenizer)
    _assert_names(err, path, 2, *words)


def test_empty_file(write_jsonl: Callable, toy_tokenizer: WordTokenizer) -> None:
    path = write_jsonl(["", ""])
    with pytest.raises(TaskError, match="no examples") as err:
        load_task(path, toy_tokenizer)
    assert str(path) in str(err.value)


def test_a_failed_save_leaves_no_file_behind(tmp_path: Path, toy_tokenizer: WordTokenizer) -> None:
    task = make_task("sva-simple", toy_tokenizer, n=2)
    task.examples[1].answer_texts = []  # save cannot write this example
    with pytest.raises(IndexError):
        save_task(task, tmp_path / "t.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_missing_files_are_task_errors(write_jsonl: Callable, tmp_path: Path, toy_tokenizer: WordTokenizer) -> None:
    with pytest.raises(TaskError, match="no such file") as err:
        load_task(tmp_path / "nope.jsonl", toy_tokenizer)
    assert str(tmp_path / "nope.jsonl") in str(err.value)
    path = write_jsonl(SFC_LINES)
    with pytest.raises(TaskError, match=r"nope\.csv: no such file"):
        load_task(path, toy_tokenizer, schema=tmp_path / "nope.csv")
    with pytest.raises(TaskError, match="not a file"):
        load_task(tmp_path, toy_tokenizer)
