"""The Gaussian-mixture oracle: exact log-density, score and ε* of p_t (docs/math.md, "Closed forms")."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, GaussianMixture
from scoresde.core.flow import flow_drift
from tests.strategies import sdes


@st.composite
def mixtures(draw, max_dim: int = 5, max_k: int = 4):
    dim = draw(st.integers(1, max_dim))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 10_000))
    return GaussianMixture.random(dim, k, seed=seed, sde=draw(sdes()))


@given(mixtures(), st.floats(0.0, 1.0))
@settings(max_examples=40)
def test_score_is_gradient_of_log_density(gm, t):
    x = gm.sample_t(6, t, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), t), grad, rtol=1e-9, atol=1e-9)


@given(mixtures(), st.floats(0.0, 1.0))
@settings(max_examples=40)
def test_eps_is_minus_sigma_times_score(gm, t):
    x = gm.sample_t(5, t, generator=torch.Generator().manual_seed(1))
    sigma = float(gm.sde.sigma(t))
    torch.testing.assert_close(gm.eps(x, t), -sigma * gm.score(x, t), rtol=1e-10, atol=1e-12)


@given(sdes(), st.floats(0.0, 1.0), st.integers(1, 4))
@settings(max_examples=40)
def test_single_gaussian_textbook(sde, t, dim):
    """One component N(μ, Σ): p_t = N(αμ, α²Σ + σ²I), score = -(α²Σ+σ²I)⁻¹(x - αμ)."""
    g = torch.Generator().manual_seed(dim)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    a_mat = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    cov = a_mat @ a_mat.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)
    gm = GaussianMixture([1.0], mu[None], cov[None], sde=sde)
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    c_t = a**2 * cov + s**2 * torch.eye(dim, dtype=torch.float64)
    x = torch.randn(7, dim, generator=g, dtype=torch.float64)
    expected_score = -torch.linalg.solve(c_t, (x - a * mu).T).T
    torch.testing.assert_close(gm.score(x, t), expected_score, rtol=1e-9, atol=1e-10)
    ref = torch.distributions.MultivariateNormal(a * mu, c_t).log_prob(x)
    torch.testing.assert_close(gm.log_prob(x, t), ref, rtol=1e-10, atol=1e-10)


@given(mixtures(max_dim=3), st.floats(0.05, 0.95))
@settings(max_examples=25)
def test_probability_flow_drift_transports_gaussian_marginal(gm, t):
    """For one Gaussian component, the probability-flow drift f̃(x) = A x + b is affine; the
    moment ODEs it implies, dm/dt = A m + b and dC/dt = A C + C Aᵀ, must equal the time
    derivatives of the closed-form m(t) = α μ, C(t) = α²Σ + σ²I (central differences, h = 1e-5:
    truncation error O(h²) ~ 1e-8 relative, so 1e-5 relative tolerance)."""
    single = GaussianMixture([1.0], gm.means[:1], gm.covs[:1], sde=gm.sde)
    sde, dim = gm.sde, gm.dim
    if sde.discrete_steps is not None:  # stay inside one constant-β step for the difference
        n = sde.discrete_steps
        t = (math.floor(t * n) + 0.5) / n

    tt = torch.tensor(t, dtype=torch.float64)

    def drift(x):  # the library's one flow drift, dx/d(clock) times the clock's rate: dx/dt
        return flow_drift(single, x, tt) * float(sde.clock_rate(tt))

    x = torch.zeros(1, dim, dtype=torch.float64)
    b = drift(x)[0]
    a_mat = torch.autograd.functional.jacobian(lambda y: drift(y[None])[0], x[0])
    m, c = single.marginal_params(t)
    m, c = m[0], c[0]
    h = 1e-5 / (sde.discrete_steps or 1)
    (m_plus, c_plus), (m_minus, c_minus) = single.marginal_params(t + h), single.marginal_params(t - h)
    dm = (m_plus[0] - m_minus[0]) / (2 * h)
    dc = (c_plus[0] - c_minus[0]) / (2 * h)
    torch.testing.assert_close(a_mat @ m + b, dm, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a_mat @ c + c @ a_mat.T, dc, rtol=1e-5, atol=1e-7)


def test_samples_have_the_mixture_moments():
    """n = 20000 samples: component fractions within 5 binomial standard errors
    (√(w(1-w)/n) ≤ 0.0035) and per-component means within 5 standard errors √(Σ_ii / n_k)."""
    gm = GaussianMixture([0.2, 0.8], [[2.0, 0.0, 1.0], [-1.0, 1.0, 0.0]], [[0.5, 0.1, 0.2], [0.3, 0.3, 0.3]])
    n = 20000
    x, labels = gm.sample(n, generator=torch.Generator().manual_seed(0), return_labels=True)
    frac = (labels == 0).double().mean()
    assert abs(float(frac) - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    for k in range(2):
        xk = x[labels == k]
        se = torch.sqrt(torch.diagonal(gm.covs[k]) / len(xk))
        assert torch.all((xk.mean(0) - gm.means[k]).abs() < 5 * se)


def test_event_shape_and_dtype():
    gm = GaussianMixture.random(4, 2, seed=3, event_shape=(1, 2, 2))
    x = gm.sample(3, dtype=torch.float32)
    assert x.shape == (3, 1, 2, 2) and x.dtype == torch.float32
    assert gm.eps(x, 0.5).shape == x.shape and gm.eps(x, 0.5).dtype == torch.float32
    assert gm.log_prob(x, 0.5).shape == (3,)
    # x0 (Tweedie) for one Gaussian is linear: E[x0 | xt] = μ + Σ α C⁻¹ (xt - αμ)
    one = GaussianMixture([1.0], [[0.5, -0.5]], [[[0.3, 0.1], [0.1, 0.2]]])
    xt = torch.randn(4, 2, dtype=torch.float64)
    a, s = float(one.sde.alpha(0.4)), float(one.sde.sigma(0.4))
    c = a**2 * one.covs[0] + s**2 * torch.eye(2, dtype=torch.float64)
    expected = one.means[0] + (a * one.covs[0] @ torch.linalg.solve(c, (xt - a * one.means[0]).T)).T
    torch.testing.assert_close(one.x0(xt, 0.4), expected, rtol=1e-9, atol=1e-10)


def test_ring_and_with_sde():
    ring = GaussianMixture.ring()
    assert ring.dim == 2 and ring.n_components == 8
    torch.testing.assert_close(ring.means.norm(dim=1), torch.ones(8, dtype=torch.float64))
    other = ring.with_sde(VPSDE.cosine())
    assert other.sde.schedule.__class__.__name__ == "CosineSchedule"
    torch.testing.assert_close(other.means, ring.means)


@pytest.mark.parametrize("args, match", [
    (([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]]), "positive definite"),
    (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
    (([1.0, -1.0], [[0.0], [1.0]], 1.0), "weights"),
    (([1.0], [0.0, 1.0], 1.0), "means"),
    (([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), "covs has shape"),
])
def test_bad_mixture_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


def test_bad_event_shape_and_input():
    with pytest.raises(ValueError, match="event_shape"):
        GaussianMixture.random(4, 2, event_shape=(3,))
    with pytest.raises(ValueError, match="expected"):
        GaussianMixture.ring().log_prob(torch.zeros(2, 3))
