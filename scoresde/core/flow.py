"""The probability-flow ODE of any SDE here, solved once for everyone: sampling, encoding, likelihood.

The probability flow (Song et al. 2021, eq. 13) ``dx/dt = f x - ½ g² ∇log p_t``, with the score
written through the ε-model (``∇log p_t = -ε/σ``), is solved in the SDE's own clock ``c(t)``
(``clock``, ``clock_rate = dc/dt``, ``time_for_clock``; docs/sdes.md): ``B(t) = ∫₀ᵗ β`` for VP
and sub-VP, ``t`` for the continuous VE, ``σ²`` for SMLD's levels. There the drift is

    dx/dc = v(x, t) = a(t) x + b(t) ε(x, t),     (a, b) = sde.flow_coefficients(t),

VP's being ``v = -½ [x - ε/σ]``: :meth:`scoresde.core.sde.GaussianSDE.flow_drift`, the one home of
the drift, reached through :func:`flow_drift` with the checked ``ε`` of
:func:`scoresde.core.model.eps_of`.

**One clock** (docs/math.md, "The solver's clock"). Every solve runs in the time ``u`` of a
*smooth* clock ``ĉ`` with the same range, ``ĉ(u) = c(t)``:

    dx/du = ĉ'(u) · v(x, t(u)).

``ĉ(u) = Σ_{k≤4} c_k u^k`` with every ``c_k ≥ 0`` (increasing, ``ĉ(0) = 0``) is the least-squares
fit to ``c`` on 1001 equally spaced times, rescaled so that ``ĉ(1) = c(1)``; ``t(u)`` comes from
``sde.time_for_clock``. Where ``c`` is itself such a polynomial (the linear schedule's ``B``)
``ĉ = c`` and ``u = t``. A discrete (DDPM) schedule's ``β(t)`` is a staircase, the cosine
schedule's clipped ``β(t)`` has a kink: in ``t`` an adaptive solver crawls over the jumps or
misses its tolerance there, while in ``u`` the oracle's right-hand side is smooth (DDPM's linear
β: ``|u - t| < 1e-7`` on the grid ``i/N``). Adaptive methods choose their own steps in ``u``;
fixed-step methods take ``steps`` equal steps in ``u``.

**Divergence.** For the likelihood the solve carries ``∫ ∇·(dx/du) du = ∫ ∇·(dx/dt) dt``,
exactly (``D`` vector–Jacobian products per evaluation) or by Hutchinson's estimate
``vᵀ (∂f/∂x) v`` with probes ``v`` held fixed for the whole solve.

Any object with ``.sde`` and ``.eps(x, t)`` works. torchdiffeq reports failures ("underflow in
dt", "max_num_steps exceeded") as bare ``AssertionError``s that vanish under ``python -O``; here
they become a ``RuntimeError`` naming the solver, its tolerances and the last time reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchdiffeq

from scoresde.core.model import batch_time, eps_of
from scoresde.core.sde import flow_drift as sde_flow_drift
from scoresde.util.checks import check_choice, check_int, check_number
from scoresde.util.choices import ADAPTIVE_METHODS, FIXED_METHODS, ODE_METHODS

__all__ = ["FlowSolution", "STAGES", "Clock", "flow_drift", "drift_and_divergence", "check_solver", "solve_flow",
           "integrate_flow"]

STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}  # ε evaluations per fixed step
_MAX_NUM_STEPS = 100_000
_DEGREE = 4
_FIT_POINTS = 1001


@dataclass
class FlowSolution:
    """End state ``x`` (solver dtype, ``x``'s shape), the divergence integral
    ``∫_{t_from}^{t_to} ∇·(dx/dt) dt`` per probe and sample (``(P, B)``; ``(1, B)`` for the exact
    trace; ``None`` without divergence) and the number of drift evaluations."""

    x: torch.Tensor
    divergence: torch.Tensor | None
    nfe: int


def _fit_increasing(u: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Least-squares ``ĉ(u) = Σ_{k=1}^{K} c_k u^k`` to the points ``(u, b)`` with every ``c_k ≥ 0``
    (so ``ĉ`` is increasing and ``ĉ(0) = 0``), scaled so that ``ĉ(1) = b[-1]``: exact
    non-negative least squares by trying every set of free coefficients (``2^K`` small solves)."""
    powers = torch.stack([u**k for k in range(1, _DEGREE + 1)], 1)
    best, best_err = None, math.inf
    for mask in range(1, 2**_DEGREE):
        cols = [k for k in range(_DEGREE) if mask >> k & 1]
        sol = torch.linalg.lstsq(powers[:, cols], b[:, None]).solution[:, 0]
        if (sol < 0).any():
            continue
        coef = torch.zeros(_DEGREE, dtype=torch.float64, device="cpu")
        coef[cols] = sol
        err = float(((powers @ coef - b) ** 2).sum())
        if err < best_err:
            best, best_err = coef, err
    best = best * b[-1] / best.sum()
    return best.tolist()


class Clock:
    """The solver's clock ``u`` of an SDE: the time of the smooth ``ĉ`` fitted to its clock ``c``;
    ``u = t`` where ``c`` is itself a polynomial of degree ≤ 4 (``fitted`` is then False; module docstring).

    :meth:`at` maps ``u`` to ``(t, ĉ'(u))``; :meth:`u_of_t` is its inverse, for the ends of a solve.
    """

    def __init__(self, sde):
        self.sde = sde
        self._t = None  # the last t(u): warm start of the next inversion
        t = torch.linspace(0.0, 1.0, _FIT_POINTS, dtype=torch.float64, device="cpu")
        b = sde.clock(t)
        self.coef = _fit_increasing(t, b)
        # c itself a polynomial of degree ≤ 4 (the linear schedule): the clock is t.
        self.fitted = float((self._smooth(t)[0] - b).abs().max()) > 1e-9 * float(b[-1])

    def _smooth(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ĉ(u), ĉ'(u))``, float64, ``u``'s shape."""
        b = sum(c * u**k for k, c in zip(range(1, _DEGREE + 1), self.coef))
        rate = sum(k * c * u ** (k - 1) for k, c in zip(range(1, _DEGREE + 1), self.coef))
        return b, rate

    def u_of_t(self, t) -> torch.Tensor:
        """The ``u`` with ``ĉ(u) = c(t)`` (float64, ``t``'s shape): ``t`` itself when not fitted."""
        t = torch.as_tensor(t, dtype=torch.float64, device=t.device if isinstance(t, torch.Tensor) else "cpu")
        if not self.fitted:
            return t
        target, lo, hi = self.sde.clock(t), torch.zeros_like(t), torch.ones_like(t)
        for _ in range(64):  # bisection: ĉ is increasing
            mid = 0.5 * (lo + hi)
            below = self._smooth(mid)[0] < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        u = 0.5 * (lo + hi)
        return torch.where((t == 0) | (t == 1), t, u)  # the ends exactly

    def at(self, u: float, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
        """``(t(u), ĉ'(u))`` with ``t`` in ``[lo, hi]``."""
        if not self.fitted:
            t = min(max(u, lo), hi)
            return t, float(self.sde.clock_rate(t))
        b, rate = self._smooth(torch.tensor(u, dtype=torch.float64, device="cpu"))
        t0 = self._t if self._t is not None else 0.5 * (lo + hi)
        self._t = float(self.sde.time_for_clock(b, lo=lo, hi=hi, t0=t0))
        return self._t, float(rate)


def flow_drift(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The probability-flow drift ``v = dx/d(clock)`` at the scalar time ``t`` (shape and dtype of
    ``x``): the SDE's one drift (:func:`scoresde.core.sde.flow_drift`) of the checked
    ``ε = eps_of(model, x, t)``. Times the clock's rate it is ``dx/dt``."""
    t = batch_time(t, x)  # converted once for the model and the SDE's coefficients
    return sde_flow_drift(model.sde, x, t, eps_of(model, x, t).to(x.dtype))


def drift_and_divergence(model, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None,
                         rate: float = 1.0):
    """``rate`` · :func:`flow_drift` and its divergence in ``x``: ``(1, B)`` exact, or ``(P, B)``
    Hutchinson ``vᵀ J v`` for probes ``(P, B, *dims)``. Both detached."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = rate * flow_drift(model, x, t)
        if probes is None:  # exact trace: one VJP per coordinate, Σ_d ∂f_d/∂x_d
            flat = f.flatten(1)
            n = flat.shape[1]
            div = torch.zeros_like(flat[:, 0])
            for d in range(n):
                (g,) = torch.autograd.grad(flat[:, d].sum(), x, retain_graph=d < n - 1)
                div = div + g.flatten(1)[:, d]
            div = div[None]
        else:  # Hutchinson: vᵀ (∂f/∂x) v with the fixed probes, one VJP per probe
            rows = []
            for p, v in enumerate(probes):
                (g,) = torch.autograd.grad(f, x, grad_outputs=v, retain_graph=p < len(probes) - 1)
                rows.append((g * v).flatten(1).sum(1))
            div = torch.stack(rows)
    return f.detach(), div.detach()


def check_solver(method: str, rtol, atol, steps) -> tuple[float, float, int | None]:
    """``method`` one of the torchdiffeq methods; ``rtol``, ``atol`` finite and > 0 (used by the
    adaptive methods); ``steps`` an integer ≥ 1 (fixed-step methods, else ignored). Returns them."""
    check_choice("method", method, ODE_METHODS)
    rtol, atol = check_number("rtol", rtol, low=0), check_number("atol", atol, low=0)
    if method in FIXED_METHODS:
        if steps is None:
            raise ValueError(f"steps=None: expected an integer ≥ 1 for the fixed-step {method!r}")
        steps = check_int("steps", steps)
    return rtol, atol, steps


def solve_flow(model, x: torch.Tensor, t_from: float, t_to: float, *, method: str = "dopri5",
               rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None,
               divergence=None, dtype: torch.dtype = torch.float64, on_eval=None) -> FlowSolution:
    """Carry ``x`` (``(B, *dims)``, the state at ``t_from``) along the probability flow to ``t_to``.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        t_from, t_to: start and end times in ``[0, 1]`` (either order: sampling runs 1 → t_eps,
            encoding and the likelihood t_eps → 1).
        method, rtol, atol, steps: see :func:`check_solver`.
        divergence: ``None`` (state only), ``"exact"``, or Hutchinson probes ``(P, B, *dims)``.
        dtype: dtype of the ODE state (float64 by default).
        on_eval: called with the fraction of the clock's span reached, once per drift evaluation
            (progress bars).

    Checks the solver's arguments, then :func:`integrate_flow`.
    """
    rtol, atol, steps = check_solver(method, rtol, atol, steps)
    if isinstance(divergence, str):
        check_choice("divergence", divergence, ("exact",))
    return integrate_flow(model, x, t_from, t_to, method=method, rtol=rtol, atol=atol, steps=steps,
                          divergence=divergence, dtype=dtype, on_eval=on_eval)


def integrate_flow(model, x: torch.Tensor, t_from: float, t_to: float, *, method: str, rtol: float,
                   atol: float, steps: int | None, divergence, dtype: torch.dtype, on_eval) -> FlowSolution:
    """:func:`solve_flow` for arguments already checked at the caller's gate (``method``, ``rtol``,
    ``atol``, ``steps`` as returned by :func:`check_solver`; ``divergence`` ``None``, ``"exact"`` or probes)."""
    probes = None if divergence is None or isinstance(divergence, str) else divergence.to(dtype)
    clock = Clock(model.sde)
    lo, hi = min(t_from, t_to), max(t_from, t_to)
    u_span = clock.u_of_t(torch.tensor([t_from, t_to], dtype=torch.float64, device="cpu")).to(x.device)
    u_lo, u_hi = float(u_span.min()), float(u_span.max())
    nfe, last_t = 0, [float(t_from)]

    def func(u, state):
        nonlocal nfe
        nfe += 1
        # torchdiffeq's initial-step heuristic may probe u outside the span: keep it inside.
        u = min(max(float(u), u_lo), u_hi)
        t, rate = clock.at(u, lo, hi)
        last_t[0] = t
        t = torch.tensor(t, dtype=torch.float64, device=x.device)
        if on_eval is not None:
            on_eval(abs(u - float(u_span[0])) / max(u_hi - u_lo, 1e-300))
        if divergence is None:
            return (rate * flow_drift(model, state, t)).to(dtype)
        f, div = drift_and_divergence(model, state[0], t, probes, rate)
        return f.to(dtype), div.to(dtype)

    y0 = x.detach().to(dtype)
    if divergence is not None:
        n_div = 1 if probes is None else probes.shape[0]
        y0 = (y0, torch.zeros((n_div, x.shape[0]), dtype=dtype, device=x.device))
    if method in ADAPTIVE_METHODS:
        # step_t: land on the end time instead of stepping past it and interpolating back.
        kwargs = dict(rtol=rtol, atol=atol, options={"max_num_steps": _MAX_NUM_STEPS, "step_t": u_span})
    else:  # exactly `steps` equal steps in u (torchdiffeq's step_size grid can round to steps + 1)
        kwargs = dict(options={"grid_constructor": lambda f, y, tt: torch.linspace(
            float(tt[0]), float(tt[-1]), steps + 1, dtype=tt.dtype, device=tt.device)})
    try:
        ys = torchdiffeq.odeint(func, y0, u_span, method=method, **kwargs)
    except AssertionError as err:
        raise RuntimeError(f"ODE solver {method!r} (rtol={rtol}, atol={atol}) failed near "
                           f"t={last_t[0]:.6g}: {err}") from None
    if divergence is None:
        return FlowSolution(ys[-1], None, nfe)
    xs, divs = ys
    # The state carries ∫ ∇·(dx/du) du, which equals ∫ ∇·(dx/dt) dt over the same path.
    return FlowSolution(xs[-1], divs[-1].to(torch.float64), nfe)
