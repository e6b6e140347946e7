"""Bits per dimension: integer data in model space, uniform dequantization, the offset, the result type.

Integer data ``k ∈ {0..L-1}`` live in bins ``[2k/L - 1, 2(k+1)/L - 1]`` of model space
``[-1, 1]``, each of width ``w = 2/L`` (docs/math.md, "Bits per dimension"):

- :func:`to_model_space` gives the bin centres ``(2k + 1)/L - 1`` (training data, the VLB's ``x_0``);
- :func:`dequantize` gives ``z = 2(k + u)/L - 1`` with ``u ~ U[0, 1)^D`` (the ODE likelihood);
- :func:`bpd_offset` is ``-log₂ w = log₂ L - 1``, so that for any density ``p_z`` of ``z``
  ``-log₂ P(k)/D ≤ -E_u[log p_z(z)]/(D ln 2) + bpd_offset(L)``.

Every bits/dim estimator (the ODE likelihood, the DDPM bound, the classical baseline) takes
these from here and returns a :class:`BpdResult`; none of them imports the data loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from scoresde.util.checks import check_int
from scoresde.util.rng import rand

__all__ = ["BpdResult", "to_model_space", "dequantize", "check_levels", "check_int_data", "bpd_offset",
           "nats_to_bpd", "summarize"]


@dataclass
class BpdResult:
    """Mean bits/dim over a data set, its standard error, total NFE, per-sample bits/dim ``(B,)``.

    ``terms`` holds a breakdown in bits/dim (the variational bound's ``L_T``, ``L_sum``, ``L_0``);
    ``info`` holds extras such as ``nfe_per_solve``.
    """

    bpd: float
    stderr: float
    nfe: int
    per_sample: torch.Tensor
    terms: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def check_levels(x_int: torch.Tensor, levels) -> int:
    """``levels`` an integer ≥ 2 and ``x_int`` whole numbers in ``0..levels-1``; returns ``levels``."""
    levels = check_int("levels", levels, 2)
    if x_int.is_floating_point() and not torch.equal(x_int, torch.round(x_int)):
        raise ValueError("x_int: expected integer data (whole numbers) for the given levels")
    if x_int.numel() and (x_int.min() < 0 or x_int.max() > levels - 1):
        raise ValueError(f"x_int: expected values in 0..{levels - 1}, got "
                         f"{x_int.min().item()}..{x_int.max().item()}")
    return levels


def check_int_data(x_int, levels) -> int:
    """``x_int`` must be a tensor ``(B, *dims)`` with ``B ≥ 1`` and ``levels`` an integer ≥ 2;
    returns ``D = prod(dims)``."""
    if not isinstance(x_int, torch.Tensor) or x_int.ndim < 2 or x_int.shape[0] < 1:
        raise ValueError(f"x_int of shape {tuple(getattr(x_int, 'shape', ()))}: expected a "
                         f"tensor (B, *dims) of integers in 0..levels-1")
    check_int("levels", levels, 2)
    return math.prod(x_int.shape[1:])


def to_model_space(x_int: torch.Tensor, levels: int, dtype=torch.float32) -> torch.Tensor:
    """Bin centres: ``(2k + 1)/L - 1``."""
    check_levels(x_int, levels)
    return ((2 * x_int.to(torch.float64) + 1) / levels - 1).to(dtype)


def dequantize(x_int: torch.Tensor, levels: int, u: torch.Tensor | None = None,
               generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """Uniform dequantization ``z = 2 (k + u)/L - 1`` with ``u ~ U[0, 1)`` (or the given ``u``), on
    ``x_int``'s device; ``u`` is drawn on the generator's device (CPU or ``x_int``'s) and moved."""
    check_levels(x_int, levels)
    if u is None:
        u = rand(x_int.shape, generator=generator, dtype=torch.float64, device=x_int.device)
    return (2 * (x_int.to(torch.float64) + u.to(torch.float64)) / levels - 1).to(dtype)


def bpd_offset(levels: int) -> float:
    """``-log₂(2/L) = log₂ L - 1``: minus the log₂ of one bin's width in model space."""
    return -math.log2(2.0 / levels)


def nats_to_bpd(nll: torch.Tensor, dim: int) -> torch.Tensor:
    """Negative log-likelihood in nats per sample → bits per dimension."""
    return nll / (dim * math.log(2))


def summarize(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over the data set of ``(n_draws, B)`` per-draw values.

    Each sample's draws are averaged first; the standard error is then ``std/√B`` over
    samples (which includes the draw noise). With a single sample it is the standard
    error over its draws (``nan`` with one draw).
    """
    per_sample = values.mean(0)
    if per_sample.numel() > 1:
        return float(per_sample.mean()), float(per_sample.std() / math.sqrt(per_sample.numel()))
    if values.shape[0] > 1:
        return float(per_sample.mean()), float(values.std() / math.sqrt(values.shape[0]))
    return float(per_sample.mean()), float("nan")
