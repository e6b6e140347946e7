"""Random draws for data on any device, from a generator on any device.

Every function of the library that takes a ``generator`` accepts a CPU ``torch.Generator`` or
one on the data's device (``None``: the global RNG of the data's device). The rule, the same
everywhere: **the draw is made on the generator's device, from the generator's stream, and then
moved to the data's device.** So a CPU generator seeded with ``s`` gives the same numbers
whether the data lives on the CPU or on a GPU (figures reproducible across machines), and a
CUDA generator draws on the GPU (no host-to-device copy of the noise).
"""

from __future__ import annotations

import torch

__all__ = ["draw_device", "randn", "rand", "randint"]


def draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Where a draw for data on ``device`` is made: the generator's device, else ``device``."""
    return torch.device(device) if generator is None else generator.device


def randn(shape, *, generator: torch.Generator | None = None, dtype=torch.float32, device) -> torch.Tensor:
    """Standard normal draws of ``shape`` on ``device`` (drawn on :func:`draw_device`)."""
    where = draw_device(generator, device)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=where).to(device)


def rand(shape, *, generator: torch.Generator | None = None, dtype=torch.float32, device) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws of ``shape`` on ``device`` (drawn on :func:`draw_device`)."""
    where = draw_device(generator, device)
    return torch.rand(tuple(shape), generator=generator, dtype=dtype, device=where).to(device)


def randint(low: int, high: int, shape, *, generator: torch.Generator | None = None, device) -> torch.Tensor:
    """Integers in ``[low, high)`` of ``shape`` (int64) on ``device`` (drawn on :func:`draw_device`)."""
    where = draw_device(generator, device)
    return torch.randint(low, high, tuple(shape), generator=generator, device=where).to(device)
