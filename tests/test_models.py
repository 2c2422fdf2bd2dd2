"""Model loading: the toy model by default, HuggingFace causal LMs through TransformerBridge.

The HuggingFace path is exercised without the hub: a randomly initialised GPT-2-architecture
model built here, with tokenizers built here, passed in as objects or saved to a folder.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from circuits.app.loading import HFTokenizer, LoadedModel, load_model
from circuits.data.taskfile import load_task, save_task
from circuits.data.tasks import Task, make_task, metric_per_example
from circuits.errors import ModelLoadError, TaskError
from circuits.evaluation.behaviour import run_task
from circuits.toy.language import generate_corpus
from circuits.toy.model import ToyModelConfig, save_model
from circuits.toy.tokenizer import WordTokenizer, to_hf_tokenizer
from circuits.toy.words import NAMES


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a firewall that swallows requests)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub (its host name does not resolve) and an empty local cache, whatever machine runs the tests."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://huggingface.invalid")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab_size, bos_token_id=None, eos_token_id=None
    )
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def bpe_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained here on the toy language: rarer words split into several pieces."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(generate_corpus(2000, seed=1), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def word_level_gpt2(toy_tokenizer: WordTokenizer) -> tuple[LoadedModel, GPT2LMHeadModel]:
    """A tiny random GPT-2 over the toy vocabulary, loaded through the HuggingFace path."""
    hf = tiny_gpt2(toy_tokenizer.vocab_size)
    loaded = load_model("tiny-gpt2", device="cpu", hf_model=hf, hf_tokenizer=to_hf_tokenizer(toy_tokenizer.tok))
    return loaded, hf


@pytest.fixture(scope="module")
def bpe_gpt2() -> tuple[LoadedModel, GPT2LMHeadModel, PreTrainedTokenizerFast]:
    tok = bpe_tokenizer()
    hf = tiny_gpt2(len(tok), seed=1)
    return load_model("tiny-bpe-gpt2", device="cpu", hf_model=hf, hf_tokenizer=tok), hf, tok


# ----------------------------------------------------------------------------- the toy model


def test_default_is_the_toy_model(toy: LoadedModel) -> None:
    loaded = load_model()
    assert loaded.name == "toy"
    assert isinstance(loaded.tokenizer, WordTokenizer)
    assert type(loaded.model).__name__ == "TransformerBridge"
    assert loaded.tokenizer.vocab == toy.tokenizer.vocab
    toks = torch.tensor([toy.tokenizer.encode("The teachers near the desk")])
    with torch.no_grad():
        assert torch.allclose(loaded.model(toks).cpu(), toy.model(toks), atol=1e-5)


def test_a_saved_toy_model_folder_loads_by_path(toy: LoadedModel, tmp_path: Path) -> None:
    config = ToyModelConfig(
        **{k: toy.model.cfg.__dict__[k] for k in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx")}
    )
    save_model(toy.model, toy.tokenizer, config, tmp_path / "copy")
    copy = load_model(str(tmp_path / "copy"), device="cpu")
    assert copy.name == str(tmp_path / "copy")
    toks = torch.tensor([toy.tokenizer.encode("The war lasted from the year 17 32 to the year 17")])
    with torch.no_grad():
        assert torch.equal(copy.model(toks), toy.model(toks))


def test_a_folder_without_the_model_files_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"lacks model\.safetensors"):
        load_model(str(tmp_path / "half"), device="cpu")


# ----------------------------------------------------------------------------- offline


@pytest.mark.parametrize("name", ["gpt2", "EleutherAI/pythia-70m-deduped"])
def test_a_hub_model_offline_fails_at_once_in_one_sentence(no_hub: None, name: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model(name, device="cpu")
    elapsed = time.monotonic() - start
    assert elapsed < 20, f"took {elapsed:.1f} s: the offline check hangs"  # a hang guard, not a benchmark
    msg = str(info.value)
    assert repr(name) in msg and "not available offline" in msg
    assert "\n" not in msg and ". " not in msg.rstrip(".")  # one sentence
    assert info.value.__cause__ is None  # no stack of library errors behind it


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_an_endpoint_that_refuses_or_never_answers_is_offline(
    no_hub: None, monkeypatch: pytest.MonkeyPatch, silent_server: str, endpoint: str
) -> None:
    url = {"refused": "http://127.0.0.1:9", "silent": silent_server}[endpoint]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="not available offline"):
        load_model("gpt2", device="cpu")
    assert time.monotonic() - start < 20


def test_hf_hub_offline_mode_fails_the_same_way(no_hub: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not available offline"):
        load_model("gpt2", device="cpu")


def test_a_model_object_needs_its_tokenizer() -> None:
    with pytest.raises(ModelLoadError, match="tokenizer is needed"):
        load_model("tiny", device="cpu", hf_model=tiny_gpt2(16))


# ----------------------------------------------------------------------------- the HuggingFace path


def test_bridge_logits_equal_the_hf_model(
    word_level_gpt2: tuple[LoadedModel, GPT2LMHeadModel], toy_tokenizer: WordTokenizer
) -> None:
    loaded, hf = word_level_gpt2
    assert type(loaded.model).__name__ == "TransformerBridge"
    assert isinstance(loaded.tokenizer, HFTokenizer)
    task = make_task("ioi", loaded.tokenizer, n=8)
    toks = task.batch(loaded.tokenizer.pad_id).clean
    with torch.no_grad():
        ours, theirs = loaded.model(toks), hf(toks).logits
    assert ours.shape == theirs.shape == (8, toks.shape[1], toy_tokenizer.vocab_size)
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert theirs.std() > 0  # a real comparison, not two zero tensors


def test_tasks_through_the_hf_tokenizer_match_the_toy_tokenizer(
    word_level_gpt2: tuple[LoadedModel, GPT2LMHeadModel], toy_tokenizer: WordTokenizer
) -> None:
    loaded, _hf = word_level_gpt2
    for name in ("sva-simple", "ioi-baba", "greater-than"):
        ours = make_task(name, loaded.tokenizer, n=16)
        toy_task = make_task(name, toy_tokenizer, n=16)
        assert [(e.clean, e.corrupted, e.answers, e.wrong, e.schema) for e in ours.examples] == [
            (e.clean, e.corrupted, e.answers, e.wrong, e.schema) for e in toy_task.examples
        ]
    assert loaded.model.to_tokens("The teachers")[0].tolist() == toy_tokenizer.encode("The teachers")


def test_run_task_on_the_hf_path_equals_the_metric_of_the_hf_model(
    word_level_gpt2: tuple[LoadedModel, GPT2LMHeadModel],
) -> None:
    loaded, hf = word_level_gpt2
    task = make_task("sva-simple", loaded.tokenizer, n=16)
    result = run_task(loaded.model, task, loaded.tokenizer.pad_id)
    batch = task.batch(loaded.tokenizer.pad_id)
    with torch.no_grad():
        expected = metric_per_example(hf(batch.clean).logits, batch)
    assert result.values == pytest.approx(expected.tolist(), abs=1e-4)
    assert 0.0 <= result.accuracy <= 1.0 and len(result.values) == 16


def test_loading_leaves_the_callers_tokenizer_as_it_was(bpe_gpt2) -> None:
    loaded, _, tok = bpe_gpt2
    text = "Then , Mary and John went to the park"
    assert tok.bos_token_id not in tok(text)["input_ids"]
    assert loaded.tokenizer.encode(text) == [tok.bos_token_id, *tok(text)["input_ids"]]


def test_words_a_bpe_tokenizer_splits_are_refused_as_answers(bpe_gpt2) -> None:
    loaded, _, _ = bpe_gpt2
    tok = loaded.tokenizer
    split = [n for n in NAMES if len(tok.encode(" " + n, bos=False)) > 1]
    assert split, "the check needs names this tokenizer splits"
    with pytest.raises(TaskError) as info:
        tok.token_id(split[0], source="names.jsonl", line=3)
    assert str(info.value).startswith(f"names.jsonl, line 3: answer {split[0]!r} is ")
    assert "an answer must be one" in str(info.value)
    with pytest.raises(TaskError, match=r"only 0 of .* fit this tokenizer"):
        make_task("sva-simple", tok, n=8)  # its subjects split: the last token is never a whole word


def test_a_bpe_task_lines_up_prompts_of_different_lengths(bpe_gpt2, tmp_path: Path) -> None:
    loaded, _hf, _ = bpe_gpt2
    tok = loaded.tokenizer
    task = make_task("ioi", tok, n=24)
    assert any(len(e.clean) != len(e.corrupted) for e in task.examples), "the check needs unequal lengths"
    for ex in task.examples:
        assert ex.schema.names == ex.corrupted_schema.names
        assert len(ex.answers) == len(ex.wrong) == 1
        assert tok.decode(ex.clean[ex.schema.spans[-1].start :]) == " to"
    paths = tmp_path / "ioi.jsonl", tmp_path / "ioi_schema.csv", tmp_path / "ioi_corrupted.csv"
    save_task(task, *paths)
    again = load_task(paths[0], tok, schema=paths[1], corrupted_schema=paths[2])
    assert [(e.clean, e.corrupted, e.answers, e.wrong, e.schema, e.corrupted_schema) for e in again.examples] == [
        (e.clean, e.corrupted, e.answers, e.wrong, e.schema, e.corrupted_schema) for e in task.examples
    ]
    # Right padding with pad = BOS (GPT-2 style): each example's value is the one it has alone.
    result = run_task(loaded.model, task, tok.pad_id)
    alone = [run_task(loaded.model, Task("one", [task.examples[i]]), tok.pad_id).values[0] for i in range(0, 24, 5)]
    assert [result.values[i] for i in range(0, 24, 5)] == pytest.approx(alone, abs=1e-4)


def test_a_saved_hf_folder_loads_offline_by_path(bpe_gpt2, tmp_path: Path, no_hub: None) -> None:
    _, _, tok = bpe_gpt2
    hf = tiny_gpt2(len(tok), seed=2)
    folder = tmp_path / "tiny-gpt2"
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    start = time.monotonic()
    loaded = load_model(str(folder), device="cpu")
    assert time.monotonic() - start < 20
    assert loaded.name == str(folder)
    text = "Then , Mary and John went to the park . John gave a ring to"
    ids = loaded.tokenizer.encode(text)
    assert ids[0] == tok.bos_token_id and ids[1:] == tok(text)["input_ids"]
    toks = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(loaded.model(toks), hf(toks).logits, atol=1e-4)
