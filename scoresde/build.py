"""Objects from a :class:`~scoresde.config.Config`: the SDE, the ε-network, the score model.

The one place where config keys become constructor arguments; library code below takes
explicit keyword arguments only (ARCHITECTURE.md, "CLI modules").
"""

from __future__ import annotations

from torch import nn

from .config import Config
from .model import ScoreModel
from .sde import VPSDE

__all__ = ["build_sde", "build_net", "build_model"]


def build_sde(config: Config) -> VPSDE:
    """The VP-SDE of ``config.sde``. ``ddpm`` takes ``β_i`` linear from ``β_min/N`` to ``β_max/N``
    (Ho et al. 2020: ``1e-4 .. 0.02`` for ``N = 1000``, the defaults 0.1 and 20 over 1000)."""
    s = config.sde
    if s.schedule == "linear":
        return VPSDE.linear(s.beta_min, s.beta_max)
    if s.schedule == "cosine":
        return VPSDE.cosine(s.cosine_s)
    if s.schedule == "ddpm":
        return VPSDE.ddpm(s.n_steps, s.beta_min / s.n_steps, s.beta_max / s.n_steps)
    raise ValueError(f"sde.schedule={s.schedule!r}: expected linear, cosine or ddpm")


def build_net(config: Config) -> nn.Module:
    """The ε-network of ``config.model`` for examples of shape ``config.data.shape``."""
    from .nets import MLP, UNet  # noqa: PLC0415 - nets import torch-heavy modules

    m, shape = config.model, tuple(config.data.shape)
    if m.kind == "mlp":
        return MLP(shape, hidden=m.hidden, depth=m.depth, time_dim=m.time_dim, dropout=m.dropout)
    if m.kind == "unet":
        return UNet(shape, channels=m.channels, channel_mult=tuple(m.channel_mult),
                    num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
                    dropout=m.dropout, num_heads=m.num_heads)
    raise ValueError(f"model.kind={m.kind!r}: expected mlp or unet")


def build_model(config: Config) -> ScoreModel:
    """``ScoreModel(build_net(config), build_sde(config))`` in float32 on the CPU."""
    return ScoreModel(build_net(config), build_sde(config))
