"""Feature labels: each feature's top-activating contexts on a corpus, and a short description.

One pass of a corpus through the replacement model keeps, for every (site, feature), the ``k``
sentences where the feature reaches its highest activation, with the position of that maximum and
the feature's activation on the ``window`` tokens up to and including it. All features of all
sites are kept at once, so one pass serves every circuit made with the same model and dictionaries;
the result is cached on disk (:func:`feature_labels`).

The corpus is the toy language by default (:func:`toy_corpus`: 2000 sentences drawn with a seed
that training does not use) or a user's text file with one text per line (:func:`text_corpus`).

From a feature's contexts :func:`describe` derives a few words: the token at the maximum when one
token covers most contexts (``'Mary'``), else the word class of those tokens (``names``,
``plural nouns``, ...), else the token before it (``after 'the'``), else the most frequent token with
its share (``'to' 38%``). :func:`label_graph` writes these into a circuit's node ``label``
attributes and :func:`contexts_for` gives the contexts in the form ``viz.report`` shows.

Python::

    from circuits.labels.features import feature_labels, label_graph, contexts_for
    labels = feature_labels(rm, loaded.tokenizer)           # scans once, then reads the cache
    label_graph(circuit, labels)
    write_report("report.html", graph=circuit, contexts=contexts_for(circuit, labels))

Cache: one safetensors file per (model weights, dictionaries, corpus, ``k``, ``window``), named by
a hash of them, under ``$CIRCUITS_CACHE/labels`` (default ``~/.cache/sparse-circuits/labels``;
``$XDG_CACHE_HOME`` is honoured). Tensors up to 4M elements are hashed in full, larger ones on an
evenly strided sample of 4M elements.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from circuits.errors import TaskError
from circuits.files import atomic_write
from circuits.graph.ids import ERROR_INDEX, parse_node_id
from circuits.toy import language

log = logging.getLogger(__name__)

CACHE_ENV = "CIRCUITS_CACHE"
CACHE_FORMAT = "sparse-circuits/feature-contexts"
CACHE_VERSION = 1
#: Seed of the default label corpus; training draws its sentences from seed 0.
LABEL_SEED = 7_919
LABEL_SENTENCES = 2000
DEFAULT_K = 8
DEFAULT_WINDOW = 24
ERROR_LABEL = "error"
INACTIVE_LABEL = "inactive"
_HASH_FULL_LIMIT = 1 << 22


class CorpusError(TaskError):
    """A label corpus that cannot be used (missing or empty file)."""


# --------------------------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Tokenized texts to scan: ``ids[i]`` are the token ids of text ``i`` (BOS first), ``tokens[i]`` their strings."""

    name: str
    ids: list[list[int]]
    tokens: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, pad_id: int) -> Iterator[torch.Tensor]:
        """Right-padded ``[batch, pos]`` long tensors of consecutive texts, in corpus order."""
        for start in range(0, len(self.ids), batch_size):
            rows = self.ids[start : start + batch_size]
            width = max(len(r) for r in rows)
            yield torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)

    def digest(self) -> str:
        """Hash of the token ids and their strings: what the scan's result depends on."""
        h = hashlib.blake2b(digest_size=16)
        for ids, toks in zip(self.ids, self.tokens):
            h.update(json.dumps([ids, toks], ensure_ascii=False).encode())
            h.update(b"\n")
        return h.hexdigest()


def _tokenize(texts: Iterable[tuple[int, str]], tokenizer: Any, max_len: int | None, source: str) -> tuple[list[list[int]], list[list[str]]]:
    """Token ids (BOS first, cut to ``max_len``) and token strings of numbered texts."""
    ids: list[list[int]] = []
    strings: dict[int, str] = {}
    for line, text in texts:
        row = list(tokenizer.encode(text, source=source, line=line))
        if max_len is not None:
            row = row[:max_len]
        ids.append(row)
        for t in row:
            if t not in strings:
                strings[t] = tokenizer.decode([t])
    return ids, [[strings[t] for t in row] for row in ids]


def toy_corpus(tokenizer: Any, n: int = LABEL_SENTENCES, seed: int = LABEL_SEED, max_len: int | None = None) -> Corpus:
    """``n`` sentences of the toy language (seed ``seed``), tokenized with ``tokenizer``."""
    texts = language.generate_corpus(n, seed=seed)
    name = f"toy-language:{n}:{seed}"
    ids, tokens = _tokenize(enumerate(texts, 1), tokenizer, max_len, name)
    return Corpus(name, ids, tokens)


def text_corpus(path: str | os.PathLike[str], tokenizer: Any, max_len: int | None = None) -> Corpus:
    """A user's text file, one text per line (blank lines skipped), tokenized with ``tokenizer``.

    A file that is missing, not UTF-8 or blank raises :class:`CorpusError` (:func:`corpus_lines`); a
    text the tokenizer cannot encode raises that tokenizer's error naming the file and line.
    """
    numbered = corpus_lines(path)
    ids, tokens = _tokenize(numbered, tokenizer, max_len, str(path))
    return Corpus(str(path), ids, tokens)


def corpus_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """The non-blank lines of a label corpus file with their line numbers (stripped), checked
    without a tokenizer: :class:`CorpusError` for a missing or unreadable file, text that is not
    UTF-8, or a file without any text. Cheap enough to run before a long computation."""
    path = Path(path)
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise CorpusError(f"the label corpus {path} {state}; give a text file with one text per line")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 text (byte {err.start}); save the label corpus as UTF-8", source=str(path)) from None
    except OSError as err:
        raise CorpusError(f"cannot read the label corpus ({err.strerror or err})", source=str(path)) from None
    # lines as an editor numbers them: only line feeds (and CR LF) end a line
    lines = text.replace("\r\n", "\n").split("\n")
    numbered = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise CorpusError("the label corpus has no text (it needs one text per line)", source=str(path))
    return numbered


# --------------------------------------------------------------------------------------------- scan


@dataclass
class SiteContexts:
    """The top contexts of some features of one site; row ``r`` is feature ``features[r]``.

    ``values[r, j]`` is the ``j``-th highest per-text maximum of the feature (descending; ties keep
    the earlier text), reached in text ``seq[r, j]`` at position ``pos[r, j]``; ``acts[r, j, w]`` is
    the feature's activation at position ``pos - (window - 1) + w`` (0 before the text's start), so
    ``acts[r, j, -1] == values[r, j]``. Unused slots have ``seq == -1`` and ``values == -inf``.
    """

    features: torch.Tensor  # [n] long
    values: torch.Tensor  # [n, k] float32
    seq: torch.Tensor  # [n, k] long
    pos: torch.Tensor  # [n, k] long
    acts: torch.Tensor  # [n, k, window] float32
    _rows: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def row(self, feature: int) -> int | None:
        """The row of ``feature``, or None if it was not scanned."""
        if self._rows is None:
            self._rows = {f: r for r, f in enumerate(self.features.tolist())}
        return self._rows.get(int(feature))


@dataclass
class TopContexts:
    """Per site, the top contexts of its scanned features (see :class:`SiteContexts`)."""

    sites: dict[str, SiteContexts]
    k: int
    window: int
    n_texts: int


class _Running:
    """The running top-``k`` of one site while batches stream through."""

    def __init__(self, features: torch.Tensor, k: int, window: int, device: torch.device):
        n = features.numel()
        self.features = features
        self.values = torch.full((n, k), -math.inf, device=device)
        self.seq = torch.full((n, k), -1, dtype=torch.long, device=device)
        self.pos = torch.full((n, k), -1, dtype=torch.long, device=device)
        self.acts = torch.zeros((n, k, window), device=device)
        self.k, self.window = k, window

    def update(self, feats_BTF: torch.Tensor, valid_BT: torch.Tensor, offset: int) -> None:
        """Merge one batch: each text's maximum per feature competes with the kept ones.

        ``feats_BTF`` is overwritten with -inf at invalid positions.
        """
        t = feats_BTF.shape[1]
        k, w = self.k, self.window
        dev = feats_BTF.device
        if not bool(valid_BT.all()):
            feats_BTF[~valid_BT] = -math.inf
        vmax_FB = feats_BTF.amax(dim=1).T
        # Only features where some text of the batch beats the k-th kept value change.
        rows = (vmax_FB > self.values[:, -1:]).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        cand_v = torch.cat([self.values[rows], vmax_FB[rows]], dim=1)  # kept entries first (earlier texts)
        order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, :k]
        values = cand_v.gather(1, order)
        from_batch = order >= k
        b_idx = (order - k).clamp(min=0)
        cols = rows[:, None, None]  # row r of the running state is column r of the features passed in
        # The first position of each new winner's maximum, and the window ending there.
        seq_RKT = feats_BTF[b_idx[..., None], torch.arange(t, device=dev), cols]
        pos = (seq_RKT == values[..., None]).int().argmax(dim=-1)
        at = pos[..., None] - (w - 1) + torch.arange(w, device=dev)
        acts = feats_BTF[b_idx[..., None], at.clamp(min=0), cols].masked_fill(at < 0, 0.0)
        kept = order.clamp(max=k - 1)
        old_acts = self.acts[rows].gather(1, kept[..., None].expand(-1, -1, w))
        self.values[rows] = values
        self.acts[rows] = torch.where(from_batch[..., None], acts, old_acts)
        self.seq[rows] = torch.where(from_batch, b_idx + offset, self.seq[rows].gather(1, kept))
        self.pos[rows] = torch.where(from_batch, pos, self.pos[rows].gather(1, kept))

    def result(self) -> SiteContexts:
        cpu = torch.device("cpu")
        return SiteContexts(
            self.features.to(cpu), self.values.to(cpu), self.seq.to(cpu), self.pos.to(cpu), self.acts.to(cpu)
        )


def _as_batch(item: torch.Tensor | tuple[torch.Tensor, torch.Tensor], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, valid mask)`` from a tokens tensor or a ``(tokens, lengths)`` pair."""
    if isinstance(item, (tuple, list)):
        tokens, lengths = item
        valid = torch.arange(tokens.shape[1])[None, :] < torch.as_tensor(lengths).cpu()[:, None]
        return tokens, valid
    tokens = item
    if pad_id is None:
        return tokens, torch.ones(tokens.shape, dtype=torch.bool)
    # Right padding: a position is padding when it and everything after it is the pad id.
    not_pad = (tokens != pad_id).long()
    last = torch.where(not_pad.any(1), tokens.shape[1] - 1 - not_pad.flip(1).argmax(1), torch.zeros_like(not_pad[:, 0]))
    return tokens, (torch.arange(tokens.shape[1])[None, :] <= last.cpu()[:, None])


@torch.no_grad()
def top_contexts(
    rm: Any,
    token_batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    sites_features: Mapping[str, Sequence[int]] | None = None,
    k: int = DEFAULT_K,
    window: int = DEFAULT_WINDOW,
    *,
    pad_id: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> TopContexts:
    """Stream ``token_batches`` through the replacement model ``rm`` and keep each feature's top ``k`` texts.

    ``token_batches``: right-padded ``[batch, pos]`` tensors (positions holding ``pad_id`` at the
    end of a row are ignored; with ``pad_id=None`` every position counts) or ``(tokens, lengths)``
    pairs. Texts are numbered across batches in order. ``sites_features`` limits the scan to some
    sites and features (default: every feature of every site). ``total``: number of batches, for
    the progress bar.
    """
    if k < 1 or window < 1:
        raise ValueError(f"k and window must be positive, got k={k}, window={window}")
    device = rm.device
    if sites_features is None:
        chosen = {name: torch.arange(rm.d_sae(name)) for name in rm.site_names}
    else:
        chosen = {}
        for name, feats in sites_features.items():
            rm.site(name)  # an unknown site is an error
            idx = torch.as_tensor(list(feats), dtype=torch.long)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= rm.d_sae(name)):
                raise ValueError(f"site {name}: feature indices must lie in [0, {rm.d_sae(name)})")
            chosen[name] = idx
    order = [n for n in rm.site_names if n in chosen]
    running = {n: _Running(chosen[n].to(device), k, window, device) for n in order}
    full = {n: chosen[n].numel() == rm.d_sae(n) and bool((chosen[n] == torch.arange(rm.d_sae(n))).all()) for n in order}
    offset = 0
    for item in tqdm(token_batches, total=total, desc="feature contexts", unit="batch", disable=not progress):
        tokens, valid = _as_batch(item, pad_id)
        records = rm.run(tokens.to(device), sites=order).records
        valid = valid.to(device)
        for name in order:
            feats = records[name].features.float()
            if not full[name]:
                feats = feats[..., running[name].features]
            running[name].update(feats, valid, offset)
        offset += tokens.shape[0]
    return TopContexts({n: running[n].result() for n in order}, k, window, offset)


# --------------------------------------------------------------------------------------------- labels


@dataclass
class FeatureLabels:
    """Top contexts of every feature plus the corpus they index: contexts and descriptions per feature."""

    top: TopContexts
    corpus_name: str
    texts: list[list[str]]  # token strings of every corpus text
    key: str = ""

    @property
    def sites(self) -> list[str]:
        return list(self.top.sites)

    def __contains__(self, site: object) -> bool:
        return site in self.top.sites

    def contexts(self, site: str, feature: int) -> list[dict[str, Any]]:
        """The feature's top contexts, highest first, as ``{"tokens", "acts", "max_act"}`` dicts.

        ``tokens`` run up to and including the token of the maximum (at most ``window`` of them);
        texts where the feature never exceeds 0 are left out.
        """
        sc = self.top.sites.get(site)
        row = None if sc is None else sc.row(int(feature))
        if sc is None or row is None:
            return []
        out = []
        w = self.top.window
        for j in range(sc.values.shape[1]):
            value, seq, pos = float(sc.values[row, j]), int(sc.seq[row, j]), int(sc.pos[row, j])
            if seq < 0 or not value > 0:
                continue
            start = max(0, pos - (w - 1))
            acts = sc.acts[row, j, w - 1 - (pos - start) :].tolist()
            out.append({"tokens": list(self.texts[seq][start : pos + 1]), "acts": acts, "max_act": value})
        return out

    def describe(self, site: str, feature: int) -> str:
        """:func:`describe` of the feature's contexts."""
        return describe(self.contexts(site, feature))


def describe(contexts: Sequence[Mapping[str, Any]], min_share: float = 0.5) -> str:
    """A few words saying what a feature's top contexts have in common.

    Each context's last token is the token of the maximum. In order: the one token at the maximum
    in more than ``min_share`` of the contexts (``'Mary'``), prefixed, when that token is punctuation or
    a function word, by a content word that occurs earlier in the window of more than ``min_share`` of
    the contexts (``'Ben'→'.'``: the feature reads a name from context at the full stop); else a word class of the toy language
    covering that share (``names``, ``places``, ``objects``, ``singular nouns``, ``plural nouns``,
    ``singular verbs``, ``plural verbs``, ``numbers``, ``prepositions``, ``adjectives``, ``nouns``,
    ``verbs``); else the token (or class) just before the maximum (``after 'the'``,
    ``after names``); else the most frequent token at the maximum and its share (``'to' 38%``).
    No context with a positive activation gives ``inactive``.

    Ties between words of equal count go to the word that sorts first (Python string order), so the
    description depends only on the multiset of contexts, never on their order or on hash order.
    """
    used = [c for c in contexts if c.get("tokens") and float(c.get("max_act", 0.0)) > 0]
    if not used:
        return INACTIVE_LABEL
    n = len(used)
    at_max = [_word(c["tokens"][-1]) for c in used]
    token, count = _most_common(Counter(at_max))
    if count / n > min_share:
        if _is_content(token):
            return f"'{token}'"
        earlier = Counter(w for c in used for w in {_word(t) for t in c["tokens"][:-1]} if _is_content(w))
        if earlier:
            word, seen = _most_common(earlier)
            if seen / n > min_share:
                return f"'{word}'→'{token}'"
        return f"'{token}'"
    cls = _dominant_class(at_max, n, min_share)
    if cls is not None:
        return cls
    before = [_word(c["tokens"][-2]) for c in used if len(c["tokens"]) >= 2]
    if before:
        prev, prev_count = _most_common(Counter(before))
        if prev_count / n > min_share:
            return f"after '{prev}'"
        prev_cls = _dominant_class(before, n, min_share)
        if prev_cls is not None:
            return f"after {prev_cls}"
    return f"'{token}' {round(100 * count / n)}%"


def _most_common(counts: Counter[str]) -> tuple[str, int]:
    """The word of highest count, ties going to the word that sorts first.

    ``Counter.most_common`` breaks ties by insertion order, which for words gathered through a set
    follows the string hash and so changes from one process to the next.
    """
    return min(counts.items(), key=lambda item: (-item[1], item[0]))


FUNCTION_WORDS = frozenset(
    "a an the and or but to of in on at by for from with as that this it its is are was were be been has have had "
    "do does did then than so if when while after before there here he she they we you i".split()
)


def _is_content(word: str) -> bool:
    """A word that says something: alphanumeric and not a function word (punctuation and markers are not)."""
    return word.isalnum() and word.lower() not in FUNCTION_WORDS


def _word(token: str) -> str:
    """A token as shown in a label: surrounding whitespace removed, whitespace tokens made visible."""
    stripped = str(token).strip()
    return stripped if stripped else str(token).replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423")


def _word_classes() -> list[tuple[str, frozenset[str]]]:
    """Word classes of the toy language, most specific first."""
    singular_nouns = {s for pairs in (language.NOUNS, language.PP_NOUNS, language.RC_NOUNS) for s, _ in pairs}
    singular_nouns |= set(language.PLACES) | set(language.OBJECTS) | set(language.GT_NOUNS)
    plural_nouns = {p for pairs in (language.NOUNS, language.PP_NOUNS, language.RC_NOUNS) for _, p in pairs}
    singular_verbs = {forms[0] for forms, _ in language.VERBS} | {s for s, _ in language.RC_VERBS}
    plural_verbs = {forms[1] for forms, _ in language.VERBS} | {p for _, p in language.RC_VERBS}
    other_verbs = {"went", "gave", "give", "said", "saw", "built", "found", "had", "ended", "lasted", "decided", "wanted", "got"}
    classes = [
        ("names", set(language.NAMES)),
        ("places", set(language.PLACES)),
        ("objects", set(language.OBJECTS)),
        ("singular nouns", singular_nouns),
        ("plural nouns", plural_nouns),
        ("singular verbs", singular_verbs),
        ("plural verbs", plural_verbs),
        ("numbers", set(language.TWO_DIGITS)),
        ("prepositions", set(language.PREPOSITIONS)),
        ("adjectives", set(language.ADJECTIVES)),
        ("nouns", singular_nouns | plural_nouns),
        ("verbs", singular_verbs | plural_verbs | other_verbs),
    ]
    return [(name, frozenset(words)) for name, words in classes]


WORD_CLASSES: list[tuple[str, frozenset[str]]] = _word_classes()


def _dominant_class(words: Sequence[str], n: int, min_share: float) -> str | None:
    """The first word class holding more than ``min_share`` of ``n`` contexts, if any."""
    for name, members in WORD_CLASSES:
        hits = sum(1 for w in words if w in members or (w.lower() in members and w.lower() != w and name != "names"))
        if hits / n > min_share:
            return name
    return None


def label_graph(G: nx.DiGraph, labels: FeatureLabels) -> int:
    """Set the ``label`` of every feature node of ``G`` whose site ``labels`` covers, and ``"error"``
    on error nodes; in place. Returns the number of nodes labelled."""
    done = 0
    for node, attrs in G.nodes(data=True):
        site, _, index = parse_node_id(str(node))
        if index is None:
            continue
        if index == ERROR_INDEX:
            attrs["label"] = ERROR_LABEL
        elif site in labels:
            attrs["label"] = labels.describe(site, int(index))
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
) -> dict[str, list[dict[str, Any]]]:
    """Label ``G``'s nodes in place (:func:`label_graph`) from :func:`feature_labels` of ``rm`` on
    ``corpus`` and return the nodes' contexts for ``viz.report`` (:func:`contexts_for`)."""
    labels = feature_labels(rm, tokenizer, corpus, k=k, window=window, cache=cache, progress=progress)
    label_graph(G, labels)
    return contexts_for(G, labels)


# --------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where label caches live: ``$CIRCUITS_CACHE/labels``, else ``~/.cache/sparse-circuits/labels``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "labels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sparse-circuits" / "labels"


def _update_tensor(h: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.reshape(-1)
    if flat.numel() > _HASH_FULL_LIMIT:
        flat = flat[:: math.ceil(flat.numel() / _HASH_FULL_LIMIT)]
    flat = flat.to("cpu")
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    h.update(flat.contiguous().numpy().tobytes())


def _cfg_text(dictionary: Any) -> str:
    cfg = dictionary.cfg
    try:
        data = dict(cfg.to_dict())
    except (AttributeError, TypeError, ValueError):  # a config that does not serialise: its repr tells kinds apart
        return repr(cfg)
    data.pop("device", None)
    return json.dumps(data, sort_keys=True, default=str)


def cache_key(rm: Any, corpus: Corpus, k: int = DEFAULT_K, window: int = DEFAULT_WINDOW) -> str:
    """Hash of what a scan depends on: the model's weights, each site's dictionary (class, config,
    weights), the corpus, ``k`` and ``window``."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{CACHE_FORMAT}|{CACHE_VERSION}|k={k}|window={window}|corpus={corpus.digest()}|".encode())
    for name, p in sorted(dict(rm.model.named_parameters()).items()):
        _update_tensor(h, f"model.{name}", p)
    for site in rm.site_names:
        d = rm.dictionaries[site]
        h.update(f"site={site}|{type(d).__module__}.{type(d).__qualname__}|{_cfg_text(d)}|".encode())
        for name, p in sorted(d.state_dict().items()):
            _update_tensor(h, f"{site}.{name}", p)
    return h.hexdigest()


def save_labels(labels: FeatureLabels, path: str | os.PathLike[str]) -> Path:
    """Write ``labels`` to one safetensors file, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, (site, sc) in enumerate(labels.top.sites.items()):
        tensors[f"{i}.features"] = sc.features.long().contiguous()
        tensors[f"{i}.values"] = sc.values.float().contiguous()
        tensors[f"{i}.seq"] = sc.seq.int().contiguous()
        tensors[f"{i}.pos"] = sc.pos.int().contiguous()
        tensors[f"{i}.acts"] = sc.acts.float().contiguous()
    vocab: dict[str, int] = {}
    rows = []
    for text in labels.texts:
        rows.append([vocab.setdefault(t, len(vocab)) for t in text])
    width = max((len(r) for r in rows), default=0)
    tensors["corpus.tokens"] = torch.tensor([r + [-1] * (width - len(r)) for r in rows] or [[]], dtype=torch.int32)
    meta = {
        "format": CACHE_FORMAT, "version": str(CACHE_VERSION), "key": labels.key,
        "info": json.dumps({
            "sites": list(labels.top.sites), "k": labels.top.k, "window": labels.top.window,
            "n_texts": labels.top.n_texts, "corpus": labels.corpus_name, "strings": list(vocab),
        }, ensure_ascii=False),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_labels(path: str | os.PathLike[str]) -> FeatureLabels:
    """Read a file written by :func:`save_labels` (``ValueError`` if it is not one)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != str(CACHE_VERSION):
            raise ValueError(f"{path} is not a feature-contexts file of version {CACHE_VERSION}")
        info = json.loads(meta["info"])
        sites = {}
        for i, site in enumerate(info["sites"]):
            sites[site] = SiteContexts(
                f.get_tensor(f"{i}.features").long(), f.get_tensor(f"{i}.values").float(),
                f.get_tensor(f"{i}.seq").long(), f.get_tensor(f"{i}.pos").long(), f.get_tensor(f"{i}.acts").float(),
            )
        coded = f.get_tensor("corpus.tokens").tolist()
    strings = info["strings"]
    texts = [[strings[c] for c in row if c >= 0] for row in coded][: int(info["n_texts"])]
    top = TopContexts(sites, int(info["k"]), int(info["window"]), int(info["n_texts"]))
    return FeatureLabels(top, str(info["corpus"]), texts, meta.get("key", ""))


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

    ``corpus``: None (the toy corpus, :func:`toy_corpus`), a text file (:func:`text_corpus`) or a
    :class:`Corpus`. Texts are cut to the model's context length. ``cache``: True (the default
    folder, :func:`cache_dir`), a folder, or False (always scan, write nothing). A cache file that
    cannot be read is scanned again and replaced.
    """
    max_len = getattr(getattr(rm.model, "cfg", None), "n_ctx", None)
    if corpus is None:
        corpus = toy_corpus(tokenizer, max_len=max_len)
    elif not isinstance(corpus, Corpus):
        corpus = text_corpus(corpus, tokenizer, max_len=max_len)
    key = cache_key(rm, corpus, k, window)
    folder = None if cache is False else (cache_dir() if cache is True else Path(cache))
    path = None if folder is None else folder / f"{key}.safetensors"
    if path is not None and path.exists():
        try:
            found = load_labels(path)
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
            save_labels(labels, path)
        except OSError as err:  # a read-only cache folder costs a rescan next time, nothing more
            log.warning("could not write the feature-contexts cache %s (%s)", path, err)
    return labels


def _scan_corpus(rm: Any, corpus: Corpus, pad_id: int, k: int, window: int, batch_size: int, progress: bool) -> TopContexts:
    """:func:`top_contexts` over ``corpus``, texts batched by length (less padding), indices mapped back."""
    perm = sorted(range(len(corpus)), key=lambda i: (len(corpus.ids[i]), i))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(perm), batch_size):
            rows = [corpus.ids[i] for i in perm[start : start + batch_size]]
            width = max(len(r) for r in rows)
            tokens = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
            yield tokens, torch.tensor([len(r) for r in rows])

    top = top_contexts(rm, batches(), k=k, window=window, progress=progress, total=math.ceil(len(perm) / batch_size))
    back = torch.tensor(perm + [-1], dtype=torch.long)  # scan order -> corpus index; -1 stays -1
    for sc in top.sites.values():
        sc.seq = back[sc.seq]
    return top


__all__ = [
    "CACHE_ENV",
    "WORD_CLASSES",
    "Corpus",
    "CorpusError",
    "FeatureLabels",
    "SiteContexts",
    "TopContexts",
    "cache_dir",
    "cache_key",
    "contexts_for",
    "corpus_lines",
    "describe",
    "feature_labels",
    "label_circuit",
    "label_graph",
    "load_labels",
    "save_labels",
    "text_corpus",
    "top_contexts",
    "toy_corpus",
]
