"""Feature labels: top contexts against a brute-force pass, the cache, descriptions, graph labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import circuits.labels as labels_mod
from circuits.data.corpus import Corpus, CorpusError, text_corpus, toy_corpus
from circuits.graph.ids import add_metric, add_node, new_graph
from circuits.labels import contexts_for, feature_labels, label_circuit, label_graph
from circuits.labels.cache import cache_dir, load_labels, save_labels
from circuits.labels.describe import describe
from circuits.labels.scan import top_contexts
from circuits.toy.word_classes import WORD_CLASSES
from replacement.dictionaries import (
    DictionaryConfig,
    create_dictionary,
    identity_dictionary,
)
from replacement.model import ReplacementModel
from replacement.sites import Site

D_SAE = 48


def small_rm(toy, seed: int = 0) -> ReplacementModel:
    """Fresh TopK SAEs at three sites and the identity (neuron) basis at a fourth."""
    d = int(toy.model.cfg.d_model)
    config = DictionaryConfig(d_sae=D_SAE, k=6)
    dicts = {
        site.name: create_dictionary(site, d, config, seed=seed + i)
        for i, site in enumerate([Site("embed", -1), Site("attn", 0), Site("mlp", 1)])
    }
    dicts["L0.resid"] = identity_dictionary(Site("resid", 0), d)
    return ReplacementModel(toy.model, dicts)


@pytest.fixture(scope="module")
def corpus(toy) -> Corpus:
    return toy_corpus(toy.tokenizer, n=96, seed=3)


def padded_batches(corpus: Corpus, pad_id: int, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for start in range(0, len(corpus), size):
        rows = corpus.ids[start : start + size]
        width = max(len(r) for r in rows)
        tokens = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
        out.append((tokens, torch.tensor([len(r) for r in rows])))
    return out


def brute_force(rm: ReplacementModel, batches) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """Per site: each text's maximum of every feature [texts, d_sae], its first position, and the features."""
    maxima: dict[str, list] = {n: [] for n in rm.site_names}
    where: dict[str, list] = {n: [] for n in rm.site_names}
    feats: dict[str, list] = {n: [] for n in rm.site_names}
    for tokens, lengths in batches:
        records = rm.activations(tokens).records
        for name in rm.site_names:
            for row, length in enumerate(lengths.tolist()):
                f = records[name].features[row, :length]
                value, pos = f.max(dim=0)
                maxima[name].append(value)
                where[name].append(pos)
                feats[name].append(f)
    return {n: (torch.stack(maxima[n]), torch.stack(where[n]), feats[n]) for n in rm.site_names}


def test_top_contexts_are_the_top_activations(toy, corpus):
    rm = small_rm(toy)
    batches = padded_batches(corpus, toy.tokenizer.pad_id)
    k, window = 5, 6
    top = top_contexts(rm, batches, k=k, window=window)
    expected = brute_force(rm, batches)
    assert top.n_texts == len(corpus)
    for name in rm.site_names:
        maxima, positions, feats = expected[name]
        sc = top.sites[name]
        assert sc.values.shape == (rm.d_sae(name), k)
        # Highest first; ties keep the earlier text (a stable sort of the brute-force maxima).
        order = torch.sort(maxima.T, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(sc.values, maxima.T.gather(1, order))
        assert torch.equal(sc.seq, order)
        assert torch.equal(sc.pos, positions.T.gather(1, order))
        for f in range(0, rm.d_sae(name), 7):
            for j in range(k):
                text, pos = int(sc.seq[f, j]), int(sc.pos[f, j])
                window_acts = feats[text][max(0, pos - window + 1) : pos + 1, f]
                assert torch.equal(sc.acts[f, j, window - len(window_acts) :], window_acts)
                assert torch.all(sc.acts[f, j, : window - len(window_acts)] == 0)


def test_restricting_sites_and_features(toy, corpus):
    rm = small_rm(toy)
    batches = padded_batches(corpus, toy.tokenizer.pad_id)
    full = top_contexts(rm, batches, k=3)
    part = top_contexts(rm, batches, {"L0.attn": [7, 2]}, k=3)
    assert list(part.sites) == ["L0.attn"]
    sc, ref = part.sites["L0.attn"], full.sites["L0.attn"]
    assert sc.row(2) == 1 and sc.row(5) is None
    for feature in (7, 2):
        # Sites outside the scan run unspliced, which changes the input of L0.attn by rounding only.
        assert torch.allclose(sc.values[sc.row(feature)], ref.values[feature], atol=1e-5)
        assert torch.equal(sc.seq[sc.row(feature)], ref.seq[feature])


def test_feature_labels_contexts_match_the_corpus(toy, corpus, tmp_path):
    rm = small_rm(toy)
    labels = feature_labels(rm, toy.tokenizer, corpus, k=4, window=5, cache=tmp_path)
    expected = brute_force(rm, padded_batches(corpus, toy.tokenizer.pad_id))
    maxima = expected["L0.attn"][0]
    for f in range(D_SAE):
        ctxs = labels.contexts("L0.attn", f)
        best = torch.sort(maxima[:, f], descending=True).values[:4]
        got = [c["max_act"] for c in ctxs]
        assert got == pytest.approx([v for v in best.tolist() if v > 0][: len(got)], abs=1e-5)
        assert len(got) == int((best > 0).sum())
        for c in ctxs:
            assert 1 <= len(c["tokens"]) <= 5 and len(c["acts"]) == len(c["tokens"])
            assert c["acts"][-1] == pytest.approx(c["max_act"])
            assert max(c["acts"]) <= c["max_act"] + 1e-6
            # The tokens are a stretch of one corpus text ending at the maximum.
            assert any(_ends_with(text, c["tokens"]) for text in corpus.tokens)
    # The neuron basis: a coordinate that never gets above 0 has no contexts and reads "inactive".
    for f in range(96):
        if not bool((expected["L0.resid"][0][:, f] > 0).any()):
            assert labels.contexts("L0.resid", f) == [] and labels.describe("L0.resid", f) == "inactive"


def _ends_with(text: list[str], tokens: list[str]) -> bool:
    n = len(tokens)
    return any(text[i - n : i] == tokens for i in range(n, len(text) + 1))


def test_cache_is_hit_then_invalidated(toy, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    rm = small_rm(toy)
    first = feature_labels(rm, toy.tokenizer, corpus, k=3)
    files = list((tmp_path / "labels").glob("*.safetensors"))
    assert len(files) == 1

    def no_scan(*args, **kwargs):
        raise RuntimeError("scanned again")

    monkeypatch.setattr(labels_mod, "top_contexts", no_scan)
    again = feature_labels(rm, toy.tokenizer, corpus, k=3)
    for f in range(D_SAE):
        assert again.contexts("L1.mlp", f) == first.contexts("L1.mlp", f)
    assert again.describe("embed", 5) == first.describe("embed", 5)

    # Other dictionaries, another corpus or another k: a different key, so a new scan.
    with pytest.raises(RuntimeError, match="scanned again"):
        feature_labels(rm, toy.tokenizer, toy_corpus(toy.tokenizer, n=20, seed=4), k=3)
    with pytest.raises(RuntimeError, match="scanned again"):
        feature_labels(rm, toy.tokenizer, corpus, k=4)
    with torch.no_grad():
        rm.dictionaries["L0.attn"].W_enc[0, 0] += 0.5
    with pytest.raises(RuntimeError, match="scanned again"):
        feature_labels(rm, toy.tokenizer, corpus, k=3)
    with pytest.raises(RuntimeError, match="scanned again"):
        feature_labels(small_rm(toy, seed=10), toy.tokenizer, corpus, k=3)

    # A damaged cache file is scanned again and replaced.
    monkeypatch.undo()
    files[0].write_bytes(b"not a safetensors file")
    repaired = feature_labels(small_rm(toy), toy.tokenizer, corpus, k=3, cache=tmp_path / "labels")
    assert repaired.contexts("L1.mlp", 1) == first.contexts("L1.mlp", 1)
    assert load_labels(files[0]).key == first.key


def test_save_load_round_trip(toy, corpus, tmp_path):
    labels = feature_labels(small_rm(toy), toy.tokenizer, corpus, k=3, window=4, cache=False)
    back = load_labels(save_labels(labels, tmp_path / "x.safetensors"))
    assert back.sites == labels.sites and back.key == labels.key and back.texts == labels.texts
    for site in labels.sites:
        for f in (0, 3, 11):
            assert back.contexts(site, f) == labels.contexts(site, f)


def test_text_corpus(toy, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("Mary went to the park .\n\n  John likes the cake .  \n")
    corpus = text_corpus(path, toy.tokenizer)
    assert corpus.tokens == [
        ["<bos>", "Mary", "went", "to", "the", "park", "."],
        ["<bos>", "John", "likes", "the", "cake", "."],
    ]
    path.write_text("Mary went to the park .\nMary zzyzx .\n")
    with pytest.raises(Exception, match=r"texts\.txt, line 2.*zzyzx"):
        text_corpus(path, toy.tokenizer)
    path.write_text("\n\n")
    with pytest.raises(CorpusError, match="no text"):
        text_corpus(path, toy.tokenizer)
    with pytest.raises(CorpusError, match="does not exist"):
        text_corpus(tmp_path / "missing.txt", toy.tokenizer)


def ctx(*tokens: str, act: float = 1.0) -> dict:
    return {"tokens": list(tokens), "acts": [0.0] * (len(tokens) - 1) + [act], "max_act": act}


@pytest.mark.parametrize(
    "contexts, expected",
    [
        ([ctx("to", "Mary"), ctx("and", "Mary"), ctx(",", "Mary"), ctx("to", "John")], "'Mary'"),
        ([ctx("to", " Mary"), ctx("and", " Mary"), ctx("x", " John")], "'Mary'"),  # byte-level tokens
        ([ctx("to", "Mary"), ctx("to", "John"), ctx("and", "Anna"), ctx("the", "park")], "names"),
        ([ctx("The", "teachers"), ctx("The", "dogs"), ctx("the", "desks"), ctx("the", "cat")], "plural nouns"),
        ([ctx("The", "teacher"), ctx("the", "park"), ctx("a", "ring"), ctx("the", "dogs")], "singular nouns"),
        ([ctx("dog", "likes"), ctx("teacher", "is"), ctx("cats", "have")], "singular verbs"),
        ([ctx("year", "17"), ctx("year", "32"), ctx("17", "05")], "numbers"),
        ([ctx("x", "the", ","), ctx("the", "."), ctx("y", "the", "and"), ctx("the", "to")], "after 'the'"),
        ([ctx("Mary", ","), ctx("John", "."), ctx("Anna", "and"), ctx("to", "to")], "after names"),
        ([ctx("a", "to"), ctx("b", "to"), ctx("c", "."), ctx("d", ","), ctx("e", "and")], "'to' 40%"),
        # a context word shared by most contexts names what a feature at punctuation reads
        (
            [
                ctx("Ben", "and", "Lisa", "."),
                ctx("Anna", "gave", "Ben", ","),
                ctx("Ben", "saw", "the", "."),
                ctx("the", "."),
            ],
            "'Ben'→'.'",
        ),
        ([ctx("the", "cat", "."), ctx("a", "dog", "."), ctx("the", "park", ".")], "'.'"),  # no shared word
        ([ctx("the", "."), ctx("the", "."), ctx("and", ".")], "'.'"),  # function words do not count
        ([], "inactive"),
        ([ctx("a", "Mary", act=0.0)], "inactive"),
    ],
)
def test_describe(contexts, expected):
    assert describe(contexts, word_classes=WORD_CLASSES) == expected


def test_describe_names_only_the_word_classes_it_is_given():
    names = [ctx("to", "Mary"), ctx("to", "John"), ctx("and", "Anna"), ctx("the", "park")]
    assert describe(names, word_classes=WORD_CLASSES) == "names"
    assert describe(names) == "'Anna' 25%"  # no classes (a model other than the toy): the top token and its share
    assert describe(names, word_classes=[("people", frozenset({"mary", "john", "anna"}))]) == "people"  # any case


def test_label_graph_and_contexts_for(toy, corpus):
    labels = feature_labels(small_rm(toy), toy.tokenizer, corpus, k=3, cache=False)
    active = next(f for f in range(D_SAE) if labels.contexts("L0.attn", f))
    G = new_graph(
        model="toy",
        dictionaries="fresh",
        task="t",
        method="ig",
        positions="schema",
        position_labels=["IO", "end"],
        n_layers=3,
    )
    feature = add_node(G, "L0.attn", "IO", active, effect=1.0)
    error = add_node(G, "L0.attn", "end", "err", effect=0.5)
    other = add_node(G, "L2.attn", "end", 3, effect=0.2, label="kept")
    add_metric(G, effect=2.0, label="logit diff")
    assert label_graph(G, labels) == 2
    assert G.nodes[feature]["label"] == labels.describe("L0.attn", active) != ""
    assert G.nodes[error]["label"] == "error"
    assert G.nodes[other]["label"] == "kept"  # a site the labels do not cover is left alone
    assert G.nodes["metric"]["label"] == "logit diff"
    found = contexts_for(G, labels)
    assert list(found) == [feature]
    assert found[feature] == labels.contexts("L0.attn", active)
    assert set(found[feature][0]) == {"tokens", "acts", "max_act"}

    G.nodes[feature]["label"] = ""
    assert label_circuit(G, small_rm(toy), toy.tokenizer, corpus, k=3, cache=False) == found
    assert G.nodes[feature]["label"] == labels.describe("L0.attn", active)
    label_circuit(G, small_rm(toy), toy.tokenizer, corpus, k=3, cache=False, word_classes=WORD_CLASSES)
    assert G.nodes[feature]["label"] == labels.describe("L0.attn", active, WORD_CLASSES)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "labels"
    monkeypatch.delenv("CIRCUITS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "sparse-circuits" / "labels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "sparse-circuits" / "labels"
