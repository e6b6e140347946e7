"""A residual MLP ε-network for vector data (toy 2-D sets, small flattened data)."""

from __future__ import annotations

import math

import torch
from torch import nn

from scoresde.nets.embeddings import LabelEmbedding, TimeEmbedding
from scoresde.util.checks import check_int, check_number, check_shape

__all__ = ["MLP"]


class _Block(nn.Module):
    """``h + W₂ drop(SiLU(W₁ SiLU(LN(h)) + P temb))``: pre-norm residual block with additive time."""

    def __init__(self, hidden: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.temb = nn.Linear(temb_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(nn.functional.silu(self.norm(h))) + self.temb(temb)
        return h + self.fc2(self.drop(nn.functional.silu(z)))


class MLP(nn.Module):
    """ε-network ``(x (B, *data_shape), t (B,) in [0, 1]) -> (B, *data_shape)``.

    Flattens ``x`` to ``D = prod(data_shape)``, adds a time embedding (sinusoidal of
    ``1000·t``, see :mod:`scoresde.nets.embeddings`) in every residual block, and maps back.

    Args:
        data_shape: shape of one sample, e.g. ``(2,)``.
        hidden: width of the residual stream.
        depth: number of residual blocks.
        time_dim: size of the fixed time embedding (its MLP maps to ``hidden``).
        dropout: dropout rate inside the blocks.
        time_embedding: ``"sinusoidal"`` or ``"fourier"``.
        num_classes: ``K ≥ 1``: class-conditional, ``forward(x, t, y)`` with labels ``y`` (B,) in
            ``0..K`` (``K``: the learned null label; ``None``: null for all) embedded and added to
            the time embedding. 0 (default): unconditional, no label module at all.
    """

    def __init__(self, data_shape: tuple, *, hidden: int = 256, depth: int = 3, time_dim: int = 128,
                 dropout: float = 0.0, time_embedding: str = "sinusoidal", num_classes: int = 0):
        super().__init__()
        self.data_shape = check_shape("data_shape", data_shape)
        for name, v, lo in (("hidden", hidden, 1), ("depth", depth, 0), ("time_dim", time_dim, 4)):
            check_int(name, v, lo)
        check_number("dropout", dropout, low=0, high=1, low_closed=True)
        d = math.prod(self.data_shape)
        self.time = TimeEmbedding(time_dim, hidden, kind=time_embedding)
        self.inp = nn.Linear(d, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, hidden, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, d)
        self.num_classes = check_int("num_classes", num_classes, 0)
        if self.num_classes:  # created last and zero-initialised: no draw from torch's RNG
            self.label = LabelEmbedding(self.num_classes, hidden)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected (B, *{self.data_shape})")
        temb = self.time(t)  # (B, hidden)
        if self.num_classes:
            temb = temb + self.label(y, x.shape[0], x.device).to(temb.dtype)
        elif y is not None:
            raise ValueError("y: this network is unconditional (num_classes=0): expected y=None")
        h = self.inp(x.flatten(1)) + temb  # (B, hidden)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(x.shape)
