"""A pretrained diffusers DDPM as a ``scoresde`` model: the ε adapter, with no file I/O.

:class:`DiffusersModel` wraps a diffusers ``UNet2DModel`` and the exact discrete VP-SDE of its
scheduler's ``betas`` into a :class:`~scoresde.core.model.ScoreModel` with ``.sde`` and
``.eps(x, t)`` that every sampler, :func:`~scoresde.likelihood.ode.log_likelihood`,
:func:`~scoresde.likelihood.ode.bits_per_dim` and the DDPM bound accept. Conventions
(docs/interop.md):

- **Time.** diffusers' timestep index ``k ∈ {0..N-1}`` is the project's time ``t = (k+1)/N``:
  their ``ᾱ_k = Π_{j≤k}(1-β_j)`` is our ``ᾱ((k+1)/N)``. The network is called at the float
  timestep ``k = tN - 1``; times within ``1e-4`` steps of a grid time are called at that
  integer (so a sampler on DDPM's grid feeds exactly diffusers' integers, whatever rounding
  ``t`` went through); between grid times (adaptive ODE solvers) ``k`` is fractional. ``t``
  stays float64 until it becomes the float32 timestep (diffusers embeds it in float32).
- **Prediction types**, with ``x_t = α x_0 + σ ε``, ``α² + σ² = 1``, α and σ of the SDE at t:
  ``epsilon`` as is; ``v_prediction`` (``v = α ε - σ x_0``): ``ε = σ x_t + α v``;
  ``sample``: ``ε = (x_t - α x̂_0)/σ``. A learned-variance output (``out_channels = 2·in``)
  contributes its first half (the ε part).
- **Class labels.** A ``UNet2DModel`` with ``num_class_embeds`` (``class_embed_type`` ``None``, a
  learned table, or ``"timestep"``, labels through the time projection) is a class-conditional
  model: ``eps(x, t, y)`` calls it with ``class_labels=y``. Our null label (``y = num_classes``)
  is the table row the folder names as null (``scoresde_null_class`` in ``unet/config.json``, as
  :func:`~scoresde.interop.export.export_diffusers` writes); without one, ``num_classes =
  num_class_embeds`` and only ``w = 0`` with real classes works.
- **Data** live in ``[-1, 1]`` (diffusers' DDPM convention), of shape
  ``(in_channels, sample_size, sample_size)`` from the UNet config.

Reading folders and checking configs is :mod:`scoresde.interop.loader`'s job.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scoresde.core.model import ScoreModel, batch_time, check_labels
from scoresde.core.sde import VPSDE, append_dims

__all__ = ["DiffusersModel", "PREDICTION_TYPES", "GRID_SNAP"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
GRID_SNAP = 1e-4  # |tN - 1 - k| below this (in steps): the network is called at the integer k


class _UNetEps(nn.Module):
    """A diffusers ``UNet2DModel`` as an ε-network of the project's time ``t`` (float64, ``(B,)``)."""

    def __init__(self, unet: nn.Module, sde: VPSDE, prediction_type: str, learned_variance: bool,
                 num_classes: int = 0, null_class: int | None = None):
        super().__init__()
        self.unet = unet
        self.num_classes, self.null_class = num_classes, null_class
        self.sde, self.prediction_type, self.learned_variance = sde, prediction_type, learned_variance
        self.N = sde.discrete_steps
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.data_shape = (int(unet.config.in_channels), *map(int, size))

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """diffusers' timestep ``k = tN - 1`` (float32), snapped to the integer within ``GRID_SNAP``."""
        k = t.to(torch.float64) * self.N - 1.0
        near = torch.round(k)
        return torch.where((k - near).abs() <= GRID_SNAP, near, k).to(torch.float32)

    def class_labels(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        """Our labels (``0..K``, ``K`` = null; ``None``: null for all) as diffusers' ``class_labels``."""
        if not self.num_classes:
            return None
        k = self.num_classes
        if y is None:
            y = torch.full((batch,), k, dtype=torch.int64, device=device)
        null = y == k
        if self.null_class is None:
            if bool(null.any()):
                raise ValueError(f"y: this diffusers UNet2DModel has {k} class embeddings and no null label "
                                 f"(its folder does not name one): expected classes 0..{k - 1} and guidance 0")
            return y
        return torch.where(null, torch.full_like(y, self.null_class), y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.class_labels(y, x.shape[0], x.device)
        extra = {} if labels is None else {"class_labels": labels}  # an unconditional UNet is called as before
        out = self.unet(x, self.timestep(t), **extra).sample
        if self.learned_variance:
            out = out[:, : x.shape[1]]
        if self.prediction_type == "epsilon":
            return out
        dtype = torch.promote_types(out.dtype, torch.float32)  # conversions in ≥ float32
        alpha = append_dims(self.sde.alpha(t), x.ndim).to(x.device, dtype)
        sigma = append_dims(self.sde.sigma(t), x.ndim).to(x.device, dtype)
        xt, out = x.to(dtype), out.to(dtype)
        if self.prediction_type == "v_prediction":
            return sigma * xt + alpha * out
        return (xt - alpha * out) / sigma  # "sample": the network predicts x_0


class DiffusersModel(ScoreModel):
    """A diffusers ``UNet2DModel`` and scheduler as a score model on the scheduler's exact VP-SDE.

    Attributes: ``unet`` (the diffusers module), ``sde`` (``VPSDE(DiscreteSchedule(betas))``),
    ``prediction_type``, ``data_shape`` ``(C, H, W)``, ``source`` (folder or ``None``) and
    ``info`` (what was loaded, for printing). ``eps``, ``score`` and ``x0`` as every ScoreModel.
    ``default_sampling``: the sampler and step count ``python -m scoresde.sample`` uses for a
    diffusers folder (which has no ``sample.*`` config of its own): DPM-Solver++ with 19 steps,
    20 NFE.
    """

    default_sampling = ("dpmpp", 19)

    def __init__(self, unet: nn.Module, sde: VPSDE, prediction_type: str, *, learned_variance: bool = False,
                 source: Path | None = None, info: dict | None = None, num_classes: int = 0,
                 null_class: int | None = None):
        super().__init__(_UNetEps(unet, sde, prediction_type, learned_variance, num_classes, null_class), sde)
        self.prediction_type, self.source, self.info = prediction_type, source, dict(info or {})

    @property
    def unet(self) -> nn.Module:
        return self.net.unet

    @property
    def data_shape(self) -> tuple:
        return self.net.data_shape

    def eps(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        """``ε(x, t)``: ``t`` float64 until it becomes diffusers' float32 timestep; ``x`` is cast to
        the UNet's dtype and the result back to ``x``'s dtype. A class-conditional UNet
        (``num_classes ≥ 1``) takes labels ``y`` as every conditional model (docs/conditioning.md):
        ``None`` or ``(B,)`` in ``0..num_classes``, ``num_classes`` being the null label."""
        t = batch_time(t, x)
        if y is not None:
            if not self.num_classes:
                raise ValueError("y: this model is unconditional (num_classes=0): expected y=None")
            y = check_labels(y, self.num_classes, allow_null=True).to(x.device)
            y = y.expand(x.shape[0]) if y.ndim == 0 else y
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"y has {y.shape[0]} labels but x has batch size {x.shape[0]}")
        dtype = self.unet.dtype
        return self.net(x.to(dtype), t, y).to(x.dtype)

    def describe(self) -> str:
        """One line: what was loaded."""
        i = self.info
        return (f"diffusers {i.get('unet', 'UNet2DModel')} + {i.get('scheduler', 'scheduler')} "
                f"({i.get('beta_schedule', 'betas')}, N = {self.sde.discrete_steps}, {self.prediction_type}, "
                f"{'×'.join(map(str, self.data_shape))}, {self.unet.dtype})"
                + (f" from {self.source}" if self.source is not None else ""))
