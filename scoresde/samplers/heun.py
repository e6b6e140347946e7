"""Heun's 2nd-order method on the probability-flow ODE, Karras et al. 2022 ("Elucidating the
Design Space of Diffusion-Based Generative Models"), Algorithm 1.

In the scaled variables ``x̃ = x/α`` and ``σ̃ = σ/α = e^{-λ/2}`` (``λ = log(α²/σ²)`` the
log-SNR; their eq. 4 with ``s(t) = α(t)``, ``σ(t) = σ̃``), the probability-flow ODE of any
VP-type SDE is

    dx̃/dσ̃ = ε(α x̃, t(σ̃)),

whose trajectories are nearly straight lines for data close to a point: Euler in ``σ̃`` is
DDIM, and Heun's trapezoidal correction makes it second order. Per interval
``σ̃_i → σ̃_{i+1}`` (``Δ = σ̃_{i+1} - σ̃_i < 0``):

    d_i = ε(x_i, τ_i),  x̃' = x̃_i + Δ d_i,                (Euler predictor, Alg. 1 line 5)
    d'  = ε(α_{i+1} x̃', τ_{i+1}),  x̃_{i+1} = x̃_i + Δ (d_i + d')/2.   (trapezoid, line 8)

The final step to ``σ̃ = 0`` (``denoise=True``) is Euler (line 6's branch), which is
exactly Tweedie's denoiser ``x̃_0 = x̃ - σ̃ ε = x̂_0(x, t_eps)``.
"""

from __future__ import annotations

import torch

from .base import NFECounter, SampleResult, check_options, check_t_eps, progress_bar, time_grid

__all__ = ["heun"]

_DEFAULTS = {"spacing": "karras", "rho": 7.0}


def heun(model, x_T: torch.Tensor, *, steps: int, generator=None, progress: bool = False,
         t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Karras et al. 2022, Algorithm 1, from ``t = 1`` to ``t_eps`` on ``time_grid(sde, steps, t_eps)``.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1``.
        steps: number of Heun intervals ``K`` of the grid ``t_eps = τ_0 < … < τ_K = 1``.
        generator: unused (the solver is deterministic); accepted for the shared signature.
        t_eps: end time (default ``model.sde.sampling_eps``).
        denoise: if True, a last Euler step ``t_eps → 0`` (``σ̃ = 0``) returns ``x̂_0``.
        spacing: ``"karras"`` (default, Karras et al. eq. 5), ``"logsnr"``, ``"uniform"`` or
            ``"quadratic"``.
        rho: ``ρ`` of the Karras spacing (default 7, their recommended value).

    Returns:
        ``SampleResult`` with ``nfe = 2 steps + denoise`` (the 2·(K+1) - 1 of Algorithm 1 when
        the final Euler step to ``σ̃ = 0`` is counted as a step), ``t_end = 0.0`` if
        ``denoise`` else ``t_eps``.
    """
    opts = check_options("heun", options, _DEFAULTS)
    net = NFECounter(model)
    sde = net.sde
    t_eps = check_t_eps(t_eps, sde)
    grid = time_grid(sde, steps, t_eps, opts["spacing"], rho=opts["rho"]).flip(0)  # 1 → t_eps
    k = grid.numel() - 1
    alpha = sde.alpha(grid).tolist()
    sigma_k = torch.exp(-0.5 * sde.log_snr(grid)).tolist()  # σ̃ = σ/α = e^{-λ/2}

    x = x_T
    bar = progress_bar(k + int(denoise), progress, "heun")
    d = net.eps(x, grid[0])
    for i in range(k):
        delta = sigma_k[i + 1] - sigma_k[i]
        x_tilde = x / alpha[i]
        x_pred = (x_tilde + delta * d) * alpha[i + 1]  # Euler predictor, back to x = α x̃
        d_pred = net.eps(x_pred, grid[i + 1])
        x = (x_tilde + delta * 0.5 * (d + d_pred)) * alpha[i + 1]  # trapezoidal corrector
        if i < k - 1 or denoise:
            d = net.eps(x, grid[i + 1])
        bar.update(1)
    t_end = float(grid[-1])
    if denoise:  # Euler to σ̃ = 0: x̃_0 = x̃ - σ̃ ε = x̂_0 (α(0) = 1)
        x, t_end = (x / alpha[-1] - sigma_k[-1] * d), 0.0
        bar.update(1)
    bar.close()
    return SampleResult(x=x, nfe=net.nfe, t_end=t_end,
                        info={"spacing": opts["spacing"], "grid": grid})

