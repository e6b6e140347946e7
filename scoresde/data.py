"""Data sets and the scaling between integer levels and model space ``[-1, 1]``.

Scaling convention (MATH.md, "Bits per dimension"): integer data ``k ∈ {0..L-1}`` lives
in bins ``[2k/L - 1, 2(k+1)/L - 1]`` of model space. Training data are the bin centres
(:func:`to_model_space`); likelihoods use uniform dequantization (:func:`dequantize`).
"""

from __future__ import annotations

import torch

__all__ = ["to_model_space", "dequantize"]


def _check_levels(x_int: torch.Tensor, levels: int) -> None:
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"levels={levels!r}: expected an integer ≥ 2")
    if x_int.is_floating_point() and not torch.equal(x_int, torch.round(x_int)):
        raise ValueError("x_int: expected integer data (whole numbers) for the given levels")
    if x_int.numel() and (x_int.min() < 0 or x_int.max() > levels - 1):
        raise ValueError(f"x_int: expected values in 0..{levels - 1}, got "
                         f"{x_int.min().item()}..{x_int.max().item()}")


def to_model_space(x_int: torch.Tensor, levels: int, dtype=torch.float32) -> torch.Tensor:
    """Bin centres: ``(2k + 1)/L - 1``."""
    _check_levels(x_int, levels)
    return ((2 * x_int.to(torch.float64) + 1) / levels - 1).to(dtype)


def dequantize(x_int: torch.Tensor, levels: int, u: torch.Tensor | None = None,
               generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """Uniform dequantization ``z = 2 (k + u)/L - 1`` with ``u ~ U[0, 1)`` (or the given ``u``)."""
    _check_levels(x_int, levels)
    if u is None:
        u = torch.rand(x_int.shape, generator=generator, dtype=torch.float64, device=x_int.device)
    return (2 * (x_int.to(torch.float64) + u.to(torch.float64)) / levels - 1).to(dtype)
