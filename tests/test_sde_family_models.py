"""Everything on every SDE: the exact oracle, the samplers, the likelihood, the losses, the
configs and the training program, for sub-VP and VE next to VP (closed forms; docs/sdes.md).

Sampler tolerances are those of ``tests/test_samplers_distribution.py`` (5 Monte Carlo standard
errors plus a first-order discretisation allowance ``A/K``); for the high-order ``dpmpp`` and
``heun`` the allowance of the adaptive ``ode`` solver.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VESDE, VPSDE, GaussianMixture, ScoreModel, SubVPSDE
from scoresde.core.losses import dsm_loss, sample_time
from scoresde.likelihood.ode import log_likelihood
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.likelihood.vlb_grid import grid_vlb_bits_per_dim
from scoresde.samplers import sample
from scoresde.train import main as train_main
from scoresde.training.build import build_model, build_sde
from scoresde.training.config import config_from_dict, model_keys

from .strategies import all_sdes
from .test_samplers_distribution import A_COV, _check_gaussian, _check_mixture, _moments_gaussian
from .train_util import TINY_DIGITS, write_config

NON_VP = [SubVPSDE.linear(), VESDE.geometric(0.01, 5.0), VESDE.smld(1000, 0.01, 5.0)]
N_SAMPLES, STEPS = 3000, 200
ALLOWANCE = {**A_COV, "dpmpp": 4.0, "heun": 4.0}
OPTIONS = {"ddim": {"eta": 1.0}, "pc": {"norms": "batch"}, "sde": {}, "ode": {}, "dpmpp": {},
           "heun": {}}


# --- the oracle ------------------------------------------------------------------------------

@settings(max_examples=20)
@given(sde=all_sdes(), t=st.floats(1e-3, 1.0), seed=st.integers(0, 1000))
def test_oracle_score_is_the_gradient_of_its_log_density_on_every_sde(sde, t, seed):
    gm = GaussianMixture.random(3, 2, seed=seed, sde=sde)
    x = gm.sample_t(5, t, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
    assert torch.allclose(gm.score(x, t), grad, rtol=1e-9, atol=1e-9)
    assert torch.allclose(gm.eps(x, t), -sde.sigma(t) * grad, rtol=1e-9, atol=1e-9)
    means, covs = gm.marginal_params(t)
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    assert torch.allclose(means, a * gm.means) and torch.allclose(covs, a**2 * gm.covs + s**2 * torch.eye(3))


# --- samplers against the oracle's marginal at their end time ---------------------------------

@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("sde", NON_VP, ids=repr)
def test_every_sampler_reproduces_the_oracle_marginal(sde, name):
    """Single Gaussian in 3-D, from an exact draw of ``p_1``: without the final denoising step the
    samples are draws of ``p_{t_eps}``; with it, of Tweedie's ``x̂_0(x_{t_eps})``. A two-component
    mixture checks the component fractions (``E_{p_s}[p(k | x)] = w_k``)."""
    for k, denoise in ((1, False), (1, True), (2, False)):
        gm = GaussianMixture.random(3, k, seed=7 + k, sde=sde)
        x_T = gm.sample_t(N_SAMPLES, 1.0, generator=torch.Generator().manual_seed(k))
        res = sample(gm, name, x_T, steps=STEPS, denoise=denoise,
                     generator=torch.Generator().manual_seed(10 + k), **OPTIONS[name])
        s = sde.sampling_eps
        assert res.t_end == (0.0 if denoise else pytest.approx(s))
        if k == 1:
            _check_gaussian(res.x, *_moments_gaussian(gm, s, denoise), STEPS, ALLOWANCE[name])
        else:
            _check_mixture(gm, res.x, s, STEPS, ALLOWANCE[name])


@pytest.mark.parametrize("sde", NON_VP[:2], ids=repr)
def test_samplers_from_the_prior_itself(sde):
    """The everyday path ``x_T ~ prior`` on the 8-mode ring: for VE the prior ``N(0, σ_max² I)``
    misses ``p_1`` by the data's mean and spread (σ_max = 5 against a ring of radius 1), which
    the reverse dynamics absorb; the component fractions still match within the tolerances."""
    gm = GaussianMixture.ring(sde=sde)
    x_T = sde.prior_sample((N_SAMPLES, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("ode", "dpmpp", "sde"):
        res = sample(gm, name, x_T, steps=STEPS, denoise=False, generator=torch.Generator().manual_seed(1))
        _check_mixture(gm, res.x, sde.sampling_eps, STEPS, ALLOWANCE[name])


@pytest.mark.parametrize("sde", NON_VP, ids=repr)
def test_ddpm_only_steps_are_refused_off_vp(sde):
    """One message, the same from every caller (scoresde.core.sde.not_vp_reason)."""
    gm = GaussianMixture.ring(sde=sde)
    x_T = sde.prior_sample((4, 2), dtype=torch.float64)
    message = (f"DDPM's chain (its ancestral step and its variational bound) needs a VP-SDE (σ² = 1 - α²), got "
               f"{type(sde).__name__} (sde.kind={sde.kind}): sample with 'ddim' (eta=1) or pc's reverse_diffusion "
               f"predictor, and take bits/dim from the probability-flow ODE")
    refusals = [lambda: sample(gm, "ancestral", x_T, steps=5),
                lambda: sample(gm, "pc", x_T, steps=5, predictor="ancestral"),
                lambda: ddpm_vlb_bits_per_dim(gm, torch.zeros((2, 2), dtype=torch.long), 4),
                lambda: grid_vlb_bits_per_dim(gm, torch.zeros((2, 2), dtype=torch.long), 4, t_eps=0.01, N=10)]
    for refused in refusals:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            refused()


def test_ddim_eta_one_is_the_exact_posterior_step_on_ve():
    """On SMLD's levels, DDIM with η = 1 from level i to i-1 is the Gaussian posterior
    ``q(x_{i-1} | x_i, x̂_0)``: mean ``x̂_0 + σ_{i-1}²/σ_i² (x_i - x̂_0)``, variance
    ``σ_{i-1}² (σ_i² - σ_{i-1}²)/σ_i²`` (the ancestral sampler of the VE-SDE)."""
    sde = VESDE.smld(10, 0.1, 5.0)
    gm = GaussianMixture([1.0], [[0.3, -0.2]], 0.05, sde=sde)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64).expand(20000, 2)
    res = sample(gm, "ddim", x, steps=1, eta=1.0, t_eps=0.9, denoise=False,
                 generator=torch.Generator().manual_seed(0))
    s_i, s_p = float(sde.sigma(1.0)), float(sde.sigma(0.9))
    x0 = gm.x0(x[:1], 1.0)
    mean = x0 + s_p**2 / s_i**2 * (x[:1] - x0)
    var = s_p**2 * (s_i**2 - s_p**2) / s_i**2
    n = res.x.shape[0]
    assert torch.all((res.x.mean(0) - mean[0]).abs() <= 5 * math.sqrt(var / n))
    assert torch.all((res.x.var(0) - var).abs() <= 5 * var * math.sqrt(2 / (n - 1)))


# --- the likelihood against the oracle's exact log-density --------------------------------------

@pytest.mark.parametrize("sde", [VPSDE.linear(), *NON_VP, SubVPSDE.ddpm(1000)], ids=repr)
def test_ode_log_likelihood_matches_the_oracle(sde):
    """``log p_1(z) + ∫ ∇·f̃`` with the oracle's exact ``p_1`` equals ``log p_{t_eps}(x)`` within
    1e-3 nats per dimension (the tolerance of tests/test_likelihood.py); the reported
    ``log_prob`` (with the SDE's prior) differs from it by exactly the prior mismatch
    ``log prior(z) - log p_1(z)`` — tiny for VP and sub-VP, of order ``‖x‖²/(2σ_max²)`` for VE."""
    gm = GaussianMixture.random(4, 3, seed=5, sde=sde)
    x = gm.sample(6, generator=torch.Generator().manual_seed(0))
    t_eps = 1e-5 if sde.discrete_steps is None else 1 / sde.discrete_steps
    res = log_likelihood(gm, x, t_eps=t_eps)
    exact = gm.log_prob(x, t_eps)
    log_p1 = gm.log_prob(res.z, 1.0)
    assert torch.all((log_p1 + res.divergence_integral - exact).abs() <= 1e-3 * gm.dim)
    mismatch = res.prior_log_prob - log_p1
    assert torch.allclose(res.log_prob - exact, mismatch, atol=1e-3 * gm.dim)
    if sde.kind == "ve":
        assert float(mismatch.abs().max()) > 1e-3 * gm.dim  # VE's mismatch is measurable
    else:
        assert float(mismatch.abs().max()) < 0.01


# --- losses: the likelihood weighting of each SDE ---------------------------------------------

@pytest.mark.parametrize("sde", [VPSDE.linear(), SubVPSDE.linear(), VESDE.geometric(0.01, 50.0)], ids=repr)
def test_importance_sampled_times_follow_the_likelihood_weight(sde):
    """``t ∝ g²/σ²`` on ``[t_eps, 1]``: its CDF is ``(λ(t_eps) - λ(t))/(λ(t_eps) - λ(1))`` in
    the log-SNR ``λ``, so ``λ(t)`` is uniform. Kolmogorov–Smirnov distance of 20 000 draws below
    1.95/√n (the 0.1 % critical value), and the constant weight ``Z/(1 - t_eps)`` equals the mean
    of ``g²/σ²`` on ``[t_eps, 1]`` (trapezoid on 200 001 points in ``log t``, rel. error < 1e-6)."""
    n, t_eps = 20_000, 1e-3
    t, w = sample_time(sde, n, weighting="likelihood", t_eps=t_eps, generator=torch.Generator().manual_seed(0))
    lam_hi, lam_lo = sde.log_snr(torch.tensor([t_eps, 1.0], dtype=torch.float64)).tolist()
    cdf = ((lam_hi - sde.log_snr(t)) / (lam_hi - lam_lo)).sort().values
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float((cdf - ecdf).abs().max()) <= 1.95 / math.sqrt(n)
    grid = torch.exp(torch.linspace(math.log(t_eps), 0.0, 200_001, dtype=torch.float64))
    mean_w = float(torch.trapezoid(sde.likelihood_weight(grid), grid)) / (1 - t_eps)
    assert torch.allclose(w, torch.full_like(w, mean_w), rtol=1e-6)


def test_ve_likelihood_weight_is_constant_and_smld_trains_on_its_levels():
    ve = VESDE.geometric(0.01, 50.0)
    t = torch.rand(5, dtype=torch.float64)
    assert torch.allclose(ve.likelihood_weight(t), torch.full_like(t, 2 * math.log(5000.0)), rtol=1e-12)
    smld = VESDE.smld(100, 0.01, 50.0)
    t, w = sample_time(smld, 500, time_sampling="discrete", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(t * 100, torch.round(t * 100), rtol=0, atol=1e-9) and float(t.min()) >= 0.01 - 1e-12
    gm = GaussianMixture.ring(sde=smld)
    out = dsm_loss(gm, gm.sample(64, generator=torch.Generator().manual_seed(1)).float(),
                   weighting="likelihood", time_sampling="discrete", generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("sde", [SubVPSDE.linear(), VESDE.geometric(0.01, 5.0)], ids=repr)
def test_the_exact_eps_minimises_dsm_on_every_sde(sde):
    """The oracle's ε* beats ε*·1.1 and ε* + 0.05 on the same draws (DSM's minimiser is ε*)."""
    gm = GaussianMixture.random(2, 2, seed=1, sde=sde)
    x0 = gm.sample(4000, generator=torch.Generator().manual_seed(0))

    class Scaled:
        def __init__(self, f):
            self.sde, self.f = sde, f

        def eps(self, x, t):
            return self.f(gm.eps(x, t))

    losses = [float(dsm_loss(m, x0, weighting="likelihood", generator=torch.Generator().manual_seed(3)).loss)
              for m in (Scaled(lambda e: e), Scaled(lambda e: 1.1 * e), Scaled(lambda e: e + 0.05))]
    assert losses[0] < losses[1] and losses[0] < losses[2]


# --- the network's conditioning -------------------------------------------------------------------

class _Probe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = None

    def forward(self, x, t):
        self.seen = (x.clone(), t.clone())
        return x * self.w


@pytest.mark.parametrize("sde", [VPSDE.linear(), SubVPSDE.linear(), VESDE.geometric(0.01, 50.0)], ids=repr)
def test_network_sees_t_and_a_unit_scale_input(sde):
    net = _Probe()
    model = ScoreModel(net, sde)
    x = torch.randn(3, 2, dtype=torch.float64) * 40
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    model.eps(x, t)
    seen_x, seen_t = net.seen
    assert torch.equal(seen_t, t.float())
    if sde.kind == "vp":
        assert torch.equal(seen_x, x.float())  # α² + σ² = 1: untouched, as before
    else:
        scale = 1 / torch.sqrt(sde.alpha(t) ** 2 + sde.sigma(t) ** 2)
        assert torch.allclose(seen_x.double(), x * scale[:, None], rtol=1e-6)


# --- configs, build, the training program ---------------------------------------------------------

def test_config_kinds_build_their_sdes():
    cases = {("vp", "linear"): VPSDE, ("subvp", "cosine"): SubVPSDE, ("subvp", "ddpm"): SubVPSDE,
             ("ve", "linear"): VESDE, ("ve", "smld"): VESDE}
    for (kind, schedule), cls in cases.items():
        cfg = config_from_dict({"sde": {"kind": kind, "schedule": schedule, "sigma_max": 20.0}})
        sde = build_sde(cfg)
        assert type(sde) is cls and sde.kind == kind
        assert model_keys(cfg)["sde.kind"] == kind
    ve = build_sde(config_from_dict({"sde": {"kind": "ve", "sigma_min": 0.02, "sigma_max": 8.0}}))
    assert float(ve.sigma(0.0)) == pytest.approx(0.02) and ve.prior_std == pytest.approx(8.0)
    smld = build_sde(config_from_dict({"sde": {"kind": "ve", "schedule": "smld", "n_steps": 10}}))
    assert smld.discrete_steps == 10
    keys = model_keys(config_from_dict({"sde": {"kind": "ve"}}))
    assert {"sde.sigma_min", "sde.sigma_max"} <= set(keys) and "sde.beta_min" not in keys


@pytest.mark.parametrize("sde,match", [
    ({"kind": "vq"}, "sde.kind.*expected one of vp, subvp, ve"),
    ({"kind": "ve", "schedule": "cosine"}, "sde.schedule.*expected one of linear, smld for sde.kind=ve"),
    ({"kind": "subvp", "schedule": "smld"}, "sde.schedule.*expected one of linear, cosine, ddpm"),
    ({"kind": "ve", "sigma_min": 1.0, "sigma_max": 0.5}, "sde.sigma_max.*expected > sde.sigma_min"),
    ({"kind": "ve", "sigma_min": 0.0}, "sde.sigma_min"),
])
def test_bad_sde_configs_are_one_clear_error(sde, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict({"sde": sde})


@pytest.mark.parametrize("kind", ["subvp", "ve"])
def test_training_program_runs_end_to_end(tmp_path, kind):
    """Train, sample, Fréchet distance, ODE bits/dim; the VLB is skipped with a note."""
    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS, sde={"kind": kind, "sigma_max": 10.0},
                       sample={"n": 16, "sampler": "dpmpp"}, eval={"bpd": True, "bpd_n": 4, "vlb": True})
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["fd"] > 0 and s["bpd_n"] == 4 and s["bpd_ode"] > 0 and "bpd_vlb" not in s
    assert any("VLB" in note and "VP-SDE" in note for note in s["notes"])
    model = build_model(config_from_dict({"sde": {"kind": kind}, "model": {"channels": 8}}))
    assert model.sde.kind == kind
