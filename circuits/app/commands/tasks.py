"""``circuits tasks list|show|export``: the built-in tasks and the task file formats."""

from __future__ import annotations

import argparse
import json
import logging

from circuits.app.commands import positive_int, seed

log = logging.getLogger(__name__)


def register(sub) -> None:
    tasks = sub.add_parser("tasks", help="list, show or export tasks (JSONL + schema CSV)")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    ls = tsub.add_parser("list", help="the built-in tasks")
    ls.set_defaults(func=_list)
    show = tsub.add_parser("show", help="a few examples of a task with their schema spans")
    show.add_argument("task", help="built-in task name or JSONL file")
    show.add_argument("--schema", default=None, help="schema CSV for a JSONL task")
    show.add_argument("-n", "--examples", type=positive_int, default=3, help="examples shown (default 3)")
    show.set_defaults(func=_show)
    export = tsub.add_parser("export", help="write a built-in task as Sparse-Feature-Circuits JSONL and schema CSV")
    export.add_argument("task", help="built-in task name")
    export.add_argument("--out", required=True, help="JSONL path (replaced if it exists); the schema goes beside it as *_schema.csv")
    export.add_argument("-n", "--examples", type=positive_int, default=64, help="examples written (default 64)")
    export.add_argument("--seed", type=seed, default=0, help="generation seed (default 0)")
    export.set_defaults(func=_export)


def resolve_task(spec: str, tokenizer, n: int = 64, seed: int = 0, schema: str | None = None, *,
                 schema_beside: bool = False):
    """A built-in task by name, or a JSONL file (with an optional schema CSV).

    ``schema_beside``: with no ``schema``, read the ``<stem>_schema.csv`` beside the file when there is
    one (the name ``circuits tasks export`` gives it), for commands that take no ``--schema``.
    """
    from pathlib import Path

    from circuits.errors import TaskError
    from circuits.data.taskfile import load_task
    from circuits.data.tasks import TASKS, make_task

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
        raise TaskError(f"task file {spec!r} does not exist, and it is not a built-in task ({', '.join(sorted(TASKS))})")
    return make_task(spec, tokenizer, n=n, seed=seed)  # raises the unknown-task error


def _toy_tokenizer():
    from circuits.toy.model import TOKENIZER_FILE, shipped_dir
    from circuits.toy.tokenizer import WordTokenizer

    return WordTokenizer.load(shipped_dir() / TOKENIZER_FILE)


def _list(args: argparse.Namespace) -> int:
    from circuits.data.tasks import TASKS

    for name in sorted(TASKS):
        spec = TASKS[name]
        print(f"{name:<15} {spec.metric:<11} {spec.description}")
    return 0


def _show(args: argparse.Namespace) -> int:
    tok = _toy_tokenizer()
    task = resolve_task(args.task, tok, n=args.examples, schema=args.schema)
    print(f"{task.name}: {len(task)} examples, metric {task.metric}, spans {' | '.join(task.span_names)}")
    for ex in task.examples[: args.examples]:
        parts = [f"[{s.name}: {tok.decode(ex.clean[s.start:s.end])}]" for s in ex.schema.spans]
        print("  clean    ", " ".join(parts))
        print("  corrupted", tok.decode(ex.corrupted))
        print("  answer", json.dumps(ex.answer_texts[:5]), "wrong", json.dumps(ex.wrong_texts[:5]))
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from circuits.files import check_output_file
    from circuits.data.taskfile import save_task
    from circuits.data.tasks import make_task

    check_output_file(args.out, "--out")
    out = Path(args.out)
    schema = out.with_name(out.stem + "_schema.csv")
    check_output_file(schema, "the schema file")
    task = make_task(args.task, _toy_tokenizer(), n=args.examples, seed=args.seed)
    save_task(task, out, schema=schema)
    print(f"wrote {out} and {schema}")
    return 0
