"""The tensors one dictionary is trained as, and the coordinates they are trained in.

:class:`Frame` maps raw activations to training coordinates (unit total variance, optionally
ZCA-whitened inputs) and :func:`write_back` folds a trained :class:`TrainState` back into a SAELens
module in raw coordinates. :func:`resample_dead` re-initialises dead features on badly
reconstructed inputs and :func:`aux_k_loss` is the AuxK loss that revives dead TopK features; the
loop that uses them is :func:`replacement.train.train_dictionary`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from sae_lens import SAE

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a batch: the pair of a transcoder batch, the tensor twice for an SAE."""
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    return batch, batch


@dataclass
class Frame:
    """Coordinates training happens in: inputs ``x_t = (x / s_in - mu) @ white`` and targets
    ``y / s_out``, where ``mu`` and ``white`` (a regularised ZCA whitening, or the identity)
    come from the first batch. Everything is folded back into raw coordinates at the end."""

    s_in: float
    s_out: float
    mu: torch.Tensor  # [d_in], in units of s_in
    white: torch.Tensor  # [d_in, d_in]

    @staticmethod
    def of(x: torch.Tensor, y: torch.Tensor, whiten: bool, eps: float = 1e-2) -> Frame:
        def total_std(t: torch.Tensor) -> float:
            return float(((t - t.mean(0)) ** 2).sum(-1).mean().sqrt().clamp_min(1e-6))

        s_in, s_out = total_std(x), total_std(y)
        xn = x / s_in
        mu = xn.mean(0)
        d_in = x.shape[1]
        if not whiten:
            return Frame(s_in, s_out, mu, torch.eye(d_in, device=x.device))
        cov = (xn - mu).T @ (xn - mu) / max(1, len(xn) - 1)
        evals, evecs = torch.linalg.eigh(cov)
        # Directions with (almost) no variance are only lifted to eps times the mean variance.
        floor = eps * evals.clamp_min(0).mean()
        white = evecs @ torch.diag((evals.clamp_min(0) + floor).rsqrt()) @ evecs.T / math.sqrt(d_in)
        return Frame(s_in, s_out, mu, white)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.s_in - self.mu) @ self.white


@dataclass
class TrainState:
    """Trainable tensors in training coordinates (see :class:`Frame`)."""

    W_e: torch.Tensor  # [d_in, d_sae]
    b_e: torch.Tensor  # [d_sae]
    W_d: torch.Tensor  # [d_sae, d_out], unit rows
    b_d: torch.Tensor  # [d_out]

    @staticmethod
    def initial(
        d_in: int, d_sae: int, d_out: int, y_mean: torch.Tensor, tied: bool, gen: torch.Generator, device: torch.device
    ) -> TrainState:
        """Unit-norm random decoder rows; encoder = decoder transposed when input and output
        share a space (SAE), else random unit columns; zero encoder bias; decoder bias at the mean target."""
        dec = torch.randn(d_sae, d_out, generator=gen).to(device)
        dec = dec / dec.norm(dim=-1, keepdim=True)
        if tied:
            enc = dec.T.clone()
        else:
            enc = torch.randn(d_in, d_sae, generator=gen).to(device)
            enc = enc / enc.norm(dim=0, keepdim=True)
        state = TrainState(enc, torch.zeros(d_sae, device=device), dec, y_mean.clone())
        for t in state.tensors():
            t.requires_grad_(True)
        return state

    def tensors(self) -> list[torch.Tensor]:
        return [self.W_e, self.b_e, self.W_d, self.b_d]


@torch.no_grad()
def write_back(d: SAE, state: TrainState, frame: Frame, transcoder: bool) -> None:
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


@torch.no_grad()
def resample_dead(
    state: TrainState,
    opt: torch.optim.Optimizer,
    x_t: torch.Tensor,
    err: torch.Tensor,
    dead: torch.Tensor,
    gen: torch.Generator,
) -> None:
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


def aux_k_loss(state: TrainState, pre: torch.Tensor, err: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """Normalised error of reconstructing the residual ``err`` from the top ``k_aux`` dead features."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    dead_idx = dead.nonzero().squeeze(-1)
    vals, pos = pre[:, dead_idx].topk(min(k_aux, n_dead), dim=-1)
    aux_recon = torch.einsum("bk,bkd->bd", vals.relu(), state.W_d[dead_idx[pos]])
    target = err.detach()
    return ((aux_recon - target) ** 2).sum(-1).mean() / (target**2).sum(-1).mean().clamp_min(1e-8)
