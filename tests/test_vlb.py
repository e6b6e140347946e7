"""The DDPM variational bound: closed forms, a transcription of Ho et al. eq. 5, and bounds.

The variational bound's plumbing, on the same random draws: the batch and term loop of
``ddpm_vlb_bits_per_dim`` (which steps, which noise, in which order, how they are scaled and
split), its defaults and progress bar; and the grid chain of :mod:`scoresde.likelihood.vlb_grid`
(the grid in closed form, ``t_of_sigma`` as the inverse of ``σ(t)``, the chain's ``β_i`` and ``ε``).

The bound's terms themselves are checked against a transcription of Ho et al. eq. 5 in
tests/test_vlb.py; here the figures are compared with the same loop written out (exact equality)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, GaussianMixture, LinearSchedule, ScoreModel
from scoresde.core.sde import VESDE
from scoresde.likelihood import vlb as vlb_mod
from scoresde.likelihood.vlb import (
    ddpm_tables,
    ddpm_vlb_bits_per_dim,
    discretized_gaussian_log_likelihood,
    vlb_prior_term,
    vlb_term,
)
from scoresde.likelihood.vlb_grid import GridChainModel, grid_vlb_bits_per_dim, t_of_sigma, vlb_grid
from tests.fakes import record_bars


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


# Edges -----------------------------------------------------------------------------------


LEVELS = 17


def _x_int(n, dim=2, seed=0):
    return torch.randint(0, LEVELS, (n, dim), generator=torch.Generator().manual_seed(seed))


def _gen(seed=5):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def bars(monkeypatch):
    return record_bars(monkeypatch, vlb_mod)


# ---------------------------------------------------------------- ddpm_vlb_bits_per_dim


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_loop_transcribed_on_the_same_draws(variance, bars):
    """Batches of 2 of 5 samples; per batch one ``torch.rand((b, N))`` (float32) picks 3 distinct
    steps per sample, then each term draws its noise; terms are scaled by ``N / n_terms`` and
    split into ``L_0`` (step 1) and ``L_sum`` (steps ≥ 2); ``L_T`` is the prior KL."""
    gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm(10))
    x_int, N, n_terms = _x_int(5), 10, 3
    got = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, n_terms=n_terms, variance=variance, batch_size=2,
                                generator=_gen())
    ab, betas = ddpm_tables(gm.sde, N)
    g, parts = _gen(), torch.zeros(3, 5, dtype=torch.float64)
    for s in range(0, 5, 2):
        x0 = (2 * x_int[s:s + 2].to(torch.float64) + 1) / LEVELS - 1
        b = x0.shape[0]
        parts[0, s:s + b] = vlb_prior_term(x0, float(ab[N]))
        order = torch.rand((b, N), generator=g).argsort(1)[:, :n_terms] + 1
        for j in range(n_terms):
            i = order[:, j]
            term = (N / n_terms) * vlb_term(gm, x0, i, LEVELS, ab, betas, variance=variance, generator=g)
            parts[1, s:s + b] += torch.where(i > 1, term, 0.0)
            parts[2, s:s + b] += torch.where(i == 1, term, 0.0)
    per_sample = parts.sum(0) / (2 * math.log(2))
    assert torch.equal(got.per_sample, per_sample)
    assert got.bpd == float(per_sample.mean()) and got.stderr == float(per_sample.std() / math.sqrt(5))
    assert got.terms == {k: float(v.mean() / (2 * math.log(2))) for k, v in zip(("L_T", "L_sum", "L_0"), parts)}
    assert got.nfe == 3 * n_terms and got.info == {"N": N, "n_terms": n_terms}
    # progress in examples: a batch of b moves the bar by b/n_terms per term (rounded down, carried)
    assert (bars[0].total, bars[0].enabled, bars[0].desc, bars[0].n) == (5, False, "variational bound", 5)
    assert bars[0].unit == "examples" and bars[0].updates == [1] * 5


def test_vlb_all_terms_in_order_with_the_ith_noise_draw():
    """With every term, term ``i`` uses the ``i``-th ``randn`` draw of the generator (no step draw)."""
    gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm(6))
    x_int = _x_int(3)
    got = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, generator=_gen())
    ab, betas = ddpm_tables(gm.sde, 6)
    x0, g = (2 * x_int.to(torch.float64) + 1) / LEVELS - 1, _gen()
    total = vlb_prior_term(x0, float(ab[6]))
    for i in range(1, 7):
        total = total + vlb_term(gm, x0, torch.full((3,), i), LEVELS, ab, betas, generator=g)
    torch.testing.assert_close(got.per_sample, total / (2 * math.log(2)), rtol=1e-13, atol=0)  # summation order


def test_vlb_defaults(bars, capsys):
    """Defaults: variance β, N the discrete schedule's own (1000 on a continuous one), batches of
    256 (257 samples: two batches), no progress output."""
    gm = GaussianMixture.random(1, 2, seed=0, sde=VPSDE.ddpm(4))
    x_int = _x_int(257, 1)
    default = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, generator=_gen())
    beta = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, variance="beta", batch_size=256, generator=_gen())
    assert torch.equal(default.per_sample, beta.per_sample) and default.nfe == 2 * 4
    assert bars[0].total == 257 and not bars[0].enabled and capsys.readouterr().err == ""
    tilde = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, variance="beta_tilde", generator=_gen())
    assert not torch.equal(tilde.per_sample, default.per_sample)
    cont = GaussianMixture.random(1, 2, seed=0, sde=VPSDE.linear())
    assert ddpm_vlb_bits_per_dim(cont, x_int[:2], LEVELS, n_terms=2, generator=_gen()).info == {
        "N": 1000, "n_terms": 2}


def test_vlb_refuses_a_non_vp_sde_by_name():
    gm = GaussianMixture.random(1, 1, seed=0, sde=VESDE.geometric(0.01, 50.0))
    with pytest.raises(ValueError, match=r"^DDPM's chain \(its ancestral step and its variational bound\) needs "
                                         r"a VP-SDE \(σ² = 1 - α²\), got VESDE \(sde\.kind=ve\): "):
        ddpm_vlb_bits_per_dim(gm, _x_int(2, 1), LEVELS)


# ---------------------------------------------------------------- vlb_grid


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE(CosineSchedule())], ids=["linear", "cosine"])
def test_log_snr_grid_in_closed_form(sde):
    g = vlb_grid(sde, 8, 1e-3)
    assert g.dtype == torch.float64 and g.shape == (9,) and g.device.type == "cpu"
    assert float(g[0]) == 0.0 and float(g[1]) == 1e-3 and float(g[-1]) == 1.0
    lam = sde.log_snr(g[1:])
    want = torch.linspace(float(lam[0]), float(lam[-1]), 8, dtype=torch.float64)
    torch.testing.assert_close(lam, want, rtol=0, atol=1e-9)
    assert torch.all(g.diff() > 0)


def test_time_grid_and_the_one_step_grid():
    sde = VPSDE.linear()
    g = vlb_grid(sde, 4, 0.2, spacing="time")
    assert torch.equal(g, torch.tensor([0.0, 0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0], dtype=torch.float64)) or \
        torch.allclose(g, torch.tensor([0.0, 0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0], dtype=torch.float64),
                       rtol=0, atol=1e-15)
    # N = 1: the one step starts where the bound starts (the grid is (0, t_eps)) in either spacing
    for spacing in ("logsnr", "time"):
        assert torch.equal(vlb_grid(sde, 1, 0.3, spacing), torch.tensor([0.0, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^spacing='sigma': expected one of "):
        vlb_grid(sde, 4, 0.2, spacing="sigma")
    with pytest.raises(ValueError, match=r"^N=0: expected an integer ≥ 1"):
        vlb_grid(sde, 0, 0.2)


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE(CosineSchedule()), VPSDE.ddpm(1000)],
                         ids=["linear", "cosine", "ddpm"])
def test_t_of_sigma_inverts_sigma(sde):
    for sigma in (0.01, 0.035, 0.5, 0.9):
        t = t_of_sigma(sde, sigma)
        assert isinstance(t, float) and float(sde.sigma(t)) == pytest.approx(sigma, rel=1e-10)
    with pytest.raises(ValueError, match=r"^sigma=0: expected a number"):
        t_of_sigma(sde, 0)
    with pytest.raises(ValueError, match=r"^sigma=1\.5: expected a number in \(σ\(0\)=0, σ\(1\)="):
        t_of_sigma(sde, 1.5)


def test_grid_chain_model_is_the_exact_discretization():
    gm = GaussianMixture.random(2, 2, seed=1, sde=VPSDE.linear())
    times = vlb_grid(gm.sde, 6, 0.01)
    chain = GridChainModel(gm, times)
    i = torch.arange(7, dtype=torch.float64)
    torch.testing.assert_close(chain.sde.alpha_bar(i / 6), gm.sde.alpha_bar(times), rtol=1e-12, atol=0)
    assert chain.N == 6 and torch.equal(chain.times, times)
    x = torch.randn(3, 2, generator=_gen(2), dtype=torch.float64)
    for k in (1, 4, 6):
        assert torch.equal(chain.eps(x, k / 6), gm.eps(x, times[k]))
    with pytest.raises(ValueError, match=r"^GridChainModel\.eps: expected times on the grid i/N$"):
        chain.eps(x, 0.1)
    for bad in ([0.0], [0.1, 0.5], [0.0, 0.5, 0.5], [[0.0, 0.5]]):
        with pytest.raises(ValueError, match=r"^times: expected an increasing 1-D grid starting at 0$"):
            GridChainModel(gm, torch.tensor(bad, dtype=torch.float64))


def test_grid_bound_is_the_bound_of_the_grid_chain():
    gm = GaussianMixture.random(2, 2, seed=1, sde=VPSDE.linear())
    x_int = _x_int(3)
    got = grid_vlb_bits_per_dim(gm, x_int, LEVELS, t_eps=0.02, N=12, spacing="time", generator=_gen())
    chain = GridChainModel(gm, vlb_grid(gm.sde, 12, 0.02, "time"))
    want = ddpm_vlb_bits_per_dim(chain, x_int, LEVELS, N=12, generator=_gen())
    assert torch.equal(got.per_sample, want.per_sample) and got.bpd == want.bpd
    assert got.info == {"N": 12, "n_terms": 12, "t_eps": 0.02, "sigma_eps": float(gm.sde.sigma(0.02)),
                        "spacing": "time"}
    default = grid_vlb_bits_per_dim(gm, x_int[:1], LEVELS, t_eps=0.02, n_terms=1, generator=_gen())
    assert default.info["N"] == 1000 and default.info["spacing"] == "logsnr"
    with pytest.raises(ValueError, match=r"^DDPM's chain \(its ancestral step and its variational bound\) needs"):
        ve = GaussianMixture.random(2, 1, seed=0, sde=VESDE.geometric(0.01, 50.0))
        grid_vlb_bits_per_dim(ve, x_int, LEVELS, t_eps=0.02)


def test_require_variance_preserving_names_the_sde_and_its_kind():
    from types import SimpleNamespace

    from scoresde.core.sde import require_variance_preserving

    require_variance_preserving(SimpleNamespace())  # a user's SDE object that does not say: taken as VP
    require_variance_preserving(VPSDE.linear())
    with pytest.raises(ValueError, match=r"^DDPM's chain \(its ancestral step and its variational bound\) needs a "
                                         r"VP-SDE \(σ² = 1 - α²\), got SimpleNamespace \(sde\.kind=\?\): sample "
                                         r"with 'ddim' \(eta=1\) or pc's reverse_diffusion predictor, and take "
                                         r"bits/dim from the probability-flow ODE$"):
        require_variance_preserving(SimpleNamespace(variance_preserving=False))
    ve = VESDE.geometric(0.01, 50.0)
    with pytest.raises(ValueError, match=rf"VP-SDE \(σ² = 1 - α²\), got VESDE \(sde\.kind={ve.kind}\): sample"):
        require_variance_preserving(ve)


def test_grid_chain_edges():
    """A Python list of times is taken in float64; two points (N = 1) are a chain; the times
    must be on the grid ``i/N`` to 1e-9 absolute (not relative)."""
    gm = GaussianMixture.random(2, 2, seed=1, sde=VPSDE.linear())
    times = [0.0, 0.01, 0.3, 1.0]
    chain = GridChainModel(gm, times)
    assert chain.times.dtype == torch.float64 and chain.times.tolist() == times
    t64 = torch.tensor(times, dtype=torch.float64)
    torch.testing.assert_close(chain.sde.alpha_bar(torch.arange(4, dtype=torch.float64) / 3),
                               gm.sde.alpha_bar(t64), rtol=1e-11, atol=0)  # float32 times: ~1e-7
    one = GridChainModel(gm, [0.0, 1.0])
    assert one.N == 1
    x = torch.randn(2, 2, generator=_gen(3), dtype=torch.float64)
    assert torch.equal(one.eps(x, 1.0), gm.eps(x, 1.0))
    for off in (1e-6, 5e-9):  # inside rtol 1e-5 and inside atol 1e-8: both refused
        with pytest.raises(ValueError, match=r"^GridChainModel\.eps: expected times on the grid i/N$"):
            chain.eps(x, 1 / 3 + off)
    assert torch.equal(chain.eps(x, 1 / 3 + 5e-10), gm.eps(x, 0.01))


def test_vlb_grid_stays_on_the_cpu_under_another_default_device():
    with torch.device("meta"):
        a = vlb_grid(VPSDE.linear(), 4, 0.2, spacing="time")
        b = vlb_grid(VPSDE.linear(), 4, 0.2)
    assert a.device.type == "cpu" and b.device.type == "cpu"


def _log_bin_probability(k: int, levels: int, mean: float, std: float) -> float:
    """scipy reference of ``log P(bin k)`` for ``N(mean, std²)``, in the tail where it is accurate."""
    from scipy.stats import norm

    lo = (2 * k / levels - 1 - mean) / std
    hi = (2 * (k + 1) / levels - 1 - mean) / std
    if k == 0:
        return float(norm.logcdf(hi))
    if k == levels - 1:
        return float(norm.logsf(lo))
    if lo + hi > 0:  # right of the mean: survival functions
        a, b = norm.logsf(lo), norm.logsf(hi)
    else:
        a, b = norm.logcdf(hi), norm.logcdf(lo)
    return float(a + math.log1p(-math.exp(b - a)))


@pytest.mark.parametrize("levels", [5, 14, 17])
@pytest.mark.parametrize("mean, std", [(0.1, 0.3), (-3.0, 0.5), (2.5, 0.4), (-3.0, 0.05)])
def test_discretized_gaussian_every_bin_in_log_space(levels, mean, std):
    """Every bin, in log space, against scipy (1e-10 relative): only bins 0 and L-1 are open-ended
    (for L = 5 and 14 the centre of bin 1 rounds below -1 + 3/L, so a looser test of the end bins
    would take it for one), and the far tail keeps its precision (log P down to -3020, where
    Φ(lo) and Φ(hi) both round to 1: the bins right of the mean are reflected into the lower tail)."""
    from scoresde.likelihood.vlb import discretized_gaussian_log_likelihood

    k = torch.arange(levels)
    x0 = (2 * k.to(torch.float64) + 1) / levels - 1
    got = discretized_gaussian_log_likelihood(x0, torch.full_like(x0, mean), torch.full_like(x0, std), levels)
    want = torch.tensor([_log_bin_probability(i, levels, mean, std) for i in range(levels)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_vlb_without_a_generator_uses_the_global_stream():
    gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm(4))
    x_int = _x_int(2)
    torch.manual_seed(9)
    a = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS)
    b = ddpm_vlb_bits_per_dim(gm, x_int, LEVELS, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.per_sample, b.per_sample)


@pytest.mark.parametrize("N", [1, 2])
def test_decoder_variance_of_short_chains(N):
    """``β̃_1 = 0`` is replaced by ``β̃_2 = (1-ᾱ_1)/(1-ᾱ_2) β_2``, or by ``β_1`` when ``N = 1``:
    the decoder term ``L_0`` written out with that variance."""
    from scoresde.likelihood.vlb import discretized_gaussian_log_likelihood

    gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm(N))
    ab, betas = ddpm_tables(gm.sde, N)
    x0 = (2 * _x_int(3).to(torch.float64) + 1) / LEVELS - 1
    noise = torch.randn(x0.shape, generator=_gen(2), dtype=torch.float64)
    one = torch.ones(3, dtype=torch.long)
    got = vlb_term(gm, x0, one, LEVELS, ab, betas, variance="beta_tilde", noise=noise)
    var = betas[1] if N == 1 else (1 - ab[1]) / (1 - ab[2]) * betas[2]
    x1 = ab[1].sqrt() * x0 + (1 - ab[1]).sqrt() * noise
    eps = gm.eps(x1, torch.full((3,), 1 / N, dtype=torch.float64))
    mean = (x1 - betas[1] / (1 - ab[1]).sqrt() * eps) / (1 - betas[1]).sqrt()
    want = -discretized_gaussian_log_likelihood(x0, mean, var.sqrt().expand_as(x0), LEVELS).sum(1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
