"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12).

On a grid ``τ_0 < … < τ_K = 1`` (see :func:`~scoresde.samplers.base.open_run`), with
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

from scoresde.core.model import eps_of
from scoresde.samplers.base import SampleResult, finish_run, open_run
from scoresde.util.checks import check_number
from scoresde.util.rng import randn

__all__ = ["ddim"]

_DEFAULTS = {"eta": 0.0, "spacing": "uniform"}


@torch.no_grad()
def ddim(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
         t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) with ``steps`` strided updates.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of updates ``K`` (= NFE), the last one to ``t = 0`` when denoising.
        generator: ``torch.Generator`` for the noise ``z`` (used only when ``eta > 0``).
        t_eps: smallest positive grid time (default as for :func:`~scoresde.samplers.ancestral.ancestral`).
        denoise: if True (default) the last update goes to ``t = 0`` and returns ``x̂_0``;
            if False, stop at ``t_eps``.
        eta: ``η ∈ [0, 1]`` (default 0, deterministic).
        spacing: ``"uniform"`` (default), ``"quadratic"``, ``"logsnr"`` or ``"karras"``.
        times, timesteps: an explicit decreasing grid instead of ``steps``/``t_eps``.

    Returns:
        ``SampleResult(x, nfe, t_end=0.0 or the last grid time, info={"grid": ..., "eta": ...})``.
    """
    run = open_run("ddim", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=progress,
                   options=options, defaults=_DEFAULTS, descent=True, cost=lambda k: k)
    eta = check_number("eta", run.opts["eta"], low=0, high=1, low_closed=True, high_closed=True)
    grid, counted = run.grid, run.counted_model
    alpha, sigma = run.sde.alpha(grid), run.sde.sigma(grid)  # float64
    _, trans_var = run.sde.transition(grid[1:], grid[:-1])  # v_k of τ_{k+1} → τ_k
    x = x_T
    for k in range(grid.numel() - 1):  # τ_k → τ_{k+1} (decreasing)
        eps = eps_of(counted, x, grid[k])
        x0_hat = (x - float(sigma[k]) * eps) / float(alpha[k])
        s_k = float(eta * sigma[k + 1] / sigma[k] * torch.sqrt(trans_var[k]))  # eq. 16
        direction = float(torch.clamp(sigma[k + 1] ** 2 - s_k**2, min=0.0).sqrt())
        x = float(alpha[k + 1]) * x0_hat + direction * eps  # eq. 12
        if s_k > 0:
            x = x + s_k * randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        run.bar.update(1)
    return finish_run(run, x, eta=eta)
