"""GaussianMixture.condition: the exact conditional of the unobserved coordinates.

Checked against brute force: in 2-D, numerical conditioning of the joint density by quadrature
(``p(x_u | x_o) = p(x_u, x_o) / ∫ p(x_u', x_o) dx_u'``, scipy's adaptive quadrature, accurate to
~1e-10); in more dimensions, the identity ``log p(x_u | x_o) = log p(x) - log p_o(x_o)`` with the
observed coordinates' marginal mixture built independently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from scoresde import VESDE, GaussianMixture, SubVPSDE

F64 = torch.float64


def _two_d():
    """A 2-D mixture with full, correlated covariances (its conditionals are non-trivial)."""
    means = [[-0.8, 0.3], [0.5, -0.4], [0.9, 0.9]]
    covs = [[[0.20, 0.12], [0.12, 0.15]], [[0.05, -0.03], [-0.03, 0.10]], [[0.3, 0.0], [0.0, 0.02]]]
    return GaussianMixture([0.5, 0.3, 0.2], means, covs)


def _joint(gm, obs_index, x_obs, x_u):
    """The joint density at one point, written out for 2-D Gaussians (independent of the class)."""
    x = np.zeros(2)
    x[obs_index], x[1 - obs_index] = x_obs, x_u
    total = 0.0
    for w, m, c in zip(gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy()):
        r = x - m
        det = c[0, 0] * c[1, 1] - c[0, 1] ** 2
        quad = (c[1, 1] * r[0] ** 2 - 2 * c[0, 1] * r[0] * r[1] + c[0, 0] * r[1] ** 2) / det
        total += w * math.exp(-0.5 * quad) / (2 * math.pi * math.sqrt(det))
    return total


@pytest.mark.parametrize("obs_index", [0, 1])
@pytest.mark.parametrize("x_obs", [-0.5, 0.2, 0.95])
def test_conditional_density_matches_quadrature_of_the_joint(obs_index, x_obs):
    gm = _two_d()
    mask = torch.tensor([obs_index == 0, obs_index == 1])
    full = torch.zeros(2, dtype=F64)
    full[obs_index] = x_obs
    cond = gm.condition(mask, full)
    assert cond.dim == 1 and cond.event_shape == (1,)
    z, err = integrate.quad(lambda u: _joint(gm, obs_index, x_obs, u), -np.inf, np.inf, epsabs=0, epsrel=1e-11)
    assert err < 1e-9 * z
    us = np.linspace(-2.5, 2.5, 41)
    brute = np.log([_joint(gm, obs_index, x_obs, u) / z for u in us])
    ours = cond.log_prob(torch.tensor(us[:, None], dtype=F64)).numpy()
    np.testing.assert_allclose(ours, brute, rtol=0, atol=1e-8)
    # the first two moments by quadrature against the mixture's closed form
    m1 = integrate.quad(lambda u: u * _joint(gm, obs_index, x_obs, u) / z, -np.inf, np.inf, epsrel=1e-11)[0]
    m2 = integrate.quad(lambda u: u * u * _joint(gm, obs_index, x_obs, u) / z, -np.inf, np.inf, epsrel=1e-11)[0]
    w, mu, var = cond.weights, cond.means[:, 0], cond.covs[:, 0, 0]
    assert float((w * mu).sum()) == pytest.approx(m1, abs=1e-8)
    assert float((w * (var + mu**2)).sum()) == pytest.approx(m2, abs=1e-8)


def test_conditional_samples_follow_the_quadrature_cdf():
    """KS distance of 20 000 draws to the CDF by quadrature (at 200 quantiles of the draws, a lower
    bound of the KS statistic); at a fixed seed it must stay below the α = 1e-4 critical value
    √(ln(2/α)/(2n)) ≈ 0.0142 (the draws are exact: a larger value is a defect, not bad luck)."""
    gm = _two_d()
    cond = gm.condition(torch.tensor([True, False]), torch.tensor([0.2, float("nan")]))
    n = 20_000
    draws = cond.sample(n, generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    z = integrate.quad(lambda u: _joint(gm, 0, 0.2, u), -np.inf, np.inf, epsrel=1e-11)[0]
    cdf = np.vectorize(lambda v: integrate.quad(lambda u: _joint(gm, 0, 0.2, u) / z, -np.inf, v, epsrel=1e-10)[0])
    grid = np.quantile(draws, np.linspace(0.001, 0.999, 200))
    ks = np.max(np.abs(np.searchsorted(np.sort(draws), grid, side="right") / n - cdf(grid)))
    assert ks < math.sqrt(math.log(2 / 1e-4) / (2 * n))


@pytest.mark.parametrize("observed", [[0], [1, 3], [0, 2, 4], [0, 1, 2, 3]])
def test_conditional_is_joint_over_observed_marginal_in_5d(observed):
    gm = GaussianMixture.random(5, 3, seed=4)
    mask = torch.zeros(5, dtype=torch.bool)
    mask[observed] = True
    g = torch.Generator().manual_seed(1)
    x = gm.sample(1, generator=g)[0]
    cond = gm.condition(mask, x)
    marginal = GaussianMixture(gm.weights, gm.means[:, mask], gm.covs[:, mask][:, :, mask])
    xu = cond.sample(50, generator=g)
    full = x.expand(50, 5).clone()
    full[:, ~mask] = xu
    expected = gm.log_prob(full) - marginal.log_prob(x[mask][None])
    torch.testing.assert_close(cond.log_prob(xu), expected, rtol=0, atol=1e-9)


def test_event_shape_masks_sde_and_the_unobserved_order():
    gm = GaussianMixture.random(4, 2, seed=0, event_shape=(1, 2, 2), sde=SubVPSDE.linear())
    mask = torch.tensor([[[True, False], [False, True]]])
    x = gm.sample(1, generator=torch.Generator().manual_seed(0))[0]
    cond = gm.condition(mask, x)
    assert cond.sde is gm.sde and cond.event_shape == (2,)
    flat = gm.condition(mask.reshape(4), x.reshape(4))
    torch.testing.assert_close(cond.means, flat.means, rtol=0, atol=0)
    # a diagonal mixture's conditional component means are the unobserved coordinates' means
    diag = GaussianMixture([1.0, 2.0], [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    c = diag.condition(torch.tensor([False, True, False]), torch.tensor([0.0, 2.5, 0.0]))
    torch.testing.assert_close(c.means, torch.tensor([[0.0, 2.0], [3.0, 5.0]], dtype=F64))
    lik = torch.tensor([math.exp(-(2.5 - 1.0) ** 2 / 4) / math.sqrt(2), 2 * math.exp(-(2.5 - 4.0) ** 2 / 2)])
    torch.testing.assert_close(c.weights, (lik / lik.sum()).to(F64))


def test_nothing_observed_is_the_mixture_itself():
    gm = GaussianMixture.random(3, 2, seed=1, sde=VESDE.geometric())
    cond = gm.condition(torch.zeros(3, dtype=torch.bool), torch.full((3,), float("nan")))
    x = gm.sample(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cond.log_prob(x), gm.log_prob(x), rtol=0, atol=0)


def test_a_far_component_keeps_its_index_with_a_negligible_weight():
    gm = GaussianMixture([1.0, 1.0], [[0.0, 0.0], [100.0, 0.0]], 0.01)
    cond = gm.condition(torch.tensor([True, False]), torch.tensor([0.0, 0.0]))
    assert cond.n_components == 2 and float(cond.weights[0]) == 1.0 and 0 < float(cond.weights[1]) < 1e-300


@pytest.mark.parametrize("mask, x_obs, match", [
    (torch.tensor([1, 0]), torch.zeros(2), r"mask: got a tensor of dtype torch.int64; expected a torch.bool"),
    ([True, False], torch.zeros(2), r"mask: got list; expected a torch.bool tensor of shape \(2,\)"),
    (torch.tensor([True, False, True]), torch.zeros(2), r"mask has shape \(3,\): expected \(2,\)"),
    (torch.tensor([True, False]), torch.zeros(3), r"x_obs has shape \(3,\): expected \(2,\)"),
    (torch.tensor([True, False]), torch.tensor([float("nan"), 0.0]), r"x_obs: expected finite values at the observed"),
    (torch.tensor([True, True]), torch.zeros(2), r"mask: every coordinate is observed"),
])
def test_bad_input_is_one_clear_error(mask, x_obs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture.ring().condition(mask, x_obs)
