"""The run configs and the command-line options made from them: every field has a flag (or says it
has none), every flag's default is the field's default, and the parsed options give the config."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from circuits.app.cli import build_parser
from circuits.app.commands import add_config_options, config_fields, config_from_args, dest, flag_default
from circuits.app.config import DataConfig, DiscoverConfig, EvaluateConfig, SelectionConfig
from circuits.app.validation import ValidationConfig
from circuits.errors import CircuitError
from circuits.evaluation import EvalConfig
from circuits.graph.build import BuildConfig

CONFIGS = {"discover": DiscoverConfig, "evaluate": EvaluateConfig, "validate-attribution": ValidationConfig}
POSITIONALS = {"discover": ["ioi"], "evaluate": ["circuit.json", "ioi"], "validate-attribution": ["ioi"]}


def leaf_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` and of the configs nested in it."""
    leaves = []
    for f, nested in config_fields(cls):
        leaves.extend(leaf_fields(nested) if nested is not None else [f])
    return leaves


def command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_field_names_its_flag_and_the_flag_defaults_to_the_field_default(name):
    parser = command_parser(name)
    actions = {a.dest: a for a in parser._actions}
    for f in leaf_fields(CONFIGS[name]):
        assert "flag" in f.metadata, f"{f.name} names no flag"
        key = dest(f)
        if key is None or f.metadata.get("positional"):
            continue
        assert key in actions, f"{f.metadata['flag']} is not an option of `circuits {name}`"
        assert actions[key].default == flag_default(f), f.metadata["flag"]
        assert actions[key].help, f.metadata["flag"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_options_give_the_default_config(name):
    args = command_parser(name).parse_args(POSITIONALS[name])
    built = config_from_args(CONFIGS[name], args)
    if name == "discover":
        assert built == DiscoverConfig(data=DataConfig(task="ioi"))
    elif name == "evaluate":
        assert built == EvaluateConfig(circuit="circuit.json", task="ioi")
    else:
        assert built == ValidationConfig(task="ioi")


def test_discover_flags_reach_their_phase_configs():
    args = command_parser("discover").parse_args(
        [
            "sva-pp",
            "--examples",
            "12",
            "--steps",
            "3",
            "--max-targets",
            "7",
            "--keep-errors",
            "--no-keep-embed",
            "--confidence",
            "0",
            "--no-edge-curve",
            "--no-labels",
            "--nodes",
            "9",
            "--composition",
            "sae",
        ]
    )
    config = config_from_args(DiscoverConfig, args)
    assert config.data.task == "sva-pp" and config.data.n_attribution == 12
    assert config.attribution.steps == 3 and config.attribution.max_targets == 7
    assert config.evaluation.ablate_errors is False and config.evaluation.ablate_embed is True
    assert config.selection.confidence is None and config.selection.n_nodes == 9
    assert not config.curves.edge_curve and not config.labels.enabled and config.model.composition == "sae"


def test_the_library_defaults_are_those_of_circuits_discover():
    """One default per setting: the library's phase configs are the ones a plain `circuits discover` runs."""
    assert BuildConfig().steps == 5 and BuildConfig().max_targets == 96
    assert EvalConfig().ablate_embed is False and EvalConfig().ablate_errors is True
    assert DiscoverConfig().attribution == BuildConfig() and DiscoverConfig().evaluation == EvalConfig()


def test_evaluate_keeps_the_recorded_settings_unless_given():
    args = command_parser("evaluate").parse_args(["c.json", "ioi", "--no-keep-errors", "--no-edges"])
    config = config_from_args(EvaluateConfig, args)
    assert config.ablate_errors is True and config.ablate_embed is None and config.ablation is None
    assert config.edges is False


def test_a_field_without_flag_metadata_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Bare:
        n: int = 1

    with pytest.raises(TypeError, match="names no flag"):
        add_config_options(argparse.ArgumentParser(), Bare)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BuildConfig(steps=0), "--steps must be an integer of at least 1"),
        (lambda: BuildConfig(max_nodes=2.5), "--max-nodes must be an integer of at least 1 \\(or None\\)"),
        (lambda: DataConfig(n_eval=True), "--eval-examples must be an integer"),
        (lambda: SelectionConfig(n_nodes=5, node_threshold=0.1), "not both"),
        (lambda: SelectionConfig(faithfulness=1.5), "faithfulness must be in"),
        (
            lambda: DiscoverConfig(data=DataConfig(n_attribution=4), attribution=BuildConfig(edge_examples=8)),
            "--edge-examples 8 is more than the 4 attribution examples",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_sentence_naming_the_flag(make, message):
    with pytest.raises(CircuitError, match=message):
        make()
