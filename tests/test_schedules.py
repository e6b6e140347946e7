"""Schedules and VP-SDE coefficients against their closed forms (docs/math.md, "The VP-SDE")."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, LinearSchedule
from tests.strategies import random_beta_schedules, sdes

GRID = torch.linspace(0, 1, 257, dtype=torch.float64)


@given(sdes())
@settings(max_examples=60)
def test_alpha_bar_decreasing_and_variance_preserving(sde):
    ab = sde.alpha_bar(GRID)
    assert torch.all(ab[1:] <= ab[:-1]), "ᾱ must be non-increasing"
    assert float(ab[0]) == 1.0
    a, s = sde.alpha(GRID), sde.sigma(GRID)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(GRID), rtol=0, atol=1e-14)
    assert torch.all(s[1:] > 0), "σ(t) > 0 for t > 0"
    torch.testing.assert_close(-sde.integrated_beta(GRID), torch.log(ab), rtol=1e-12, atol=1e-14)


@given(sdes(), st.sampled_from([1e-9, 1e-8, 1e-7]))
@settings(max_examples=60)
def test_sigma_accurate_for_tiny_t(sde, t):
    """σ² = 1 - e^{-B} = B - B²/2 + O(B³): with B ~ 1e-8 the series is exact to ~1e-16 relative,
    so σ must match it to 1e-10 relative (a naive ``1 - exp(-B)`` has relative error ~1e-8)."""
    b = sde.integrated_beta(torch.tensor(t, dtype=torch.float64))
    assert 0 < float(b) < 1e-3
    series = b - b**2 / 2 + b**3 / 6
    sigma = sde.sigma(torch.tensor(t, dtype=torch.float64))
    assert float(sigma) > 0
    assert abs(float(sigma**2 / series) - 1) < 1e-10


@given(st.floats(0.01, 1.0), st.floats(0.5, 40.0), st.floats(0.0, 1.0))
def test_linear_closed_form(beta_min, span, t):
    sch = LinearSchedule(beta_min, beta_min + span)
    tt = torch.tensor(t, dtype=torch.float64)
    assert math.isclose(float(sch.integrated_beta(tt)), beta_min * t + 0.5 * t * t * span,
                        rel_tol=1e-13, abs_tol=1e-15)
    assert math.isclose(float(sch.beta(tt)), beta_min + t * span, rel_tol=1e-13)


@given(sdes(), st.floats(1e-3, 0.999))
@settings(max_examples=60)
def test_beta_is_derivative_of_integrated_beta(sde, t):
    """β(t) = dB/dt, checked by a central difference of width h (error O(h²β'') ≪ 1e-4 rel.)."""
    if sde.discrete_steps is not None:  # piecewise linear: derivative inside a step is exact
        n = sde.discrete_steps
        t = (math.floor(t * n) + 0.5) / n
    h = 1e-6
    tt = torch.tensor([t - h, t + h], dtype=torch.float64).clamp(0, 1)
    b = sde.integrated_beta(tt)
    fd = float(b[1] - b[0]) / float(tt[1] - tt[0])
    assert math.isclose(fd, float(sde.beta(torch.tensor(t, dtype=torch.float64))), rel_tol=1e-4)


def test_cosine_matches_nichol_dhariwal_and_is_clipped():
    sch = CosineSchedule()
    sde = VPSDE(sch)
    t = torch.linspace(0, sch.t_clip, 101, dtype=torch.float64)
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(sde.alpha_bar(t), f / f[0], rtol=1e-10, atol=1e-15)
    assert 0.997 < sch.t_clip < 0.999
    assert float(sde.beta(torch.tensor(1.0))) == 1000.0
    ab1 = float(sde.alpha_bar(torch.tensor(1.0)))
    assert 1e-7 < ab1 < 1e-5 and math.isfinite(float(sde.log_snr(torch.tensor(1.0))))


@given(random_beta_schedules())
@settings(max_examples=50)
def test_discrete_alpha_bar_is_cumulative_product(sch):
    """ᾱ(i/N) = Π_{j≤i}(1-β_j) to 1e-12 relative in float64 (log-sum form: N·1e-16 error)."""
    sde = VPSDE(sch)
    n = sch.N
    t = torch.arange(n + 1, dtype=torch.float64) / n
    expected = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - sch.betas, 0)])
    torch.testing.assert_close(sde.alpha_bar(t), expected, rtol=1e-12, atol=0)


@given(random_beta_schedules(), st.data())
@settings(max_examples=50)
def test_discrete_transition_is_ddpm_forward_step(sch, data):
    """q(x_{t_i} | x_{t_{i-1}}) = N(√(1-β_i) x, β_i I): coefficients to 1e-9 relative (the step's
    ΔB is a difference of cumulative sums: error ~ B·1e-16 relative to β_i ≥ 1e-6)."""
    sde = VPSDE(sch)
    n = sch.N
    i = data.draw(st.integers(1, n))
    m, v = sde.transition((i - 1) / n, i / n)
    beta_i = float(sch.betas[i - 1])
    assert math.isclose(float(m), math.sqrt(1 - beta_i), rel_tol=1e-9)
    assert math.isclose(float(v), beta_i, rel_tol=1e-9)
    # β(t) is constant inside the step and equals -N log(1-β_i)
    tt = torch.tensor([(i - 1 + 1e-3) / n, (i - 0.5) / n, i / n], dtype=torch.float64)
    torch.testing.assert_close(sde.beta(tt), torch.full_like(tt, -n * math.log1p(-beta_i)))


@given(sdes(), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
@settings(max_examples=60)
def test_transitions_compose_into_marginal(sde, a, b, c):
    """Chapman–Kolmogorov: q(t|s) ∘ q(s|0) = q(t|0): α(t) = m(s,t)α(s), σ(t)² = m²σ(s)² + v."""
    s, t = sorted([a, b])
    m, v = sde.transition(s, t)
    torch.testing.assert_close(m * sde.alpha(s), sde.alpha(t), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(m**2 * sde.sigma(s) ** 2 + v, sde.sigma(t) ** 2, rtol=1e-9, atol=1e-14)


def test_linear_vp_close_to_ddpm_chain():
    """The linear VP-SDE (0.1, 20) vs DDPM's chain at N = 1000 (docs/math.md: close, not equal).

    Measured: max |ᾱ_lin(i/N) - ᾱ_DDPM,i| = 8.1e-4 (at t = 0.141), max |log ᾱ gap| = 0.068
    (at t = 1, from Σβ_j²/2), max |β_lin(t_i)/N - β_i| = 1.99e-5, max relative σ gap 4.9%
    (at t = 1/N: σ² = 1.1e-4 vs β_1 = 1e-4)."""
    lin, ddpm = VPSDE.linear(), VPSDE.ddpm()
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    gap = (lin.alpha_bar(t) - ddpm.alpha_bar(t)).abs().max()
    assert 7e-4 < float(gap) < 9e-4
    log_gap = (lin.integrated_beta(t) - ddpm.integrated_beta(t)).abs().max()  # |log ᾱ gap|
    assert 0.06 < float(log_gap) < 0.075
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert float((lin.beta(t) / 1000 - betas).abs().max()) < 2e-5


def test_ddpm_constructors():
    lin = DiscreteSchedule.ddpm_linear()
    assert lin.N == 1000 and float(lin.betas[0]) == pytest.approx(1e-4) and float(lin.betas[-1]) == 0.02
    cos = DiscreteSchedule.ddpm_cosine(1000)
    assert float(cos.betas.max()) <= 0.999
    # the cosine β_i reproduce the cosine ᾱ at grid points (before the clip bites)
    t = torch.arange(0, 900, dtype=torch.float64) / 1000
    torch.testing.assert_close(VPSDE(cos).alpha_bar(t), VPSDE.cosine().alpha_bar(t), rtol=1e-9, atol=0)


@pytest.mark.parametrize("make, match", [
    (lambda: LinearSchedule(1.0, 0.5), "beta_max"),
    (lambda: LinearSchedule(-0.1, 20), "beta_min"),
    (lambda: LinearSchedule(0.1, float("inf")), "beta_max"),
    (lambda: CosineSchedule(s=0.0), "s="),
    (lambda: CosineSchedule(beta_max=0.01), "beta_max"),
    (lambda: DiscreteSchedule([0.1, 1.0]), r"betas\[1\]"),
    (lambda: DiscreteSchedule([0.0]), r"betas\[0\]"),
    (lambda: DiscreteSchedule([]), "empty"),
    (lambda: DiscreteSchedule.ddpm_linear(0), "n_steps"),
    (lambda: VPSDE("linear"), "schedule"),
])
def test_bad_schedule_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
