"""What every sampler shares: the result type, time grids, NFE counting, option checks.

The shared signature (docs/architecture.md, "Contracts")::

    fn(model, x_T, *, steps, generator=None, progress=False, t_eps=None, denoise=True,
       **options) -> SampleResult

``model`` is anything with ``.sde`` and ``.eps(x, t)`` (a :class:`~scoresde.model.ScoreModel`
or the oracle :class:`~scoresde.analytic.GaussianMixture`); ``x_T`` of shape ``(B, *dims)``
is a draw of the prior at ``t = 1``. NFE counts batched calls of ``model.eps``.

Devices: samples come back on ``x_T``'s device. ``generator`` may live on the CPU or on
``x_T``'s device; noise is drawn on the generator's device and moved to ``x_T``'s
(:mod:`scoresde.rng`), so a CPU generator gives the same noise on every device. Time grids
are float64 CPU tensors (read as numbers or moved to the data's device where used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import check_choice, check_int, check_model, check_number, check_t_eps
from ..choices import SPACINGS
from ..progress import progress_bar

__all__ = ["SampleResult", "NFECounter", "time_grid", "descent_grid", "check_steps", "check_t_eps",
           "check_choice", "check_model", "check_options", "progress_bar", "SPACINGS"]


@dataclass
class SampleResult:
    """Samples ``x`` (shape and dtype of ``x_T``), the number of network evaluations and
    the end time actually reached (``0.0`` after a final denoising step)."""

    x: torch.Tensor
    nfe: int
    t_end: float
    info: dict = field(default_factory=dict)


class NFECounter:
    """Wraps a score model and counts its batched ``eps`` calls; ``score``/``x0`` go through ``eps``."""

    def __init__(self, model):
        check_model(model)
        self.model, self.sde, self.nfe = model, model.sde, 0

    def eps(self, x, t):
        self.nfe += 1
        return self.model.eps(x, t)

    def score(self, x, t):
        self.nfe += 1
        return self.model.score(x, t)

    def x0(self, x, t):
        self.nfe += 1
        return self.model.x0(x, t)


def check_steps(steps) -> int:
    return check_int("steps", steps)


def check_options(name: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated by ``options``; ``ValueError`` for a keyword not in ``defaults``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"option {unknown[0]!r}: the {name} sampler accepts "
                         f"{', '.join(defaults) or 'no extra options'}")
    return {**defaults, **options}


def time_grid(sde, steps: int, t_eps: float, spacing: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    """Increasing float64 grid ``t_eps = τ_0 < τ_1 < … < τ_K = 1`` with ``K = steps``.

    Spacings: ``uniform`` in t; ``quadratic`` (``τ = t_eps + (1-t_eps) u²``, dense near 0);
    ``logsnr`` (uniform in ``λ = log α²/σ²``); ``karras`` (uniform in ``σ_K^{1/ρ}`` with
    ``σ_K = σ/α``, Karras et al. 2022 eq. 5). On a discrete schedule the times are
    rounded to the grid ``i/N`` (end points exact) and must stay distinct.
    """
    steps = check_steps(steps)
    check_choice("spacing", spacing, SPACINGS)
    rho = check_number("rho", rho, low=0)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device="cpu")
    t0 = torch.tensor(t_eps, dtype=torch.float64, device="cpu")
    t1 = torch.tensor(1.0, dtype=torch.float64, device="cpu")
    if spacing == "uniform":
        grid = t_eps + (1.0 - t_eps) * u
    elif spacing == "quadratic":
        grid = t_eps + (1.0 - t_eps) * u**2
    elif spacing == "logsnr":
        lam0, lam1 = sde.log_snr(t0), sde.log_snr(t1)
        grid = sde.time_for_log_snr(lam0 + (lam1 - lam0) * u)
    else:  # karras: σ_K = exp(-λ/2)
        smin, smax = torch.exp(-0.5 * sde.log_snr(t0)), torch.exp(-0.5 * sde.log_snr(t1))
        sig = (smin ** (1 / rho) + u * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
        grid = sde.time_for_log_snr(-2.0 * torch.log(sig))
    grid[0], grid[-1] = t_eps, 1.0
    n = getattr(sde, "discrete_steps", None)
    if n is not None:
        grid = torch.round(grid * n) / n
        if not torch.all(grid[1:] > grid[:-1]):
            raise ValueError(f"steps={steps}: a {spacing} grid from t_eps={t_eps} cannot have "
                             f"{steps} distinct steps on a discrete schedule with N={n}")
    if not torch.all(grid[1:] > grid[:-1]) or not math.isclose(float(grid[-1]), 1.0):
        raise ValueError(f"spacing={spacing!r} with steps={steps}: grid is not strictly increasing")
    return grid


def descent_grid(sde, steps: int, t_eps: float, spacing: str, denoise: bool) -> torch.Tensor:
    """Increasing float64 grid with ``steps`` intervals ending at 1, for ancestral/DDIM steps.

    ``denoise=False``: ``time_grid(sde, steps, t_eps, spacing)``, from ``t_eps``.
    ``denoise=True``: ``0`` followed by ``time_grid(sde, steps - 1, t_eps, spacing)`` (just
    ``[0, 1]`` for ``steps = 1``): the last of the ``steps`` updates goes from ``t_eps`` to 0.
    """
    steps = check_steps(steps)
    check_choice("spacing", spacing, SPACINGS)
    if not denoise:
        grid = time_grid(sde, steps, t_eps, spacing)
    elif steps == 1:
        grid = torch.tensor([0.0, 1.0], dtype=torch.float64, device="cpu")
    else:
        grid = torch.cat([torch.zeros(1, dtype=torch.float64, device="cpu"),
                          time_grid(sde, steps - 1, t_eps, spacing)])
    first = float(grid[1] if denoise else grid[0])
    if first <= 0:
        raise ValueError(f"t_eps={t_eps!r}: rounds to 0 on the discrete schedule with "
                         f"N={sde.discrete_steps}; expected t_eps ≥ 1/(2N)")
    return grid
