"""Deterministic samplers against closed forms: the probability-flow map of Gaussian data.

For data ``N(m, Σ)``, ``Σ = U diag(λ) Uᵀ``, and any VP schedule (``σ² = 1 - α²``), ``p_t`` is
``N(α_t m, U diag(v_t) Uᵀ)`` with ``v_t = α_t² λ + σ_t²``, and the probability-flow ODE
``dx/dt = -½β (x - ε*/σ)`` moves ``y = Uᵀ(x - α_t m)`` as ``dy/dt = ½ (d log v_t/dt) y``, so

    x_s = α_s m + U diag(√(v_s / v_t)) Uᵀ (x_t - α_t m)           (exact, any s, t).

Fixed-step solvers are compared with it to measure their order (fitted slope of log error
against log steps), DDIM (η = 0) to show it is a first-order ODE solver, dopri5 and the
encoder to check accuracy, and the round trip latent → data → latent on mixtures.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, CosineSchedule, GaussianMixture, LinearSchedule
from scoresde.samplers import sample
from scoresde.samplers.ode import encode
from tests.closed_forms import gaussian_flow_map
from tests.strategies import schedules

T_EPS = 1e-3


@st.composite
def linear_schedules(draw):
    """Linear with random β_min, β_max: β(t) is smooth, so a fixed-step method shows its order.
    (The discrete schedule's β(t) jumps at every i/N; the cosine schedule's clipped β(t) has
    a kink at t_c ≈ 0.998 where β' jumps by ~10⁶: midpoint and rk4 errors there depend on
    where the grid falls relative to t_c and do not settle into a clean rate.)"""
    beta_min = draw(st.floats(0.05, 1.0))
    return LinearSchedule(beta_min, beta_min + draw(st.floats(5.0, 30.0)))


@st.composite
def continuous_schedules(draw):
    """Linear or cosine."""
    if draw(st.booleans()):
        return draw(linear_schedules())
    return CosineSchedule(s=draw(st.floats(1e-3, 0.05)))


def gaussians(sched_strategy):
    """A single Gaussian in 1–6 dims with a random mean and full covariance, on a drawn schedule."""
    return st.builds(lambda sched, dim, seed: GaussianMixture.random(dim, 1, seed=seed,
                                                                     sde=VPSDE(sched)),
                     sched_strategy, st.integers(1, 6), st.integers(0, 10**6))


def _x_T(gm, n=16, seed=0):
    return gm.sample_t(n, 1.0, generator=torch.Generator().manual_seed(seed))


def _slope(steps, errors) -> float:
    """Least-squares slope of log error against log steps (= minus the observed order)."""
    lx = torch.log(torch.tensor(steps, dtype=torch.float64))
    ly = torch.log(torch.tensor(errors, dtype=torch.float64))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx**2).sum())


# Fixed-step ODE solvers: measured order ------------------------------------------------------
@pytest.mark.parametrize("method,steps,order_range", [
    ("euler", [40, 80, 160, 320], (0.85, 1.2)),
    ("midpoint", [40, 80, 160, 320], (1.8, 2.4)),
    ("rk4", [20, 40, 80, 160], (3.0, 4.6)),  # torchdiffeq's rk4 is the 3/8 rule, order 4
])
@given(gm=gaussians(linear_schedules()))
@settings(max_examples=4)
def test_fixed_step_ode_order(gm, method, steps, order_range):
    x_T = _x_T(gm)
    exact = gaussian_flow_map(gm, x_T, 1.0, T_EPS)
    errors = [float((sample(gm, "ode", x_T, steps=k, method=method, denoise=False,
                            t_eps=T_EPS).x - exact).abs().max()) for k in steps]
    order = -_slope(steps, errors)
    assert order_range[0] <= order <= order_range[1], (errors, order)


@given(gm=gaussians(continuous_schedules()))
@settings(max_examples=4)
def test_ddim_eta0_is_a_first_order_ode_solver(gm):
    """Song, Meng & Ermon 2021, §4.3: DDIM with η = 0 discretises the probability-flow ODE;
    its per-sample error against the exact map falls like 1/K."""
    x_T = _x_T(gm)
    exact = gaussian_flow_map(gm, x_T, 1.0, T_EPS)
    steps = [25, 50, 100, 200]
    errors = [float((sample(gm, "ddim", x_T, steps=k, denoise=False, t_eps=T_EPS).x - exact)
                    .abs().max()) for k in steps]
    assert 0.8 <= -_slope(steps, errors) <= 1.3, errors


@given(st.integers(2, 4), st.integers(1, 5), st.integers(0, 10**6))
@settings(max_examples=3)
def test_ddim_eta0_converges_to_the_ode_solution_on_mixtures(k, dim, seed):
    """Same x_T, no closed form: DDIM's distance to a tight dopri5 solve shrinks at first order."""
    gm = GaussianMixture.random(dim, k, seed=seed)
    x_T = _x_T(gm, seed=seed)
    ref = sample(gm, "ode", x_T, steps=1, denoise=False, rtol=1e-9, atol=1e-9).x
    steps = [25, 50, 100, 200]
    errors = [float((sample(gm, "ddim", x_T, steps=k, denoise=False).x - ref).abs().max())
              for k in steps]
    assert 0.8 <= -_slope(steps, errors) <= 1.3, errors


# Adaptive solves, encoding and the round trip ------------------------------------------------
@given(gm=gaussians(schedules(max_n=1000).filter(lambda s: getattr(s, "N", 1000) >= 20)))
@settings(max_examples=6)
def test_dopri5_matches_the_exact_map(gm):
    x_T = _x_T(gm)
    t_eps = gm.sde.sampling_eps
    exact = gaussian_flow_map(gm, x_T, 1.0, t_eps)
    res = sample(gm, "ode", x_T, steps=1, denoise=False)  # rtol = atol = 1e-5
    # global error of a 1e-5 local tolerance over O(10) steps, relative to |x| ≲ 3
    assert float((res.x - exact).abs().max()) < 3e-4
    den = sample(gm, "ode", x_T, steps=1)
    torch.testing.assert_close(den.x, gm.x0(res.x, t_eps))


@given(gm=gaussians(continuous_schedules()))
@settings(max_examples=4)
def test_encode_matches_the_exact_inverse_map(gm):
    x0 = gm.sample_t(16, T_EPS, generator=torch.Generator().manual_seed(1))
    z = encode(gm, x0, t_eps=T_EPS, rtol=1e-7, atol=1e-7)
    assert z.t_end == 1.0
    # ~1e-6 of the latent's scale (≲ 4) from rtol = 1e-7; up to ~10x more on the cosine
    # schedule, whose clipped β(t) has a kink at t_c ≈ 0.998 (measured 2e-5)
    torch.testing.assert_close(z.x, gaussian_flow_map(gm, x0, T_EPS, 1.0), rtol=0, atol=1e-4)


@given(schedules(max_n=1000).filter(lambda s: getattr(s, "N", 1000) >= 20),
       st.integers(2, 4), st.integers(1, 6), st.integers(0, 10**6))
@settings(max_examples=6)
def test_round_trip_data_latent_data(schedule, k, dim, seed):
    """encode then decode (dopri5, rtol = atol = 1e-7, float64) recovers the data to ~1e-4."""
    gm = GaussianMixture.random(dim, k, seed=seed, sde=VPSDE(schedule))
    t_eps = gm.sde.sampling_eps
    x0 = gm.sample_t(16, t_eps, generator=torch.Generator().manual_seed(seed))
    opts = {"rtol": 1e-7, "atol": 1e-7, "t_eps": t_eps}
    z = encode(gm, x0, **opts).x
    back = sample(gm, "ode", z, steps=1, denoise=False, **opts).x
    assert float((back - x0).abs().max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_float32_data_with_float64_state(dtype):
    gm = GaussianMixture.ring()
    x0 = gm.sample_t(32, T_EPS, generator=torch.Generator().manual_seed(0), dtype=dtype)
    z = encode(gm, x0, t_eps=T_EPS, rtol=1e-7, atol=1e-7)
    back = sample(gm, "ode", z.x, steps=1, denoise=False, t_eps=T_EPS, rtol=1e-7, atol=1e-7)
    assert z.x.dtype == back.x.dtype == dtype
    tol = 1e-4 if dtype == torch.float64 else 1e-4 + 10 * torch.finfo(torch.float32).eps
    assert float((back.x - x0).abs().max()) < tol
    assert math.isfinite(float(z.x.abs().max()))
