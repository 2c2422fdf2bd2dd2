"""Curve arithmetic (size grids, faithfulness, MIB's CPR and CMD) and curve.json, on hand-computed cases."""

from __future__ import annotations

import itertools
import json
import math
import os
import struct

import pytest

from circuits.errors import CircuitError
from circuits.evaluation.curves import (
    MIB_FRACTIONS,
    Curve,
    cmd,
    completeness_score,
    cpr,
    edges_needed,
    faithfulness_score,
    fraction_sizes,
    nodes_needed,
    size_grid,
    span_footprint,
)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


# ----------------------------------------------------------------------------------------- sizes


def test_size_grid_hand_cases():
    assert size_grid(100, 3) == [1, 10, 100]
    # geomspace(1, 10, 5) = 1, 1.78, 3.16, 5.62, 10 -> rounded 1, 2, 3, 6, 10
    assert size_grid(10, 5) == [1, 2, 3, 6, 10]
    assert size_grid(5) == [1, 2, 3, 4, 5]  # fewer sizes than points: every size once
    assert size_grid(1) == [1]
    assert size_grid(7, 1) == [7]


def test_size_grid_pushes_repeats_up():
    # geomspace(1, 20, 8) = 1, 1.53, 2.35, 3.61, 5.54, 8.50, 13.04, 20 -> 1, 2, 2, 4, 6, 8, 13, 20;
    # the second 2 moves up to 3
    assert size_grid(20, 8) == [1, 2, 3, 4, 6, 8, 13, 20]


@pytest.mark.parametrize(("max_size", "n_points"), [(1000, 15), (37, 15), (16, 15), (15, 15), (100000, 40)])
def test_size_grid_properties(max_size, n_points):
    grid = size_grid(max_size, n_points)
    assert grid[0] == 1 and grid[-1] == max_size
    assert len(grid) == min(n_points, max_size)
    assert all(b > a for a, b in itertools.pairwise(grid))
    assert all(isinstance(s, int) for s in grid)


def test_size_grid_is_log_spaced():
    grid = size_grid(10000, 5)
    assert grid == [1, 10, 100, 1000, 10000]


@pytest.mark.parametrize(("max_size", "n_points"), [(0, 15), (-3, 15), (10, 0), (2.5, 3), (True, 3)])
def test_size_grid_refuses(max_size, n_points):
    with pytest.raises(CircuitError, match=">= 1"):
        size_grid(max_size, n_points)


def test_fraction_sizes():
    assert fraction_sizes(1000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert fraction_sizes(32491)[:3] == [33, 65, 163]  # ceil of 32.491, 64.982, 162.455
    assert fraction_sizes(30, [0.1]) == [3]  # not 4, although 0.1 * 30 is 3.0000000000000004 in floats
    assert fraction_sizes(10) == [1, 1, 1, 1, 1, 1, 1, 2, 5, 10]
    with pytest.raises(CircuitError, match=r"\(0, 1\]"):
        fraction_sizes(10, [0.0])


# ---------------------------------------------------------------------------------------- scores


def test_faithfulness_and_completeness_scores():
    assert faithfulness_score(3.0, 5.0, 1.0) == 0.5
    assert faithfulness_score(5.0, 5.0, 1.0) == 1.0
    assert faithfulness_score(1.0, 5.0, 1.0) == 0.0
    assert faithfulness_score(-1.0, 3.0, 1.0) == -1.0
    assert completeness_score(2.0, 5.0, 1.0) == 0.25


def test_faithfulness_undefined_when_model_equals_empty():
    with pytest.raises(CircuitError, match=r"undefined.*2.0"):
        faithfulness_score(1.0, 2.0, 2.0)


def test_cmd_of_perfect_circuit_is_zero():
    assert cmd(MIB_FRACTIONS, [1.0] * 10) == 0.0
    assert cpr(MIB_FRACTIONS, [1.0] * 10) == pytest.approx(0.999, abs=1e-15)


def test_piecewise_linear_hand_case():
    k, f = [0.0, 0.5, 1.0], [0.0, 1.0, 0.5]
    # CPR: .5 * (0 + 1) / 2 + .5 * (1 + .5) / 2 = .25 + .375
    assert cpr(k, f) == pytest.approx(0.625, abs=1e-15)
    # |1 - f| = 1, 0, .5 -> .5 * (1 + 0) / 2 + .5 * (0 + .5) / 2 = .25 + .125
    assert cmd(k, f) == pytest.approx(0.375, abs=1e-15)
    # the order of the points does not matter
    assert cpr([1.0, 0.0, 0.5], [0.5, 0.0, 1.0]) == pytest.approx(0.625, abs=1e-15)


def test_linear_f_over_mib_fractions():
    # f(k) = k: the trapezoid rule is exact, so CPR = (1 - .001^2) / 2 and CMD = .999 - CPR
    f = list(MIB_FRACTIONS)
    assert cpr(MIB_FRACTIONS, f) == pytest.approx(0.4999995, abs=1e-12)
    assert cmd(MIB_FRACTIONS, f) == pytest.approx(0.4990005, abs=1e-12)


def test_overshoot_counts_in_cmd():
    assert cpr([0.0, 1.0], [2.0, 2.0]) == 2.0
    assert cmd([0.0, 1.0], [2.0, 2.0]) == 1.0
    assert cmd([0.0, 1.0], [0.0, 2.0]) == 1.0  # |1-f| = 1, 1 at the points


@pytest.mark.parametrize(
    ("k", "f", "message"),
    [
        ([0.1, 0.2], [1.0], "one value per fraction"),
        ([0.1], [1.0], "at least 2 points"),
        ([0.1, 0.1], [1.0, 0.5], "repeat"),
        ([0.5, 1.5], [1.0, 1.0], r"\[0, 1\]"),
        ([0.1, 0.2], [1.0, float("nan")], "finite"),
    ],
)
def test_area_refuses(k, f, message):
    for area in (cpr, cmd):
        with pytest.raises(CircuitError, match=message):
            area(k, f)


# ----------------------------------------------------------------------------------------- curve


def make_curve() -> Curve:
    return Curve(
        sizes_nodes=[1, 2, 4, 8],
        sizes_edges=[2, 5, 10, 20],
        faithfulness=[0.1 + 0.2, 1e-300, -0.0, 0.9],
        completeness=[0.9, 0.5, 5e-324, -1 / 3],
        total_nodes=8,
        total_edges=20,
        metadata={"task": "ioi", "method": "ig", "grid": [1, 2.5]},
    )


def test_curve_json_round_trip_is_exact(tmp_path):
    curve = make_curve().with_areas()
    path = curve.to_json(tmp_path / "curve.json")
    back = Curve.from_json(path)
    assert back == curve
    for name in ("faithfulness", "completeness"):
        assert [bits(x) for x in getattr(back, name)] == [bits(x) for x in getattr(curve, name)]
    assert bits(back.cpr) == bits(curve.cpr) and bits(back.cmd) == bits(curve.cmd)
    assert math.copysign(1.0, back.faithfulness[2]) == -1.0
    assert json.loads(path.read_text())["schema_version"] == 1
    assert os.listdir(tmp_path) == ["curve.json"]


def test_curve_without_completeness_or_areas(tmp_path):
    curve = Curve([1, 3], [1, 4], [0.5, 1.0])
    back = Curve.from_json(curve.to_json(tmp_path / "curve.json"))
    assert back == curve and back.completeness is None and back.cpr is None


def test_with_areas_uses_edge_fractions():
    curve = Curve(sizes_nodes=[1, 2, 3], sizes_edges=[0, 5, 10], faithfulness=[0.0, 1.0, 0.5], total_edges=10)
    assert curve.edge_fractions() == [0.0, 0.5, 1.0]
    done = curve.with_areas()
    assert (done.cpr, done.cmd) == (pytest.approx(0.625), pytest.approx(0.375))
    assert curve.cpr is None  # the original is unchanged
    with pytest.raises(CircuitError, match="total_edges"):
        Curve([1, 2], [1, 2], [0.0, 1.0]).with_areas()


def test_nodes_needed():
    curve = Curve(sizes_nodes=[8, 1, 4, 2], sizes_edges=[30, 1, 12, 4], faithfulness=[0.85, 0.1, 0.9, 0.5])
    assert nodes_needed(curve, 0.8) == 4
    assert nodes_needed(curve, 0.5) == 2  # reaching the level exactly counts
    assert nodes_needed(curve, 0.86) == 4
    assert nodes_needed(curve, 0.95) is None
    assert nodes_needed(curve, -1.0) == 1
    assert edges_needed(curve, 0.8) == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes_nodes": [1, 2], "sizes_edges": [1], "faithfulness": [0.1, 0.2]}, "differ in length"),
        (
            {"sizes_nodes": [1], "sizes_edges": [1], "faithfulness": [0.1], "completeness": [0.1, 0.2]},
            "differ in length",
        ),
        ({"sizes_nodes": [1.5], "sizes_edges": [1], "faithfulness": [0.1]}, "ints"),
        ({"sizes_nodes": [1], "sizes_edges": [1], "faithfulness": [float("inf")]}, "finite"),
        ({"sizes_nodes": [1], "sizes_edges": [1], "faithfulness": [0.1], "cpr": float("nan")}, "cpr"),
        ({"sizes_nodes": [1], "sizes_edges": [1], "faithfulness": [0.1], "total_edges": -1}, "total_edges"),
    ],
)
def test_curve_refuses_bad_values(kwargs, message):
    with pytest.raises(CircuitError, match=message):
        Curve(**kwargs)


def _write(tmp_path, content) -> str:
    path = tmp_path / "curve.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_curve_file_errors(tmp_path):
    good = make_curve().to_dict()
    cases = [
        ("not json", "invalid JSON"),
        ([1, 2], "not a curve file"),
        ({**good, "schema_version": 2}, "schema_version"),
        ({k: v for k, v in good.items() if k != "faithfulness"}, "lacks 'faithfulness'"),
        ({**good, "faithfulnes": [1.0]}, "unknown fields 'faithfulnes'"),
        ({**good, "sizes_edges": [1]}, "differ in length"),
    ]
    for content, message in cases:
        with pytest.raises(CircuitError, match=message):
            Curve.from_json(_write(tmp_path, content))
    with pytest.raises(CircuitError, match="cannot read curve file"):
        Curve.from_json(tmp_path / "absent.json")


def test_curve_refuses_unwritable_metadata(tmp_path):
    curve = make_curve()
    curve.metadata["obj"] = object()
    with pytest.raises(CircuitError, match="not JSON"):
        curve.to_json(tmp_path / "curve.json")
    assert os.listdir(tmp_path) == []


def test_span_footprint_counts_an_agnostic_node_at_every_span_where_it_acts():
    import networkx as nx

    schema = nx.DiGraph()
    schema.add_nodes_from(["L0.mlp/IO/3", "L0.mlp/S1/3", "L0.mlp/end/3", "L0.mlp/end/4", "L1.attn/end/3", "metric"])
    # feature 3 of L0.mlp acts at three spans; the same index at another site is another feature
    assert span_footprint(["L0.mlp/*/3"], schema) == 3
    assert span_footprint(["L0.mlp/*/3", "L0.mlp/*/4", "L1.attn/*/3"], schema) == 5
    assert span_footprint(["L0.mlp/end/3", "L0.mlp/IO/3"], schema) == 2  # span nodes count once each
    assert span_footprint(["L0.mlp/*/9"], schema) == 0  # no effect at any span
    assert span_footprint(["L0.mlp/*/err"], schema) == 0
