"""scoresde.samplers.impute: imputation with any model, against the exact conditional of the oracle.

What is exact, and so tested exactly: the observed part is kept bit for bit; an all-observed mask
returns the observation with 0 NFE; a mask with nothing observed is the plain sampler, bit for bit;
NFE counts. What is statistical: SMC against the closed-form conditional of ``GaussianMixture``
(``condition``), and replacement/RePaint where they are exact (coordinates independent of the
observed ones); tolerances are derived in each test from the Monte Carlo error.
"""

from __future__ import annotations

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.samplers import ddim, heun, pc, reverse_sde
from scoresde.samplers.base import sampler_grid
from scoresde.samplers.impute import impute, inpaint_mask

F64 = torch.float64
SDES = {"vp": VPSDE.linear(), "subvp": SubVPSDE.linear(), "ve": VESDE.geometric(0.01, 20.0)}


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class OnlyDuck:
    """Nothing but the documented duck type: ``.sde`` and ``.eps``."""

    def __init__(self, inner):
        self.sde, self._inner = inner.sde, inner

    def eps(self, x, t):
        return self._inner.eps(x, t)


def _problem(sde=None):
    gm = GaussianMixture.random(4, 3, seed=2, sde=sde)
    mask = torch.tensor([True, False, True, False])
    x = gm.sample(1, generator=g(7))
    return gm, mask, x


# Exact behaviour -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["replacement", "repaint", "smc"])
def test_observed_part_is_kept_exactly_and_shape_dtype_follow(method):
    gm, mask, x = _problem()
    obs = x.expand(5, 4).clone().float()
    obs[:, ~mask] = float("nan")  # never read
    res = impute(OnlyDuck(gm), obs, mask, method=method, steps=6, generator=g(0))
    assert res.x.shape == obs.shape and res.x.dtype == torch.float32 and res.t_end == 0.0
    assert torch.equal(res.x[:, mask], obs[:, mask]) and torch.isfinite(res.x).all()
    assert res.info["method"] == method


@pytest.mark.parametrize("method, options, nfe", [
    ("replacement", {}, 7),  # K + 1
    ("replacement", {"sampler": "sde"}, 7),
    ("replacement", {"sampler": "ancestral"}, 7),
    ("replacement", {"sampler": "heun"}, 13),  # 2K + 1
    ("replacement", {"sampler": "pc", "sampler_options": {"corrector_steps": 2}}, 19),  # 3K + 1
    ("repaint", {"resamplings": 3}, 19),  # K r + 1
    ("repaint", {"resamplings": 2, "sampler": "heun"}, 25),  # 2 K r + 1
    ("smc", {"particles": 5}, 7),  # K + 1 batched calls
])
def test_nfe_is_counted_exactly(method, options, nfe):
    gm, mask, x = _problem()
    calls = []

    class Counting(OnlyDuck):
        def eps(self, x, t):
            calls.append(x.shape[0])
            return super().eps(x, t)

    res = impute(Counting(gm), x.expand(3, 4).clone(), mask, method=method, steps=6, generator=g(0), **options)
    assert res.nfe == len(calls) == nfe
    assert set(calls) == {3 * options.get("particles", 1)}


@pytest.mark.parametrize("method", ["replacement", "repaint", "smc"])
def test_all_observed_returns_the_observation_without_a_model_call(method):
    gm, _, x = _problem()
    obs = x.expand(2, 4).clone()
    res = impute(gm, obs, torch.ones(4, dtype=torch.bool), method=method, steps=5, generator=g(0))
    assert res.nfe == 0 and torch.equal(res.x, obs) and res.x is not obs


@pytest.mark.parametrize("method, sampler, plain", [
    ("replacement", "ddim", lambda m, x, grid, gen: ddim(m, x, times=grid, eta=1.0, generator=gen)),
    ("repaint", "sde", lambda m, x, grid, gen: reverse_sde(m, x, times=grid, generator=gen)),
    ("replacement", "heun", lambda m, x, grid, gen: heun(m, x, times=grid, generator=gen)),
    ("replacement", "pc", lambda m, x, grid, gen: pc(m, x, times=grid, generator=gen)),
    ("smc", None, lambda m, x, grid, gen: ddim(m, x, times=grid, eta=1.0, generator=gen)),
])
def test_nothing_observed_is_plain_sampling_bit_for_bit(method, sampler, plain):
    gm, _, _ = _problem(SubVPSDE.linear())
    obs = torch.full((6, 4), float("nan"), dtype=F64)
    opts = {} if sampler is None else {"sampler": sampler}
    res = impute(gm, obs, torch.zeros(4, dtype=torch.bool), method=method, steps=8, generator=g(3), **opts)
    gen = g(3)
    x_T = gm.sde.prior_sample((6, 4), generator=gen, dtype=F64)
    ref = plain(gm, x_T, sampler_grid(gm.sde, 8, None, True), gen)
    assert torch.equal(res.x, ref.x) and res.nfe == ref.nfe


def test_a_mask_per_example_and_the_same_seed_the_same_result():
    gm, _, x = _problem()
    masks = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, True, True]])
    obs = x.expand(3, 4).clone()
    a = impute(gm, obs, masks, method="smc", particles=4, steps=5, generator=g(1))
    b = impute(gm, obs, masks, method="smc", particles=4, steps=5, generator=g(1))
    c = impute(gm, obs, masks, method="smc", particles=4, steps=5, generator=g(2))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(a.x[masks], obs[masks]) and torch.equal(a.x[2], obs[2])
    assert a.info["ess"].shape == (6, 3) and a.info["resampled"].shape == (5, 3)


def test_smc_reports_ess_and_resamples_below_the_threshold():
    gm, mask, x = _problem()
    obs = x.expand(4, 4).clone()
    never = impute(gm, obs, mask, method="smc", particles=8, steps=10, ess_threshold=0.0, generator=g(0))
    always = impute(gm, obs, mask, method="smc", particles=8, steps=10, ess_threshold=1.0, generator=g(0))
    assert not never.info["resampled"].any()
    ess = always.info["ess"]
    assert ((ess >= 1 - 1e-9) & (ess <= 8 + 1e-9)).all()
    assert torch.equal(always.info["resampled"], ess[:-1] < 8)
    one = impute(gm, obs, mask, method="smc", particles=1, steps=10, generator=g(0))
    assert torch.allclose(one.info["ess"], torch.ones(11, 4, dtype=F64)) and not one.info["resampled"].any()


# Against the exact conditional -----------------------------------------------------------------
def _moments_match(x: torch.Tensor, cond: GaussianMixture, n_se: float = 5.0, bias: float = 0.0):
    """Sample mean and variance per coordinate within ``n_se`` standard errors (plus an allowance
    ``bias`` for the method's known O(1/steps, 1/particles) error) of the exact conditional's."""
    w, mu, cov = cond.weights, cond.means, cond.covs
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None] * (torch.diagonal(cov, dim1=1, dim2=2) + mu**2)).sum(0)
    var = second - mean**2
    n = x.shape[0]
    se_mean = (var / n).sqrt()
    # var of the sample variance ≈ (μ4 - σ⁴)/n ≤ 2σ⁴/n · 3 for the mixtures used (bounded kurtosis)
    se_var = (6 * var**2 / n).sqrt()
    assert ((x.mean(0) - mean).abs() < n_se * se_mean + bias).all(), (x.mean(0), mean, se_mean)
    assert ((x.var(0) - var).abs() < n_se * se_var + bias).all(), (x.var(0), var, se_var)


@pytest.mark.parametrize("sde", SDES, ids=str)
@pytest.mark.parametrize("method, options", [
    ("replacement", {}), ("replacement", {"sampler": "sde"}), ("repaint", {"resamplings": 2}),
    ("smc", {"particles": 4}),
])
def test_every_method_is_exact_where_the_unobserved_part_is_independent(sde, method, options):
    """Diagonal covariances and one component: x_u is independent of x_o, so its conditional is its
    marginal and every method is exact up to the step error. 2000 draws: 5 standard errors."""
    gm = GaussianMixture([1.0], [[0.3, -0.5, 0.8]], [[0.2, 0.05, 0.1]], sde=SDES[sde])
    mask = torch.tensor([True, False, False])
    obs = torch.tensor([[1.5, 0.0, 0.0]], dtype=F64).expand(2000, 3).clone()
    res = impute(gm, obs, mask, method=method, steps=60, spacing="logsnr", generator=g(0), **options)
    cond = gm.condition(mask, obs[0])
    _moments_match(res.x[:, 1:], cond, bias=0.01)


@pytest.mark.parametrize("sde", SDES, ids=str)
def test_smc_matches_a_correlated_gaussian_conditional(sde):
    """One correlated Gaussian: the conditional mean moves with the observation (replacement's
    weak spot). SMC with 8 particles, 50 steps, 1000 draws: moments within 5 standard errors plus 0.02."""
    cov = torch.tensor([[0.5, 0.3, 0.1], [0.3, 0.5, -0.1], [0.1, -0.1, 0.3]], dtype=F64)
    gm = GaussianMixture([1.0], [[0.0, 0.2, -0.1]], cov[None], sde=SDES[sde])
    mask = torch.tensor([True, False, False])
    obs = torch.tensor([[1.2, 0.0, 0.0]], dtype=F64).expand(1000, 3).clone()
    res = impute(gm, obs, mask, method="smc", particles=8, steps=50, spacing="logsnr", generator=g(1))
    _moments_match(res.x[:, 1:], gm.condition(mask, obs[0]), bias=0.02)


# Bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"mask": torch.tensor([True, False])}, ValueError,
     r"mask has shape \(2,\): expected \(4,\) \(one mask\) or \(3, 4\) \(one per example\)"),
    ({"mask": torch.ones(4)}, TypeError, r"mask: got a tensor of dtype torch.float32; expected a torch.bool tensor"),
    ({"mask": [True, False, True, False]}, TypeError, r"mask: got list; expected a torch.bool tensor"),
    ({"observed": torch.tensor([[float("nan"), 0, 0, 0]] * 3, dtype=F64)}, ValueError,
     r"observed: 3 of the 6 observed values \(mask True\) are NaN or infinite"),
    ({"observed": torch.zeros(3, 4, dtype=torch.int64)}, TypeError,
     r"observed: got a tensor of dtype torch.int64; expected a floating-point"),
    ({"method": "inpaint"}, ValueError, r"method='inpaint': expected one of replacement, repaint, smc"),
    ({"particles": 0}, ValueError, r"particles=0: expected an integer ≥ 1"),
    ({"particles": 2.5}, ValueError, r"particles=2.5: expected an integer ≥ 1"),
    ({"ess_threshold": 1.5}, ValueError, r"ess_threshold=1.5: expected a number in \[0, 1\]"),
    ({"method": "repaint", "resamplings": 0}, ValueError, r"resamplings=0: expected an integer ≥ 1"),
    ({"method": "replacement", "sampler": "dpmpp"}, ValueError, r"sampler='dpmpp': .* a multistep solver"),
    ({"method": "replacement", "sampler": "ode"}, ValueError, r"sampler='ode': .* an adaptive solver"),
    ({"method": "replacement", "sampler": "euler"}, ValueError, r"sampler='euler': expected one of ddim, ancestral"),
    ({"method": "replacement", "sampler_options": {"steps": 3}}, ValueError,
     r"sampler_options: 'steps' is set by impute itself"),
    ({"method": "replacement", "sampler_options": {"bogus": 1}}, ValueError, r"option 'bogus': the ddim sampler"),
    ({"method": "smc", "resamplings": 2}, ValueError, r"option 'resamplings': the smc method accepts particles, "),
    ({"steps": 0}, ValueError, r"steps=0: expected an integer ≥ 1"),
    ({"spacing": "log"}, ValueError, r"spacing='log': expected one of uniform"),
])
def test_bad_input_is_one_clear_error(kwargs, error, match):
    gm, mask, x = _problem()
    args = {"observed": x.expand(3, 4).clone(), "mask": mask, **kwargs}
    with pytest.raises(error, match=match):
        impute(gm, args.pop("observed"), args.pop("mask"), steps=args.pop("steps", 4), **args)


def test_ancestral_replacement_refuses_ve_and_an_sde_without_gaussian_marginals():
    gm, mask, x = _problem(VESDE.geometric())
    with pytest.raises(ValueError, match="needs a VP-SDE"):
        impute(gm, x, mask, method="replacement", sampler="ancestral", steps=3)

    class Bare:
        sde = object()

        def eps(self, x, t):
            return x

    with pytest.raises(ValueError, match=r"model.sde=object: the smc method needs an SDE with Gaussian marginals"):
        impute(Bare(), x, mask, method="smc", steps=3)


# Masks -----------------------------------------------------------------------------------------
def test_inpaint_masks():
    bottom = inpaint_mask("bottom", (1, 8, 8))
    assert bottom.dtype == torch.bool and bottom[0, :4].all() and not bottom[0, 4:].any()
    right = inpaint_mask("right", (3, 5, 5))
    assert right[:, :, :3].all() and not right[:, :, 3:].any()
    center = inpaint_mask("center", (1, 8, 8))
    assert int((~center).sum()) == 16 and not center[0, 2:6, 2:6].any()
    rnd = inpaint_mask("random:0.5", (2, 8, 8), generator=g(0))
    assert torch.equal(rnd[0], rnd[1]) and torch.equal(rnd, inpaint_mask("random:0.5", (2, 8, 8), generator=g(0)))
    # 64 pixels hidden with p = 0.5: 32 ± 4 (one sd); 5 sd either way never happens at this seed
    assert abs(int((~rnd[0]).sum()) - 32) < 5 * math.sqrt(16)
    for bad in ("top", "random:1.5", "random:x", "random:0"):
        with pytest.raises(ValueError, match=f"mask '{bad}': expected"):
            inpaint_mask(bad, (1, 8, 8))
