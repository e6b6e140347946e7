"""Denoising score matching on ε (Vincent 2011; Ho et al. 2020, eq. 14; Song et al. 2021, eq. 7).

With ``x_t = α(t) x_0 + σ(t) ε`` the loss is

    L = E_{t ~ U[t_eps, 1]} E_{x_0, ε} [ λ(t) · mean_d (ε_θ(x_t, t) - ε)_d² ],

the squared error averaged over the ``D`` dimensions (Ho et al.'s ``L_simple``; multiply
by ``D`` for the sum over dimensions). Weightings (docs/math.md, "Denoising score matching"):

- ``simple``: ``λ = 1``.
- ``likelihood``: ``λ(t) = g(t)²/σ(t)²`` of the model's SDE (Song, Durkan, Murray & Ermon 2021):
  ``β/σ²`` for VP, ``β (1 + e^{-B})/(1 - e^{-B})`` for sub-VP, ``2 log(σ_max/σ_min)`` (a
  constant) for the continuous VE. Then ``(1 - t_eps)·D/2 · L`` is the score-matching term
  ``½∫ g² E‖s_θ - ∇log p‖²dt`` of the likelihood bound, up to a constant independent of θ.
  Its variance is large (``λ ≈ 1/t`` near 0 for VP), so by default ``t`` is importance-sampled
  with density ``λ(t)/Z``, ``Z = ∫_{t_eps}^1 λ dt``, and each term is weighted by the constant
  ``Z/(1 - t_eps)`` (the mean of ``λ`` on ``[t_eps, 1]``): the estimator has the same
  expectation ``L`` as the uniform-``t`` one, with far lower variance.

The inverse CDF is in closed form for every SDE with Gaussian marginals: ``g²/σ² = -dλ/dt``
with ``λ = log(α²/σ²)`` the log-SNR (``g² = dσ²/dt - 2 σ² d log α/dt``), so
``∫_{t_eps}^t λ(s) ds = λ_SNR(t_eps) - λ_SNR(t)``: ``t ∝ λ`` is the time at a log-SNR drawn
uniformly between ``λ_SNR(1)`` and ``λ_SNR(t_eps)``, found by the SDE's own
``time_for_log_snr`` (closed form in ``B`` or ``σ``, then ``B⁻¹`` by safeguarded Newton in
float64), and ``Z = λ_SNR(t_eps) - λ_SNR(1)``.

Discrete time (DDPM): ``i ~ U{1..N}``, ``t = i/N``; for ``likelihood`` the grid points
are importance-sampled with ``p(i) ∝ λ(i/N)`` and weight ``mean_i λ(i/N)``.
Times and weights are float64, the reduction at least float32, never bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scoresde.core.model import check_labels
from scoresde.core.sde import discrete_steps_of
from scoresde.util.checks import check_choice, check_int, check_number, check_t_eps
from scoresde.util.choices import TIME_SAMPLINGS, WEIGHTINGS
from scoresde.util.rng import draw_device, rand, randint, randn

__all__ = ["LossOutput", "dsm_loss", "sample_time", "likelihood_weight", "WEIGHTINGS", "TIME_SAMPLINGS"]



@dataclass
class LossOutput:
    """``loss`` scalar (mean of ``per_sample``), ``per_sample`` ``(B,)``, ``t`` ``(B,)`` float64."""

    loss: torch.Tensor
    per_sample: torch.Tensor
    t: torch.Tensor


def likelihood_weight(sde, t) -> torch.Tensor:
    """``λ(t) = g(t)²/σ(t)²`` of ``sde`` (float64, shape of ``t``): ``sde.likelihood_weight``."""
    return sde.likelihood_weight(t)


def sample_time(sde, n: int, *, weighting: str = "simple", time_sampling: str = "continuous",
                t_eps: float | None = None, n_steps: int | None = None, importance_sampling: bool = True,
                generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training times and their loss weights, both float64 ``(n,)``.

    ``E[weight · f(t)] = E_{t ~ U}[λ(t) f(t)]`` for every ``f``, with ``U`` uniform on
    ``[t_eps, 1]`` (continuous) or on ``{1/N, ..., 1}`` (discrete). Returned on ``device``
    (default the CPU); draws are made on the generator's device and moved (:mod:`scoresde.util.rng`).
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
    device = torch.device("cpu") if device is None else torch.device(device)
    f64 = dict(dtype=torch.float64, device=device)
    if time_sampling == "discrete":
        n_steps = n_steps if n_steps is not None else discrete_steps_of(sde)
        if n_steps is None:
            raise ValueError("n_steps=None: discrete time sampling needs an integer N ≥ 1 "
                             "(pass n_steps or use an SDE with discrete_steps)")
        n_steps = check_int("n_steps", n_steps)
        grid = torch.arange(1, int(n_steps) + 1, **f64) / int(n_steps)  # t_i = i/N
        if weighting == "simple":
            i = randint(0, int(n_steps), (n,), generator=generator, device=device)
            return grid[i], torch.ones(n, **f64)
        lam = likelihood_weight(sde, grid)
        if not importance_sampling:
            i = randint(0, int(n_steps), (n,), generator=generator, device=device)
            return grid[i], lam[i]
        where = draw_device(generator, device)
        i = torch.multinomial(lam.to(where), n, replacement=True, generator=generator).to(device)  # p(i) ∝ λ(t_i)
        return grid[i], lam.mean().expand(n).clone()

    t_eps = check_t_eps(t_eps, sde)
    u = rand((n,), generator=generator, **f64)
    if weighting == "simple" or not importance_sampling:
        t = t_eps + (1.0 - t_eps) * u
        weight = torch.ones(n, **f64) if weighting == "simple" else likelihood_weight(sde, t)
        return t, weight
    ends = torch.tensor([t_eps, 1.0], **f64)
    snr_hi, snr_lo = sde.log_snr(ends).to(device).unbind()  # log-SNR at t_eps (high) and 1 (low)
    t = sde.time_for_log_snr(snr_hi + u * (snr_lo - snr_hi), lo=t_eps, hi=1.0).clamp(t_eps, 1.0)
    z = snr_hi - snr_lo  # Z = ∫_{t_eps}^1 g²/σ² dt
    return t, (z / (1.0 - t_eps)).expand(n).clone()


def dsm_loss(model, x0: torch.Tensor, *, weighting: str = "simple", time_sampling: str = "continuous",
             t_eps: float | None = None, n_steps: int | None = None, importance_sampling: bool = True,
             generator: torch.Generator | None = None, y: torch.Tensor | None = None,
             label_dropout: float = 0.0) -> LossOutput:
    """Denoising score-matching loss of an ε-model on a batch ``x0`` of shape ``(B, *dims)``.

    Args:
        model: any EpsModel (``.sde``, ``.eps(x, t)``): a ScoreModel or the exact oracle.
        weighting: ``"simple"`` (λ = 1) or ``"likelihood"`` (λ = g²/σ², importance-sampled).
        time_sampling: ``"continuous"`` (``t ~ U[t_eps, 1]``) or ``"discrete"`` (``t = i/N``).
        t_eps: smallest training time (continuous only); default ``model.sde.sampling_eps``.
        n_steps: ``N`` for discrete sampling; default ``model.sde.discrete_steps``.
        importance_sampling: for ``likelihood``: sample ``t ∝ λ`` (default) or uniformly with weight λ.
        generator: for ``t`` and ``ε``: a CPU generator or one on ``x0``'s device (draws are made
            on its device and moved to ``x0``'s, :mod:`scoresde.util.rng`).
        y: class labels ``(B,)`` of ``x0`` for a class-conditional model (``.num_classes ≥ 1``,
            ``.eps(x, t, y)``); ``None`` (default): the model is called as ``eps(x, t)`` and no
            further random draw is made.
        label_dropout: with ``y``, the probability of replacing each label by the null label
            ``num_classes`` (classifier-free guidance trains ``ε(x, t, ∅)`` this way); drawn
            after ``t`` and ``ε``, from the same generator.
    """
    if x0.ndim < 2:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}: expected (B, *dims)")
    t, weight = sample_time(model.sde, x0.shape[0], weighting=weighting, time_sampling=time_sampling,
                            t_eps=t_eps, n_steps=n_steps, importance_sampling=importance_sampling,
                            generator=generator, device=x0.device)
    noise = randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t, _ = model.sde.marginal_sample(x0, t, noise=noise)  # α(t) x0 + σ(t) ε
    acc = torch.promote_types(x0.dtype, torch.float32)  # never reduce in bf16
    if y is None:
        eps = model.eps(x_t, t)
    else:
        k = getattr(model, "num_classes", 0)
        y = check_labels(y, k, allow_null=True).to(x0.device)
        if y.shape != (x0.shape[0],):
            raise ValueError(f"y has shape {tuple(y.shape)}: expected ({x0.shape[0]},) labels of x0's rows")
        p = check_number("label_dropout", label_dropout, low=0, high=1, low_closed=True)
        if p > 0:
            drop = rand((x0.shape[0],), generator=generator, dtype=torch.float64, device=x0.device) < p
            y = torch.where(drop, torch.full_like(y, k), y)
        eps = model.eps(x_t, t, y)
    err = (eps.to(acc) - noise.to(acc)) ** 2  # (B, *dims)
    per_sample = weight.to(acc) * err.flatten(1).mean(1)  # (B,)
    return LossOutput(per_sample.mean(), per_sample, t)
