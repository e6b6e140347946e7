"""Toy 2-D data sets, scaled to roughly ``[-1, 1]²``.

``ring`` is the analytic oracle :meth:`scoresde.core.analytic.GaussianMixture.ring` (8 Gaussians
of std 0.1 on the unit circle): its score is known exactly at every ``t``, so trained
models and samplers can be compared with the truth. The others are the usual
density-estimation benchmarks (two moons, swiss roll, checkerboard; e.g. Grathwohl et
al. 2019, FFJORD), rescaled. Every generator takes ``n`` and a ``torch.Generator`` and
returns float32 ``x`` of shape ``(n, 2)`` and int64 labels (or ``None``).
"""

from __future__ import annotations

import math

import torch

from scoresde.core.analytic import GaussianMixture

__all__ = ["TOY_SETS", "TOY_CLASSES", "toy_oracle", "ring", "moons", "swissroll", "checkerboard"]


def toy_oracle(name: str = "ring") -> GaussianMixture:
    """The exact data distribution of a toy set; only ``"ring"`` has one."""
    if name != "ring":
        raise ValueError(f"name={name!r}: only 'ring' has an analytic oracle "
                         f"(the Gaussian mixture GaussianMixture.ring())")
    return GaussianMixture.ring()


def ring(n: int, generator: torch.Generator):
    """Samples of :func:`toy_oracle` ``("ring")``; labels are the mixture components."""
    x, labels = toy_oracle("ring").sample(n, generator=generator, return_labels=True)
    return x.float(), labels


def moons(n: int, generator: torch.Generator, noise: float = 0.05):
    """Two interleaving half circles (as scikit-learn's ``make_moons``), centred and divided
    by 1.5 so that they span ``[-1, 1] × [-0.5, 0.5]``; labels 0 (upper) and 1 (lower)."""
    labels = torch.randint(0, 2, (n,), generator=generator, device="cpu")
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64, device="cpu")
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    x = torch.where(labels[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64, device="cpu")
    centre = torch.tensor([0.5, 0.25], dtype=torch.float64, device="cpu")
    return ((x - centre) / 1.5).float(), labels


def swissroll(n: int, generator: torch.Generator, noise: float = 0.25):
    """The 2-D swiss roll ``θ (cos θ, sin θ)``, ``θ = 1.5π (1 + 2u)``, ``u ~ U[0, 1]``, plus
    Gaussian noise, divided by ``4.5π + 3·noise`` so it stays within about ``[-1, 1]²``."""
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64, device="cpu"))
    x = theta[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64, device="cpu")
    return (x / (4.5 * math.pi + 3 * noise)).float(), None


def checkerboard(n: int, generator: torch.Generator, cells: int = 4):
    """Uniform on the "black" squares of a ``cells × cells`` board on ``[-1, 1]²`` (cell
    ``(i, j)`` black when ``i + j`` is even); labels are the black cells' ranks ``0..cells²/2-1``
    (the mixture component, in row-major order of ``i·cells + j``)."""
    black = torch.tensor([i * cells + j for i in range(cells) for j in range(cells) if (i + j) % 2 == 0],
                         device="cpu")
    labels = torch.randint(0, len(black), (n,), generator=generator, device="cpu")
    cell = black[labels]
    corner = torch.stack([cell // cells, cell % cells], 1).double()  # (n, 2): (i, j)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64, device="cpu")
    return ((corner + u) * (2 / cells) - 1).float(), labels


TOY_SETS = {"ring": ring, "moons": moons, "swissroll": swissroll, "checkerboard": checkerboard}
# Class labels each toy set yields (its mixture components; the swiss roll has none).
TOY_CLASSES = {"ring": 8, "moons": 2, "swissroll": None, "checkerboard": 8}
