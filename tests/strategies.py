"""Hypothesis strategies shared by the test files: random schedules and SDEs."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from scoresde import VESDE, VPSDE, CosineSchedule, DiscreteSchedule, LinearSchedule, SubVPSDE


@st.composite
def linear_schedules(draw):
    beta_min = draw(st.floats(0.01, 1.0))
    return LinearSchedule(beta_min, beta_min + draw(st.floats(0.5, 40.0)))


@st.composite
def cosine_schedules(draw):
    return CosineSchedule(s=draw(st.floats(1e-3, 0.05)))


@st.composite
def ddpm_schedules(draw, max_n: int = 1000):
    n = draw(st.integers(1, max_n))
    start = draw(st.floats(1e-5, 1e-3))
    end = draw(st.floats(1e-3, 0.05))
    return DiscreteSchedule.ddpm_linear(n, start, max(start, end))


@st.composite
def random_beta_schedules(draw, max_n: int = 1000):
    """Arbitrary β sequences (not monotone), lengths 1..max_n, with β_i ∈ [1e-6, 0.5]."""
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    log_b = torch.empty(n, dtype=torch.float64).uniform_(-13.8, -0.7, generator=g)
    return DiscreteSchedule(torch.exp(log_b))


def schedules(max_n: int = 1000):
    return st.one_of(linear_schedules(), cosine_schedules(), ddpm_schedules(max_n))


def sdes(max_n: int = 1000):
    return schedules(max_n).map(VPSDE)


def subvp_sdes(max_n: int = 1000):
    return schedules(max_n).map(SubVPSDE)


@st.composite
def ve_sdes(draw, max_n: int = 1000):
    """VE-SDEs: continuous geometric ``σ_min (σ_max/σ_min)^t`` or SMLD's ``N`` discrete levels."""
    sigma_min = draw(st.floats(1e-3, 0.5))
    sigma_max = sigma_min * draw(st.floats(2.0, 1e4))
    if draw(st.booleans()):
        return VESDE.geometric(sigma_min, sigma_max)
    return VESDE.smld(draw(st.integers(1, max_n)), sigma_min, sigma_max)


def all_sdes(max_n: int = 1000):
    """VP, sub-VP and VE SDEs with random schedules."""
    return st.one_of(sdes(max_n), subvp_sdes(max_n), ve_sdes(max_n))
