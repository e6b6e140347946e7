"""An exact oracle for discrete data: independent per-dimension categorical levels on the lattice.

Data ``k ∈ {0..L-1}^D`` with ``P(k) = Π_d π_d(k_d)`` sit, in model space, on the bin centres
``x_l = (2l + 1)/L - 1`` (:func:`scoresde.core.bpd.to_model_space`). Under any VP-SDE
``q(x_t | x_0) = N(α x_0, σ² I)``, so each coordinate's posterior over levels is exact,

    P(k_d = l | x_t) = softmax_l( log π_d(l) - (x_{t,d} - α x_l)² / (2σ²) ),

and so are Tweedie's ``x̂_0 = Σ_l P(l | x_t) x_l`` and ``ε*(x_t, t) = (x_t - α x̂_0)/σ``
(docs/math.md, "Score and ε"). This is the diffusion of a discrete distribution:
as ``σ → 0`` its ε* is the "snap to the nearest level" sawtooth that networks find hard to
learn (Kingma et al. 2021, "Variational Diffusion Models", §on Fourier features).

:class:`FactorizedLattice` serves two purposes:
- a test oracle whose exact ``-log₂ P(k)/D`` is known (bits/dim estimators must approach it);
- a base model: :class:`LatticeResidualModel` adds a trained ε-network to its ε*, so the
  network learns only what the per-pixel marginals miss (the dependencies between pixels),
  in the spirit of EDM's skip connection (the optimal denoiser of Gaussian data) but with
  the optimal denoiser of the factorized empirical distribution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scoresde.core.model import EpsModel, ScoreModel, batch_time
from scoresde.core.sde import append_dims
from scoresde.util.checks import check_int, check_number

__all__ = ["FactorizedLattice", "LatticeResidualModel", "lattice_log_probs"]


def lattice_log_probs(x_int: torch.Tensor, levels: int, smoothing: float = 0.5) -> torch.Tensor:
    """Per-dimension ``log π_d(l)`` ``(D, L)`` from counts of ``x_int`` ``(N, *dims)`` plus ``smoothing``
    (0.5: the Krichevsky–Trofimov estimate; keeps every level possible)."""
    check_int("levels", levels, 2)
    if not isinstance(x_int, torch.Tensor) or x_int.ndim < 2 or x_int.shape[0] < 1:
        raise ValueError(f"x_int of shape {tuple(getattr(x_int, 'shape', ()))}: expected (N, *dims)")
    check_number("smoothing", smoothing, low=0)
    k = x_int.flatten(1).long()
    if k.min() < 0 or k.max() > levels - 1:
        raise ValueError(f"x_int: expected integers in 0..{levels - 1}")
    counts = torch.zeros((k.shape[1], levels), dtype=torch.float64, device=k.device)
    counts.scatter_add_(1, k.T.contiguous(), torch.ones(k.T.shape, dtype=torch.float64, device=k.device))
    counts += smoothing
    return (counts / counts.sum(1, keepdim=True)).log()


class FactorizedLattice(nn.Module, EpsModel):
    """Exact ε* of ``P(k) = Π_d π_d(k_d)`` on the lattice of ``levels`` bin centres.

    Args:
        log_probs: ``(D, L)`` per-dimension log-probabilities (e.g. :func:`lattice_log_probs`);
            kept as a float64 buffer, so a checkpoint carries it.
        sde: the VP-SDE (anything with ``alpha(t)``, ``sigma(t)``).
        event_shape: shape of one sample, ``prod = D``.
    """

    def __init__(self, log_probs: torch.Tensor, sde, event_shape):
        super().__init__()
        log_probs = torch.as_tensor(log_probs, dtype=torch.float64,
                                    device=log_probs.device if isinstance(log_probs, torch.Tensor) else "cpu")
        if log_probs.ndim != 2 or log_probs.shape[1] < 2:
            raise ValueError(f"log_probs has shape {tuple(log_probs.shape)}: expected (D, L), L ≥ 2")
        self.event_shape = tuple(int(s) for s in event_shape)
        if math.prod(self.event_shape) != log_probs.shape[0]:
            raise ValueError(f"event_shape={self.event_shape}: expected {log_probs.shape[0]} elements")
        self.register_buffer("log_probs", log_probs.log_softmax(1))
        levels = log_probs.shape[1]
        self.register_buffer("centres", (2 * torch.arange(levels, dtype=torch.float64, device=log_probs.device)
                                         + 1) / levels - 1)
        self.sde = sde

    @property
    def levels(self) -> int:
        return self.log_probs.shape[1]

    def posterior(self, x: torch.Tensor, t) -> torch.Tensor:
        """``P(k_d = l | x_t = x)``, float64 ``(B, D, L)``."""
        t = batch_time(t, x)
        z = x.flatten(1).to(torch.float64)  # (B, D)
        alpha = append_dims(self.sde.alpha(t), 3).to(z.device)  # (B, 1, 1)
        sigma = append_dims(self.sde.sigma(t), 3).to(z.device)
        logits = self.log_probs - (z[..., None] - alpha * self.centres) ** 2 / (2 * sigma**2)
        return logits.softmax(-1)

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """``ε* = (x - α x̂_0)/σ`` with the exact per-coordinate ``x̂_0``; shape and dtype of ``x``."""
        t = batch_time(t, x)
        x0_hat = (self.posterior(x, t) * self.centres).sum(-1)  # (B, D)
        alpha = append_dims(self.sde.alpha(t), 2).to(x.device)
        sigma = append_dims(self.sde.sigma(t), 2).to(x.device)
        return ((x.flatten(1).to(torch.float64) - alpha * x0_hat) / sigma).reshape(x.shape).to(x.dtype)

    def log_prob_discrete(self, x_int: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(k)`` in nats, ``(B,)``, for integer data ``(B, *event_shape)``."""
        k = x_int.flatten(1).long()
        return self.log_probs.gather(1, k.T.to(self.log_probs.device)).sum(0)


class LatticeResidualModel(ScoreModel):
    """``ε_θ(x, t) = ε*_lattice(x, t) + net(x, t)``: a network on top of the exact factorized base.

    The base is fixed (its ``log_probs`` is a buffer, not a parameter); the network, which
    knows nothing of the SDE, learns the residual. With the network's output at zero the
    model *is* the factorized lattice oracle.
    """

    def __init__(self, net: nn.Module, sde, base: FactorizedLattice):
        super().__init__(net, sde)
        if not isinstance(base, FactorizedLattice):
            raise ValueError(f"base={base!r}: expected a FactorizedLattice")
        self.base = base

    def eps(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        t = batch_time(t, x)
        return super().eps(x, t, y) + self.base.eps(x, t)
