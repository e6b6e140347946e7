"""Probability-flow log-likelihood and bits/dim against closed forms (the exact oracle).

The likelihood's plumbing, transcribed on the same random draws: ``log_likelihood`` is the flow
solve plus the prior, ``bits_per_dim`` is its dequantize-solve-average loop, probes and noise come
from the caller's generator in a fixed order, and the progress bars report what they claim.

The closed-form accuracy of the solve itself is in tests/test_likelihood.py; here every figure is
compared with the same computation written out (float64 round-off: exact equality or 1e-12)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls
from scipy.stats import norm

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, GaussianMixture, LinearSchedule, ScoreModel
from scoresde.core import bpd as bpd_mod
from scoresde.core import flow as flow_mod
from scoresde.core.bpd import check_int_data, check_levels, dequantize, summarize, to_model_space
from scoresde.core.flow import drift_and_divergence, solve_flow
from scoresde.core.sde import VESDE, SubVPSDE
from scoresde.core.sde import flow_drift as sde_flow_drift
from scoresde.likelihood import ode as ode_mod
from scoresde.likelihood.ode import bits_per_dim, log_likelihood
from tests.closed_forms import pf_drift
from tests.fakes import record_bars

T_EPS = 1e-5
TOL_PER_DIM = 1e-3  # nats per dimension (the requirement)



@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["linear", "cosine", "ddpm"]))
    if kind == "linear":
        return LinearSchedule(draw(st.floats(0.05, 1.0)), draw(st.floats(5.0, 40.0)))
    if kind == "cosine":
        return CosineSchedule(s=draw(st.floats(1e-3, 0.05)))
    n = draw(st.integers(5, 1000))
    return DiscreteSchedule.ddpm_linear(n, draw(st.floats(1e-5, 1e-3)), draw(st.floats(0.01, 0.2)))


@st.composite
def mixtures(draw):
    """Gaussians (K = 1) and mixtures (K ≤ 3) in 1–8 dimensions with random covariances."""
    dim, k = draw(st.integers(1, 8)), draw(st.integers(1, 3))
    return GaussianMixture.random(dim, k, seed=draw(st.integers(0, 10_000)),
                                  sde=VPSDE(draw(schedules())))


@settings(max_examples=10)
@given(gm=mixtures(), seed=st.integers(0, 100))
def test_exact_trace_ode_matches_oracle(gm, seed):
    """``log p_1(z) + ∫ ∇·f̃`` (with the oracle's exact ``p_1``) equals ``log p_{t_eps}(x)``.

    This isolates the ODE and divergence from the prior mismatch ``p_1 ≠ N(0, I)``, so any
    schedule qualifies. Measured max error over 40 drawn examples (same strategies): 3.1e-4
    nats/dim (a 5-D mixture, cosine schedule); typically below 5e-5.
    """
    x = gm.sample(4, generator=torch.Generator().manual_seed(seed))
    res = log_likelihood(gm, x, t_eps=T_EPS)
    ode = gm.log_prob(res.z, 1.0) + res.divergence_integral
    exact = gm.log_prob(x, T_EPS)
    assert torch.all((ode - exact).abs() <= TOL_PER_DIM * gm.dim)
    assert torch.allclose(res.log_prob, res.prior_log_prob + res.divergence_integral)
    assert res.log_prob.dtype == torch.float64 and res.log_prob.shape == (4,)
    assert res.nfe > 0 and res.stderr is None and res.probes is None


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.cosine(), VPSDE.ddpm()], ids=repr)
@pytest.mark.parametrize("dim", [2, 8])
def test_log_prob_with_normal_prior_matches_oracle(sde, dim):
    """The full ``log_prob`` (prior ``N(0, I)``) on zero-mean Gaussian data: here ``p_1`` differs
    from ``N(0, I)`` only by ``O(ᾱ(1)) ≈ 4e-5`` per dimension, so the total must be within 1e-3/dim.
    (For non-centred data the mismatch is ``O(α(1)·μ·z)``, about 5e-3/dim: see docs/likelihood.md.)"""
    rng = np.random.default_rng(dim)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = (q * rng.uniform(0.05, 0.5, dim)) @ q.T
    gm = GaussianMixture([1.0], np.zeros((1, dim)), cov[None], sde=sde)
    x = gm.sample(8, generator=torch.Generator().manual_seed(dim))
    res = log_likelihood(gm, x)
    assert torch.all((res.log_prob - gm.log_prob(x, T_EPS)).abs() <= TOL_PER_DIM * dim)


def test_image_shaped_input_matches_flat():
    """``(B, C, H, W)`` input gives the same answer as the flattened ``(B, D)`` problem."""
    flat = GaussianMixture.random(4, 2, seed=3)
    img = GaussianMixture(flat.weights, flat.means, flat.covs, sde=flat.sde, event_shape=(1, 2, 2))
    x = img.sample(3, generator=torch.Generator().manual_seed(0))
    a, b = log_likelihood(img, x), log_likelihood(flat, x.flatten(1))
    assert a.z.shape == x.shape
    assert torch.allclose(a.log_prob, b.log_prob, rtol=0, atol=1e-10)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """With a fixed-step solver the trajectory does not depend on the probes and the estimate is
    linear in ``v vᵀ``, so it is exactly unbiased for the exact-trace value of the same solve:
    the mean over 100 probes lies within 4 standard errors (the reported ``stderr``,
    std over probes / √100) of it, for each sample."""
    gm = GaussianMixture.random(3, 3, seed=7)
    x = gm.sample(3, generator=torch.Generator().manual_seed(1))
    opts = dict(method="rk4", steps=6)
    exact = log_likelihood(gm, x, trace="exact", **opts)
    est = log_likelihood(gm, x, trace="hutchinson", probe=probe, n_probes=100,
                         generator=torch.Generator().manual_seed(2), **opts)
    assert est.probes.shape == (100, 3, 3)
    assert torch.all(est.stderr > 0.01)  # a real spread: the test has teeth
    assert torch.all((est.log_prob - exact.log_prob).abs() <= 4 * est.stderr)
    assert torch.equal(est.z, exact.z) and torch.equal(est.prior_log_prob, exact.prior_log_prob)


def test_hutchinson_probe_is_held_fixed():
    """For a diagonal Gaussian the Jacobian of ``f̃`` is diagonal with
    ``∫ ∂f̃_d/∂x_d dt = ½ log(v_d(1)/v_d(t_eps))``, ``v_d = α² λ_d + σ²`` (since
    ``∂f̃_d/∂x_d = -½β(1 - 1/v_d) = ½ d log v_d/dt``). A probe held fixed over the solve
    gives exactly ``Σ_d v_d² I_d``; a probe redrawn per step would not."""
    lam = torch.tensor([0.05, 0.3, 2.0], dtype=torch.float64)
    gm = GaussianMixture([1.0], torch.zeros(1, 3), lam[None])
    x = gm.sample(5, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(gm, x, trace="hutchinson", probe="gaussian", rtol=1e-7, atol=1e-7,
                         generator=torch.Generator().manual_seed(3))  # solver error ~1e-7 ≪ 1e-5
    sde = gm.sde
    v1 = sde.alpha(1.0) ** 2 * lam + sde.sigma(1.0) ** 2
    v0 = sde.alpha(T_EPS) ** 2 * lam + sde.sigma(T_EPS) ** 2
    per_dim = 0.5 * torch.log(v1 / v0)  # (3,)
    expected = (res.probes[0] ** 2 * per_dim).sum(1)
    assert torch.allclose(res.divergence_integral, expected, rtol=1e-5, atol=1e-5)


def test_exact_divergence_of_a_network_equals_jacobian_trace():
    """On a small MLP score model the exact divergence of dx/dB equals the trace of the full
    Jacobian of dx/dt = f - ½ g² s (built from the SDE's drift and the model's score), over β(t)."""
    torch.manual_seed(0)
    net = _TinyNet(5)
    model = ScoreModel(net, VPSDE.linear())
    x = torch.randn(4, 5, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    _, div = drift_and_divergence(model, x, t, None)
    beta = float(model.sde.beta(t))
    for b in range(4):
        def f(xb, b=b):
            return pf_drift(model.sde, xb[None], t, model.score(xb[None], t))[0]
        jac = torch.autograd.functional.jacobian(f, x[b])
        assert torch.allclose(div[0, b], torch.trace(jac) / beta, rtol=1e-10, atol=1e-10)


class _TinyNet(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin1, self.lin2 = torch.nn.Linear(dim + 1, 16), torch.nn.Linear(16, dim)
        self.double()

    def forward(self, x, t):
        return self.lin2(torch.tanh(self.lin1(torch.cat([x, t[:, None].to(x.dtype)], 1))))


@pytest.mark.parametrize("kwargs, match", [
    (dict(trace="full"), "trace='full'"),
    (dict(probe="uniform"), "probe='uniform'"),
    (dict(trace="hutchinson", n_probes=0), "n_probes=0"),
    (dict(t_eps=0.0), "t_eps=0.0"),
    (dict(t_eps=1.5), "t_eps=1.5"),
    (dict(method="rk45"), "method='rk45'"),
    (dict(method="euler"), "steps=None"),
    (dict(rtol=-1.0), "rtol=-1.0"),
    (dict(dtype=torch.int64), "dtype=torch.int64"),
])
def test_bad_options_raise_one_clear_error(kwargs, match):
    gm = GaussianMixture.ring()
    with pytest.raises(ValueError, match=match):
        log_likelihood(gm, torch.zeros(2, 2), **kwargs)


def test_bad_data_raises():
    gm = GaussianMixture.ring()
    with pytest.raises(ValueError, match="expected a tensor"):
        log_likelihood(gm, torch.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        log_likelihood(gm, torch.full((2, 2), math.nan))
    with pytest.raises(ValueError, match="levels=1"):
        bits_per_dim(gm, torch.zeros(2, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="expected values in 0..16"):
        bits_per_dim(gm, torch.full((2, 2), 17), 17)
    with pytest.raises(ValueError, match="n_dequant=0"):
        bits_per_dim(gm, torch.zeros(2, 2, dtype=torch.long), 17, n_dequant=0)


def test_float32_state_is_close_to_float64():
    gm = GaussianMixture.random(2, 2, seed=1)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    a = log_likelihood(gm, x, dtype=torch.float32, rtol=1e-4, atol=1e-4)
    b = log_likelihood(gm, x)
    assert a.z.dtype == torch.float32
    assert torch.allclose(a.log_prob, b.log_prob, atol=1e-2)


# Bits per dimension -------------------------------------------------------------------------

def _discretized_normal(levels, mean, sd):
    """Exact ``P(k)`` of ``N(mean, sd²)`` binned at edges ``2k/L - 1``, open-ended at both ends."""
    edges = np.concatenate([[-np.inf], 2 * np.arange(1, levels) / levels - 1, [np.inf]])
    return np.diff(norm.cdf((edges - mean) / sd))


def _dequantized_bound(levels, mean, var):
    """Exact per-level ``E_u[-log N(z; mean, var)]/ln 2 - 1 + log₂ L``, ``z`` uniform on bin k.

    ``E[(z - m)²]`` over a bin ``[a, b]`` is ``((b-m)³ - (a-m)³) / (3 (b - a))``.
    """
    a = 2 * np.arange(levels) / levels - 1 - mean
    b = a + 2 / levels
    sq = (b**3 - a**3) / (3 * (b - a))
    nll = 0.5 * sq / var + 0.5 * np.log(2 * np.pi * var)
    return nll / np.log(2) - 1 + np.log2(levels)


@pytest.mark.parametrize("levels, sds, repeats", [(17, (0.25, 0.4), 4), (256, (0.25,), 8)])
def test_bits_per_dim_of_discretized_gaussian(levels, sds, repeats):
    """Data: a discretized Gaussian with independent dims, every support point weighted by its
    exact probability (no Monte Carlo over k); the model: the same Gaussian as the oracle.

    The dequantized estimate has expectation (over u) equal to the *dequantized bound*
    ``Σ_k P(k) E_u[-log p_{t_eps}(z)]/(D ln 2) - 1 + log₂ L``, computed here in closed form: that is
    the tight reference (tolerance: 4 Monte Carlo standard errors from ``repeats`` draws per level,
    plus 1e-4 bits for the ODE and the ``O(ᾱ(1))`` prior mismatch). It exceeds the exact
    entropy ``H = -Σ P log₂ P`` by the Jensen gap ``≈ w²/(24 sd² ln 2)`` per dim (``w = 2/L``): about
    0.013 bits for L = 17, 6e-5 bits for L = 256, so against ``H`` we assert
    ``0 ≤ bpd - H ≤ 1.5 × gap + tolerance``.
    """
    sde = VPSDE.linear()
    dim = len(sds)
    var_t = [float(sde.alpha(T_EPS)) ** 2 * s**2 + float(sde.sigma(T_EPS)) ** 2 for s in sds]
    gm = GaussianMixture([1.0], torch.zeros(1, dim), torch.tensor([s**2 for s in sds])[None], sde=sde)
    probs = [_discretized_normal(levels, 0.0, s) for s in sds]
    keep = [np.nonzero(p > 1e-14)[0] for p in probs]
    grid = torch.cartesian_prod(*[torch.as_tensor(k) for k in keep]).reshape(-1, dim)
    weight = torch.ones(grid.shape[0], dtype=torch.float64)
    bound = torch.zeros(grid.shape[0], dtype=torch.float64)
    for d in range(dim):
        weight *= torch.as_tensor(probs[d])[grid[:, d]]
        bound += torch.as_tensor(_dequantized_bound(levels, 0.0, var_t[d]))[grid[:, d]] / dim
    weight /= weight.sum()
    res = bits_per_dim(gm, grid.repeat(repeats, 1), levels, generator=torch.Generator().manual_seed(0),
                       batch_size=4096)
    draws = res.per_sample.reshape(repeats, -1)  # (repeats, levels^D)
    est = float((draws.mean(0) * weight).sum())
    mc_se = float(torch.sqrt((weight**2 * draws.var(0)).sum() / repeats))
    exact_bound = float((bound * weight).sum())
    assert abs(est - exact_bound) <= 4 * mc_se + 1e-4, (est, exact_bound, mc_se)

    entropy = sum(float(-(p[p > 0] * np.log2(p[p > 0])).sum()) for p in probs) / dim
    gap = sum((2 / levels) ** 2 / (24 * s**2 * math.log(2)) for s in sds) / dim
    assert exact_bound >= entropy
    assert -4 * mc_se - 1e-4 <= est - entropy <= 1.5 * gap + 4 * mc_se + 1e-4, (est, entropy, gap)
    assert res.info["offset"] == pytest.approx(math.log2(levels) - 1)
    assert res.nfe > 0 and res.stderr > 0


def test_bits_per_dim_stderr_and_draws():
    """Several dequantization draws and probes: per-sample values average the draws, and the
    standard error is ``std/√B`` over the data set."""
    gm = GaussianMixture.random(2, 2, seed=0)
    x_int = torch.randint(0, 17, (6, 2), generator=torch.Generator().manual_seed(0))
    res = bits_per_dim(gm, x_int, 17, n_dequant=2, batch_size=4, trace="hutchinson", n_probes=2,
                       generator=torch.Generator().manual_seed(1))
    assert res.per_sample.shape == (6,)
    assert res.bpd == pytest.approx(float(res.per_sample.mean()))
    assert res.stderr == pytest.approx(float(res.per_sample.std() / math.sqrt(6)))
    assert res.info["nfe_per_solve"] * 4 == res.nfe  # 2 draws × 2 batches


# Edges -----------------------------------------------------------------------------------


LEVELS = 16
FIXED = dict(method="rk4", steps=2)  # 4 NFE per step, 8 per solve: cheap and exactly countable


def _gm(dim=2):
    return GaussianMixture.random(dim, 2, seed=3, sde=VPSDE.linear())


def _sde(kind):
    """VP and the SDEs whose flow takes the general ``a x + b ε`` form."""
    return {"vp": VPSDE.linear, "subvp": SubVPSDE.linear, "ve": lambda: VESDE.geometric(0.01, 50.0)}[kind]()


def _x_int(n, dim=2, seed=0):
    return torch.randint(0, LEVELS, (n, dim), generator=torch.Generator().manual_seed(seed))


def _gen(seed=11):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def bars(monkeypatch):
    return record_bars(monkeypatch, ode_mod)


# ---------------------------------------------------------------- log_likelihood


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_likelihood_is_the_flow_solve_plus_the_prior(dtype):
    """Exact trace: ``log p = log N(z; 0, I) + ∫ div`` of :func:`solve_flow` with the same
    method, tolerances, ``t_eps`` and state dtype (non-default values, so a dropped argument shows)."""
    gm, x = _gm(), _gm().sample(3, generator=_gen(1)).to(torch.float32)
    opts = dict(method="bosh3", rtol=3e-3, atol=2e-4)
    res = log_likelihood(gm, x, t_eps=0.01, dtype=dtype, **opts)
    sol = solve_flow(gm, x.to(dtype), 0.01, 1.0, divergence="exact", dtype=dtype, **opts)
    prior = gm.sde.prior_log_prob(sol.x)
    assert res.z.dtype == dtype and torch.equal(res.z, sol.x) and res.nfe == sol.nfe
    assert torch.equal(res.divergence_integral, sol.divergence.mean(0))
    assert torch.equal(res.prior_log_prob, prior) and torch.equal(res.log_prob, prior + sol.divergence[0])
    # the prior in closed form: -½ (‖z‖² + D log 2π)
    z = sol.x.to(torch.float64)
    torch.testing.assert_close(prior, -0.5 * (z.pow(2).sum(1) + 2 * math.log(2 * math.pi)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_probes_are_drawn_from_the_generator_in_float64(probe):
    """The probes are ``P × B × D`` draws of the caller's generator, made in float64 and then cast
    to the state dtype; ``log_prob`` averages the ``P`` divergence integrals and ``stderr`` is their
    standard error ``std/√P``."""
    gm, x = _gm(), _gm().sample(3, generator=_gen(1))
    for dtype in (torch.float64, torch.float32):
        res = log_likelihood(gm, x, trace="hutchinson", probe=probe, n_probes=3, generator=_gen(5),
                             dtype=dtype, **FIXED)
        g = _gen(5)
        if probe == "gaussian":
            want = torch.randn((3, 3, 2), generator=g, dtype=torch.float64)
        else:
            want = torch.randint(0, 2, (3, 3, 2), generator=g).to(torch.float64) * 2 - 1
        assert res.probes.dtype == dtype and torch.equal(res.probes, want.to(dtype))
        sol = solve_flow(gm, x.to(dtype), 1e-5, 1.0, divergence=want.to(dtype), dtype=dtype, **FIXED)
        assert torch.equal(res.divergence_integral, sol.divergence.mean(0))
        assert torch.equal(res.stderr, sol.divergence.std(0) / math.sqrt(3))
        assert torch.equal(res.log_prob, res.prior_log_prob + sol.divergence.mean(0))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_probes_without_a_generator_come_from_the_global_stream(probe):
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    torch.manual_seed(123)
    res = log_likelihood(gm, x, trace="hutchinson", probe=probe, **FIXED)
    torch.manual_seed(123)
    want = (torch.randn((1, 2, 2), dtype=torch.float64) if probe == "gaussian"
            else torch.randint(0, 2, (1, 2, 2)).to(torch.float64) * 2 - 1)
    assert torch.equal(res.probes, want) and res.stderr is None  # one probe: no standard error


def test_one_sample_is_a_batch():
    gm = _gm()
    one = log_likelihood(gm, gm.sample(1, generator=_gen(2)), **FIXED)
    assert one.log_prob.shape == (1,) and math.isfinite(float(one.log_prob[0]))


@pytest.mark.parametrize("x, shown", [(torch.zeros(0, 2), "(0, 2)"), (torch.zeros(3), "(3,)"),
                                      ([[0.0, 1.0]], "()")])
def test_log_likelihood_names_a_wrong_shape(x, shown):
    with pytest.raises(ValueError, match=rf"^x of shape {re.escape(shown)}: expected a tensor \(B, \*dims\)$"):
        log_likelihood(_gm(), x)


def test_log_likelihood_refuses_non_finite_data_in_one_line():
    x = torch.tensor([[0.0, float("nan")]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^x: expected finite values$"):
        log_likelihood(_gm(), x)


def test_log_likelihood_progress_bar_counts_the_clock_in_thousandths(bars, capsys):
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    log_likelihood(gm, x, **FIXED)
    assert capsys.readouterr().err == ""  # progress off by default
    (bar,) = bars
    assert (bar.total, bar.enabled, bar.desc, bar.unit) == (1000, False, "log-likelihood", "‰ of the time span")
    # rk4 (torchdiffeq's 3/8 rule), 2 steps: evaluations at u, u + h/3, u + 2h/3, u + h, i.e. at the
    # sixths of the span; the bar moves forward to ⌊1000 · share⌋ and never back (no empty or negative ticks)
    assert bar.updates == [int(1000 * k / 6) - int(1000 * (k - 1) / 6) for k in range(1, 7)]
    assert bar.n == 1000 and bar.closed
    log_likelihood(gm, x, progress=True, **FIXED)
    assert bars[1].enabled is True


# ---------------------------------------------------------------- bits_per_dim


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_bits_per_dim_transcribed_on_the_same_draws(trace, bars):
    """Per dequantization round and batch: ``u ~ U[0,1)`` (float64, the generator's next draws),
    ``z = 2(k + u)/L - 1``, then the solve (its probes next from the same generator);
    bits/dim ``= -log p(z)/(D ln 2) + log₂ L - 1``; each sample averaged over the rounds."""
    gm, x_int = _gm(), _x_int(5)
    opts = dict(trace=trace, probe="gaussian", n_probes=2, **FIXED) if trace == "hutchinson" else FIXED
    got = bits_per_dim(gm, x_int, LEVELS, n_dequant=2, batch_size=2, generator=_gen(7), **opts)
    g, values, nfe = _gen(7), torch.zeros(2, 5, dtype=torch.float64), 0
    running = []
    for r in range(2):
        for s in range(0, 5, 2):
            chunk = x_int[s:s + 2]
            u = torch.rand(chunk.shape, generator=g, dtype=torch.float64)
            z = 2 * (chunk.to(torch.float64) + u) / LEVELS - 1
            res = log_likelihood(gm, z, generator=g, **opts)
            values[r, s:s + 2] = -res.log_prob / (2 * math.log(2)) + (math.log2(LEVELS) - 1)
            nfe += res.nfe
            running.append(f"{float(values[:r + 1, :s + len(chunk)].mean()):.4f}")
    per_sample = values.mean(0)
    assert torch.equal(got.per_sample, per_sample) and got.per_sample.device.type == "cpu"
    assert got.bpd == float(per_sample.mean()) and got.stderr == float(per_sample.std() / math.sqrt(5))
    assert got.nfe == nfe == 6 * 8 and got.info == {"nfe_per_solve": 8.0, "offset": math.log2(LEVELS) - 1}
    # the bar counts examples (5 per round), moving within each solve with its time span: a batch of
    # two ticks once half way (rk4's evaluations fall on the sixths of the span) and once at the end
    (bar,) = [b for b in bars if b.desc == "bits/dim"]
    assert (bar.total, bar.enabled, bar.desc, bar.unit) == (10, False, "bits/dim", "examples")
    assert bar.updates == [1] * 10 and bar.n == 10
    assert [p["bpd"] for p in bar.postfix] == running and bar.closed


def test_bits_per_dim_defaults_one_round_batches_of_256_no_bar(bars, capsys):
    """Defaults: one dequantization round (one sample: stderr over rounds is then undefined,
    nan), batches of 256 (257 samples: two solves), progress off."""
    gm = _gm(1)
    one = bits_per_dim(gm, _x_int(1, 1), LEVELS, generator=_gen(), **FIXED)
    assert one.nfe == 8 and math.isnan(one.stderr) and one.per_sample.shape == (1,)
    many = bits_per_dim(gm, _x_int(257, 1), LEVELS, generator=_gen(), **FIXED)
    outer = [b for b in bars if b.desc == "bits/dim"]
    assert many.nfe == 16 and many.info["nfe_per_solve"] == 8.0 and outer[1].total == 257 == outer[1].n
    assert capsys.readouterr().err == "" and not outer[1].enabled


def test_bits_per_dim_names_a_bad_batch_size():
    with pytest.raises(ValueError, match=r"^batch_size=0"):
        bits_per_dim(_gm(), _x_int(2), LEVELS, batch_size=0)


# ---------------------------------------------------------------- core.bpd


def test_summarize_mean_and_standard_error_in_every_case():
    v = torch.tensor([[1.0, 2.0, 4.0], [3.0, 2.0, 0.0]], dtype=torch.float64)  # 2 rounds, 3 samples
    per = v.mean(0)
    assert summarize(v) == (float(per.mean()), float(per.std() / math.sqrt(3)))
    two = v[:, :2]  # two samples, two rounds: over samples
    assert summarize(two) == (float(two.mean(0).mean()), float(two.mean(0).std() / math.sqrt(2)))
    one = torch.tensor([[1.0], [2.0], [6.0]], dtype=torch.float64)  # one sample, three rounds
    assert summarize(one) == (3.0, float(one.std() / math.sqrt(3)))
    single = summarize(torch.tensor([[2.5]], dtype=torch.float64))
    assert single[0] == 2.5 and math.isnan(single[1])


def test_dequantize_and_bin_centres_exactly():
    k = torch.tensor([[0, 3, 15]])
    u = torch.tensor([[0.0, 0.5, 0.999]], dtype=torch.float64)
    assert torch.equal(dequantize(k, LEVELS, u=u), (2 * (k + u) / LEVELS - 1))
    assert dequantize(k, LEVELS, u=u, dtype=torch.float32).dtype == torch.float32
    # u drawn from the generator in float64
    drawn = dequantize(k, LEVELS, generator=_gen(4))
    want = 2 * (k + torch.rand((1, 3), generator=_gen(4), dtype=torch.float64)) / LEVELS - 1
    assert drawn.dtype == torch.float64 and torch.equal(drawn, want)
    # a float32 u is used as given, in float64 arithmetic
    u32 = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float32)
    assert torch.equal(dequantize(k, LEVELS, u=u32), 2 * (k + u32.to(torch.float64)) / LEVELS - 1)
    centres = to_model_space(torch.tensor([[0, 255]]), 256, dtype=torch.float64)
    assert torch.equal(centres, torch.tensor([[1 / 256 - 1, 1 - 1 / 256]], dtype=torch.float64))
    # large integers keep their exact value (float32 arithmetic would round 2k + 1)
    big = torch.tensor([[2**25]])
    assert float(to_model_space(big, 2**26, dtype=torch.float64)) == (2 * 2**25 + 1) / 2**26 - 1
    assert float(dequantize(big, 2**26, u=torch.zeros(1, 1, dtype=torch.float64))) == 0.0


def test_check_levels_and_int_data_name_what_is_wrong():
    assert check_levels(torch.tensor([[0, 1]]), 2) == 2
    assert check_levels(torch.tensor([[0.0, 1.0]]), 2) == 2  # whole numbers in a float tensor
    with pytest.raises(ValueError, match=r"^levels=1: expected an integer ≥ 2"):
        check_levels(torch.tensor([[0]]), 1)
    with pytest.raises(ValueError, match=r"^x_int: expected integer data \(whole numbers\) for the given levels$"):
        check_levels(torch.tensor([[0.5]]), 4)
    assert check_int_data(torch.zeros(1, 3, 2, dtype=torch.long), 2) == 6
    with pytest.raises(ValueError, match=r"^levels=1: expected an integer ≥ 2"):
        check_int_data(torch.zeros(1, 3, dtype=torch.long), 1)
    for bad, shown in [(torch.zeros(0, 3), "(0, 3)"), (torch.zeros(4), "(4,)"), ([[1, 2]], "()")]:
        with pytest.raises(ValueError, match=rf"^x_int of shape {re.escape(shown)}: expected a tensor "
                                             r"\(B, \*dims\) of integers in 0..levels-1$"):
            check_int_data(bad, 4)


def test_bpd_module_offset_and_units():
    assert bpd_mod.bpd_offset(256) == 7.0 and bpd_mod.bpd_offset(2) == 0.0
    assert float(bpd_mod.nats_to_bpd(torch.tensor(6 * math.log(2)), 3)) == pytest.approx(2.0, abs=1e-15)


# ---------------------------------------------------------------- the solver's clock


@pytest.mark.parametrize("sde", [VPSDE(CosineSchedule()), VPSDE.ddpm(1000), VPSDE.ddpm(50), VPSDE.linear(),
                                 VPSDE(DiscreteSchedule(torch.full((20,), 0.05, dtype=torch.float64))),
                                 VPSDE(DiscreteSchedule(torch.linspace(0.05, 0.001, 20, dtype=torch.float64)))],
                         ids=["cosine", "ddpm1000", "ddpm50", "linear", "constant-beta", "falling-beta"])
def test_clock_fit_is_the_nonnegative_least_squares_fit(sde):
    """The quartic ``B̂(u) = Σ c_k u^k`` is the non-negative least-squares fit to ``B`` on the
    clock's grid (scipy's NNLS as the reference), rescaled so that ``B̂(1) = B(1)``. The optimal
    sets differ by schedule (cosine {u, u⁴}, DDPM-50 {u², u³}, linear β {u, u²}, a falling β's
    concave B {u} alone), so every subset of the exhaustive search is needed."""
    u = torch.linspace(0.0, 1.0, flow_mod._FIT_POINTS, dtype=torch.float64)
    b = sde.clock(u)
    powers = np.stack([u.numpy() ** k for k in range(1, flow_mod._DEGREE + 1)], 1)
    ref, _ = nnls(powers, b.numpy())
    ref = ref * float(b[-1]) / ref.sum()
    got = np.array(flow_mod._fit_increasing(u, b))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * float(b[-1]))
    assert (got >= 0).all()


def test_clock_is_t_itself_exactly_when_b_is_a_quartic():
    """``fitted`` is False for B a polynomial of degree ≤ 4 (linear β, constant β): the clock is t."""
    const = VPSDE(DiscreteSchedule(torch.full((20,), 0.05, dtype=torch.float64)))
    assert not flow_mod.Clock(VPSDE.linear()).fitted and not flow_mod.Clock(const).fitted
    assert flow_mod.Clock(VPSDE(CosineSchedule())).fitted and flow_mod.Clock(VPSDE.ddpm(1000)).fitted
    clock = flow_mod.Clock(VPSDE.linear())
    assert clock.at(0.25) == (0.25, float(VPSDE.linear().clock_rate(0.25)))


def test_two_probes_have_a_standard_error():
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    res = log_likelihood(gm, x, trace="hutchinson", n_probes=2, generator=_gen(5), **FIXED)
    assert res.stderr is not None and res.stderr.shape == (2,)


def test_dequantize_without_a_generator_uses_the_global_stream():
    k = torch.tensor([[0, 3, 15]])
    torch.manual_seed(7)
    z = dequantize(k, LEVELS)
    torch.manual_seed(7)
    assert torch.equal(z, 2 * (k + torch.rand((1, 3), dtype=torch.float64)) / LEVELS - 1)


def test_summarize_one_sample_two_draws():
    v = torch.tensor([[1.0], [4.0]], dtype=torch.float64)
    assert summarize(v) == (2.5, float(v.std() / math.sqrt(2)))


@pytest.mark.parametrize("sde", [VPSDE(CosineSchedule()), VPSDE.ddpm(1000)], ids=["cosine", "ddpm1000"])
def test_fitted_clock_inverts_exactly(sde):
    """``u_of_t`` is the inverse of the fitted ``B̂``: ``B̂(u(t)) = B(t)``, ``u ∈ [0, 1]``, the
    ends exact, and :meth:`Clock.at` maps ``u(t)`` back to ``t``."""
    clock = flow_mod.Clock(sde)
    t = torch.tensor([0.0, 1e-3, 0.3, 0.7, 0.999, 1.0], dtype=torch.float64)
    u = clock.u_of_t(t)
    assert u.dtype == torch.float64 and float(u[0]) == 0.0 and float(u[-1]) == 1.0
    assert bool(((u >= 0) & (u <= 1)).all()) and bool((u.diff() > 0).all())
    torch.testing.assert_close(clock._smooth(u)[0], sde.clock(t), rtol=1e-12, atol=1e-14)
    for ti, ui in zip(t.tolist()[1:-1], u.tolist()[1:-1]):
        assert clock.at(ui)[0] == pytest.approx(ti, rel=1e-9)


class _Recorder:
    """The oracle's ε, recording the times it is asked at."""

    def __init__(self, gm):
        self.sde, self.gm, self.times = gm.sde, gm, []

    def eps(self, x, t):
        self.times.append(t.clone())
        return self.gm.eps(x, t)


def test_solve_flow_starts_and_ends_exactly_at_the_given_times():
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    rec = _Recorder(gm)
    solve_flow(rec, x, 1e-5, 1.0, method="euler", steps=2)
    first = rec.times[0].reshape(-1)[0]
    assert first.dtype == torch.float64 and float(first) == 1e-5  # not a float32-rounded 1e-5
    rec = _Recorder(gm)
    solve_flow(rec, x, 1.0, 0.3, method="rk4", steps=1)
    assert float(rec.times[0].reshape(-1)[0]) == 1.0 and float(rec.times[-1].reshape(-1)[0]) == 0.3


def test_solve_flow_defaults_and_divergence_message():
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    default = solve_flow(gm, x, 1e-3, 1.0)
    explicit = solve_flow(gm, x, 1e-3, 1.0, method="dopri5", rtol=1e-5, atol=1e-5)
    assert torch.equal(default.x, explicit.x) and default.nfe == explicit.nfe and default.divergence is None
    with pytest.raises(ValueError, match=r"^divergence='trace': expected one of exact$"):
        solve_flow(gm, x, 1e-3, 1.0, divergence="trace")


def test_u_of_t_takes_python_numbers_in_float64():
    clock = flow_mod.Clock(VPSDE(CosineSchedule()))
    want = clock.u_of_t(torch.tensor([0.3], dtype=torch.float64))
    assert torch.equal(clock.u_of_t(0.3), want[0]) and torch.equal(clock.u_of_t([0.3]), want)


def test_solve_flow_state_dtype_probes_and_progress_fractions():
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    # the state runs in the dtype asked for, whatever x's dtype
    assert solve_flow(gm, x, 0.2, 1.0, method="euler", steps=2, dtype=torch.float32).x.dtype == torch.float32
    # float64 probes are cast to the state's dtype before use (a batch of 64 in 4-d, 4 probes, so
    # that computing vᵀJv in float64 instead would show in the last bits of some of the 256 sums)
    gm4 = _gm(4)
    x4 = gm4.sample(64, generator=_gen(2))
    probes = torch.randn((4, 64, 4), generator=_gen(4), dtype=torch.float64)
    a = solve_flow(gm4, x4, 0.2, 1.0, method="euler", steps=2, divergence=probes, dtype=torch.float32)
    b = solve_flow(gm4, x4, 0.2, 1.0, method="euler", steps=2, divergence=probes.to(torch.float32),
                   dtype=torch.float32)
    assert torch.equal(a.divergence, b.divergence)
    # on_eval gets the fraction of the clock's span reached: euler, 2 steps from 0.2 (u = t here)
    seen = []
    solve_flow(gm, x, 0.2, 1.0, method="euler", steps=2, on_eval=seen.append)
    assert seen == pytest.approx([0.0, 0.5], abs=1e-12)


def test_a_failed_solve_names_the_solver_and_the_time():
    class NaNModel:
        def __init__(self, sde):
            self.sde = sde

        def eps(self, x, t):
            return torch.full_like(x, float("nan"))

    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"^ODE solver 'dopri5' \(rtol=1e-05, atol=1e-05\) failed near t=0\.\d+: "):
        solve_flow(NaNModel(VPSDE.linear()), x, 0.2, 1.0)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_flow_drift_is_the_probability_flow_in_the_clock(kind):
    """``flow_drift · clock_rate = f x - ½ g² s`` with ``s = -ε/σ`` (Song et al. 2021, eq. 13),
    for VP and for the SDEs that take the general ``a x + b ε`` form (sub-VP, VE)."""
    sde = _sde(kind)
    gm = GaussianMixture.random(2, 2, seed=3, sde=sde)
    x = gm.sample(3, generator=_gen(1))
    t = torch.tensor(0.4, dtype=torch.float64)
    v = flow_mod.flow_drift(gm, x, t) * float(sde.clock_rate(t))
    want = pf_drift(sde, x, t, -gm.eps(x, t) / sde.sigma(t))
    torch.testing.assert_close(v, want, rtol=1e-12, atol=1e-12)


def test_flow_drift_of_an_sde_that_does_not_say_is_the_vp_one():
    class Unsaid:  # an SDE object without variance_preserving (taken as VP) nor flow_coefficients
        def __init__(self, sde):
            self._sde = sde

        def __getattr__(self, name):
            if name in ("variance_preserving", "flow_coefficients"):
                raise AttributeError(name)
            return getattr(self._sde, name)

    gm = _gm()
    model = _Recorder(gm)
    model.sde = Unsaid(gm.sde)
    x, t = gm.sample(2, generator=_gen(1)), torch.tensor(0.4, dtype=torch.float64)
    assert torch.equal(flow_mod.flow_drift(model, x, t), flow_mod.flow_drift(gm, x, t))


def test_solve_flow_tolerances_counts_and_divergence_dtype():
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    nfe = {(r, a): solve_flow(gm, x, 1e-3, 1.0, rtol=r, atol=a).nfe for r, a in
           [(1e-2, 1e-10), (1e-8, 1e-10), (1e-10, 1e-2), (1e-10, 1e-8)]}
    assert nfe[(1e-2, 1e-10)] < nfe[(1e-8, 1e-10)] and nfe[(1e-10, 1e-2)] < nfe[(1e-10, 1e-8)]  # each is used
    assert solve_flow(gm, x, 0.2, 1.0, method="rk4", steps=2).nfe == 8
    sol = solve_flow(gm, x, 0.2, 1.0, method="rk4", steps=2, divergence="exact", dtype=torch.float32)
    assert sol.x.dtype == torch.float32 and sol.divergence.dtype == torch.float64 and sol.nfe == 8


@pytest.mark.parametrize("method, rtol, atol, steps, message", [
    ("dopri5", -1.0, 1e-5, None, "rtol=-1.0: expected a finite number > 0"),
    ("dopri5", 1e-5, -1.0, None, "atol=-1.0: expected a finite number > 0"),
    ("dopri5", 1e-5, 0.0, None, "atol=0.0: expected a finite number > 0"),
    ("dopri5", 1e-5, float("nan"), None, "atol=nan: expected a finite number > 0"),
    ("euler", 1e-5, 1e-5, None, "steps=None: expected an integer ≥ 1 for the fixed-step 'euler'"),
    ("rk4", 1e-5, 1e-5, 0, "steps=0: expected an integer ≥ 1"),
    ("midpoint", 1e-5, 1e-5, 2.0, "steps=2.0: expected an integer ≥ 1"),
])
def test_check_solver_names_each_bad_value_in_one_line(method, rtol, atol, steps, message):
    with pytest.raises(ValueError) as err:
        flow_mod.check_solver(method, rtol, atol, steps)
    assert str(err.value) == message


def test_check_solver_returns_floats_and_ignores_steps_of_adaptive_methods():
    assert flow_mod.check_solver("dopri5", 1, 2, None) == (1.0, 2.0, None)
    assert flow_mod.check_solver("rk4", 1e-3, 1e-4, 3) == (1e-3, 1e-4, 3)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_flow_drift_keeps_x_dtype_whatever_the_model_and_sde_return(kind):
    """A float32 state gets a float32 drift although ``σ(t)``, the SDE's coefficients and this
    model's ε are float64; its values are the float64 drift rounded (float32 tolerance)."""
    sde = _sde(kind)
    gm = GaussianMixture.random(2, 2, seed=3, sde=sde)

    class Float64Eps:  # a model whose ε comes back in float64 whatever x's dtype
        def __init__(self):
            self.sde = sde

        def eps(self, x, t):
            return gm.eps(x.to(torch.float64), t)

    x = gm.sample(3, generator=_gen(1))
    t = torch.tensor(0.4, dtype=torch.float64)
    v = flow_mod.flow_drift(Float64Eps(), x.to(torch.float32), t)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, flow_mod.flow_drift(gm, x, t).to(torch.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_the_sde_flow_drift_follows_x_device_when_t_lives_elsewhere(kind):
    """The coefficients (``σ(t)``; ``a(t), b(t)``) come from ``t``'s device (here the CPU) and are
    moved to ``x``'s (here 'meta', a second device every machine has). The flow's own
    ``flow_drift`` first moves ``t`` to ``x``'s device to check it, which 'meta' cannot."""
    x = torch.empty(3, 2, device="meta")
    v = sde_flow_drift(_sde(kind), x, torch.tensor(0.4, dtype=torch.float64), torch.zeros_like(x))
    assert v.device.type == "meta" and v.shape == (3, 2) and v.dtype == torch.float32


def test_an_adaptive_solve_stops_at_the_step_limit(monkeypatch):
    """torchdiffeq is handed the step limit: past it the solve fails with a RuntimeError naming it."""
    gm, x = _gm(), _gm().sample(2, generator=_gen(1))
    monkeypatch.setattr(flow_mod, "_MAX_NUM_STEPS", 3)
    with pytest.raises(RuntimeError, match=r"^ODE solver 'dopri5' \(rtol=1e-05, atol=1e-05\) failed near t=.*"
                                           r"max_num_steps exceeded"):
        solve_flow(gm, x, 1e-3, 1.0)


def test_clock_at_clamps_into_zero_one_by_default():
    clock, sde = flow_mod.Clock(VPSDE.linear()), VPSDE.linear()
    assert clock.at(1.5) == (1.0, float(sde.clock_rate(1.0)))
    assert clock.at(-0.5) == (0.0, float(sde.clock_rate(0.0)))
    assert clock.at(0.5, 0.6, 0.9) == (0.6, float(sde.clock_rate(0.6)))


def test_clock_at_warm_starts_each_inversion_at_the_last_time(monkeypatch):
    """:meth:`Clock.at` hands the SDE's inverse of the clock the midpoint of ``[lo, hi]`` as the
    first start, then each previous answer (consecutive solver times are close)."""
    sde = VPSDE(CosineSchedule())
    clock, starts = flow_mod.Clock(sde), []
    inverse = sde.time_for_clock

    def recording(b, *, lo, hi, t0):
        starts.append(t0)
        return inverse(b, lo=lo, hi=hi, t0=t0)

    monkeypatch.setattr(sde, "time_for_clock", recording)
    first, _ = clock.at(0.5, 0.2, 1.0)
    second, _ = clock.at(0.7, 0.2, 1.0)
    assert starts == [0.6, first]
    assert first == pytest.approx(float(inverse(clock._smooth(torch.tensor(0.5, dtype=torch.float64))[0])),
                                  rel=1e-12)
    assert second == float(inverse(clock._smooth(torch.tensor(0.7, dtype=torch.float64))[0], lo=0.2, hi=1.0,
                                   t0=first))
