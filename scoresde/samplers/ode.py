"""The probability-flow ODE sampler and its inverse, the encoder (Song et al. 2021, eq. 13).

The flow ``dx/dt = f x - ½ g² ∇log p_t`` (with ``∇log p_t = -ε/σ``) has the same marginals
``p_t`` as the forward SDE and is deterministic and invertible: :func:`ode` carries a prior draw
from ``t = 1`` down to ``t_eps`` (sampling), :func:`encode` carries data from ``t_eps`` up to
``t = 1``. Both are the package's one probability-flow solver (:mod:`scoresde.core.flow`, in the
SDE's own clock) with the state in float64 (``ode_dtype``); the options are checked here, once.
"""

from __future__ import annotations

import torch

from scoresde.core.flow import STAGES, check_solver, integrate_flow
from scoresde.samplers.base import (
    NFECounter,
    SampleResult,
    check_options,
    check_steps,
    finish_run,
    open_run,
    progress_bar,
)
from scoresde.util.checks import check_choice, check_t_eps
from scoresde.util.progress import Ticks

__all__ = ["ode", "encode"]

_DEFAULTS = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "ode_dtype": torch.float64}


def _check_ode_options(opts: dict, steps) -> tuple[dict, int | None]:
    """The solver's options (:func:`~scoresde.core.flow.check_solver`) and ``ode_dtype``, checked
    once; returns them, normalised, and ``steps``."""
    opts["rtol"], opts["atol"], steps = check_solver(opts["method"], opts["rtol"], opts["atol"], steps)
    check_choice("ode_dtype", opts["ode_dtype"], (torch.float32, torch.float64))
    return opts, steps


def _solve(counted, x, t_from: float, t_to: float, steps, progress: bool, desc: str, opts) -> torch.Tensor:
    """The end state (in ``ode_dtype``) of the probability flow from ``t_from`` to ``t_to``."""
    method = opts["method"]
    if method in STAGES:  # fixed steps: one tick per ε evaluation
        bar = progress_bar(steps * STAGES[method], progress, desc, unit="NFE")
        on_eval = lambda _: bar.update(1)  # noqa: E731
    else:  # adaptive: the share of the solver's clock reached, in thousandths (NFE are not known ahead)
        bar = progress_bar(1000, progress, desc, unit="‰ of the time span")
        on_eval = Ticks(bar, 1000)
    try:
        sol = integrate_flow(counted, x, t_from, t_to, method=method, rtol=opts["rtol"], atol=opts["atol"],
                             steps=steps, divergence=None, dtype=opts["ode_dtype"],
                             on_eval=on_eval)
    finally:
        bar.close()
    return sol.x


@torch.no_grad()
def ode(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
        t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Sample by solving the probability-flow ODE from ``t = 1`` to ``t_eps`` (Song et al. 2021, eq. 13).

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (floating point).
        steps: number of steps of the fixed-step methods (equally spaced in the solver's clock,
            :mod:`scoresde.core.flow`); checked (≥ 1) but unused by the adaptive ones.
        generator: unused (the map is deterministic); accepted for the shared signature.
        t_eps: end time (default ``model.sde.sampling_eps``).
        denoise: if True (default), one Tweedie step ``x̂_0(x, t_eps)`` (+1 NFE) at the end.
        method: ``"dopri5"`` (default) or another adaptive torchdiffeq method
            (``rtol``, ``atol``, default ``1e-5`` each, finite and > 0), or fixed-step ``"euler"``,
            ``"midpoint"``, ``"rk4"`` (1, 2, 4 NFE per step).
        ode_dtype: dtype of the ODE state (default ``torch.float64``).

    Returns:
        ``SampleResult`` in ``x_T``'s dtype; ``nfe`` counts every ε evaluation of the solve
        (adaptive solves included, rejected steps too) plus the denoising step.
    """
    run = open_run("ode", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=False,
                   options=options, defaults=_DEFAULTS, gridded=False)
    opts, steps = _check_ode_options(run.opts, steps)
    t_eps = float(run.grid[-1])
    try:
        x = _solve(run.counted_model, x_T, 1.0, t_eps, steps, progress, "ode", opts)
    except (ValueError, RuntimeError, AssertionError) as err:  # an adaptive solve driven off by a non-finite ε
        if "model.eps returned" in str(err):
            raise
        raise ValueError(f"ode sampler: the solve failed ({err}); check that the model's ε (model.eps) "
                         f"is finite") from err
    return finish_run(run, x, method=opts["method"], t_eps=t_eps)


@torch.no_grad()
def encode(model, x0: torch.Tensor, *, steps: int | None = None, progress: bool = False,
           t_eps: float | None = None, **options) -> SampleResult:
    """The inverse map: data ``x0`` (taken as the state at ``t_eps``) → latent at ``t = 1``.

    Solves the probability-flow ODE forward from ``t_eps`` to 1; decoding the latent with
    :func:`ode` (same ``t_eps``, ``denoise=False``) recovers ``x0`` up to the solver error.
    Options as for :func:`ode` (``steps`` is needed only by the fixed-step methods).
    Returns a ``SampleResult`` with the latent, ``nfe`` and ``t_end = 1.0``.
    """
    opts = check_options("ode", options, _DEFAULTS)
    if steps is not None:
        steps = check_steps(steps)
    opts, steps = _check_ode_options(opts, steps)
    counted = NFECounter(model)
    t_eps = check_t_eps(t_eps, counted.sde)
    z = _solve(counted, x0, t_eps, 1.0, steps, progress, "encode", opts)
    return SampleResult(x=z.to(x0.dtype), nfe=counted.nfe, t_end=1.0,
                        info={"method": opts["method"], "t_eps": t_eps})
