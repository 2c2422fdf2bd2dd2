"""Training dictionaries on a model's activations.

Kept apart from the inference classes (:mod:`replacement.dictionaries`): the training loop,
:func:`train_dictionary`, only sees an iterator of activation batches (``x`` for an SAE,
``(x_in, x_out)`` pairs for a transcoder). :func:`collect_activations` gathers those activations
from a TransformerBridge over token batches the caller provides, and :func:`train_set` trains a
whole :class:`~replacement.dictionaries.DictionarySet`.

Training happens on activations rescaled to unit total variance (so one learning rate and one
sparsity coefficient fit every site, whatever its scale); the scale is folded back into the
weights at the end, so the saved dictionary takes and returns the model's raw activations.
Decoder rows are kept at unit norm. The encoder sees ZCA-whitened inputs while training (also
folded into the saved weights), which keeps features from dying in the low-rank activation
spaces of small models. TopK dictionaries get the auxiliary "AuxK" loss (Gao et al.
2024): the ``k_aux`` largest pre-activations of dead features reconstruct the remaining error, which
keeps features from dying; ReLU dictionaries are trained with an L1 penalty.

The reconstruction loss is, by default, weighted towards each token's *relative* error. The
models' LayerNorms see an error relative to the size of the token's activation, and a few tokens
(BOS, punctuation) carry activations several times larger than the rest: plain MSE spends the
dictionary on them. On the toy model this weighting barely moves the variance explained but
markedly improves the loss with every SAE spliced in at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from replacement.dictionaries import (
    DictionaryConfig,
    DictionarySet,
    create_dictionary,
    hook_width,
    is_transcoder,
)
from replacement.errors import DictionaryError
from replacement.sites import Site

log = logging.getLogger(__name__)

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """How one dictionary is optimised.

    ``steps`` optimizer steps of ``batch_size`` activations (tokens); Adam at ``lr`` with a
    linear warm-up over ``warmup`` steps and a linear decay to zero over the last
    ``decay_fraction`` of the steps. ``l1_coefficient`` weighs the L1 penalty of ReLU
    dictionaries (on unit-variance activations; larger is sparser). A feature counts as dead
    when it has not fired for ``dead_after_tokens`` tokens; ``aux_k_coefficient`` weighs the
    AuxK loss that revives dead TopK features. Every ``resample_every`` steps during the first
    ``resample_until`` fraction of training, dead features are re-initialised on inputs the
    dictionary reconstructs worst (0 disables resampling). ``whiten`` trains the encoder on
    ZCA-whitened inputs (directions with less than ``whiten_floor`` of the mean variance are not
    lifted further), which keeps features from dying in low-rank activation spaces; it is folded
    into the saved weights. ``relative_error`` weighs each token's squared error by
    ``1 / (|y - b_dec|^2 + 1)`` on the unit-variance scale, i.e. roughly by its error relative to
    its own size (see the module docstring).
    """

    steps: int = 500
    batch_size: int = 512
    lr: float = 5e-3
    warmup: int = 30
    decay_fraction: float = 0.3
    l1_coefficient: float = 0.04
    aux_k_coefficient: float = 1 / 32
    dead_after_tokens: int = 30_000
    resample_every: int = 50
    resample_until: float = 0.5
    whiten: bool = True
    whiten_floor: float = 1e-4
    relative_error: bool = True
    seed: int = 0


@dataclass
class TrainResult:
    """What training one dictionary produced: per-step losses and final statistics (on training batches)."""

    losses: list[float] = field(default_factory=list)
    fvu: float = math.nan  # fraction of variance unexplained, mean over the last 50 steps
    l0: float = math.nan  # active features per token, mean over the last 50 steps
    dead_fraction: float = math.nan  # features that did not fire over the last dead_after_tokens tokens
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_activations(
    model: Any,
    token_batches: Iterable[torch.Tensor],
    hooks: Sequence[str],
    pad_id: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, torch.Tensor]:
    """Activations of ``hooks`` over every non-padding token: ``{hook: [n_tokens, width]}`` (on CPU).

    ``token_batches`` yields ``[batch, pos]`` token ids; positions equal to ``pad_id`` are dropped.
    """
    hooks = list(dict.fromkeys(hooks))
    wanted = set(hooks)
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise DictionaryError(f"the model has no hook {missing[0]!r}; the dictionary sites do not fit this model")
    device = next(model.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for tokens in tqdm(token_batches, desc="collecting activations", total=total, disable=not progress, leave=False):
        tokens = tokens.to(device)
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
        keep = (tokens != pad_id) if pad_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        for h in hooks:
            chunks[h].append(cache[h][keep].detach().to("cpu", torch.float32))
    if not chunks[hooks[0]]:
        raise DictionaryError("no token batches were given to collect activations from")
    return {h: torch.cat(c) for h, c in chunks.items()}


def activation_batches(
    x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1024, seed: int = 0
) -> Iterator[Batch]:
    """Endless shuffled mini-batches of the rows of ``x`` (paired with the same rows of ``y``)."""
    if y is not None and len(y) != len(x):
        raise DictionaryError(f"input and output activations differ in length ({len(x)} vs {len(y)})")
    n = len(x)
    if n == 0:
        raise DictionaryError("no activations to train on")
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - min(batch_size, n) + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx] if y is None else (x[idx], y[idx])


# --------------------------------------------------------------------------------------------
# One dictionary
# --------------------------------------------------------------------------------------------


def _split(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    return batch, batch


@dataclass
class _Frame:
    """Coordinates training happens in: inputs ``x_t = (x / s_in - mu) @ white`` and targets
    ``y / s_out``, where ``mu`` and ``white`` (a regularised ZCA whitening, or the identity)
    come from the first batch. Everything is folded back into raw coordinates at the end."""

    s_in: float
    s_out: float
    mu: torch.Tensor  # [d_in], in units of s_in
    white: torch.Tensor  # [d_in, d_in]

    @staticmethod
    def of(x: torch.Tensor, y: torch.Tensor, whiten: bool, eps: float = 1e-2) -> _Frame:
        def total_std(t: torch.Tensor) -> float:
            return float(((t - t.mean(0)) ** 2).sum(-1).mean().sqrt().clamp_min(1e-6))

        s_in, s_out = total_std(x), total_std(y)
        xn = x / s_in
        mu = xn.mean(0)
        d_in = x.shape[1]
        if not whiten:
            return _Frame(s_in, s_out, mu, torch.eye(d_in, device=x.device))
        cov = (xn - mu).T @ (xn - mu) / max(1, len(xn) - 1)
        evals, evecs = torch.linalg.eigh(cov)
        # Directions with (almost) no variance are only lifted to eps times the mean variance.
        floor = eps * evals.clamp_min(0).mean()
        white = evecs @ torch.diag((evals.clamp_min(0) + floor).rsqrt()) @ evecs.T / math.sqrt(d_in)
        return _Frame(s_in, s_out, mu, white)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.s_in - self.mu) @ self.white


@dataclass
class _State:
    """Trainable tensors in training coordinates (see :class:`_Frame`)."""

    W_e: torch.Tensor  # [d_in, d_sae]
    b_e: torch.Tensor  # [d_sae]
    W_d: torch.Tensor  # [d_sae, d_out], unit rows
    b_d: torch.Tensor  # [d_out]

    @staticmethod
    def initial(d_in: int, d_sae: int, d_out: int, y_mean: torch.Tensor, tied: bool, gen: torch.Generator, device: torch.device) -> _State:
        """Unit-norm random decoder rows; encoder = decoder transposed when input and output
        share a space (SAE), else random unit columns; zero encoder bias; decoder bias at the mean target."""
        dec = torch.randn(d_sae, d_out, generator=gen).to(device)
        dec = dec / dec.norm(dim=-1, keepdim=True)
        if tied:
            enc = dec.T.clone()
        else:
            enc = torch.randn(d_in, d_sae, generator=gen).to(device)
            enc = enc / enc.norm(dim=0, keepdim=True)
        state = _State(enc, torch.zeros(d_sae, device=device), dec, y_mean.clone())
        for t in state.tensors():
            t.requires_grad_(True)
        return state

    def tensors(self) -> list[torch.Tensor]:
        return [self.W_e, self.b_e, self.W_d, self.b_d]


@torch.no_grad()
def _write_back(d: nn.Module, state: _State, frame: _Frame, transcoder: bool) -> None:
    """Store the trained tensors in the SAELens module, in raw activation coordinates.

    Training computes ``pre = ((x / s_in) - mu) @ white @ W_e + b_e`` and
    ``y_hat = s_out * (f @ W_d + b_d)``; SAELens computes ``pre = (x - b_dec) @ W_enc + b_enc``
    (no ``b_dec`` term for transcoders) and ``y_hat = f @ W_dec + b_dec``. Matching the two gives
    the assignments below exactly."""
    W_enc = frame.white @ state.W_e / frame.s_in
    b_enc = state.b_e - (frame.mu @ frame.white) @ state.W_e
    b_dec = frame.s_out * state.b_d
    if not transcoder and d.cfg.apply_b_dec_to_input:
        b_enc = b_enc + b_dec @ W_enc
    d.W_enc.copy_(W_enc)
    d.b_enc.copy_(b_enc)
    d.W_dec.copy_(frame.s_out * state.W_d)
    d.b_dec.copy_(b_dec)


def train_dictionary(
    dictionary: nn.Module,
    batches: Iterator[Batch],
    config: TrainConfig | None = None,
    *,
    progress: bool | tqdm = False,
    desc: str = "training",
) -> TrainResult:
    """Train ``dictionary`` (a SAELens TopK/standard SAE or transcoder) in place.

    ``batches`` yields ``[batch, d_in]`` tensors for an SAE, ``([batch, d_in], [batch, d_out])``
    pairs for a transcoder. The first batch fixes the activation scale, the whitening and the
    initial decoder bias. ``progress`` is a bool or an open tqdm bar to advance by one per step.
    """
    config = config or TrainConfig()
    transcoder = is_transcoder(dictionary)
    topk = hasattr(dictionary.cfg, "k")
    activation = dictionary.activation_fn
    gen = torch.Generator().manual_seed(config.seed)
    device = dictionary.W_dec.device
    first = next(batches)
    x0, y0 = (t.to(device, torch.float32) for t in _split(first))
    frame = _Frame.of(x0, y0, config.whiten, config.whiten_floor)
    d_in, d_sae, d_out = dictionary.cfg.d_in, dictionary.cfg.d_sae, dictionary.W_dec.shape[1]
    state = _State.initial(d_in, d_sae, d_out, (y0 / frame.s_out).mean(0), tied=not transcoder and not config.whiten, gen=gen, device=device)
    opt = torch.optim.Adam(state.tensors(), lr=config.lr, betas=(0.9, 0.999))
    decay_start = int(config.steps * (1 - config.decay_fraction))

    def lr_factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        if step >= decay_start:
            return max(0.0, (config.steps - step) / max(1, config.steps - decay_start))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    k_aux = min(d_sae // 2, max(1, d_in // 2))
    tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    result = TrainResult()
    fvus, l0s = [], []
    own_bar = not isinstance(progress, tqdm)
    bar = tqdm(total=config.steps, desc=desc, disable=not progress, leave=False) if own_bar else progress
    started = time.perf_counter()
    pending: Batch | None = first
    try:
        for step in range(config.steps):
            batch = pending if pending is not None else next(batches)
            pending = None
            x, y = (t.to(device, torch.float32) for t in _split(batch))
            x_t, y = frame.inputs(x), y / frame.s_out
            pre = x_t @ state.W_e + state.b_e
            acts = activation(pre)
            err = y - (acts @ state.W_d + state.b_d)
            total_var = ((y - y.mean(0)) ** 2).sum(-1).mean().clamp_min(1e-8)
            if config.relative_error:
                w = 1.0 / (((y - state.b_d.detach()) ** 2).sum(-1) + 1.0)
                mse = ((err**2).sum(-1) * w).sum() / w.sum()
            else:
                mse = (err**2).sum(-1).mean()
            tokens_since_fired += len(x)
            tokens_since_fired[(acts > 0).any(0)] = 0
            dead = tokens_since_fired > config.dead_after_tokens
            if topk:
                loss = mse + config.aux_k_coefficient * _aux_k_loss(state, pre, err, dead, k_aux)
            else:
                loss = mse + config.l1_coefficient * acts.abs().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                # keep decoder rows at unit norm: drop the gradient along each row, renormalise after the step
                state.W_d.grad.sub_((state.W_d.grad * state.W_d).sum(-1, keepdim=True) * state.W_d)
            opt.step()
            sched.step()
            with torch.no_grad():
                state.W_d.div_(state.W_d.norm(dim=-1, keepdim=True).clamp_min(1e-8))
            if config.resample_every and step and step % config.resample_every == 0 and step < config.resample_until * config.steps and dead.any():
                _resample(state, opt, x_t, err.detach(), dead, gen)
                tokens_since_fired[dead] = 0
            result.losses.append(loss.item())
            fvus.append((mse / total_var).item())
            l0s.append((acts > 0).float().sum(-1).mean().item())
            if bar is not None:
                bar.update(1)
                if step % 25 == 0:
                    bar.set_postfix_str(f"{desc} fvu {sum(fvus[-25:]) / len(fvus[-25:]):.3f} l0 {l0s[-1]:.1f}")
    finally:
        if own_bar and bar is not None:
            bar.close()
    _write_back(dictionary, state, frame, transcoder)
    dictionary.eval()
    tail = slice(-min(50, len(fvus)), None)
    result.fvu = sum(fvus[tail]) / len(fvus[tail])
    result.l0 = sum(l0s[tail]) / len(l0s[tail])
    result.dead_fraction = float((tokens_since_fired > config.dead_after_tokens).float().mean())
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def _resample(state: _State, opt: torch.optim.Optimizer, x_t: torch.Tensor, err: torch.Tensor, dead: torch.Tensor, gen: torch.Generator) -> None:
    """Point each dead feature at an input the dictionary reconstructs badly (picked with
    probability proportional to its squared error): decoder row = that input's error direction,
    encoder column = its input direction at the mean live encoder norm, so the feature wins the
    TopK (or passes the ReLU) on that input and inputs like it. Optimizer state is reset for them."""
    idx = dead.nonzero().squeeze(-1)
    weights = (err**2).sum(-1)
    if float(weights.sum()) <= 0:
        return
    picks = torch.multinomial(weights.cpu(), len(idx), replacement=len(idx) > len(x_t), generator=gen).to(x_t.device)
    e = err[picks]
    state.W_d[idx] = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    xin = x_t[picks]
    alive = ~dead
    enc_norm = state.W_e[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    state.W_e[:, idx] = (xin / xin.norm(dim=-1, keepdim=True).clamp_min(1e-8)).T * enc_norm
    state.b_e[idx] = state.b_e[alive].mean() if alive.any() else 0.0
    for p, sel in ((state.W_d, (idx,)), (state.W_e, (slice(None), idx)), (state.b_e, (idx,))):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key][sel] = 0.0


def _aux_k_loss(state: _State, pre: torch.Tensor, err: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """Normalised error of reconstructing the residual ``err`` from the top ``k_aux`` dead features."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    dead_idx = dead.nonzero().squeeze(-1)
    vals, pos = pre[:, dead_idx].topk(min(k_aux, n_dead), dim=-1)
    aux_recon = torch.einsum("bk,bkd->bd", vals.relu(), state.W_d[dead_idx[pos]])
    target = err.detach()
    return ((aux_recon - target) ** 2).sum(-1).mean() / (target**2).sum(-1).mean().clamp_min(1e-8)


# --------------------------------------------------------------------------------------------
# A whole set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetTrainConfig:
    """What :func:`train_set` builds: the dictionary shape and its optimisation, for every site."""

    dictionary: DictionaryConfig = field(default_factory=DictionaryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def as_dict(self) -> dict[str, Any]:
        return {"dictionary": asdict(self.dictionary), "train": asdict(self.train)}


def train_set(
    model: Any,
    token_batches: Iterable[torch.Tensor],
    sites: Sequence[Site],
    config: SetTrainConfig | None = None,
    *,
    pad_id: int | None = None,
    name: str = "dictionaries",
    model_name: str | None = None,
    progress: bool = False,
    n_batches: int | None = None,
) -> tuple[DictionarySet, dict[str, TrainResult]]:
    """Train one dictionary per site on ``model``'s activations over ``token_batches``.

    Activations of every needed hook are collected once (non-padding tokens only), then each
    site's dictionary is trained in forward order with its own seed (``train.seed`` + site index).
    Returns the set (on the model's device) and each site's :class:`TrainResult`.
    """
    config = config or SetTrainConfig()
    sites = sorted(sites, key=lambda s: (s.order, s.name))
    if not sites:
        raise DictionaryError("no sites to train dictionaries for")
    hooks = [h for s in sites for h in (s.hook_in, s.hook_out)]
    acts = collect_activations(model, token_batches, hooks, pad_id=pad_id, progress=progress, total=n_batches)
    device = next(model.parameters()).device
    n_tokens = len(next(iter(acts.values())))
    log.info("collected %d tokens of activations for %d hooks", n_tokens, len(acts))
    dictionaries: dict[Site, nn.Module] = {}
    results: dict[str, TrainResult] = {}
    bar = tqdm(total=len(sites) * config.train.steps, desc="training dictionaries", disable=not progress)
    try:
        for i, site in enumerate(sites):
            seed = config.train.seed + i
            d = create_dictionary(
                site, hook_width(model, site.hook_in), config.dictionary,
                d_out=hook_width(model, site.hook_out), model_name=model_name, device=device, seed=seed,
            )
            y = acts[site.hook_out] if site.is_transcoder else None
            batches = activation_batches(acts[site.hook_in], y, config.train.batch_size, seed=seed)
            site_cfg = TrainConfig(**{**asdict(config.train), "seed": seed})
            results[site.name] = train_dictionary(d, batches, site_cfg, progress=bar if progress else False, desc=site.name)
            dictionaries[site] = d
            log.info("%s: fvu %.4f l0 %.1f dead %.3f", site.name, results[site.name].fvu, results[site.name].l0, results[site.name].dead_fraction)
    finally:
        bar.close()
    info = {
        "model": model_name,
        "training": {**config.as_dict(), "tokens": n_tokens},
        "train_stats": {s: {"fvu": r.fvu, "l0": r.l0, "dead_fraction": r.dead_fraction} for s, r in results.items()},
    }
    return DictionarySet(dictionaries, name=name, info=info), results
