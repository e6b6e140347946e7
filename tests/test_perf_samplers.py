"""Issue 26's sampler defaults, pinned, and the pieces they rest on, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from scoresde import VPSDE, GaussianMixture
from scoresde.samplers import SAMPLERS, sample
from scoresde.samplers.dpmpp import poly_weights
from tests.closed_forms import convergence_slope


@pytest.mark.parametrize("taus,h", [([0.0, 0.7], 0.7), ([-0.4, 0.0, 0.5], 0.5), ([-1.1, -0.5, 0.0, 0.3], 0.3),
                                    ([-2.0, 0.0, 2.5], 2.5), ([0.0], 1.3)])
def test_poly_weights_integrate_polynomials_exactly(taus, h):
    """``Σ w_j P(τ_j) = ∫₀^h e^{-(h-τ)} P(τ) dτ`` for every monomial of degree < len(taus)
    (scipy's quad to 1e-13: the weights are exact up to round-off)."""
    w = poly_weights(taus, h)
    for deg in range(len(taus)):
        want = quad(lambda tau, d=deg: math.exp(-(h - tau)) * tau**d, 0.0, h, epsabs=1e-14, epsrel=1e-13)[0]
        got = sum(wj * tj**deg for wj, tj in zip(w, taus))
        assert abs(got - want) < 1e-11 * max(1.0, abs(want)), (deg, got, want)


@pytest.mark.parametrize("order,slope_min", [(1, 1.8), (2, 2.7)])
def test_corrector_raises_the_order_by_one(order, slope_min):
    """On the exact Gaussian flow map (tests/closed_forms.py), the corrected solver's error falls
    one order faster than the predictor's. Measured slopes over 20, 40, 80 steps: order 1 → 2.0,
    order 2 → 2.9 (without the corrector 1.0 and 1.9)."""
    gm = GaussianMixture.random(3, 1, seed=1, sde=VPSDE.linear())
    x1 = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    slope, errs = convergence_slope(lambda k: SAMPLERS["dpmpp"](gm, x1, steps=k, order=order, denoise=False).x,
                                    gm, x1)
    assert slope > slope_min, f"errors {errs}"


def test_dpmpp_default_is_the_corrected_solver():
    """The default ``dpmpp`` corrects (pinned; chosen by benchmarks/vs_diffusers.py, see
    docs/benchmarks.md); ``corrector=False`` is the paper's 2M, at the same NFE."""
    gm = GaussianMixture.random(3, 2, seed=1, sde=VPSDE.ddpm())
    x1 = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    default = sample(gm, "dpmpp", x1, steps=15)
    on = sample(gm, "dpmpp", x1, steps=15, corrector=True)
    off = sample(gm, "dpmpp", x1, steps=15, corrector=False)
    assert torch.equal(default.x, on.x) and default.info["corrector"] is True
    assert default.nfe == off.nfe == 16
    assert (on.x - off.x).abs().max() > 1e-4


def test_corrector_option_message():
    gm = GaussianMixture.random(2, 1, seed=0)
    with pytest.raises(ValueError, match="corrector='yes'"):
        sample(gm, "dpmpp", torch.zeros(2, 2), steps=3, corrector="yes")


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_heun_few_step_rule_is_ddim(steps):
    """Pinned default: below ``FEW_STEPS = 5`` intervals ``heun`` spends its ``2K + 1`` calls as DDIM
    (η = 0) with ``2K + 1`` steps does (Euler in σ̃ on the same grid): equal to round-off."""
    gm = GaussianMixture.random(3, 2, seed=1, sde=VPSDE.ddpm())
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h, d = sample(gm, "heun", x, steps=steps), sample(gm, "ddim", x, steps=2 * steps + 1)
    assert h.nfe == d.nfe == 2 * steps + 1 and h.info["few_steps"] is True
    torch.testing.assert_close(h.x, d.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(h.info["grid"], d.info["grid"], rtol=0, atol=0)


def test_heun_from_five_steps_and_explicit_grids_are_heun():
    gm = GaussianMixture.random(3, 2, seed=1, sde=VPSDE.ddpm())
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    five = sample(gm, "heun", x, steps=5)
    assert five.nfe == 11 and five.info["grid"].numel() == 6 and five.info["few_steps"] is False
    off = sample(gm, "heun", x, steps=4, few_steps=False)
    assert off.nfe == 9 and off.info["grid"].numel() == 5
    grid = sample(gm, "heun", x, times=off.info["grid"].tolist())
    assert torch.equal(grid.x, off.x) and grid.nfe == 9
    with pytest.raises(ValueError, match="few_steps=1"):
        sample(gm, "heun", x, steps=3, few_steps=1)


# The stochastic samplers' defaults (issue 26, item 4; benchmarks/stochastic_samplers.py) ----------
def _narrow():
    """benchmarks/vs_diffusers.py's narrow-mode case: weights 0.9/0.1, std 0.3 and 0.02."""
    return GaussianMixture([0.9, 0.1], [[-1.0], [1.5]], torch.tensor([0.3, 0.02]) ** 2, sde=VPSDE.ddpm())


@pytest.mark.parametrize("name,steps,intervals", [("ancestral", 12, 11), ("sde", 12, 12), ("pc", 12, 12)])
def test_stochastic_samplers_default_to_the_quadratic_grid(name, steps, intervals):
    """Pinned: ancestral, sde and pc default to ``spacing="quadratic"`` (``τ = t_eps + (1 - t_eps) u²``)."""
    gm = GaussianMixture.random(2, 2, seed=3, sde=VPSDE.linear())
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t_eps = 1e-3
    default = sample(gm, name, x, steps=steps, t_eps=t_eps, generator=torch.Generator().manual_seed(1))
    quad_ = sample(gm, name, x, steps=steps, t_eps=t_eps, spacing="quadratic",
                   generator=torch.Generator().manual_seed(1))
    assert torch.equal(default.x, quad_.x)
    u = torch.linspace(1.0, 0.0, intervals + 1, dtype=torch.float64)
    torch.testing.assert_close(default.info["grid"], t_eps + (1 - t_eps) * u**2, rtol=0, atol=1e-15)


def test_pc_default_predictor_is_ancestral_on_vp_and_reverse_diffusion_otherwise():
    """Pinned: ``predictor="auto"`` resolves to the ancestral step on a VP-SDE (where it is defined)
    and to the paper's reverse-diffusion step on VE; the samples equal the explicit choice's."""
    from scoresde import VESDE
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for sde, want in ((VPSDE.linear(), "ancestral"), (VESDE.geometric(0.01, 5.0), "reverse_diffusion")):
        gm = GaussianMixture.random(2, 2, seed=3, sde=sde)
        x_T = x * float(sde.sigma(torch.tensor(1.0, dtype=torch.float64)))  # the prior's scale at t = 1
        auto = sample(gm, "pc", x_T, steps=6, generator=torch.Generator().manual_seed(1))
        explicit = sample(gm, "pc", x_T, steps=6, predictor=want, generator=torch.Generator().manual_seed(1))
        assert auto.info["predictor"] == want and torch.equal(auto.x, explicit.x)


@pytest.mark.parametrize("steps", [1, 2, 4, 5])
def test_pc_few_step_rule(steps):
    """Below 5 steps pc spends the corrector's calls on predictor steps: ``K (1 + M)`` steps of the
    bare predictor, the same NFE (``K (1 + M) + 1``); from 5 steps on, the corrector runs."""
    gm = _narrow()
    x = torch.randn(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = sample(gm, "pc", x, steps=steps, generator=torch.Generator().manual_seed(1))
    assert res.nfe == 2 * steps + 1
    bare = sample(gm, "pc", x, steps=2 * steps, corrector_steps=0, generator=torch.Generator().manual_seed(1))
    assert res.info["few_steps"] is (steps < 5)
    assert torch.equal(res.x, bare.x) is (steps < 5)
    off = sample(gm, "pc", x, steps=steps, few_steps=False, generator=torch.Generator().manual_seed(1))
    assert off.info["corrector_steps"] == 1 and off.nfe == res.nfe and off.info["few_steps"] is False


def test_pc_few_steps_option_message():
    gm = _narrow()
    with pytest.raises(ValueError, match="few_steps='no'"):
        sample(gm, "pc", torch.zeros(2, 1, dtype=torch.float64), steps=3, few_steps="no")


@pytest.mark.parametrize("name,nfe", [("ancestral", 20), ("sde", 20), ("pc", 21)])
def test_new_stochastic_defaults_are_sharper_than_the_previous(name, nfe):
    """On the narrow mode at ~20 NFE the previous defaults (uniform grid; pc: reverse diffusion)
    blurred the σ = 0.02 mode: mean log-density gap −1.13 (ancestral), −2.24 (sde), −1.33 (pc) at
    n = 20 000 (docs/benchmarks.md); the new defaults −0.13, −0.08, −0.20. Here n = 4000 with a
    fixed seed; ``E log p`` from 200 000 exact draws. The Monte Carlo sd of a mean log-density over
    4000 samples is ≈ 0.02 (the per-sample sd of log p is ≈ 1.2), so the required factor-3 gap
    between the two defaults is ≫ its noise."""
    gm = _narrow()
    g = torch.Generator().manual_seed(7)
    ref = float(gm.log_prob(gm.sample(200_000, generator=g)).mean())
    x = torch.randn(4000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = {"ancestral": nfe, "sde": nfe - 1, "pc": (nfe - 1) // 2}[name]
    previous = {"spacing": "uniform"} if name != "pc" else \
        {"spacing": "uniform", "predictor": "reverse_diffusion", "few_steps": False}

    def gap(**kw):
        r = sample(gm, name, x, steps=steps, generator=torch.Generator().manual_seed(5), **kw)
        return float(gm.log_prob(r.x).mean()) - ref

    new, old = gap(), gap(**previous)
    assert old < -0.6 and abs(new) < abs(old) / 3, (new, old)
