"""How a task's examples are drawn and cut into parts, and which of them a saved circuit is evaluated on.

- :func:`resolve_task`: a built-in task by name, or a JSONL task file (with its schema CSV);
- :func:`load_data`: attribution, selection and held-out evaluation examples in disjoint parts
  (:class:`TaskData`), with the record of the parts circuit.json keeps (graph metadata ``splits``);
- :func:`evaluation_split` and :func:`load_split`: the held-out part a saved circuit records (or the
  part the caller names), checked against the task file's sha256, and its examples.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuits.data.taskfile import load_task
from circuits.data.tasks import TASKS, Task, TaskBatch, make_task
from circuits.errors import CircuitError, TaskError

log = logging.getLogger(__name__)


def resolve_task(
    spec: str, tokenizer: Any, n: int = 64, seed: int = 0, schema: str | None = None, *, schema_beside: bool = False
) -> Task:
    """A built-in task by name, or a JSONL file (with an optional schema CSV).

    ``schema_beside``: with no ``schema``, read the ``<stem>_schema.csv`` beside the file when there is
    one (the name ``circuits tasks export`` gives it), for commands that take no ``--schema``.
    """
    if spec in TASKS:
        if schema is not None:
            raise TaskError(f"--schema applies to task files only, and {spec!r} is a built-in task")
        return make_task(spec, tokenizer, n=n, seed=seed)
    if Path(spec).suffix == ".jsonl" or Path(spec).exists():
        beside = Path(spec).with_name(Path(spec).stem + "_schema.csv")
        if schema is None and schema_beside and beside.is_file():
            log.info("%s: reading its schema %s", spec, beside)
            return load_task(spec, tokenizer, schema=str(beside))
        if schema is not None or not beside.is_file():
            return load_task(spec, tokenizer, schema=schema)
        try:
            return load_task(spec, tokenizer)
        except TaskError as err:  # a schema is there but was not given: say so
            raise TaskError(f"{err} (its schema {beside} was not read: pass --schema {beside})") from None
    if Path(spec).suffix or "/" in spec or "\\" in spec:  # a path, not a task name
        raise TaskError(
            f"task file {spec!r} does not exist, and it is not a built-in task ({', '.join(sorted(TASKS))})"
        )
    return make_task(spec, tokenizer, n=n, seed=seed)  # raises the unknown-task error


@dataclass
class TaskData:
    """Attribution, selection (validation) and held-out evaluation examples of one task.

    ``selection`` is None when a task file is too small for three parts; the size is then chosen on
    the attribution examples. ``splits`` says how the parts were drawn, as circuit.json records it
    (graph metadata ``splits``): for a built-in task ``{"kind": "builtin", "task": name, "attribution":
    {"seed": s, "examples": n}, "selection": {...} | None, "evaluation": {...}}``; for a task file
    ``{"kind": "file", "path": ..., "sha256": ..., "schema": ... | None, "schema_sha256": ... | None,
    "attribution": {"rows": [start, stop]}, "selection": ..., "evaluation": ...}`` (rows 0-based, stop
    excluded, in file order; the hashes are the sha256 of the files' bytes).
    """

    name: str
    attribution: Task
    evaluation: Task
    attribution_batch: TaskBatch
    evaluation_batch: TaskBatch
    eval_seed: int | None
    selection: Task | None = None
    selection_batch: TaskBatch | None = None
    splits: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def task_file_identity(path: str | Path, schema: str | Path | None = None) -> dict[str, Any]:
    """A task file (and its schema CSV) as circuit.json records it: resolved paths and sha256 hashes."""
    return {
        "path": str(Path(path).resolve()),
        "sha256": file_sha256(path),
        "schema": None if schema is None else str(Path(schema).resolve()),
        "schema_sha256": None if schema is None else file_sha256(schema),
    }


def load_data(
    spec: str,
    tokenizer: Any,
    n_attribution: int = 64,
    n_eval: int = 64,
    seed: int = 0,
    schema: str | None = None,
    n_selection: int = 0,
) -> TaskData:
    """Examples of a built-in task or a task file, in disjoint parts.

    Built-in tasks: attribution seed ``seed``, held-out evaluation seed ``seed + 1``, selection seed
    ``seed + 2`` (``n_selection`` examples, none when 0); ``schema`` is refused (their spans are built
    in). A task file: its first ``n_attribution`` examples, then ``n_selection``, then ``n_eval``; a file
    too small for that is split in two (half for attribution at most) and has no selection part.
    :attr:`TaskData.splits` records the parts.
    """
    if spec in TASKS:
        if schema is not None:
            raise TaskError(f"--schema applies to task files only, and {spec!r} is a built-in task")
        attr = make_task(spec, tokenizer, n=n_attribution, seed=seed)
        ev = make_task(spec, tokenizer, n=n_eval, seed=seed + 1)
        selection = make_task(spec, tokenizer, n=n_selection, seed=seed + 2) if n_selection else None
        eval_seed: int | None = seed + 1
        splits: dict[str, Any] = {
            "kind": "builtin",
            "task": spec,
            "attribution": {"seed": seed, "examples": len(attr)},
            "selection": None if selection is None else {"seed": seed + 2, "examples": len(selection)},
            "evaluation": {"seed": seed + 1, "examples": len(ev)},
        }
    else:
        attr, selection, ev, splits = _file_parts(
            spec, resolve_task(spec, tokenizer, schema=schema), schema, n_attribution, n_selection, n_eval
        )
        eval_seed = None
    pad = tokenizer.pad_id
    return TaskData(
        attr.name,
        attr,
        ev,
        attr.batch(pad),
        ev.batch(pad),
        eval_seed,
        selection,
        None if selection is None else selection.batch(pad),
        splits,
    )


def _file_parts(
    spec: str, task: Task, schema: str | None, n_attribution: int, n_selection: int, n_eval: int
) -> tuple[Task, Task | None, Task, dict[str, Any]]:
    """A task file's attribution, selection (None when too small) and held-out parts, and their record."""
    if len(task) < 2:
        raise CircuitError(f"{spec}: a task file needs at least 2 examples (attribution and held-out evaluation)")
    exs = task.examples
    if n_selection and len(task) >= n_attribution + n_selection + n_eval:
        n_first, n_sel = n_attribution, n_selection
    else:
        n_first = min(n_attribution, len(task) // 2) if len(task) < n_attribution + n_eval else n_attribution
        if n_first < n_attribution:
            log.warning(
                "%s has %d examples, too few for %d attribution and %d held-out ones: the first %d are "
                "attributed and the other %d held out",
                spec,
                len(task),
                n_attribution,
                n_eval,
                n_first,
                min(n_eval, len(task) - n_first),
            )
        if n_selection:
            log.warning(
                "%s has too few examples for a separate selection split (%d needed): the circuit size is "
                "chosen on the attribution examples",
                spec,
                n_attribution + n_selection + n_eval,
            )
        n_sel = 0
    e_start = n_first + n_sel
    e_stop = min(len(task), e_start + n_eval)
    attr = Task(task.name, exs[:n_first], task.metric, task.description)
    selection = Task(task.name, exs[n_first:e_start], task.metric, task.description) if n_sel else None
    ev = Task(task.name, exs[e_start:e_stop], task.metric, task.description)
    splits = {
        "kind": "file",
        **task_file_identity(spec, schema),
        "attribution": {"rows": [0, n_first]},
        "selection": {"rows": [n_first, e_start]} if n_sel else None,
        "evaluation": {"rows": [e_start, e_stop]},
    }
    return attr, selection, ev, splits


def _recorded_splits(meta: dict[str, Any], source: str) -> dict[str, Any] | None:
    """circuit.json's ``splits`` (see :class:`TaskData`), checked; None when the file records none."""
    splits = meta.get("splits")
    if splits is None:
        return None
    bad = CircuitError(f"{source}: metadata 'splits' is malformed (expected what `circuits discover` records)")
    if not isinstance(splits, dict) or splits.get("kind") not in ("builtin", "file"):
        raise bad
    ev = splits.get("evaluation")
    if not isinstance(ev, dict):
        raise bad
    if splits["kind"] == "builtin":
        if not isinstance(splits.get("task"), str) or not all(
            isinstance(ev.get(k), int) and not isinstance(ev.get(k), bool) for k in ("seed", "examples")
        ):
            raise bad
    else:
        rows = ev.get("rows")
        if (
            not isinstance(splits.get("sha256"), str)
            or not isinstance(splits.get("path"), str)
            or not (
                isinstance(rows, list)
                and len(rows) == 2
                and all(isinstance(r, int) and not isinstance(r, bool) for r in rows)
                and 0 <= rows[0] < rows[1]
            )
        ):
            raise bad
    return splits


def _recorded_count(splits: dict[str, Any]) -> int:
    ev = splits["evaluation"]
    return int(ev["examples"]) if splits["kind"] == "builtin" else int(ev["rows"][1] - ev["rows"][0])


def _task_words(kind: str, task: str, path: str | None = None) -> str:
    return f"the built-in task {task!r}" if kind == "builtin" else f"the task file {path or task} (task {task!r})"


def evaluation_split(
    meta: dict[str, Any],
    task: str,
    *,
    n_eval: int | None = None,
    seed: int | None = None,
    rows: tuple[int, int] | None = None,
    schema: str | None = None,
    allow_other_task: bool = False,
    source: str = "circuit.json",
) -> dict[str, Any] | None:
    """Which examples of ``task`` a saved circuit (graph metadata ``meta``) is evaluated on.

    By default the held-out part circuit.json records (``meta["splits"]``, see :class:`TaskData`): the
    same examples, in the same order, as the run that made it evaluated. ``seed`` (built-in tasks)
    and ``n_eval`` override the recorded seed and count; for a task file ``n_eval`` counts rows from
    the start of the recorded held-out part and ``rows`` ``(start, stop)`` (0-based, stop excluded)
    names the rows outright. Returns ``{"kind": "builtin", "task", "seed", "examples"}`` or ``{"kind":
    "file", "path", "rows", "schema", ...}``, or None when circuit.json records no splits (saved by an
    earlier version: the caller splits the task as those versions did, with a warning).

    Refused (:class:`TaskError` / :class:`CircuitError`, one sentence each): ``schema`` or ``rows``
    with a built-in task, ``seed`` with a task file, ``rows`` with ``n_eval``; a task other than the
    circuit's own unless ``allow_other_task`` (then a warning, and the same number of examples: a
    built-in task at its held-out seed, a task file from its first row); a task file whose sha256 (or
    its schema's) differs from the recorded one, unless ``rows`` are given (then a warning).
    """
    builtin = task in TASKS
    _refuse_options(task, builtin, n_eval=n_eval, seed=seed, rows=rows, schema=schema)
    if not builtin and not Path(task).is_file():  # an unknown task or a missing file: loading it says which
        return {"kind": "file", "path": task, "rows": [0, 1], "schema": schema}
    recorded_task = str(meta.get("task"))
    name = task if builtin else Path(task).stem
    splits = _recorded_splits(meta, source)
    if splits is None:
        if name != recorded_task:
            if not allow_other_task:
                raise CircuitError(
                    f"{source} is a circuit for the task {recorded_task!r}, not {name!r}; pass "
                    "--allow-other-task to evaluate it on another task"
                )
            log.warning("evaluating %s, a circuit for the task %r, on %r", source, recorded_task, name)
        log.warning(
            "%s records no example splits (it was saved by an earlier version): %s is split as those versions "
            "did, which may not give the examples the run held out",
            source,
            task,
        )
        return None
    rec_kind = splits["kind"]
    rec_words = _task_words(rec_kind, recorded_task, splits.get("path"))
    count = _recorded_count(splits)

    here = _task_words("builtin" if builtin else "file", name, None if builtin else task)
    other = (source, rec_words, here, allow_other_task)
    if builtin:
        same = rec_kind == "builtin" and splits["task"] == task
        if not same:
            _other_task(*other)
        held_out_seed = int(splits["evaluation"]["seed"]) if rec_kind == "builtin" else 1
        return {
            "kind": "builtin",
            "task": task,
            "seed": held_out_seed if seed is None else int(seed),
            "examples": count if n_eval is None else int(n_eval),
        }
    return _file_split(task, splits, name == recorded_task, count, n_eval=n_eval, rows=rows, schema=schema, other=other)


def _refuse_options(
    task: str, builtin: bool, *, n_eval: int | None, seed: int | None, rows: tuple[int, int] | None, schema: str | None
) -> None:
    """Refuse the options of :func:`evaluation_split` that do not apply to ``task`` or to each other."""
    if builtin and schema is not None:
        raise TaskError(f"--schema applies to task files only, and {task!r} is a built-in task")
    if builtin and rows is not None:
        raise TaskError(
            f"--rows applies to task files only; {task!r} is a built-in task, whose examples --seed and --eval-examples choose"
        )
    if not builtin and seed is not None:
        raise TaskError(
            f"--seed applies to built-in tasks only; choose the examples of the task file {task} with --rows START:STOP"
        )
    if rows is not None and n_eval is not None:
        raise TaskError("give --rows or --eval-examples, not both")
    if rows is not None and not (0 <= rows[0] < rows[1]):
        raise TaskError(f"--rows {rows[0]}:{rows[1]} is empty or negative; give START:STOP with 0 <= START < STOP")
    if n_eval is not None and n_eval < 1:
        raise TaskError(f"--eval-examples must be at least 1, got {n_eval}")


def _other_task(source: str, rec_words: str, here: str, allow_other_task: bool) -> None:
    """Refuse evaluating a circuit on another task than its own unless ``allow_other_task`` (then warn)."""
    if not allow_other_task:
        raise CircuitError(
            f"{source} is a circuit for {rec_words}, not {here}; pass --allow-other-task to evaluate it on another task"
        )
    log.warning("evaluating %s, a circuit for %s, on %s", source, rec_words, here)


def _file_split(
    task: str,
    splits: dict[str, Any],
    same_name: bool,
    count: int,
    *,
    n_eval: int | None,
    rows: tuple[int, int] | None,
    schema: str | None,
    other: tuple[str, str, str, bool],
) -> dict[str, Any]:
    """The rows of the task file ``task`` a circuit recording ``splits`` is evaluated on (see
    :func:`evaluation_split`); ``other`` are :func:`_other_task`'s arguments."""
    rec_kind = splits["kind"]
    resolved, digest = str(Path(task).resolve()), file_sha256(task)
    same_file = rec_kind == "file" and digest == splits["sha256"]
    changed = rec_kind == "file" and not same_file and (resolved == splits["path"] or same_name)
    what = task
    if schema is None and (same_file or changed) and splits.get("schema") is not None:
        schema = splits["schema"]  # the run's own schema CSV
        if not Path(schema).is_file():
            raise TaskError(f"the schema CSV {schema} that {other[0]} records for {task} is missing; pass --schema")
    schema_digest = None if schema is None else file_sha256(schema)
    if same_file and splits.get("schema_sha256") is not None and schema_digest not in (None, splits["schema_sha256"]):
        changed, what = True, f"the schema CSV {schema}"
    if changed:
        if rows is None:
            raise CircuitError(
                f"{what} has changed since {other[0]} was made (its sha256 differs from the recorded one), "
                "so the recorded held-out rows may hold other examples; pass --rows START:STOP to evaluate "
                "chosen rows anyway"
            )
        log.warning("%s has changed since %s was made; evaluating rows %d:%d as asked", what, other[0], *rows)
    elif not same_file:
        _other_task(*other)
        rows = rows or (0, count if n_eval is None else int(n_eval))
    if rows is None:
        start = int(splits["evaluation"]["rows"][0])
        rows = (start, start + (count if n_eval is None else int(n_eval)))
    return {
        "kind": "file",
        "path": resolved,
        "sha256": digest,
        "schema": schema,
        "schema_sha256": schema_digest,
        "rows": [int(rows[0]), int(rows[1])],
    }


def load_split(split: dict[str, Any], tokenizer: Any, *, explicit_rows: bool = False) -> Task:
    """The examples :func:`evaluation_split` names. Rows past the end of a task file are an error when
    given explicitly (``explicit_rows``); otherwise the part is cut at the end, with a warning."""
    if split["kind"] == "builtin":
        return make_task(split["task"], tokenizer, n=int(split["examples"]), seed=int(split["seed"]))
    full = resolve_task(split["path"], tokenizer, schema=split.get("schema"))
    start, stop = split["rows"]
    if stop > len(full):
        if explicit_rows or start >= len(full):
            raise TaskError(
                f"rows {start}:{stop} are outside the file's {len(full)} examples (rows 0:{len(full)})",
                source=split["path"],
            )
        log.warning(
            "%s has %d examples: evaluating rows %d:%d, not %d:%d",
            split["path"],
            len(full),
            start,
            len(full),
            start,
            stop,
        )
        stop = len(full)
        split["rows"] = [start, stop]
    return Task(full.name, full.examples[start:stop], full.metric, full.description)
