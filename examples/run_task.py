"""How well does a model do on a task? Load the toy model, build a task, run it.

    python examples/run_task.py                 # IOI, 128 examples
    python examples/run_task.py sva-pp -n 64    # any built-in task: `circuits tasks list`

Swap in a real model with load_model("gpt2") when its weights are available, or your own
prompts with circuits.data.taskfile.load_task("my_task.jsonl", loaded.tokenizer).
"""

from __future__ import annotations

import argparse

from circuits.app.loading import load_model
from circuits.data.tasks import available_tasks, make_task
from circuits.evaluation.behaviour import run_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="ioi", choices=available_tasks())
    parser.add_argument("-n", type=int, default=128, help="number of examples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # The embedded toy model (a TransformerBridge) and the tokenizer that goes with it.
    loaded = load_model()

    # A task: (clean, counterfactual) prompt pairs with answer / wrong-answer tokens and schema spans.
    task = make_task(args.task, loaded.tokenizer, n=args.n, seed=args.seed)
    print(f"{task.name}: {task.description}")
    example = task.examples[0]
    print(f"  e.g. {example.clean_text!r} -> {example.answer_texts[0]!r} (not {example.wrong_texts[0]!r})")
    print(f"  spans: {' | '.join(task.span_names)}")

    # Run the model on the clean prompts; the metric is read at each prompt's last token.
    result = run_task(loaded.model, task, loaded.tokenizer.pad_id)
    print(f"accuracy {result.accuracy:.3f}  mean {task.metric} {result.logit_diff:.3f}  ({len(task)} examples)")


if __name__ == "__main__":
    main()
