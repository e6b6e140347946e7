"""Samplers: registry, option checking, NFE accounting, reproducibility, shapes and dtypes,
and exact identities (DDPM Algorithm 2, DDIM η=1 = ancestral β̃, Tweedie end step,
Euler–Maruyama on the same Brownian path).

The samplers' plumbing that the distribution and transcription tests do not see: the
progress bars' totals, each option's error message, explicit grids at their edges, explicit
``lower_order_final``, and the reverse SDE's drift memo and noise dtype."""

from __future__ import annotations

import math
import re
import sys

import pytest
import torch
import torchsde
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, DiscreteSchedule, GaussianMixture, ScoreModel
from scoresde.core.flow import flow_drift, solve_flow
from scoresde.samplers import SAMPLERS, base, sample
from scoresde.samplers.base import explicit_grid
from scoresde.samplers.ode import encode, ode
from scoresde.samplers.reverse_sde import ReverseSDE
from tests.closed_forms import pf_drift
from tests.fakes import CountingModel, record_bars
from tests.strategies import schedules

MINE = ("ancestral", "ddim", "sde", "ode", "pc")
# NFE for steps=K, denoise=True: one ε per update (ancestral, ddim); + the Tweedie step (sde,
# ode, pc); pc has 1 + M evaluations per step (M = 1 corrector step by default).
NFE = {"ancestral": lambda k: k, "ddim": lambda k: k, "sde": lambda k: k + 1,
       "pc": lambda k: 2 * k + 1}


def _gm(dim=3, k=2, seed=0, sde=None, event_shape=None):
    return GaussianMixture.random(dim, k, seed=seed, sde=sde, event_shape=event_shape)


def _x_T(n, shape, dtype=torch.float64, seed=0):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _run(name, model, x, seed=1, **kw):
    return sample(model, name, x, generator=torch.Generator().manual_seed(seed), **kw)


# Registry and option checking ---------------------------------------------------------------
def test_registry_holds_the_five_samplers():
    assert set(MINE) <= set(SAMPLERS)


def test_unknown_sampler_name_lists_valid_names():
    with pytest.raises(ValueError, match="sampler='ddpm'") as err:
        sample(_gm(), "ddpm", _x_T(2, (3,)), steps=2)
    for name in MINE:
        assert name in str(err.value)


BAD = [({"steps": 0}, "steps"), ({"steps": -3}, "steps"), ({"steps": 2.5}, "steps"),
       ({"steps": True}, "steps"), ({"t_eps": 0.0}, "t_eps"), ({"t_eps": 1.0}, "t_eps"),
       ({"t_eps": -0.1}, "t_eps"), ({"t_eps": "1e-3"}, "t_eps"), ({"bogus": 1}, "bogus")]


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("bad,match", BAD)
def test_bad_common_options_raise(name, bad, match):
    kw = {"steps": 2, **bad}
    with pytest.raises(ValueError, match=match):
        _run(name, _gm(), _x_T(2, (3,)), **kw)


@pytest.mark.parametrize("name,bad,match", [
    ("ancestral", {"variance": "fixed_large"}, "variance"),
    ("ancestral", {"spacing": "cubic"}, "spacing"),
    ("ancestral", {"eta": 0.5}, "eta"),
    ("ddim", {"eta": -0.1}, "eta"), ("ddim", {"eta": 1.5}, "eta"), ("ddim", {"eta": "1"}, "eta"),
    ("ddim", {"spacing": "log"}, "spacing"),
    ("sde", {"method": "heun"}, "method"), ("sde", {"method": "milstein"}, "method"),
    ("sde", {"rtol": 1e-3}, "rtol"),
    ("ode", {"method": "tsit5"}, "method"), ("ode", {"rtol": 0.0}, "rtol"),
    ("ode", {"atol": -1.0}, "atol"), ("ode", {"ode_dtype": torch.float16}, "ode_dtype"),
    ("ode", {"eta": 0.0}, "eta"),
    ("pc", {"predictor": "euler"}, "predictor"), ("pc", {"corrector_steps": -1}, "corrector_steps"),
    ("pc", {"corrector_steps": 1.5}, "corrector_steps"), ("pc", {"snr": 0.0}, "snr"),
    ("pc", {"norms": "global"}, "norms"),
])
def test_bad_sampler_options_raise(name, bad, match):
    with pytest.raises(ValueError, match=match):
        _run(name, _gm(), _x_T(2, (3,)), steps=2, **bad)


@pytest.mark.parametrize("name", ["ancestral", "ddim", "sde", "pc"])
def test_t_eps_on_a_discrete_schedule_is_rounded_to_the_grid(name):
    gm = _gm(sde=VPSDE.ddpm(10))
    with pytest.raises(ValueError, match="t_eps"):  # rounds to 0, where σ = 0
        _run(name, gm, _x_T(2, (3,)), steps=3, t_eps=0.01)
    res = _run(name, gm, _x_T(2, (3,)), steps=3, t_eps=0.12, denoise=False)
    assert res.t_end == pytest.approx(0.1)  # the grid point i/N it actually stopped at


# NFE -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ancestral", "ddim", "sde", "pc"])
@pytest.mark.parametrize("steps", [1, 7, 30])
def test_nfe_is_exact(name, steps):
    model = CountingModel(_gm())
    res = _run(name, model, _x_T(3, (3,)), steps=steps)
    assert res.nfe == model.calls == NFE[name](steps)


@pytest.mark.parametrize("method,per_step", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
@pytest.mark.parametrize("steps", [3, 109])  # 109: torchdiffeq's step_size grid gave 110
def test_ode_fixed_step_nfe(method, per_step, steps):
    model = CountingModel(_gm())
    res = _run("ode", model, _x_T(3, (3,)), steps=steps, method=method)
    assert res.nfe == model.calls == per_step * steps + 1


@pytest.mark.parametrize("denoise", [True, False])
def test_ode_adaptive_nfe_counts_every_eps_call(denoise):
    model = CountingModel(_gm())
    res = _run("ode", model, _x_T(3, (3,)), steps=1, denoise=denoise)
    assert res.nfe == model.calls and res.nfe > 20  # dopri5: 6 per step + 2 at the start
    model.calls = 0
    lat = encode(model, res.x, rtol=1e-4, atol=1e-4)
    assert lat.nfe == model.calls > 0


def test_sde_srk_costs_four_evaluations_per_step():
    model = CountingModel(_gm())
    res = _run("sde", model, _x_T(3, (3,)), steps=5, method="srk", denoise=False)
    assert res.nfe == model.calls == 4 * 5


# Reproducibility, shapes, dtypes ----------------------------------------------------------------
STOCHASTIC = [("ancestral", {}), ("ddim", {"eta": 0.7}), ("sde", {}), ("sde", {"method": "srk"}),
              ("pc", {})]


@pytest.mark.parametrize("name,kw", STOCHASTIC)
def test_same_seed_same_samples(name, kw):
    gm, x = _gm(), _x_T(4, (3,))
    a, b = _run(name, gm, x, seed=5, steps=6, **kw), _run(name, gm, x, seed=5, steps=6, **kw)
    c = _run(name, gm, x, seed=6, steps=6, **kw)
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    torch.manual_seed(3)  # without a generator: the global RNG, reproducible under manual_seed
    d = sample(gm, name, x, steps=6, **kw)
    torch.manual_seed(3)
    assert torch.equal(d.x, sample(gm, name, x, steps=6, **kw).x)


@pytest.mark.parametrize("name,kw", STOCHASTIC + [("ddim", {}), ("ode", {}),
                                                  ("ode", {"method": "rk4"})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_images_equal_flat_points(name, kw, dtype):
    """Data of shape (1, 2, 2) gives the same numbers as the same data flattened to (4,)."""
    flat, img = _gm(4, 2, seed=2), _gm(4, 2, seed=2, event_shape=(1, 2, 2))
    x = _x_T(5, (4,), dtype)
    a = _run(name, flat, x, steps=4, **kw)
    b = _run(name, img, x.reshape(5, 1, 2, 2), steps=4, **kw)
    assert b.x.shape == (5, 1, 2, 2) and a.x.dtype == b.x.dtype == dtype
    assert torch.isfinite(a.x).all()
    torch.testing.assert_close(b.x.reshape(5, 4), a.x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kw", [("ddim", {}), ("ode", {}), ("ode", {"method": "euler"})])
def test_float32_matches_float64_for_deterministic_samplers(name, kw):
    gm, x = _gm(), _x_T(6, (3,))
    a = _run(name, gm, x, steps=20, **kw)
    b = _run(name, gm, x.float(), steps=20, **kw)
    assert b.x.dtype == torch.float32
    torch.testing.assert_close(b.x.double(), a.x, rtol=0, atol=1e-4)  # float32 round-off


@pytest.mark.parametrize("name", MINE)
def test_progress_bar_and_t_end(name, capsys, monkeypatch):
    gm, x = _gm(), _x_T(2, (3,))
    quiet = _run(name, gm, x, steps=3, denoise=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("SCORESDE_PROGRESS_EVERY", "0")  # not a terminal: a line at every tick
    loud = _run(name, gm, x, steps=3, denoise=False, progress=True)
    assert torch.equal(quiet.x, loud.x) and f"\n{name}: done" in "\n" + capsys.readouterr().err
    assert quiet.t_end == pytest.approx(gm.sde.sampling_eps)
    assert _run(name, gm, x, steps=3).t_end == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", MINE)
def test_cuda(name):
    gm, x = _gm(), _x_T(4, (3,)).cuda()
    res = sample(gm, name, x, steps=4, generator=torch.Generator("cuda").manual_seed(0))
    assert res.x.is_cuda and res.x.shape == x.shape and torch.isfinite(res.x).all()


# Exact identities ----------------------------------------------------------------------------
@given(st.integers(2, 60), st.integers(1, 4), st.integers(1, 3), st.integers(0, 10**6),
       st.sampled_from(["beta", "beta_tilde"]))
@settings(max_examples=12)
def test_ancestral_is_ddpm_algorithm_2(n, dim, k, seed, variance):
    """Ho et al. 2020, Algorithm 2, transcribed from the paper with its own β_i, on the same noise."""
    sched = DiscreteSchedule.ddpm_linear(n, 1e-4, 0.3)
    gm = _gm(dim, k, seed=seed, sde=VPSDE(sched))
    betas = sched.betas
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    x_T = _x_T(8, (dim,), seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = x_T
    for i in range(n, 0, -1):  # line 2: for t = T, ..., 1
        z = torch.randn(x.shape, generator=g, dtype=x.dtype) if i > 1 else torch.zeros_like(x)
        b, a, ab = betas[i - 1], alphas[i - 1], alpha_bars[i - 1]
        ab_prev = alpha_bars[i - 2] if i > 1 else torch.tensor(1.0, dtype=torch.float64)
        var = b if variance == "beta" else (1 - ab_prev) / (1 - ab) * b
        eps = gm.eps(x, torch.tensor(i / n, dtype=torch.float64))
        x = (x - (1 - a) / torch.sqrt(1 - ab) * eps) / torch.sqrt(a) + torch.sqrt(var) * z  # line 4
    res = sample(gm, "ancestral", x_T, steps=n, variance=variance,
                 generator=torch.Generator().manual_seed(seed))
    assert res.nfe == n and res.t_end == 0.0
    torch.testing.assert_close(res.x, x, rtol=1e-9, atol=1e-9)


@given(schedules(max_n=1000), st.integers(2, 40), st.integers(0, 10**6),
       st.sampled_from(["uniform", "quadratic", "logsnr"]), st.booleans())
@settings(max_examples=15)
def test_ddim_eta_one_is_ancestral_beta_tilde(schedule, steps, seed, spacing, denoise):
    """Song, Meng & Ermon 2021: η = 1 is DDPM with β̃ — the same map of (x_T, z), so equal samples."""
    sde = VPSDE(schedule)
    n = sde.discrete_steps
    assume(n is None or n >= 4)  # t_eps = 1/N must stay < 1 with room for a grid
    if n is not None:
        steps = min(steps, n // 4)
    gm = _gm(2, 2, seed=seed, sde=sde)
    x = _x_T(6, (2,), seed=seed)
    try:
        a = _run("ancestral", gm, x, seed=seed, steps=steps, variance="beta_tilde",
                 spacing=spacing, denoise=denoise)
    except ValueError as err:  # a grid too fine for a short discrete schedule
        assert "distinct" in str(err)
        return
    b = _run("ddim", gm, x, seed=seed, steps=steps, eta=1.0, spacing=spacing, denoise=denoise)
    torch.testing.assert_close(a.x, b.x, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name,kw", [("ancestral", {}), ("ancestral", {"variance": "beta_tilde"}),
                                     ("ddim", {}), ("ddim", {"eta": 1.0})])
def test_one_step_to_zero_is_tweedie(name, kw):
    """A single update from t = 1 to t = 0 (ᾱ(0) = 1) is Tweedie's E[x_0 | x_1]."""
    gm, x = _gm(), _x_T(5, (3,))
    res = _run(name, gm, x, steps=1, **kw)
    torch.testing.assert_close(res.x, gm.x0(x, 1.0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["sde", "ode", "pc"])
def test_denoise_is_one_tweedie_step(name):
    gm, x = _gm(), _x_T(5, (3,))
    t_eps = gm.sde.sampling_eps  # given: with few steps the default end time is later (default_t_eps)
    raw = _run(name, gm, x, steps=4, denoise=False, t_eps=t_eps)
    den = _run(name, gm, x, steps=4, denoise=True, t_eps=t_eps)
    assert den.nfe == raw.nfe + 1
    torch.testing.assert_close(den.x, gm.x0(raw.x, gm.sde.sampling_eps), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_sde_euler_is_euler_maruyama_on_the_same_brownian_path(seed):
    """Reverse SDE in s = -t (Song et al. 2021, eq. 6), transcribed with the sampler's own path."""
    gm, x_T = _gm(3, 2, seed=seed), _x_T(6, (3,), seed=seed)
    steps, t_eps = 8, 1e-3
    res = _run("sde", gm, x_T, seed=seed, steps=steps, t_eps=t_eps, denoise=False)
    bm = torchsde.BrownianInterval(t0=-1.0, t1=-t_eps, size=(6, 3), dtype=torch.float64,
                                   entropy=res.info["seed"])
    ts = res.info["grid"]  # 1 = τ_K > … > τ_0 = t_eps, quadratic (the default spacing)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    torch.testing.assert_close(ts, t_eps + (1 - t_eps) * u**2)
    x = x_T
    for t, t_next in zip(ts[:-1], ts[1:]):
        h = float(t - t_next)
        dw = bm(float(-t), float(-t_next))
        beta = float(gm.sde.beta(t))
        drift = -0.5 * beta * x - beta * gm.score(x, t)  # f - g² s
        x = x - drift * h + beta**0.5 * dw  # x_{t-h} = x_t - (f - g² s) h + g ΔW
    torch.testing.assert_close(res.x, x, rtol=1e-10, atol=1e-10)


def test_flow_drift_is_the_pf_drift_in_the_b_clock():
    """β(t) · dx/dB equals the SDE's probability-flow drift f - ½ g² ∇log p_t with the oracle's
    exact score (computed by the oracle directly, not through ε)."""
    gm, x = _gm(), _x_T(4, (3,))
    t = torch.tensor(0.4, dtype=torch.float64)
    beta = float(gm.sde.beta(t))
    torch.testing.assert_close(beta * flow_drift(gm, x, t),
                               pf_drift(gm.sde, x, t, gm.score(x, t)))  # docs/math.md


class _TinyNet(torch.nn.Module):
    """A float32 ε-network ``(x, t) ↦ ε`` for the ScoreModel code path."""

    def __init__(self, dim):
        super().__init__()
        self.lin = torch.nn.Linear(dim + 1, dim)

    def forward(self, x, t):
        return self.lin(torch.cat([x, t[:, None]], 1))


@pytest.mark.parametrize("name", MINE)
def test_score_model_with_float32_net_and_no_graph(name):
    torch.manual_seed(0)
    model = ScoreModel(_TinyNet(3), VPSDE.linear())
    x = _x_T(4, (3,), torch.float32)
    res = _run(name, model, x, steps=3)
    assert res.x.dtype == torch.float32 and res.x.shape == x.shape
    assert torch.isfinite(res.x).all() and not res.x.requires_grad  # run under no_grad


# Edges -----------------------------------------------------------------------------------


def _x(n=4, dim=2, seed=0, dtype=torch.float64):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def bars(monkeypatch):
    # the package exports the function ode under the module's name: take the module itself
    return record_bars(monkeypatch, base, sys.modules["scoresde.samplers.ode"])


# Progress totals: one tick per ε evaluation ---------------------------------------------------
@pytest.mark.parametrize("m", [None, 0, 2])
def test_pc_progress_total_counts_predictor_and_corrector_evaluations(bars, m):
    """PC with ``K`` predictor steps and ``M`` corrector steps each (default M = 1) evaluates ε
    ``K (1 + M)`` times, plus one for the denoising step; the bar's total says so (``steps=5``
    gives ``K = 5`` intervals, from 1 to the SDE's sampling_eps, then the denoising step)."""
    opts = {} if m is None else {"corrector_steps": m}
    res = sample(_gm(2, 2, seed=1), "pc", _x(), steps=5, generator=_gen(), **opts)
    m_used = 1 if m is None else m
    assert bars[-1].total == 5 * (1 + m_used) + 1 == res.nfe and bars[-1].n == res.nfe


@pytest.mark.parametrize("bad", [-1, True, "2", 1.0])
def test_pc_invalid_corrector_steps_is_named(bars, bad):
    with pytest.raises(ValueError, match=rf"^corrector_steps={re.escape(repr(bad))}: expected an integer ≥ 0"):
        sample(_gm(2, 2, seed=1), "pc", _x(), steps=5, generator=_gen(), corrector_steps=bad)
    assert bars[-1].total == 5 + 1  # the bar, made before the check, counts no corrector step


@pytest.mark.parametrize("option, value, expected", [
    ("predictor", "euler", "one of reverse_diffusion, ancestral"),
    ("norms", "l2", "one of sample, batch"),
    ("snr", -0.1, "a number ≥ 0"),
])
def test_pc_option_messages_name_the_option(option, value, expected):
    with pytest.raises(ValueError, match=rf"^{option}={re.escape(repr(value))}: expected"):
        sample(_gm(2, 2, seed=1), "pc", _x(), steps=3, generator=_gen(), **{option: value})


@pytest.mark.parametrize("method, steps, stages", [("rk4", 3, 4), ("midpoint", 2, 2), ("euler", 5, 1)])
def test_ode_progress_total_is_steps_times_stages(bars, method, steps, stages):
    res = sample(_gm(2, 2, seed=1), "ode", _x(), steps=steps, method=method)
    bar = bars[-1]  # the solve's bar (the run's own, made first, stays empty)
    assert bar.total == steps * stages == res.nfe - 1 and bar.n == steps * stages


def test_ode_adaptive_progress_counts_the_time_span_in_thousandths(bars):
    """An adaptive solve's NFE are not known ahead: its bar shows the share of the span solved."""
    ode(_gm(2, 2, seed=1), _x(), steps=1, rtol=1e-3, atol=1e-3)  # steps is checked, unused by dopri5
    bar = bars[-1]
    assert (bar.total, bar.unit, bar.n) == (1000, "‰ of the time span", 1000) and all(k > 0 for k in bar.updates)


def test_encode_names_itself_for_an_unknown_option():
    with pytest.raises(ValueError, match=r"^option 'bogus': the ode sampler accepts method, rtol, atol, ode_dtype$"):
        encode(_gm(2, 2, seed=1), _x(), bogus=1)


def test_dpmpp_option_messages():
    with pytest.raises(ValueError, match=r"^order=4: expected one of 1, 2, 3$"):
        sample(_gm(2, 2, seed=1), "dpmpp", _x(), steps=4, order=4)
    with pytest.raises(ValueError, match=r"^lower_order_final=1: expected True or False$"):
        sample(_gm(2, 2, seed=1), "dpmpp", _x(), steps=4, lower_order_final=1)


def test_dpmpp_explicit_lower_order_final():
    """Five steps end at the few-step default time (later than sampling_eps), so the default is
    False: passing False gives the same samples, True a first-order last step (0.07 away here)."""
    gm, x = _gm(2, 2, seed=1), _x()
    default = sample(gm, "dpmpp", x, steps=5)
    assert default.info["lower_order_final"] is False
    assert torch.equal(sample(gm, "dpmpp", x, steps=5, lower_order_final=False).x, default.x)
    lower = sample(gm, "dpmpp", x, steps=5, lower_order_final=True)
    assert lower.info["lower_order_final"] is True and (lower.x - default.x).abs().max() > 1e-2


# Explicit grids ------------------------------------------------------------------------------------
def test_explicit_grid_refuses_both_kinds_in_one_line():
    with pytest.raises(ValueError, match=r"^times and timesteps: give one explicit grid, not both$"):
        explicit_grid(VPSDE.ddpm(10), times=[0.5], timesteps=[3])


def test_explicit_timesteps_edges():
    sde = VPSDE.ddpm(10)
    assert torch.equal(explicit_grid(sde, timesteps=[4]), torch.tensor([0.5], dtype=torch.float64))
    grid = explicit_grid(sde, timesteps=torch.tensor([9.0, 3.0]))  # whole numbers in a float tensor
    assert grid.dtype == torch.float64 and torch.equal(grid, torch.tensor([1.0, 0.4], dtype=torch.float64))
    for bad in ([5, 5], [3, 4], [True, False], [2.5, 1.0], torch.tensor([[3, 1]]), []):
        with pytest.raises(ValueError, match=r"^timesteps=.*: expected "):
            explicit_grid(sde, timesteps=bad)
    for bad, message in [([5, 5], r"\[5, 5\]: expected strictly decreasing integers in 0..9"),
                         ([2.5, 1.0], r"\[2\.5, 1\.0\]: expected a non-empty 1-D sequence of integers"),
                         ("ab", r"'ab': expected a non-empty 1-D sequence of integers"),
                         ([1j], r"\[1j\]: expected a non-empty 1-D sequence of integers")]:
        with pytest.raises(ValueError, match=rf"^timesteps={message}$"):
            explicit_grid(sde, timesteps=bad)


def test_explicit_times_edges():
    sde = VPSDE.linear()
    grid = explicit_grid(sde, times=torch.tensor([0.75, 0.25], dtype=torch.float32, requires_grad=True))
    assert grid.dtype == torch.float64 and not grid.requires_grad
    assert torch.equal(grid, torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.equal(explicit_grid(sde, times=[0.3]), torch.tensor([0.3], dtype=torch.float64))
    for bad, message in [([0.5, 0.5], r"\[0\.5, 0\.5\]: expected strictly decreasing times in \(0, 1\]$"),
                         ([0.5, 0.7], r"\[0\.5, 0\.7\]: expected strictly decreasing"),
                         ("x", r"'x': expected a non-empty 1-D sequence of numbers$"),
                         (torch.tensor([True]), r"\[True\]: expected a non-empty 1-D sequence of numbers$"),
                         ([1 + 0j], r"\[\(1\+0j\)\]: expected a non-empty 1-D sequence of numbers$")]:
        with pytest.raises(ValueError, match=rf"^times={message}"):
            explicit_grid(sde, times=bad)


def test_explicit_grids_stay_on_the_cpu_under_another_default_device():
    """Grids are host-side float64 whatever PyTorch's default device is ('meta' stands in for a GPU)."""
    with torch.device("meta"):
        a = explicit_grid(VPSDE.linear(), times=[0.5, 0.25])
        b = explicit_grid(VPSDE.ddpm(10), timesteps=[4, 1])
    assert a.device.type == "cpu" and b.device.type == "cpu"
    assert torch.equal(b, torch.tensor([0.5, 0.2], dtype=torch.float64))


def test_long_grids_are_shown_cut_at_60_characters():
    times = [0.5] * 30  # repr is 150 characters
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=times)
    shown = str(err.value).split(": expected")[0][len("times="):]
    assert shown == repr(times)[:57] + "..." and len(shown) == 60
    sixty_one = [0.5] * 11 + [0.25]  # repr of 61 characters: cut
    assert len(repr(sixty_one)) == 61
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=sixty_one)
    assert str(err.value).startswith("times=" + repr(sixty_one)[:57] + "...: expected")
    sixty = [0.5] * 12  # repr of 60 characters: shown whole
    assert len(repr(sixty)) == 60
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=sixty)
    assert str(err.value).startswith("times=" + repr(sixty) + ": expected")
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert str(err.value).startswith("times=[0.5, 0.5]: expected")  # a tensor is shown as its list


# The reverse SDE for torchsde --------------------------------------------------------------------
def test_reverse_sde_drift_memo_is_keyed_by_time():
    gm = _gm(2, 2, seed=1)
    y = _x(3)
    rev = ReverseSDE(gm, y.shape)
    a = rev.f(torch.tensor(-0.5, dtype=torch.float64), y)
    b = rev.f(torch.tensor(-0.25, dtype=torch.float64), y)  # same y, another time
    fresh = ReverseSDE(gm, y.shape).f(torch.tensor(-0.25, dtype=torch.float64), y)
    assert torch.equal(b, fresh) and not torch.equal(a, b)


def test_reverse_sde_noise_follows_the_state_dtype():
    gm = _gm(2, 2, seed=1)
    y = _x(3, dtype=torch.float32)
    g = ReverseSDE(gm, y.shape).g(torch.tensor(-0.5, dtype=torch.float64), y)
    assert g.dtype == torch.float32 and g.shape == y.shape
    assert torch.equal(g, gm.sde.diffusion(torch.tensor(0.5, dtype=torch.float64)).to(torch.float32).expand(3, 2))


def test_grids_that_rise_after_their_first_step_are_refused():
    """Strictly decreasing means every step, not only below the first point."""
    with pytest.raises(ValueError, match=r"^timesteps=\[5, 2, 3\]: expected strictly decreasing integers in 0..9$"):
        explicit_grid(VPSDE.ddpm(10), timesteps=[5, 2, 3])
    with pytest.raises(ValueError, match=r"^times=\[0\.9, 0\.3, 0\.5\]: expected strictly decreasing times"):
        explicit_grid(VPSDE.linear(), times=[0.9, 0.3, 0.5])


def test_timesteps_need_a_discrete_schedule_even_on_an_sde_without_the_attribute():
    class BareSDE:  # a user's SDE object without discrete_steps
        pass

    with pytest.raises(ValueError, match=r"^timesteps=\.\.\.: DDPM integer timesteps need a discrete schedule"):
        explicit_grid(BareSDE(), timesteps=[3, 1])
    grid = explicit_grid(VPSDE.ddpm(10), timesteps=torch.tensor([3.0, 1.0], requires_grad=True))
    assert not grid.requires_grad and torch.equal(grid, torch.tensor([0.4, 0.2], dtype=torch.float64))


def test_ode_option_messages_and_state_dtype():
    gm, x = _gm(2, 2, seed=1), _x()
    with pytest.raises(ValueError, match=r"^method='bogus': expected one of "):
        sample(gm, "ode", x, steps=2, method="bogus")
    with pytest.raises(ValueError, match=r"^ode_dtype=torch\.float16: expected one of "):
        sample(gm, "ode", x, steps=2, ode_dtype=torch.float16)
    # the solve runs in ode_dtype: float32 here, as the flow solver gives it
    got = sample(gm, "ode", x, steps=3, method="rk4", ode_dtype=torch.float32, denoise=False)
    want = solve_flow(gm, x, 1.0, got.t_end, method="rk4", steps=3, dtype=torch.float32).x
    assert got.x.dtype == torch.float64 and torch.equal(got.x, want.to(torch.float64))


def test_time_grid_spacings_in_closed_form_and_their_defaults():
    """``time_grid(sde, K, t_eps)`` is uniform in t by default; quadratic is ``t_eps + (1-t_eps) u²``;
    log-SNR is linear in ``λ``; Karras (default ρ = 7) is linear in ``(σ/α)^{1/ρ}``."""
    from scoresde.samplers.base import time_grid

    sde, u = VPSDE.linear(), torch.linspace(0, 1, 5, dtype=torch.float64)
    uniform = time_grid(sde, 4, 0.2)
    assert uniform.dtype == torch.float64 and torch.allclose(uniform, 0.2 + 0.8 * u, rtol=0, atol=1e-15)
    assert torch.allclose(time_grid(sde, 4, 0.2, "quadratic"), 0.2 + 0.8 * u**2, rtol=0, atol=1e-15)
    lam = sde.log_snr(time_grid(sde, 4, 0.01, "logsnr"))
    torch.testing.assert_close(lam, lam[0] + (lam[-1] - lam[0]) * u, rtol=0, atol=1e-9)
    for rho, grid in ((7.0, time_grid(sde, 4, 0.01, "karras")), (3.0, time_grid(sde, 4, 0.01, "karras", rho=3.0))):
        r = torch.exp(-0.5 * sde.log_snr(grid)) ** (1 / rho)  # (σ/α)^{1/ρ}
        torch.testing.assert_close(r, r[0] + (r[-1] - r[0]) * u, rtol=0, atol=1e-9)
    ddpm = time_grid(VPSDE.ddpm(10), 3, 0.1)  # training times i/N
    assert torch.equal(ddpm * 10, torch.round(ddpm * 10)) and float(ddpm[0]) == 0.1 and float(ddpm[-1]) == 1.0


def test_sampler_grid_defaults_and_an_explicit_end():
    """``sampler_grid(sde, K, t_eps, denoise)``: decreasing, uniform in t by default, Karras with
    ρ = 7 by default; ``K = 0`` is just ``[1]``; without ``t_eps`` and without the Tweedie step it
    ends at the SDE's sampling_eps."""
    from scoresde.samplers.base import sampler_grid, time_grid

    sde = VPSDE.linear()
    u = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.allclose(sampler_grid(sde, 4, 0.2, False), (0.2 + 0.8 * u).flip(0), rtol=0, atol=1e-15)
    assert torch.equal(sampler_grid(sde, 4, 0.01, True, "karras"), time_grid(sde, 4, 0.01, "karras", 7.0).flip(0))
    assert torch.equal(sampler_grid(sde, 0, None, True), torch.ones(1, dtype=torch.float64))
    assert float(sampler_grid(sde, 4, None, False)[-1]) == sde.sampling_eps


def test_default_end_time_in_closed_form():
    """``σ/α = max(σ/α at sampling_eps, 2.8 K^-1.65)``, capped at t = 0.9 (FEW_STEP_SCALE,
    FEW_STEP_POWER): λ(t) = -2 log(2.8 K^-1.65) while that is below λ(sampling_eps)."""
    from scoresde import LinearSchedule
    from scoresde.samplers.base import default_t_eps

    sde = VPSDE.linear()
    for k in (1, 5, 20):
        t = default_t_eps(sde, k)
        want = -2.0 * math.log(2.8 * k**-1.65)
        assert float(sde.log_snr(torch.tensor(t, dtype=torch.float64))) == pytest.approx(want, rel=1e-12)
    assert default_t_eps(sde, 1000) == sde.sampling_eps
    assert default_t_eps(sde, 0) == default_t_eps(sde, 1)  # K counted from 1
    assert default_t_eps(VPSDE(LinearSchedule(0.1, 2.0)), 1) == 0.9  # little noise at t = 1: capped


def test_sampler_grid_on_a_discrete_schedule_without_an_end_time():
    from scoresde.samplers.base import default_t_eps, sampler_grid

    ddpm10 = sampler_grid(VPSDE.ddpm(10), 3, None, False)
    assert float(ddpm10[-1]) == 0.1 and torch.equal(ddpm10 * 10, torch.round(ddpm10 * 10))
    sde = VPSDE.ddpm(1000)
    end = float(sampler_grid(sde, 5, None, True)[-1])
    assert end == round(default_t_eps(sde, 5) * 1000) / 1000 and end > 0.05


def test_sampler_grid_edges():
    from scoresde.samplers.base import sampler_grid, time_grid

    sde = VPSDE.linear()
    with torch.device("meta"):
        one = sampler_grid(sde, 0, None, True)
    assert one.dtype == torch.float64 and one.device.type == "cpu" and one.tolist() == [1.0]
    assert torch.equal(sampler_grid(sde, 4, 0.01, True, "karras", 3.0), time_grid(sde, 4, 0.01, "karras", 3.0).flip(0))

    class NoSteps:  # an SDE object without discrete_steps
        def __init__(self, sde):
            self._sde = sde

        def __getattr__(self, name):
            if name == "discrete_steps":
                raise AttributeError(name)
            return getattr(self._sde, name)

    assert torch.equal(sampler_grid(NoSteps(sde), 4, None, False), sampler_grid(sde, 4, None, False))


def test_time_grid_messages():
    from scoresde.samplers.base import time_grid

    sde = VPSDE.linear()
    with pytest.raises(ValueError, match=r"^spacing='cubic': expected one of "):
        time_grid(sde, 4, 0.1, "cubic")
    with pytest.raises(ValueError, match=r"^rho=0: expected "):
        time_grid(sde, 4, 0.1, "karras", rho=0)
    r = torch.exp(-0.5 * sde.log_snr(time_grid(sde, 4, 0.01, "karras", rho=0.5))) ** 2  # ρ = 0.5 allowed
    torch.testing.assert_close(r, r[0] + (r[-1] - r[0]) * torch.linspace(0, 1, 5, dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_a_grid_that_collapses_is_refused_by_name():
    """Karras spacing with a tiny ρ piles every point onto the ends: duplicates, refused."""
    from scoresde.samplers.base import time_grid

    with pytest.raises(ValueError, match=r"^spacing='karras' with steps=6: grid is not strictly increasing$"):
        time_grid(VPSDE.linear(), 6, 1e-3, "karras", rho=1e-3)


def test_a_non_finite_result_is_counted_in_the_message():
    class NaNEps:
        def __init__(self, sde):
            self.sde = sde

        def eps(self, x, t):
            out = torch.zeros_like(x)
            out[0, 0] = float("nan")  # one bad entry: DDIM is elementwise, so one value of the result
            return out

    with pytest.raises(ValueError, match=r"^ddim sampler: 1 of 8 values of the result are not finite \(NaN or inf\)"):
        sample(NaNEps(VPSDE.linear()), "ddim", _x(), steps=3)


def test_x_T_and_run_option_messages():
    gm1 = GaussianMixture.random(1, 2, seed=1, sde=VPSDE.linear())
    flat = sample(gm1, "ddim", torch.randn(4, 1, generator=_gen(), dtype=torch.float64)[:, 0], steps=3)
    assert flat.x.shape == (4,)  # a batch of scalars (B,) is a batch
    with pytest.raises(TypeError, match=r"^x_T: the ddim sampler got a tensor of dtype torch\.int64; expected a "
                                        r"floating-point torch\.Tensor$"):
        sample(_gm(2, 2, seed=1), "ddim", torch.zeros(4, 2, dtype=torch.long), steps=3)
    with pytest.raises(TypeError, match=r"^x_T: the ddim sampler got list; expected"):
        sample(_gm(2, 2, seed=1), "ddim", [[0.0, 1.0]], steps=3)
    with pytest.raises(ValueError, match=r"^x_T of shape \(\): expected \(B, \*dims\)$"):
        sample(_gm(2, 2, seed=1), "ddim", torch.tensor(0.5, dtype=torch.float64), steps=3)
    with pytest.raises(ValueError, match=r"^option 'bogus': the ddim sampler accepts "):
        sample(_gm(2, 2, seed=1), "ddim", _x(), steps=3, bogus=1)
    with pytest.raises(ValueError, match=r"^denoise=1: expected True or False$"):
        sample(_gm(2, 2, seed=1), "ddim", _x(), steps=3, denoise=1)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_missing_step_count_is_one_exact_message(name):
    """Every sampler without ``steps`` says so in one sentence; the gridded ones also name the explicit grids."""
    expected = "steps=None: expected an integer ≥ 1" + ("" if name == "ode" else " (or times= / timesteps=)")
    with pytest.raises(ValueError) as err:
        sample(_gm(2, 2, seed=1), name, _x())
    assert str(err.value) == expected


@pytest.mark.parametrize("name, intervals", [("ancestral", 3), ("ddim", 3), ("pc", 8)])  # pc: few-step rule
def test_karras_spacing_without_a_rho_option_uses_rho_7(name, intervals):
    """Samplers that take ``spacing`` but no ``rho`` build a Karras grid with ρ = 7 (Karras et al. 2022)."""
    got = sample(_gm(2, 2, seed=1), name, _x(), steps=4, spacing="karras").info["grid"]
    t_eps = float(got[-1])
    assert torch.equal(got, base.time_grid(_gm(2, 2, seed=1).sde, intervals, t_eps, "karras", 7.0).flip(0))
    assert not torch.equal(got, base.time_grid(_gm(2, 2, seed=1).sde, intervals, t_eps, "karras", 8.0).flip(0))


def test_the_ode_samplers_grid_is_its_two_ends():
    res = sample(_gm(2, 2, seed=1), "ode", _x(), steps=4, t_eps=0.01)
    assert torch.equal(res.info["grid"], torch.tensor([1.0, 0.01], dtype=torch.float64)) and res.t_end == 0.0


def test_step_count_and_option_messages_in_full():
    with pytest.raises(ValueError) as err:
        sample(_gm(2, 2, seed=1), "ddim", _x(), steps=0)
    assert str(err.value) == "steps=0: expected an integer ≥ 1"
    with pytest.raises(ValueError) as err:
        base.check_options("bare", {"eta": 0.5}, {})
    assert str(err.value) == "option 'eta': the bare sampler accepts no extra options"
    with pytest.raises(ValueError) as err:
        base.check_options("ddim", {"eta2": 0.5}, {"eta": 0.0, "spacing": "uniform"})
    assert str(err.value) == "option 'eta2': the ddim sampler accepts eta, spacing"
