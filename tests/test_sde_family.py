"""The SDE family (VP, sub-VP, VE) against closed forms and against Monte Carlo of each
forward SDE solved by torchsde.

Closed forms: ``λ = log(α²/σ²)`` and its inverse, ``f = d log α/dt``, ``g² = dσ²/dt - 2 f σ²``,
``g²/σ² = -dλ/dt``, the transition ``(m, v) = (α_t/α_s, σ_t² - m² σ_s²)``, sub-VP ↔ VP at equal
mean scale, SMLD's discrete levels, VE's prior and its mismatch with the true ``p_1``.

Monte Carlo: from fixed points ``x_s`` (three per test, one per coordinate), ``n = 10 000``
paths of the forward SDE ``dx = f(t) x dt + g(t) dw`` from ``s`` to ``t`` (torchsde, Rößler's
SRI2 "srk", 100 steps; on discrete schedules the steps align with the grid ``i/N`` where the
coefficients jump; the cosine schedule, whose β reaches 1000 near ``t = 1``, is simulated up to
``t = 0.9``). The sample mean and variance must match ``N(m x_s, v)`` within 5 Monte Carlo
standard errors (``√(v/n)`` for the mean, ``v √(2/(n-1))`` for the variance: a chance failure
has probability < 1e-6 per check, and the fixed seeds make every run identical) plus a solver
allowance of 1e-3 relative.

The SDE family's shared interface at its edges, against closed forms: the probability-flow
coefficients and the network's input scale of every SDE, the ODE clocks of VP/sub-VP (``B``),
continuous VE (``t``) and SMLD (``σ²``) with their inverses, the ``[lo, hi]`` clamps of the
log-SNR and clock inverses and their defaults, ``GaussianSDE``'s own derived drift for a
subclass that gives only the interface, and the ``repr``. (Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from scoresde import (
    VESDE,
    VPSDE,
    CosineSchedule,
    DiscreteSigmas,
    GaussianMixture,
    GeometricSigmas,
    SubVPSDE,
)
from scoresde.core.sde import SDE_KINDS, GaussianSDE
from tests.fakes import Counting

from .strategies import all_sdes, schedules, ve_sdes

N_PATHS = 10_000
SOLVER_STEPS = 100


# --- closed forms -------------------------------------------------------------------------

def _continuous(sde) -> bool:
    return sde.discrete_steps is None


@settings(max_examples=60)
@given(sde=all_sdes(), t=st.floats(1e-4, 1.0))
def test_log_snr_and_its_inverse(sde, t):
    a, s = sde.alpha(t), sde.sigma(t)
    lam = sde.log_snr(t)
    assert torch.allclose(lam, torch.log(a**2 / s**2), rtol=1e-12, atol=1e-10)
    # λ is strictly decreasing (on discrete schedules too), so the inverse is exact everywhere.
    assert abs(float(sde.time_for_log_snr(lam)) - t) <= 1e-9
    lo = min(2 * t, 1.0)  # outside [lo, hi] the inverse is clamped to the interval
    assert float(sde.time_for_log_snr(lam, lo=lo)) == pytest.approx(lo, abs=1e-9)


@settings(max_examples=40)
@given(sde=all_sdes(), t=st.floats(0.01, 0.99))
def test_drift_diffusion_and_weight_are_the_derivatives_of_the_marginals(sde, t):
    """``f = d log α/dt``, ``g² = dσ²/dt - 2 f σ²``, ``g²/σ² = -dλ/dt`` by central differences
    (h = 1e-6, relative error ~1e-8; on a discrete schedule the point is moved off the grid)."""
    if not _continuous(sde):
        n = sde.discrete_steps
        t = (math.floor(t * n) + 0.5) / n  # mid-interval: the coefficients are smooth there
    h = 1e-6 * min(1.0, 0.4 / (sde.discrete_steps or 1))
    tp, tm = torch.tensor(t + h, dtype=torch.float64), torch.tensor(t - h, dtype=torch.float64)
    f = (torch.log(sde.alpha(tp)) - torch.log(sde.alpha(tm))) / (2 * h)
    ds2 = (sde.sigma(tp) ** 2 - sde.sigma(tm) ** 2) / (2 * h)
    dlam = (sde.log_snr(tp) - sde.log_snr(tm)) / (2 * h)
    s2 = sde.sigma(t) ** 2
    assert torch.allclose(sde.drift_coef(t), f, rtol=1e-5, atol=1e-7)
    assert torch.allclose(sde.g2(t), ds2 - 2 * f * s2, rtol=1e-5, atol=1e-7)
    assert torch.allclose(sde.diffusion(t) ** 2, sde.g2(t), rtol=1e-12)
    assert torch.allclose(sde.likelihood_weight(t), -dlam, rtol=1e-5)
    x = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    assert torch.allclose(sde.drift(x, t), sde.drift_coef(t) * x, rtol=1e-12)


@settings(max_examples=60)
@given(sde=all_sdes(), s=st.floats(0.0, 1.0), t=st.floats(0.0, 1.0))
def test_transition_composes_to_the_marginal(sde, s, t):
    """``m = α_t/α_s``, ``v = σ_t² - m² σ_s²`` (computed without cancellation, so compared
    relative to ``σ_t²``), and the two-step composition ``0 → s → t`` is the one-step one."""
    s, t = min(s, t), max(s, t)
    m, v = sde.transition(s, t)
    a_s, a_t, sg_s, sg_t = sde.alpha(s), sde.alpha(t), sde.sigma(s), sde.sigma(t)
    assert torch.allclose(m, a_t / a_s, rtol=1e-12)
    assert float(v) >= 0
    assert abs(float(v - (sg_t**2 - m**2 * sg_s**2))) <= 1e-12 * float(sg_t**2) + 1e-300
    m1, v1 = sde.transition(0.0, s)
    m2, v2 = sde.transition(s, t)
    m0, v0 = sde.transition(0.0, t)
    assert torch.allclose(m1 * m2, m0, rtol=1e-12)
    assert abs(float(m2**2 * v1 + v2 - v0)) <= 1e-12 * float(sg_t**2) + 1e-300
    with pytest.raises(ValueError, match="s ≤ t"):
        sde.transition(1.0, 0.5)


@settings(max_examples=40)
@given(schedule=schedules(), t=st.floats(1e-4, 1.0))
def test_subvp_against_vp_at_equal_mean_scale(schedule, t):
    """Same schedule ⇒ same ``α``; sub-VP's σ is VP's σ² (its variance is VP's variance
    squared), its log-SNR is higher by ``-log σ_VP²``, its ``g²`` is VP's times ``1 - α⁴``,
    and its transitions are never noisier than VP's."""
    vp, sub = VPSDE(schedule), SubVPSDE(schedule)
    assert torch.equal(sub.alpha(t), vp.alpha(t))
    assert torch.allclose(sub.sigma(t), vp.sigma(t) ** 2, rtol=1e-12)
    assert torch.allclose(sub.log_snr(t), vp.log_snr(t) - torch.log(vp.sigma(t) ** 2), rtol=1e-12, atol=1e-12)
    assert torch.allclose(sub.g2(t), vp.g2(t) * (1 - vp.alpha(t) ** 4), rtol=1e-10)
    assert torch.equal(sub.drift_coef(t), vp.drift_coef(t))
    _, v_sub = sub.transition(t / 2, t)
    _, v_vp = vp.transition(t / 2, t)
    assert float(v_sub) <= float(v_vp) * (1 + 1e-12)
    assert sub.prior_std == vp.prior_std == 1.0


def test_the_three_sdes_by_their_defining_equations():
    """Song et al. 2021, eqs. 11, 29, 30, at a few times, written out by hand."""
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    b = 0.1 * t + 0.5 * t**2 * 19.9
    beta = 0.1 + t * 19.9
    vp, sub = VPSDE.linear(), SubVPSDE.linear()
    assert torch.allclose(vp.sigma(t) ** 2, 1 - torch.exp(-b), atol=1e-15)
    assert torch.allclose(sub.sigma(t), 1 - torch.exp(-b), atol=1e-15)
    assert torch.allclose(sub.g2(t), beta * (1 - torch.exp(-2 * b)), atol=1e-13)
    ve = VESDE.geometric(0.01, 50.0)
    assert torch.allclose(ve.sigma(t), 0.01 * (50.0 / 0.01) ** t, rtol=1e-14)
    assert torch.allclose(ve.g2(t), ve.sigma(t) ** 2 * 2 * math.log(50.0 / 0.01), rtol=1e-14)
    assert torch.equal(ve.alpha(t), torch.ones(3, dtype=torch.float64))
    assert ve.sigma(0.0) == pytest.approx(0.01) and ve.sigma(1.0) == pytest.approx(50.0)
    assert ve.sampling_eps == 1e-5 and sub.sampling_eps == vp.sampling_eps == 1e-3
    assert [s.kind for s in (vp, sub, ve)] == list(SDE_KINDS)
    assert all(isinstance(s, GaussianSDE) for s in (vp, sub, ve))
    assert vp.variance_preserving and not sub.variance_preserving and not ve.variance_preserving


def test_time_for_sigma_inverts_sigma():
    for sde in (VPSDE.linear(), SubVPSDE.cosine(), VESDE.geometric(0.01, 10.0), VESDE.smld(50, 0.01, 10.0),
                SubVPSDE.ddpm(100, 1e-3, 0.2)):
        for t in (0.003, 0.4, 0.97):
            assert sde.time_for_sigma(float(sde.sigma(t))) == pytest.approx(t, rel=1e-9)
        with pytest.raises(ValueError, match="sigma=20.0"):
            sde.time_for_sigma(20.0)


# --- SMLD's discrete levels, exactly ----------------------------------------------------------

@settings(max_examples=30)
@given(n=st.integers(1, 1000), lo=st.floats(1e-3, 1.0), ratio=st.floats(1.5, 1e4))
def test_smld_levels_are_exact_ve_steps(n, lo, ratio):
    """``σ(i/N) = σ_i`` (geometric levels), ``σ(0) = 0``, and the VE transition from
    ``(i-1)/N`` to ``i/N`` is SMLD's perturbation step ``N(x, (σ_i² - σ_{i-1}²) I)``."""
    sde = VESDE.smld(n, lo, lo * ratio)
    levels = torch.exp(torch.linspace(math.log(lo), math.log(lo * ratio), n, dtype=torch.float64)) \
        if n > 1 else torch.tensor([lo * ratio], dtype=torch.float64)
    grid = torch.arange(n + 1, dtype=torch.float64) / n
    sig = sde.sigma(grid)
    assert float(sig[0]) == 0.0
    assert torch.allclose(sig[1:], levels, rtol=1e-13)
    m, v = sde.transition(grid[:-1], grid[1:])
    assert torch.equal(m, torch.ones(n, dtype=torch.float64))
    prev = torch.cat([levels.new_zeros(1), levels[:-1]])
    assert torch.allclose(v, levels**2 - prev**2, rtol=1e-12)
    assert sde.discrete_steps == n and sde.sampling_eps == 1 / n
    assert sde.prior_std == pytest.approx(lo * ratio, rel=1e-14)
    # g² is N (σ_i² - σ_{i-1}²) on ((i-1)/N, i/N]: piecewise constant, like DDPM's β.
    mid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert torch.allclose(sde.g2(mid), n * (levels**2 - prev**2), rtol=1e-12)


def test_discrete_sigmas_reject_bad_levels():
    for bad in ([], [0.1, 0.05], [0.0, 1.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="sigmas"):
            DiscreteSigmas(bad)
    with pytest.raises(ValueError, match="sigma_max"):
        GeometricSigmas(1.0, 0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE.smld(10, -1.0, 5.0)
    with pytest.raises(ValueError, match="SigmaSchedule"):
        VESDE(VPSDE.linear().schedule)


# --- the prior and VE's mismatch ---------------------------------------------------------------

@settings(max_examples=20)
@given(sde=all_sdes())
def test_prior_sample_and_log_prob(sde):
    z = sde.prior_sample((4000, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = sde.prior_std
    # sample std within 5 standard errors (s/√(2n) per coordinate, 12000 draws)
    assert abs(float(z.std()) - s) <= 5 * s / math.sqrt(2 * z.numel())
    f64 = dict(dtype=torch.float64)
    ref = torch.distributions.Normal(torch.tensor(0.0, **f64), torch.tensor(s, **f64)).log_prob(z).sum(1)
    assert torch.allclose(sde.prior_log_prob(z), ref, rtol=1e-12, atol=1e-12)
    assert s == pytest.approx(float(sde.sigma(1.0)) if sde.kind == "ve" else 1.0, rel=1e-14)


def test_ve_prior_mismatch_is_the_closed_form_kl():
    """The VE prior ``N(0, σ_max² I)`` is not the marginal at ``t = 1``: for data
    ``N(μ, s² I)`` in ``D`` dimensions ``p_1 = N(μ, (s² + σ_max²) I)`` and
    ``KL(p_1 ‖ prior) = ½ Σ_d [r - log(1 + r) + μ_d²/σ_max²]``, ``r = s²/σ_max²``. A Monte Carlo
    estimate ``E_{p_1}[log p_1 - log prior]`` from the oracle (20 000 draws) must match it within
    5 standard errors; the VP-SDE's mismatch on the same data is far smaller (``α(1) = 6.7e-3``)."""
    mu, s2 = torch.tensor([3.0, -1.0, 0.5]), 0.2
    ve = VESDE.geometric(0.01, 5.0)
    gm = GaussianMixture([1.0], mu[None], s2, sde=ve)
    r = s2 / 25.0
    kl = 0.5 * float((r - math.log1p(r)) * 3 + (mu.double() ** 2).sum() / 25.0)
    z = gm.sample_t(N_PATHS, 1.0, generator=torch.Generator().manual_seed(0))
    diff = gm.log_prob(z, 1.0) - ve.prior_log_prob(z)
    se = float(diff.std()) / math.sqrt(N_PATHS)
    assert abs(float(diff.mean()) - kl) <= 5 * se, (float(diff.mean()), kl, se)
    assert kl > 20 * se  # the mismatch is there, and measured
    # the marginal at t = 1 keeps the data's mean: x_0 + σ_max ε, not N(0, σ_max²)
    assert torch.allclose(z.mean(0), mu.double(), atol=5 * 5.0 / math.sqrt(N_PATHS))
    vp = gm.with_sde(VPSDE.linear())
    zv = vp.sample_t(N_PATHS, 1.0, generator=torch.Generator().manual_seed(0))
    kl_vp = float((vp.log_prob(zv, 1.0) - vp.sde.prior_log_prob(zv)).mean())
    assert abs(kl_vp) < kl / 10


# --- Monte Carlo of the forward SDE (torchsde) -------------------------------------------------

class _Forward(torch.nn.Module):
    """``dx = f(t) x dt + g(t) dw``, diagonal (additive) noise, Itô."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, sde, lo: float = 0.0, hi: float = 1.0):
        super().__init__()
        self.sde, self.lo, self.hi = sde, lo, hi

    def _t(self, t):  # inside [lo, hi]: a discrete schedule's interval, its jumps excluded
        return torch.as_tensor(float(t), dtype=torch.float64).clamp(self.lo, self.hi)

    def f(self, t, y):
        return self.sde.drift_coef(self._t(t)).to(y) * y

    def g(self, t, y):
        return self.sde.diffusion(self._t(t)).to(y).expand(y.shape)


def _simulate(sde, x_s: torch.Tensor, s: float, t: float, seed: int) -> torch.Tensor:
    """``N_PATHS`` draws of ``x_t`` given ``x_s`` (one column per starting value)."""
    y0 = x_s.to(torch.float64).expand(N_PATHS, -1).clone()
    n = sde.discrete_steps
    steps = SOLVER_STEPS if n is None else round((t - s) * n) * max(2, SOLVER_STEPS // n)
    return _sdeint(sde, y0, s, t, steps, seed)


def _sdeint(sde, y0, s: float, t: float, steps: int, seed: int) -> torch.Tensor:
    """``steps`` equal SRK steps from ``s`` to ``t``: the output grid is the step grid and ``dt`` a
    hair above its spacing, so torchsde takes exactly one step per interval (a ``dt`` that does not
    divide ``t - s`` in floating point can make the Brownian interval split without end)."""
    n = sde.discrete_steps
    if n is not None:  # piecewise-constant coefficients: one solve per grid interval, inside it
        i0, i1 = round(s * n), round(t * n)
        for k, i in enumerate(range(i0, i1)):
            lo, hi = i / n, (i + 1) / n
            y0 = _solve(_Forward(sde, lo + 1e-9 / n, hi - 1e-9 / n), y0, lo, hi, steps // (i1 - i0), seed + k)
        return y0
    return _solve(_Forward(sde), y0, s, t, steps, seed)


def _solve(func, y0, s: float, t: float, steps: int, seed: int) -> torch.Tensor:
    bm = torchsde.BrownianInterval(t0=s, t1=t, size=y0.shape, dtype=torch.float64, entropy=seed,
                                   levy_area_approximation="space-time")
    ts = torch.linspace(s, t, steps + 1, dtype=torch.float64)
    return torchsde.sdeint(func, y0, ts, bm=bm, method="srk", dt=(t - s) / steps * (1 + 1e-9))[-1]


def _check_gaussian_draws(x: torch.Tensor, mean: torch.Tensor, var: float):
    n = x.shape[0]
    tol_mean = 5 * math.sqrt(var / n) + 1e-3 * (math.sqrt(var) + float(mean.abs().max()))
    tol_var = 5 * var * math.sqrt(2 / (n - 1)) + 1e-3 * var
    assert torch.all((x.mean(0) - mean).abs() <= tol_mean), (x.mean(0), mean, tol_mean)
    assert torch.all((x.var(0) - var).abs() <= tol_var), (x.var(0), var, tol_var)


@st.composite
def _mc_problems(draw):
    sde = draw(all_sdes(max_n=40))
    n = sde.discrete_steps
    if n is None:
        t_max = 0.9 if isinstance(getattr(sde, "schedule", None), CosineSchedule) else 1.0
        s = draw(st.floats(0.0, t_max - 0.1))
        t = draw(st.floats(s + 0.05, t_max))
    else:  # grid times: the solver's steps then never straddle a jump of the coefficients
        i = draw(st.integers(0, n - 1))
        s, t = i / n, draw(st.integers(i + 1, n)) / n
    x_s = torch.tensor(draw(st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3)), dtype=torch.float64)
    return sde, s, t, x_s, draw(st.integers(0, 2**20))


@settings(max_examples=10, phases=(Phase.explicit, Phase.generate), database=None)  # no shrinking: costly
@given(_mc_problems())
def test_transition_matches_monte_carlo_of_the_forward_sde(problem):
    sde, s, t, x_s, seed = problem
    x_t = _simulate(sde, x_s, s, t, seed)
    m, v = sde.transition(s, t)
    _check_gaussian_draws(x_t, float(m) * x_s, float(v))


@pytest.mark.parametrize("sde", [VPSDE.linear(), SubVPSDE.linear(), SubVPSDE.cosine(),
                                 VESDE.geometric(0.01, 5.0), VESDE.smld(20, 0.02, 5.0)], ids=repr)
def test_marginal_matches_monte_carlo_of_the_forward_sde(sde):
    """From the SDE's own state at ``t = 0`` (``α(0) x_0 + σ(0) ε``: the data itself, or, for the
    continuous VE, the data plus ``σ_min ε``) to ``t``: ``N(α(t) x_0, σ(t)² I)``."""
    x0 = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
    t = 0.6
    g = torch.Generator().manual_seed(1)
    start = sde.marginal_sample(x0.expand(N_PATHS, 3), 0.0, generator=g)[0]
    n = sde.discrete_steps
    steps = SOLVER_STEPS if n is None else round(t * n) * 10
    x_t = _sdeint(sde, start, 0.0, t, steps, 2)
    _check_gaussian_draws(x_t, float(sde.alpha(t)) * x0, float(sde.sigma(t)) ** 2)


def test_ve_strategy_covers_both_schedules():
    seen = set()

    @settings(max_examples=30)
    @given(ve_sdes())
    def collect(sde):
        seen.add(type(sde.schedule).__name__)

    collect()
    assert seen == {"GeometricSigmas", "DiscreteSigmas"}


# Edges -----------------------------------------------------------------------------------


F64 = torch.float64
T = torch.tensor([0.05, 0.3, 0.8, 1.0], dtype=F64)


def _b(t):
    """``B(t)`` of the default linear schedule (β from 0.1 to 20)."""
    return 0.1 * t + 0.5 * t**2 * 19.9


def _beta(t):
    return 0.1 + 19.9 * t


def _smld_s2(t):
    """``σ(t)²`` of ``VESDE.smld(4, 0.1, 10.0)``: linear between ``σ_i²`` at ``i/4``, ``σ_0 = 0``."""
    levels = torch.tensor([0.0, 0.1, 0.1 * 100 ** (1 / 3), 0.1 * 100 ** (2 / 3), 10.0], dtype=F64)
    i = torch.clamp(torch.ceil(4 * t) - 1, 0, 3).long()
    return levels[i] ** 2 + (4 * t - i) * (levels[i + 1] ** 2 - levels[i] ** 2)


def test_flow_coefficients_in_closed_form():
    """``(a, b)`` with ``dx/d(clock) = a x + b ε``: VP ``(-½, ½/σ)`` and sub-VP ``(-½, ½ (1 + e^{-B}))``
    in ``B``; continuous VE ``(0, log(σ_max/σ_min) σ)`` in ``t``; SMLD ``(0, 1/(2σ))`` in ``σ²``."""
    b = _b(T)
    a, c = VPSDE.linear().flow_coefficients(T)
    torch.testing.assert_close(a, torch.full_like(T, -0.5), rtol=1e-14, atol=0)
    torch.testing.assert_close(c, 0.5 / torch.sqrt(1 - torch.exp(-b)), rtol=1e-12, atol=0)
    a, c = SubVPSDE.linear().flow_coefficients(T)
    torch.testing.assert_close(a, torch.full_like(T, -0.5), rtol=1e-14, atol=0)
    torch.testing.assert_close(c, 0.5 * (1 + torch.exp(-b)), rtol=1e-12, atol=0)
    a, c = VESDE.geometric(0.01, 50.0).flow_coefficients(T)
    assert torch.equal(a, torch.zeros_like(T))
    torch.testing.assert_close(c, math.log(5000.0) * 0.01 * 5000.0**T, rtol=1e-12, atol=0)
    sde = VESDE.smld(4, 0.1, 10.0)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=F64)  # one time inside each of the 4 intervals
    s2 = _smld_s2(t)
    a, c = sde.flow_coefficients(t)
    assert torch.equal(a, torch.zeros_like(t))
    torch.testing.assert_close(c, 0.5 / torch.sqrt(s2), rtol=1e-12, atol=0)


def test_network_input_scale_is_one_over_the_marginal_scale():
    """``1/√(α² + σ²)``: none for VP (``α² + σ² = 1``), ``1/√(e^{-B} + (1 - e^{-B})²)`` for
    sub-VP, ``1/√(1 + σ²)`` for VE."""
    assert VPSDE.linear().network_input_scale(T) is None
    b = _b(T)
    want = 1 / torch.sqrt(torch.exp(-b) + (1 - torch.exp(-b)) ** 2)
    torch.testing.assert_close(SubVPSDE.linear().network_input_scale(T), want, rtol=1e-12, atol=0)
    want = 1 / torch.sqrt(1 + (0.01 * 5000.0**T) ** 2)
    torch.testing.assert_close(VESDE.geometric(0.01, 50.0).network_input_scale(T), want, rtol=1e-12, atol=0)
    assert float(VESDE.geometric(0.01, 50.0).network_input_scale(0.5)) == pytest.approx(
        1 / math.sqrt(1 + 0.01**2 * 5000.0), rel=1e-13)


@pytest.mark.parametrize("cls", [VPSDE, SubVPSDE])
def test_beta_sde_clock_is_b_and_its_inverse_clamps_to_lo_hi(cls):
    """Clock ``B(t)``, rate ``β(t)``; ``time_for_clock`` inverts ``B`` on ``[0, 1]`` by default,
    clamps to ``[lo, hi]`` and uses the warm start ``t0`` (exact: one evaluation of ``B``)."""
    sde = cls.linear()
    torch.testing.assert_close(sde.clock(T), _b(T), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.clock_rate(T), _beta(T), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.time_for_clock(_b(T)), T, rtol=0, atol=1e-14)
    assert float(sde.time_for_clock(_b(1.0) + 1.0)) == pytest.approx(1.0, abs=1e-12)  # hi = 1 by default
    assert float(sde.time_for_clock(_b(0.5), hi=0.4)) == pytest.approx(0.4, abs=1e-12)
    assert float(sde.time_for_clock(_b(0.5), lo=0.6)) == pytest.approx(0.6, abs=1e-12)
    assert float(sde.time_for_clock(_b(0.5), lo=0.2, hi=0.7)) == pytest.approx(0.5, abs=1e-14)
    sde.schedule = Counting(sde.schedule)
    assert float(sde.time_for_clock(torch.tensor(_b(0.3), dtype=F64), t0=0.3)) == pytest.approx(0.3, abs=1e-15)
    assert sde.schedule.calls == 1


def test_ve_clocks_and_their_inverses():
    """Continuous VE: the clock is ``t`` (rate 1); SMLD: ``σ²`` (rate ``dσ²/dt = g²``); both
    inverses exact and clamped to ``[lo, hi]`` (default ``[0, 1]``)."""
    ve = VESDE.geometric(0.01, 50.0)
    assert torch.equal(ve.clock(T), T) and torch.equal(ve.clock_rate(T), torch.ones_like(T))
    assert torch.equal(ve.time_for_clock(T), T)
    assert torch.equal(ve.time_for_clock(T, lo=0.1, hi=0.9), T.clamp(0.1, 0.9))
    assert float(ve.time_for_clock(1.5)) == 1.0 and float(ve.time_for_clock(-0.5)) == 0.0
    smld = VESDE.smld(4, 0.1, 10.0)
    s2 = _smld_s2(T)
    torch.testing.assert_close(smld.clock(T), s2, rtol=1e-14, atol=0)
    levels2 = torch.tensor([0.0, 0.01, 0.01 * 100 ** (2 / 3), 0.01 * 100 ** (4 / 3), 100.0], dtype=F64)
    rate = 4 * levels2.diff()[torch.tensor([0, 1, 3, 3])]  # intervals holding 0.05, 0.3, 0.8, 1.0
    torch.testing.assert_close(smld.clock_rate(T), rate, rtol=1e-13, atol=0)
    torch.testing.assert_close(smld.time_for_clock(s2), T, rtol=0, atol=1e-14)
    assert float(smld.time_for_clock(200.0)) == 1.0
    torch.testing.assert_close(smld.time_for_clock(s2, lo=0.1, hi=0.5), T.clamp(0.1, 0.5), rtol=0, atol=1e-14)


@pytest.mark.parametrize("sde", [VPSDE.linear(), SubVPSDE.linear(), VESDE.geometric(0.01, 50.0),
                                 VESDE.smld(20, 0.01, 50.0)], ids=["vp", "subvp", "ve", "smld"])
def test_time_for_log_snr_clamps_to_the_default_interval_and_to_hi(sde):
    """A log-SNR below ``λ(1)`` (more noise than the prior) maps to ``t = 1`` by default and to
    ``hi`` when given; one above ``λ(lo)`` maps to ``lo``."""
    lam1 = float(sde.log_snr(1.0))
    assert float(sde.time_for_log_snr(lam1 - 2.0)) == pytest.approx(1.0, abs=1e-12)
    assert float(sde.time_for_log_snr(sde.log_snr(0.7), hi=0.5)) == pytest.approx(0.5, abs=1e-12)
    assert float(sde.time_for_log_snr(sde.log_snr(0.7), lo=0.2, hi=0.9)) == pytest.approx(0.7, abs=1e-10)
    assert float(sde.time_for_log_snr(sde.log_snr(0.1), lo=0.3)) == pytest.approx(0.3, abs=1e-12)


def test_ve_time_for_log_snr_clamps_to_zero_by_default():
    """``σ(0) = σ_min > 0`` on the continuous VE-SDE: a log-SNR above ``λ(0)`` maps to ``t = 0``."""
    ve = VESDE.geometric(0.01, 50.0)
    assert float(ve.time_for_log_snr(float(ve.log_snr(0.0)) + 3.0)) == 0.0


class _OnlyTheInterface(GaussianSDE):
    """The VP-SDE through ``GaussianSDE``'s interface alone: everything derived is the base class's."""

    def __init__(self, vp: VPSDE):
        self.vp, self.schedule = vp, vp.schedule

    def alpha(self, t):
        return self.vp.alpha(t)

    def sigma(self, t):
        return self.vp.sigma(t)

    def g2(self, t):
        return self.vp.g2(t)

    def drift_coef(self, t):
        return self.vp.drift_coef(t)

    def clock_rate(self, t):
        return self.vp.clock_rate(t)


def test_gaussian_sde_derives_drift_diffusion_and_weight_from_the_interface():
    """For a subclass giving only ``α, σ, f, g²``: ``drift = f(t) x`` per batch entry in ``x``'s
    dtype, ``g = √β``, ``g²/σ² = β/(1 - e^{-B})``, reverse and flow drifts ``f x - g² s`` and
    ``f x - ½ g² s`` (the latter from ``a x + b ε`` in the clock ``B``; VP closed forms, linear schedule)."""
    sde = _OnlyTheInterface(VPSDE.linear())
    t = torch.tensor([0.2, 0.9], dtype=F64)
    x = torch.arange(12, dtype=torch.float32).reshape(2, 2, 3) - 5.0
    score = torch.linspace(-1.0, 1.0, 12, dtype=torch.float32).reshape(2, 2, 3)
    f = (-0.5 * _beta(t)).reshape(2, 1, 1)
    drift = sde.drift(x, t)
    assert drift.dtype == torch.float32 and drift.shape == x.shape
    torch.testing.assert_close(drift, (f * x.double()).float(), rtol=1e-6, atol=0)
    g2 = _beta(t).reshape(2, 1, 1)
    torch.testing.assert_close(sde.reverse_drift(x, t, score), (f * x.double() - g2 * score.double()).float(),
                               rtol=1e-6, atol=1e-6)
    eps = -sde.sigma(t).reshape(2, 1, 1) * score.double()  # the flow drift takes ε = -σ s, gives dx/dB
    torch.testing.assert_close(sde.flow_drift(x, t, eps.float()) * g2.float(),
                               (f * x.double() - 0.5 * g2 * score.double()).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sde.diffusion(t), torch.sqrt(_beta(t)), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.likelihood_weight(t), _beta(t) / (1 - torch.exp(-_b(t))), rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.drift(x[:1], 0.5), -0.5 * _beta(0.5) * x[:1], rtol=1e-6, atol=0)


def test_repr_names_the_sde_and_its_schedule():
    assert repr(VPSDE.linear()) == "VPSDE(LinearSchedule(beta_min=0.1, beta_max=20.0))"
    assert repr(SubVPSDE.cosine()) == "SubVPSDE(CosineSchedule(s=0.008, beta_max=1000.0))"
    assert repr(VESDE.geometric()) == "VESDE(GeometricSigmas(sigma_min=0.01, sigma_max=50.0))"
    assert repr(VESDE.smld()) == "VESDE(DiscreteSigmas(N=1000, sigma_min=0.01, sigma_max=50))"
    assert VESDE.smld().schedule.sigma_min == pytest.approx(0.01, rel=1e-14)
    assert VESDE.smld().schedule.sigma_max == pytest.approx(50.0, rel=1e-14)


def test_marginal_sample_draws_from_the_global_stream_without_a_generator():
    """``x_t = α x_0 + σ ε`` with ``ε`` the global stream's next draw, on the CPU."""
    sde = SubVPSDE.linear()
    x0 = torch.ones(2, 3)
    torch.manual_seed(4)
    x_t, eps = sde.marginal_sample(x0, 0.5)
    torch.manual_seed(4)
    assert torch.equal(eps, torch.randn(2, 3))
    torch.testing.assert_close(x_t, float(sde.alpha(0.5)) * x0 + float(sde.sigma(0.5)) * eps, rtol=1e-6, atol=0)


def test_prior_sample_is_prior_std_times_the_generators_draws():
    """``z = prior_std · ε`` on the same draws (VE: ``σ_max``; VP and sub-VP: ``ε`` itself)."""
    for sde, std in ((VESDE.geometric(0.01, 50.0), 50.0), (VESDE.smld(10, 0.1, 3.0), 3.0),
                     (VESDE(DiscreteSigmas([0.5, 2.0])), 2.0), (VPSDE.linear(), 1.0), (SubVPSDE.linear(), 1.0)):
        z = sde.prior_sample((3, 4), generator=torch.Generator().manual_seed(5), dtype=F64)
        eps = torch.randn((3, 4), generator=torch.Generator().manual_seed(5), dtype=F64)
        torch.testing.assert_close(z, std * eps, rtol=1e-14, atol=0)


def test_prior_sample_device_defaults_to_the_cpu_and_follows_the_request():
    """Without a generator or a device the draw is on the CPU (the global stream); an explicit
    ``device`` is where the sample ends up, whatever the generator's device."""
    torch.manual_seed(11)
    z = VESDE.geometric(0.01, 50.0).prior_sample((2, 3))
    torch.manual_seed(11)
    assert z.device.type == "cpu" and z.dtype == torch.float32
    torch.testing.assert_close(z, 50.0 * torch.randn(2, 3), rtol=1e-6, atol=0)
    z = VPSDE.linear().prior_sample((2, 3), generator=torch.Generator().manual_seed(0), device="meta")
    assert z.device.type == "meta" and z.shape == (2, 3)


@pytest.mark.parametrize("sde", [VPSDE.linear(), SubVPSDE.linear(), VESDE.geometric(0.01, 50.0)],
                         ids=["vp", "subvp", "ve"])
def test_time_for_sigma_refuses_the_end_points(sde):
    """``σ`` must lie strictly inside ``(σ(0), σ(1))``: both end points are one clear error."""
    for sigma in (float(sde.sigma(0.0)), float(sde.sigma(1.0))):
        with pytest.raises(ValueError, match=rf"^sigma={sigma!r}: expected a number in \(σ\(0\)="):
            sde.time_for_sigma(sigma)


def test_closed_form_inverses_keep_the_input_device():
    """A tensor ``λ`` (or clock value) stays on its device: here the shape-only 'meta' device."""
    lam = torch.zeros(3, dtype=F64, device="meta")
    ve = VESDE.geometric(0.01, 50.0)
    assert ve.time_for_log_snr(lam).device.type == "meta"
    assert ve.time_for_clock(lam).device.type == "meta"


def test_the_interface_of_gaussian_sde_is_abstract():
    """``GaussianSDE`` itself implements none of the interface: every method names it as missing."""
    base = GaussianSDE()
    for call in (lambda: base.alpha(0.5), lambda: base.sigma(0.5), lambda: base.log_snr(0.5),
                 lambda: base.g2(0.5), lambda: base.drift_coef(0.5), lambda: base.time_for_sigma(0.5),
                 lambda: base.time_for_log_snr(0.0), lambda: base.time_for_log_snr(0.0, lo=0.1, hi=0.9)):
        with pytest.raises(NotImplementedError):
            call()
