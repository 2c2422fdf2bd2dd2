"""Example splits recorded in circuit.json and reused by ``circuits evaluate``; evaluate and discover
refusing inputs that would give a wrong number without saying so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from circuits.app.cli import main
from circuits.app.config import (
    CurveConfig,
    DataConfig,
    DiscoverConfig,
    EvaluateConfig,
    LabelConfig,
    ModelConfig,
    SelectionConfig,
)
from circuits.app.pipeline import discover
from circuits.app.reevaluation import evaluate_saved
from circuits.data.splits import file_sha256, load_data
from circuits.data.taskfile import save_task
from circuits.data.tasks import make_task
from circuits.errors import CircuitError, TaskError
from circuits.graph.build import BuildConfig, check_token_positions
from circuits.graph.io import load_circuit, save_circuit
from replacement.dictionaries import DictionaryConfig, DictionarySet, create_dictionary
from replacement.sites import SAE_KINDS, model_sites


def fast(dict_dir: Path, data: DataConfig, positions: str = "agnostic", n_nodes: int | None = None) -> DiscoverConfig:
    """A quick run (no labels, no edge curve) with the dictionaries of ``dict_dir``."""
    return DiscoverConfig(
        data=data,
        model=ModelConfig(dictionaries=str(dict_dir), device="cpu"),
        attribution=BuildConfig(max_targets=8, positions=positions),
        selection=SelectionConfig(n_nodes=n_nodes),
        curves=CurveConfig(points=2, edge_curve=False),
        labels=LabelConfig(enabled=False),
    )


def evaluate(path: Path, task: str, **options):
    return evaluate_saved(EvaluateConfig(circuit=str(path), task=task, **options))


@pytest.fixture(scope="module")
def dict_dir(toy, tmp_path_factory) -> Path:
    """Small untrained TopK SAEs and transcoders for the toy model (a small graph, quick to attribute)."""
    d = toy.model.cfg.d_model
    dicts = {
        s: create_dictionary(s, d, DictionaryConfig(architecture="topk", d_sae=16, k=4), seed=i)
        for i, s in enumerate(model_sites(toy.model.cfg.n_layers, (*SAE_KINDS, "transcoder")))
    }
    return DictionarySet(dicts, name="random-saes").save(tmp_path_factory.mktemp("dicts") / "random-saes")


@pytest.fixture(scope="module")
def builtin_run(dict_dir, tmp_path_factory):
    """A run on a built-in task with a seed and counts other than the defaults."""
    out = tmp_path_factory.mktemp("builtin")
    config = fast(dict_dir, DataConfig(task="ioi", n_attribution=6, n_eval=5, n_selection=4, seed=3))
    return config, discover(config, out=out), out / "circuit.json"


@pytest.fixture(scope="module")
def task_file(toy, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("taskfile")
    task = make_task("ioi", toy.tokenizer, n=30, seed=7)
    save_task(task, folder / "ioi_file.jsonl", schema=folder / "ioi_file_schema.csv")
    return folder / "ioi_file.jsonl", folder / "ioi_file_schema.csv"


@pytest.fixture(scope="module")
def file_run(dict_dir, task_file, tmp_path_factory):
    """A run on a task file cut into attribution (rows 0:6), selection (6:10) and held-out (10:15) parts."""
    jsonl, schema = task_file
    out = tmp_path_factory.mktemp("filerun")
    data = DataConfig(task=str(jsonl), schema=str(schema), n_attribution=6, n_eval=5, n_selection=4)
    config = fast(dict_dir, data, positions="schema")
    return config, discover(config, out=out), out / "circuit.json"


def held_out(config: DiscoverConfig, tokenizer):
    """The held-out examples of a run, as discover draws them."""
    d = config.data
    n_selection = d.n_selection if config.selection.by_faithfulness else 0
    return load_data(d.task, tokenizer, d.n_attribution, d.n_eval, d.seed, d.schema, n_selection)


def texts(task) -> list[tuple[str, str]]:
    return [(e.clean_text, e.corrupted_text) for e in task.examples]


# ------------------------------------------------------------------------ recorded and reused


def test_a_builtin_run_records_its_splits_and_evaluate_reuses_them(builtin_run, toy):
    config, result, path = builtin_run
    meta = load_circuit(path).graph
    assert meta["splits"] == {
        "kind": "builtin",
        "task": "ioi",
        "attribution": {"seed": 3, "examples": 6},
        "selection": {"seed": 5, "examples": 4},
        "evaluation": {"seed": 4, "examples": 5},
    }
    again = evaluate(path, "ioi", device="cpu", edges=False)
    assert again.split == {"kind": "builtin", "task": "ioi", "seed": 4, "examples": 5}
    assert texts(again.examples) == texts(held_out(config, toy.tokenizer).evaluation)
    assert abs(again.evaluation.faithfulness - result.evaluation.faithfulness) <= 1e-9
    assert abs(again.evaluation.completeness - result.evaluation.completeness) <= 1e-9


def test_a_task_file_run_records_rows_and_hash_and_evaluate_reuses_them(file_run, task_file, toy):
    config, result, path = file_run
    jsonl, schema = task_file
    splits = load_circuit(path).graph["splits"]
    assert splits["kind"] == "file"
    assert splits["path"] == str(jsonl.resolve()) and splits["sha256"] == file_sha256(jsonl)
    assert splits["schema"] == str(schema.resolve()) and splits["schema_sha256"] == file_sha256(schema)
    assert [splits[k]["rows"] for k in ("attribution", "selection", "evaluation")] == [[0, 6], [6, 10], [10, 15]]

    again = evaluate(path, str(jsonl), device="cpu", edges=False)  # the schema too comes from circuit.json
    assert again.split["rows"] == [10, 15] and again.split["schema"] == str(schema.resolve())
    rows = [json.loads(line)["clean_prefix"] for line in jsonl.read_text().splitlines()]
    assert [e.clean_text for e in again.examples.examples] == rows[10:15]
    assert texts(again.examples) == texts(held_out(config, toy.tokenizer).evaluation)
    assert abs(again.evaluation.faithfulness - result.evaluation.faithfulness) <= 1e-9


def test_overrides_choose_other_examples(builtin_run, file_run, task_file):
    _, _, bpath = builtin_run
    _, _, fpath = file_run
    jsonl, _ = task_file
    other_seed = evaluate(bpath, "ioi", seed=9, n_eval=3, device="cpu", edges=False)
    assert other_seed.split == {"kind": "builtin", "task": "ioi", "seed": 9, "examples": 3}
    assert len(other_seed.examples) == 3
    more = evaluate(fpath, str(jsonl), n_eval=8, device="cpu", edges=False)
    assert more.split["rows"] == [10, 18] and len(more.examples) == 8  # counted from the first held-out row
    chosen = evaluate(fpath, str(jsonl), rows=(20, 23), device="cpu", edges=False)
    assert chosen.split["rows"] == [20, 23] and len(chosen.examples) == 3
    with pytest.raises(TaskError, match="outside"):
        evaluate(fpath, str(jsonl), rows=(25, 40), device="cpu", edges=False)


def test_circuit_json_with_splits_round_trips_exactly(file_run, tmp_path):
    _, result, path = file_run
    G = load_circuit(path)
    assert G.graph["splits"] == result.circuit.graph["splits"]
    save_circuit(G, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_a_small_task_file_records_the_two_parts_it_is_cut_into(toy, tmp_path):
    save_task(make_task("sva-pp", toy.tokenizer, n=10, seed=1), tmp_path / "sva.jsonl")
    data = load_data(str(tmp_path / "sva.jsonl"), toy.tokenizer, n_attribution=8, n_eval=8, n_selection=4)
    assert data.selection is None
    assert data.splits["attribution"] == {"rows": [0, 5]} and data.splits["selection"] is None
    assert data.splits["evaluation"] == {"rows": [5, 10]}
    assert data.splits["schema"] is None and data.splits["sha256"] == file_sha256(tmp_path / "sva.jsonl")


# ------------------------------------------------------------------------ refused


def test_a_changed_task_file_is_refused_unless_rows_are_given(file_run, task_file, toy, tmp_path, caplog):
    _, _, path = file_run
    jsonl, _ = task_file
    with pytest.raises(CircuitError, match="has changed since") as err:  # the same file, edited in place
        _edited(jsonl, lambda: evaluate(path, str(jsonl), device="cpu", edges=False))
    assert "--rows" in str(err.value)
    # a file of the same name elsewhere is the same task, changed: other examples
    changed, changed_schema = tmp_path / jsonl.name, tmp_path / "changed_schema.csv"
    save_task(make_task("ioi", toy.tokenizer, n=30, seed=8), changed, schema=changed_schema)
    with pytest.raises(CircuitError, match="has changed since"):
        evaluate(path, str(changed), schema=str(changed_schema), device="cpu", edges=False)
    with caplog.at_level(logging.WARNING, logger="circuits.data.splits"):
        res = evaluate(path, str(changed), schema=str(changed_schema), rows=(10, 15), device="cpu", edges=False)
    assert res.split["rows"] == [10, 15] and "has changed" in caplog.text


def _edited(path: Path, run):
    """``run()`` while ``path`` has one more (blank) line, then the file as it was."""
    before = path.read_bytes()
    path.write_bytes(before + b"\n")
    try:
        return run()
    finally:
        path.write_bytes(before)


def test_a_changed_schema_is_refused(file_run, task_file, tmp_path):
    _, _, path = file_run
    jsonl, schema = task_file
    edited = tmp_path / "schema.csv"
    edited.write_bytes(schema.read_bytes() + b"\n")
    with pytest.raises(CircuitError, match=r"schema CSV .* has changed"):
        evaluate(path, str(jsonl), schema=str(edited), device="cpu", edges=False)


def test_another_task_is_refused_unless_allowed(builtin_run, file_run, task_file, caplog):
    _, _, bpath = builtin_run
    _, _, fpath = file_run
    jsonl, schema = task_file
    with pytest.raises(CircuitError, match=r"'ioi', not the built-in task 'ioi-baba'.*--allow-other-task"):
        evaluate(bpath, "ioi-baba", device="cpu", edges=False)
    with pytest.raises(CircuitError, match="built-in task 'ioi', not the task file"):
        evaluate(bpath, str(jsonl), device="cpu", edges=False)
    with pytest.raises(CircuitError, match=r"task file .*ioi_file.jsonl.*, not the built-in task 'ioi'"):
        evaluate(fpath, "ioi", device="cpu", edges=False)
    with caplog.at_level(logging.WARNING, logger="circuits.data.splits"):
        res = evaluate(bpath, "ioi-baba", allow_other_task=True, device="cpu", edges=False)
    assert res.split == {"kind": "builtin", "task": "ioi-baba", "seed": 4, "examples": 5}
    assert "a circuit for the built-in task 'ioi'" in caplog.text
    res = evaluate(bpath, str(jsonl), schema=str(schema), allow_other_task=True, device="cpu", edges=False)
    assert res.split["rows"] == [0, 5]  # no row of another task was attributed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "ioi", "schema": "x.csv"}, "--schema applies to task files only"),
        ({"task": "ioi", "rows": (0, 4)}, "--rows applies to task files only"),
        ({"task": "FILE", "seed": 3}, "--seed applies to built-in tasks only"),
        ({"task": "FILE", "rows": (0, 4), "n_eval": 4}, "not both"),
    ],
)
def test_options_that_do_not_apply_are_refused(builtin_run, task_file, kwargs, message, monkeypatch):
    _, _, path = builtin_run
    jsonl, _ = task_file
    if kwargs["task"] == "FILE":
        kwargs = {**kwargs, "task": str(jsonl)}
    monkeypatch.setattr("circuits.app.reevaluation.load_setup", _never("the model"))  # refused before the model loads
    with pytest.raises(TaskError, match=message):
        evaluate(path, device="cpu", **kwargs)


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was reached")

    return fail


def test_schema_with_a_builtin_task_is_refused_by_discover(toy, dict_dir, tmp_path, capsys):
    with pytest.raises(TaskError, match="--schema applies to task files only"):
        load_data("ioi", toy.tokenizer, 4, 4, schema=str(tmp_path / "x.csv"))
    args = [
        "discover",
        "ioi",
        "--schema",
        str(tmp_path / "x.csv"),
        "--dictionaries",
        str(dict_dir),
        "--examples",
        "4",
        "--eval-examples",
        "4",
        "--nodes",
        "5",
        "--no-labels",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "error: --schema applies to task files only" in capsys.readouterr().err


def test_token_positions_on_prompts_of_different_lengths_are_refused_before_attribution(
    dict_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("circuits.app.pipeline.attribute_graph", _never("attribution"))
    config = fast(dict_dir, DataConfig(task="ioi", n_attribution=6, n_eval=4), positions="token", n_nodes=5)
    with pytest.raises(CircuitError, match=r"same position index would mean different tokens.*--positions schema"):
        discover(config)
    args = [
        "discover",
        "ioi",
        "--positions",
        "token",
        "--dictionaries",
        str(dict_dir),
        "--examples",
        "6",
        "--eval-examples",
        "4",
        "--nodes",
        "5",
        "--no-labels",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--schema" in err and not (tmp_path / "o" / "circuit.json").exists()


def test_token_positions_check_passes_prompts_of_one_length_and_sees_every_part(toy):
    pad = toy.tokenizer.pad_id
    sva = make_task("sva-simple", toy.tokenizer, n=4, seed=0).batch(pad)
    check_token_positions({"attribution": sva, "selection": None, "evaluation": sva})
    longer = make_task("sva-pp", toy.tokenizer, n=4, seed=0).batch(pad)  # one length, but another one
    with pytest.raises(CircuitError, match=r"3 \(attribution\), 6 \(evaluation\)"):
        check_token_positions({"attribution": sva, "evaluation": longer})


# ------------------------------------------------------------------------ circuits saved earlier


def test_a_circuit_without_splits_evaluates_as_before_with_a_warning(builtin_run, toy, tmp_path, caplog):
    _, _, path = builtin_run
    data = json.loads(path.read_text())
    del data["metadata"]["splits"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="circuits.data.splits"):
        res = evaluate(old, "ioi", device="cpu", edges=False)
    assert "records no example splits" in caplog.text
    assert res.split is None
    # as earlier versions did: 64 examples at the recorded evaluation seed
    assert texts(res.examples) == texts(make_task("ioi", toy.tokenizer, n=64, seed=4))
    assert len(evaluate(old, "ioi", n_eval=5, device="cpu", edges=False).examples) == 5
    with pytest.raises(CircuitError, match="'ioi', not 'ioi-baba'"):
        evaluate(old, "ioi-baba", device="cpu", edges=False)


def test_cli_evaluate_uses_the_recorded_split(builtin_run, file_run, task_file, capsys):
    _, result, bpath = builtin_run
    _, fresult, fpath = file_run
    jsonl, _ = task_file
    assert main(["evaluate", str(bpath), "ioi", "--no-edges", "--device", "cpu", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert abs(s["faithfulness"] - result.evaluation.faithfulness) <= 1e-9 and s["evaluation_examples"] == 5
    assert main(["evaluate", str(fpath), str(jsonl), "--no-edges", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "rows 10:15" in out and f"faithfulness {fresult.evaluation.faithfulness:.3f}" in out
    assert main(["evaluate", str(bpath), "ioi-baba", "--device", "cpu"]) == 2
    assert "--allow-other-task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(fpath), str(jsonl), "--rows", "5"])
    assert "START:STOP" in capsys.readouterr().err
