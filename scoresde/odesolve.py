"""One checked entry point to ``torchdiffeq.odeint``, shared by the ODE sampler and the likelihood.

torchdiffeq reports failures ("underflow in dt", "max_num_steps exceeded", non-finite
state) as bare ``AssertionError``s that vanish under ``python -O`` (PITFALLS.md); here they
become a ``RuntimeError`` naming the solver, its tolerances and the last time reached.
"""

from __future__ import annotations

import torch
import torchdiffeq

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "odeint_checked"]

ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")
FIXED_METHODS = ("euler", "midpoint", "rk4")


def odeint_checked(func, y0, t: torch.Tensor, *, method: str = "dopri5", rtol: float = 1e-5,
                   atol: float = 1e-5, steps: int | None = None, max_num_steps: int = 100_000):
    """Solve ``dy/dt = func(t, y)`` at times ``t`` (increasing or decreasing) with torchdiffeq.

    Adaptive methods use ``rtol``/``atol``; fixed-step methods take ``steps`` equal steps
    over ``[t[0], t[-1]]``. ``y0`` may be a tensor or a tuple of tensors. Returns
    ``odeint``'s output (values at every entry of ``t``).
    """
    if method in ADAPTIVE_METHODS:
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name}={v!r}: expected a number > 0")
        # step_t = t: land on every requested time instead of stepping past the last one
        # and interpolating back (which would evaluate func outside [t[0], t[-1]]).
        options = {"max_num_steps": int(max_num_steps), "step_t": t}
        kwargs = dict(rtol=float(rtol), atol=float(atol), options=options)
    elif method in FIXED_METHODS:
        if steps is None or isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps={steps!r}: expected an integer ≥ 1 for the fixed-step {method!r}")
        # Exactly `steps` equal steps: torchdiffeq's step_size grid can round to steps + 1.
        n = int(steps)
        kwargs = dict(options={"grid_constructor": lambda f, y, tt: torch.linspace(
            float(tt[0]), float(tt[-1]), n + 1, dtype=tt.dtype, device=tt.device)})
    else:
        raise ValueError(f"method={method!r}: expected one of "
                         f"{', '.join(ADAPTIVE_METHODS + FIXED_METHODS)}")
    last = {"t": float(t[0])}
    lo, hi = min(float(t[0]), float(t[-1])), max(float(t[0]), float(t[-1]))

    def tracked(tt, y):
        # torchdiffeq's initial-step heuristic evaluates func at t0 + h0 with h0 unbounded
        # by the interval (e.g. t = -46 when the drift at t0 is tiny): keep t inside it.
        tt = tt.clamp(lo, hi)
        last["t"] = float(tt)
        return func(tt, y)

    try:
        return torchdiffeq.odeint(tracked, y0, t, method=method, **kwargs)
    except AssertionError as err:
        raise RuntimeError(f"ODE solver {method!r} (rtol={rtol}, atol={atol}) failed near "
                           f"t={last['t']:.6g}: {err}") from None
