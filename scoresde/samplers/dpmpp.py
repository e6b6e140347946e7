"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"): multistep exponential integrators of the probability-flow ODE in
data prediction.

With the half log-SNR ``λ(t) = log(α(t)/σ(t))`` and Tweedie's denoiser
``x̂_0(x, t) = (x - σ ε)/α``, the probability-flow ODE has the exact solution (their eq. 9)

    x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^{λ} x̂_0(x_λ, λ) dλ.

Expanding ``x̂_0`` in ``λ`` about ``λ_s`` (step ``h = λ_t - λ_s > 0``) integrates the
exponential exactly:

    x_t = (σ_t/σ_s) x_s + α_t [φ_1 D_0 + φ_2 D_1 + φ_3 D_2],
    φ_1 = 1 - e^{-h},  φ_2 = h - 1 + e^{-h},  φ_3 = h²/2 - h + 1 - e^{-h},

with ``D_0 = x̂_0``, ``D_1 ≈ dx̂_0/dλ`` and ``D_2 ≈ d²x̂_0/dλ²`` estimated from the
previous steps' denoiser outputs (multistep: one network call per step).

- ``order=1`` is DDIM (η = 0), their eq. 10.
- ``order=2`` is DPM-Solver++(2M), their Algorithm 2:
  ``x_t = (σ_t/σ_s) x_s + α_t φ_1 [(1 + 1/(2r)) x̂_0(s) - 1/(2r) x̂_0(s')]``,
  ``r = h_prev / h``.
- ``order=3`` is DPM-Solver++(3M): Taylor terms up to ``φ_3`` with divided differences.
The first steps use lower orders (no history yet).

**Corrector** (``corrector=True``, the default; the idea of UniPC's UniC, Zhao et al. 2023, in
this exponential-integrator form): the network call at the predicted ``x_t``, which the next
step needs anyway, gives ``x̂_0`` at ``λ_t`` too; the step ``λ_s → λ_t`` is then redone with
the polynomial through the predictor's points *and* ``(λ_t, x̂_0(x_t^pred))``, integrated
exactly against ``e^{-(λ_t - λ)}``:

    x_t = (σ_t/σ_s) x_s + α_t Σ_j w_j x̂_0(λ_j),   w = V⁻ᵀ I,   I_j = ∫₀^h e^{-(h-τ)} τ^j dτ,

``V`` the Vandermonde matrix of the points' ``τ = λ_j - λ_s`` and ``I_0 = 1 - e^{-h}``,
``I_j = h^j - j I_{j-1}``. One order higher than the predictor, at no extra network call; the
next step starts from the corrected ``x_t`` with the ``x̂_0`` of the predicted one (as UniPC
does). The last interval is not corrected (its call would be the Tweedie step's, or an extra one).

Only ``sde.alpha``, ``sde.sigma`` and ``sde.log_snr`` are used, so any VP-type SDE works.
"""

from __future__ import annotations

import math

import torch

from scoresde.core.model import x0_of
from scoresde.samplers.base import SampleResult, finish_run, open_run
from scoresde.util.checks import check_choice, check_flag

__all__ = ["dpmpp"]

_DEFAULTS = {"order": 2, "spacing": "logsnr", "rho": 7.0, "lower_order_final": None, "corrector": True}


@torch.no_grad()
def dpmpp(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
          t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """DPM-Solver++(2M) (default) from ``t = 1`` to ``t_eps`` on a ``steps``-interval time grid.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of intervals ``K`` of the time grid ``1 = τ_K > … > τ_0 = t_eps``.
        generator: unused (the solver is deterministic); accepted for the shared signature.
        t_eps: end time (default: the few-step rule of
            :func:`~scoresde.samplers.base.default_t_eps` when denoising, else ``sde.sampling_eps``).
        denoise: if True, one last first-order step from ``t_eps`` to ``t = 0`` (``σ = 0``,
            ``λ = ∞``: ``φ_1 = 1`` and the update is exactly ``x̂_0(x_{t_eps}, t_eps)``).
        order: 1, 2 (default) or 3.
        spacing: ``"logsnr"`` (default, uniform ``h``), ``"uniform"``, ``"quadratic"`` or ``"karras"``.
        rho: ``ρ`` of the Karras spacing (default 7).
        lower_order_final: if True, the last interval ``τ_1 → τ_0`` uses at most second order
            and, when ``steps < 15``, first order (see ``docs/highorder.md``). Default (None):
            True when the grid ends at the SDE's smallest time ``sde.sampling_eps`` (where
            ``λ`` runs off fastest), False when it ends later (the few-step default end time).
        corrector: if True (default), correct every step but the last with the network call at
            its predicted end point (module docstring; no extra call). False: the plain
            DPM-Solver++ multistep method of the paper.
        times, timesteps: an explicit decreasing grid instead of ``steps``/``t_eps``.

    Returns:
        ``SampleResult`` with ``nfe = steps + denoise`` (one call per grid point ``τ_K..τ_1``,
        plus one at ``τ_0`` when denoising), ``t_end = 0.0`` if ``denoise`` else ``t_eps``.
    """
    run = open_run("dpmpp", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=progress,
                   options=options, defaults=_DEFAULTS, cost=lambda k: k)
    opts = _check_options(run.opts)
    grid, counted = run.grid, run.counted_model  # 1 → t_eps
    lower_final = opts["lower_order_final"]
    if lower_final is None:
        lower_final = float(grid[-1]) <= run.sde.sampling_eps * (1 + 1e-9)
    k = grid.numel() - 1
    alpha, sigma = run.sde.alpha(grid).tolist(), run.sde.sigma(grid).tolist()
    lam = (0.5 * run.sde.log_snr(grid)).tolist()  # half log-SNR λ = log(α/σ)

    x = x_T
    m = x0_of(counted, x, grid[0]) if k > 0 else None
    history: list[tuple[float, torch.Tensor]] = []  # (λ_j, x̂_0 at τ_j), newest last
    for i in range(k):
        history = history[-2:] + [(lam[i], m)]
        order = min(opts["order"], len(history))
        if lower_final and i == k - 1:
            order = min(order, 1 if k < 15 else 2)
        x_pred = _step(x, history, order, lam[i + 1], sigma[i + 1] / sigma[i], alpha[i + 1])
        if i < k - 1:
            m = x0_of(counted, x_pred, grid[i + 1])
            if opts["corrector"]:
                x_pred = _correct(x, history[-order:] + [(lam[i + 1], m)], sigma[i + 1] / sigma[i], alpha[i + 1])
        x = x_pred
        run.bar.update(1)
    return finish_run(run, x, order=opts["order"], spacing=opts["spacing"], lower_order_final=lower_final,
                      corrector=opts["corrector"])


def poly_weights(taus: list[float], h: float) -> list[float]:
    """Weights ``w_j`` with ``∫₀^h e^{-(h-τ)} P(τ) dτ = Σ_j w_j P(τ_j)`` for every polynomial ``P``
    of degree ``< len(taus)`` (``w = V⁻ᵀ I``; module docstring). Float64, on the CPU."""
    n = len(taus)
    moments = [-math.expm1(-h)]  # I_0 = 1 - e^{-h}; I_j = h^j - j I_{j-1}
    for j in range(1, n):
        moments.append(h**j - j * moments[-1])
    v = torch.tensor(taus, dtype=torch.float64, device="cpu")[:, None] ** torch.arange(n, device="cpu")
    return torch.linalg.solve(v.T, torch.tensor(moments, dtype=torch.float64, device="cpu")).tolist()


def _correct(x, points, sigma_ratio: float, alpha_t: float):
    """The corrected step from ``x`` (at ``points[-2]``'s λ) to ``points[-1]``'s λ, exact on the
    polynomial through all ``points`` ``(λ_j, x̂_0)``."""
    lam_s, lam_t = points[-2][0], points[-1][0]
    w = poly_weights([lam - lam_s for lam, _ in points], lam_t - lam_s)
    return sigma_ratio * x + alpha_t * sum(wj * mj for wj, (_, mj) in zip(w, points))


def _step(x, history, order: int, lam_t: float, sigma_ratio: float, alpha_t: float):
    """One exponential-integrator step ``λ_s → λ_t`` of the given order, from ``history``.

    ``history[-1]`` is ``(λ_s, x̂_0(x_s))``; older entries give the divided differences.
    """
    lam_s, m0 = history[-1]
    h = lam_t - lam_s
    phi1 = -math.expm1(-h)  # 1 - e^{-h}
    if order == 1:  # DPM-Solver++(1) = DDIM, Lu et al. 2022 eq. 10
        return sigma_ratio * x + alpha_t * phi1 * m0
    lam_1, m1 = history[-2]
    h0 = lam_s - lam_1
    if order == 2:  # DPM-Solver++(2M), Lu et al. 2022 Algorithm 2
        r = h0 / h
        d = (1 + 1 / (2 * r)) * m0 - (1 / (2 * r)) * m1
        return sigma_ratio * x + alpha_t * phi1 * d
    # order 3 (3M): Newton divided differences in λ, then the Taylor terms φ_2, φ_3.
    lam_2, m2 = history[-3]
    h1 = lam_1 - lam_2
    dd01 = (m0 - m1) / h0  # first divided differences
    dd12 = (m1 - m2) / h1
    dd012 = (dd01 - dd12) / (h0 + h1)  # = x̂_0''/2 to first order
    d1 = dd01 + h0 * dd012  # derivative at λ_s of the interpolating quadratic
    d2 = 2 * dd012
    phi2 = h + math.expm1(-h)  # h - 1 + e^{-h}
    phi3 = 0.5 * h * h - h - math.expm1(-h)  # h²/2 - h + 1 - e^{-h}
    return sigma_ratio * x + alpha_t * (phi1 * m0 + phi2 * d1 + phi3 * d2)


def _check_options(opts: dict) -> dict:
    check_choice("order", opts["order"], (1, 2, 3))
    check_flag("corrector", opts["corrector"])
    if opts["lower_order_final"] is not None:
        check_flag("lower_order_final", opts["lower_order_final"])
    return opts
