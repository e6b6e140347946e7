"""The model contract (anything with ``.sde`` and ``.eps``), explicit grids, every step count,
the default end time, and the checks on the model's output and on ``x_T``."""

import math

import pytest
import torch

from scoresde import VPSDE, GaussianMixture, bits_per_dim, ddpm_vlb_bits_per_dim, log_likelihood
from scoresde.core.model import eps_of, score_of, x0_of
from scoresde.samplers import SAMPLERS, sample
from scoresde.samplers.base import default_t_eps, sampler_grid

GRIDDED = ("ancestral", "ddim", "dpmpp", "heun", "pc", "sde")


class Duck:
    """A user's model: only ``.sde`` and ``.eps`` (no base class), wrapping the oracle's exact ε."""

    def __init__(self, gm):
        self.sde, self._gm = gm.sde, gm

    def eps(self, x, t):
        return self._gm.eps(x, t)


class Broken:
    """``.sde`` and an ``.eps`` that returns ``out(x)``: a wrong shape or non-finite values."""

    def __init__(self, sde, out):
        self.sde, self.out = sde, out

    def eps(self, x, t):
        return self.out(x)


def _x(n, dim, seed=0, dtype=torch.float64):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


# The contract ------------------------------------------------------------------------------
def test_duck_has_only_sde_and_eps():
    duck = Duck(GaussianMixture.ring())
    assert not hasattr(duck, "score") and not hasattr(duck, "x0")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.ddpm(50)], ids=["linear", "ddpm50"])
def test_every_sampler_runs_a_duck_typed_model_as_the_oracle(name, sde):
    """The samplers reach a model only through eps: a duck gives bit-identical samples to the oracle."""
    gm = GaussianMixture.random(2, 3, seed=1, sde=sde)
    x = _x(8, 2)
    ours = sample(Duck(gm), name, x, steps=6, generator=_gen())
    ref = sample(gm, name, x, steps=6, generator=_gen())
    assert torch.equal(ours.x, ref.x) and ours.nfe == ref.nfe and torch.isfinite(ours.x).all()


def test_likelihood_bits_per_dim_and_vlb_take_a_duck_typed_model():
    gm = GaussianMixture.random(2, 2, seed=4)
    x = gm.sample(6, generator=_gen(1))
    a, b = log_likelihood(Duck(gm), x, t_eps=1e-3), log_likelihood(gm, x, t_eps=1e-3)
    assert torch.equal(a.log_prob, b.log_prob)
    # and it is the oracle's exact log-density at t_eps (measured gap 1.9e-3: dopri5 at
    # rtol = atol = 1e-5 and the prior N(0, I) standing in for p_1)
    torch.testing.assert_close(a.log_prob, gm.log_prob(x, 1e-3), rtol=0, atol=5e-3)
    gm = gm.with_sde(VPSDE.ddpm(40))
    duck = Duck(gm)
    x_int = torch.randint(0, 16, (5, 2), generator=_gen(2))
    bpd = [bits_per_dim(m, x_int, 16, generator=_gen(5)).bpd for m in (duck, gm)]
    vlb = [ddpm_vlb_bits_per_dim(m, x_int, 16, generator=_gen(5)).bpd for m in (duck, gm)]
    assert bpd[0] == bpd[1] and vlb[0] == vlb[1] and all(math.isfinite(v) for v in bpd + vlb)


def test_score_and_x0_helpers_are_the_eps_formulas():
    gm = GaussianMixture.random(3, 2, seed=0)
    x, t = _x(5, 3), torch.full((5,), 0.3, dtype=torch.float64)
    eps, sigma, alpha = gm.eps(x, t), gm.sde.sigma(t)[:, None], gm.sde.alpha(t)[:, None]
    torch.testing.assert_close(score_of(Duck(gm), x, t), -eps / sigma, rtol=1e-14, atol=0)
    torch.testing.assert_close(x0_of(Duck(gm), x, t), (x - sigma * eps) / alpha, rtol=1e-14, atol=0)
    torch.testing.assert_close(score_of(Duck(gm), x, t), gm.score(x, t), rtol=1e-9, atol=1e-9)  # exact score
    assert score_of(Duck(gm), x.float(), t).dtype == torch.float32


@pytest.mark.parametrize("out", [lambda x: x[:, :1], lambda x: x[0], lambda x: x.sum(), lambda x: x.tolist()],
                         ids=["(B,1)", "(D,)", "scalar", "list"])
def test_eps_of_refuses_any_other_shape(out):
    with pytest.raises(ValueError, match=r"model.eps returned .*expected a tensor of x's shape \(4, 3\)"):
        eps_of(Broken(VPSDE.linear(), out), _x(4, 3), 0.5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_wrong_eps_shape_is_one_clear_error_everywhere(name):
    model = Broken(VPSDE.linear(), lambda x: x[:, :1])  # would broadcast silently
    with pytest.raises(ValueError, match="model.eps returned"):
        sample(model, name, _x(4, 3), steps=3, generator=_gen())


def test_wrong_eps_shape_in_likelihood_and_vlb():
    model = Broken(VPSDE.ddpm(20), lambda x: x[:, :1])
    with pytest.raises(ValueError, match="model.eps returned"):
        log_likelihood(model, _x(4, 3))
    with pytest.raises(ValueError, match="model.eps returned"):
        ddpm_vlb_bits_per_dim(model, torch.randint(0, 4, (4, 3)), 4)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_eps_is_one_error_naming_the_sampler(name, bad):
    model = Broken(VPSDE.linear(), lambda x: torch.full_like(x, bad))
    with pytest.raises(ValueError, match=f"{name}"):
        sample(model, name, _x(4, 3), steps=3, generator=_gen())


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("x_T", [torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.bool),
                                 [[0.0, 1.0]]], ids=["int64", "bool", "list"])
def test_non_floating_x_T_is_a_type_error(name, x_T):
    with pytest.raises(TypeError, match=f"x_T: the {name} sampler got"):
        sample(GaussianMixture.random(3, 2), name, x_T, steps=3)


# Explicit grids --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRIDDED)
@pytest.mark.parametrize("denoise", [True, False])
def test_times_and_timesteps_give_the_grid_used(name, denoise):
    """``timesteps`` k are the times (k + 1)/N; the same grid as ``times`` gives the same run."""
    gm = GaussianMixture.random(2, 2, seed=2, sde=VPSDE.ddpm(100))
    x, ks = _x(5, 2), [99, 70, 41, 20, 9, 3, 0]
    a = sample(gm, name, x, timesteps=ks, denoise=denoise, generator=_gen())
    b = sample(gm, name, x, times=[(k + 1) / 100 for k in ks], denoise=denoise, generator=_gen())
    torch.testing.assert_close(a.info["grid"], torch.tensor(ks, dtype=torch.float64).add(1) / 100,
                               rtol=0, atol=0)
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe
    assert a.t_end == (0.0 if denoise else 0.01)


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpmpp", "heun"])
def test_a_grid_from_steps_equals_the_same_grid_given_as_times(name):
    gm = GaussianMixture.random(2, 2, seed=2, sde=VPSDE.cosine())
    x = _x(5, 2)
    a = sample(gm, name, x, steps=7, t_eps=0.01, generator=_gen())
    b = sample(gm, name, x, times=a.info["grid"].tolist(), generator=_gen())
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe


@pytest.mark.parametrize("kw,match", [
    ({"times": [0.5, 0.7]}, "strictly decreasing"), ({"times": [1.5, 0.5]}, r"in \(0, 1\]"),
    ({"times": [0.5, 0.0]}, r"in \(0, 1\]"), ({"times": [0.5, math.nan]}, "times"),
    ({"times": []}, "non-empty"), ({"times": [[0.5]]}, "1-D"),
    ({"timesteps": [5, 5]}, "strictly decreasing"), ({"timesteps": [100, 5]}, r"0\.\.99"),
    ({"timesteps": [5, -1]}, r"0\.\.99"), ({"timesteps": [5.5, 1]}, "integers"),
    ({"timesteps": [5], "times": [0.5]}, "not both"), ({"timesteps": [5], "steps": 3}, "steps=3"),
    ({"times": [0.5], "t_eps": 0.1}, "t_eps=0.1"),
])
def test_bad_explicit_grids(kw, match):
    gm = GaussianMixture.random(2, 2, sde=VPSDE.ddpm(100))
    with pytest.raises(ValueError, match=match):
        sample(gm, "ddim", _x(2, 2), **kw)


def test_timesteps_need_a_discrete_schedule():
    with pytest.raises(ValueError, match="discrete schedule"):
        sample(GaussianMixture.random(2, 2), "ddim", _x(2, 2), timesteps=[5, 1])


def test_ode_takes_no_grid():
    with pytest.raises(ValueError, match="option 'times'"):
        sample(GaussianMixture.random(2, 2), "ode", _x(2, 2), times=[1.0, 0.5])


# Every step count --------------------------------------------------------------------------------
def _intervals(name, steps, n):
    """Grid intervals for ``steps`` with defaults (denoise): ancestral/ddim count the step to 0."""
    k = steps - 1 if name in ("ancestral", "ddim") else steps
    if name in ("heun", "pc") and steps < 5:  # few-step rules: 2·steps one-call intervals (same NFE)
        k = 2 * steps
    return min(k, n - 1) if n is not None else k


def _nfe(name, steps, k):
    return k + 1 if name in ("heun", "pc") and steps < 5 else NFE[name](k)


NFE = {"ancestral": lambda k: k + 1, "ddim": lambda k: k + 1, "dpmpp": lambda k: k + 1,
       "heun": lambda k: 2 * k + 1, "pc": lambda k: 2 * k + 1, "sde": lambda k: k + 1}


@pytest.mark.parametrize("name", GRIDDED)
def test_every_step_count_runs_with_defaults_on_a_discrete_schedule(name):
    """steps = 1..N on N = 50 (a re-spaced grid of distinct i/N; pc and sde collapse to N - 1
    intervals at steps = N, where t_eps = 1/N leaves no room), and a few counts on N = 1000."""
    for n, counts in ((50, range(1, 51)), (1000, (1, 2, 9, 31, 49, 137, 999, 1000))):
        gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm(n))
        x = _x(3, 2)
        for steps in counts:
            res = sample(gm, name, x, steps=steps, generator=_gen())
            grid = res.info["grid"]
            k = _intervals(name, steps, n)
            assert grid.numel() == k + 1 and torch.all(grid[1:] < grid[:-1]), (n, steps)
            assert torch.equal(torch.round(grid * n) / n, grid) and float(grid[0]) == 1.0
            assert res.nfe == _nfe(name, steps, k) and res.t_end == 0.0 and torch.isfinite(res.x).all(), (n, steps)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.cosine()], ids=["linear", "cosine"])
def test_any_step_count_on_a_continuous_schedule(name, sde):
    gm = GaussianMixture.random(2, 2, seed=0, sde=sde)
    for steps in (1, 2, 3, 13, 49, 50, 301):
        res = sample(gm, name, _x(3, 2), steps=steps, generator=_gen())
        assert torch.isfinite(res.x).all() and res.t_end == 0.0
        if name != "ode":
            assert res.nfe == _nfe(name, steps, _intervals(name, steps, None))


def test_dpmpp_49_steps_on_ddpm_and_every_spacing():
    gm = GaussianMixture.random(2, 2, seed=0, sde=VPSDE.ddpm())
    for spacing in ("logsnr", "karras", "uniform", "quadratic"):
        for steps in (49, 300, 999):
            res = sample(gm, "dpmpp", _x(3, 2), steps=steps, spacing=spacing)
            assert res.nfe == steps + 1 and torch.isfinite(res.x).all()


def test_respacing_keeps_the_rounded_grid_where_it_is_distinct():
    """Where rounding to i/N leaves distinct times, re-spacing changes nothing."""
    sde = VPSDE.ddpm()
    for steps in (5, 10, 20):
        grid = sampler_grid(sde, steps, 1e-3, False, "uniform").flip(0)
        want = torch.round((1e-3 + (1 - 1e-3) * torch.linspace(0, 1, steps + 1, dtype=torch.float64)) * 1000)
        torch.testing.assert_close(grid * 1000, want, rtol=0, atol=1e-9)


def test_explicit_t_eps_with_too_many_steps_names_the_limit():
    gm = GaussianMixture.random(2, 2, sde=VPSDE.ddpm(100))
    with pytest.raises(ValueError, match="at most 90 distinct steps"):
        sample(gm, "dpmpp", _x(2, 2), steps=95, t_eps=0.1)


# The default end time --------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [VPSDE.ddpm(), VPSDE.linear(), VPSDE.cosine()], ids=["ddpm", "linear", "cosine"])
def test_default_t_eps_is_later_for_few_steps_and_the_sdes_own_from_30(sde):
    t = [default_t_eps(sde, k) for k in range(1, 60)]
    assert all(a >= b for a, b in zip(t, t[1:]))  # non-increasing in K
    assert t[0] > 0.2 and t[-1] == sde.sampling_eps and default_t_eps(sde, 1000) == sde.sampling_eps


@pytest.mark.parametrize("name", GRIDDED)
def test_default_t_eps_is_used_only_when_denoising(name):
    gm = GaussianMixture.random(2, 2, seed=0)
    x = _x(3, 2)
    k = _intervals(name, 8, None)
    res = sample(gm, name, x, steps=8, generator=_gen())
    same = sample(gm, name, x, steps=8, t_eps=default_t_eps(gm.sde, k), generator=_gen())
    assert torch.equal(res.x, same.x)
    raw = sample(gm, name, x, steps=8, denoise=False, generator=_gen())
    assert raw.t_end == gm.sde.sampling_eps
