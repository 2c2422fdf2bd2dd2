"""Unusual and contradictory CLI inputs: each is refused with exit status 2 and one ``error:`` line that
names the input, or (where the input is reasonable) handled without a wrong result.

Inputs that must be refused before any model is loaded run with model loading made to fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.app.cli import main
from circuits.errors import CircuitError, ModelLoadError

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


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking the HuggingFace libraries for a model fails the test."""

    def refuse(name):
        raise AssertionError(f"the hub was asked for {name!r}")

    monkeypatch.setattr("circuits.app.loading._load_hf", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str], code: int, *words: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for w in words:
        assert w in captured.err, (w, captured.err)
    return captured.err


# ------------------------------------------------------------------------------------ task names


@pytest.mark.parametrize(
    "typo, meant", [("iio", "ioi"), ("IOI", "ioi"), ("sva_pp", "sva-pp"), ("greater_than", "greater-than")]
)
def test_a_near_miss_task_name_suggests_the_closest(capsys, no_model, typo, meant):
    one_error_line(capsys, main(["tasks", "show", typo]), f"unknown task {typo!r}", f"did you mean {meant!r}?")


def test_a_far_task_name_suggests_nothing(capsys, no_model):
    assert "did you mean" not in one_error_line(capsys, main(["tasks", "show", "banana"]), "unknown task 'banana'")


def test_a_missing_task_file_is_not_called_an_unknown_task(tmp_path, capsys, no_model):
    missing = str(tmp_path / "prompts.txt")
    err = one_error_line(capsys, main(["tasks", "show", missing]), missing, "does not exist")
    assert "unknown task" not in err


def test_schema_with_a_built_in_task_is_refused_by_tasks_show(tmp_path, capsys, no_model):
    one_error_line(
        capsys,
        main(["tasks", "show", "ioi", "--schema", str(tmp_path / "s.csv")]),
        "--schema applies to task files only",
    )


def test_an_exported_task_file_without_its_schema_names_the_schema(tmp_path, capsys):
    out = tmp_path / "ioi.jsonl"
    assert main(["tasks", "export", "ioi", "-n", "12", "--out", str(out)]) == 0
    capsys.readouterr()
    schema = tmp_path / "ioi_schema.csv"
    one_error_line(capsys, main(["tasks", "show", str(out)]), f"pass --schema {schema}")
    assert main(["tasks", "show", str(out), "--schema", str(schema)]) == 0


def test_toy_eval_reads_the_schema_beside_a_task_file(tmp_path, capsys, monkeypatch, toy):
    import circuits.app.loading

    monkeypatch.setattr(circuits.app.loading, "load_model", lambda *a, **k: toy)
    out = tmp_path / "ioi.jsonl"
    assert main(["tasks", "export", "ioi", "-n", "12", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["toy", "eval", "--tasks", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[str(out)]["accuracy"] > 0.5


# ------------------------------------------------------------------------------------ model, device


def test_cpu_zero_is_the_cpu_and_another_cpu_index_is_refused(capsys):
    import torch

    from circuits.app.loading import resolve_device

    assert resolve_device("cpu:0") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="there is one CPU device"):
        resolve_device("cpu:1")
    one_error_line(capsys, main(["toy", "eval", "--device", "cpu:3"]), "'cpu:3'", "--device cpu")


def test_model_options_that_are_no_model_are_refused_without_the_hub(tmp_path, capsys, no_hub):
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        (str(tmp_path), ["neither a saved toy model", "config.json"]),
        (str(tmp_path / "notes.txt"), ["is a file, not a model"]),
        (str(tmp_path / "missing"), ["does not exist"]),
        ("./missing-model", ["does not exist"]),
        ("", ["model name is empty"]),
        ("  ", ["model name is empty"]),
    ]
    for value, words in cases:
        one_error_line(capsys, main(["toy", "eval", "--model", value, "-n", "2"]), *words)


# ------------------------------------------------------------------------------------ discover


def test_a_label_corpus_with_no_labels_is_a_contradiction(tmp_path, capsys, no_model):
    out = tmp_path / "run"
    code = main(["discover", "ioi", "--no-labels", "--label-corpus", str(tmp_path / "corpus.txt"), "--out", str(out)])
    one_error_line(capsys, code, "--label-corpus", "--no-labels")
    assert not out.exists()


def test_more_edge_examples_than_examples_is_refused(tmp_path, capsys, no_model):
    out = tmp_path / "run"
    code = main(["discover", "ioi", "--examples", "8", "--edge-examples", "1000", "--out", str(out)])
    one_error_line(capsys, code, "--edge-examples 1000", "8 attribution examples")
    assert not out.exists()


def _scored_graph():
    from circuits.graph.ids import add_metric, add_node, new_graph

    G = new_graph(
        model="toy", dictionaries="d", task="ioi", method="ig", positions="agnostic", position_labels=["*"], n_layers=3
    )
    m = add_metric(G, effect=1.0)
    a = add_node(G, "embed", "*", 0, effect=0.25)
    b = add_node(G, "L1.transcoder", "*", 3, effect=-0.5)
    G.add_edge(a, b, effect=0.5)
    G.add_edge(b, m, effect=1.0)
    return G


def test_a_node_threshold_above_every_effect_names_the_largest():
    from circuits.app.pipeline import choose_circuit

    with pytest.raises(
        CircuitError, match=r"--node-threshold 1e\+30 selects no node: the largest \|effect\| .* is 0\.5"
    ):
        choose_circuit(_scored_graph(), node_threshold=1e30)
    assert choose_circuit(_scored_graph(), node_threshold=0.2).graph.number_of_nodes() == 3


def test_too_many_nodes_says_how_many_there_are():
    from circuits.app.pipeline import choose_circuit

    with pytest.raises(CircuitError, match="only 2 to choose from; give --nodes 2 or fewer"):
        choose_circuit(_scored_graph(), n_nodes=10**9)


# ------------------------------------------------------------------------------------ evaluate


def test_evaluating_a_run_folder_points_at_its_circuit(tmp_path, capsys, no_model):
    run = tmp_path / "run"
    run.mkdir()
    one_error_line(
        capsys, main(["evaluate", str(run), "ioi"]), "is a folder", "circuit.json that `circuits discover` wrote"
    )
    (run / "circuit.json").write_text("{}")
    one_error_line(capsys, main(["evaluate", str(run), "ioi"]), f"give {run / 'circuit.json'}")


def _circuit_with(tmp_path: Path, change) -> Path:
    from circuits.graph.io import circuit_to_dict

    data = json.loads(json.dumps(circuit_to_dict(_scored_graph())))
    data["metadata"]["evaluation"] = {"ablation": "mean", "ablate_errors": True, "ablate_embed": False}
    change(data["metadata"])
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m["evaluation"].update(ablate_errors="false"), ["ablate_errors 'false'", "true or false"]),
        (lambda m: m["evaluation"].update(ablate_embed=0), ["ablate_embed 0"]),
        (lambda m: m["evaluation"].update(ablation="resample"), ["ablation 'resample'"]),
        (lambda m: m.update(evaluation=[1]), ["'evaluation' must be a JSON object"]),
        (lambda m: m.update(composition="bogus"), ["'composition' is 'bogus'"]),
    ],
    ids=["errors-string", "embed-int", "ablation", "evaluation-list", "composition"],
)
def test_recorded_evaluation_settings_are_checked(tmp_path, capsys, no_model, change, words):
    path = _circuit_with(tmp_path, change)
    one_error_line(capsys, main(["evaluate", str(path), "ioi", "--allow-other-task"]), str(path), *words)


# ------------------------------------------------------------------------------------ dictionaries


def test_l1_with_topk_dictionaries_is_refused(tmp_path, capsys, no_model):
    out = tmp_path / "set"
    one_error_line(
        capsys, main(["dictionaries", "train", "--out", str(out), "--l1", "0.5"]), "--l1", "--architecture relu"
    )
    assert not out.exists()


def test_validate_attribution_builds_the_composition_as_discover_does(tmp_path, capsys, monkeypatch, toy):
    """A set without transcoders is refused for the transcoder composition, not silently run on no sites."""
    import circuits.app.loading
    from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
    from replacement.sites import Site

    site = Site("attn", 0)
    folder = DictionarySet(
        {site: create_dictionary(site, 96, DictionaryConfig(expansion=1, k=4), seed=0)}, name="attn-only"
    ).save(tmp_path / "set")
    monkeypatch.setattr(circuits.app.loading, "load_model", lambda *a, **k: toy)
    code = main(["validate-attribution", "ioi", "--dictionaries", str(folder), "-n", "2"])
    one_error_line(capsys, code, "'attn-only' has no transcoder sites", "'transcoders'")


# ------------------------------------------------------------------------------------ toy train


@pytest.mark.parametrize("marker, words", [("circuit.json", "run folder"), ("index.json", "dictionary set")])
def test_toy_train_refuses_another_commands_output_folder(tmp_path, capsys, monkeypatch, marker, words):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the output folder was refused")

    monkeypatch.setattr("circuits.toy.model.train_model", refuse)
    out = tmp_path / "out"
    out.mkdir()
    (out / marker).write_text("{}")
    one_error_line(capsys, main(["toy", "train", "--out", str(out), "--steps", "1"]), str(out), words, marker)
    assert sorted(p.name for p in out.iterdir()) == [marker]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['[{"clean_prefix": "a", "patch_prefix": "b", "clean_answer": " c", "patch_answer": " d"}]'],
            "one JSON array",
        ),
        (
            [
                '{"clean_prefix": "a", "clean_prefix": "b", "patch_prefix": "b", "clean_answer": " c", "patch_answer": " d"}'
            ],
            "appears twice",
        ),
        (
            ['{"clean_prefix": "a", "patch_prefix": "b", "clean_answer": " c", "patch_answer": " c"}'],
            "metric would be 0",
        ),
    ],
)
def test_task_file_shapes_that_would_mislead_are_refused(tmp_path, lines, expected):
    from circuits.data.taskfile import load_task
    from circuits.errors import TaskError

    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TaskError, match=expected):
        load_task(path, tokenizer=None)  # refused while reading, before any token is looked up


def test_a_circuit_file_with_a_byte_order_mark_loads(tmp_path):
    from circuits.graph.ids import add_metric, new_graph
    from circuits.graph.io import load_circuit, save_circuit

    G = new_graph(
        model="toy", dictionaries="d", task="ioi", method="ig", positions="agnostic", position_labels=[], n_layers=3
    )
    add_metric(G)
    path = save_circuit(G, tmp_path / "circuit.json")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_circuit(path).graph["n_layers"] == 3


def test_prompts_longer_than_the_context_are_one_sentence(tmp_path, capsys):
    words = " ".join(["Mary"] * 60)
    row = {
        "clean_prefix": f"{words} and John",
        "patch_prefix": f"{words} and Mary",
        "clean_answer": " Mary",
        "patch_answer": " John",
    }
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(row) for _ in range(4)) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    code = main(
        [
            "discover",
            str(path),
            "--out",
            str(out),
            "--examples",
            "2",
            "--eval-examples",
            "1",
            "--no-labels",
            "--dictionaries",
            "neurons",
            "--nodes",
            "2",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "reads at most 48" in err and not out.exists()
