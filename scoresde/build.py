"""Objects from a :class:`~scoresde.config.Config`: the SDE, the ε-network, the score model.

The one place where config keys become constructor arguments; library code below takes
explicit keyword arguments only (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import Config
from .datasets import dataset_info
from .lattice import FactorizedLattice, LatticeResidualModel, lattice_log_probs
from .model import ScoreModel
from .nets import MLP, UNet
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
    m, shape = config.model, tuple(config.data.shape)
    if m.kind == "mlp":
        return MLP(shape, hidden=m.hidden, depth=m.depth, time_dim=m.time_dim, dropout=m.dropout)
    if m.kind == "unet":
        return UNet(shape, channels=m.channels, channel_mult=tuple(m.channel_mult),
                    num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
                    dropout=m.dropout, num_heads=m.num_heads)
    raise ValueError(f"model.kind={m.kind!r}: expected mlp or unet")


def build_model(config: Config, data=None) -> ScoreModel:
    """``ScoreModel(build_net(config), build_sde(config))`` in float32 on the CPU.

    ``model.base = lattice``: a :class:`~scoresde.lattice.LatticeResidualModel` whose base holds
    the per-pixel level frequencies of ``data`` (the training set; without it a uniform
    placeholder, to be overwritten by a checkpoint's ``base.log_probs``); the network's output
    layer starts at zero so training starts from the base.
    """
    with torch.device("cpu"):  # on the CPU whatever torch's default device: the caller moves it
        net, sde = build_net(config), build_sde(config)
    if config.model.base == "none":
        return ScoreModel(net, sde)
    shape = tuple(config.data.shape)
    levels = dataset_info(config.data.name).levels
    if data is not None and data.x_int is not None:
        log_probs = lattice_log_probs(data.x_int.cpu(), data.levels)
    elif levels is not None:
        log_probs = torch.zeros((math.prod(shape), levels), dtype=torch.float64, device="cpu")
    else:
        raise ValueError(f"model.base=lattice: data set {config.data.name!r} has no integer levels")
    out = getattr(net, "out", None)
    if isinstance(out, nn.Linear):  # the MLP's output layer (the U-Net's is zero already)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
    return LatticeResidualModel(net, sde, FactorizedLattice(log_probs, sde, shape))
