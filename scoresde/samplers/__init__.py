"""Samplers by name. ``SAMPLERS`` maps each name to a function with the shared signature
(see :mod:`scoresde.samplers.base`); :func:`sample` is the front door."""

from __future__ import annotations

from scoresde.samplers.ancestral import ancestral
from scoresde.samplers.base import SampleResult
from scoresde.samplers.ddim import ddim
from scoresde.samplers.dpmpp import dpmpp
from scoresde.samplers.heun import heun
from scoresde.samplers.ode import ode
from scoresde.samplers.pc import pc
from scoresde.samplers.reverse_sde import reverse_sde
from scoresde.util import choices
from scoresde.util.checks import check_choice

__all__ = ["SAMPLERS", "SampleResult", "sample"]

# Keys are the names in scoresde.util.choices.SAMPLERS (configs validate against those; a test keeps them equal).
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
