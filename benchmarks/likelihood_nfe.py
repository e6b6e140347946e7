"""Likelihood NFE at equal accuracy: scoresde against score_sde_pytorch's and k-diffusion's methods (issue 26, item 5).

    python benchmarks/likelihood_nfe.py [--n 64] [--cases 0,1,2,3] [--ours default,dopri5_t,...]

Every method computes ``log p_{t_eps}(x)`` (``t_eps = 1e-5``, linear VP-SDE) of the same ``n``
exact samples of a Gaussian mixture by a probability-flow ODE with the **exact trace** and the
**exact end density** (the oracle's ``log p_1`` in place of the prior), so that the error left is
the solver's alone. The ε is the exact one (:class:`oracle_metrics.FastOracle`), the divergence
its closed form (:func:`trace_tilde`, checked against autograd).

- **score_sde** — the method of score_sde_pytorch's ``likelihood.py`` (Song et al. 2021,
  App. D.2), transcribed from its description: the state ``[x, log p]`` of the whole batch
  flattened into one float64 vector, the drift ``f(x, t) − ½ g(t)² ∇log p_t(x)`` and its
  divergence in ``t`` from ``t_eps`` to 1, scipy's ``solve_ivp`` RK45 with ``rtol = atol = tol``;
  NFE = scipy's ``nfev``.
- **k-diffusion** — its ``log_likelihood`` (``k_diffusion/sampling.py``, loaded as a module):
  torchdiffeq's dopri5 in ``σ̃ = σ/α`` on ``x̃ = x/α`` (``dx̃/dσ̃ = (x̃ − D)/σ̃``) from
  ``σ̃(t_eps)`` to ``σ̃(1)``, ``rtol = atol = tol``. It estimates the trace with one Rademacher
  probe; the exact-trace version here is the same solve with ``vᵀJv`` replaced by ``tr J``, and
  the benchmark first checks that, given k-diffusion's own probe, it reproduces k-diffusion's
  function to round-off with the same NFE.
- **ours** — :func:`scoresde.likelihood.ode.log_likelihood` (``trace="exact"``), variants by
  ``method`` and ``clock`` (``--ours``).

"At equal accuracy": each method is run at tolerances ``10^(-k/2)``; its error is the mean
``|log p − exact|`` over the batch (nats). For a peer at ``tol ∈ {1e-3, 1e-5}`` (error ``E``,
``NFE_peer``), ``NFE_ours(E)`` is interpolated log-linearly along ours' (error, NFE) curve (its
lower envelope, so a lucky tolerance counts in ours' favour only where it is monotone), and the
table prints ``NFE_ours(E) / NFE_peer``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torchdiffeq
from oracle_metrics import FastOracle
from scipy.integrate import solve_ivp

from scoresde import VPSDE, GaussianMixture
from scoresde.likelihood.ode import log_likelihood

T_EPS = 1e-5
PEER_TOLS = (1e-3, 1e-5)
SWEEP = tuple(10 ** (-k / 2) for k in range(4, 15))  # 1e-2 .. 1e-7


def cases():
    """(name, GaussianMixture) on the linear VP-SDE, 2-D to 64-D."""
    sde = VPSDE.linear()
    return [("ring 2-D (toy)", GaussianMixture.ring(sde=sde)),
            ("random 2-D, K=8", GaussianMixture.random(2, 8, seed=2, sde=sde)),
            ("random 16-D, K=4", GaussianMixture.random(16, 4, seed=16, sde=sde)),
            ("random 64-D, K=4", GaussianMixture.random(64, 4, seed=64, sde=sde))]


# The exact trace of the oracle's ε ------------------------------------------------------------
def trace_tilde(o: FastOracle, xt: torch.Tensor, s: float) -> torch.Tensor:
    """``tr ∂ε̃/∂x̃`` at ``(x̃, σ̃ = s)``, ``(B,)``. With ``a_k = U_k (y_k / v_k)``,
    ``ε̃ = s Σ r_k a_k``, ``∂r_k/∂x̃ = r_k (ā − a_k)``:
    ``tr = s [Σ_k r_k Σ_d 1/v_kd − Σ_k r_k |a_k|² + |Σ_k r_k a_k|²]``."""
    b = xt.shape[0]
    y = (xt.reshape(b, o.dim).to(torch.float64) @ o.u_cat).view(b, o.k, o.dim) - o.rot_means
    var = o.evals + s * s
    log_joint = o.log_w - 0.5 * (y * y / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
    r = torch.softmax(log_joint, dim=1)  # (B, K)
    a_rot = y / var  # U_kᵀ a_k: |a_k|² = |a_rot_k|²
    abar = (r[..., None] * a_rot).reshape(b, -1) @ o.u_cat_t  # (B, D)
    return s * ((r * (1 / var).sum(-1)).sum(1) - (r * (a_rot * a_rot).sum(-1)).sum(1) + (abar * abar).sum(1))


def check_trace(o: FastOracle) -> float:
    """Max relative difference of :func:`trace_tilde` to autograd's trace (asserted < 1e-10)."""
    g = torch.Generator().manual_seed(3)
    worst = 0.0
    for s in (1e-3, 0.1, 1.0, 30.0):
        x = torch.randn((5,) + tuple(o.event_shape), dtype=torch.float64, generator=g)
        jac = torch.autograd.functional.jacobian(lambda z, s=s: o.eps_tilde(z[None], s)[0].reshape(-1), x[0])
        ref = torch.diagonal(jac.reshape(o.dim, o.dim)).sum()
        worst = max(worst, float((trace_tilde(o, x[:1], s)[0] - ref).abs() / ref.abs().clamp_min(1e-300)))
    assert worst < 1e-10, f"trace_tilde disagrees with autograd: {worst:.1e}"
    return worst


def scalars(sde, t: float) -> tuple[float, float, float]:
    """(α, σ, β) of the VP-SDE at ``t``, float64."""
    tt = torch.tensor(t, dtype=torch.float64)
    return float(sde.alpha(tt)), float(sde.sigma(tt)), float(sde.beta(tt))


# score_sde_pytorch's method ---------------------------------------------------------------------
def score_sde_loglik(o: FastOracle, x: torch.Tensor, tol: float):
    """score_sde_pytorch's likelihood (RK45 in t on the flattened ``[x, log p]``), exact trace and the
    exact ``log p_1``. Returns (log p_{t_eps}(x) (B,), nfe)."""
    sde, shape, b, d = o.sde, x.shape, x.shape[0], o.dim

    def rhs(t, y):
        xs = torch.from_numpy(y[:-b]).view(shape)
        a, s, beta = scalars(sde, t)
        eps = o.eps_tilde(xs / a, s / a)
        drift = -0.5 * beta * (xs - eps / s)  # f − ½ g² ∇log p, ∇log p = −ε/σ
        div = -0.5 * beta * (d - trace_tilde(o, xs / a, s / a) / (a * s))  # ∂ε/∂x = (1/α) ∂ε̃/∂x̃
        return np.concatenate([drift.reshape(-1).numpy(), div.numpy()])

    y0 = np.concatenate([x.to(torch.float64).reshape(-1).numpy(), np.zeros(b)])
    sol = solve_ivp(rhs, (T_EPS, 1.0), y0, method="RK45", rtol=tol, atol=tol)
    assert sol.success, sol.message
    z = torch.from_numpy(sol.y[:-b, -1]).view(shape)
    return o.gm.log_prob(z, 1.0) + torch.from_numpy(sol.y[-b:, -1]), int(sol.nfev)


# k-diffusion's method ---------------------------------------------------------------------------
def kdiff_denoiser(o: FastOracle):
    """k-diffusion's model: the denoiser ``D(x̃, σ̃) = x̃ − σ̃ ε̃(x̃, σ̃)`` (one σ̃ per batch)."""
    def model(xt, sigma):
        s = float(sigma.reshape(-1)[0])
        return xt - s * o.eps_tilde(xt, s)
    return model


def kdiff_exact(o: FastOracle, xt: torch.Tensor, s_min: float, s_max: float, tol: float, probe=None):
    """k-diffusion's ``log_likelihood`` solve with the exact trace (``probe=None``) or with the
    Hutchinson estimate of ``probe`` (to check the transcription against its function). Returns
    ``(Δ log p (B,), latent, fevals)``: ``log p_{σ̃_min}(x̃) = log p_{σ̃_max}(latent) + Δ``."""
    model, fevals = kdiff_denoiser(o), 0

    def ode_fn(sigma, state):
        nonlocal fevals
        s = float(sigma)
        xs = state[0]
        d = (xs - model(xs, sigma)) / s  # k-diffusion's to_d
        fevals += 1
        if probe is None:
            d_ll = trace_tilde(o, xs, s)
        else:
            with torch.enable_grad():
                xg = xs.detach().requires_grad_()
                dg = (xg - model(xg, sigma)) / s
                grad = torch.autograd.grad((dg * probe).sum(), xg)[0]
            d_ll = (probe * grad).flatten(1).sum(1)
        return d.detach(), d_ll.detach()

    t = xt.new_tensor([s_min, s_max])
    sol = torchdiffeq.odeint(ode_fn, (xt, xt.new_zeros([xt.shape[0]])), t, atol=tol, rtol=tol, method="dopri5")
    return sol[1][-1], sol[0][-1], fevals


def kdiff_ends(sde):
    a0, s0, _ = scalars(sde, T_EPS)
    a1, s1, _ = scalars(sde, 1.0)
    return a0, s0 / a0, a1, s1 / a1


def kdiff_loglik(o: FastOracle, x: torch.Tensor, tol: float):
    """k-diffusion's method with the exact trace and the exact end density, as log p of the VP ``x``:
    ``x̃ = x/α``, ``log p_vp(x) = log p_ve(x̃) − D log α``. Returns (log p (B,), nfe)."""
    a0, s_min, a1, s_max = kdiff_ends(o.sde)
    delta, latent, nfe = kdiff_exact(o, x.to(torch.float64) / a0, s_min, s_max, tol)
    # The VE state at σ̃_max is x̃ = x_vp(1)/α(1): its density is p_1(α₁ x̃) α₁^D.
    end = o.gm.log_prob(latent * a1, 1.0) + o.dim * math.log(a1)
    return end + delta - o.dim * math.log(a0), nfe


def check_kdiff(kd, o: FastOracle, x: torch.Tensor, tol: float = 1e-4) -> tuple[float, int, int]:
    """k-diffusion's own ``log_likelihood`` (its Rademacher probe, its prior) against
    :func:`kdiff_exact` given that probe: (max |difference|, its fevals, ours)."""
    a0, s_min, a1, s_max = kdiff_ends(o.sde)
    xt = x.to(torch.float64) / a0
    torch.manual_seed(11)
    ll, info = kd.log_likelihood(kdiff_denoiser(o), xt, s_min, s_max, atol=tol, rtol=tol)
    torch.manual_seed(11)
    probe = torch.randint_like(xt, 2) * 2 - 1  # the same draw as k-diffusion's
    delta, latent, fevals = kdiff_exact(o, xt, s_min, s_max, tol, probe=probe)
    prior = torch.distributions.Normal(0, s_max).log_prob(latent).flatten(1).sum(1)
    return float((ll - (prior + delta)).abs().max()), int(info["fevals"]), fevals


# ours ------------------------------------------------------------------------------------------
OURS = {"default": {}, "dopri5": {"method": "dopri5"}, "dopri8": {"method": "dopri8"}}


def ours_loglik(o: FastOracle, x: torch.Tensor, tol: float, options: dict):
    r = log_likelihood(o, x, trace="exact", t_eps=T_EPS, rtol=tol, atol=tol, **options)
    return o.gm.log_prob(r.z, 1.0) + r.divergence_integral, r.nfe


# accuracy --------------------------------------------------------------------------------------
def sweep(fn, exact, tols):
    """[(tol, mean |error| (nats), NFE)] for ``fn(tol) -> (log p, nfe)``."""
    out = []
    for tol in tols:
        lp, nfe = fn(tol)
        out.append((tol, float((lp - exact).abs().mean()), nfe))
    return out


def nfe_at(curve, err: float) -> float:
    """NFE at which ``curve`` ([(tol, err, nfe)]) reaches ``err``: log-linear interpolation on the
    running minimum of the error as NFE grows; inf if never reached."""
    pts, best = [], math.inf
    for _, e, n in sorted(curve, key=lambda c: c[2]):
        if e < best:
            best = e
            pts.append((n, max(e, 1e-300)))
    if pts[0][1] <= err:
        return float(pts[0][0])
    for (n0, e0), (n1, e1) in zip(pts, pts[1:]):
        if e1 <= err:
            w = (math.log(e0) - math.log(err)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
    return math.inf


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="samples per case, one batched solve (default 64)")
    p.add_argument("--cases", default="0,1,2,3", help="indices into cases() (default all four)")
    p.add_argument("--ours", default="default", help=f"comma-separated variants of {sorted(OURS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-kdiff-check", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from vs_diffusers import load_k_diffusion
    kd, _ = load_k_diffusion()
    variants = args.ours.split(",")
    print(f"# likelihood NFE at equal accuracy, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
          f"n = {args.n}, t_eps = {T_EPS}, exact trace, exact end density; error = mean |log p − exact| (nats)")
    summary = []
    for i in (int(c) for c in args.cases.split(",")):
        name, gm = cases()[i]
        o = FastOracle(gm)
        o.check()
        check_trace(o)
        x = gm.sample(args.n, generator=torch.Generator().manual_seed(100 + i)).to(torch.float64)
        exact = gm.log_prob(x, T_EPS)
        print(f"\n## {name} (D = {o.dim}); exact mean log p = {float(exact.mean()):.4f}")
        if not args.no_kdiff_check:
            diff, f_kd, f_tr = check_kdiff(kd, o, x)
            print(f"k-diffusion's log_likelihood vs its transcription with its probe: max |Δ| {diff:.1e}, "
                  f"fevals {f_kd} vs {f_tr}")
            assert f_kd == f_tr and diff < 1e-6 * o.dim
        start = time.perf_counter()
        peers = {"score_sde": sweep(lambda tol, o=o, x=x: score_sde_loglik(o, x, tol), exact, PEER_TOLS),
                 "k-diffusion": sweep(lambda tol, o=o, x=x: kdiff_loglik(o, x, tol), exact, PEER_TOLS)}
        ours = {v: sweep(lambda tol, v=v, o=o, x=x: ours_loglik(o, x, tol, OURS[v]), exact, SWEEP) for v in variants}
        for label, curve in list(peers.items()) + list(ours.items()):
            print(f"{label:<14} " + "  ".join(f"{tol:.0e}:{e:.1e}/{n}" for tol, e, n in curve))
        print(f"({time.perf_counter() - start:.0f} s)  tol:error/NFE")
        for peer, curve in peers.items():
            for tol, err, nfe in curve:
                cells = []
                for v in variants:
                    n_ours = nfe_at(ours[v], err)
                    same = dict((t, n) for t, _, n in ours[v]).get(tol)
                    cells.append(f"{v} {n_ours:.0f} ({n_ours / nfe:.2f}×; same tol {same})")
                    summary.append((name, peer, tol, err, nfe, v, n_ours))
                print(f"vs {peer} at tol {tol:.0e} (error {err:.2e}, NFE {nfe}): " + "; ".join(cells))
    print("\n| case | peer, tol | peer error (nats) | peer NFE | ours variant | ours NFE at that error | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, peer, tol, err, nfe, v, n_ours in summary:
        print(f"| {name} | {peer}, {tol:.0e} | {err:.2e} | {nfe} | {v} | {n_ours:.0f} | {n_ours / nfe:.2f} |")


if __name__ == "__main__":
    main()
