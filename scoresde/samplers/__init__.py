"""Samplers by name. ``SAMPLERS`` maps each name to a function with the shared signature
(see :mod:`scoresde.samplers.base`); :func:`sample` is the front door."""

from __future__ import annotations

from .. import choices
from ..checks import check_choice
from .ancestral import ancestral
from .base import SampleResult
from .ddim import ddim
from .dpmpp import dpmpp
from .heun import heun
from .ode import ode
from .pc import pc
from .reverse_sde import reverse_sde

__all__ = ["SAMPLERS", "SampleResult", "sample"]

# Keys are the names in scoresde.choices.SAMPLERS (configs validate against those; a test keeps them equal).
SAMPLERS: dict = {
    "ancestral": ancestral,
    "ddim": ddim,
    "dpmpp": dpmpp,
    "heun": heun,
    "ode": ode,
    "pc": pc,
    "sde": reverse_sde,
}


def sample(model, name: str, x_T, **options) -> SampleResult:
    """Run the sampler called ``name`` (one of ``SAMPLERS``) on ``model`` from ``x_T``."""
    check_choice("sampler", name, choices.SAMPLERS)
    return SAMPLERS[name](model, x_T, **options)
