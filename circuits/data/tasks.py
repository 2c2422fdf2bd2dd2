"""Tasks: (clean, counterfactual) examples with answers, schemas and a metric.

A :class:`Task` is a list of :class:`Example` plus the name of its metric. Built-in tasks are
generated from the toy language and registered by name (``ioi``, ``ioi-baba``, ``sva-simple``,
``sva-pp``, ``sva-within-rc``, ``sva-across-rc``, ``greater-than``); a user's own tasks load from
the Sparse-Feature-Circuits JSONL format with an optional schema CSV (see :mod:`circuits.data.taskfile`).

Token convention: every prompt starts with BOS at index 0; batches are right-padded and the
metric reads each example's own last token.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from circuits.data.schema import Schema
from circuits.errors import SchemaError, TaskError
from circuits.toy import language


class TextTokenizer(Protocol):
    """What tasks need of a tokenizer: the toy :class:`~circuits.toy.tokenizer.WordTokenizer`
    and :class:`circuits.app.loading.HFTokenizer` both provide it."""

    pad_id: int

    def encode(
        self, text: str, *, bos: bool = True, source: str | None = None, line: int | None = None
    ) -> list[int]: ...

    def encode_words(
        self, words: Sequence[str], *, source: str | None = None, line: int | None = None
    ) -> tuple[list[int], list[int]]: ...

    def token_id(self, word: str, *, source: str | None = None, line: int | None = None) -> int: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class Example:
    """One (clean, counterfactual) pair. Token lists start with BOS."""

    clean: list[int]
    corrupted: list[int]
    answers: list[int]
    wrong: list[int]
    schema: Schema
    corrupted_schema: Schema
    clean_text: str = ""
    corrupted_text: str = ""
    answer_texts: list[str] = field(default_factory=list)
    wrong_texts: list[str] = field(default_factory=list)
    case: str = ""

    def check(self, *, source: str | None = None, line: int | None = None) -> None:
        """Raise unless schemas fit their prompts and share span names, and answers are given."""
        if not self.answers or not self.wrong:
            raise TaskError("an example needs at least one answer and one wrong answer", source=source, line=line)
        for which, toks, schema in (
            ("clean", self.clean, self.schema),
            ("corrupted", self.corrupted, self.corrupted_schema),
        ):
            if schema.length != len(toks):
                raise SchemaError(
                    f"the {which} schema covers {schema.length} tokens but the {which} prompt has {len(toks)}",
                    source=source,
                    line=line,
                )
        if self.schema.names != self.corrupted_schema.names:
            raise SchemaError(
                f"clean and corrupted prompts have different span names: {list(self.schema.names)} vs "
                f"{list(self.corrupted_schema.names)}",
                source=source,
                line=line,
            )


METRICS = ("logit_diff", "prob_diff")


@dataclass
class TaskBatch:
    """Right-padded token tensors of a list of examples, ready for a model.

    ``*_span`` map each token position to the index of its span in ``span_names`` (-1 on padding).
    ``answers``/``wrong`` are padded with -1.
    """

    clean: torch.Tensor  # [batch, pos] long
    corrupted: torch.Tensor  # [batch, pos'] long
    clean_lengths: torch.Tensor  # [batch] long
    corrupted_lengths: torch.Tensor  # [batch] long
    answers: torch.Tensor  # [batch, n_answers] long, -1 padded
    wrong: torch.Tensor  # [batch, n_wrong] long, -1 padded
    clean_span: torch.Tensor  # [batch, pos] long
    corrupted_span: torch.Tensor  # [batch, pos'] long
    span_names: tuple[str, ...]
    metric: str

    def __len__(self) -> int:
        return self.clean.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        moved: dict[str, Any] = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()
        }
        return TaskBatch(**moved)


def last_token_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``logits[b, lengths[b] - 1]`` for each example: [batch, vocab]."""
    idx = (lengths - 1).to(logits.device)
    return logits[torch.arange(logits.shape[0], device=logits.device), idx]


def _set_mean(values: torch.Tensor, ids: torch.Tensor, reduce: str) -> torch.Tensor:
    mask = ids >= 0
    gathered = values.gather(-1, ids.clamp(min=0).to(values.device)) * mask.to(values.device)
    total = gathered.sum(-1)
    if reduce == "mean":
        return total / mask.sum(-1).to(values.device)
    return total


def metric_per_example(logits: torch.Tensor, batch: TaskBatch, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The task metric for each example, from full logits [batch, pos, vocab]: shape [batch].

    ``logit_diff``: mean logit of the answers minus mean logit of the wrong answers at the last
    token (one answer each: the plain logit difference). ``prob_diff``: total probability of
    the answers minus that of the wrong answers (greater-than).
    """
    last = last_token_logits(logits, batch.clean_lengths if lengths is None else lengths)
    if batch.metric == "logit_diff":
        return _set_mean(last, batch.answers, "mean") - _set_mean(last, batch.wrong, "mean")
    if batch.metric == "prob_diff":
        probs = last.float().softmax(-1)
        return _set_mean(probs, batch.answers, "sum") - _set_mean(probs, batch.wrong, "sum")
    raise TaskError(f"unknown metric {batch.metric!r}; expected one of {METRICS}")


@dataclass
class Task:
    """A named list of examples and the metric that scores them."""

    name: str
    examples: list[Example]
    metric: str = "logit_diff"
    description: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise TaskError(f"unknown metric {self.metric!r}; expected one of {METRICS}", source=self.name)
        if not self.examples:
            raise TaskError("a task needs at least one example", source=self.name)
        names = self.examples[0].schema.names
        for i, ex in enumerate(self.examples):
            ex.check(source=self.name, line=i + 1)
            if ex.schema.names != names:
                raise SchemaError(
                    f"span names {list(ex.schema.names)} differ from the first example's {list(names)}",
                    source=self.name,
                    line=i + 1,
                )

    def check_fits(self, n_ctx: int | None) -> None:
        """Refuse prompts longer than the model's context of ``n_ctx`` tokens (None: no limit), naming
        the longest; the model would otherwise fail mid-run."""
        if n_ctx is None:
            return
        k, ex = max(enumerate(self.examples), key=lambda ie: max(len(ie[1].clean), len(ie[1].corrupted)))
        longest = max(len(ex.clean), len(ex.corrupted))
        if longest > n_ctx:
            raise TaskError(
                f"example {k + 1} is {longest} tokens long (BOS included) but the model reads at most {n_ctx}; "
                "shorten its prompts or use a model with a longer context",
                source=self.name,
            )

    @property
    def span_names(self) -> tuple[str, ...]:
        return self.examples[0].schema.names

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, n_first: int) -> tuple[Task, Task]:
        """The first ``n_first`` examples and the rest, as two tasks (e.g. attribution / evaluation)."""
        if not 0 < n_first < len(self.examples):
            raise TaskError(f"cannot split {len(self.examples)} examples at {n_first}", source=self.name)
        a, b = self.examples[:n_first], self.examples[n_first:]
        return (Task(self.name, a, self.metric, self.description), Task(self.name, b, self.metric, self.description))

    def batch(self, pad_id: int, examples: Sequence[Example] | None = None) -> TaskBatch:
        """Right-padded tensors of ``examples`` (all of the task's by default)."""
        exs = list(self.examples if examples is None else examples)
        return make_batch(exs, pad_id, self.span_names, self.metric)

    def batches(self, pad_id: int, batch_size: int) -> list[TaskBatch]:
        return [self.batch(pad_id, self.examples[i : i + batch_size]) for i in range(0, len(self.examples), batch_size)]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def make_batch(examples: Sequence[Example], pad_id: int, span_names: Sequence[str], metric: str) -> TaskBatch:
    position = {n: i for i, n in enumerate(span_names)}
    return TaskBatch(
        clean=_pad([e.clean for e in examples], pad_id),
        corrupted=_pad([e.corrupted for e in examples], pad_id),
        clean_lengths=torch.tensor([len(e.clean) for e in examples]),
        corrupted_lengths=torch.tensor([len(e.corrupted) for e in examples]),
        answers=_pad([e.answers for e in examples], -1),
        wrong=_pad([e.wrong for e in examples], -1),
        clean_span=_pad([[position[e.schema.spans[i].name] for i in e.schema.span_index()] for e in examples], -1),
        corrupted_span=_pad(
            [[position[e.corrupted_schema.spans[i].name] for i in e.corrupted_schema.span_index()] for e in examples],
            -1,
        ),
        span_names=tuple(span_names),
        metric=metric,
    )


# ----------------------------------------------------------------------------- built-in tasks


def example_from_prompt(prompt: language.Prompt, tokenizer: TextTokenizer) -> Example:
    """Tokenize a generated prompt; word-level spans become token-level schemas."""

    def schema_for(words: list[str]) -> tuple[list[int], Schema]:
        ids, word_starts = tokenizer.encode_words(words)
        if len(ids) - word_starts[-1] != 1:
            raise TaskError(
                f"the last word {words[-1]!r} is {len(ids) - word_starts[-1]} tokens, a prompt's last word must be one"
            )
        starts = [0] + [word_starts[w] for _, w in prompt.spans[1:]]
        return ids, Schema.from_starts([n for n, _ in prompt.spans], starts, len(ids))

    clean, schema = schema_for(prompt.clean)
    corrupted, corrupted_schema = schema_for(prompt.corrupted)
    return Example(
        clean=clean,
        corrupted=corrupted,
        answers=[tokenizer.token_id(a) for a in prompt.answers],
        wrong=[tokenizer.token_id(w) for w in prompt.wrong],
        schema=schema,
        corrupted_schema=corrupted_schema,
        clean_text=" ".join(prompt.clean),
        corrupted_text=" ".join(prompt.corrupted),
        answer_texts=list(prompt.answers),
        wrong_texts=list(prompt.wrong),
        case=prompt.case,
    )


@dataclass(frozen=True)
class TaskSpec:
    """A registered built-in task: a seeded prompt generator and a metric."""

    name: str
    generate: Callable[[random.Random], language.Prompt]
    metric: str
    description: str


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a built-in task under its name; a second task with the same name is refused."""
    if spec.name in TASKS:
        raise ValueError(f"a task named {spec.name!r} is already registered")
    TASKS[spec.name] = spec
    return spec


for _spec in (
    TaskSpec(
        "ioi",
        lambda r: language.generate_ioi(r, "ABBA"),
        "logit_diff",
        "Indirect object identification, ABBA order; counterfactual: three new names (ABC).",
    ),
    TaskSpec(
        "ioi-baba",
        lambda r: language.generate_ioi(r, "BABA"),
        "logit_diff",
        "Indirect object identification, BABA order; counterfactual: three new names (ABC).",
    ),
    TaskSpec(
        "sva-simple",
        lambda r: language.generate_sva(r, "simple"),
        "logit_diff",
        "Subject-verb agreement: 'The teachers' -> are / is.",
    ),
    TaskSpec(
        "sva-pp",
        lambda r: language.generate_sva(r, "pp"),
        "logit_diff",
        "Agreement across a prepositional phrase: 'The teachers near the desk' -> are / is.",
    ),
    TaskSpec(
        "sva-within-rc",
        lambda r: language.generate_sva(r, "within-rc"),
        "logit_diff",
        "Agreement within a relative clause: 'The teacher that the dogs' -> like / likes.",
    ),
    TaskSpec(
        "sva-across-rc",
        lambda r: language.generate_sva(r, "across-rc"),
        "logit_diff",
        "Agreement across a relative clause: 'The teachers that the dog likes' -> are / is.",
    ),
    TaskSpec(
        "greater-than",
        language.generate_greater_than,
        "prob_diff",
        "Greater-than: 'The war lasted from the year 17 32 to the year 17' -> a year above 32.",
    ),
):
    register_task(_spec)

# Seed offset that keeps task examples apart from the training corpus's random stream.
EVAL_SEED = 10_000


def available_tasks() -> list[str]:
    return sorted(TASKS)


def _did_you_mean(name: str) -> str:
    """`` (did you mean 'ioi'?)`` for a near-miss spelling of a built-in task name, else ``""``."""
    import difflib

    by_lower = {t.lower(): t for t in TASKS}
    close = difflib.get_close_matches(str(name).strip().lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def make_task(name: str, tokenizer: TextTokenizer, n: int = 64, seed: int = 0) -> Task:
    """``n`` examples of the built-in task ``name``, generated deterministically from ``seed``.

    With a tokenizer other than the toy one, a generated prompt whose answer or last word is
    several tokens cannot be an example; it is skipped and another drawn. If fewer than about
    half of the prompts fit, the task cannot be built and :class:`TaskError` says why.
    """
    if name not in TASKS:
        raise TaskError(
            f"unknown task {name!r}{_did_you_mean(name)}; built-in tasks are {', '.join(available_tasks())}"
        )
    if n < 1:
        raise TaskError(f"a task needs at least one example, asked for {n}", source=name)
    spec = TASKS[name]
    rng = random.Random(f"{name}:{EVAL_SEED + seed}")
    examples: list[Example] = []
    first_problem: TaskError | None = None
    draws = 0
    max_draws = 2 * n + 50
    while len(examples) < n:
        if draws >= max_draws:
            raise TaskError(
                f"only {len(examples)} of {draws} generated prompts fit this tokenizer (answers and the last "
                f"word of a prompt must be single tokens); first problem: {first_problem}",
                source=name,
            )
        prompt = spec.generate(rng)
        draws += 1
        try:
            examples.append(example_from_prompt(prompt, tokenizer))
        except TaskError as err:  # a word this tokenizer splits where one token is needed: draw again
            first_problem = first_problem or err
    return Task(name, examples, spec.metric, spec.description)
