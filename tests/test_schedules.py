"""Schedules and VP-SDE coefficients against their closed forms (docs/math.md, "The VP-SDE").

Schedules at their edges: documented defaults, validation boundaries, the cosine clip time,
the first and last steps of a discrete schedule, float64 tables, and device following.
(Each test here kills mutants that the closed-form tests in test_schedules.py let through;
docs/testing.md.)"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, LinearSchedule
from scoresde.core.schedules import DiscreteSigmas, GeometricSigmas
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


# Edges -----------------------------------------------------------------------------------


F64 = torch.float64


def test_documented_defaults():
    lin = LinearSchedule()
    assert (lin.beta_min, lin.beta_max) == (0.1, 20.0)  # Song et al. 2021
    cos = CosineSchedule()
    assert (cos.s, cos.beta_max) == (0.008, 1000.0)
    ddpm_cos = DiscreteSchedule.ddpm_cosine()
    assert ddpm_cos.N == 1000 and torch.equal(ddpm_cos.betas, DiscreteSchedule.ddpm_cosine(1000).betas)


def test_linear_rates_must_be_strictly_positive_and_increasing():
    with pytest.raises(ValueError, match="beta_min=0.0"):
        LinearSchedule(0.0, 1.0)
    with pytest.raises(ValueError, match="beta_max=0.5"):
        LinearSchedule(0.5, 0.5)


@pytest.mark.parametrize("s", [0.008, 0.2])
def test_cosine_beta_max_must_exceed_the_initial_rate(s):
    beta_0 = math.pi / (1 + s) * math.tan(s / (1 + s) * math.pi / 2)  # β(0) of Nichol & Dhariwal
    CosineSchedule(s=s, beta_max=beta_0 * (1 + 1e-6))
    for below in (beta_0, beta_0 * (1 - 1e-6)):
        with pytest.raises(ValueError, match="beta_max"):
            CosineSchedule(s=s, beta_max=below)


@pytest.mark.parametrize("s, beta_max", [(0.008, 5.0), (0.008, 50.0), (0.008, 1000.0), (0.2, 30.0)])
def test_cosine_clip_time_is_where_the_rate_reaches_beta_max(s, beta_max):
    sch = CosineSchedule(s=s, beta_max=beta_max)
    raw = math.pi / (1 + s) * math.tan((sch.t_clip + s) / (1 + s) * math.pi / 2)
    assert raw == pytest.approx(beta_max, rel=1e-12)
    tc = torch.tensor(sch.t_clip, dtype=F64)
    assert float(sch.beta(tc)) == beta_max  # clipped from t_c on
    # B past the clip: the cosine B at t_c, then linear at rate beta_max
    phase = lambda t: (t + s) / (1 + s) * math.pi / 2  # noqa: E731
    b_tc = -2 * math.log(math.cos(phase(sch.t_clip)) / math.cos(phase(0.0)))
    t = torch.tensor([sch.t_clip, 0.5 * (sch.t_clip + 1), 1.0], dtype=F64)
    want = torch.tensor([b_tc + beta_max * (float(u) - sch.t_clip) for u in t], dtype=F64)
    torch.testing.assert_close(sch.integrated_beta(t), want, rtol=1e-13, atol=0)


def test_cosine_clip_time_never_passes_one():
    # with an enormous beta_max the formula (1 + s)·atan(·)·2/π - s rounds above 1 for some s (here 1.0003)
    assert CosineSchedule(s=1.0003, beta_max=1e300).t_clip == 1.0


def test_discrete_first_and_last_steps():
    betas = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    sch = DiscreteSchedule(betas)
    rates = -torch.log1p(-betas)
    t = torch.tensor([0.0, 1e-9, 0.25, 0.25 + 1e-9, 1.0 - 1e-9, 1.0], dtype=F64)
    # β(t) = N·rate_i on ((i-1)/N, i/N], and the first step's rate at t = 0
    torch.testing.assert_close(sch.beta(t), 4 * rates[[0, 0, 0, 1, 3, 3]], rtol=1e-15, atol=0)
    assert sch.sampling_eps == 0.25


def test_discrete_tables_are_float64_from_python_numbers():
    sch = DiscreteSchedule([0.1, 0.3])
    assert sch.betas.dtype == F64 and sch.betas[0].item() == 0.1
    assert float(sch.integrated_beta(torch.tensor(1.0, dtype=F64))) == -math.log1p(-0.1) - math.log1p(-0.3)


def test_empty_betas_message():
    with pytest.raises(ValueError, match=r"^betas: expected at least one value, got an empty sequence$"):
        DiscreteSchedule([])


def test_discrete_schedule_follows_the_device_of_t():
    """The 'meta' device stands in for a GPU: tables must move to t's device, one cache entry each."""
    sch = DiscreteSchedule.ddpm_linear(10)
    t = torch.tensor([0.0, 0.35, 1.0], dtype=F64)
    cpu_b, cpu_beta = sch.integrated_beta(t), sch.beta(t)
    assert cpu_b.device.type == "cpu" and cpu_beta.device.type == "cpu"
    meta = t.to("meta")
    assert sch.integrated_beta(meta).device.type == "meta"
    assert sch.beta(meta).device.type == "meta"
    assert sch.integrated_beta(t).device.type == "cpu"  # the CPU tables are still there
    assert {d.device.type for d in sch._tables(torch.device("meta"))} == {"meta"}


def test_tables_are_built_on_the_cpu_under_any_default_device():
    """DDPM's cosine β and SMLD's levels are CPU float64 tables even when PyTorch's default
    device is another one (here 'meta'): the same values as built under the CPU default."""
    want_betas = DiscreteSchedule.ddpm_cosine(10).betas
    want_sigmas = DiscreteSigmas([0.1, 0.5, 2.0]).sigmas
    with torch.device("meta"):
        betas = DiscreteSchedule.ddpm_cosine(10).betas
        sigmas = DiscreteSigmas([0.1, 0.5, 2.0]).sigmas
        t_cpu = DiscreteSigmas([0.1, 0.5, 2.0]).time_for_clock(0.25)
        levels = DiscreteSigmas.smld(5, 0.1, 2.0).sigmas
    assert betas.device.type == sigmas.device.type == t_cpu.device.type == levels.device.type == "cpu"
    assert torch.equal(betas, want_betas) and torch.equal(sigmas, want_sigmas)
    assert torch.equal(levels, DiscreteSigmas.smld(5, 0.1, 2.0).sigmas)


def test_sigma_schedules_defaults_and_level_checks():
    """Defaults ``σ ∈ [0.01, 50]`` (score_sde's VE), SMLD with 1000 levels; levels must be
    non-empty and strictly increasing, and SMLD's end points are checked as a pair."""
    geo = GeometricSigmas()
    assert (geo.sigma_min, geo.sigma_max) == (0.01, 50.0)
    smld = DiscreteSigmas.smld()
    assert smld.N == 1000
    assert smld.sigma_min == pytest.approx(0.01, rel=1e-14) and smld.sigma_max == pytest.approx(50.0, rel=1e-14)
    assert DiscreteSigmas.smld(3, 60.0, 100.0).sigma_max == pytest.approx(100.0, rel=1e-14)
    with pytest.raises(ValueError, match=r"^sigma_max=0.5: expected a finite number > sigma_min=1.0$"):
        DiscreteSigmas.smld(3, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"^sigmas: expected at least one noise level, got an empty sequence$"):
        DiscreteSigmas([])
    with pytest.raises(ValueError, match=r"^sigmas=\[0.1, 0.1\]\.\.\.: expected finite, positive, increasing levels$"):
        DiscreteSigmas([0.1, 0.1])
    with pytest.raises(ValueError, match=r"^sigmas=\[0.5, 0.4, 0.3, 0.2\]\.\.\.: expected finite"):
        DiscreteSigmas([0.5, 0.4, 0.3, 0.2, 0.1])


def test_sigma_clock_inverses_are_float64_and_exact_from_python_numbers():
    """``time_for_clock`` of a Python number: float64, no float32 rounding on the way
    (continuous VE: the number itself; SMLD: the inverse of ``σ²``)."""
    geo = GeometricSigmas(0.01, 50.0)
    assert geo.time_for_clock(0.1).dtype == F64 and float(geo.time_for_clock(0.1)) == 0.1
    smld = DiscreteSigmas.smld(5, 0.1, 2.0)
    v = float(smld.sigma2(torch.tensor(0.3, dtype=F64)))
    assert smld.time_for_clock(v).dtype == F64
    assert float(smld.time_for_clock(v)) == pytest.approx(0.3, rel=1e-15)


def test_smld_sigma2_inverse_clamps_to_zero_one_and_follows_the_device():
    """``time_for_sigma2``: ``σ² ≤ 0`` gives ``t = 0``, ``σ² ≥ σ_N²`` gives ``t = 1``, levels give
    ``i/N`` exactly; computed on ``v``'s device (here 'meta')."""
    smld = DiscreteSigmas([0.5, 1.0, 2.0])
    v = torch.tensor([-1.0, 0.0, 0.25, 1.0, 4.0, 40.0], dtype=F64)
    torch.testing.assert_close(smld.time_for_sigma2(v), torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0], dtype=F64),
                               rtol=1e-15, atol=0)
    assert smld.time_for_sigma2(torch.zeros(2, dtype=F64, device="meta")).device.type == "meta"


def test_geometric_sigmas_need_zero_below_sigma_min_below_sigma_max():
    with pytest.raises(ValueError, match=r"^sigma_min=0.0: expected a finite number > 0$"):
        GeometricSigmas(0.0, 1.0)
    with pytest.raises(ValueError, match=r"^sigma_max=1.0: expected a finite number > sigma_min=1.0$"):
        GeometricSigmas(1.0, 1.0)


def test_cosine_b_follows_t_under_another_default_device():
    """The clip time is placed on ``t``'s device: a CPU ``t`` under a 'meta' default device
    gives the same ``B(t)`` as under the CPU default."""
    cos = CosineSchedule()
    t = torch.tensor([0.5, 0.999, 1.0], dtype=F64)
    want = cos.integrated_beta(t)
    with torch.device("meta"):
        got = cos.integrated_beta(t)
    assert got.device.type == "cpu" and torch.equal(got, want)


@pytest.mark.parametrize("make", [DiscreteSchedule.ddpm_linear, DiscreteSchedule.ddpm_cosine, DiscreteSigmas.smld])
def test_step_counts_are_checked_by_name(make):
    with pytest.raises(ValueError, match=r"^n_steps=0: expected an integer ≥ 1$"):
        make(0)
