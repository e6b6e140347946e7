"""The probability-flow ODE (Song et al. 2021, eq. 13), solved with torchdiffeq.

    dx/dt = f(x, t) - ½ g(t)² s(x, t)   (= -½ β(t) [x - ε(x, t)/σ(t)] for the VP-SDE)

has the same marginals ``p_t`` as the forward SDE and is deterministic and invertible:
:func:`ode` integrates it from ``t = 1`` down to ``t_eps`` (sampling), :func:`encode` from
``t_eps`` up to ``t = 1`` (data → latent). Both go through
:func:`scoresde.odesolve.odeint_checked` with the state in float64 (``ode_dtype``).
"""

from __future__ import annotations

import torch

from ..odesolve import ADAPTIVE_METHODS, FIXED_METHODS, odeint_checked
from .base import NFECounter, SampleResult, check_options, check_steps, check_t_eps, progress_bar

__all__ = ["ProbabilityFlow", "RateTimeFlow", "ode", "encode"]

_DEFAULTS = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "ode_dtype": torch.float64}
_STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}  # ε evaluations per fixed step


class ProbabilityFlow:
    """``(t, x) ↦ f(x, t) - ½ g(t)² s(x, t)``, the probability-flow drift as a torchdiffeq function.

    ``model`` is anything with ``.sde`` and ``.score`` (e.g. an :class:`NFECounter`, so its
    ``nfe`` counts the calls). ``x`` has shape ``(B, *dims)``, ``t`` shape ``()`` or ``(B,)``;
    the result has ``x``'s shape and dtype and is differentiable in ``x`` (for likelihoods).
    ``on_call``, if given, is called once per evaluation (progress bars).
    """

    def __init__(self, model, on_call=None):
        self.model, self.sde, self.on_call = model, model.sde, on_call

    def __call__(self, t, x: torch.Tensor) -> torch.Tensor:
        if self.on_call is not None:
            self.on_call()
        score = self.model.score(x, t)
        return self.sde.probability_flow_drift(x, t, score)


def _check_options(options: dict) -> dict:
    opts = check_options("ode", options, _DEFAULTS)
    if opts["method"] not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(f"method={opts['method']!r}: expected one of "
                         f"{', '.join(ADAPTIVE_METHODS + FIXED_METHODS)}")
    if opts["ode_dtype"] not in (torch.float32, torch.float64):
        raise ValueError(f"ode_dtype={opts['ode_dtype']!r}: expected torch.float32 or torch.float64")
    return opts


class RateTimeFlow:
    """The probability flow in the integrated rate ``u = B(t)`` of a discrete (DDPM) schedule.

    ``dx/du = (dx/dt) / β(t)``. A discrete schedule's ``β(t)`` jumps at every ``i/N``, so
    ``dx/dt`` is discontinuous there and an adaptive solver in ``t`` steps over the staircase
    with errors far above its tolerance (dopri5, rtol = atol = 1e-5, N = 1000: 2.6e-3 against
    the exact map). In ``u`` the right-hand side is continuous: ``B`` is piecewise linear with
    the exact inverse ``t(u) = (i - 1 + (u - B_{i-1}) / r_i) / N`` on ``[B_{i-1}, B_i]``.
    """

    def __init__(self, flow: ProbabilityFlow, schedule):
        self.flow, self.sde = flow, flow.sde
        self.grid_B, self.rates, self.n = schedule.grid_B, schedule.rates, schedule.N

    def time(self, u: torch.Tensor) -> torch.Tensor:
        grid_B = self.grid_B.to(u.device)
        i = torch.searchsorted(grid_B, u.reshape(1).to(torch.float64)).clamp(1, self.n)  # B_{i-1} < u ≤ B_i
        frac = (u.to(torch.float64) - grid_B[i - 1]) / self.rates.to(u.device)[i - 1]
        return ((i - 1 + frac.clamp(0.0, 1.0)) / self.n).reshape(()).clamp(0.0, 1.0)

    def __call__(self, u, x: torch.Tensor) -> torch.Tensor:
        t = self.time(u)
        return self.flow(t, x) / self.sde.beta(t).to(x.dtype)


def _solve(net, x, t_from: float, t_to: float, steps: int, progress: bool, desc: str, opts):
    """Integrate the probability flow from ``t_from`` to ``t_to``; returns the end state in ``ode_dtype``.

    Fixed-step methods take ``steps`` equal steps in ``t``. Adaptive methods on a discrete
    schedule integrate in ``u = B(t)`` (:class:`RateTimeFlow`), elsewhere in ``t``.
    """
    method = opts["method"]
    total = steps * _STAGES[method] if method in _STAGES else None
    bar = progress_bar(total, progress, desc)
    func = ProbabilityFlow(net, on_call=lambda: bar.update(1))
    t = torch.tensor([t_from, t_to], dtype=torch.float64, device=x.device)
    if method not in _STAGES and net.sde.discrete_steps is not None:
        func = RateTimeFlow(func, net.sde.schedule)
        t = net.sde.integrated_beta(t)
    y0 = x.to(opts["ode_dtype"])
    try:
        ys = odeint_checked(func, y0, t, method=method, rtol=opts["rtol"], atol=opts["atol"],
                            steps=steps)
    finally:
        bar.close()
    return ys[-1]


@torch.no_grad()
def ode(model, x_T: torch.Tensor, *, steps: int, generator=None, progress: bool = False,
        t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Sample by solving the probability-flow ODE from ``t = 1`` to ``t_eps`` (Song et al. 2021, eq. 13).

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1``.
        steps: number of equal steps of the fixed-step methods; checked (≥ 1) but unused by
            the adaptive ones.
        generator: unused (the map is deterministic); accepted for the shared signature.
        t_eps: end time (default ``model.sde.sampling_eps``).
        denoise: if True (default), one Tweedie step ``x̂_0(x, t_eps)`` (+1 NFE) at the end.
        method: ``"dopri5"`` (default) or another adaptive torchdiffeq method
            (``rtol``, ``atol``, default ``1e-5`` each), or fixed-step ``"euler"``,
            ``"midpoint"``, ``"rk4"`` (1, 2, 4 NFE per step).
        ode_dtype: dtype of the ODE state (default ``torch.float64``).

    Returns:
        ``SampleResult`` in ``x_T``'s dtype; ``nfe`` counts every ε evaluation of the solve
        (adaptive solves included, rejected steps too) plus the denoising step.
    """
    check_steps(steps)
    opts = _check_options(options)
    net = NFECounter(model)
    t_eps = check_t_eps(t_eps, net.sde)
    x = _solve(net, x_T, 1.0, t_eps, steps, progress, "ode", opts)
    t_end = t_eps
    if denoise:
        x, t_end = net.x0(x, t_eps), 0.0
    return SampleResult(x=x.to(x_T.dtype), nfe=net.nfe, t_end=t_end,
                        info={"method": opts["method"], "t_eps": t_eps})


@torch.no_grad()
def encode(model, x0: torch.Tensor, *, steps: int | None = None, progress: bool = False,
           t_eps: float | None = None, **options) -> SampleResult:
    """The inverse map: data ``x0`` (taken as the state at ``t_eps``) → latent at ``t = 1``.

    Solves the probability-flow ODE forward from ``t_eps`` to 1; decoding the latent with
    :func:`ode` (same ``t_eps``, ``denoise=False``) recovers ``x0`` up to the solver error.
    Options as for :func:`ode` (``steps`` is needed only by the fixed-step methods).
    Returns a ``SampleResult`` with the latent, ``nfe`` and ``t_end = 1.0``.
    """
    opts = _check_options(options)
    if opts["method"] in FIXED_METHODS or steps is not None:
        steps = check_steps(steps)
    net = NFECounter(model)
    t_eps = check_t_eps(t_eps, net.sde)
    z = _solve(net, x0, t_eps, 1.0, steps, progress, "encode", opts)
    return SampleResult(x=z.to(x0.dtype), nfe=net.nfe, t_end=1.0,
                        info={"method": opts["method"], "t_eps": t_eps})
