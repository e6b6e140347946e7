"""Metrics that rank samplers at any NFE, on Gaussian-mixture data with an exact ε (issue 26).

Three numbers per run, none of which alone decides:

- **trajectory error** (deterministic samplers): mean over trajectories of ``‖x − x_ref‖₂``,
  where ``x_ref`` is the exact probability-flow image of the *same* ``x_T`` at ``t = 0``,
  solved by an independent solver (scipy's DOP853 in float64, ``rtol = atol = 1e-10``) on a
  subset of the trajectories. It has no noise floor.
- **sliced W1 to the exact law**: the mean over fixed directions ``θ`` of the exact 1-D W1
  between the empirical law of ``θ·x`` (``n`` samples) and the exact projected mixture
  ``Σ w_k N(θ·μ_k, θᵀΣ_kθ)``, ``W1 = ∫₀¹ |Q_n(u) − Q(u)| du`` with ``Q`` evaluated at the
  midpoints ``u_i = (i − ½)/n`` (to 1e-12 by Newton's method). No reference sample, so the
  floor is that of the sample alone (stated by :meth:`Case.floors`).
- **mean log-density gap**: ``mean log p_0(x) − E_{p_0} log p_0`` (negative: blurred, samples
  off the modes; positive: collapsed onto them).

Everything here is float64 and independent of the package's samplers: the ε used by the
reference ODE is the closed form below, checked against :class:`scoresde.GaussianMixture`.

The probability flow is schedule-free in the scaled variables ``x̃ = x/α``, ``σ̃ = σ/α``
(docs/math.md): ``dx̃/dσ̃ = ε(x̃, σ̃)`` with
``ε(x̃, σ̃) = σ̃ Σ_k r_k(x̃, σ̃) (Σ_k + σ̃² I)⁻¹ (x̃ − μ_k)``, ``r_k ∝ w_k N(x̃; μ_k, Σ_k + σ̃² I)``,
so the reference integrates from ``σ̃(1)`` to ``σ̃ = 0`` (where ``x̃ = x_0``) whatever the schedule.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.special import ndtr

__all__ = ["FastOracle", "reference_flow", "Case"]


class FastOracle:
    """The exact ε of a :class:`scoresde.GaussianMixture` as two GEMMs per call (the model every
    sampler, ours and the peers', is given). ``eps(x, t)`` takes a scalar ``t`` (or a batch of
    equal times); ``eps_tilde(x̃, σ̃)`` is the same function in the scaled variables."""

    def __init__(self, gm):
        self.gm, self.sde, self.event_shape = gm, gm.sde, gm.event_shape
        self.dim, k = gm.dim, gm.n_components
        self.log_w = torch.log(gm.weights)
        self.evals = gm.evals  # (K, D)
        self.u_cat = torch.cat(list(gm.evecs), dim=1)  # (D, K·D): [U_1 … U_K]
        self.u_cat_t = torch.cat([u.T for u in gm.evecs], dim=0)  # (K·D, D)
        self.rot_means = gm._means_rot  # (K, D): U_kᵀ μ_k
        self.k = k

    def eps_tilde(self, xt: torch.Tensor, s: float) -> torch.Tensor:
        b = xt.shape[0]
        xf = xt.reshape(b, self.dim).to(torch.float64)
        y = (xf @ self.u_cat).view(b, self.k, self.dim) - self.rot_means
        var = self.evals + s * s
        log_joint = self.log_w - 0.5 * (y * y / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
        r = torch.softmax(log_joint, dim=1)
        e = s * ((r[..., None] * y / var).reshape(b, -1) @ self.u_cat_t)
        return e.reshape(xt.shape).to(xt.dtype)

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if t.numel() > 1 and not bool((t == t[0]).all()):
            raise ValueError("FastOracle.eps: expected one time for the whole batch")
        a, sig = float(self.sde.alpha(t[:1])), float(self.sde.sigma(t[:1]))
        return self.eps_tilde(x / a, sig / a)

    def check(self, n: int = 500, seed: int = 0) -> float:
        """Max |ε − GaussianMixture.eps| / max |ε| over a few times; asserts < 1e-10."""
        g = torch.Generator().manual_seed(seed)
        worst = 0.0
        for t in (1 / 1000, 0.01, 0.1, 0.5, 1.0):
            x = torch.randn((n,) + tuple(self.event_shape), dtype=torch.float64, generator=g) * 2
            a, b = self.eps(x, t), self.gm.eps(x, t)
            worst = max(worst, float((a - b).abs().max() / b.abs().max()))
        assert worst < 1e-10, f"FastOracle disagrees with GaussianMixture.eps: {worst:.1e}"
        return worst


def sigma_tilde(sde, t: float) -> float:
    t = torch.tensor(t, dtype=torch.float64)
    return float(sde.sigma(t) / sde.alpha(t))


def reference_flow(oracle: FastOracle, x_T: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """Exact probability-flow image at ``t = 0`` of ``x_T`` (the state at ``t = 1``):
    ``dx̃/dσ̃ = ε(x̃, σ̃)`` from ``σ̃(1)`` to 0 by scipy's DOP853, float64, ``rtol = atol``."""
    s_max = sigma_tilde(oracle.sde, 1.0)
    a1 = float(oracle.sde.alpha(torch.tensor(1.0, dtype=torch.float64)))
    shape = x_T.shape
    y0 = (x_T.to(torch.float64) / a1).reshape(-1).numpy()

    def rhs(s, y):
        return oracle.eps_tilde(torch.from_numpy(y).view(shape), s).reshape(-1).numpy()

    sol = solve_ivp(rhs, (s_max, 0.0), y0, method="DOP853", rtol=rtol, atol=rtol)
    if not sol.success:
        raise RuntimeError(f"reference flow failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1].copy()).view(shape)


class Case:
    """One data set: the oracle, fixed evaluation noise, the reference flow of its first
    ``n_traj`` points, the exact projected quantiles for sliced W1 and ``E log p_0``."""

    def __init__(self, name: str, gm, n: int, n_traj: int, n_proj: int = 256, seed: int = 22):
        self.name, self.gm, self.n = name, gm, n
        self.oracle = FastOracle(gm)
        self.check = self.oracle.check()
        shape = (n,) + tuple(gm.event_shape)
        self.x_T = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        self.n_traj = n_traj
        self.x_ref = reference_flow(self.oracle, self.x_T[:n_traj])
        # accuracy of the reference: the same solve at a 100× looser tolerance, on 50 trajectories
        m = min(50, n_traj)
        loose = reference_flow(self.oracle, self.x_T[:m], rtol=1e-8)
        self.ref_check = float((loose - self.x_ref[:m]).abs().max())
        g = torch.Generator().manual_seed(4321)
        theta = torch.randn(gm.dim, n_proj, dtype=torch.float64, generator=g)
        self.proj = theta / theta.norm(dim=0, keepdim=True)  # (D, P) unit directions
        self.quantiles = self._exact_quantiles(n)  # (n, P)
        big = torch.cat([gm.sample(n, generator=g) for _ in range(4)])
        self.ref_logp = float(self._logp(big).mean())
        self.ref_logp_se = float(self._logp(big).std() / math.sqrt(big.shape[0]))
        self._g = g

    # -- exact projected law --------------------------------------------------------------
    def _exact_quantiles(self, n: int) -> torch.Tensor:
        w = self.gm.weights.numpy()
        m = (self.gm.means @ self.proj).numpy()  # (K, P)
        v = torch.einsum("dp,kde,ep->kp", self.proj, self.gm.covs, self.proj).numpy()
        s = np.sqrt(v)
        u = (np.arange(n) + 0.5) / n
        lo, hi = (m - 10 * s).min(0), (m + 10 * s).max(0)
        out = np.empty((n, m.shape[1]))
        for p in range(m.shape[1]):
            grid = np.linspace(lo[p], hi[p], 40001)
            cdf = (w[:, None] * ndtr((grid[None] - m[:, p, None]) / s[:, p, None])).sum(0)
            q = np.interp(u, cdf, grid)  # within a grid cell (2.5e-5 of the range) of Q(u)
            for _ in range(2):  # Newton on F(q) = u: quadratic from there
                z = (q[None] - m[:, p, None]) / s[:, p, None]
                f = (w[:, None] * ndtr(z)).sum(0) - u
                dens = (w[:, None] * np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * s[:, p, None])).sum(0)
                q = q - f / np.maximum(dens, 1e-300)
            out[:, p] = q
        return torch.from_numpy(out)

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        o = self.oracle
        b = x.shape[0]
        xf = x.reshape(b, o.dim).to(torch.float64)
        y = (xf @ o.u_cat).view(b, o.k, o.dim) - o.rot_means
        lj = o.log_w - 0.5 * (y * y / o.evals).sum(-1) - 0.5 * torch.log(o.evals).sum(-1) \
            - 0.5 * o.dim * math.log(2 * math.pi)
        return torch.logsumexp(lj, dim=1)

    # -- the three metrics ----------------------------------------------------------------
    def sw1(self, x: torch.Tensor) -> float:
        """Sliced W1 of the ``n`` samples ``x`` to the exact law (mean over the directions)."""
        xs = torch.sort(x.reshape(x.shape[0], -1).to(torch.float64) @ self.proj, dim=0).values
        return float((xs - self.quantiles).abs().mean())

    def metrics(self, x: torch.Tensor, deterministic: bool) -> dict:
        """``traj`` (None for stochastic samplers), ``sw1``, ``dlogp``; inf when not finite."""
        if x.shape[0] != self.n:
            raise ValueError(f"{x.shape[0]} samples: expected {self.n}")
        if not torch.isfinite(x).all():
            return {"traj": math.inf if deterministic else None, "sw1": math.inf, "dlogp": -math.inf}
        traj = None
        if deterministic:
            d = (x[: self.n_traj].to(torch.float64) - self.x_ref).reshape(self.n_traj, -1)
            traj = float(d.norm(dim=1).mean())
        return {"traj": traj, "sw1": self.sw1(x), "dlogp": float(self._logp(x).mean()) - self.ref_logp}

    def floors(self, draws: int = 3) -> dict:
        """SW1 and |Δlogp| of fresh exact samples of size ``n`` (mean, sd over ``draws``), and the
        SW1 between two exact samples (one pair)."""
        sw, lp, xs = [], [], []
        for _ in range(draws):
            x = self.gm.sample(self.n, generator=self._g)
            sw.append(self.sw1(x))
            lp.append(float(self._logp(x).mean()) - self.ref_logp)
            xs.append(x)
        a, b = (torch.sort(v.reshape(self.n, -1) @ self.proj, dim=0).values for v in xs[:2])
        return {"sw1": float(np.mean(sw)), "sw1_sd": float(np.std(sw, ddof=1)),
                "dlogp_sd": float(np.std(lp, ddof=1)), "sw1_two": float((a - b).abs().mean())}
