"""Shared fixtures: the shipped toy model (loaded once per session) and small file helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch

from circuits.app.loading import LoadedModel, load_model
from circuits.toy.model import TOKENIZER_FILE, shipped_dir
from circuits.toy.tokenizer import WordTokenizer

# The models under test are tiny: one thread is as fast as several on an idle machine and much
# faster on a shared one, where spinning intra-op threads compete for the same cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory) -> None:
    """Feature-label caches go to a folder of this session, never to the user's cache."""
    os.environ["CIRCUITS_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def toy() -> LoadedModel:
    """The embedded toy model on CPU, shared by every test that runs it (never modify it)."""
    return load_model("toy", device="cpu")


@pytest.fixture(scope="session")
def toy_tokenizer() -> WordTokenizer:
    """The shipped word-level tokenizer, without the model."""
    return WordTokenizer.load(shipped_dir() / TOKENIZER_FILE)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[Iterable[dict | str], str], Path]:
    """Write records (dicts as JSON, strings verbatim) one per line into ``tmp_path / name``."""

    def write(records: Iterable[dict | str], name: str = "task.jsonl") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` into ``tmp_path / name``."""

    def write(text: str, name: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
