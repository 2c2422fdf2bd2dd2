"""``circuits toy train`` and ``circuits toy eval``: the embedded toy model."""

from __future__ import annotations

import argparse
import json

from circuits.app.commands import add_model_options, add_output_options, positive_int, seed


def register(sub) -> None:
    toy = sub.add_parser("toy", help="train or evaluate the embedded toy language model")
    tsub = toy.add_subparsers(dest="toy_command", metavar="ACTION", required=True)

    train = tsub.add_parser("train", help="train the toy model on the toy language (seeded)")
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="folder to write the model into")
    where.add_argument(
        "--replace-shipped",
        action="store_true",
        help="rewrite the package's shipped model (for maintainers: its dictionaries then need retraining too)",
    )
    train.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 2500)")
    train.add_argument(
        "--seed", type=seed, default=0, help="seed of the weights and of the training sentences (default 0)"
    )
    train.add_argument("--layers", type=positive_int, default=None, help="transformer layers (default 3)")
    train.add_argument(
        "--d-model", type=positive_int, default=None, help="residual width (default 96; the MLP is 4x as wide)"
    )
    train.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = tsub.add_parser("eval", help="accuracy and logit difference of a model on every built-in task")
    add_model_options(ev)
    add_output_options(ev)
    ev.add_argument("-n", "--examples", type=positive_int, default=256, help="held-out examples per task")
    ev.add_argument("--seed", type=seed, default=0, help="seed of the generated examples (default 0)")
    ev.add_argument(
        "--tasks",
        nargs="*",
        default=None,
        help="built-in task names or JSONL task files, each with the FILE_schema.csv beside it when there is one "
        "(default: every built-in task)",
    )
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from circuits.data.tasks import available_tasks, make_task
    from circuits.evaluation.behaviour import run_task
    from circuits.files import check_output_dir
    from circuits.toy.model import ToyModelConfig, ToyTrainConfig, save_model, shipped_dir, train_model

    if args.replace_shipped:
        check_output_dir(shipped_dir(), "the shipped model folder")
    else:
        out = check_output_dir(args.out, "--out")
        _refuse_other_output(out, args.out)
    mcfg = ToyModelConfig(seed=args.seed)
    if args.layers:
        mcfg = replace(mcfg, n_layers=args.layers)
    if args.d_model:
        mcfg = replace(mcfg, d_model=args.d_model, d_mlp=4 * args.d_model)
    tcfg = ToyTrainConfig(seed=args.seed)
    if args.steps:
        tcfg = replace(tcfg, steps=args.steps)
    from circuits.app.loading import resolve_device

    model, tok, losses = train_model(mcfg, tcfg, device=resolve_device(args.device), progress=not args.quiet)
    out = save_model(model, tok, mcfg, shipped_dir() if args.replace_shipped else args.out)
    print(f"final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}; saved to {out}")
    for name in available_tasks():
        r = run_task(model, make_task(name, tok, n=128), tok.pad_id)
        print(f"  {name:<15} accuracy {r.accuracy:.3f}  logit_diff {r.logit_diff:.3f}")
    return 0


# files that mark a folder as another command's output, which replaces that folder as a whole
_OTHER_OUTPUTS = {"circuit.json": "a `circuits discover` run folder", "index.json": "a dictionary set"}


def _refuse_other_output(out, shown: str) -> None:
    """Refuse to write the model into a run folder or a dictionary set: the next run or training into that
    folder would replace it, model included."""
    from pathlib import Path

    from circuits.errors import OutputError

    for name, kind in _OTHER_OUTPUTS.items():
        if (Path(out) / name).is_file():
            raise OutputError(f"--out {shown} is {kind} (it holds {name}): give a new or empty folder for the model")


def _eval(args: argparse.Namespace) -> int:
    from circuits.app.loading import load_model
    from circuits.data.splits import resolve_task
    from circuits.data.tasks import available_tasks
    from circuits.evaluation.behaviour import run_task

    loaded = load_model(args.model, device=args.device)
    names = args.tasks or available_tasks()
    results = {}
    for name in names:
        task = resolve_task(name, loaded.tokenizer, n=args.examples, seed=args.seed, schema_beside=True)
        results[name] = run_task(loaded.model, task, loaded.tokenizer.pad_id).as_dict()
    if args.json:
        print(json.dumps(results))
    else:
        print(f"{'task':<15} {'accuracy':>9} {'metric':>9}")
        for name, r in results.items():
            print(f"{name:<15} {r['accuracy']:>9.3f} {r['logit_diff']:>9.3f}")
    return 0
