"""scoresde: score-based diffusion models in continuous time (PyTorch).

The sampler front door is ``scoresde.samplers.sample`` (not re-exported here: ``scoresde.sample``
is the ``python -m scoresde.sample`` program).
"""

from scoresde.core.analytic import GaussianMixture
from scoresde.core.conditional import condition
from scoresde.core.model import EpsModel, ScoreModel, eps_of, score_of, x0_of
from scoresde.core.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    DiscreteSigmas,
    GeometricSigmas,
    LinearSchedule,
    Schedule,
    SigmaSchedule,
)
from scoresde.core.sde import VESDE, VPSDE, GaussianSDE, SubVPSDE, append_dims
from scoresde.evaluation.bpd_eval import EvalSettings, evaluate_likelihood
from scoresde.likelihood.ode import bits_per_dim, log_likelihood
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.samplers import SAMPLERS

__all__ = [
    "CosineSchedule",
    "DiscreteSchedule",
    "DiscreteSigmas",
    "EpsModel",
    "EvalSettings",
    "GaussianMixture",
    "GaussianSDE",
    "GeometricSigmas",
    "LinearSchedule",
    "SAMPLERS",
    "Schedule",
    "ScoreModel",
    "SigmaSchedule",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "append_dims",
    "bits_per_dim",
    "condition",
    "ddpm_vlb_bits_per_dim",
    "eps_of",
    "evaluate_likelihood",
    "log_likelihood",
    "score_of",
    "x0_of",
]

__version__ = "0.1.0"
