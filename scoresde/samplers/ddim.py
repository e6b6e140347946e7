"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12).

On a grid ``τ_0 < … < τ_K = 1`` (see :func:`~scoresde.samplers.base.descent_grid`), with
``α_k = α(τ_k)``, ``σ_k = σ(τ_k)`` (so ``ᾱ_k = α_k²``, ``1 - ᾱ_k = σ_k²``):

    x̂_0 = (x_k - σ_k ε(x_k, τ_k)) / α_k
    s_k(η) = η · σ_{k-1}/σ_k · √v_k                                         (eq. 16)
    x_{k-1} = α_{k-1} x̂_0 + √(σ_{k-1}² - s_k²) · ε + s_k z.                 (eq. 12)

with ``v_k = σ_k² - (α_k/α_{k-1})² σ_{k-1}²`` the variance of the SDE's transition
``q(x_{τ_k} | x_{τ_{k-1}})`` (``1 - ᾱ_k/ᾱ_{k-1}`` for VP; ``σ_k² - σ_{k-1}²`` for VE), so that
``s_k(1)²`` is the variance of the posterior ``q(x_{τ_{k-1}} | x_{τ_k}, x_0)`` for every SDE.
``η = 1`` is the ancestral sampler with the posterior variance ``β̃``; ``η = 0`` is
deterministic, a first-order solver of the probability-flow ODE. With ``denoise=True`` the
last update goes to ``τ = 0`` (``α = 1``, ``σ = 0``) and returns ``x̂_0``.
"""

from __future__ import annotations

import torch

from ..checks import check_number
from ..rng import randn
from .base import NFECounter, SampleResult, check_options, check_t_eps, descent_grid, progress_bar

__all__ = ["ddim"]

_DEFAULTS = {"eta": 0.0, "spacing": "uniform"}


@torch.no_grad()
def ddim(model, x_T: torch.Tensor, *, steps: int, generator=None, progress: bool = False,
         t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) with ``steps`` strided updates.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1``.
        steps: number of updates ``K`` (= NFE).
        generator: ``torch.Generator`` for the noise ``z`` (used only when ``eta > 0``).
        t_eps: smallest positive grid time (default ``model.sde.sampling_eps``).
        denoise: if True (default) the last update goes to ``t = 0`` and returns ``x̂_0``;
            if False, stop at ``t_eps``.
        eta: ``η ∈ [0, 1]`` (default 0, deterministic).
        spacing: ``"uniform"`` (default), ``"quadratic"``, ``"logsnr"`` or ``"karras"``.

    Returns:
        ``SampleResult(x, nfe=steps, t_end=0.0 or t_eps, info={"grid": ..., "eta": ...})``.
    """
    opts = check_options("ddim", options, _DEFAULTS)
    eta = check_number("eta", opts["eta"], low=0, high=1, low_closed=True, high_closed=True)
    net = NFECounter(model)
    sde = net.sde
    t_eps = check_t_eps(t_eps, sde)
    grid = descent_grid(sde, steps, t_eps, opts["spacing"], denoise)
    alpha, sigma = sde.alpha(grid), sde.sigma(grid)  # float64, (K+1,)
    _, trans_var = sde.transition(grid[:-1], grid[1:])  # v_k, k = 1..K

    x = x_T
    bar = progress_bar(steps, progress, "ddim")
    for k in range(grid.numel() - 1, 0, -1):
        eps = net.eps(x, grid[k])
        x0_hat = (x - float(sigma[k]) * eps) / float(alpha[k])
        s_k = float(eta * sigma[k - 1] / sigma[k] * torch.sqrt(trans_var[k - 1]))  # eq. 16
        direction = float(torch.clamp(sigma[k - 1] ** 2 - s_k**2, min=0.0).sqrt())
        x = float(alpha[k - 1]) * x0_hat + direction * eps  # eq. 12
        if s_k > 0:
            x = x + s_k * randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        bar.update(1)
    bar.close()
    return SampleResult(x=x, nfe=net.nfe, t_end=float(grid[0]), info={"grid": grid, "eta": eta})
