"""The DDPM U-Net (Ho et al. 2020, App. B; the DDPM++ backbone of Song et al. 2021, App. H).

A PixelCNN++-style U-Net: residual blocks (GroupNorm, SiLU, 3×3 convs, an additive
projection of the time embedding, dropout), self-attention at chosen resolutions,
strided-conv downsampling and nearest-neighbour + conv upsampling, and skip connections
from every block of the down path to the up path. With ``channels=128``,
``channel_mult=(1, 2, 2, 2)``, two blocks per level and attention at 16×16 it is
DDPM's CIFAR-10 network: 35.7 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from scoresde.nets.embeddings import LabelEmbedding, TimeEmbedding
from scoresde.util.checks import check_int, check_number, check_shape

__all__ = ["UNet", "group_norm", "count_parameters"]


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm of ``groups`` groups; by default the most groups ≤ 32 that divide ``channels``
    and keep ≥ 4 channels per group (DDPM: 32 groups; 128 → 32, 96 → 24, 32 → 8)."""
    if groups is None:
        groups = max(1, min(32, channels // 4))
        while channels % groups:
            groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + conv(drop(SiLU(GN(conv(SiLU(GN(x))) + W temb))))``, 1×1 shortcut when channels change."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, norm=group_norm):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2, self.drop = norm(c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        h = h + self.temb(F.silu(temb))[..., None, None]  # (B, c_out, 1, 1) broadcast over H, W
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the ``H·W`` positions, residual, output projection zeroed."""

    def __init__(self, channels: int, num_heads: int, norm=group_norm):
        super().__init__()
        self.heads = num_heads
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hh * ww)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, c/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, c/heads)
        h = h.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε-network ``(x (B, C, H, W), t (B,) in [0, 1]) -> (B, C, H, W)``.

    Args:
        data_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**(len(channel_mult) - 1)``.
        channels: base width; level ``i`` has ``channels·channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution level.
        num_res_blocks: residual blocks per level on the way down (``+1`` on the way up).
        attn_resolutions: feature-map sizes (``min(H, W)`` at that level) with self-attention;
            the middle block (lowest resolution) always has one, as in DDPM.
        dropout: dropout rate in the residual blocks.
        num_heads: attention heads; must divide every attended width.
        time_embedding: ``"sinusoidal"`` (of ``1000·t``) or ``"fourier"``.
        norm_groups: groups of every GroupNorm (must divide every normalized width: with one
            count the network is a diffusers ``UNet2DModel``); ``None``: :func:`group_norm`'s rule.
        num_classes: ``K ≥ 1``: class-conditional, ``forward(x, t, y)`` with labels ``y`` (B,) in
            ``0..K`` (``K``: the learned null label; ``None``: null for all) embedded and added to
            the time embedding after its MLP (as diffusers' ``num_class_embeds``). 0 (default):
            unconditional, no label module at all.
    """

    def __init__(self, data_shape: tuple, *, channels: int = 128, channel_mult=(1, 2, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions=(16,), dropout: float = 0.1,
                 num_heads: int = 1, time_embedding: str = "sinusoidal", num_classes: int = 0,
                 norm_groups: int | None = None):
        super().__init__()
        self.data_shape = check_shape("data_shape", data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"data_shape={data_shape!r}: expected (C, H, W)")
        c_img, height, width = self.data_shape
        mult = tuple(int(m) for m in channel_mult)
        if not mult or any(m < 1 for m in mult):
            raise ValueError(f"channel_mult={channel_mult!r}: expected positive integers")
        factor = 2 ** (len(mult) - 1)
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width}: expected H and W divisible by "
                             f"2**(len(channel_mult)-1) = {factor}")
        for name, v, lo in (("channels", channels, 1), ("num_res_blocks", num_res_blocks, 1),
                            ("num_heads", num_heads, 1)):
            check_int(name, v, lo)
        check_number("dropout", dropout, low=0, high=1, low_closed=True)
        if norm_groups is not None:
            check_int("norm_groups", norm_groups, 1)

        def norm(width: int) -> nn.GroupNorm:
            if norm_groups is not None and width % norm_groups:
                raise ValueError(f"norm_groups={norm_groups}: expected a divisor of every normalized width "
                                 f"(the level widths and their concatenations), not of {width}")
            return group_norm(width, norm_groups)
        attn_res = {int(r) for r in attn_resolutions}
        attended = [channels * m for i, m in enumerate(mult) if min(height, width) >> i in attn_res]
        for width_ in attended + [channels * mult[-1]]:  # + the middle block's attention
            if width_ % num_heads:
                raise ValueError(f"num_heads={num_heads}: expected a divisor of {width_}")

        temb_dim = 4 * channels  # DDPM: sinusoids of size `channels`, then an MLP to 4·channels
        self.time = TimeEmbedding(max(4, channels + channels % 2), temb_dim, kind=time_embedding)
        self.conv_in = nn.Conv2d(c_img, channels, 3, padding=1)

        # Down path: record the width of every tensor pushed on the skip stack.
        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, min(height, width)
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([ResBlock(ch, channels * m, temb_dim, dropout, norm)])
                ch = channels * m
                if res in attn_res:
                    layer.append(AttnBlock(ch, num_heads, norm))
                self.down.append(layer)
                skips.append(ch)
            if level < len(mult) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(ch, ch, temb_dim, dropout, norm), AttnBlock(ch, num_heads, norm),
                                  ResBlock(ch, ch, temb_dim, dropout, norm)])

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip.
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([ResBlock(ch + skips.pop(), channels * mult[level], temb_dim,
                                                dropout, norm)])
                ch = channels * mult[level]
                if res in attn_res:
                    layer.append(AttnBlock(ch, num_heads, norm))
                self.up.append(layer)
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
                res *= 2

        self.norm_out = norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, c_img, 3, padding=1))
        self.num_classes = check_int("num_classes", num_classes, 0)
        if self.num_classes:  # created last and zero-initialised: no draw from torch's RNG
            self.label = LabelEmbedding(self.num_classes, temb_dim)

    @staticmethod
    def _run(layer: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for module in layer:
            h = module(h, temb) if isinstance(module, ResBlock) else module(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected (B, *{self.data_shape})")
        temb = self.time(t)  # (B, 4·channels)
        if self.num_classes:
            temb = temb + self.label(y, x.shape[0], x.device).to(temb.dtype)
        elif y is not None:
            raise ValueError("y: this network is unconditional (num_classes=0): expected y=None")
        hs = [self.conv_in(x)]  # (B, channels, H, W)
        for layer in self.down:
            hs.append(self._run(layer, hs[-1], temb))
        h = self._run(self.mid, hs[-1], temb)  # (B, ch, H/f, W/f)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layer, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

