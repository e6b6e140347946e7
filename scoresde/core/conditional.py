"""Class-conditional models and classifier-free guidance (Ho & Salimans 2022).

**The conditional contract.** A class-conditional model has ``.sde``, an integer
``.num_classes = K ≥ 1`` and ``.eps(x, t, y)``, where ``y`` is ``None`` (the unconditional,
"null" label, for the whole batch) or an int64 tensor of shape ``(B,)`` with entries in
``0..K``: ``0..K-1`` are the classes and ``K`` is the null label, so one batch can mix
conditional and unconditional rows. A trained :class:`~scoresde.core.model.ScoreModel` whose
network has a label embedding, the :class:`~scoresde.core.analytic.GaussianMixture` oracle
(components as classes) and a diffusers class-conditional U-Net all satisfy it.

**Conditioning is a transformation.** Library code (the seven samplers, ``encode``,
``log_likelihood``, ``bits_per_dim``, the DDPM bound) calls models only as ``eps(x, t)``.
:func:`condition` turns a conditional model and a label into such a plain model::

    guided = condition(model, y, guidance=w)
    eps(x, t) = (1 + w)·ε(x, t, y) − w·ε(x, t, ∅)

``w = 0`` is the conditional model ``p(x | y)`` itself: one network call on the batch as it is.
For ``w > 0`` the conditional and the unconditional term are **one** network call on the
doubled batch ``[x; x]`` with labels ``[y; ∅]``: NFE counts network calls on a batch, so a
guided step costs 1 NFE, like an unguided one (on twice the rows). ``y = None`` gives the
unconditional model ``p(x)`` through the null label (one call; ``w`` has no effect there).
"""

from __future__ import annotations

import numbers

import torch

from scoresde.core.model import EpsModel, batch_time, check_labels
from scoresde.util.checks import check_number

__all__ = ["Conditioned", "condition", "check_labels", "num_classes_of"]


def num_classes_of(model) -> int:
    """``model.num_classes`` (0 when the model has none: an unconditional model)."""
    k = getattr(model, "num_classes", 0)
    return int(k) if isinstance(k, numbers.Integral) and not isinstance(k, bool) else 0


def _batch_labels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Labels ``()`` or ``(B,)`` as ``(B,)`` on ``x``'s device."""
    y = y.to(x.device)
    if y.ndim == 0:
        return y.expand(x.shape[0])
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels but x has batch size {x.shape[0]}")
    return y


class Conditioned(EpsModel):
    """A conditional model with its label and guidance weight fixed: a plain ``.sde`` +
    ``.eps(x, t)`` model (made by :func:`condition`; see the module docstring)."""

    def __init__(self, model, y: torch.Tensor | None, guidance: float):
        self.model, self.y, self.guidance = model, y, guidance
        self.sde = model.sde
        self.num_classes = num_classes_of(model)

    def __repr__(self) -> str:
        y = "∅" if self.y is None else (int(self.y) if self.y.ndim == 0 else f"({self.y.numel()} labels)")
        return f"Conditioned({type(self.model).__name__}, y={y}, guidance={self.guidance:g})"

    def parameters(self):
        """The conditional model's parameters (none for an oracle): where it runs, for
        :func:`scoresde.core.model.model_device`."""
        params = getattr(self.model, "parameters", None)
        return params() if callable(params) else iter(())

    def buffers(self):
        buffers = getattr(self.model, "buffers", None)
        return buffers() if callable(buffers) else iter(())

    @property
    def net(self):
        """The conditional model's network (for code that reads its ``data_shape``)."""
        return self.model.net

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        t = batch_time(t, x)
        if self.y is None:
            return self.model.eps(x, t, None)
        y = _batch_labels(self.y, x)
        if self.guidance == 0:
            return self.model.eps(x, t, y)
        null = torch.full_like(y, self.num_classes)
        both = self.model.eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # 1 NFE
        cond, uncond = both[: x.shape[0]], both[x.shape[0]:]
        acc = torch.promote_types(x.dtype, torch.float32)
        w = self.guidance
        return ((1 + w) * cond.to(acc) - w * uncond.to(acc)).to(cond.dtype)


def condition(model, y, *, guidance: float = 0.0) -> Conditioned:
    """``model`` (class-conditional: ``.num_classes ≥ 1``, ``.eps(x, t, y)``) with label ``y`` and
    classifier-free guidance weight ``w = guidance``, as a plain ``.sde`` + ``.eps(x, t)`` model:
    ``eps(x, t) = (1 + w)·ε(x, t, y) − w·ε(x, t, ∅)``.

    Args:
        model: a class-conditional model.
        y: a class (an int, broadcast over the batch), an integer tensor ``(B,)`` of classes in
            ``0..K-1`` (one per row of ``x``), or ``None``: the null label (the model of ``p(x)``).
        guidance: ``w ≥ 0``, finite; 0 is the conditional model ``p(x | y)``.

    The guided ε is one batched network call (see the module docstring for NFE).
    """
    k = num_classes_of(model)
    if k < 1 or not callable(getattr(model, "eps", None)) or not hasattr(model, "sde"):
        raise ValueError(f"model={type(model).__name__} (num_classes={getattr(model, 'num_classes', None)!r}): "
                         f"expected a class-conditional model with .sde, .num_classes ≥ 1 and .eps(x, t, y)")
    guidance = check_number("guidance", guidance, low=0, low_closed=True)  # finite, ≥ 0
    labels = None if y is None else check_labels(y, k)
    return Conditioned(model, labels, guidance)
