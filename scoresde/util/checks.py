"""Argument checks shared by the whole package: one function per kind of value, one message format.

Every check raises one ``ValueError`` naming the argument, the value given and what was
expected. A keyword argument reads ``name=value: expected ...``; a command-line flag (a name
starting with ``--``) reads ``--flag value: expected ...``. Checks return the value in its
canonical type (``int``, ``float``, ``tuple``), so callers write ``n = check_int("n", n)``.

This module imports nothing from the package: every other module may use it.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["label", "check_int", "check_number", "check_choice", "check_shape", "check_model",
           "check_t_eps", "check_flag"]


def label(name: str, value) -> str:
    """``name=value`` for a keyword argument, ``--flag value`` for a command-line flag."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"


def _fail(name: str, value, expected: str) -> ValueError:
    return ValueError(f"{label(name, value)}: expected {expected}")


def check_int(name: str, value, low: int = 1, *, none_ok: bool = False) -> int | None:
    """An integer (``bool`` is not one) ``≥ low``; ``None`` passes when ``none_ok``."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _fail(name, value, f"an integer ≥ {low}" + (" or None" if none_ok else ""))
    return int(value)


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_closed: bool = False, high_closed: bool = False) -> float:
    """A finite real number (never ``bool``, ``nan`` or ``±inf``) within the given bounds.

    ``low``/``high`` are open bounds unless ``low_closed``/``high_closed``; e.g.
    ``check_number("rtol", v, low=0)`` wants a finite number ``> 0`` and
    ``check_number("t_eps", v, low=0, high=1)`` one in ``(0, 1)``.
    """
    if low is not None and high is not None:
        expected = f"a number in {'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
    elif low is not None:
        expected = f"a finite number {'≥' if low_closed else '>'} {low:g}"
    elif high is not None:
        expected = f"a finite number {'≤' if high_closed else '<'} {high:g}"
    else:
        expected = "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _fail(name, value, expected)
    if low is not None and (value < low or (value == low and not low_closed)):
        raise _fail(name, value, expected)
    if high is not None and (value > high or (value == high and not high_closed)):
        raise _fail(name, value, expected)
    return float(value)


def check_choice(name: str, value, choices):
    """``value`` must be one of ``choices`` (compared with ``==``); returns it."""
    if isinstance(value, bool) or value not in choices:
        raise _fail(name, value, f"one of {', '.join(map(str, choices))}")
    return value


def check_flag(name: str, value) -> bool:
    """``True`` or ``False`` (not ``0``, ``1`` or ``None``)."""
    if not isinstance(value, bool):
        raise _fail(name, value, "True or False")
    return value


def check_shape(name: str, value) -> tuple:
    """A non-empty tuple of positive integers, e.g. a data shape ``(C, H, W)`` or ``(D,)``."""
    try:
        shape = tuple(value)
    except TypeError:
        raise _fail(name, value, "a tuple of positive integers") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise _fail(name, value, "a tuple of positive integers")
    return tuple(int(s) for s in shape)


def check_model(model) -> None:
    """A score model: anything with ``.sde`` and a callable ``.eps(x, t)``."""
    if not (hasattr(model, "sde") and callable(getattr(model, "eps", None))):
        raise ValueError(f"model={type(model).__name__}: expected an object with .sde and .eps(x, t)")


def check_t_eps(t_eps, sde=None) -> float:
    """``t_eps`` as a float in ``(0, 1)``; ``None`` means ``sde.sampling_eps`` when an SDE is given."""
    if t_eps is None and sde is not None:
        t_eps = sde.sampling_eps
    return check_number("t_eps", t_eps, low=0, high=1)
