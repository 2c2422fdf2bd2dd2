"""The embedded toy model: a small TL-native transformer trained on the toy language.

The trained weights (``model.safetensors``), the model's configuration (``model.json``) and the
tokenizer (``tokenizer.json``) ship in ``circuits/toy/data`` so nothing trains at first use;
``circuits toy train --replace-shipped`` reproduces them from a seed.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from circuits.files import atomic_write
from circuits.toy.language import corpus_sentence, vocabulary
from circuits.toy.tokenizer import WordTokenizer

log = logging.getLogger(__name__)

MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "model.json", "tokenizer.json"


def shipped_dir() -> Path:
    """The folder inside the package holding the trained toy model."""
    return Path(str(resources.files("circuits.toy") / "data"))


def shipped_dictionary_set() -> Path:
    """The folder of the dictionary set trained for the toy model (shipped beside its weights)."""
    return shipped_dir() / "dictionaries"


@dataclass
class ToyModelConfig:
    """Architecture of the toy model (attention + MLP + LayerNorm)."""

    n_layers: int = 3
    d_model: int = 96
    n_heads: int = 4
    d_mlp: int = 384
    n_ctx: int = 48
    act_fn: str = "gelu"
    seed: int = 0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class ToyTrainConfig:
    """How ``circuits toy train`` trains the model."""

    steps: int = 2500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0


def build_model(config: ToyModelConfig, tokenizer: WordTokenizer, device: str | torch.device | None = None):
    """A freshly initialised TL-native TransformerBridge with the toy architecture."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        d_head=config.d_head,
        d_mlp=config.d_mlp,
        n_ctx=config.n_ctx,
        d_vocab=tokenizer.vocab_size,
        act_fn=config.act_fn,
        normalization_type="LN",
        seed=config.seed,
    )
    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer.hf, device=device, model_name="toy")
    model.eval()
    return model


def _training_batch(rng: random.Random, tokenizer: WordTokenizer, batch_size: int, n_ctx: int) -> torch.Tensor:
    rows = []
    for _ in range(batch_size):
        ids = tokenizer.encode(" ".join(corpus_sentence(rng)))[:n_ctx]
        rows.append(ids)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def train_model(
    model_config: ToyModelConfig | None = None,
    train_config: ToyTrainConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
):
    """Train the toy model on freshly generated toy-language sentences; returns (model, tokenizer, losses)."""
    model_config = model_config or ToyModelConfig()
    train_config = train_config or ToyTrainConfig()
    torch.manual_seed(train_config.seed)
    tokenizer = WordTokenizer.from_words(vocabulary())
    model = build_model(model_config, tokenizer, device=device)
    net = model.original_model  # the plain module: same parameters, no hook overhead
    net.train()
    opt = torch.optim.AdamW(
        net.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < train_config.warmup:
            return (step + 1) / train_config.warmup
        frac = (step - train_config.warmup) / max(1, train_config.steps - train_config.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(train_config.seed)
    losses: list[float] = []
    bar = tqdm(range(train_config.steps), desc="training toy model", disable=not progress)
    for step in bar:
        toks = _training_batch(rng, tokenizer, train_config.batch_size, model_config.n_ctx).to(device)
        out = net(toks)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        target = toks[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=tokenizer.pad_id
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    net.eval()
    model.eval()
    return model, tokenizer, losses


def save_model(model, tokenizer: WordTokenizer, config: ToyModelConfig, directory: str | Path) -> Path:
    """Write weights (safetensors), configuration and tokenizer (JSON) into ``directory``."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in _unique_state(model.original_model).items()}
    atomic_write(directory / MODEL_FILE, lambda p: save_file(state, p))
    atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(asdict(config), indent=2) + "\n"))
    atomic_write(directory / TOKENIZER_FILE, lambda p: tokenizer.save(p))
    return directory


def _unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor stored once (the native model aliases its weights)."""
    seen: set[tuple] = set()
    out = {}
    for k, v in module.state_dict().items():
        key = (v.data_ptr(), tuple(v.shape), v.stride())
        if key in seen:
            continue
        seen.add(key)
        out[k] = v
    return out


def load_model(directory: str | Path | None = None, device: str | torch.device | None = None):
    """The toy model and tokenizer from ``directory`` (the shipped ones by default)."""
    directory = Path(directory) if directory is not None else shipped_dir()
    missing = [f for f in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE) if not (directory / f).exists()]
    if missing:
        from circuits.errors import ModelLoadError

        raise ModelLoadError(
            f"{directory} lacks {', '.join(missing)}; train the toy model with `circuits toy train --out {directory}`"
        )
    config = ToyModelConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    tokenizer = WordTokenizer.load(directory / TOKENIZER_FILE)
    model = build_model(config, tokenizer, device=device)
    state = load_file(str(directory / MODEL_FILE), device=str(device or "cpu"))
    result = model.original_model.load_state_dict(state, strict=False)
    # Keys skipped as aliases of stored tensors are fine; anything else missing is not.
    full = model.original_model.state_dict()
    really_missing = [
        k for k in result.missing_keys if not any(full[k].data_ptr() == full[s].data_ptr() for s in state)
    ]
    if really_missing or result.unexpected_keys:
        from circuits.errors import ModelLoadError

        raise ModelLoadError(
            f"{directory / MODEL_FILE} does not match the configuration: missing {really_missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    return model, tokenizer
