"""Time embeddings for ε-networks.

**Time convention.** Networks take continuous ``t ∈ [0, 1]`` (shape ``(B,)``), never a
step index. The sinusoidal embedding is of ``1000·t``, so that on DDPM's grid
``t_i = i/N`` with ``N = 1000`` it sees the integer step ``i`` exactly as in Ho et al.
2020 (whose transformer-style embedding takes integer steps). The conversion lives
here and only here (docs/math.md, "Time").

The embedding is computed in float32 with autocast disabled, whatever the ambient
precision: bf16 rounds ``998.39`` to ``1000``, so two different times would look alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scoresde.util.checks import check_choice
from scoresde.util.choices import TIME_EMBEDDINGS

__all__ = ["TIME_SCALE", "sinusoidal_embedding", "GaussianFourierFeatures", "TimeEmbedding", "LabelEmbedding"]

TIME_SCALE = 1000.0  # the sinusoidal embedding sees 1000·t (DDPM's integer steps for N = 1000)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of ``TIME_SCALE·t`` (Vaswani et al. 2017, §3.5; Ho et al. 2020, App. B).

    ``emb = [sin(1000 t ω_k), cos(1000 t ω_k)]``, ``ω_k = max_period^(-k/(dim/2 - 1))``,
    ``k = 0..dim/2-1``. ``t`` of shape ``(B,)``; returns float32 ``(B, dim)``.
    """
    if dim < 4 or dim % 2:
        raise ValueError(f"dim={dim!r}: expected an even embedding size ≥ 4")
    half = dim // 2
    with torch.autocast(device_type=t.device.type, enabled=False):
        k = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(max_period) * k / (half - 1))  # (half,)
        arg = (TIME_SCALE * t.float())[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features ``[sin(2π t W), cos(2π t W)]``, ``W ~ N(0, scale²)`` fixed
    (Tancik et al. 2020; Song et al. 2021, App. H.1). Takes ``t ∈ [0, 1]`` itself, not
    ``1000·t``: ``scale`` sets the frequency range. Returns float32 ``(B, dim)``."""

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim={dim!r}: expected an even embedding size ≥ 2")
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=g, device="cpu") * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=t.device.type, enabled=False):
            arg = 2 * math.pi * t.float()[:, None] * self.W.float()[None]  # (B, dim/2)
            return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class TimeEmbedding(nn.Module):
    """``t`` (B,) → features (B, out_dim): a fixed float32 embedding, then Linear–SiLU–Linear.

    Args:
        dim: size of the fixed embedding.
        out_dim: output size (DDPM: ``4·channels``).
        kind: ``"sinusoidal"`` (of ``1000·t``) or ``"fourier"`` (Gaussian Fourier features of ``t``).
    """

    KINDS = TIME_EMBEDDINGS

    def __init__(self, dim: int, out_dim: int, kind: str = "sinusoidal"):
        super().__init__()
        check_choice("kind", kind, self.KINDS)
        if dim < 4 or dim % 2:
            raise ValueError(f"dim={dim!r}: expected an even embedding size ≥ 4")
        self.dim, self.kind = dim, kind
        self.fourier = GaussianFourierFeatures(dim) if kind == "fourier" else None
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """The fixed embedding, float32 ``(B, dim)`` even under autocast."""
        if t.ndim != 1:
            raise ValueError(f"t has shape {tuple(t.shape)}: expected (B,)")
        return self.fourier(t) if self.fourier is not None else sinusoidal_embedding(t, self.dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        w = self.mlp[0].weight
        if w.dtype != torch.float32:  # e.g. a float64 network in tests
            emb = emb.to(w.dtype)
        return self.mlp(emb)


class LabelEmbedding(nn.Module):
    """Class labels ``y`` (B,) in ``0..num_classes`` → features (B, dim), added to the time embedding.

    A table of ``num_classes + 1`` learned vectors: row ``num_classes`` is the learned null label
    (classifier-free guidance, Ho & Salimans 2022); ``y=None`` means the null label for the whole
    batch. The table starts at zero (no random draw, and a fresh conditional network starts as
    its unconditional one) and is learned like any weight.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r}: expected an integer ≥ 1")
        self.num_classes = num_classes
        # zeros on the default device, as nn's own parameters are made
        self.table = nn.Embedding(num_classes + 1, dim, _weight=torch.zeros(num_classes + 1, dim))

    def forward(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.int64, device=device)
        if y.shape != (batch,) or y.dtype != torch.int64:
            raise ValueError(f"y has shape {tuple(y.shape)} and dtype {y.dtype}: expected ({batch},) int64")
        return self.table(y)
