"""scoresde: score-based diffusion models in continuous time (PyTorch)."""

from .analytic import GaussianMixture
from .model import EpsModel, ScoreModel
from .schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, Schedule
from .sde import VPSDE, append_dims

__all__ = [
    "CosineSchedule",
    "DiscreteSchedule",
    "EpsModel",
    "GaussianMixture",
    "LinearSchedule",
    "Schedule",
    "ScoreModel",
    "VPSDE",
    "append_dims",
]

__version__ = "0.1.0"
