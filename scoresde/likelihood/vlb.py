"""The DDPM variational bound in bits/dim (Ho et al. 2020, eq. 5; Sohl-Dickstein et al. 2015).

    L = L_T + Σ_{i=2}^{N} L_{i-1} + L_0                                       (nats per sample)
    L_T     = KL(q(x_N | x_0) ‖ N(0, I))
    L_{i-1} = KL(q(x_{i-1} | x_i, x_0) ‖ p_θ(x_{i-1} | x_i)),   x_i ~ q(x_i | x_0)
    L_0     = -log p_θ(x_0 | x_1),  a discretized Gaussian over the data's L levels

The chain lives on the grid ``t_i = i/N`` of the model's VP-SDE, with the exact
discretization ``ᾱ_i = ᾱ(i/N)`` and ``β_i = 1 - ᾱ_i/ᾱ_{i-1} = -expm1(-(B(i/N) - B((i-1)/N)))``:
on a discrete DDPM schedule with the same ``N`` these are its own ``β_i`` (docs/math.md), on a
continuous schedule they define the DDPM chain that the SDE induces on the grid. Every
KL is a closed-form Gaussian KL; the sum over ``i`` is exact or an unbiased estimate from a
random subset of terms scaled by ``N / n_terms``.
"""

from __future__ import annotations

import math

import torch

from scoresde.core.bpd import BpdResult, check_int_data, nats_to_bpd, summarize, to_model_space
from scoresde.core.model import eps_of
from scoresde.core.sde import append_dims, discrete_steps_of, require_variance_preserving
from scoresde.util.checks import check_choice, check_int, check_model
from scoresde.util.choices import VARIANCES
from scoresde.util.progress import Ticks, progress_bar
from scoresde.util.rng import rand, randn

__all__ = ["ddpm_vlb_bits_per_dim", "ddpm_tables", "vlb_prior_term", "vlb_term", "normal_kl",
           "discretized_gaussian_log_likelihood", "VARIANCES"]


def ddpm_tables(sde, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ᾱ_0..ᾱ_N, β_0..β_N)``, float64 of shape ``(N+1,)``, on the grid ``i/N`` (``β_0 = 0`` unused)."""
    t = torch.arange(N + 1, dtype=torch.float64, device="cpu") / N
    alpha_bar = sde.alpha_bar(t)
    _, betas = sde.transition(t[:-1], t[1:])  # 1 - ᾱ(t_i)/ᾱ(t_{i-1}), without cancellation
    return alpha_bar, torch.cat([betas.new_zeros(1), betas])


def normal_kl(mean_q, var_q, mean_p, var_p) -> torch.Tensor:
    """Elementwise ``KL(N(mean_q, var_q) ‖ N(mean_p, var_p))`` in nats."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def _log_sub_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) - exp(b))`` for ``a ≥ b``."""
    return a + torch.log(-torch.expm1(b - a))


def discretized_gaussian_log_likelihood(x0, mean, std, levels: int) -> torch.Tensor:
    """Elementwise ``log P(x0)`` for ``N(mean, std²)`` binned to ``levels`` bins of model space.

    ``x0`` are bin centres ``(2k+1)/L - 1``; bin ``k`` spans ``[2k/L - 1, 2(k+1)/L - 1]``
    (edges at midpoints between levels), the first and last bins are open-ended
    (Ho et al. 2020, eq. 13). Computed as a difference of log-CDFs, stable in the tails.
    """
    half = 1.0 / levels
    lo, hi = (x0 - half - mean) / std, (x0 + half - mean) / std
    first, last = x0 < -1 + 2 * half, x0 > 1 - 2 * half  # the end bins
    lo = torch.where(first, torch.full_like(lo, -math.inf), lo)
    hi = torch.where(last, torch.full_like(hi, math.inf), hi)
    # Reflect bins right of the mean so both CDF values sit in the accurate lower tail.
    flip = lo + hi > 0
    a = torch.where(flip, -lo, hi)
    b = torch.where(flip, -hi, lo)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    whole = torch.isinf(b)  # open-ended bin: P = Φ(a)
    return torch.where(whole, log_a, _log_sub_exp(log_a, torch.where(whole, log_a - 1.0, log_b)))


def vlb_prior_term(x0: torch.Tensor, alpha_bar_N: float) -> torch.Tensor:
    """``L_T = KL(N(√ᾱ_N x0, (1-ᾱ_N) I) ‖ N(0, I))`` per sample, nats, shape ``(B,)``."""
    a = torch.as_tensor(alpha_bar_N, dtype=torch.float64, device=x0.device)
    kl = 0.5 * (a * x0**2 - a - torch.log1p(-a))
    return kl.flatten(1).sum(1)


def vlb_term(model, x0: torch.Tensor, i: torch.Tensor, levels: int, alpha_bar: torch.Tensor,
             betas: torch.Tensor, *, variance: str = "beta", noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """One term of Ho et al. eq. 5 per sample, nats ``(B,)``: ``L_{i-1}`` (``i ≥ 2``) or ``L_0`` (``i = 1``).

    ``x0`` ``(B, *dims)`` float64 bin centres; ``i`` ``(B,)`` integers in ``1..N`` (one per
    sample); ``alpha_bar``, ``betas`` from :func:`ddpm_tables`; ``noise`` the ``ε`` of
    ``x_i = √ᾱ_i x0 + √(1-ᾱ_i) ε`` (drawn if ``None``). Model variance ``β_i`` or
    ``β̃_i = (1-ᾱ_{i-1})/(1-ᾱ_i) β_i``; as in Ho et al.'s code, ``β̃_1 = 0`` is replaced by ``β̃_2``
    (by ``β_1`` when ``N = 1``) so the decoder stays a proper distribution.
    """
    n = x0.ndim
    N = betas.shape[0] - 1
    if noise is None:
        noise = randn(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
    i_cpu = i.cpu()
    ab, ab_prev, beta = alpha_bar[i_cpu], alpha_bar[i_cpu - 1], betas[i_cpu]
    one_m_ab = 1 - ab  # ≥ β_1 > 0: no cancellation issue at this precision
    beta_tilde = (1 - ab_prev) / one_m_ab * beta
    if variance == "beta":
        var_p = beta
    else:
        bt2 = (1 - alpha_bar[1]) / (1 - alpha_bar[2]) * betas[2] if N >= 2 else betas[1]
        var_p = torch.where(i_cpu == 1, bt2, beta_tilde)

    def col(v):
        return append_dims(v.to(x0.device), n)

    x_i = col(ab.sqrt()) * x0 + col(one_m_ab.sqrt()) * noise  # q(x_i | x0)
    eps = eps_of(model, x_i.to(torch.float64), (i.to(torch.float64) / N).to(x0.device))
    mean_p = (x_i - col(beta / one_m_ab.sqrt()) * eps) / col((1 - beta).sqrt())  # μ_θ(x_i, i)
    # Posterior q(x_{i-1} | x_i, x0): mean μ̃, variance β̃_i (Ho et al. eqs. 6-7).
    mean_q = col(ab_prev.sqrt() * beta / one_m_ab) * x0 + col((1 - beta).sqrt() * (1 - ab_prev)
                                                              / one_m_ab) * x_i
    first = i_cpu == 1
    safe_bt = torch.where(first, torch.ones_like(beta_tilde), beta_tilde)
    kl = normal_kl(mean_q, col(safe_bt), mean_p, col(var_p)).flatten(1).sum(1)
    nll = -discretized_gaussian_log_likelihood(x0, mean_p, col(var_p.sqrt()), levels).flatten(1).sum(1)
    return torch.where(first.to(x0.device), nll, kl)


@torch.no_grad()
def ddpm_vlb_bits_per_dim(model, x_int: torch.Tensor, levels: int, *, n_terms: int | None = None,
                          N: int | None = None, variance: str = "beta",
                          generator: torch.Generator | None = None, batch_size: int = 256,
                          progress: bool = False) -> BpdResult:
    """The DDPM variational bound ``(L_T + Σ L_{i-1} + L_0) / (D ln 2)`` in bits/dim, per sample and mean.

    Args:
        model: any VP score model (``.sde``, ``.eps``); see the module docstring for the chain.
        x_int: ``(B, *dims)`` integers in ``0..levels-1``; model space is the bin centres
            (:func:`scoresde.core.bpd.to_model_space`), the decoder uses the same bins.
        n_terms: ``None`` sums all ``N`` terms; an integer draws that many distinct
            ``i ∈ 1..N`` per sample and scales their sum by ``N / n_terms`` (unbiased).
        N: chain length; default the schedule's own ``N`` if discrete, else 1000.
        variance: reverse-process variance ``"beta"`` (``β_i``) or ``"beta_tilde"`` (``β̃_i``).

    ``terms`` gives the mean of ``L_T``, ``L_sum`` (``Σ_{i≥2} L_{i-1}``) and ``L_0`` in bits/dim;
    ``nfe`` counts batched network calls; ``stderr`` is over the data set. Randomness, per batch:
    with all terms, term ``i = 1..N`` uses the ``i``-th ``torch.randn(x0.shape, generator=generator)``
    draw; with a subset, one ``torch.rand((b, N))`` draw picks the steps first. ``generator`` may be
    a CPU generator or one on ``x_int``'s device: draws are made on its device and moved
    (:mod:`scoresde.util.rng`). ``x_int`` must be on the model's device. Runs under ``no_grad``.
    """
    check_model(model)
    require_variance_preserving(model.sde)
    dim = check_int_data(x_int, levels)
    check_choice("variance", variance, VARIANCES)
    batch_size = check_int("batch_size", batch_size)
    N = (discrete_steps_of(model.sde) or 1000) if N is None else check_int("N", N)
    n_terms = N if n_terms is None else check_int("n_terms", n_terms)
    if n_terms > N:
        raise ValueError(f"n_terms={n_terms}: expected at most N={N}")
    alpha_bar, betas = ddpm_tables(model.sde, N)
    scale = N / n_terms
    B = x_int.shape[0]
    parts = torch.zeros((3, B), dtype=torch.float64, device="cpu")  # L_T, Σ L_{i-1}, L_0 in nats
    nfe = 0
    starts = range(0, B, batch_size)
    bar = progress_bar(B, progress, "variational bound", unit="examples")  # a batch's share per term
    ticks = Ticks(bar, 1)
    try:
        for s in starts:
            x0 = to_model_space(x_int[s:s + batch_size], levels, dtype=torch.float64)
            b = x0.shape[0]
            parts[0, s:s + b] = vlb_prior_term(x0, float(alpha_bar[N])).cpu()
            if n_terms == N:  # every term, in order
                order = torch.arange(1, N + 1, device="cpu").expand(b, N)
            else:  # n_terms distinct steps per sample
                order = rand((b, N), generator=generator, device="cpu").argsort(1)[:, :n_terms] + 1
            for j in range(n_terms):
                i = order[:, j]
                term = scale * vlb_term(model, x0, i.to(x0.device), levels, alpha_bar, betas,
                                        variance=variance, generator=generator).cpu()
                parts[1, s:s + b] += torch.where(i > 1, term, 0.0)
                parts[2, s:s + b] += torch.where(i == 1, term, 0.0)
                nfe += 1
                ticks(s + (j + 1) * b / n_terms)
    finally:
        bar.close()
    per_draw = nats_to_bpd(parts.sum(0, keepdim=True), dim)  # (1, B)
    bpd, stderr = summarize(per_draw)
    terms = {k: float(nats_to_bpd(v.mean(), dim)) for k, v in zip(("L_T", "L_sum", "L_0"), parts)}
    return BpdResult(bpd, stderr, nfe, per_draw[0], terms=terms, info={"N": N, "n_terms": n_terms})
