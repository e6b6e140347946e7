"""Samplers by name. ``SAMPLERS`` maps each name to a function with the shared signature
(see :mod:`scoresde.samplers.base`); :func:`sample` is the front door."""

from __future__ import annotations

from .base import SampleResult
from .dpmpp import dpmpp
from .heun import heun
from .ode import ode

__all__ = ["SAMPLERS", "SampleResult", "sample"]

# One explicit dict; each sampler module adds its own line here.
SAMPLERS: dict = {
    "dpmpp": dpmpp,
    "heun": heun,
    "ode": ode,
}


def sample(model, name: str, x_T, **options) -> SampleResult:
    """Run the sampler called ``name`` (one of ``SAMPLERS``) on ``model`` from ``x_T``."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r}: expected one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name](model, x_T, **options)
