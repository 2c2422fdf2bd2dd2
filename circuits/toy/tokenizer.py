"""The toy language's word-level tokenizer (HuggingFace ``tokenizers`` WordLevel, BOS prepended).

Pre-tokenization splits on whitespace, isolates punctuation, and cuts digit runs into
two-digit pieces so that "1732" and "17 32" both read as ``17 32``. A word outside the
vocabulary is an error naming the word, never a silent ``<unk>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

from circuits.errors import VocabularyError

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, UNK]


def build_tokenizer(words: Sequence[str]) -> Tokenizer:
    """A WordLevel tokenizer over ``words`` with ``<pad>`` = 0, ``<bos>`` = 1, ``<unk>`` = 2."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated"),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def to_hf_tokenizer(tok: Tokenizer):
    """Wrap as a ``PreTrainedTokenizerFast`` that TransformerBridge accepts (BOS prepended)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=BOS,
        padding_side="right",
        add_bos_token=True,
        name_or_path="circuits-toy",
    )
    return hf


class WordTokenizer:
    """Encodes and decodes toy-language text; unknown words raise :class:`VocabularyError`."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self._hf = None
        self.vocab: dict[str, int] = tok.get_vocab()
        self.id_to_word = {i: w for w, i in self.vocab.items()}
        self.bos_id = self.vocab[BOS]
        self.pad_id = self.vocab[PAD]
        self.unk_id = self.vocab[UNK]

    @classmethod
    def from_words(cls, words: Sequence[str]) -> WordTokenizer:
        return cls(build_tokenizer(words))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def hf(self):
        """The ``PreTrainedTokenizerFast`` view, built on first use."""
        if self._hf is None:
            self._hf = to_hf_tokenizer(self.tok)
        return self._hf

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, *, bos: bool = True, source: str | None = None, line: int | None = None) -> list[int]:
        """Token ids of ``text`` (BOS first unless ``bos=False``)."""
        enc = self.tok.encode(text, add_special_tokens=bos)
        if self.unk_id in enc.ids:
            unknown = sorted({text[s:e] for i, (s, e) in zip(enc.ids, enc.offsets) if i == self.unk_id})
            raise VocabularyError(
                f"words not in the vocabulary: {', '.join(repr(w) for w in unknown)}", source=source, line=line
            )
        return list(enc.ids)

    def encode_words(
        self, words: Sequence[str], *, source: str | None = None, line: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Ids of ``words`` with BOS first, and the token index where each word starts."""
        ids = [self.bos_id]
        starts = []
        for w in words:
            starts.append(len(ids))
            ids.extend(self.encode(w, bos=False, source=source, line=line))
        return ids, starts

    def words(self, text: str) -> list[str]:
        """The pre-tokenized words of ``text`` (no BOS)."""
        return [w for w, _ in self.tok.pre_tokenizer.pre_tokenize_str(text)]

    def token_id(self, word: str, *, source: str | None = None, line: int | None = None) -> int:
        """The id of a word that must be exactly one token."""
        ids = self.encode(word, bos=False, source=source, line=line)
        if len(ids) != 1:
            from circuits.errors import TaskError

            raise TaskError(f"{word!r} is {len(ids)} tokens, an answer must be one", source=source, line=line)
        return ids[0]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.id_to_word[int(i)] for i in ids if int(i) != self.pad_id)

    def __len__(self) -> int:
        return self.vocab_size
