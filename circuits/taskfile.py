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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from circuits.errors import SchemaError, TaskError
from circuits.files import atomic_write
from circuits.schema import Schema, per_token_schema
from circuits.tasks import Example, Task, TextTokenizer

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
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in NON_SPAN_COLUMNS:
            if col not in header:
                raise TaskError(f"missing column {col!r} (columns: {', '.join(header) or 'none'})", source=src, line=1)
        span_cols = [c for c in header if c not in NON_SPAN_COLUMNS]
        if not span_cols:
            raise SchemaError("no span columns besides 'prompt' and 'length'", source=src, line=1)
        rows = []
        for i, row in enumerate(reader):
            line = i + 2
            try:
                starts = [int(row[c]) for c in span_cols]
                length = int(row["length"])
            except (TypeError, ValueError):
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
            for prompt, s in zip(prompts, schemas):
                if list(s.names) != names:
                    raise SchemaError(f"span names {list(s.names)} differ from {names}", source=str(path))
                w.writerow([prompt, *s.starts, s.length])

    atomic_write(path, write)


def _answers(record: dict, single: str, plural: str, tok: TextTokenizer, src: str, line: int) -> tuple[list[int], list[str]]:
    texts = record.get(plural) or [record[single]]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TaskError(f"{plural!r} must be a list of strings", source=src, line=line)
    return [tok.token_id(t, source=src, line=line) for t in texts], list(texts)


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
    records = []
    with path.open() as fh:
        for i, raw in enumerate(fh):
            line = i + 1
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as err:
                raise TaskError(f"not valid JSON ({err.msg})", source=src, line=line) from None
            if not isinstance(rec, dict):
                raise TaskError("each line must be a JSON object", source=src, line=line)
            missing = [f for f in REQUIRED_FIELDS if f not in rec]
            if missing:
                raise TaskError(f"missing field {', '.join(repr(m) for m in missing)}", source=src, line=line)
            not_text = [f for f in REQUIRED_FIELDS if not isinstance(rec[f], str)]
            if not_text:
                raise TaskError(f"field {not_text[0]!r} must be a string, got {rec[not_text[0]]!r}", source=src, line=line)
            records.append((line, rec))
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
                source=src, line=line,
            )
        ex = Example(
            clean, corrupted, answers, wrong, s_clean, s_corr,
            clean_text=rec["clean_prefix"], corrupted_text=rec["patch_prefix"],
            answer_texts=answer_texts, wrong_texts=wrong_texts, case=str(rec.get("case", "")),
        )
        ex.check(source=src, line=line)
        examples.append(ex)
    task_name = name or path.stem
    first = examples[0].schema.names
    for (line, _), ex in zip(records, examples):
        if ex.schema.names != first:
            raise SchemaError(
                f"span names {list(ex.schema.names)} differ from the first example's {list(first)} "
                "(prompts of different lengths need a schema CSV)",
                source=src, line=line,
            )
    return Task(task_name, examples, metric)


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
    csv_line = k + 2
    if row_prompt.strip() != prompt.strip():
        raise SchemaError(f"row prompt {row_prompt!r} does not match the task's line {line} {prompt!r}", source=str(path), line=csv_line)
    if row.length != len(ids):
        raise SchemaError(
            f"length {row.length} but {prompt!r} is {len(ids)} tokens (BOS included)", source=str(path), line=csv_line
        )
    return row.schema()


def _spaced(answer: str) -> str:
    """An answer as the next token of a prompt: with its leading space, as Sparse-Feature-Circuits writes it."""
    return answer if answer[:1].isspace() else " " + answer


def save_task(task: Task, path: str | Path, schema: str | Path | None = None, corrupted_schema: str | Path | None = None) -> None:
    """Write ``task`` as JSONL (and its schemas as CSV when paths are given); readable by :func:`load_task`."""
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            for ex in task.examples:
                answers = [_spaced(a) for a in ex.answer_texts]
                wrong = [_spaced(w) for w in ex.wrong_texts]
                rec = {
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
        write_schema_csv(corrupted_schema, [e.corrupted_text for e in task.examples], [e.corrupted_schema for e in task.examples])
