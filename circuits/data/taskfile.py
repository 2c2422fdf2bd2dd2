"""A user's own tasks: the Sparse-Feature-Circuits JSONL format and the schema CSV format.

JSONL, one example per line (Marks et al.)::

    {"clean_prefix": "The teachers near the desk", "patch_prefix": "The teacher near the desk",
     "clean_answer": " are", "patch_answer": " is", "case": "plural_singular"}

``clean_answer`` is the correct next token of the clean prompt, ``patch_answer`` the one of the
counterfactual; the metric is their logit difference on the clean prompt. Tasks with several
answers per side (greater-than) add ``clean_answers`` / ``patch_answers`` lists.

Schema CSV (position-aware EAP, Haklay et al.): a ``prompt`` column, one column per span (in
schema order) holding the index of the span's first token (BOS = 0), and ``length`` (tokens,
BOS included). Rows match the JSONL lines in order. Without a schema file every token is its
own span (``t0``, ``t1``, ..., ``end``). A counterfactual whose length differs from its clean
prompt needs its own schema CSV (``corrupted_schema``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.data.schema import Schema, per_token_schema
from circuits.data.tasks import Example, Task, TextTokenizer
from circuits.errors import SchemaError, TaskError
from circuits.files import atomic_write

REQUIRED_FIELDS = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")
NON_SPAN_COLUMNS = ("prompt", "length")


def read_schema_csv(path: str | Path) -> list[tuple[str, Schema]]:
    """Each row's prompt and schema; errors name the file and line."""
    return [(prompt, row.schema()) for prompt, row in _read_schema_rows(path)]


@dataclass
class _SchemaRow:
    """One CSV row before its spans are checked (a task file first checks its length against the prompt)."""

    names: list[str]
    starts: list[int]
    length: int
    source: str
    line: int

    def schema(self) -> Schema:
        return Schema.from_starts(self.names, self.starts, self.length, source=self.source, line=self.line)


def _read_schema_rows(path: str | Path) -> list[tuple[str, _SchemaRow]]:
    path = Path(path)
    src = str(path)
    _require_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return _parse_schema_rows(csv.reader(fh), src)
    except UnicodeDecodeError as err:
        raise TaskError(f"not UTF-8 text (byte {err.start}); save the schema CSV as UTF-8", source=src) from None
    except csv.Error as err:
        raise TaskError(f"not a readable CSV file ({err})", source=src) from None
    except OSError as err:
        raise TaskError(f"cannot read the file ({err.strerror or err})", source=src) from None


def _parse_schema_rows(reader: Iterator[list[str]], src: str) -> list[tuple[str, _SchemaRow]]:
    header: list[str] = next(iter(reader), [])
    unnamed = [i for i, c in enumerate(header, 1) if not c.strip()]
    if unnamed:
        raise SchemaError(f"column {unnamed[0]} of the header has no name (a stray comma?)", source=src, line=1)
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise SchemaError(
            f"column {dup[0]!r} appears {header.count(dup[0])} times in the header; name each column once",
            source=src,
            line=1,
        )
    for col in NON_SPAN_COLUMNS:
        if col not in header:
            raise TaskError(
                f"missing column {col!r} (columns: {', '.join(_short(c) for c in header) or 'none'})",
                source=src,
                line=1,
            )
    span_cols = [c for c in header if c not in NON_SPAN_COLUMNS]
    if not span_cols:
        raise SchemaError("no span columns besides 'prompt' and 'length'", source=src, line=1)
    rows = []
    for fields in reader:
        line = getattr(reader, "line_num", 0)
        if not fields:
            continue
        if len(fields) != len(header):
            raise TaskError(f"{len(fields)} fields but the header has {len(header)} columns", source=src, line=line)
        row = dict(zip(header, fields, strict=True))
        try:
            starts = [int(row[c]) for c in span_cols]
            length = int(row["length"])
        except ValueError:
            raise TaskError("span starts and length must be integers", source=src, line=line) from None
        rows.append((row["prompt"], _SchemaRow(span_cols, starts, length, src, line)))
    return rows


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise TaskError("no such file" if not path.exists() else "not a file", source=str(path))


def write_schema_csv(path: str | Path, prompts: Iterable[str], schemas: Iterable[Schema]) -> None:
    schemas = list(schemas)
    names = list(schemas[0].names)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["prompt", *names, "length"])
            for prompt, s in zip(prompts, schemas, strict=True):
                if list(s.names) != names:
                    raise SchemaError(f"span names {list(s.names)} differ from {names}", source=str(path))
                w.writerow([prompt, *s.starts, s.length])

    atomic_write(path, write)


def _answers(
    record: dict, single: str, plural: str, tok: TextTokenizer, src: str, line: int
) -> tuple[list[int], list[str]]:
    texts = record.get(plural) or [record[single]]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TaskError(f"{plural!r} must be a list of strings", source=src, line=line)
    return [tok.token_id(t, source=src, line=line) for t in texts], list(texts)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (json would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    pass


def _parse_record(raw: str, src: str, line: int) -> dict[str, Any]:
    """One line of a task file as a checked record: a JSON object with the required string fields,
    non-empty prompts and answers that differ (equal answers make the metric 0 on every example)."""
    try:
        rec = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise TaskError(f"key {str(err)!r} appears twice; give each field once", source=src, line=line) from None
    except json.JSONDecodeError as err:
        raise TaskError(f"not valid JSON ({err.msg})", source=src, line=line) from None
    except (ValueError, RecursionError) as err:  # an int of thousands of digits, or nesting too deep
        message = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
        raise TaskError(f"not usable JSON ({message})", source=src, line=line) from None
    if isinstance(rec, list) and line == 1 and rec and all(isinstance(r, dict) for r in rec):
        raise TaskError("the file is one JSON array; write one JSON object per line (JSONL)", source=src, line=line)
    if not isinstance(rec, dict):
        raise TaskError("each line must be a JSON object", source=src, line=line)
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        raise TaskError(f"missing field {', '.join(repr(m) for m in missing)}", source=src, line=line)
    not_text = [f for f in REQUIRED_FIELDS if not isinstance(rec[f], str)]
    if not_text:
        raise TaskError(
            f"field {not_text[0]!r} must be a string, got {_short(rec[not_text[0]])}", source=src, line=line
        )
    for field in ("clean_prefix", "patch_prefix"):
        if not rec[field].strip():
            raise TaskError(f"field {field!r} is empty; a prompt needs at least one word", source=src, line=line)
    if rec["clean_answer"] == rec["patch_answer"]:
        raise TaskError(
            f"clean_answer and patch_answer are both {_short(rec['clean_answer'])}: the metric would be 0 on every "
            "example; give the counterfactual's own answer",
            source=src,
            line=line,
        )
    _check_encodable(rec, src, line)
    return rec


def load_task(
    path: str | Path,
    tokenizer: TextTokenizer,
    schema: str | Path | None = None,
    corrupted_schema: str | Path | None = None,
    metric: str = "logit_diff",
    name: str | None = None,
) -> Task:
    """A task from a Sparse-Feature-Circuits JSONL file, with optional schema CSVs."""
    path = Path(path)
    src = str(path)
    _require_file(path)
    records = [(line, _parse_record(raw, src, line)) for line, raw in _jsonl_lines(path) if raw.strip()]
    if not records:
        raise TaskError("no examples", source=src)
    clean_schemas = _schema_rows(schema, len(records), src)
    corrupted_schemas = _schema_rows(corrupted_schema, len(records), src)

    examples = []
    for k, (line, rec) in enumerate(records):
        clean = tokenizer.encode(rec["clean_prefix"], source=src, line=line)
        corrupted = tokenizer.encode(rec["patch_prefix"], source=src, line=line)
        answers, answer_texts = _answers(rec, "clean_answer", "clean_answers", tokenizer, src, line)
        wrong, wrong_texts = _answers(rec, "patch_answer", "patch_answers", tokenizer, src, line)
        s_clean = _pick_schema(clean_schemas, k, rec["clean_prefix"], clean, schema, line)
        if corrupted_schemas is not None:
            s_corr = _pick_schema(corrupted_schemas, k, rec["patch_prefix"], corrupted, corrupted_schema, line)
        elif len(corrupted) == len(clean):
            s_corr = s_clean
        else:
            raise SchemaError(
                f"the counterfactual is {len(corrupted)} tokens and the clean prompt {len(clean)}: "
                "prompts of different lengths need schema CSVs for both (schema and corrupted_schema)",
                source=src,
                line=line,
            )
        ex = Example(
            clean,
            corrupted,
            answers,
            wrong,
            s_clean,
            s_corr,
            clean_text=rec["clean_prefix"],
            corrupted_text=rec["patch_prefix"],
            answer_texts=answer_texts,
            wrong_texts=wrong_texts,
            case=str(rec.get("case", "")),
        )
        ex.check(source=src, line=line)
        examples.append(ex)
    task_name = name or path.stem
    first = examples[0].schema.names
    for (line, _), ex in zip(records, examples, strict=True):
        if ex.schema.names != first:
            raise SchemaError(
                f"span names {list(ex.schema.names)} differ from the first example's {list(first)} "
                "(prompts of different lengths need a schema CSV)",
                source=src,
                line=line,
            )
    return Task(task_name, examples, metric)


def _jsonl_lines(path: Path) -> list[tuple[int, str]]:
    """The numbered lines of a UTF-8 text file (a leading byte-order mark is dropped)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TaskError(f"not UTF-8 text (byte {err.start}); save the task file as UTF-8", source=str(path)) from None
    except OSError as err:
        raise TaskError(f"cannot read the file ({err.strerror or err})", source=str(path)) from None
    # a raw carriage return cannot sit inside a JSON string, so every one of them ends a line
    return list(enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1))


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_encodable(record: dict, src: str, line: int) -> None:
    """Refuse text that JSON escapes can hold but UTF-8 cannot (unpaired surrogates such as ``\\ud800``)."""
    for key, value in record.items():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise TaskError(
                        f"field {key!r} holds an unpaired surrogate escape ({_short(text)}); write the text itself",
                        source=src,
                        line=line,
                    ) from None


def _schema_rows(path: str | Path | None, n: int, src: str) -> list[tuple[str, _SchemaRow]] | None:
    if path is None:
        return None
    rows = _read_schema_rows(path)
    if len(rows) != n:
        raise TaskError(f"the schema file {path} has {len(rows)} rows for {n} examples", source=src)
    return rows


def _pick_schema(rows, k: int, prompt: str, ids: list[int], path, line: int) -> Schema:
    if rows is None:
        return per_token_schema(len(ids))
    row_prompt, row = rows[k]
    csv_line = row.line
    if row_prompt.strip() != prompt.strip():
        raise SchemaError(
            f"row prompt {row_prompt!r} does not match the task's line {line} {prompt!r}",
            source=str(path),
            line=csv_line,
        )
    if row.length != len(ids):
        raise SchemaError(
            f"length {row.length} but {prompt!r} is {len(ids)} tokens (BOS included)", source=str(path), line=csv_line
        )
    return row.schema()


def _spaced(answer: str) -> str:
    """An answer as the next token of a prompt: with its leading space, as Sparse-Feature-Circuits writes it."""
    return answer if answer[:1].isspace() else " " + answer


def save_task(
    task: Task, path: str | Path, schema: str | Path | None = None, corrupted_schema: str | Path | None = None
) -> None:
    """Write ``task`` as JSONL (and its schemas as CSV when paths are given); readable by :func:`load_task`."""
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            for ex in task.examples:
                answers = [_spaced(a) for a in ex.answer_texts]
                wrong = [_spaced(w) for w in ex.wrong_texts]
                rec: dict[str, Any] = {
                    "clean_prefix": ex.clean_text,
                    "patch_prefix": ex.corrupted_text,
                    "clean_answer": answers[0],
                    "patch_answer": wrong[0],
                }
                if len(answers) > 1 or len(wrong) > 1:
                    rec["clean_answers"] = answers
                    rec["patch_answers"] = wrong
                if ex.case:
                    rec["case"] = ex.case
                fh.write(json.dumps(rec) + "\n")

    atomic_write(path, write)
    if schema is not None:
        write_schema_csv(schema, [e.clean_text for e in task.examples], [e.schema for e in task.examples])
    if corrupted_schema is not None:
        write_schema_csv(
            corrupted_schema, [e.corrupted_text for e in task.examples], [e.corrupted_schema for e in task.examples]
        )
