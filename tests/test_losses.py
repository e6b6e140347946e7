"""Denoising score matching: the oracle's ε* minimises it, importance sampling is unbiased and
reduces variance, time sampling respects its grid and range. Ground truth: the exact oracle."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde.core.analytic import GaussianMixture
from scoresde.core.losses import dsm_loss, likelihood_weight, sample_time
from scoresde.core.model import ScoreModel
from scoresde.core.sde import VPSDE
from scoresde.nets import MLP

ORACLE = GaussianMixture.ring()


class Perturbed:
    """ε_θ = ε* + δ with δ = a ε* + c; records δ of the last call."""

    def __init__(self, oracle, a, c):
        self.oracle, self.sde, self.a, self.c = oracle, oracle.sde, a, c

    def eps(self, x, t):
        e = self.oracle.eps(x, t)
        self.delta = self.a * e + torch.as_tensor(self.c, dtype=e.dtype)
        return e + self.delta


schedules = st.one_of(
    st.builds(VPSDE.linear, st.floats(0.05, 1.0), st.floats(5.0, 30.0)),
    st.builds(VPSDE.cosine, st.floats(0.001, 0.05)),
    st.builds(VPSDE.ddpm, st.integers(10, 1000)),
)


def _n_steps(sde, time_sampling):
    return 50 if time_sampling == "discrete" and sde.discrete_steps is None else None


@settings(max_examples=10)
@given(sde=schedules, weighting=st.sampled_from(["simple", "likelihood"]),
       time_sampling=st.sampled_from(["continuous", "discrete"]), a=st.floats(-0.3, 0.3),
       c=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)), seed=st.integers(0, 2**16))
def test_oracle_eps_minimises_the_loss(sde, weighting, time_sampling, a, c, seed):
    """loss(ε* + δ) - loss(ε*) = w|δ|²/D + 2 w δ·(ε* - ε)/D per sample, with common random
    numbers. The cross term has mean zero exactly when ε* = E[ε | x_t]: check it to 5 standard
    errors, and that the perturbed loss is higher."""
    oracle = ORACLE.with_sde(sde)
    n = 1000
    x0 = oracle.sample(n, generator=torch.Generator().manual_seed(seed))
    kw = dict(weighting=weighting, time_sampling=time_sampling, n_steps=_n_steps(sde, time_sampling))
    base = dsm_loss(oracle, x0, generator=torch.Generator().manual_seed(seed + 1), **kw)
    model = Perturbed(oracle, a, c)
    pert = dsm_loss(model, x0, generator=torch.Generator().manual_seed(seed + 1), **kw)
    assert torch.equal(base.t, pert.t)
    diff = pert.per_sample - base.per_sample
    # The same generator seed reproduces the loss weights w (drawn first, with t).
    weight = sample_time(sde, n, generator=torch.Generator().manual_seed(seed + 1), **kw)[1]
    gap = weight * (model.delta**2).mean(1)  # w |δ|²/D
    cross = diff - gap
    se = cross.std() / math.sqrt(n)
    assert abs(cross.mean()) <= 5 * se + 1e-12  # 5 standard errors
    if gap.mean() > 10 * se:  # the perturbation is resolvable at this n
        assert pert.loss > base.loss


def _perturbed_losses(sde, time_sampling, t_eps, importance_sampling, seed, n=10000):
    oracle = ORACLE.with_sde(sde)
    model = Perturbed(oracle, 0.0, (0.2, -0.1))
    x0 = oracle.sample(n, generator=torch.Generator().manual_seed(seed))
    return dsm_loss(model, x0, weighting="likelihood", time_sampling=time_sampling, t_eps=t_eps,
                    n_steps=_n_steps(sde, time_sampling), importance_sampling=importance_sampling,
                    generator=torch.Generator().manual_seed(seed + 1)).per_sample


@pytest.mark.parametrize("sde,time_sampling,t_eps,lower_variance", [
    (VPSDE.linear(), "continuous", 1e-3, True), (VPSDE.cosine(), "continuous", 1e-3, True),
    (VPSDE.ddpm(), "continuous", 1e-3, True), (VPSDE.ddpm(), "discrete", None, True),
    (VPSDE.linear(), "discrete", None, True),
    # Large t_eps: λ varies little, so a weight Z instead of Z/(1 - t_eps) would show (25% off);
    # IS then has no variance to remove (the per-sample error's own spread dominates).
    (VPSDE.linear(), "continuous", 0.2, False), (VPSDE.cosine(), "continuous", 0.05, False)])
def test_importance_sampling_same_expectation_lower_variance(sde, time_sampling, t_eps, lower_variance):
    """Both estimate E_{t~U}[λ(t) E‖ε_θ - ε‖²/D]; independent draws, so the difference of the
    means has standard error √(se_is² + se_u²): agree to 5 of them. Where λ spans orders of
    magnitude (t_eps = 1e-3: λ ≈ 1/t), IS has far lower variance (measured: ≈ 10× lower)."""
    is_ = _perturbed_losses(sde, time_sampling, t_eps, True, seed=1)
    uni = _perturbed_losses(sde, time_sampling, t_eps, False, seed=2)
    se = math.sqrt(is_.var() / len(is_) + uni.var() / len(uni))
    assert abs(is_.mean() - uni.mean()) < 5 * se  # 5 standard errors
    if lower_variance:
        assert is_.var() < 0.5 * uni.var()


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.cosine(), VPSDE.ddpm(100)])
@pytest.mark.parametrize("t_eps", [1e-3, 0.3])
def test_importance_sampled_time_has_the_right_cdf(sde, t_eps):
    """P(t ≤ t_m) = (Φ(B(t_m)) - Φ(B(t_eps))) / Z with Φ(B) = log(e^B - 1) (the closed-form
    integral of β/σ²), checked at three points to 5 binomial standard errors; the weight is Z/(1-t_eps)."""
    n = 20000
    g = torch.Generator().manual_seed(0)
    t, w = sample_time(sde, n, weighting="likelihood", t_eps=t_eps, generator=g)
    assert t.dtype == torch.float64 and t.min() >= t_eps and t.max() <= 1

    def phi(s):
        b = float(sde.integrated_beta(s))
        return math.log(math.expm1(b))

    z = phi(1.0) - phi(t_eps)
    assert w[0].item() == pytest.approx(z / (1 - t_eps), rel=1e-12)
    grid = torch.linspace(t_eps, 1, 20001, dtype=torch.float64)  # trapezoid mean of λ: same constant
    assert torch.trapezoid(likelihood_weight(sde, grid), grid).item() / (1 - t_eps) == pytest.approx(
        w[0].item(), rel=2e-3)
    for q in (0.1, 0.5, 0.9):
        t_m = t_eps + q * (1 - t_eps)
        p = (phi(t_m) - phi(t_eps)) / z
        assert abs((t <= t_m).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("weighting", ["simple", "likelihood"])
@pytest.mark.parametrize("sde,n_steps", [(VPSDE.ddpm(20), None), (VPSDE.linear(), 7)])
def test_discrete_time_sampling_hits_only_grid_points(weighting, sde, n_steps):
    n_grid = n_steps or sde.discrete_steps
    t, _ = sample_time(sde, 5000, weighting=weighting, time_sampling="discrete", n_steps=n_steps,
                       generator=torch.Generator().manual_seed(0))
    i = t * n_grid
    assert torch.equal(i, torch.round(i)) and i.min() >= 1 and i.max() <= n_grid
    assert len(torch.unique(i)) == n_grid  # 5000 draws see every one of ≤ 20 points


def test_discrete_needs_a_grid():
    with pytest.raises(ValueError, match="n_steps"):
        sample_time(VPSDE.linear(), 4, time_sampling="discrete")


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.ddpm(50)])
def test_continuous_time_range_defaults_to_sampling_eps(sde):
    out = dsm_loss(ORACLE.with_sde(sde), ORACLE.sample(4000), generator=torch.Generator().manual_seed(0))
    assert out.t.dtype == torch.float64 and out.t.shape == (4000,)
    assert out.t.min() >= sde.sampling_eps and out.t.max() <= 1
    assert out.t.min() < sde.sampling_eps + 0.01 and out.t.max() > 0.99  # the whole range is used


def test_simple_loss_of_zero_model_is_one():
    """ε_θ = 0: the loss is mean_d ε_d², whose expectation is 1; 4000·2 values → se = √(2/8000)."""
    zero = Perturbed(ORACLE, -1.0, (0.0, 0.0))
    out = dsm_loss(zero, ORACLE.sample(4000), generator=torch.Generator().manual_seed(0))
    assert abs(out.loss.item() - 1) < 5 * math.sqrt(2 / 8000)


def test_network_loss_dtypes_and_gradients():
    torch.manual_seed(0)
    model = ScoreModel(MLP((2,), hidden=16, depth=1, time_dim=8), VPSDE.linear())
    x0 = ORACLE.sample(64, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dsm_loss(model, x0, weighting="likelihood", generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32 and out.per_sample.shape == (64,) and out.t.dtype == torch.float64
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    again = dsm_loss(model, x0, weighting="likelihood", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.t, out.t)  # deterministic given the generator


@pytest.mark.parametrize("kwargs", [dict(weighting="vlb"), dict(time_sampling="uniform"),
                                    dict(t_eps=0.0), dict(t_eps=1.5)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        dsm_loss(ORACLE, ORACLE.sample(4), **kwargs)
