"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2, 4 and 5).

On the grid ``t_eps = τ_0 < … < τ_K = 1``, with the SDE's exact transition
``q(x_{τ_k} | x_{τ_{k-1}}) = N(m_k x, v_k I)`` (VP: ``m_k = √(1-β'_k)``, ``v_k = β'_k =
1 - ᾱ_k/ᾱ_{k-1}``; VE: ``m_k = 1``, ``v_k = σ_k² - σ_{k-1}²``, SMLD's step), each step
``τ_k → τ_{k-1}`` is a predictor followed by ``M`` Langevin corrector steps at ``τ_{k-1}``:

- predictor ``"reverse_diffusion"`` (their reverse-diffusion predictor, eq. 46, with the
  discretised SDE ``x_k = m_k x_{k-1} + √v_k z``):
  ``x ← (2 - m_k) x + v_k s(x, τ_k) + √v_k z`` (VP: Algorithm 4's; VE: Algorithm 2's);
- predictor ``"ancestral"`` (Ho et al. 2020, Algorithm 2, as in :mod:`.ancestral`; VP only):
  ``x ← (x + β'_k s(x, τ_k)) / √(1-β'_k) + √β'_k z``;
- corrector (Algorithms 4 and 5): ``x ← x + δ s(x, τ_{k-1}) + √(2δ) z`` with
  ``δ = 2 m_k² (r ‖z‖ / ‖s‖)²``, ``r`` the signal-to-noise ratio and the norms averaged
  over the batch (default, as the paper's reference code does) or per sample
  (``m_k² = 1 - β'_k`` for VP, 1 for VE as in Algorithm 4; for sub-VP ``m_k²``, within
  ``β'_k`` of score_sde's 1).

The score is ``s = -ε/σ``. Algorithm 5 takes ``α_i = 1 - β_i`` of the discrete chain at the
corrector's time; we use ``m_k²`` of the step just taken (the same up to an index shift).

**Defaults** (measured by ``benchmarks/stochastic_samplers.py`` on four exact-oracle cases;
docs/samplers.md, "Stochastic samplers' defaults"): the predictor is ``"auto"`` — ancestral on a
VP-SDE (2–6× closer to the data's law than reverse diffusion at 20–50 NFE on three of the four
cases, level on the fourth), reverse diffusion
otherwise; the grid is quadratic in ``t``. **Few-step rule**: with fewer than ``FEW_STEPS = 5``
steps, the corrector's evaluations go to predictor steps instead (``K (1 + M)`` predictor steps,
no corrector; the NFE is the same), because at ≤ 10 NFE a Langevin step pays less than another
predictor step (``few_steps=False`` turns the rule off; an explicit grid is kept as given).
"""

from __future__ import annotations

import torch

from scoresde.core.model import score_of
from scoresde.core.sde import append_dims, is_variance_preserving, require_variance_preserving
from scoresde.samplers.base import SampleResult, few_step_rule_applies, finish_run, open_run
from scoresde.util.checks import check_choice, check_flag, check_int, check_number
from scoresde.util.rng import randn

__all__ = ["pc"]

_DEFAULTS = {"predictor": "auto", "corrector_steps": 1, "snr": 0.16,
             "spacing": "quadratic", "norms": "batch", "few_steps": True}
_PREDICTORS = ("auto", "reverse_diffusion", "ancestral")
_NORMS = ("sample", "batch")


def _check(opts: dict) -> dict:
    check_choice("predictor", opts["predictor"], _PREDICTORS)
    check_int("corrector_steps", opts["corrector_steps"], 0)
    check_choice("norms", opts["norms"], _NORMS)
    check_number("snr", opts["snr"], low=0)
    check_flag("few_steps", opts["few_steps"])
    return opts


def _corrector_steps(options: dict) -> int:
    """``M`` for the progress bar's total (0 when invalid: ``_check`` then names it)."""
    m = options.get("corrector_steps", _DEFAULTS["corrector_steps"])
    return m if isinstance(m, int) and not isinstance(m, bool) and m >= 0 else 0


def _few_step_rule(steps, options: dict):
    """``(steps, options, applied)``: below ``FEW_STEPS`` steps with a corrector (and the rule on),
    ``steps (1 + M)`` predictor steps with ``corrector_steps = 0`` — the same NFE."""
    m = _corrector_steps(options)
    few = m > 0 and few_step_rule_applies(steps, options.get("few_steps", True))
    if few:
        return steps * (1 + m), {**options, "corrector_steps": 0}, True
    return steps, options, False


def _langevin(counted, x, t, mean2: float, snr: float, norms: str, generator):
    """One corrector step at time ``t`` (Song et al. 2021, Algorithm 5, lines 7–9)."""
    score = score_of(counted, x, t)
    z = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z_norm = z.flatten(1).norm(dim=1)  # (B,)
    s_norm = score.flatten(1).norm(dim=1)
    if norms == "batch":  # score_sde's implementation: batch-mean norms, one δ for all
        z_norm, s_norm = z_norm.mean().expand_as(z_norm), s_norm.mean().expand_as(s_norm)
    s_norm = s_norm.clamp_min(torch.finfo(x.dtype).tiny)
    delta = 2 * mean2 * (snr * z_norm / s_norm) ** 2  # (B,); mean2 = m_k² (1 - β'_k for VP)
    delta = append_dims(delta, x.ndim)
    return x + delta * score + torch.sqrt(2 * delta) * z


@torch.no_grad()
def pc(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
       t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Predictor–corrector sampling from ``t = 1`` to ``t_eps`` (Song et al. 2021, Algorithm 5).

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of predictor steps ``K`` on a ``K``-interval time grid.
        generator: ``torch.Generator`` for all noise.
        t_eps: end time (default: the few-step rule of
            :func:`~scoresde.samplers.base.default_t_eps` when denoising, else ``sde.sampling_eps``).
        denoise: if True (default), one Tweedie step ``x̂_0(x, t_eps)`` (+1 NFE) at the end.
        predictor: ``"auto"`` (default: ``"ancestral"`` on a VP-SDE, else ``"reverse_diffusion"``),
            ``"reverse_diffusion"`` (the paper's) or ``"ancestral"`` (VP only).
        corrector_steps: ``M ≥ 0`` Langevin steps after each predictor step (default 1;
            ``M = 0`` leaves the bare predictor).
        few_steps: if True (default), ``steps < FEW_STEPS`` runs ``steps (1 + M)`` predictor
            steps without corrector (module docstring); the NFE is the same.
        snr: the corrector's signal-to-noise ratio ``r`` (default 0.16, the paper's CIFAR-10 value).
        spacing: ``"quadratic"`` (default; docs/samplers.md, "Stochastic samplers' defaults"),
            ``"uniform"`` (the paper's), ``"logsnr"`` or ``"karras"``.
        norms: ``"batch"`` (default: ``‖z‖``, ``‖s‖`` averaged over the batch, one ``δ`` for all,
            as the paper's reference code) or ``"sample"`` (per sample, as Algorithm 5 is
            written). Per-sample step sizes ``δ ∝ 1/‖s‖²`` are heavy-tailed in low dimension
            (``‖s‖`` comes near 0 for samples near a mode) and the corrector then diverges.
        times, timesteps: an explicit decreasing grid instead of ``steps``/``t_eps``.

    Returns:
        ``SampleResult`` with ``nfe = steps (1 + M) + denoise``.
    """
    steps, options, few = _few_step_rule(steps, options)
    m = _corrector_steps(options)
    run = open_run("pc", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=progress,
                   options=options, defaults=_DEFAULTS, cost=lambda k: k * (1 + m))
    opts = _check(run.opts)
    grid, counted = run.grid, run.counted_model  # 1 → t_eps
    if opts["predictor"] == "auto":
        opts["predictor"] = "ancestral" if is_variance_preserving(run.sde) else "reverse_diffusion"
    if opts["predictor"] == "ancestral":
        require_variance_preserving(run.sde)
    trans_mean, trans_var = run.sde.transition(grid[1:], grid[:-1])  # m_k, v_k of τ_{k+1} → τ_k

    x = x_T
    for k in range(grid.numel() - 1):  # τ_k → τ_{k+1} (decreasing)
        var = float(trans_var[k])  # v_k (β'_k = 1 - ᾱ_k/ᾱ_{k+1} for VP)
        mean = float(trans_mean[k])  # m_k (√(1 - β'_k) for VP)
        score = score_of(counted, x, grid[k])
        z = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if opts["predictor"] == "reverse_diffusion":  # eq. 46: x - f_k + G_k² s + G_k z
            x = (2 - mean) * x + var * score
        else:  # ancestral (Ho et al. eq. 11 with s = -ε/σ)
            x = (x + var * score) / mean
        x = x + var**0.5 * z
        for _ in range(opts["corrector_steps"]):
            x = _langevin(counted, x, grid[k + 1], mean**2, float(opts["snr"]), opts["norms"], generator)
        run.bar.update(1 + opts["corrector_steps"])  # one tick per ε evaluation, as the total counts
    return finish_run(run, x, predictor=opts["predictor"], corrector_steps=opts["corrector_steps"],
                      snr=float(opts["snr"]), norms=opts["norms"], few_steps=few)
