"""The SDE family's shared interface at its edges, against closed forms: the probability-flow
coefficients and the network's input scale of every SDE, the ODE clocks of VP/sub-VP (``B``),
continuous VE (``t``) and SMLD (``σ²``) with their inverses, the ``[lo, hi]`` clamps of the
log-SNR and clock inverses and their defaults, ``GaussianSDE``'s own derived drift for a
subclass that gives only the interface, and the ``repr``. (Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.core.schedules import DiscreteSigmas
from scoresde.core.sde import GaussianSDE
from tests.fakes import Counting

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
