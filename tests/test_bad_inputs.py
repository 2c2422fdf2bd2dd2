"""Bad inputs through the CLI: each ends in exit status 2 with one sentence on stderr, never a traceback.

Errors of the project's own classes print ``error: ...`` (one line); bad flag values are argparse's
usage error, which names the flag. The model is never loaded for these inputs (loading it fails
the test), except for dictionary sets, whose checks against a model need one (the shared toy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.app.cli import main
from circuits.graph.ids import add_metric, add_node, new_graph
from circuits.graph.io import circuit_to_dict

GOOD_LINE = {
    "clean_prefix": "Then Mary and John went",
    "patch_prefix": "Then John and Mary went",
    "clean_answer": " John",
    "patch_answer": " Mary",
}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: these inputs must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    import circuits.app.loading

    monkeypatch.setattr(circuits.app.loading, "load_model", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str], code: int, *words: str) -> str:
    """Assert exit status 2 and one ``error:`` line on stderr containing ``words``; return the line."""
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for w in words:
        assert w in captured.err, (w, captured.err)
    return captured.err


# ------------------------------------------------------------------------------- task files


def _jsonl(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_bytes(content)
    return path


GOOD = json.dumps(GOOD_LINE).encode() + b"\n"
TASK_FILES = {
    "not-utf8": (GOOD + b'{"clean_prefix": "caf\xe9"}\n', ["not UTF-8 text"]),
    "surrogate": (
        GOOD + json.dumps({**GOOD_LINE, "clean_prefix": "Then \ud800"}).encode() + b"\n",
        ["line 2", "unpaired surrogate"],
    ),
    "deep-json": (GOOD + b"[" * 100_000 + b"\n", ["line 2", "nested too deeply"]),
    "huge-int": (GOOD + b'{"case": ' + b"9" * 5000 + b"}\n", ["line 2", "not usable JSON"]),
    "empty-prompt": (json.dumps({**GOOD_LINE, "patch_prefix": "  "}).encode(), ["line 1", "'patch_prefix' is empty"]),
    "not-object": (b"[1, 2]\n", ["line 1", "JSON object"]),
    "unknown-word": (json.dumps({**GOOD_LINE, "clean_prefix": "Then Mary and Zorg went"}).encode(), ["'Zorg'"]),
    "bom": (b"\xef\xbb\xbf" + b"\xff\n", ["not UTF-8 text"]),
}


@pytest.mark.parametrize("content, words", TASK_FILES.values(), ids=TASK_FILES.keys())
def test_bad_task_files(tmp_path, capsys, no_model, content, words):
    path = _jsonl(tmp_path, content)
    one_error_line(capsys, main(["tasks", "show", str(path)]), str(path), *words)


def test_a_folder_as_task_file(tmp_path, capsys, no_model):
    (tmp_path / "t.jsonl").mkdir()
    one_error_line(capsys, main(["tasks", "show", str(tmp_path / "t.jsonl")]), "not a file")


SCHEMAS = {
    "not-utf8": (b"prompt,a,end,length\nThen Mary and John went,0,5,6\n\xff\n", ["not UTF-8 text"]),
    "duplicate-column": (
        b"prompt,a,a,end,length\nThen Mary and John went,0,1,5,6\n",
        ["line 1", "column 'a' appears 2 times"],
    ),
    "negative-start": (b"prompt,a,end,length\nThen Mary and John went,-4,5,6\n", ["line 2", "'a' starts at token -4"]),
    "short-row": (
        b"prompt,a,end,length\nThen Mary and John went,0\n",
        ["line 2", "2 fields but the header has 4 columns"],
    ),
    "digit-name": (b"prompt,a,1,length\nThen Mary and John went,0,5,6\n", ["line 2", "cannot be all digits"]),
    "slash-name": (b"prompt,a/b,end,length\nThen Mary and John went,0,5,6\n", ["line 2", "without '/'"]),
    "unnamed-column": (
        b"prompt,a,end,length,\nThen Mary and John went,0,5,6,\n",
        ["line 1", "column 5 of the header has no name"],
    ),
    "zero-length": (b"prompt,a,length\nThen Mary and John went,0,0\n", ["line 2", "length 0 but"]),
    "not-integer": (b"prompt,a,end,length\nThen Mary and John went,0,x,6\n", ["line 2", "integers"]),
    "huge-field": (b'prompt,a,end,length\n"' + b"x" * 200_000 + b'",0,5,6\n', ["not a readable CSV file"]),
}


@pytest.mark.parametrize("content, words", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_bad_schema_files(tmp_path, capsys, no_model, content, words):
    task = _jsonl(tmp_path, GOOD)
    schema = tmp_path / "schema.csv"
    schema.write_bytes(content)
    one_error_line(capsys, main(["tasks", "show", str(task), "--schema", str(schema)]), str(schema), *words)


# ------------------------------------------------------------------------------- circuit.json


def good_circuit() -> dict:
    G = new_graph(
        model="toy",
        dictionaries="toy-topk-768",
        task="ioi",
        method="ig",
        positions="agnostic",
        position_labels=["*"],
        n_layers=3,
    )
    m = add_metric(G, effect=1.5, label="logit diff")
    e = add_node(G, "embed", "*", 3, effect=0.25)
    r = add_node(G, "L2.transcoder", "*", 7, effect=1.0)
    G.add_edge(e, r, effect=0.5)
    G.add_edge(r, m, effect=1.0)
    return json.loads(json.dumps(circuit_to_dict(G)))


def _without_metric(d):
    d["nodes"] = [n for n in d["nodes"] if n["id"] != "metric"]
    d["edges"] = [e for e in d["edges"] if e["target"] != "metric"]


def _unknown_site(d):
    d["nodes"][2]["id"] = "L2.conv/*/7"
    d["edges"] = [{"source": "embed/*/3", "target": "L2.conv/*/7", "effect": 0.5}]


def _layer_count(d):
    d["metadata"]["n_layers"] = 4


def _past_last_layer(d):
    d["metadata"]["n_layers"] = 2
    for n in d["nodes"]:
        if n["id"] == "metric":
            n["layer"] = 2


def _huge_effect(d):
    d["nodes"][1]["effect"] = 10**400


CIRCUITS = {
    "no-metric": (_without_metric, ["has no 'metric' node"]),
    "unknown-site": (_unknown_site, ["'L2.conv/*/7'", "unknown site kind 'conv'"]),
    "layer-count": (_layer_count, ["metric node has layer=3 but metadata 'n_layers' is 4"]),
    "past-last-layer": (_past_last_layer, ["'L2.transcoder/*/7' is at layer 2", "2 layers"]),
    "huge-effect": (_huge_effect, ["expected a finite number"]),
}


@pytest.mark.parametrize("change, words", CIRCUITS.values(), ids=CIRCUITS.keys())
def test_bad_circuit_files(tmp_path, capsys, no_model, change, words):
    data = good_circuit()
    change(data)
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(data))
    one_error_line(capsys, main(["evaluate", str(path), "ioi"]), str(path), *words)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\xff\xfe{}", ["not UTF-8"]),
        (b"[" * 100_000, ["nested too deeply"]),
        (b"{", ["invalid JSON"]),
    ],
    ids=["not-utf8", "deep", "truncated"],
)
def test_unreadable_circuit_files(tmp_path, capsys, no_model, content, words):
    path = tmp_path / "circuit.json"
    path.write_bytes(content)
    one_error_line(capsys, main(["evaluate", str(path), "ioi"]), str(path), *words)


# ------------------------------------------------------------------------------- dictionary sets


def test_dictionary_options_refused_before_the_model(tmp_path, capsys, no_model):
    file = tmp_path / "set.txt"
    file.write_text("x")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "index.json").write_text("{}")
    for value, words in (
        (str(file), ["is a file, not a folder"]),
        (str(tmp_path / "set" / "index.json"), ["give its folder"]),
        ("", ["empty name"]),
        ("release:", ["names no release"]),
    ):
        out = tmp_path / "run"
        one_error_line(capsys, main(["discover", "ioi", "--dictionaries", value, "--out", str(out)]), *words)
        assert not out.exists()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """A one-site set of width-96 dictionaries (the toy model's width)."""
    from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
    from replacement.sites import Site

    site = Site("attn", 0)
    return DictionarySet(
        {site: create_dictionary(site, 96, DictionaryConfig(expansion=1, k=4), seed=0)}, name="small"
    ).save(tmp_path_factory.mktemp("sets") / "small")


def _edit_json(file: Path, **changes) -> None:
    data = json.loads(file.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    file.write_text(json.dumps(data))


def _narrow(folder: Path) -> None:
    from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
    from replacement.sites import Site

    site = Site("attn", 0)
    DictionarySet({site: create_dictionary(site, 8, DictionaryConfig(expansion=2, k=4), seed=0)}, name="narrow").save(
        folder
    )


SETS = {
    "cfg-not-json": (lambda f: (f / "L0.attn" / "cfg.json").write_text("{d_in: 96"), ["cfg.json is not valid JSON"]),
    "cfg-not-utf8": (lambda f: (f / "L0.attn" / "cfg.json").write_bytes(b"\xff"), ["cfg.json is not UTF-8"]),
    "cfg-missing": (lambda f: (f / "L0.attn" / "cfg.json").unlink(), ["cfg.json is missing"]),
    "cfg-not-object": (lambda f: (f / "L0.attn" / "cfg.json").write_text("[96]"), ["must hold a JSON object"]),
    "cfg-bad-width": (lambda f: _edit_json(f / "L0.attn" / "cfg.json", d_sae=0), ["d_sae", "positive integer"]),
    "cfg-k-missing": (lambda f: _edit_json(f / "L0.attn" / "cfg.json", k=None), ["k is 100", "1 <= k <= d_sae (96)"]),
    "cfg-flag-not-bool": (
        lambda f: _edit_json(f / "L0.attn" / "cfg.json", apply_b_dec_to_input="yes"),
        ["does not run"],
    ),
    "cfg-k-too-big": (lambda f: _edit_json(f / "L0.attn" / "cfg.json", k=1000), ["1 <= k <= d_sae"]),
    "cfg-wrong-width": (lambda f: _edit_json(f / "L0.attn" / "cfg.json", d_in=95), ["W_enc", "do not belong together"]),
    "weights-garbage": (
        lambda f: (f / "L0.attn" / "sae_weights.safetensors").write_bytes(b"\x00" * 7),
        ["not a readable safetensors file"],
    ),
    "index-not-utf8": (lambda f: (f / "index.json").write_bytes(b"\xff"), ["index.json is not UTF-8"]),
    "index-version": (lambda f: _edit_json(f / "index.json", version="one"), ["version 'one'"]),
    "index-site": (lambda f: _edit_json(f / "index.json", sites=[{"site": 3}]), ["site entry 0", "site name"]),
    "index-twice": (
        lambda f: _edit_json(f / "index.json", sites=2 * json.loads((f / "index.json").read_text())["sites"]),
        ["appears twice"],
    ),
    "index-folder": (lambda f: ((f / "index.json").unlink(), (f / "index.json").mkdir()), ["has no index.json"]),
    "d_in-mismatch": (_narrow, ["d_in 8", "96 wide"]),
}


@pytest.mark.parametrize("change, words", SETS.values(), ids=SETS.keys())
def test_bad_dictionary_sets(tmp_path, capsys, monkeypatch, toy, small_set, change, words):
    import shutil

    import circuits.app.loading

    monkeypatch.setattr(circuits.app.loading, "load_model", lambda *a, **k: toy)  # the shared toy model, loaded once
    folder = tmp_path / "set"
    shutil.copytree(small_set, folder)
    change(folder)
    one_error_line(
        capsys, main(["dictionaries", "report", "--dictionaries", str(folder), "--sentences", "4"]), str(folder), *words
    )


# ------------------------------------------------------------------------------- label corpus


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["does not exist"]),
        (b"", ["no text"]),
        (b"\n \n", ["no text"]),
        (b"Mary went\n\xff", ["not UTF-8"]),
    ],
    ids=["missing", "empty", "blank", "not-utf8"],
)
def test_bad_label_corpus_is_refused_before_the_run(tmp_path, capsys, no_model, content, words):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    code = main(["discover", "ioi", "--label-corpus", str(corpus), "--out", str(tmp_path / "run")])
    one_error_line(capsys, code, str(corpus), *words)


def test_unknown_words_in_a_label_corpus_name_the_line(tmp_path, toy_tokenizer):
    from circuits.data.corpus import text_corpus
    from circuits.errors import CircuitsError

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Mary went\n\nthe qwzx sat\n")
    with pytest.raises(CircuitsError, match=r"corpus\.txt, line 3: words not in the vocabulary: 'qwzx'"):
        text_corpus(corpus, toy_tokenizer)


# ------------------------------------------------------------------------------- numeric flags

FLAG_CASES = [
    (["discover", "ioi"], "--examples", "0"),
    (["discover", "ioi"], "--examples", "-1"),
    (["discover", "ioi"], "--steps", "0"),
    (["discover", "ioi"], "--faithfulness", "2"),
    (["discover", "ioi"], "--faithfulness", "nan"),
    (["discover", "ioi"], "--confidence", "1"),
    (["discover", "ioi"], "--threads", "0"),
    (["discover", "ioi"], "--max-targets", "0"),
    (["discover", "ioi"], "--eval-examples", "0"),
    (["discover", "ioi"], "--curve-points", "0"),
    (["discover", "ioi"], "--nodes", "0"),
    (["discover", "ioi"], "--node-threshold", "-0.5"),
    (["discover", "ioi"], "--node-threshold", "inf"),
    (["discover", "ioi"], "--seed", "-1"),
    (["discover", "ioi"], "--edge-examples", "0"),
    (["discover", "ioi"], "--max-nodes", "1.5"),
    (["evaluate", "c.json", "ioi"], "--eval-examples", "0"),
    (["evaluate", "c.json", "ioi"], "--threads", "0"),
    (["evaluate", "c.json", "ioi"], "--seed", "x"),
    (["validate-attribution", "ioi"], "--examples", "0"),
    (["validate-attribution", "ioi"], "--edges", "2"),
    (["tasks", "show", "ioi"], "--examples", "0"),
    (["tasks", "export", "ioi", "--out", "x.jsonl"], "--examples", "-3"),
    (["toy", "train", "--out", "x"], "--layers", "0"),
    (["toy", "train", "--out", "x"], "--steps", "0"),
    (["toy", "eval"], "--examples", "0"),
    (["dictionaries", "train", "--out", "x"], "--lr", "0"),
    (["dictionaries", "train", "--out", "x"], "--l1", "-1"),
    (["dictionaries", "train", "--out", "x"], "--k", "0"),
    (["dictionaries", "report"], "--sentences", "0"),
]


@pytest.mark.parametrize("argv, flag, value", FLAG_CASES, ids=[f"{a[0]}{f}={v}" for a, f, v in FLAG_CASES])
def test_bad_numbers_are_usage_errors_naming_the_flag(capsys, no_model, argv, flag, value):
    with pytest.raises(SystemExit) as stop:
        main([*argv, flag, value] if not value.startswith("-") else [*argv, f"{flag}={value}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: ")
    last = err.rstrip("\n").splitlines()[-1]
    assert ": error: argument " in last and flag in last, err
    assert "must be" in last or "expected" in last, last
