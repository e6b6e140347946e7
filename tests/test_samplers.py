"""Samplers: registry, option checking, NFE accounting, reproducibility, shapes and dtypes,
and exact identities (DDPM Algorithm 2, DDIM η=1 = ancestral β̃, Tweedie end step,
Euler–Maruyama on the same Brownian path)."""

import pytest
import torch
import torchsde
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, DiscreteSchedule, EpsModel, GaussianMixture, ScoreModel
from scoresde.core.flow import flow_drift
from scoresde.samplers import SAMPLERS, sample
from scoresde.samplers.ode import encode
from tests.closed_forms import pf_drift
from tests.strategies import schedules

MINE = ("ancestral", "ddim", "sde", "ode", "pc")
# NFE for steps=K, denoise=True: one ε per update (ancestral, ddim); + the Tweedie step (sde,
# ode, pc); pc has 1 + M evaluations per step (M = 1 corrector step by default).
NFE = {"ancestral": lambda k: k, "ddim": lambda k: k, "sde": lambda k: k + 1,
       "pc": lambda k: 2 * k + 1}


class CountingModel(EpsModel):
    """The oracle behind an independent counter of ε calls (score and x0 derive from eps)."""

    def __init__(self, gm):
        self.gm, self.sde, self.calls = gm, gm.sde, 0

    def eps(self, x, t):
        self.calls += 1
        return self.gm.eps(x, t)


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
def test_progress_bar_and_t_end(name, capsys):
    gm, x = _gm(), _x_T(2, (3,))
    quiet = _run(name, gm, x, steps=3, denoise=False)
    loud = _run(name, gm, x, steps=3, denoise=False, progress=True)
    assert torch.equal(quiet.x, loud.x) and name in capsys.readouterr().err
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
    ts = res.info["grid"]  # 1 = τ_K > … > τ_0 = t_eps, uniform
    torch.testing.assert_close(ts, torch.linspace(1.0, t_eps, steps + 1, dtype=torch.float64))
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
