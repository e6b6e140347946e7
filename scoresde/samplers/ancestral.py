"""Ancestral sampling: DDPM's sampler (Ho et al. 2020, Algorithm 2) on any time grid.

On a grid ``τ_0 < τ_1 < … < τ_K = 1`` with ``ᾱ_k = α(τ_k)²`` and the step's effective rate
``β'_k = 1 - ᾱ_k/ᾱ_{k-1}`` (respacing as in Nichol & Dhariwal 2021, §4), each step is

    x_{k-1} = (x_k - β'_k/σ_k · ε(x_k, τ_k)) / √(1 - β'_k) + s_k z,        (Ho et al. eq. 11)

with ``s_k² = β'_k`` or ``β̃_k = σ_{k-1}²/σ_k² · β'_k`` (Ho et al. §3.2), ``σ_k = √(1-ᾱ_k)``.

With ``denoise=True`` the grid ends at ``τ_0 = 0`` (``ᾱ = 1``), where the step is Tweedie's
``x̂_0 = (x - σ ε)/α`` and takes no noise. On the discrete DDPM schedule with ``steps = N``
the network is then evaluated at ``i/N``, ``i = N..1``: Algorithm 2 exactly.
"""

from __future__ import annotations

import torch

from scoresde.core.model import eps_of
from scoresde.core.sde import require_variance_preserving
from scoresde.samplers.base import SampleResult, finish_run, open_run
from scoresde.util.checks import check_choice
from scoresde.util.choices import VARIANCES
from scoresde.util.rng import randn

__all__ = ["ancestral"]

_DEFAULTS = {"variance": "beta", "spacing": "quadratic"}


@torch.no_grad()
def ancestral(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
              t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on a respaced grid.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of updates ``K`` (= NFE), the last one to ``t = 0`` when denoising.
        generator: ``torch.Generator`` for the noise ``z``.
        t_eps: smallest positive grid time (default: the few-step rule of
            :func:`~scoresde.samplers.base.default_t_eps` when denoising, else ``sde.sampling_eps``).
        denoise: if True (default) the last update goes to ``t = 0`` without noise (returns
            ``x̂_0``); if False, stop at ``t_eps`` with noise: a sample of ``p_{t_eps}``.
        variance: ``"beta"`` (``β'_k``, default, Ho et al.'s ``σ_t² = β_t``) or
            ``"beta_tilde"`` (the posterior variance ``β̃_k``; diffusers' ``fixed_small``).
        spacing: ``"quadratic"`` (default: dense near the data, where the last steps' noise
            otherwise blurs fine structure; docs/samplers.md, "Stochastic samplers' defaults"),
            ``"uniform"`` (Ho et al.'s respacing), ``"logsnr"`` or ``"karras"``
            (see :func:`~scoresde.samplers.base.time_grid`).
        times, timesteps: an explicit decreasing grid instead of ``steps``/``t_eps`` (continuous
            times, or DDPM indices ``k`` at ``t = (k+1)/N``); ``denoise`` adds the step to 0.

    Returns:
        ``SampleResult(x, nfe, t_end=0.0 or the last grid time, info={"grid": ..., ...})``,
        ``grid`` the decreasing positive times.
    """
    run = open_run("ancestral", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=progress,
                   options=options, defaults=_DEFAULTS, descent=True, cost=lambda k: k)
    require_variance_preserving(run.sde)
    variance = check_choice("variance", run.opts["variance"], VARIANCES)
    grid, counted = run.grid, run.counted_model
    log_alpha = torch.log(run.sde.alpha(grid))  # float64
    sigma = run.sde.sigma(grid)
    x = x_T
    for k in range(grid.numel() - 1):  # τ_k → τ_{k+1} (decreasing)
        eps = eps_of(counted, x, grid[k])
        beta_prime = float(-torch.expm1(2 * (log_alpha[k] - log_alpha[k + 1])))  # 1 - ᾱ_k/ᾱ_{k+1}
        inv_sqrt = float(torch.exp(log_alpha[k + 1] - log_alpha[k]))  # 1/√(1 - β'_k)
        x = inv_sqrt * (x - beta_prime / float(sigma[k]) * eps)  # Ho et al. eq. 11
        var = beta_prime if variance == "beta" else float(sigma[k + 1] ** 2 / sigma[k] ** 2) * beta_prime
        z = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x + var**0.5 * z
        run.bar.update(1)
    return finish_run(run, x, variance=variance)
