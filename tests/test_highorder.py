"""High-order probability-flow solvers (``dpmpp``, ``heun``) against closed forms.

For Gaussian data ``N(μ, Σ = U diag(λ) Uᵀ)`` the probability-flow ODE is linear and its flow
map is known exactly: in ``U``'s basis, ``x_t - α_t μ`` scales by ``√(c_t/c_1)`` per axis,
``c_t = α_t² λ + σ_t²`` (``d(x - αμ)/dt = ½ (ċ/c)(x - αμ)``, from the probability-flow
drift with the exact score). So each sample is compared with its exact image, which is much
sharper than comparing statistics.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scoresde import VPSDE, CosineSchedule, DiscreteSchedule, GaussianMixture, LinearSchedule
from scoresde.samplers import SAMPLERS
from tests.closed_forms import convergence_slope, gaussian_flow_map, pf_drift
from tests.fakes import CountingModel

SOLVERS = {  # name → (sampler, options)
    "dpmpp2m": ("dpmpp", {"order": 2}),
    "dpmpp3m": ("dpmpp", {"order": 3}),
    "heun": ("heun", {}),
}


def run(solver, model, x, steps, **kw):
    name, opts = SOLVERS[solver]
    return SAMPLERS[name](model, x, steps=steps, **{**opts, **kw})


def tweedie(gm: GaussianMixture, x: torch.Tensor, s: float) -> torch.Tensor:
    """``E[x_0 | x_s = x] = μ + Σ α (α²Σ + σ²I)⁻¹ (x - α μ)`` for a single Gaussian."""
    mu, u, lam = gm.means[0], gm.evecs[0], gm.evals[0]
    a, sg = float(gm.sde.alpha(s)), float(gm.sde.sigma(s))
    return mu + (((x - a * mu) @ u) * (a * lam / (a**2 * lam + sg**2))) @ u.T


@st.composite
def sdes(draw):
    kind = draw(st.sampled_from(["linear", "cosine", "ddpm"]))
    if kind == "linear":
        lo = draw(st.floats(0.05, 0.5))
        return VPSDE(LinearSchedule(lo, lo + draw(st.floats(5.0, 30.0))))
    if kind == "cosine":
        return VPSDE(CosineSchedule(s=draw(st.floats(0.002, 0.02))))
    n = draw(st.integers(500, 1000))
    return VPSDE(DiscreteSchedule.ddpm_linear(n, 1e-4, draw(st.floats(0.01, 0.03))))


# Steps and tolerances of the exact-map test per (solver, spacing). Measured worst max-abs
# error over 60 random (schedule, dim, seed, denoise) draws (float64, data scale ~0.5):
# dpmpp2m 100 steps: logsnr 1.1e-3, karras 4.9e-3; dpmpp3m 60 steps: logsnr 1.8e-4, karras
# 2.9e-3; heun 100 steps: logsnr ~2.4e-3, karras ~5e-3. Tolerances are ~2x those. A lost
# order (the convergence test below pins the order) would multiply these errors by 10-100.
EXACT_STEPS = {"dpmpp2m": 100, "dpmpp3m": 60, "heun": 100}
EXACT_TOL = {("dpmpp2m", "logsnr"): 3e-3, ("dpmpp2m", "karras"): 1e-2,
             ("dpmpp3m", "logsnr"): 5e-4, ("dpmpp3m", "karras"): 6e-3,
             ("heun", "logsnr"): 5e-3, ("heun", "karras"): 1e-2}


@settings(max_examples=12)
@given(sde=sdes(), dim=st.integers(1, 4), seed=st.integers(0, 10_000),
       case=st.sampled_from(sorted(EXACT_TOL)), denoise=st.booleans())
def test_gaussian_exact_flow_map(sde, dim, seed, case, denoise):
    solver, spacing = case
    gm = GaussianMixture.random(dim, 1, seed=seed, sde=sde)
    x1 = torch.randn(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    # On a discrete schedule the grid is rounded to i/N: from t_eps = 1/N a logsnr or karras grid
    # has at most ~30-50 distinct points, so stop at 10/N there (still the discrete code path).
    t_eps = sde.sampling_eps if sde.discrete_steps is None else 10 / sde.discrete_steps
    try:
        res = run(solver, gm, x1, EXACT_STEPS[solver], spacing=spacing, denoise=denoise, t_eps=t_eps)
    except ValueError:  # still too few distinct grid points (short discrete grid)
        assume(False)
    want = gaussian_flow_map(gm, x1, 1.0, t_eps)
    if denoise:
        want = tweedie(gm, want, t_eps)
    assert res.t_end == (0.0 if denoise else t_eps)
    assert (res.x - want).abs().max().item() < EXACT_TOL[case]


@pytest.mark.parametrize("solver,slope_min", [("dpmpp2m", 1.8), ("dpmpp3m", 2.7), ("heun", 1.8)])
@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
def test_convergence_order(solver, slope_min, spacing):
    """Error vs steps on the exact map: least-squares slope of log error against log steps.

    Range 20..80 steps, where discretisation error dominates (far above float64 round-off).
    Measured slopes: 2M ≈ 1.9-2.0, 3M ≈ 3.6-3.9 (the Gaussian's smooth x̂_0(λ) helps), Heun ≈ 2.0-2.1.
    """
    gm = GaussianMixture.random(3, 1, seed=1, sde=VPSDE.linear())
    x1 = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    slope, errs = convergence_slope(lambda k: run(solver, gm, x1, k, spacing=spacing, denoise=False).x, gm, x1)
    assert slope > slope_min, f"errors {errs}"


def test_first_order_is_ddim():
    """``order=1`` without the corrector is DDIM with η = 0 (Song et al. 2021 eq. 12) on the same grid, to round-off."""
    gm = GaussianMixture.ring(sde=VPSDE.cosine())
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = SAMPLERS["dpmpp"](gm, x, steps=12, order=1, spacing="logsnr", denoise=False, corrector=False)
    grid = res.info["grid"]  # 1 → t_eps
    ab = gm.sde.alpha_bar(grid)
    for i in range(len(grid) - 1):  # x_{k-1} = √ᾱ_{k-1} x̂_0 + √(1 - ᾱ_{k-1}) ε
        eps = gm.eps(x, grid[i])
        x0 = (x - math.sqrt(1 - ab[i]) * eps) / math.sqrt(ab[i])
        x = math.sqrt(ab[i + 1]) * x0 + math.sqrt(1 - ab[i + 1]) * eps
    assert torch.allclose(res.x, x, rtol=0, atol=1e-12)


def test_mixture_matches_reference_ode():
    """On a 4-component 3-D mixture, per-sample agreement with a tight dopri5 solve of the
    probability-flow ODE (torchdiffeq, rtol = atol = 1e-8; error vs 1e-10: 7e-8): error ≪ the data scale (~0.5)."""
    gm = GaussianMixture.random(3, 4, seed=2, sde=VPSDE.linear())
    x1 = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1.0, gm.sde.sampling_eps], dtype=torch.float64)
    # t is clamped: torchdiffeq's first-step heuristic may probe past the end of the interval.
    ref = torchdiffeq.odeint(lambda tt, y: pf_drift(gm.sde, y, tt.clamp(t[1], 1.0), gm.score(y, tt.clamp(t[1], 1.0))),
                             x1, t, rtol=1e-8, atol=1e-8)[-1]
    # Measured (default spacings): dpmpp2m 100 steps 1.4e-3, dpmpp3m 60 steps 4.3e-4, heun 100
    # steps 2.5e-3; halving the steps divides them by ~4, ~12, ~4 (their orders). Tolerance ~2x.
    for solver, steps, tol in [("dpmpp2m", 100, 3e-3), ("dpmpp3m", 60, 1e-3), ("heun", 100, 5e-3)]:
        res = run(solver, gm, x1, steps, denoise=False)
        assert (res.x - ref).abs().max().item() < tol, solver


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_mixture_marginal_weights(solver):
    """``E_{x ~ p_t}[p(k | x)] = w_k`` exactly: the mean posterior responsibilities of the samples
    at ``t_eps`` match the mixture weights within 5 standard errors (std / √n per component)."""
    gm = GaussianMixture.random(2, 3, seed=4, sde=VPSDE.ddpm())
    n = 4000
    x1 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    res = run(solver, gm, x1, 20, denoise=False)
    r = gm.responsibilities(res.x, gm.sde.sampling_eps)
    se = r.std(0) / math.sqrt(n)
    # se ≈ 0.007; measured deviations ≤ 2.4 se (heun), an exact sample of p_t gives ≤ 0.8 se.
    assert torch.all((r.mean(0) - gm.weights).abs() < 5 * se), (r.mean(0), gm.weights, se)


@pytest.mark.parametrize("solver,per_step", [("dpmpp2m", 1), ("dpmpp3m", 1), ("heun", 2)])
@pytest.mark.parametrize("steps", [1, 2, 3, 7])
@pytest.mark.parametrize("denoise", [True, False])
def test_nfe_exact(solver, per_step, steps, denoise):
    counted = CountingModel(GaussianMixture.random(2, 2, seed=0, event_shape=(1, 1, 2)))
    x = torch.zeros(2, 1, 1, 2)  # image-shaped float32 events go through unchanged
    res = run(solver, counted, x, steps, denoise=denoise)
    assert res.nfe == counted.calls == per_step * steps + int(denoise)
    assert res.x.shape == x.shape and res.x.dtype == x.dtype


@pytest.mark.parametrize("name,options", [
    ("dpmpp", {"orders": 2}), ("dpmpp", {"order": 4}), ("dpmpp", {"order": True}),
    ("dpmpp", {"spacing": "log"}), ("dpmpp", {"rho": -1.0}), ("dpmpp", {"lower_order_final": "yes"}),
    ("dpmpp", {"steps": 0}), ("dpmpp", {"t_eps": 1.5}),
    ("heun", {"method": "rk4"}), ("heun", {"rho": float("nan")}), ("heun", {"spacing": 3}),
    ("heun", {"steps": 2.5}), ("heun", {"t_eps": 0.0}),
])
def test_bad_options(name, options):
    kw = {"steps": 4, **options}
    with pytest.raises(ValueError, match=str(next(iter(options)))):
        SAMPLERS[name](GaussianMixture.ring(), torch.zeros(2, 2), **kw)
