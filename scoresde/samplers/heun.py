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

**Few-step rule.** With fewer than ``FEW_STEPS = 5`` intervals (NFE ≤ 9) a second call per
interval pays less than another interval: measured against the exact flow on four data sets
(docs/benchmarks.md, issue 26), Heun with K = 2 or 4 intervals is 1.0-5× worse than DDIM at the
same NFE. There ``heun`` spends its ``2K`` calls on ``2K`` Euler steps in ``σ̃`` — DDIM (η = 0)
— on the grid DDIM would use (uniform in t unless ``spacing`` is given). An explicit grid
(``times``/``timesteps``) always gets Heun steps; ``few_steps=False`` turns the rule off.
"""

from __future__ import annotations

import torch

from scoresde.core.model import eps_of
from scoresde.samplers.base import SampleResult, few_step_rule_applies, finish_run, open_run
from scoresde.util.checks import check_flag

__all__ = ["heun"]

_DEFAULTS = {"spacing": "karras", "rho": 7.0, "few_steps": True}


@torch.no_grad()
def heun(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
         t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Karras et al. 2022, Algorithm 1, from ``t = 1`` to ``t_eps`` on a ``steps``-interval time grid.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of Heun intervals ``K`` of the grid ``1 = τ_K > … > τ_0 = t_eps``.
        generator: unused (the solver is deterministic); accepted for the shared signature.
        t_eps: end time (default as for :func:`~scoresde.samplers.dpmpp.dpmpp`).
        denoise: if True, a last Euler step ``t_eps → 0`` (``σ̃ = 0``) returns ``x̂_0``.
        spacing: ``"karras"`` (default, Karras et al. eq. 5), ``"logsnr"``, ``"uniform"`` or
            ``"quadratic"``.
        rho: ``ρ`` of the Karras spacing (default 7, their recommended value).
        few_steps: if True (default), ``steps < FEW_STEPS`` runs ``2·steps`` Euler (DDIM) steps
            instead (module docstring); the NFE is the same.
        times, timesteps: an explicit decreasing grid instead of ``steps``/``t_eps``.

    Returns:
        ``SampleResult`` with ``nfe = 2 steps + denoise`` (the 2·(K+1) - 1 of Algorithm 1 when
        the final Euler step to ``σ̃ = 0`` is counted as a step), ``t_end = 0.0`` if
        ``denoise`` else ``t_eps``.
    """
    check_flag("few_steps", options.get("few_steps", True))
    euler = few_step_rule_applies(steps, options.get("few_steps", True))
    if euler:
        options = {"spacing": "uniform", **options}
    run = open_run("heun", model, x_T, steps=2 * steps if euler else steps, t_eps=t_eps, denoise=denoise,
                   progress=progress, options=options, defaults=_DEFAULTS,
                   cost=(lambda k: k) if euler else (lambda k: 2 * k))
    x = (_euler_steps if euler else _heun_steps)(run, x_T)
    # Euler to σ̃ = 0 (denoise): x̃_0 = x̃ - σ̃ ε = x̂_0 (α(0) = 1), Tweedie's step in finish_run
    return finish_run(run, x, spacing=run.opts["spacing"], few_steps=euler)


def _scaled_grid(run):
    """``α`` and ``σ̃ = σ/α = e^{-λ/2}`` at the grid times, as lists."""
    return run.sde.alpha(run.grid).tolist(), torch.exp(-0.5 * run.sde.log_snr(run.grid)).tolist()


def _heun_steps(run, x):
    """Algorithm 1's Heun steps over the run's grid (``2K`` calls)."""
    grid, counted, k = run.grid, run.counted_model, run.grid.numel() - 1  # 1 → t_eps
    alpha, sigma_k = _scaled_grid(run)
    d = eps_of(counted, x, grid[0]) if k > 0 else None
    for i in range(k):
        delta = sigma_k[i + 1] - sigma_k[i]
        x_tilde = x / alpha[i]
        x_pred = (x_tilde + delta * d) * alpha[i + 1]  # Euler predictor, back to x = α x̃
        d_pred = eps_of(counted, x_pred, grid[i + 1])
        x = (x_tilde + delta * 0.5 * (d + d_pred)) * alpha[i + 1]  # trapezoidal corrector
        if i < k - 1:
            d = eps_of(counted, x, grid[i + 1])
        run.bar.update(1)
    return x


def _euler_steps(run, x):
    """The few-step rule: Euler in ``σ̃`` (DDIM, η = 0) over the run's grid (``K`` calls)."""
    grid, counted, k = run.grid, run.counted_model, run.grid.numel() - 1
    alpha, sigma_k = _scaled_grid(run)
    for i in range(k):
        x = (x / alpha[i] + (sigma_k[i + 1] - sigma_k[i]) * eps_of(counted, x, grid[i])) * alpha[i + 1]
        run.bar.update(1)
    return x
