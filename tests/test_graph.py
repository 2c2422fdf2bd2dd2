"""The graph schema: node ids, attributes, row order, and circuit.json's exact round trip."""

from __future__ import annotations

import json
import math
import os
import struct

import networkx as nx
import numpy as np
import pytest

from circuits.errors import CircuitError
from circuits.graph.ids import (
    METRIC,
    add_metric,
    add_node,
    count_nodes,
    new_graph,
    node_attributes,
    node_id,
    parse_node_id,
    position_column,
    row_key,
)
from circuits.graph.io import check_compatible, load_circuit, save_circuit, validate_graph


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def small_graph(positions: str = "token") -> nx.DiGraph:
    """Four nodes inserted out of row order, with awkward floats and edges added in a scrambled order."""
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
        seed=7,
        notes={"k": [1, 2.5]},
    )
    r = add_node(G, "L1.resid", pos[1], 5, effect=1e-300, label="name mover")
    m = add_metric(G, effect=0.1 + 0.2, label="logit diff")
    e = add_node(G, "embed", pos[0], 17, effect=-0.0)
    t = add_node(G, "L0.transcoder", pos[1], "err", effect=5e-324, extra=[1, "a"])
    G.add_edge(t, r, effect=-1 / 3)
    G.add_edge(e, m, effect=1.7976931348623157e308)
    G.add_edge(e, t, effect=-0.0, kind_note="attn")
    G.add_edge(r, m, effect=0.1 + 0.2)
    return G


# ------------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize(
    ("site", "position", "index", "text"),
    [
        ("L1.attn", 5, 123, "L1.attn/5/123"),
        ("embed", "IO", 17, "embed/IO/17"),
        ("L0.resid", 3, "err", "L0.resid/3/err"),
        ("L2.transcoder", "*", 0, "L2.transcoder/*/0"),
        ("L0.mlp", 0, "err", "L0.mlp/0/err"),
        ("embed", "S1+1", 4, "embed/S1+1/4"),
    ],
)
def test_node_id_round_trip(site, position, index, text):
    assert node_id(site, position, index) == text
    parsed = parse_node_id(text)
    assert parsed == (site, position, index)
    assert type(parsed[1]) is type(position)
    assert node_id(*parsed) == text


def test_node_id_accepts_numpy_integers():
    assert node_id("L1.mlp", np.int64(4), np.int32(9)) == "L1.mlp/4/9"


def test_parse_metric():
    assert parse_node_id("metric") == ("metric", None, None)


@pytest.mark.parametrize(
    "bad",
    [
        "L1.attn/5",
        "L1.attn/5/1/2",
        "L1.foo/5/1",
        "X1.attn/5/1",
        "embed/05/1",
        "embed/5/01",
        "embed/5/-1",
        "embed/5/abc",
        "embed//1",
        "embed/5/ERR",
        "",
        "Metric",
        7,
    ],
)
def test_parse_node_id_refuses(bad):
    with pytest.raises(CircuitError):
        parse_node_id(bad)


@pytest.mark.parametrize(
    ("position", "index"),
    [("5", 1), (-1, 1), (True, 1), ("a/b", 1), ("", 1), (1.0, 1), (1, -3), (1, "e"), (1, True), (1, 2.0)],
)
def test_node_id_refuses(position, index):
    with pytest.raises(CircuitError):
        node_id("L0.attn", position, index)


def test_node_id_refuses_unknown_site():
    with pytest.raises(CircuitError, match="site"):
        node_id("L0.conv", 1, 1)


def test_node_attributes():
    assert node_attributes("embed", "IO", 3, effect=0.5) == {
        "site": "embed",
        "layer": -1,
        "sublayer": "embed",
        "position": "IO",
        "feature": 3,
        "kind": "feature",
        "effect": 0.5,
        "label": "",
    }
    err = node_attributes("L2.transcoder", 4, "err")
    assert (err["layer"], err["sublayer"], err["feature"], err["kind"]) == (2, "transcoder", None, "error")


def test_row_key_orders_sublayers_bottom_to_top():
    G = new_graph(
        model="m", dictionaries="d", task="t", method="x", positions="agnostic", position_labels=["*"], n_layers=2
    )
    ids = [
        add_node(G, s, "*", 0)
        for s in ("L1.resid", "L0.mlp", "embed", "L1.attn", "L0.resid", "L1.transcoder", "L0.attn")
    ]
    add_metric(G)
    order = sorted(G, key=lambda n: row_key(G.nodes[n]))
    assert order == [
        "embed/*/0",
        "L0.attn/*/0",
        "L0.mlp/*/0",
        "L0.resid/*/0",
        "L1.attn/*/0",
        "L1.transcoder/*/0",
        "L1.resid/*/0",
        METRIC,
    ]
    assert [row_key(G.nodes[n]) for n in ("embed/*/0", ids[1], ids[5], METRIC)] == [(-1, -1), (0, 1), (1, 1), (2, 0)]
    assert row_key(G.nodes["L1.transcoder/*/0"]) == row_key(G.nodes[add_node(G, "L1.mlp", "*", 3)])


def test_position_column_and_count_nodes():
    G = small_graph("schema")
    assert position_column(G, G.nodes["embed/IO/17"]) == 0
    assert position_column(G, G.nodes["L1.resid/END/5"]) == 1
    assert position_column(G, G.nodes[METRIC]) is None
    assert count_nodes(G) == 3


# -------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("positions", ["token", "schema", "agnostic"])
def test_save_load_round_trips_exactly(tmp_path, positions):
    G = small_graph(positions)
    path = save_circuit(G, tmp_path / "circuit.json")
    H = load_circuit(path)
    assert list(H.nodes) == list(G.nodes)
    assert list(H.edges) == list(G.edges)
    assert H.graph == G.graph
    for n in G:
        assert list(H.nodes[n].items()) == list(G.nodes[n].items())
        assert type(H.nodes[n]["position"]) is type(G.nodes[n]["position"])
        assert bits(H.nodes[n]["effect"]) == bits(G.nodes[n]["effect"])
    for u, v in G.edges:
        assert list(H.edges[u, v].items()) == list(G.edges[u, v].items())
        assert bits(H.edges[u, v]["effect"]) == bits(G.edges[u, v]["effect"])
    # the awkward values, one by one
    e = next(n for n in H if n.startswith("embed"))
    assert math.copysign(1.0, H.nodes[e]["effect"]) == -1.0
    assert H.nodes[METRIC]["effect"] == 0.30000000000000004
    assert next(iter(H.nodes.values()))["effect"] == 1e-300
    # saving the loaded graph writes the same bytes
    again = save_circuit(H, tmp_path / "again.json")
    assert again.read_bytes() == path.read_bytes()


def test_file_layout(tmp_path):
    path = save_circuit(small_graph("token"), tmp_path / "circuit.json")
    data = json.loads(path.read_text())
    assert list(data) == ["schema_version", "metadata", "nodes", "edges"]
    assert data["schema_version"] == 1
    assert {k: data["metadata"][k] for k in ("model", "dictionaries", "task", "method")} == {
        "model": "toy",
        "dictionaries": "toy-saes",
        "task": "ioi",
        "method": "ig",
    }
    assert data["nodes"][0] == {
        "id": "L1.resid/2/5",
        "site": "L1.resid",
        "layer": 1,
        "sublayer": "resid",
        "position": 2,
        "feature": 5,
        "kind": "feature",
        "effect": 1e-300,
        "label": "name mover",
    }
    assert data["edges"][0] == {"source": "L1.resid/2/5", "target": "metric", "effect": 0.30000000000000004}


def test_save_converts_numpy_scalars(tmp_path):
    G = small_graph()
    G.nodes["L1.resid/2/5"]["effect"] = np.float32(0.1)
    H = load_circuit(save_circuit(G, tmp_path / "c.json"))
    assert H.nodes["L1.resid/2/5"]["effect"] == float(np.float32(0.1))


def test_save_is_atomic_and_leaves_nothing_on_failure(tmp_path):
    path = save_circuit(small_graph(), tmp_path / "circuit.json")
    before = path.read_bytes()
    bad = small_graph()
    bad.edges["L1.resid/2/5", "metric"]["effect"] = float("nan")
    with pytest.raises(CircuitError, match="effect"):
        save_circuit(bad, path)
    unserialisable = small_graph()
    unserialisable.graph["obj"] = object()
    with pytest.raises(CircuitError, match="JSON"):
        save_circuit(unserialisable, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["circuit.json"]


def test_save_requires_metadata(tmp_path):
    G = small_graph()
    del G.graph["method"]
    with pytest.raises(CircuitError, match="method"):
        save_circuit(G, tmp_path / "c.json")
    G.graph["method"] = ""
    with pytest.raises(CircuitError, match="method"):
        save_circuit(G, tmp_path / "c.json")


# ---------------------------------------------------------------------------------- bad files


def _write(tmp_path, content) -> str:
    path = tmp_path / "circuit.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _good(tmp_path) -> dict:
    return json.loads(save_circuit(small_graph(), tmp_path / "good.json").read_text())


def test_load_refuses_non_json(tmp_path):
    with pytest.raises(CircuitError, match=r"not a circuit file.*invalid JSON"):
        load_circuit(_write(tmp_path, "model,task\n"))


def test_load_refuses_other_json(tmp_path):
    with pytest.raises(CircuitError, match="not a circuit file"):
        load_circuit(_write(tmp_path, [1, 2]))
    with pytest.raises(CircuitError, match="not a circuit file"):
        load_circuit(_write(tmp_path, {"nodes": [], "edges": []}))


def test_load_refuses_missing_file(tmp_path):
    with pytest.raises(CircuitError, match="cannot read circuit file"):
        load_circuit(tmp_path / "absent.json")


@pytest.mark.parametrize("version", [2, 0, "1", True])
def test_load_refuses_other_schema_version(tmp_path, version):
    data = _good(tmp_path)
    data["schema_version"] = version
    with pytest.raises(CircuitError, match="schema_version"):
        load_circuit(_write(tmp_path, data))


@pytest.mark.parametrize("field", ["metadata", "nodes", "edges"])
def test_load_refuses_missing_field(tmp_path, field):
    data = _good(tmp_path)
    del data[field]
    with pytest.raises(CircuitError, match=f"lacks the '{field}' field"):
        load_circuit(_write(tmp_path, data))


@pytest.mark.parametrize("key", ["model", "dictionaries", "task", "method"])
def test_load_refuses_metadata_without_names(tmp_path, key):
    data = _good(tmp_path)
    del data["metadata"][key]
    with pytest.raises(CircuitError, match=key):
        load_circuit(_write(tmp_path, data))


def test_load_refuses_bad_nodes_and_edges(tmp_path):
    cases = []
    d = _good(tmp_path)
    del d["nodes"][0]["id"]
    cases.append((d, "string 'id'"))
    d = _good(tmp_path)
    del d["nodes"][1]["effect"]
    cases.append((d, "lacks 'effect'"))
    d = _good(tmp_path)
    d["nodes"].append(dict(d["nodes"][0]))
    cases.append((d, "listed twice"))
    d = _good(tmp_path)
    d["nodes"][0]["layer"] = 0
    cases.append((d, "layer=0"))
    d = _good(tmp_path)
    d["nodes"][0]["position"] = "2"
    cases.append((d, "position"))
    d = _good(tmp_path)
    d["edges"][0]["target"] = "L1.resid/2/6"
    cases.append((d, "not a node"))
    d = _good(tmp_path)
    del d["edges"][0]["effect"]
    cases.append((d, "lacks 'effect'"))
    d = _good(tmp_path)
    d["edges"].append(dict(d["edges"][0]))
    cases.append((d, "listed twice"))
    d = _good(tmp_path)
    d["edges"][0]["effect"] = "big"
    cases.append((d, "finite number"))
    d = _good(tmp_path)
    d["edges"].append({"source": "metric", "target": "embed/1/17", "effect": 1.0})
    cases.append((d, "up a row"))
    for data, message in cases:
        with pytest.raises(CircuitError, match=message):
            load_circuit(_write(tmp_path, data))


def test_load_refuses_nan_in_file(tmp_path):
    content = save_circuit(small_graph(), tmp_path / "good.json").read_text().replace("1e-300", "NaN")
    with pytest.raises(CircuitError, match="NaN"):
        load_circuit(_write(tmp_path, content))


# --------------------------------------------------------------------------------- validation


def test_validate_checks_positions_against_mode():
    G = small_graph("token")
    add_node(G, "L0.attn", 3, 1)  # only three token labels: 0, 1, 2
    with pytest.raises(CircuitError, match="token index below 3"):
        validate_graph(G)
    S = small_graph("schema")
    add_node(S, "L0.attn", "S2", 1)
    with pytest.raises(CircuitError, match="span names"):
        validate_graph(S)


def test_validate_accepts_built_graphs():
    for mode in ("token", "schema", "agnostic"):
        validate_graph(small_graph(mode), require_metadata=True)


def test_new_graph_checks_metadata():
    with pytest.raises(CircuitError, match="positions"):
        new_graph(model="m", dictionaries="d", task="t", method="x", positions="tokens", position_labels=[], n_layers=1)
    with pytest.raises(CircuitError, match="n_layers"):
        new_graph(model="m", dictionaries="d", task="t", method="x", positions="token", position_labels=[], n_layers=-1)


# ------------------------------------------------------------------------------- compatibility


def test_check_compatible():
    G = small_graph()
    check_compatible(G, model="toy", dictionaries="toy-saes")
    check_compatible(G)
    with pytest.raises(CircuitError, match=r"model 'toy' \(you are using 'gpt2'\)"):
        check_compatible(G, model="gpt2", dictionaries="toy-saes")
    with pytest.raises(CircuitError) as info:
        check_compatible(G, model="gpt2", dictionaries="gpt2-res-jb", source="run/circuit.json")
    message = str(info.value)
    for word in ("run/circuit.json", "'toy'", "'gpt2'", "'toy-saes'", "'gpt2-res-jb'"):
        assert word in message
