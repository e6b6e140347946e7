"""The DDPM variational bound: closed forms, a transcription of Ho et al. eq. 5, and bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, GaussianMixture, LinearSchedule, ScoreModel
from scoresde.likelihood.vlb import (
    ddpm_tables,
    ddpm_vlb_bits_per_dim,
    discretized_gaussian_log_likelihood,
    vlb_prior_term,
    vlb_term,
)


class _Net(torch.nn.Module):
    """A random float64 ε-network: any ε makes a valid (if poor) model."""

    def __init__(self, dim, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1, self.lin2 = torch.nn.Linear(dim + 1, 16), torch.nn.Linear(16, dim)
        self.double()

    def forward(self, x, t):
        return self.lin2(torch.tanh(self.lin1(torch.cat([x, t[:, None].to(x.dtype)], 1))))


def _centres(levels):
    return (2 * np.arange(levels) + 1) / levels - 1


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("mean, std", [(0.1, 0.3), (0.93, 0.004), (-3.0, 0.5), (5.0, 0.01), (0.0, 50.0)])
def test_discretized_gaussian_matches_scipy_and_sums_to_one(levels, mean, std):
    x0 = torch.as_tensor(_centres(levels))
    logp = discretized_gaussian_log_likelihood(x0, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(std, dtype=torch.float64), levels)
    edges = np.concatenate([[-np.inf], 2 * np.arange(1, levels) / levels - 1, [np.inf]])
    ref = np.diff(norm.cdf((edges - mean) / std))
    assert not torch.isnan(logp).any() and torch.all(logp <= 0)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(logp.exp().numpy(), ref, rtol=1e-9, atol=1e-15)


def test_tables_are_the_discrete_schedule_and_the_exact_discretization():
    betas = torch.rand(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3 + 1e-4
    alpha_bar, b = ddpm_tables(VPSDE(DiscreteSchedule(betas)), 30)
    assert torch.allclose(b[1:], betas, rtol=1e-13, atol=0)
    assert torch.allclose(alpha_bar, torch.cat([torch.ones(1), torch.cumprod(1 - betas, 0)]), rtol=1e-13)
    sde = VPSDE.linear()
    alpha_bar, b = ddpm_tables(sde, 50)
    t = torch.arange(51, dtype=torch.float64) / 50
    assert torch.allclose(b[1:], 1 - sde.alpha_bar(t[1:]) / sde.alpha_bar(t[:-1]), rtol=1e-12)


def _ho_eq5_bits(model, x_int, levels, betas, variance, seed):
    """Ho et al. 2020 eq. 5 written out term by term in numpy (multivariate KLs, scipy CDFs),
    with the same noise: term i (i = 1..N) uses the i-th ``torch.randn`` draw of the generator."""
    N = len(betas)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    x0 = _centres(levels)[x_int.numpy()]  # (B, D)
    B, D = x0.shape
    g = torch.Generator().manual_seed(seed)
    total = np.sum(0.5 * ((1 - abar[-1]) + abar[-1] * x0**2 - 1 - np.log(1 - abar[-1])), 1)  # L_T
    tilde = (1 - abar_prev) / (1 - abar) * betas
    for i in range(1, N + 1):
        eps = torch.randn((B, D), generator=g, dtype=torch.float64).numpy()
        a, ap, beta = abar[i - 1], abar_prev[i - 1], betas[i - 1]
        xi = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
        e = model.eps(torch.as_tensor(xi), torch.full((B,), i / N, dtype=torch.float64)).detach().numpy()
        mu = (xi - beta / np.sqrt(1 - a) * e) / np.sqrt(1 - beta)
        var = beta if variance == "beta" else (tilde[i - 1] if i > 1 else tilde[1])
        if i == 1:  # L_0: product over dims of the Gaussian mass of each data bin
            lo = np.where(x0 < -1 + 2 / levels, -np.inf, x0 - 1 / levels)
            hi = np.where(x0 > 1 - 2 / levels, np.inf, x0 + 1 / levels)
            p = norm.cdf((hi - mu) / np.sqrt(var)) - norm.cdf((lo - mu) / np.sqrt(var))
            total = total - np.log(p).sum(1)
        else:  # KL(N(μ̃, β̃ I) ‖ N(μ_θ, var I)) in D dimensions
            mt = np.sqrt(ap) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - ap) / (1 - a) * xi
            vt = tilde[i - 1]
            total = total + 0.5 * (D * vt / var + ((mt - mu) ** 2).sum(1) / var - D + D * np.log(var / vt))
    return total / (D * math.log(2))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_equals_a_transcription_of_ho_eq5(variance):
    betas = np.array([0.02, 0.1, 0.3, 0.5, 0.7])
    model = ScoreModel(_Net(2), VPSDE(DiscreteSchedule(betas)))
    x_int = torch.tensor([[0, 16], [8, 3], [12, 12]])
    res = ddpm_vlb_bits_per_dim(model, x_int, 17, variance=variance,
                                generator=torch.Generator().manual_seed(5))
    expected = _ho_eq5_bits(model, x_int, 17, betas, variance, seed=5)
    assert np.allclose(res.per_sample.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert res.bpd == pytest.approx(float(np.mean(expected)), rel=1e-10)
    assert sum(res.terms.values()) == pytest.approx(res.bpd, rel=1e-10)
    assert res.nfe == 5 and res.info == {"N": 5, "n_terms": 5}


@st.composite
def sdes(draw):
    kind = draw(st.sampled_from(["linear", "cosine", "ddpm"]))
    if kind == "linear":
        return VPSDE(LinearSchedule(draw(st.floats(0.05, 1.0)), draw(st.floats(5.0, 40.0))))
    if kind == "cosine":
        return VPSDE(CosineSchedule(s=draw(st.floats(1e-3, 0.05))))
    n = draw(st.integers(2, 40))
    return VPSDE(DiscreteSchedule.ddpm_linear(n, draw(st.floats(1e-5, 1e-2)), draw(st.floats(0.02, 0.6))))


@settings(max_examples=15)
@given(sde=sdes(), seed=st.integers(0, 1000), variance=st.sampled_from(["beta", "beta_tilde"]),
       levels=st.sampled_from([2, 17, 256]))
def test_every_term_is_nonnegative(sde, seed, variance, levels):
    """Every KL term ≥ 0, L_T ≥ 0 and L_0 = -log P ≥ 0, for any VP schedule and any ε-network."""
    model = ScoreModel(_Net(3, seed), sde)
    N = sde.discrete_steps or 20
    alpha_bar, betas = ddpm_tables(sde, N)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(_centres(levels))[torch.randint(0, levels, (4, 3), generator=g)]
    assert torch.all(vlb_prior_term(x0, float(alpha_bar[N])) >= 0)
    for i in range(1, N + 1):
        term = vlb_term(model, x0, torch.full((4,), i), levels, alpha_bar, betas, variance=variance,
                        generator=g)
        assert torch.all(torch.isfinite(term)) and torch.all(term >= 0), (i, term)


def _delta_data(levels, sd=0.25):
    """A discretized Gaussian ``P(k)`` and the oracle of the discrete data: a mixture of
    near-deltas (variance 1e-10) at the bin centres, weighted by ``P(k)``."""
    edges = np.concatenate([[-np.inf], 2 * np.arange(1, levels) / levels - 1, [np.inf]])
    p = np.diff(norm.cdf(edges / sd))
    keep = np.nonzero(p > 1e-12)[0]
    p = p[keep] / p[keep].sum()
    return p, keep


@pytest.mark.parametrize("sde, variance", [(VPSDE.ddpm(), "beta"), (VPSDE.ddpm(), "beta_tilde"),
                                           (VPSDE.linear(), "beta")],
                         ids=["ddpm-beta", "ddpm-tilde", "linear"])
def test_vlb_is_not_below_the_exact_nll(sde, variance):
    """For the oracle of discrete data (near-deltas at the bin centres) the exact NLL of the data
    is its entropy ``H = -Σ P log₂ P``: ``E_P[VLB] ≥ E_P[-log₂ P_θ] ≥ H``. Every support point is
    weighted by its exact ``P(k)``; the Monte Carlo error of the VLB comes from ``R`` repeats:
    the weighted mean must not be below ``H`` by more than 4 standard errors (≈ 0.07 bits here;
    measured gaps above ``H``: 0.3–0.5 bits/dim with N = 1000)."""
    levels, R = 17, 12
    p, keep = _delta_data(levels)
    entropy = float(-(p * np.log2(p)).sum())
    centres = torch.as_tensor(_centres(levels)[keep])[:, None]
    gm = GaussianMixture(torch.as_tensor(p), centres, 1e-10, sde=sde)
    x_int = torch.as_tensor(keep)[:, None].repeat(R, 1)
    res = ddpm_vlb_bits_per_dim(gm, x_int, levels, variance=variance, batch_size=4096,
                                generator=torch.Generator().manual_seed(0))
    per_rep = (res.per_sample.reshape(R, -1) * torch.as_tensor(p)).sum(1)  # (R,)
    mean, se = float(per_rep.mean()), float(per_rep.std() / math.sqrt(R))
    assert mean >= entropy - 4 * se, (mean, entropy, se)
    assert res.terms["L_T"] >= 0 and res.terms["L_sum"] >= 0 and res.terms["L_0"] >= 0


def test_subset_of_terms_is_unbiased():
    """The scaled random subset (``n_terms = 10`` of ``N = 100``) agrees with the full sum within
    4 combined standard errors over 64 repeats of 3 examples; without the ``N/n_terms`` scale it
    would be 10× too small."""
    sde = VPSDE(DiscreteSchedule.ddpm_linear(100, 1e-3, 0.15))
    gm = GaussianMixture.random(2, 2, seed=0, sde=sde)
    x_int = torch.tensor([[3, 9], [10, 2], [16, 0]]).repeat(64, 1)
    full = ddpm_vlb_bits_per_dim(gm, x_int, 17, generator=torch.Generator().manual_seed(0))
    part = ddpm_vlb_bits_per_dim(gm, x_int, 17, n_terms=10, generator=torch.Generator().manual_seed(1))
    assert part.nfe == 10 and full.nfe == 100
    diff = abs(part.bpd - full.bpd)
    assert diff <= 4 * math.hypot(part.stderr, full.stderr), (part.bpd, full.bpd, part.stderr)


@pytest.mark.parametrize("kwargs, match", [
    (dict(variance="learned"), "variance='learned'"),
    (dict(n_terms=0), "n_terms=0"),
    (dict(n_terms=11), "n_terms=11: expected at most N=10"),
    (dict(N=0), "N=0"),
    (dict(batch_size=0), "batch_size=0"),
])
def test_bad_options_raise(kwargs, match):
    gm = GaussianMixture.ring(sde=VPSDE.ddpm(10))
    with pytest.raises(ValueError, match=match):
        ddpm_vlb_bits_per_dim(gm, torch.zeros(2, 2, dtype=torch.long), 17, **kwargs)
