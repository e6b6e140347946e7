"""VPSDE methods on data: marginals, drifts, prior, shapes, dtypes and bad input."""

import math

import pytest
import torch
import torchsde
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, GaussianMixture, append_dims
from scoresde.core.sde import as_time
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
