"""Closed forms the tests share (docs/math.md, "Closed forms")."""

from __future__ import annotations

import torch

from scoresde import GaussianMixture
from scoresde.core.sde import append_dims, as_time


def pf_drift(sde, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
    """The probability-flow drift ``dx/dt = f(t) x - ½ g(t)² s`` (Song et al. 2021, eq. 13) from
    the SDE's coefficients ``f`` and ``g²``: the reference for the library's one flow drift."""
    t = as_time(t)
    f, g2 = (append_dims(c, x.ndim).to(x.dtype) for c in (sde.drift_coef(t), sde.g2(t)))
    return f * x - 0.5 * g2 * score


def gaussian_flow_map(gm: GaussianMixture, x: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """Exact probability-flow map ``x_t ↦ x_s`` for single-Gaussian data ``N(μ, U diag(λ) Uᵀ)``:
    in ``U``'s basis ``x - α μ`` scales by ``√(c_s/c_t)`` per axis, ``c = α² λ + σ²``."""
    lam, u, m = gm.evals[0], gm.evecs[0], gm.means[0]
    a_t, a_s = float(gm.sde.alpha(t)), float(gm.sde.alpha(s))
    c_t = a_t**2 * lam + float(gm.sde.sigma(t)) ** 2
    c_s = a_s**2 * lam + float(gm.sde.sigma(s)) ** 2
    y = (x.reshape(x.shape[0], -1) - a_t * m) @ u
    return (a_s * m + (y * torch.sqrt(c_s / c_t)) @ u.T).reshape(x.shape)


def convergence_slope(sampler, gm, x1: torch.Tensor, steps=(20, 40, 80)) -> tuple[float, list]:
    """Order of convergence on the exact Gaussian flow map: minus the least-squares slope of
    log(max error) against log(steps), where ``sampler(k)`` returns the sample after ``k`` steps;
    returns ``(slope, errors)``."""
    want = gaussian_flow_map(gm, x1, 1.0, gm.sde.sampling_eps)
    errs = [(sampler(k) - want).abs().max().item() for k in steps]
    lx = torch.log(torch.tensor(steps, dtype=torch.float64))
    ly = torch.log(torch.tensor(errs, dtype=torch.float64))
    return -float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()), errs
