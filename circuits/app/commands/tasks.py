"""``circuits tasks list|show|export``: the built-in tasks and the task file formats."""

from __future__ import annotations

import argparse
import json

from circuits.app.commands import positive_int, seed


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
    export.add_argument(
        "--out", required=True, help="JSONL path (replaced if it exists); the schema goes beside it as *_schema.csv"
    )
    export.add_argument("-n", "--examples", type=positive_int, default=64, help="examples written (default 64)")
    export.add_argument("--seed", type=seed, default=0, help="generation seed (default 0)")
    export.set_defaults(func=_export)


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
    from circuits.data.splits import resolve_task

    tok = _toy_tokenizer()
    task = resolve_task(args.task, tok, n=args.examples, schema=args.schema)
    print(f"{task.name}: {len(task)} examples, metric {task.metric}, spans {' | '.join(task.span_names)}")
    for ex in task.examples[: args.examples]:
        parts = [f"[{s.name}: {tok.decode(ex.clean[s.start : s.end])}]" for s in ex.schema.spans]
        print("  clean    ", " ".join(parts))
        print("  corrupted", tok.decode(ex.corrupted))
        print("  answer", json.dumps(ex.answer_texts[:5]), "wrong", json.dumps(ex.wrong_texts[:5]))
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from circuits.data.taskfile import save_task
    from circuits.data.tasks import make_task
    from circuits.files import check_output_file

    check_output_file(args.out, "--out")
    out = Path(args.out)
    schema = out.with_name(out.stem + "_schema.csv")
    check_output_file(schema, "the schema file")
    task = make_task(args.task, _toy_tokenizer(), n=args.examples, seed=args.seed)
    save_task(task, out, schema=schema)
    print(f"wrote {out} and {schema}")
    return 0
