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
"""

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
