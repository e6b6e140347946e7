"""VPSDE methods on data: marginals, drifts, prior, shapes, dtypes and bad input.

VPSDE and its helpers at their edges: time validation of vectors, float64 times, the
constructors' arguments, log-SNR in closed form, and which generator and dtype the draws use.
(Mutation kills; docs/testing.md.)"""

import math

import pytest
import torch
import torchsde
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, GaussianMixture, append_dims
from scoresde.core.schedules import Schedule
from scoresde.core.sde import as_time
from tests.fakes import Counting
from tests.strategies import sdes


@pytest.mark.parametrize("shape", [(5, 2), (3, 1, 4, 4), (2, 3, 2, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_marginal_sample_any_shape(shape, dtype):
    sde = VPSDE.linear()
    x0 = torch.randn(shape, dtype=dtype)
    t = torch.rand(shape[0], dtype=torch.float64)
    xt, eps = sde.marginal_sample(x0, t, generator=torch.Generator().manual_seed(0))
    assert xt.shape == x0.shape and xt.dtype == dtype
    a = append_dims(sde.alpha(t), len(shape)).to(dtype)
    s = append_dims(sde.sigma(t), len(shape)).to(dtype)
    torch.testing.assert_close(xt, a * x0 + s * eps)
    # scalar t broadcasts over the batch
    xs, e2 = sde.marginal_sample(x0, 0.3, noise=eps)
    torch.testing.assert_close(xs, float(sde.alpha(0.3)) * x0 + float(sde.sigma(0.3)) * eps)


@given(sdes(), st.floats(0.0, 1.0))
@settings(max_examples=40)
def test_drifts_match_their_formulas(sde, t):
    x = torch.randn(4, 3, dtype=torch.float64)
    score = torch.randn(4, 3, dtype=torch.float64)
    beta = float(sde.beta(t))
    torch.testing.assert_close(sde.drift(x, t), -0.5 * beta * x)
    torch.testing.assert_close(sde.reverse_drift(x, t, score), -0.5 * beta * x - beta * score)
    if t > 0:  # the flow drift in the clock B, given ε = -σ s: dx/dB = -½ x - ½ s
        eps = -float(sde.sigma(t)) * score
        torch.testing.assert_close(sde.flow_drift(x, t, eps), -0.5 * x - 0.5 * score)
    assert math.isclose(float(sde.diffusion(t)), math.sqrt(beta), rel_tol=1e-14)


def test_prior():
    sde = VPSDE.cosine()
    z = sde.prior_sample((4, 1, 3, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert z.shape == (4, 1, 3, 3) and z.dtype == torch.float64
    lp = sde.prior_log_prob(z)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z.flatten(1)).sum(1)
    torch.testing.assert_close(lp, expected)
    assert lp.dtype == torch.float64


def test_coefficients_are_float64_and_keep_shape():
    sde = VPSDE.ddpm()
    for t in (0.5, torch.tensor(0.5), torch.rand(7), torch.rand(7, dtype=torch.float64)):
        for fn in (sde.alpha, sde.sigma, sde.alpha_bar, sde.beta, sde.log_snr, sde.diffusion):
            out = fn(t)
            assert out.dtype == torch.float64
            assert out.shape == torch.as_tensor(t).shape


@pytest.mark.parametrize("call, match", [
    (lambda s: s.alpha(1.5), "t=1.5"),
    (lambda s: s.sigma(-0.1), "t=-0.1"),
    (lambda s: s.alpha(float("nan")), "t=nan"),
    (lambda s: s.alpha(torch.zeros(2, 2)), "shape"),
    (lambda s: s.drift(torch.zeros(3, 2), torch.zeros(4)), "batch size 3"),
    (lambda s: s.marginal_sample(torch.zeros(3, 2), 0.5, noise=torch.zeros(3, 3)), "noise has shape"),
    (lambda s: s.transition(0.6, 0.5), "s ≤ t"),
])
def test_bad_time_and_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call(VPSDE.linear())


def test_as_time_accepts_numbers_and_tensors():
    assert as_time(0.25).dtype == torch.float64
    assert as_time(torch.tensor([0.0, 1.0], dtype=torch.float32)).tolist() == [0.0, 1.0]


class _ForwardSDE(torch.nn.Module):
    """The forward VP-SDE in torchsde's form: diagonal Itô noise, state (B, D)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def f(self, t, y):
        return self.sde.drift(y, float(t))

    def g(self, t, y):
        return self.sde.diffusion(float(t)).to(y.dtype).expand_as(y)


@pytest.mark.parametrize("kind, t_end", [("linear", 0.3), ("cosine", 0.55), ("ddpm", 0.8)])
def test_forward_sde_by_torchsde_matches_closed_form_marginal(kind, t_end):
    """Simulate dx = -½βx dt + √β dw from mixture data with Euler–Maruyama (dt = 5e-4) and
    compare mean and covariance of x_t with p_t's closed form. n = 4000 paths: the standard
    error of a mean coordinate is √(C_ii/n) and of a covariance entry √((C_ii C_jj + C_ij²)/n);
    we allow 5 standard errors plus 5e-3 for the O(dt) weak discretization error."""
    sde = {"linear": VPSDE.linear(), "cosine": VPSDE.cosine(), "ddpm": VPSDE.ddpm()}[kind]
    data = GaussianMixture([0.3, 0.7], [[1.0, -0.5], [-0.6, 0.8]],
                           [[[0.2, 0.05], [0.05, 0.1]], [[0.05, 0.0], [0.0, 0.3]]], sde=sde)
    n = 4000
    g = torch.Generator().manual_seed(123)
    x0 = data.sample(n, generator=g)
    bm = torchsde.BrownianInterval(0.0, t_end, size=(n, 2), dtype=torch.float64, entropy=7)
    xs = torchsde.sdeint(_ForwardSDE(sde), x0, torch.tensor([0.0, t_end], dtype=torch.float64),
                         method="euler", dt=5e-4, bm=bm)
    xt = xs[-1]
    # closed form of the mixture marginal: overall mean and covariance
    means, covs = data.marginal_params(t_end)
    w = data.weights
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert torch.all((xt.mean(0) - mean).abs() < 5 * se_mean + 5e-3)
    se_cov = torch.sqrt((torch.diag(cov)[:, None] * torch.diag(cov)[None, :] + cov**2) / n)
    assert torch.all((torch.cov(xt.T) - cov).abs() < 5 * se_cov + 5e-3)


# Edges -----------------------------------------------------------------------------------


F64 = torch.float64


def test_append_dims_keeps_equal_rank_and_names_the_shape():
    v = torch.ones(2, 3)
    assert append_dims(v, 2) is not None and append_dims(v, 2).shape == (2, 3)
    with pytest.raises(ValueError, match=r"^cannot broadcast a tensor of shape \(2, 3\) to 1 dims$"):
        append_dims(v, 1)


def test_as_time_checks_every_entry_and_returns_float64():
    with pytest.raises(ValueError, match=r"^t=1.5: expected times in \[0, 1\]$"):
        as_time(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"^t=-0.25: expected times in \[0, 1\]$"):
        as_time(torch.tensor([-0.25, 0.5, 2.0]))
    t32 = torch.tensor([0.1, 0.7], dtype=torch.float32)
    t = as_time(t32)
    assert t.dtype == F64 and torch.equal(t, t32.to(F64))


def test_constructors_pass_every_argument():
    assert (VPSDE.linear(0.2, 10.0).schedule.beta_min, VPSDE.linear(0.2, 10.0).schedule.beta_max) == (0.2, 10.0)
    assert VPSDE.cosine().schedule.beta_max == 1000.0 and VPSDE.cosine(beta_max=50.0).schedule.beta_max == 50.0
    ddpm = VPSDE.ddpm(10, 1e-4, 0.05).schedule
    assert ddpm.N == 10 and float(ddpm.betas[-1]) == 0.05


def test_log_snr_is_log_alpha2_over_sigma2():
    sde = VPSDE.linear()
    t = torch.linspace(0.01, 1.0, 50, dtype=F64)
    b = 0.1 * t + 0.5 * t**2 * 19.9
    want = torch.log(torch.exp(-b) / (1 - torch.exp(-b)))
    torch.testing.assert_close(sde.log_snr(t), want, rtol=1e-12, atol=0)
    assert all(math.isclose(float(sde.log_snr(u)), math.log(float(sde.alpha(u)) ** 2 / float(sde.sigma(u)) ** 2),
                            rel_tol=1e-12) for u in (0.3, 0.9))


def test_draws_use_the_given_generator_and_dtype():
    sde = VPSDE.linear()
    x0 = torch.zeros(4, 3, dtype=F64)
    x_t, noise = sde.marginal_sample(x0, 0.5, generator=torch.Generator().manual_seed(7))
    want = torch.randn((4, 3), generator=torch.Generator().manual_seed(7), dtype=F64)
    assert noise.dtype == F64 and torch.equal(noise, want)
    torch.testing.assert_close(x_t, float(sde.sigma(0.5)) * want, rtol=1e-15, atol=0)
    z = sde.prior_sample((2, 5), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(z, torch.randn((2, 5), generator=torch.Generator().manual_seed(3), dtype=F64))


def test_prior_log_prob_is_float64_from_float32_input():
    sde = VPSDE.linear()
    z = torch.tensor([[0.1, -1.3, 2.2]], dtype=torch.float32)
    lp = sde.prior_log_prob(z)
    z64 = z.to(F64)
    assert lp.dtype == F64
    assert float(lp) == float(-0.5 * (z64**2).sum() - 1.5 * math.log(2 * math.pi))


def _counting_sde(schedule):
    sde = VPSDE(schedule)
    sde.schedule = Counting(schedule)
    return sde


@pytest.mark.parametrize("make", [lambda: VPSDE.linear().schedule, lambda: VPSDE.cosine().schedule,
                                  lambda: VPSDE.ddpm().schedule])
def test_time_for_integrated_beta_inverts_b_in_a_dozen_steps(make):
    """Newton with a bisection safeguard: B(t(b)) = b to float64 round-off, within 12 steps from
    the default bracket [0, 1] (measured: 12, 12, 9), in 1 step from an exact warm start."""
    sde = _counting_sde(make())
    t = torch.linspace(0.001, 0.999, 101, dtype=F64)
    b = sde.schedule.inner.integrated_beta(t)
    found = sde.time_for_integrated_beta(b)
    assert sde.schedule.calls <= 12
    torch.testing.assert_close(found, t, rtol=0, atol=1e-14)
    sde.schedule.calls = 0
    assert float(sde.time_for_integrated_beta(b[40], t0=float(t[40]))) == pytest.approx(float(t[40]), abs=1e-15)
    assert sde.schedule.calls == 1


def test_time_for_integrated_beta_from_python_numbers_and_outside_warm_starts():
    sde = _counting_sde(VPSDE.linear().schedule)
    b = float(sde.schedule.inner.integrated_beta(torch.tensor(0.3, dtype=F64)))
    assert float(sde.time_for_integrated_beta(b)) == pytest.approx(0.3, abs=1e-15)  # b kept in float64
    for t0 in (-3.0, 5.0):  # a warm start outside the bracket is clamped into it
        sde.schedule.calls = 0
        t = sde.time_for_integrated_beta(b, lo=0.2, hi=0.6, t0=t0)
        assert float(t) == pytest.approx(0.3, abs=1e-15) and sde.schedule.calls <= 12


def test_transition_backwards_in_time_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^transition\(s, t\): expected s ≤ t$"):
        VPSDE.linear().transition(0.5, 0.2)


class _Saturating(Schedule):
    """A decreasing rate ``β(t) = 20 e^{-20 t}``, ``B(t) = 1 - e^{-20 t}`` (concave): from the
    midpoint a plain Newton step lands near ``t = -400``, where ``B`` overflows."""

    def integrated_beta(self, t):
        return -torch.expm1(-20.0 * t)

    def beta(self, t):
        return 20.0 * torch.exp(-20.0 * t)


def test_time_for_integrated_beta_bisects_when_newton_leaves_the_bracket():
    """The safeguard: a Newton step outside the bracket is replaced by its midpoint, so the
    root of a concave ``B`` is still found to round-off, in a few dozen steps at most."""
    sde = _counting_sde(_Saturating())
    t = torch.tensor([0.01, 0.05, 0.3], dtype=F64)
    found = sde.time_for_integrated_beta(-torch.expm1(-20.0 * t))
    torch.testing.assert_close(found, t, rtol=1e-13, atol=0)
    assert sde.schedule.calls <= 40


def test_time_for_integrated_beta_keeps_a_far_warm_start_inside_the_bracket():
    """The iterate never leaves ``[lo, hi]``: the default start is the bracket's midpoint and a
    warm start above ``hi`` is clamped to it, so a root beyond the bracket gives ``hi``."""
    sde = VPSDE.linear()
    b = sde.integrated_beta(0.8)
    assert float(sde.time_for_integrated_beta(b, lo=0.2, hi=0.6, t0=5.0)) == pytest.approx(0.6, abs=1e-15)
    assert float(sde.time_for_integrated_beta(b, lo=0.2, hi=0.6)) == pytest.approx(0.6, abs=1e-15)
    assert float(sde.time_for_integrated_beta(b, lo=0.1, hi=0.2)) == pytest.approx(0.2, abs=1e-15)


def test_time_for_integrated_beta_is_exact_for_small_times_and_at_zero():
    """Relative accuracy 1e-13 down to ``t = 1e-6`` (the stopping test is relative to ``t``), and
    the exact root ``t = 0`` from the warm start ``0`` in one evaluation of ``B``."""
    sde = _counting_sde(VPSDE.linear().schedule)
    t = torch.tensor([1e-6, 1e-5, 1e-4, 1e-3], dtype=F64)
    found = sde.time_for_integrated_beta(sde.schedule.inner.integrated_beta(t))
    torch.testing.assert_close(found, t, rtol=1e-13, atol=0)
    sde.schedule.calls = 0
    assert float(sde.time_for_integrated_beta(0.0, t0=0.0)) == 0.0
    assert sde.schedule.calls == 1
