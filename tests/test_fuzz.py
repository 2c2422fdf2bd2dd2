"""Fuzzing every parser and loader of user files and flags with hypothesis.

The property, for task JSONL files, schema CSVs, circuit.json files, dictionary-set folders, label
corpora and the CLI's numeric flags: a loader either succeeds or raises one of the project's own
error classes, with a message of one line that names the input. The CLI's flags either parse to a
value within their documented range or end in argparse's usage error (exit status 2) naming the flag.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import itertools
import json
import math
import shutil
import string
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import save_file

from attribution.core import AttributionError
from circuits.data.corpus import text_corpus
from circuits.data.taskfile import load_task, read_schema_csv
from circuits.errors import CircuitsError
from circuits.graph.ids import add_metric, add_node, new_graph
from circuits.graph.io import circuit_from_dict, circuit_to_dict, load_circuit
from replacement.errors import ReplacementError

PROJECT_ERRORS = (CircuitsError, ReplacementError, AttributionError)

# Sized so that the whole file runs in well under a minute on one core.
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_counter = itertools.count()


def fresh(folder: Path, suffix: str) -> Path:
    """A path in ``folder`` that no earlier example used."""
    return folder / f"f{next(_counter)}{suffix}"


def assert_one_line_naming(err: BaseException, what: str | Path) -> None:
    """The error is the project's own, one line, and names ``what``."""
    assert isinstance(err, PROJECT_ERRORS), f"{type(err).__name__}: {err}"
    message = str(err)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert str(what) in message, f"{what} not named in {message!r}"


def load_or_refuse(load, what: str | Path):
    """``load()``'s result, or None after checking that its error keeps the property."""
    try:
        result = load()
    except PROJECT_ERRORS as err:
        assert_one_line_naming(err, what)
        event(f"refused: {type(err).__name__}")
        return None
    event("loaded")
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
odd_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"\xff\xfe",
            b"\xef\xbb\xbf",
            b"\x00",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\r",
            b"\n\n",
            b"[[[[",
            b'"\\ud800"',
            b"\n" + b"[" * 100_000,
            b'\n{"clean_prefix": ' + b"9" * 5000 + b"}",
            b'"a' + b"x" * 200_000 + b'"',
        ]
    ),
)


def words_of(tokenizer) -> list[str]:
    return sorted(w for w in tokenizer.vocab if w.isalpha())


def _slots(node: object) -> list[tuple[object, object]]:
    """Every (container, key) pair inside a JSON value, outermost first."""
    slots: list[tuple[object, object]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        slots.append((node, key))
        slots.extend(_slots(value))
    return slots


@st.composite
def mutated(draw, base: object, extra: st.SearchStrategy | None = None):
    """``base`` (a JSON value) after one to three random edits: deletions, replacements, insertions."""
    data = copy.deepcopy(base)
    values = json_values if extra is None else st.one_of(json_values, extra)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(data)
        if not slots:
            return draw(values)
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["delete", "replace", "replace", "copy", "insert"]))
        if action == "delete":
            del container[key]
        elif action == "replace":
            container[key] = draw(values)
        elif action == "copy" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        elif isinstance(container, dict):
            container[draw(st.text(max_size=8))] = draw(values)
    return data


# ----------------------------------------------------------------------------------- task files


@st.composite
def task_lines(draw, words: list[str]) -> str:
    """A task JSONL file's text: mostly well-formed records with some bad lines, fields and words."""
    word = st.sampled_from(words)
    prompt = st.one_of(
        st.lists(word, min_size=1, max_size=6).map(" ".join),
        st.text(max_size=12),
        st.sampled_from(["\ud800", "Mary \udfff", " ", "\u2028", "Mary\x00"]),
    )
    answer = st.one_of(word.map(lambda w: " " + w), st.text(max_size=6), st.just("\udc80"))
    record = st.fixed_dictionaries(
        {"clean_prefix": prompt, "patch_prefix": prompt, "clean_answer": answer, "patch_answer": answer},
        optional={"case": json_values, "clean_answers": st.lists(answer, max_size=3), "patch_answers": json_values},
    )
    n = draw(st.integers(1, 5))
    same_length = st.fixed_dictionaries(
        {
            "clean_prefix": st.lists(word, min_size=n, max_size=n).map(" ".join),
            "patch_prefix": st.lists(word, min_size=n, max_size=n).map(" ".join),
            "clean_answer": word.map(lambda w: " " + w),
            "patch_answer": word.map(lambda w: " " + w),
        }
    )
    line = st.one_of(
        same_length.map(json.dumps),
        same_length.map(json.dumps),
        record.map(json.dumps),
        mutated(
            {"clean_prefix": "a", "patch_prefix": "b", "clean_answer": " c", "patch_answer": " d"}, extra=prompt
        ).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=30),
    )
    return "\n".join(draw(st.lists(line, max_size=5)))


@FAST
@given(data=st.data())
def test_task_file_text(work, toy_tokenizer, data):
    path = fresh(work, ".jsonl")
    path.write_text(data.draw(task_lines(words_of(toy_tokenizer))), encoding="utf-8", errors="surrogatepass")
    load_or_refuse(lambda: load_task(path, toy_tokenizer), path)


@FAST
@given(
    head=st.one_of(st.just(b""), st.binary(max_size=60)),
    bad=odd_bytes,
    tail=st.one_of(st.just(b""), st.binary(max_size=60)),
)
def test_task_file_bytes(work, toy_tokenizer, head, bad, tail):
    path = fresh(work, ".jsonl")
    good = json.dumps({"clean_prefix": "Mary", "patch_prefix": "John", "clean_answer": " is", "patch_answer": " are"})
    path.write_bytes(head + good.encode() + b"\n" + bad + tail)
    load_or_refuse(lambda: load_task(path, toy_tokenizer), path)


# ----------------------------------------------------------------------------------- schema CSVs

span_names = st.one_of(
    st.sampled_from(["prefix", "subj", "IO", "S1", "end", "prompt", "length", "", "1", "*", "a/b", "x y", "é"]),
    st.text(max_size=5),
)
cells = st.one_of(
    st.integers(-3, 12).map(str), st.sampled_from(["", " 2 ", "1.5", "x", "9" * 5000]), st.text(max_size=4)
)


@st.composite
def schema_csv(draw, prompts: list[str], lengths: list[int]) -> str:
    """A schema CSV's text: mostly a fitting schema of each prompt, with some columns, cells or rows changed."""
    n_spans = draw(st.integers(1, 4))
    header = ["prompt", *draw(st.lists(span_names, min_size=n_spans, max_size=n_spans)), "length"]
    if draw(st.booleans()):
        header = ["prompt", *[f"s{i}" for i in range(n_spans - 1)], "end", "length"]
    for _ in range(draw(st.integers(0, 2))):
        header[draw(st.integers(0, len(header) - 1))] = draw(span_names)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for prompt, length in list(zip(prompts, lengths, strict=True))[: draw(st.integers(0, len(prompts)))]:
        k = min(n_spans - 2, length - 2) if n_spans > 2 else 0
        inner = sorted(draw(st.sets(st.integers(1, length - 2), min_size=k, max_size=k))) if k > 0 else []
        starts = ([0] if n_spans > 1 else []) + inner + [length - 1]
        row = [prompt, *map(str, starts[:n_spans]), str(length)]
        row += [""] * (len(header) - len(row))
        for _ in range(draw(st.integers(0, 2))):
            row[draw(st.integers(0, len(row) - 1))] = draw(cells)
        if draw(st.integers(0, 5)) == 0:
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(cells, max_size=2))
        writer.writerow(row)
    return buf.getvalue()


PROMPTS = ["Then Mary and John went", "The teachers near the desk", "When John"]


@FAST
@given(data=st.data())
def test_schema_csv_text(work, toy_tokenizer, data):
    text = data.draw(schema_csv(PROMPTS, [len(toy_tokenizer.encode(p)) for p in PROMPTS]))
    csv_path = fresh(work, ".csv")
    csv_path.write_text(text, encoding="utf-8", errors="surrogatepass")
    load_or_refuse(lambda: read_schema_csv(csv_path), csv_path)
    task = fresh(work, ".jsonl")
    task.write_text(
        "".join(
            json.dumps({"clean_prefix": p, "patch_prefix": p, "clean_answer": " is", "patch_answer": " are"}) + "\n"
            for p in PROMPTS
        )
    )
    try:
        load_task(task, toy_tokenizer, schema=csv_path)
    except PROJECT_ERRORS as err:
        assert_one_line_naming(err, task if str(csv_path) not in str(err) else csv_path)


@FAST
@given(
    head=st.one_of(st.just(b""), st.binary(max_size=40)),
    bad=odd_bytes,
    tail=st.one_of(st.just(b""), st.binary(max_size=40)),
)
def test_schema_csv_bytes(work, head, bad, tail):
    path = fresh(work, ".csv")
    path.write_bytes(head + b"prompt,a,end,length\nThen Mary,0,2,3\n" + bad + tail)
    load_or_refuse(lambda: read_schema_csv(path), path)


# ----------------------------------------------------------------------------------- circuit.json


def good_circuit(positions: str) -> dict:
    """A valid circuit.json object with a node of every kind."""
    columns: dict[str, tuple[int | str, int | str]] = {"token": (1, 2), "schema": ("IO", "END"), "agnostic": ("*", "*")}
    pos = columns[positions]
    labels = {"token": ["<bos>", "Mary", "John"], "schema": ["IO", "END"], "agnostic": ["*"]}[positions]
    G = new_graph(
        model="toy",
        dictionaries="toy-saes",
        task="ioi",
        method="ig",
        positions=positions,
        position_labels=labels,
        n_layers=2,
    )
    m = add_metric(G, effect=0.5, label="logit diff")
    e = add_node(G, "embed", pos[0], 17, effect=-0.25)
    t = add_node(G, "L0.transcoder", pos[1], "err", effect=0.125)
    r = add_node(G, "L1.resid", pos[1], 5, effect=1.0, label="mover")
    G.add_edge(e, t, effect=0.5)
    G.add_edge(t, r, effect=-1.0)
    G.add_edge(r, m, effect=2.0)
    return json.loads(json.dumps(circuit_to_dict(G)))


node_ids = st.one_of(
    st.from_regex(
        r"\A(embed|L[0-9]\.(attn|mlp|resid|transcoder|conv)|metric)/([0-9]{1,2}|IO|END|S1|\*|0[0-9])/([0-9]{1,3}|err|ERR)\Z"
    ),
    st.sampled_from(["metric", "Metric", "embed/1/17", "L9.resid/2/5", "L1.resid/2/5"]),
)


@FAST
@given(data=st.data(), positions=st.sampled_from(["token", "schema", "agnostic"]))
def test_circuit_json_structure(work, data, positions):
    content = data.draw(mutated(good_circuit(positions), extra=node_ids))
    G = load_or_refuse(lambda: circuit_from_dict(content, source="run/circuit.json"), "run/circuit.json")
    if G is not None:
        assert "metric" in G


@FAST
@given(data=st.data(), cut=st.integers(0, 2000), bad=odd_bytes)
def test_circuit_json_bytes(work, data, cut, bad):
    text = json.dumps(good_circuit("token")).encode()
    cut = min(cut, len(text))
    path = fresh(work, ".json")
    path.write_bytes(text[:cut] + bad + text[cut + data.draw(st.integers(0, 3)) :])
    load_or_refuse(lambda: load_circuit(path), path)


# ----------------------------------------------------------------------------------- dictionary sets

D = 4


def make_good_set(folder: Path) -> Path:
    """A saved two-site set of width-4 dictionaries: an SAE and a transcoder."""
    from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
    from replacement.sites import Site

    sites = [Site("attn", 0), Site("transcoder", 0)]
    dicts = {s: create_dictionary(s, D, DictionaryConfig(expansion=2, k=2), seed=i) for i, s in enumerate(sites)}
    return DictionarySet(dicts, name="fuzz").save(folder / "good_set")


def fake_model(d_model: int = D) -> SimpleNamespace:
    """What ``DictionarySet.validate_for`` reads of a model: its hooks and widths (one layer)."""
    hooks = {
        h: None
        for h in (
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_attn_out",
            "blocks.0.ln2.hook_out",
            "blocks.0.hook_mlp_out",
            "blocks.0.hook_resid_post",
        )
    }
    return SimpleNamespace(hook_dict=hooks, cfg=SimpleNamespace(n_layers=1, d_model=d_model))


@pytest.fixture(scope="module")
def good_set(work) -> Path:
    return make_good_set(work)


SET_FILES = [
    "index.json",
    "L0.attn/cfg.json",
    "L0.attn/sae_weights.safetensors",
    "L0.transcoder/cfg.json",
    "L0.transcoder/sae_weights.safetensors",
]
shapes = st.lists(st.integers(0, 9), min_size=0, max_size=3)


@st.composite
def set_damage(draw):
    """One change to a saved set: a JSON file edited, a weights file cut or rewritten, a file removed."""
    kind = draw(st.sampled_from(["index", "cfg", "cfg", "bytes", "tensors", "remove", "swap"]))
    site = draw(st.sampled_from(["L0.attn", "L0.transcoder"]))
    if kind in ("index", "cfg"):
        return kind, site, draw(st.data())
    if kind == "bytes":
        return kind, site, (draw(st.integers(0, 400)), draw(odd_bytes))
    if kind == "tensors":
        names = draw(st.lists(st.sampled_from(["W_enc", "W_dec", "b_enc", "b_dec", "other"]), unique=True, max_size=5))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.float64, torch.int64]))
        fill = draw(st.sampled_from([0.5, math.nan, math.inf, 0.0]))
        return kind, site, {n: torch.full(draw(shapes), fill).to(dtype) for n in names}
    return kind, site, draw(st.sampled_from(SET_FILES))


def damage(folder: Path, change) -> None:
    kind, site, detail = change
    if kind == "index":
        index = json.loads((folder / "index.json").read_text())
        (folder / "index.json").write_text(
            json.dumps(detail.draw(mutated(index, extra=st.sampled_from(["L0.mlp", "L0.attn", "L1.attn", "x"]))))
        )
    elif kind == "cfg":
        cfg_file = folder / site / "cfg.json"
        cfg = json.loads(cfg_file.read_text())
        numbers = st.sampled_from([0, -1, 2, 3, 8, 10**9, 1.5, True, "4"])
        cfg_file.write_text(json.dumps(detail.draw(mutated(cfg, extra=numbers))))
    elif kind == "bytes":
        cut, bad = detail
        weights = folder / site / "sae_weights.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[:cut] + bad)
    elif kind == "tensors":
        save_file({k: v.contiguous() for k, v in detail.items()}, str(folder / site / "sae_weights.safetensors"))
    elif kind == "remove":
        target = folder / detail
        target.unlink()
    elif kind == "swap":  # a folder where a file belongs
        target = folder / detail
        target.unlink()
        target.mkdir()


@SLOW
@given(changes=st.lists(set_damage(), min_size=1, max_size=2))
def test_dictionary_set_folder(work, good_set, changes):
    from replacement.dictionaries import DictionarySet

    folder = fresh(work, "_set")
    shutil.copytree(good_set, folder)
    for change in changes:
        # an earlier change may have removed or spoiled what this one edits
        with contextlib.suppress(OSError, SafetensorError, json.JSONDecodeError, UnicodeDecodeError):
            damage(folder, change)
    dset = load_or_refuse(lambda: DictionarySet.load(folder, device="cpu"), folder)
    if dset is None:
        return
    for width in (D, 2 * D):
        try:
            dset.validate_for(fake_model(width))
        except ReplacementError as err:
            assert "\n" not in str(err) and repr(dset.name) in str(err)
    for d in dset.values():
        x = torch.randn(3, d.cfg.d_in, dtype=d.W_dec.dtype)
        assert torch.isfinite(d.decode(d.encode(x))).all()


@FAST
@given(text=st.text(max_size=40).filter(str.isprintable))
def test_dictionaries_option(work, text):
    from circuits.app.loading import check_dictionaries

    named = "" if not text.strip() else "release:" if text.startswith("release:") else str(Path(text))
    load_or_refuse(lambda: check_dictionaries(text), named)


def test_a_dictionaries_path_that_is_a_file(work):
    from circuits.app.loading import check_dictionaries

    file = fresh(work, ".txt")
    file.write_text("not a set")
    with pytest.raises(ReplacementError, match="is a file, not a folder"):
        check_dictionaries(str(file))


# ----------------------------------------------------------------------------------- label corpora


@FAST
@given(data=st.data())
def test_label_corpus(work, toy_tokenizer, data):
    word = st.sampled_from(words_of(toy_tokenizer))
    line = st.one_of(st.lists(word, max_size=6).map(" ".join), st.text(max_size=10), st.just(""))
    body = "\n".join(data.draw(st.lists(line, max_size=5))).encode("utf-8", "surrogatepass")
    path = fresh(work, ".txt")
    path.write_bytes(body + data.draw(st.one_of(st.just(b""), odd_bytes)))
    corpus = load_or_refuse(lambda: text_corpus(path, toy_tokenizer), path)
    if corpus is not None:
        assert len(corpus) >= 1 and all(row and row[0] == toy_tokenizer.bos_id for row in corpus.ids)


# ----------------------------------------------------------------------------------- CLI flags

BASE = {
    "discover": ["discover", "ioi"],
    "evaluate": ["evaluate", "c.json", "ioi"],
    "validate": ["validate-attribution", "ioi"],
    "dict-train": ["dictionaries", "train", "--out", "x"],
    "dict-report": ["dictionaries", "report"],
    "tasks-show": ["tasks", "show", "ioi"],
    "tasks-export": ["tasks", "export", "ioi", "--out", "x.jsonl"],
    "toy-train": ["toy", "train", "--out", "x"],
    "toy-eval": ["toy", "eval"],
}


def at_least(low):
    return lambda v: isinstance(v, int) and v >= low


is_seed = lambda v: isinstance(v, int) and 0 <= v < 2**32  # noqa: E731
# (command, flag, attribute, what a parsed value must satisfy)
FLAGS = [
    *[
        ("discover", f, a, at_least(1))
        for f, a in [
            ("--steps", "steps"),
            ("--nodes", "nodes"),
            ("--examples", "examples"),
            ("--eval-examples", "eval_examples"),
            ("--max-nodes", "max_nodes"),
            ("--max-targets", "max_targets"),
            ("--edge-examples", "edge_examples"),
            ("--curve-points", "curve_points"),
            ("--threads", "threads"),
        ]
    ],
    ("discover", "--seed", "seed", is_seed),
    ("discover", "--node-threshold", "node_threshold", lambda v: math.isfinite(v) and v >= 0),
    ("discover", "--faithfulness", "faithfulness", lambda v: 0 < v <= 1),
    ("discover", "--confidence", "confidence", lambda v: 0 <= v < 1),
    ("evaluate", "--eval-examples", "eval_examples", at_least(1)),
    ("evaluate", "--threads", "threads", at_least(1)),
    ("evaluate", "--seed", "seed", is_seed),
    ("validate", "--examples", "examples", at_least(1)),
    ("validate", "--steps", "steps", at_least(1)),
    ("validate", "--edges", "edges", at_least(3)),
    ("validate", "--seed", "seed", is_seed),
    *[
        ("dict-train", f, a, at_least(1))
        for f, a in [
            ("--expansion", "expansion"),
            ("--d-sae", "d_sae"),
            ("--k", "k"),
            ("--sentences", "sentences"),
            ("--steps", "steps"),
            ("--batch-size", "batch_size"),
        ]
    ],
    ("dict-train", "--l1", "l1", lambda v: math.isfinite(v) and v >= 0),
    ("dict-train", "--lr", "lr", lambda v: math.isfinite(v) and v > 0),
    ("dict-train", "--seed", "seed", is_seed),
    ("dict-report", "--sentences", "sentences", at_least(1)),
    ("dict-report", "--seed", "seed", is_seed),
    ("tasks-show", "--examples", "examples", at_least(1)),
    ("tasks-export", "--examples", "examples", at_least(1)),
    ("tasks-export", "--seed", "seed", is_seed),
    ("toy-train", "--steps", "steps", at_least(1)),
    ("toy-train", "--layers", "layers", at_least(1)),
    ("toy-train", "--d-model", "d_model", at_least(1)),
    ("toy-train", "--seed", "seed", is_seed),
    ("toy-eval", "--examples", "examples", at_least(1)),
    ("toy-eval", "--seed", "seed", is_seed),
]

flag_values = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "1e3", "0x10", "٣", "2_0", "nan"]),
    st.text(alphabet=string.digits + string.ascii_letters + "-+. _", max_size=8),
).map(str)


@pytest.fixture(scope="module")
def parser():
    from circuits.app.cli import build_parser

    return build_parser()


@FAST
@given(case=st.sampled_from(FLAGS), value=flag_values)
def test_numeric_flags(parser, case, value):
    command, flag, attribute, valid = case
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args([*BASE[command], f"{flag}={value}"])
        except SystemExit as stop:
            assert stop.code == 2
            message = err.getvalue()
            assert message.startswith("usage: ") and "Traceback" not in message
            last = message.rstrip("\n").splitlines()[-1]
            assert ": error: argument " in last and flag in last, message
            assert sum(": error: " in line for line in message.splitlines()) == 1, message
            return
    assert valid(getattr(args, attribute)), (flag, value, getattr(args, attribute))


def _all_parsers(parser):
    """Every (sub)command parser under ``parser``, with its name."""
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", q) for n, q in _all_parsers(sub))


def test_no_numeric_flag_takes_any_number(parser):
    """Every int or float flag of every command has a type that checks its range (a bare int or float does not)."""
    loose = [
        f"{name} {max(a.option_strings, key=len)}"
        for name, p in _all_parsers(parser)
        for a in p._actions
        if a.type in (int, float)
    ]
    assert not loose, loose
