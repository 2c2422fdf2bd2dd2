"""Feature labels: each feature's top-activating contexts on a corpus, and a short description.

One pass of a corpus through the replacement model keeps every feature's top contexts
(:mod:`circuits.labels.scan`); one pass serves every circuit made with the same model and
dictionaries, so the result is cached on disk (:mod:`circuits.labels.cache`). The corpus is the toy
language by default (2000 sentences drawn with a seed that training does not use) or a user's text
file with one text per line (:mod:`circuits.data.corpus`).

From a feature's contexts :func:`~circuits.labels.describe.describe` derives a few words;
:func:`label_graph` writes these into a circuit's node ``label`` attributes and :func:`contexts_for`
gives the contexts in the form ``viz.report`` shows. Word classes (``names``, ``plural nouns``, ...)
are given by the caller: the toy model's are :data:`circuits.toy.word_classes.WORD_CLASSES`.

Python::

    from circuits.labels import contexts_for, feature_labels, label_graph
    labels = feature_labels(rm, loaded.tokenizer)           # scans once, then reads the cache
    label_graph(circuit, labels, word_classes=WORD_CLASSES)
    write_report("report.html", graph=circuit, contexts=contexts_for(circuit, labels))

Cache: under ``$CIRCUITS_CACHE/labels`` (default ``~/.cache/sparse-circuits/labels``;
``$XDG_CACHE_HOME`` is honoured).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from safetensors import SafetensorError

from circuits.data.corpus import Corpus, text_corpus, toy_corpus
from circuits.graph.ids import ERROR_INDEX, parse_node_id
from circuits.labels import cache as label_cache
from circuits.labels.describe import WordClasses, describe
from circuits.labels.scan import DEFAULT_K, DEFAULT_WINDOW, FeatureLabels, TopContexts, top_contexts

log = logging.getLogger(__name__)

#: Seed of the default label corpus; training draws its sentences from seed 0.
LABEL_SEED = 7_919
LABEL_SENTENCES = 2000
ERROR_LABEL = "error"


def label_graph(G: nx.DiGraph, labels: FeatureLabels, word_classes: WordClasses = ()) -> int:
    """Set the ``label`` of every feature node of ``G`` whose site ``labels`` covers (its
    :func:`describe` with ``word_classes``), and ``"error"`` on error nodes; in place. Returns the
    number of nodes labelled."""
    done = 0
    for node, attrs in G.nodes(data=True):
        site, _, index = parse_node_id(str(node))
        if index is None:
            continue
        if index == ERROR_INDEX:
            attrs["label"] = ERROR_LABEL
        elif site in labels:
            attrs["label"] = labels.describe(site, int(index), word_classes)
        else:
            continue
        done += 1
    return done


def contexts_for(G: nx.DiGraph, labels: FeatureLabels) -> dict[str, list[dict[str, Any]]]:
    """Per feature node of ``G`` with any, its top contexts in ``viz.report``'s format."""
    out: dict[str, list[dict[str, Any]]] = {}
    for node in G.nodes:
        site, _, index = parse_node_id(str(node))
        if index is None or index == ERROR_INDEX or site not in labels:
            continue
        found = labels.contexts(site, int(index))
        if found:
            out[str(node)] = found
    return out


def label_circuit(
    G: nx.DiGraph,
    rm: Any,
    tokenizer: Any,
    corpus: Corpus | str | os.PathLike[str] | None = None,
    *,
    k: int = DEFAULT_K,
    window: int = DEFAULT_WINDOW,
    cache: str | os.PathLike[str] | bool = True,
    progress: bool = False,
    word_classes: WordClasses | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Label ``G``'s nodes in place (:func:`label_graph`) from :func:`feature_labels` of ``rm`` on
    ``corpus`` and return the nodes' contexts for ``viz.report`` (:func:`contexts_for`).

    ``word_classes``: the word classes of the model's language that labels may name (None: none;
    the toy model's are :data:`circuits.toy.word_classes.WORD_CLASSES`)."""
    labels = feature_labels(rm, tokenizer, corpus, k=k, window=window, cache=cache, progress=progress)
    label_graph(G, labels, word_classes or ())
    return contexts_for(G, labels)


def feature_labels(
    rm: Any,
    tokenizer: Any,
    corpus: Corpus | str | os.PathLike[str] | None = None,
    *,
    k: int = DEFAULT_K,
    window: int = DEFAULT_WINDOW,
    batch_size: int = 64,
    cache: str | os.PathLike[str] | bool = True,
    progress: bool = False,
) -> FeatureLabels:
    """Top contexts of every feature of ``rm`` on ``corpus``, read from the cache when present.

    ``corpus``: None (:data:`LABEL_SENTENCES` toy-language sentences of seed :data:`LABEL_SEED`), a
    text file (:func:`~circuits.data.corpus.text_corpus`) or a :class:`~circuits.data.corpus.Corpus`.
    Texts are cut to the model's context length. ``cache``: True (the default folder,
    :func:`~circuits.labels.cache.cache_dir`), a folder, or False (always scan, write nothing). A cache file that
    cannot be read is scanned again and replaced.
    """
    max_len = getattr(getattr(rm.model, "cfg", None), "n_ctx", None)
    if corpus is None:
        corpus = toy_corpus(tokenizer, LABEL_SENTENCES, LABEL_SEED, max_len=max_len)
    elif not isinstance(corpus, Corpus):
        corpus = text_corpus(corpus, tokenizer, max_len=max_len)
    key = label_cache.cache_key(rm, corpus, k, window)
    folder = None if cache is False else (label_cache.cache_dir() if cache is True else Path(cache))
    path = None if folder is None else folder / f"{key}.safetensors"
    if path is not None and path.exists():
        try:
            found = label_cache.load_labels(path)
        except (OSError, ValueError, KeyError, IndexError, SafetensorError) as err:  # unreadable: scan again
            log.warning("ignoring unreadable feature-contexts cache %s (%s)", path, err)
        else:
            if found.key == key:
                log.info("feature contexts from cache %s", path)
                return found
    top = _scan_corpus(rm, corpus, tokenizer.pad_id, k, window, batch_size, progress)
    labels = FeatureLabels(top, corpus.name, corpus.tokens, key)
    if path is not None:
        try:
            label_cache.save_labels(labels, path)
        except OSError as err:  # a read-only cache folder costs a rescan next time, nothing more
            log.warning("could not write the feature-contexts cache %s (%s)", path, err)
    return labels


def _scan_corpus(
    rm: Any, corpus: Corpus, pad_id: int, k: int, window: int, batch_size: int, progress: bool
) -> TopContexts:
    """:func:`top_contexts` over ``corpus``, texts batched by length (less padding), indices mapped back."""
    perm = corpus.by_length()
    batches = ((b.tokens, b.lengths) for b in corpus.batches(batch_size, pad_id=pad_id))
    top = top_contexts(rm, batches, k=k, window=window, progress=progress, total=math.ceil(len(perm) / batch_size))
    back = torch.tensor([*perm, -1], dtype=torch.long)  # scan order -> corpus index; -1 stays -1
    for sc in top.sites.values():
        sc.seq = back[sc.seq]
    return top


__all__ = [
    "ERROR_LABEL",
    "LABEL_SEED",
    "LABEL_SENTENCES",
    "FeatureLabels",
    "contexts_for",
    "describe",
    "feature_labels",
    "label_circuit",
    "label_graph",
]
