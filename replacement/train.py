"""Training dictionaries on a model's activations.

Kept apart from the inference classes (:mod:`replacement.dictionaries`): the training loop,
:func:`train_dictionary`, only sees an iterator of activation batches (``x`` for an SAE,
``(x_in, x_out)`` pairs for a transcoder). :func:`collect_activations` gathers those activations
from a TransformerBridge over token batches the caller provides, and :func:`train_set` trains a
whole :class:`~replacement.dictionaries.DictionarySet`. The coordinates and tensors of one
dictionary's training are in :mod:`replacement.train_state`.

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

import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from sae_lens import SAE
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
from replacement.train_state import (
    Batch,
    Frame,
    TrainState,
    aux_k_loss,
    resample_dead,
    split_batch,
    write_back,
)

log = logging.getLogger(__name__)


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


class _Optimiser:
    """Adam with warm-up and linear decay, the dead-feature count and the loss of one dictionary."""

    def __init__(
        self, dictionary: SAE, state: TrainState, frame: Frame, config: TrainConfig, gen: torch.Generator
    ) -> None:
        self.state, self.frame, self.config, self.gen = state, frame, config, gen
        self.activation = dictionary.activation_fn
        self.topk = hasattr(dictionary.cfg, "k")
        self.device = dictionary.W_dec.device
        d_in, d_sae = dictionary.cfg.d_in, dictionary.cfg.d_sae
        self.opt = torch.optim.Adam(state.tensors(), lr=config.lr, betas=(0.9, 0.999))
        decay_start = int(config.steps * (1 - config.decay_fraction))

        def lr_factor(step: int) -> float:
            if step < config.warmup:
                return (step + 1) / config.warmup
            if step >= decay_start:
                return max(0.0, (config.steps - step) / max(1, config.steps - decay_start))
            return 1.0

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor)
        self.k_aux = min(d_sae // 2, max(1, d_in // 2))
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=self.device)

    def step(self, step: int, batch: Batch) -> tuple[float, float, float]:
        """One optimizer step on ``batch``: returns its loss, fraction of variance unexplained and L0."""
        config, state = self.config, self.state
        x, y = (t.to(self.device, torch.float32) for t in split_batch(batch))
        x_t, y = self.frame.inputs(x), y / self.frame.s_out
        pre = x_t @ state.W_e + state.b_e
        acts = self.activation(pre)
        err = y - (acts @ state.W_d + state.b_d)
        total_var = ((y - y.mean(0)) ** 2).sum(-1).mean().clamp_min(1e-8)
        if config.relative_error:
            w = 1.0 / (((y - state.b_d.detach()) ** 2).sum(-1) + 1.0)
            mse = ((err**2).sum(-1) * w).sum() / w.sum()
        else:
            mse = (err**2).sum(-1).mean()
        self.tokens_since_fired += len(x)
        self.tokens_since_fired[(acts > 0).any(0)] = 0
        dead = self.tokens_since_fired > config.dead_after_tokens
        if self.topk:
            loss = mse + config.aux_k_coefficient * aux_k_loss(state, pre, err, dead, self.k_aux)
        else:
            loss = mse + config.l1_coefficient * acts.abs().sum(-1).mean()
        self._descend(loss)
        if (
            config.resample_every
            and step
            and step % config.resample_every == 0
            and step < config.resample_until * config.steps
            and dead.any()
        ):
            resample_dead(state, self.opt, x_t, err.detach(), dead, self.gen)
            self.tokens_since_fired[dead] = 0
        return loss.item(), (mse / total_var).item(), (acts > 0).float().sum(-1).mean().item()

    def _descend(self, loss: torch.Tensor) -> None:
        """Backward, one Adam step with decoder rows kept at unit norm, one schedule step."""
        state = self.state
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # keep decoder rows at unit norm: drop the gradient along each row, renormalise after the step
            grad = state.W_d.grad
            assert grad is not None  # W_d is in the loss
            grad.sub_((grad * state.W_d).sum(-1, keepdim=True) * state.W_d)
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            state.W_d.div_(state.W_d.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def train_dictionary(
    dictionary: SAE,
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
    gen = torch.Generator().manual_seed(config.seed)
    device = dictionary.W_dec.device
    first = next(batches)
    x0, y0 = (t.to(device, torch.float32) for t in split_batch(first))
    frame = Frame.of(x0, y0, config.whiten, config.whiten_floor)
    d_in, d_sae, d_out = dictionary.cfg.d_in, dictionary.cfg.d_sae, dictionary.W_dec.shape[1]
    tied = not transcoder and not config.whiten
    state = TrainState.initial(d_in, d_sae, d_out, (y0 / frame.s_out).mean(0), tied=tied, gen=gen, device=device)
    optimiser = _Optimiser(dictionary, state, frame, config, gen)
    result = TrainResult()
    fvus: list[float] = []
    l0s: list[float] = []
    own_bar = not isinstance(progress, tqdm)
    bar = (
        progress
        if isinstance(progress, tqdm)
        else tqdm(total=config.steps, desc=desc, disable=not progress, leave=False)
    )
    started = time.perf_counter()
    try:
        # zip stops at the last step before drawing another batch
        for step, batch in zip(range(config.steps), itertools.chain([first], batches)):
            loss, fvu, l0 = optimiser.step(step, batch)
            result.losses.append(loss)
            fvus.append(fvu)
            l0s.append(l0)
            if bar is not None:
                bar.update(1)
                if step % 25 == 0:
                    bar.set_postfix_str(f"{desc} fvu {sum(fvus[-25:]) / len(fvus[-25:]):.3f} l0 {l0s[-1]:.1f}")
    finally:
        if own_bar and bar is not None:
            bar.close()
    write_back(dictionary, state, frame, transcoder)
    dictionary.eval()
    tail = slice(-min(50, len(fvus)), None)
    result.fvu = sum(fvus[tail]) / len(fvus[tail])
    result.l0 = sum(l0s[tail]) / len(l0s[tail])
    result.dead_fraction = float((optimiser.tokens_since_fired > config.dead_after_tokens).float().mean())
    result.seconds = time.perf_counter() - started
    return result


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
    n_tokens = len(next(iter(acts.values())))
    log.info("collected %d tokens of activations for %d hooks", n_tokens, len(acts))
    dictionaries: dict[Site, SAE] = {}
    results: dict[str, TrainResult] = {}
    bar = tqdm(total=len(sites) * config.train.steps, desc="training dictionaries", disable=not progress)
    try:
        for i, site in enumerate(sites):
            dictionaries[site], results[site.name] = _train_site(
                model,
                site,
                acts,
                config,
                seed=config.train.seed + i,
                model_name=model_name,
                bar=bar if progress else None,
            )
    finally:
        bar.close()
    info = {
        "model": model_name,
        "training": {**config.as_dict(), "tokens": n_tokens},
        "train_stats": {s: {"fvu": r.fvu, "l0": r.l0, "dead_fraction": r.dead_fraction} for s, r in results.items()},
    }
    return DictionarySet(dictionaries, name=name, info=info), results


def _train_site(
    model: Any,
    site: Site,
    acts: dict[str, torch.Tensor],
    config: SetTrainConfig,
    *,
    seed: int,
    model_name: str | None,
    bar: tqdm | None,
) -> tuple[SAE, TrainResult]:
    """A new dictionary for ``site`` (seeded with ``seed``) trained on the collected ``acts``."""
    device = next(model.parameters()).device
    d = create_dictionary(
        site,
        hook_width(model, site.hook_in),
        config.dictionary,
        d_out=hook_width(model, site.hook_out),
        model_name=model_name,
        device=device,
        seed=seed,
    )
    y = acts[site.hook_out] if site.is_transcoder else None
    batches = activation_batches(acts[site.hook_in], y, config.train.batch_size, seed=seed)
    site_cfg = TrainConfig(**{**asdict(config.train), "seed": seed})
    result = train_dictionary(d, batches, site_cfg, progress=bar if bar is not None else False, desc=site.name)
    log.info("%s: fvu %.4f l0 %.1f dead %.3f", site.name, result.fvu, result.l0, result.dead_fraction)
    return d, result
