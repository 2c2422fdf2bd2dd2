"""The ``circuits`` command line (run in-process) and the example script."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from circuits.app.cli import main
from circuits.data.taskfile import load_task
from circuits.data.tasks import make_task
from circuits.toy.tokenizer import WordTokenizer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "run_task.py"


def test_help_lists_the_command_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: circuits" in out
    for group in ("toy", "tasks"):
        assert f"    {group} " in out


def test_tasks_list_names_every_built_in_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["greater-than", "ioi", "ioi-baba", "sva-across-rc", "sva-pp", "sva-simple", "sva-within-rc"]


def test_validate_attribution_prints_json_that_agrees_with_patching(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "validate-attribution",
        "sva-simple",
        "-n",
        "2",
        "--edges",
        "24",
        "--steps",
        "4",
        "--json",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    keys = (
        "ig_spearman",
        "atp_spearman",
        "ig_spearman_top100",
        "edge_spearman",
        "atp_edge_spearman",
        "exact_contexts_spearman",
        "ig_spearman_two_contexts",  # SVA prompts align token for token
        "edge_spearman_exact_local",
        "graph_edge_spearman",
        "graph_edge_spearman_exact_local",
    )
    for key in keys:
        assert -1.0 <= result[key] <= 1.0
    assert result["n_edges"] >= 10 and result["n_nodes"] > 100
    # First-order attribution is the derivative of exact patching: on small nodes it must rank them alike.
    assert result["atp_spearman"] > 0.8


def test_toy_eval_json(toy, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "eval", "--json", "--tasks", "ioi", "sva-pp", "-n", "32", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"ioi", "sva-pp"}
    for r in results.values():
        assert set(r) == {"accuracy", "logit_diff"}
        assert r["accuracy"] >= 0.95 and r["logit_diff"] > 0


def test_toy_eval_table(toy, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "eval", "--tasks", "greater-than", "-n", "16", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "accuracy", "metric"]
    name, accuracy, metric = lines[1].split()
    assert name == "greater-than" and float(accuracy) >= 0.95 and 0 < float(metric) <= 1


def test_export_then_show_and_eval_the_file(
    tmp_path: Path, toy_tokenizer: WordTokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sva_pp.jsonl"
    assert main(["tasks", "export", "sva-pp", "--out", str(out), "-n", "12", "--seed", "2"]) == 0
    schema = tmp_path / "sva_pp_schema.csv"
    assert f"wrote {out} and {schema}" in capsys.readouterr().out
    task = make_task("sva-pp", toy_tokenizer, n=12, seed=2)
    loaded = load_task(out, toy_tokenizer, schema=schema)
    assert [e.clean for e in loaded.examples] == [e.clean for e in task.examples]
    assert [e.schema for e in loaded.examples] == [e.schema for e in task.examples]

    assert main(["tasks", "show", str(out), "--schema", str(schema), "-n", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "sva_pp: 12 examples, metric logit_diff, spans prefix | subj | prep | det | attractor"
    first = task.examples[0]
    words = first.clean_text.split()
    spans = f"[prefix: <bos> The] [subj: {words[1]}] [prep: {words[2]}] [det: the] [attractor: {words[4]}]"
    assert shown[1].split(None, 1)[1] == spans
    assert len([s for s in shown if s.strip().startswith("clean")]) == 2

    assert main(["toy", "eval", "--json", "--tasks", str(out), "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[str(out)]["accuracy"] >= 0.95


def test_show_a_built_in_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "show", "ioi", "-n", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ioi: 1 examples, metric logit_diff, spans prefix | IO | and | S1 |")
    assert "[end: to]" in out[1]


def test_a_bad_task_file_is_exit_code_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {
                "clean_prefix": "The teachers",
                "patch_prefix": "The teacher",
                "clean_answer": " are",
                "patch_answer": " is",
            }
        )
        + "\n"
        + json.dumps({"clean_prefix": "The teachers", "patch_prefix": "The teacher", "clean_answer": " are here"})
        + "\n"
    )
    assert main(["tasks", "show", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {bad}, line 2: missing field 'patch_answer'\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["tasks", "show", "ioi-typo"], ["unknown task 'ioi-typo'"]),
        (["tasks", "export", "sva-typo", "--out", "{tmp}/x.jsonl"], ["unknown task 'sva-typo'"]),
        (["tasks", "show", "{tmp}/missing.jsonl"], ["missing.jsonl"]),
    ],
    ids=["show-unknown", "export-unknown", "missing-file"],
)
def test_user_errors_are_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    for w in words:
        assert w in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_an_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["discover-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_the_example_script_runs(toy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "sva-within-rc", "-n", "16"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sva-within-rc: ")
    assert out[-1].startswith("accuracy ") and out[-1].endswith("(16 examples)")
    accuracy = float(out[-1].split()[1])
    assert accuracy >= 0.95


def test_model_option_with_a_hub_name_offline_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://huggingface.invalid")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["toy", "eval", "--model", "gpt2", "--tasks", "ioi", "-n", "4", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: the weights of 'gpt2' are not available offline")
    assert captured.err.count("\n") == 1


def test_validate_attribution_checks_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in (("--steps", "0"), ("--edges", "2")):
        with pytest.raises(SystemExit) as exit_info:
            main(["validate-attribution", "ioi", flag, value])
        assert exit_info.value.code == 2
        assert "must be at least" in capsys.readouterr().err


def test_an_unavailable_device_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in (("cuda", "no CUDA device"), ("quantum", "unknown device"), ("meta", "not supported")):
        assert main(["toy", "eval", "--tasks", "ioi", "-n", "2", "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_a_missing_dictionary_folder_is_reported_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import circuits.app.loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the dictionaries were checked")

    monkeypatch.setattr(circuits.app.loading, "load_model", no_model)
    (tmp_path / "empty").mkdir()
    for argv, words in (
        (
            ["discover", "ioi", "--dictionaries", str(tmp_path / "nope"), "--out", str(tmp_path / "run")],
            "does not exist",
        ),
        (
            ["discover", "ioi", "--dictionaries", str(tmp_path / "empty"), "--out", str(tmp_path / "run")],
            "no index.json",
        ),
        (["validate-attribution", "ioi", "--dictionaries", str(tmp_path / "nope")], "does not exist"),
        (["dictionaries", "report", "--dictionaries", str(tmp_path / "nope")], "does not exist"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert not (tmp_path / "run").exists()


def test_training_never_overwrites_the_shipped_copy_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["toy", "train"], ["dictionaries", "train"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "one of the arguments --out --replace-shipped is required" in capsys.readouterr().err


def test_an_unknown_flag_is_reported_with_its_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, prog in (
        (["discover", "ioi", "--bogus"], "circuits discover"),
        (["toy", "eval", "--bogus"], "circuits toy eval"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"{prog}: error: unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        main(["--bogus", "tasks", "list"])  # before the subcommand: the top level's flag
    assert "circuits: error: unrecognized arguments: --bogus" in capsys.readouterr().err
