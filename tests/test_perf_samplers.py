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
