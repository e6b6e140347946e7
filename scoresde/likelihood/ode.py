"""Probability-flow log-likelihood and bits per dimension (Song et al. 2021, eq. 39 and App. D.2).

Along the probability-flow ODE ``dx/dt = f̃(x, t)`` the density obeys the instantaneous
change of variables (Chen et al. 2018), so integrating forward from the data at ``t_eps``,

    log p_{t_eps}(x) = log p_1(x(1)) + ∫_{t_eps}^{1} ∇·f̃(x(t), t) dt,      p_1 = N(0, I).

The solve is :func:`scoresde.core.flow.solve_flow` (the one probability-flow solver; docs/math.md,
"The solver's clock") carrying the divergence: exact (``D`` vector–Jacobian products) or the
Hutchinson–Skilling estimate ``vᵀ (∂f̃/∂x) v`` with one probe ``v`` per sample held fixed for
the whole solve (Grathwohl et al. 2019; a probe redrawn at every evaluation would make the
integrand non-smooth and the adaptive solver take tiny steps). :func:`bits_per_dim` turns it
into bits/dim for integer data by uniform dequantization (:mod:`scoresde.core.bpd`; docs/math.md,
"Bits per dimension").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scoresde.core.bpd import BpdResult, bpd_offset, check_int_data, dequantize, nats_to_bpd, summarize
from scoresde.core.flow import check_solver, integrate_flow
from scoresde.util.checks import check_choice, check_int, check_model, check_t_eps
from scoresde.util.choices import PROBES, TRACES
from scoresde.util.progress import Ticks, progress_bar
from scoresde.util.rng import rand, randint, randn

__all__ = ["LikelihoodResult", "BpdResult", "log_likelihood", "bits_per_dim", "summarize", "TRACES", "PROBES"]


@dataclass
class LikelihoodResult:
    """Per-sample ``log p_{t_eps}(x)`` in nats (float64, shape ``(B,)``) and its parts.

    ``log_prob = prior_log_prob + divergence_integral``; ``z`` is the latent ``x(1)``
    (shape of ``x``); ``nfe`` counts batched drift evaluations; ``stderr`` is the standard
    error of ``log_prob`` over Hutchinson probes (``None`` for the exact trace or one probe);
    ``probes`` are the Hutchinson probes used, ``(n_probes, B, *dims)`` (``None`` for the exact trace).
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    divergence_integral: torch.Tensor
    z: torch.Tensor
    nfe: int
    stderr: torch.Tensor | None = None
    probes: torch.Tensor | None = None


def _draw_probes(kind: str, shape, generator, dtype, device) -> torch.Tensor:
    """``(P, B, *dims)`` probes with ``E[v vᵀ] = I``: Rademacher ``±1`` or standard normal, drawn on
    the generator's device (:mod:`scoresde.util.rng`) and returned on ``device``."""
    if kind == "gaussian":
        v = randn(shape, generator=generator, dtype=torch.float64, device=device)
    else:
        v = randint(0, 2, shape, generator=generator, device=device).to(torch.float64) * 2 - 1
    return v.to(dtype=dtype, device=device)


def log_likelihood(model, x: torch.Tensor, *, trace: str = "exact", probe: str = "rademacher",
                   n_probes: int = 1, t_eps: float = 1e-5, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None,
                   dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None,
                   progress: bool = False, on_eval=None) -> LikelihoodResult:
    """``log p_{t_eps}(x)`` in nats by the probability-flow ODE, ``t_eps`` → 1 (Song et al. 2021, eq. 39).

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)`` (a ScoreModel or the GaussianMixture oracle).
        x: ``(B, *dims)`` points in model space.
        trace: ``"exact"`` (``D`` VJPs per evaluation) or ``"hutchinson"`` (``n_probes`` VJPs).
        probe, n_probes: Hutchinson probe distribution and count. The probes are drawn once
            and held fixed for the whole solve. Their divergence integrals ride in one joint
            solve: the trajectory ``x(t)`` does not depend on the probe, so this equals
            ``n_probes`` independent solves up to solver tolerance at the cost of one network
            call per evaluation; ``log_prob`` averages them and ``stderr`` is their standard error.
        t_eps: start time; ``log_prob`` estimates ``log p_{t_eps}``.
        method, rtol, atol, steps: the solver of :func:`scoresde.core.flow.solve_flow` (defaults as
            score_sde's likelihood: dopri5, ``rtol = atol = 1e-5``, finite and > 0); fixed-step
            methods take ``steps`` equal steps of the solver's clock (``t`` on the linear schedule).
        dtype: dtype of the augmented ODE state (float64 by default).
        generator: for the Hutchinson probes: a CPU generator or one on ``x``'s device; the
            probes are drawn on the generator's device and moved to ``x``'s (:mod:`scoresde.util.rng`).
        progress: report progress (the share of the time span solved) on standard error
            (:mod:`scoresde.util.progress`).
        on_eval: instead of ``progress``, a callable given that share (0..1) at every evaluation
            (:func:`bits_per_dim` turns it into examples done).

    Returns tensors on ``x``'s device.
    """
    check_model(model)
    check_choice("trace", trace, TRACES)
    check_choice("probe", probe, PROBES)
    n_probes = check_int("n_probes", n_probes)
    rtol, atol, steps = check_solver(method, rtol, atol, steps)
    t_eps = check_t_eps(t_eps)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r}: expected a floating torch dtype such as torch.float64")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x of shape {tuple(getattr(x, 'shape', ()))}: expected a tensor (B, *dims)")
    x = x.detach().to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError("x: expected finite values")
    divergence = "exact"
    if trace == "hutchinson":
        divergence = _draw_probes(probe, (n_probes,) + tuple(x.shape), generator, dtype, x.device)

    if on_eval is None:
        bar = progress_bar(1000, progress, "log-likelihood", unit="‰ of the time span")
        on_eval = Ticks(bar, 1000)
    else:
        bar = None
    try:
        sol = integrate_flow(model, x, t_eps, 1.0, method=method, rtol=rtol, atol=atol, steps=steps,
                             divergence=divergence, dtype=dtype,
                             on_eval=on_eval)
    finally:
        if bar is not None:
            bar.close()
    z, div_int = sol.x, sol.divergence  # (B, *dims), (P, B)
    prior = model.sde.prior_log_prob(z)
    stderr = None
    if trace == "hutchinson" and n_probes > 1:
        stderr = div_int.std(0) / math.sqrt(n_probes)
    divergence_integral = div_int.mean(0)
    probes = divergence if trace == "hutchinson" else None
    return LikelihoodResult(prior + divergence_integral, prior, divergence_integral, z, sol.nfe, stderr, probes)


def bits_per_dim(model, x_int: torch.Tensor, levels: int, *, n_dequant: int = 1,
                 batch_size: int = 256, generator: torch.Generator | None = None,
                 progress: bool = False, **options) -> BpdResult:
    """Bits/dim of integer data ``x_int`` (``(B, *dims)``, values ``0..levels-1``) under ``model``.

    Uniform dequantization ``z = 2(k + u)/L - 1`` (:func:`scoresde.core.bpd.dequantize`) puts each
    level in a model-space bin of width ``w = 2/L``, so (docs/math.md, "Bits per dimension")
    ``-log₂ P(k)/D ≤ -E_u[log p_z(z)]/(D ln 2) - log₂ w`` with ``-log₂ w = log₂ L - 1``.
    ``log p_z`` comes from :func:`log_likelihood` (``options`` are passed to it). Each sample
    is averaged over ``n_dequant`` draws; ``stderr`` is over the data set (see :func:`summarize`).
    ``x_int`` must be on the model's device; ``generator`` (CPU or that device) draws the
    dequantization noise and the probes, in this order per batch; ``per_sample`` is on the CPU.
    """
    dim = check_int_data(x_int, levels)
    n_dequant = check_int("n_dequant", n_dequant)
    batch_size = check_int("batch_size", batch_size)
    offset = bpd_offset(levels)
    n = x_int.shape[0]
    values = torch.empty((n_dequant, n), dtype=torch.float64, device="cpu")
    nfe = solves = 0
    starts = range(0, n, batch_size)
    # Progress in examples (each round counts them again), advancing with each solve's time span.
    bar = progress_bar(n_dequant * n, progress, "bits/dim", unit="examples")
    ticks = Ticks(bar, 1)
    try:
        for r in range(n_dequant):
            for s in starts:
                chunk = x_int[s:s + batch_size]
                u = rand(chunk.shape, generator=generator, dtype=torch.float64, device=chunk.device)
                z = dequantize(chunk, levels, u=u, dtype=torch.float64)
                done, b = r * n + s, chunk.shape[0]
                res = log_likelihood(model, z, generator=generator,
                                     on_eval=lambda f, d=done, b=b: ticks(d + f * b), **options)
                values[r, s:s + batch_size] = nats_to_bpd(-res.log_prob.cpu(), dim) + offset
                nfe, solves = nfe + res.nfe, solves + 1
                ticks(done + b)
                bar.set_postfix(bpd=f"{float(values[:r + 1, :s + len(chunk)].mean()):.4f}")
    finally:
        bar.close()
    bpd, stderr = summarize(values)
    return BpdResult(bpd, stderr, nfe, values.mean(0), info={"nfe_per_solve": nfe / solves,
                                                              "offset": offset})
