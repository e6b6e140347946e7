"""Objects from a :class:`~scoresde.training.config.Config`: the SDE, the ε-network, the score model.

The one place where config keys become constructor arguments; library code below takes
explicit keyword arguments only (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scoresde.core.lattice import FactorizedLattice, LatticeResidualModel, lattice_log_probs
from scoresde.core.model import ScoreModel
from scoresde.core.sde import VESDE, VPSDE, SubVPSDE
from scoresde.data.table import dataset_info
from scoresde.nets import MLP, UNet
from scoresde.training.config import Config
from scoresde.util.host import available_memory, check_memory

__all__ = ["build_sde", "build_net", "build_model", "check_sizes", "config_parameter_count"]


def build_sde(config: Config):
    """The SDE of ``config.sde`` (``kind``: ``vp``, ``subvp`` or ``ve``; docs/sdes.md).

    VP and sub-VP: ``ddpm`` takes ``β_i`` linear from ``β_min/N`` to ``β_max/N`` (Ho et al. 2020:
    ``1e-4 .. 0.02`` for ``N = 1000``, the defaults 0.1 and 20 over 1000). VE: ``linear`` is
    the continuous ``σ_min (σ_max/σ_min)^t`` (``log σ`` linear in ``t``), ``smld`` SMLD's
    ``n_steps`` geometric levels."""
    s = config.sde
    if s.kind == "ve":
        if s.schedule == "linear":
            return VESDE.geometric(s.sigma_min, s.sigma_max)
        if s.schedule == "smld":
            return VESDE.smld(s.n_steps, s.sigma_min, s.sigma_max)
        raise ValueError(f"sde.schedule={s.schedule!r}: expected linear or smld for sde.kind=ve")
    cls = {"vp": VPSDE, "subvp": SubVPSDE}.get(s.kind)
    if cls is None:
        raise ValueError(f"sde.kind={s.kind!r}: expected vp, subvp or ve")
    if s.schedule == "linear":
        return cls.linear(s.beta_min, s.beta_max)
    if s.schedule == "cosine":
        return cls.cosine(s.cosine_s)
    if s.schedule == "ddpm":
        return cls.ddpm(s.n_steps, s.beta_min / s.n_steps, s.beta_max / s.n_steps)
    raise ValueError(f"sde.schedule={s.schedule!r}: expected linear, cosine or ddpm")


def build_net(config: Config) -> nn.Module:
    """The ε-network of ``config.model`` for examples of shape ``config.data.shape``."""
    m, shape = config.model, tuple(config.data.shape)
    if m.kind == "mlp":
        return MLP(shape, hidden=m.hidden, depth=m.depth, time_dim=m.time_dim, dropout=m.dropout,
                   num_classes=m.num_classes)
    if m.kind == "unet":
        return UNet(shape, channels=m.channels, channel_mult=tuple(m.channel_mult),
                    num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
                    dropout=m.dropout, num_heads=m.num_heads, norm_groups=m.norm_groups, num_classes=m.num_classes)
    raise ValueError(f"model.kind={m.kind!r}: expected mlp or unet")


def build_model(config: Config, data=None) -> ScoreModel:
    """``ScoreModel(build_net(config), build_sde(config))`` in float32 on the CPU.

    ``model.base = lattice``: a :class:`~scoresde.core.lattice.LatticeResidualModel` whose base holds
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


# Sizes against memory ---------------------------------------------------------------------
# Lower bounds of the bytes each size needs, checked from the config before anything is built,
# so that a size that cannot be allocated is one clear error instead of a crash mid-run.

def config_parameter_count(config: Config) -> int:
    """Parameters of the network ``config`` describes, counted on the ``meta`` device (no memory)."""
    with torch.device("meta"):
        net = build_net(config)
    return sum(p.numel() for p in net.parameters())


def check_sizes(config: Config, available: int | None = None) -> None:
    """Refuse a config whose tensors could not be allocated (lower bounds, from the config alone):
    the network for training (weights, gradients, EMA and two AdamW moments: 20 bytes per float32
    parameter), the ddpm schedule's tables (3 float64 arrays of ``sde.n_steps``), generated toy
    data (``data.n`` float32 points), the final samples (``x_T`` and ``x``: 2 float32 copies of
    ``sample.n`` examples) and the sampler's time grid (``sample.steps`` + 1 float64)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    dim = math.prod(config.data.shape)
    s = config.sde
    if s.schedule == "ddpm":
        check_memory("sde.n_steps", s.n_steps, 24.0 * s.n_steps, "the ddpm schedule's tables", available)
    if len(config.data.shape) == 1 and config.data.n is not None:
        check_memory("data.n", config.data.n, 4.0 * dim * config.data.n, "the generated training data", available)
    check_memory("sample.n", config.sample.n, 8.0 * dim * config.sample.n, "the final samples", available)
    check_memory("sample.steps", config.sample.steps, 8.0 * (config.sample.steps + 1), "the sampler's time grid",
                 available)
    m = config.model  # a lower bound before building: every block holds a width x width weight
    if m.kind == "mlp":
        key, value = ("model.hidden", m.hidden) if m.hidden >= m.depth else ("model.depth", m.depth)
        check_memory(key, value, 20.0 * m.depth * m.hidden ** 2, f"{m.depth} residual blocks of width {m.hidden}",
                     available)
    else:
        blocks = m.num_res_blocks * len(m.channel_mult)
        key, value = ("model.channels", m.channels) if m.channels >= blocks else ("model.num_res_blocks",
                                                                                m.num_res_blocks)
        check_memory(key, value, 20.0 * 9 * blocks * m.channels ** 2, f"{blocks} residual blocks of "
                     f"{m.channels} channels", available)
    n = config_parameter_count(config)
    keys = ("hidden", "depth", "time_dim") if m.kind == "mlp" else ("channels", "channel_mult", "num_res_blocks")
    sizes = ", ".join(f"model.{k}={getattr(m, k)}" for k in keys)
    check_memory(sizes, None, 20.0 * n, f"training a network of {n:,} parameters", available)
    e = config.eval
    if e.vlb:
        check_memory("eval.vlb_steps", e.vlb_steps, 16.0 * (e.vlb_steps + 1), "the VLB grid (float64)", available)
    if e.bpd:
        check_memory("eval.bpd_probes", e.bpd_probes, 4.0 * e.bpd_probes * dim, "one example's Hutchinson probes",
                     available)
