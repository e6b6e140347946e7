"""The DDPM variational bound on any time grid ``t_eps = τ_1 < … < τ_N = 1`` of a VP-SDE.

The exact discretization of a VP-SDE on a grid, ``ᾱ_i = ᾱ(τ_i)`` and
``β_i = 1 - ᾱ(τ_i)/ᾱ(τ_{i-1})`` (``τ_0 = 0``, so ``β_1 = σ(τ_1)²``), is a valid DDPM chain
(docs/math.md, "DDPM as a VP-SDE"): it is the VP-SDE of the discrete schedule with these
``β_i``, whose step ``i`` sits at ``i/N``. :class:`GridChainModel` presents a model that way
(its ``eps`` at ``i/N`` is the model's ``eps`` at ``τ_i``), so the variational bound of
:mod:`scoresde.likelihood.vlb` applies unchanged (Ho et al. 2020, eq. 5).

Where the chain starts matters for discrete data (Kingma et al. 2021, "Variational
Diffusion Models"): with bin width ``w = 2/L`` and ``σ(τ_1) ≪ w`` the model must learn to
snap to the levels; with ``σ(τ_1)`` a fraction of ``w`` the decoder ``L_0`` does it. And the
spacing matters: steps equally spaced in log-SNR ``λ = log(α²/σ²)`` put enough of them where
the data's discreteness shows (small ``σ``); equal steps in ``t`` leave the bound far from its
continuous-time limit there.
"""

from __future__ import annotations

import torch

from scoresde.core.bpd import BpdResult
from scoresde.core.model import EpsModel, batch_time
from scoresde.core.schedules import DiscreteSchedule
from scoresde.core.sde import VPSDE, require_variance_preserving
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.util.checks import check_choice, check_int, check_model, check_t_eps
from scoresde.util.choices import VLB_SPACINGS

__all__ = ["SPACINGS", "vlb_grid", "t_of_sigma", "GridChainModel", "grid_vlb_bits_per_dim"]

SPACINGS = VLB_SPACINGS


def t_of_sigma(sde, sigma: float) -> float:
    """The time ``t`` with ``σ(t) = sigma`` for ``0 < sigma < σ(1)``: the SDE's own inverse
    ``time_for_sigma`` (VP: ``B(t) = -log(1 - σ²)``; every SDE of :mod:`scoresde.core.sde` has one)."""
    return float(sde.time_for_sigma(sigma))


def vlb_grid(sde, N: int, t_eps: float, spacing: str = "logsnr") -> torch.Tensor:
    """``(τ_0 = 0, τ_1 = t_eps, …, τ_N = 1)``, float64 ``(N+1,)``, equally spaced in ``t`` or in log-SNR."""
    N = check_int("N", N)
    check_choice("spacing", spacing, SPACINGS)
    t_eps = check_t_eps(t_eps)
    if spacing == "time" or N == 1:
        inner = torch.linspace(t_eps, 1.0, N, dtype=torch.float64, device="cpu")
    else:
        ends = torch.tensor([t_eps, 1.0], dtype=torch.float64, device="cpu")
        lam = torch.linspace(*sde.log_snr(ends).tolist(), N, dtype=torch.float64, device="cpu")
        inner = sde.time_for_log_snr(lam, lo=t_eps, hi=1.0).clamp(t_eps, 1.0)
        inner[0], inner[-1] = t_eps, 1.0
    return torch.cat([inner.new_zeros(1), inner])


class GridChainModel(EpsModel):
    """``model`` as a discrete DDPM chain on ``times`` (``(N+1,)``, ``times[0] = 0``).

    ``sde`` is the discrete VP-SDE with ``β_i = 1 - ᾱ(τ_i)/ᾱ(τ_{i-1})``; ``eps(x, i/N)`` is
    ``model.eps(x, τ_i)``. Only grid times ``i/N`` are valid.
    """

    def __init__(self, model, times: torch.Tensor):
        check_model(model)
        times = torch.as_tensor(times, dtype=torch.float64, device="cpu")
        if times.ndim != 1 or times.shape[0] < 2 or times[0] != 0 or not (times.diff() > 0).all():
            raise ValueError("times: expected an increasing 1-D grid starting at 0")
        _, betas = model.sde.transition(times[:-1], times[1:])  # 1 - ᾱ(τ_i)/ᾱ(τ_{i-1})
        self.model, self.times, self.N = model, times, times.shape[0] - 1
        self.sde = VPSDE(DiscreteSchedule(betas))

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        t = batch_time(t, x)
        i = torch.round(t * self.N).long()
        if not torch.allclose(i.to(torch.float64) / self.N, t, rtol=0, atol=1e-9):
            raise ValueError("GridChainModel.eps: expected times on the grid i/N")
        return self.model.eps(x, self.times.to(x.device)[i])


def grid_vlb_bits_per_dim(model, x_int: torch.Tensor, levels: int, *, t_eps: float, N: int = 1000,
                          spacing: str = "logsnr", **options) -> BpdResult:
    """The DDPM bound in bits/dim on the grid :func:`vlb_grid` ``(sde, N, t_eps, spacing)``.

    ``options`` go to :func:`scoresde.likelihood.vlb.ddpm_vlb_bits_per_dim` (``n_terms``, ``variance``,
    ``generator``, ``batch_size``, ``progress``). ``info`` adds ``t_eps`` and ``sigma_eps``.
    """
    check_model(model)
    require_variance_preserving(model.sde)
    chain = GridChainModel(model, vlb_grid(model.sde, N, t_eps, spacing))
    res = ddpm_vlb_bits_per_dim(chain, x_int, levels, N=N, **options)
    res.info.update(t_eps=float(t_eps), sigma_eps=float(model.sde.sigma(t_eps)), spacing=spacing)
    return res
