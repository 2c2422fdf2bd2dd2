"""Text corpora and their batching: the one place that turns lines of text into token batches.

A :class:`Corpus` holds tokenized texts (BOS first) with their token strings. It is built from
sentences of the toy language (:func:`toy_corpus`, drawn by :func:`circuits.toy.language.generate_corpus`)
or from a user's text file with one text per line (:func:`text_corpus`; :func:`corpus_lines` checks
such a file without a tokenizer). :meth:`Corpus.batches` groups the texts by length, either one length
per batch (no padding: dictionary training and reports) or right-padded batches of mixed lengths
(the feature-context scan of :mod:`circuits.labels`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuits.errors import TaskError
from circuits.toy import language


class CorpusError(TaskError):
    """A label corpus that cannot be used (missing or empty file)."""


@dataclass(frozen=True)
class CorpusBatch:
    """Some texts of a corpus as one tensor: ``tokens[r, :lengths[r]]`` is text ``texts[r]``."""

    tokens: torch.Tensor  # [batch, pos] long, right-padded
    lengths: torch.Tensor  # [batch] long
    texts: list[int]  # the corpus index of each row


@dataclass
class Corpus:
    """Tokenized texts: ``ids[i]`` are the token ids of text ``i`` (BOS first), ``tokens[i]`` their strings."""

    name: str
    ids: list[list[int]]
    tokens: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def by_length(self) -> list[int]:
        """The text indices sorted by length, texts of equal length in corpus order."""
        return sorted(range(len(self.ids)), key=lambda i: (len(self.ids[i]), i))

    def batches(self, batch_size: int, *, pad_id: int | None = None) -> Iterator[CorpusBatch]:
        """The texts in :meth:`by_length` order, ``batch_size`` at a time.

        Without ``pad_id`` a batch never mixes lengths (a length's last batch may be smaller), so no
        position is padding. With ``pad_id`` each batch takes the next ``batch_size`` texts whatever
        their lengths and is right-padded with ``pad_id`` to its longest text.
        """
        order = self.by_length()
        groups: list[list[int]] = [order]
        if pad_id is None:
            groups = []
            for i in order:
                if groups and len(self.ids[groups[-1][0]]) == len(self.ids[i]):
                    groups[-1].append(i)
                else:
                    groups.append([i])
        fill = 0 if pad_id is None else pad_id
        for group in groups:
            for start in range(0, len(group), batch_size):
                texts = group[start : start + batch_size]
                rows = [self.ids[i] for i in texts]
                width = max(len(r) for r in rows)
                tokens = torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.long)
                yield CorpusBatch(tokens, torch.tensor([len(r) for r in rows]), texts)

    def digest(self) -> str:
        """Hash of the token ids and their strings: what a scan of the corpus depends on."""
        h = hashlib.blake2b(digest_size=16)
        for ids, toks in zip(self.ids, self.tokens, strict=True):
            h.update(json.dumps([ids, toks], ensure_ascii=False).encode())
            h.update(b"\n")
        return h.hexdigest()


def _tokenize(
    texts: Iterable[tuple[int, str]], tokenizer: Any, max_len: int | None, source: str
) -> tuple[list[list[int]], list[list[str]]]:
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


def toy_corpus(tokenizer: Any, n: int, seed: int, max_len: int | None = None) -> Corpus:
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
        raise CorpusError(
            f"not UTF-8 text (byte {err.start}); save the label corpus as UTF-8", source=str(path)
        ) from None
    except OSError as err:
        raise CorpusError(f"cannot read the label corpus ({err.strerror or err})", source=str(path)) from None
    # lines as an editor numbers them: only line feeds (and CR LF) end a line
    lines = text.replace("\r\n", "\n").split("\n")
    numbered = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise CorpusError("the label corpus has no text (it needs one text per line)", source=str(path))
    return numbered
