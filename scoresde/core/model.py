"""Score models: anything with ``.sde`` and ``.eps(x, t)``.

The ε-parameterisation (Ho et al. 2020) gives the score as
``s(x, t) = -ε(x, t) / σ(t)`` and Tweedie's denoiser as
``E[x_0 | x_t] = (x_t - σ(t) ε) / α(t)`` (docs/math.md, "Score and ε").
Both are derived here, once, by :func:`score_of` and :func:`x0_of` from ``model.eps`` and
``model.sde``; samplers, the likelihood and the VLB call only these functions and
:func:`eps_of`, never a model's own ``score``/``x0``, so any object with ``.sde`` and
``.eps(x, t)`` works: a trained network (:class:`ScoreModel`), the exact oracle
(:class:`scoresde.core.analytic.GaussianMixture`) or a user's own class.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from scoresde.core.sde import GaussianSDE, append_dims, as_time, remember_time

__all__ = ["EpsModel", "ScoreModel", "batch_time", "check_labels", "eps_of", "score_of", "x0_of", "model_device",
           "activation_bytes"]


def batch_time(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` (number, shape ``()`` or ``(B,)``) as a validated float64 tensor of shape ``(B,)`` on x's
    device; the result passes :func:`~scoresde.core.sde.as_time` unchecked while unmodified."""
    t = as_time(t, device=x.device)
    if t.ndim == 0:
        return remember_time(t.expand(x.shape[0]))
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but x has batch size {x.shape[0]}")
    return t


def check_labels(y, num_classes: int, *, name: str = "y", allow_null: bool = False) -> torch.Tensor:
    """``y`` (a Python int, a 0-d or ``(B,)`` integer tensor) as an int64 tensor of shape ``()`` or
    ``(B,)`` with entries in ``0..num_classes-1`` (``..num_classes`` with ``allow_null``: the null
    label). One ``ValueError``/``TypeError`` naming ``name``, the value and what was expected."""
    top = num_classes if allow_null else num_classes - 1
    expected = f"class labels in 0..{top}" + (f" ({num_classes} = the null label)" if allow_null else "")
    if isinstance(y, bool) or isinstance(y, torch.Tensor) and y.dtype == torch.bool:
        raise TypeError(f"{name}={y!r}: expected integer {expected}, not booleans")
    if isinstance(y, numbers.Integral):
        y = torch.tensor(int(y), dtype=torch.int64, device="cpu")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}={y!r}: expected an int or an integer tensor of {expected}")
    if y.dtype.is_floating_point or y.dtype.is_complex:
        raise TypeError(f"{name} has dtype {y.dtype}: expected an integer tensor (int64) of {expected}")
    if y.ndim > 1:
        raise ValueError(f"{name} has shape {tuple(y.shape)}: expected () or (B,) {expected}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > top):
        bad = y[(y < 0) | (y > top)].flatten()[0]
        raise ValueError(f"{name} holds {int(bad)}: expected {expected}")
    return y.to(torch.int64)


def eps_of(model, x: torch.Tensor, t) -> torch.Tensor:
    """``model.eps(x, t)`` with ``t`` as a float64 ``(B,)`` tensor, checked to have ``x``'s shape.

    ``ValueError`` when the model returns anything else (no silent broadcasting). With
    :func:`score_of` and :func:`x0_of` this is the gate of every library call of a model: ``t`` is
    converted here once (:func:`batch_time`) and passed on as it is.
    """
    return _eps(model, x, batch_time(t, x))


def _eps(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """:func:`eps_of` for a ``t`` already converted by :func:`batch_time`."""
    eps = model.eps(x, t)
    shape = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
    if shape != tuple(x.shape):
        raise ValueError(f"model.eps returned {shape}: expected a tensor of x's shape {tuple(x.shape)}")
    return eps


def _coef(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample float64 coefficient ``(B,)`` shaped against ``x`` in ``x``'s dtype, or
    float32 when that is a reduced precision (bf16/fp16): the schedule is never evaluated there."""
    return append_dims(c, x.ndim).to(torch.promote_types(x.dtype, torch.float32))


def score_of(model, x: torch.Tensor, t) -> torch.Tensor:
    """The score ``s(x, t) = -ε(x, t) / σ(t)`` (``σ`` in float64, applied in at least float32),
    in ``x``'s dtype."""
    t = batch_time(t, x)
    inv_sigma = _coef(1.0 / model.sde.sigma(t), x)
    eps = _eps(model, x, t)
    return (-eps.to(inv_sigma.dtype) * inv_sigma).to(x.dtype)


def x0_of(model, x: torch.Tensor, t) -> torch.Tensor:
    """Tweedie's denoiser ``E[x_0 | x_t = x] = (x - σ(t) ε) / α(t)`` (coefficients in float64,
    applied in at least float32), in ``x``'s dtype."""
    t = batch_time(t, x)
    alpha, sigma = model.sde.alpha(t), model.sde.sigma(t)
    inv_alpha, ratio = _coef(1.0 / alpha, x), _coef(sigma / alpha, x)
    eps = _eps(model, x, t)
    return (x.to(ratio.dtype) * inv_alpha - ratio * eps.to(ratio.dtype)).to(x.dtype)


class EpsModel:
    """The score-model interface. Subclasses set ``self.sde`` and implement ``eps``."""

    sde: GaussianSDE

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:  # pragma: no cover - interface
        """Predicted noise ``ε(x, t)``; ``x`` of shape ``(B, *dims)``, ``t`` of shape ``()`` or ``(B,)``."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """``s(x, t) = -ε(x, t) / σ(t)``: :func:`score_of`."""
        return score_of(self, x, t)

    def x0(self, x: torch.Tensor, t) -> torch.Tensor:
        """Tweedie's denoiser ``E[x_0 | x_t = x] = (x - σ(t) ε) / α(t)``: :func:`x0_of`."""
        return x0_of(self, x, t)


class ScoreModel(nn.Module, EpsModel):
    """An ε-network ``net(x, t)`` (continuous ``t ∈ [0, 1]``, shape ``(B,)``) joined to an SDE.

    The network never sees the schedule. ``t`` reaches it in at least float32, never in a
    reduced-precision dtype, even when ``x`` is bf16 (bf16 cannot tell ``t = 0.9984`` from 1). ``x`` is cast
    to the network's parameter dtype and the output back to ``x``'s dtype, so a float64
    sampler or likelihood solve can drive a float32 network.

    Conditioning per SDE (docs/sdes.md): the network sees ``t`` itself for every SDE (for the
    VE-SDE ``t`` is an affine function of ``log σ``, the conditioning of NCSN++), and ``x_t``
    times ``sde.network_input_scale(t)``: nothing for VP (``α² + σ² = 1``), ``1/√(α² + σ²)``
    for sub-VP and VE, so the input stays at unit scale although VE's ``σ`` reaches ``σ_max``.
    """

    def __init__(self, net: nn.Module, sde: GaussianSDE):
        super().__init__()
        self.net = net
        self.sde = sde

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional network (``net.num_classes``); 0: unconditional."""
        k = getattr(self.net, "num_classes", 0)
        return int(k) if isinstance(k, int) and not isinstance(k, bool) else 0

    def eps(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        """``ε(x, t)``; for a class-conditional network ``ε(x, t, y)`` with ``y`` ``None`` (the null
        label) or ``(B,)`` int64 labels in ``0..num_classes`` (``num_classes``: the null label;
        :mod:`scoresde.core.conditional`)."""
        t = batch_time(t, x)
        k = self.num_classes
        if y is not None and k == 0:
            raise ValueError("y: this model is unconditional (num_classes=0): expected y=None")
        param = next(self.net.parameters(), None)
        net_dtype = x.dtype if param is None else param.dtype
        t_dtype = torch.promote_types(net_dtype, torch.float32)
        out_dtype = x.dtype
        scale = getattr(self.sde, "network_input_scale", None)
        scale = None if scale is None else scale(t)
        if scale is not None:
            x = x * append_dims(scale, x.ndim).to(device=x.device, dtype=x.dtype)
        if k == 0:
            return self.net(x.to(net_dtype), t.to(t_dtype)).to(out_dtype)
        if y is not None:
            y = check_labels(y, k, allow_null=True).to(x.device)
            y = y.expand(x.shape[0]) if y.ndim == 0 else y
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"y has {y.shape[0]} labels but x has batch size {x.shape[0]}")
        return self.net(x.to(net_dtype), t.to(t_dtype), y).to(out_dtype)

    def forward(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        return self.eps(x, t, y) if y is not None else self.eps(x, t)


def model_device(model) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model without tensors."""
    for name in ("parameters", "buffers"):
        tensors = getattr(model, name, None)
        if callable(tensors):
            first = next(iter(tensors()), None)
            if first is not None:
                return first.device
    return torch.device("cpu")


def activation_bytes(model, device, *, grad: bool = False) -> float:
    """Bytes one example's network activations take, measured on a probe batch of 2 at ``t = ½``
    (``model.net.data_shape``; a class-conditional model with the null label): the outputs of every
    submodule (an upper bound of what is alive at once) or, with ``grad``, also what autograd saves
    for the backward pass (the likelihood's divergence). What memory checks count per example."""
    total = [0]

    def count(tensor) -> torch.Tensor:
        if isinstance(tensor, torch.Tensor):
            total[0] += tensor.numel() * tensor.element_size()
        return tensor

    def hook(module, inputs, output) -> None:
        for o in output if isinstance(output, (tuple, list)) else (output,):
            count(o)
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    handles = [m.register_forward_hook(hook) for m in modules]
    x = torch.zeros((2, *model.net.data_shape), device=device, requires_grad=grad)
    t = torch.full((2,), 0.5, dtype=torch.float64, device=device)
    try:
        if grad:
            with torch.autograd.graph.saved_tensors_hooks(count, lambda packed: packed):
                eps_of(model, x, t)
        else:
            with torch.no_grad():
                eps_of(model, x, t)
    finally:
        for h in handles:
            h.remove()
    return total[0] / 2
