"""scoresde: score-based diffusion models in continuous time (PyTorch).

The sampler front door is ``scoresde.samplers.sample`` (not re-exported here: ``scoresde.sample``
is the ``python -m scoresde.sample`` program).
"""

from .analytic import GaussianMixture
from .evaluation import EvalSettings, evaluate_likelihood
from .likelihood import bits_per_dim, log_likelihood
from .model import EpsModel, ScoreModel, eps_of, score_of, x0_of
from .samplers import SAMPLERS
from .schedules import (
    CosineSchedule,
    DiscreteSchedule,
    DiscreteSigmas,
    GeometricSigmas,
    LinearSchedule,
    Schedule,
    SigmaSchedule,
)
from .sde import VESDE, VPSDE, GaussianSDE, SubVPSDE, append_dims
from .vlb import ddpm_vlb_bits_per_dim

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
    "ddpm_vlb_bits_per_dim",
    "eps_of",
    "evaluate_likelihood",
    "log_likelihood",
    "score_of",
    "x0_of",
]

__version__ = "0.1.0"
