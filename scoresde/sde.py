"""The variance-preserving SDE ``dx = -½ β(t) x dt + √β(t) dw`` (Song et al. 2021, eq. 11).

Everything derives from the schedule's integrated rate ``B(t) = ∫₀ᵗ β``:
``ᾱ = exp(-B)``, ``α = exp(-B/2)``, ``σ = √(-expm1(-B))`` and
``q(x_t | x_0) = N(α(t) x_0, σ(t)² I)`` (docs/math.md).

Conventions (docs/architecture.md, "Contracts"):
- ``t`` is a Python number or a tensor of shape ``()`` or ``(B,)`` with values in ``[0, 1]``.
- Coefficient methods (``alpha``, ``sigma``, ...) return float64 tensors of ``t``'s shape.
- Methods on data ``x`` of shape ``(B, *dims)`` broadcast coefficients with
  :func:`append_dims` and return ``x``'s dtype.

Samplers and the likelihood use only the generic interface (``alpha``, ``sigma``,
``drift``, ``diffusion``, ``prior_sample``, ``prior_log_prob``, ``sampling_eps``), so a
VE or sub-VP SDE with the same methods can be dropped in without touching them.
"""

from __future__ import annotations

import math

import torch

from .rng import draw_device, randn
from .schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, Schedule

__all__ = ["VPSDE", "append_dims", "as_time"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``v`` (shape ``()`` or ``(B,)``) until it has ``ndim`` dims."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} to {ndim} dims")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def as_time(t, *, device=None) -> torch.Tensor:
    """``t`` as a float64 tensor; ``ValueError`` unless finite, in ``[0, 1]``, of shape ``()`` or ``(B,)``."""
    if isinstance(t, torch.Tensor):
        t = t.to(dtype=torch.float64, device=device if device is not None else t.device)
    else:
        t = torch.as_tensor(t, dtype=torch.float64, device=device if device is not None else "cpu")
    if t.ndim > 1:
        raise ValueError(f"t has shape {tuple(t.shape)}: expected shape () or (B,)")
    if t.ndim == 0:  # one scalar check instead of four tensor ops (samplers call this per step)
        v = t.item()
        if not 0 <= v <= 1:
            raise ValueError(f"t={v!r}: expected times in [0, 1]")
        return t
    bad = ~((t >= 0) & (t <= 1))
    if bad.any():
        raise ValueError(f"t={t[bad].flatten()[0].item()!r}: expected times in [0, 1]")
    return t


class VPSDE:
    """The VP-SDE driven by a :class:`~scoresde.schedules.Schedule`.

    Example::

        sde = VPSDE(LinearSchedule())           # Song et al. 2021
        sde = VPSDE(DiscreteSchedule.ddpm_linear())  # DDPM, exactly
    """

    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule={schedule!r}: expected a scoresde.schedules.Schedule")
        self.schedule = schedule

    # Convenience constructors -------------------------------------------------------
    @classmethod
    def linear(cls, beta_min: float = 0.1, beta_max: float = 20.0) -> VPSDE:
        return cls(LinearSchedule(beta_min, beta_max))

    @classmethod
    def cosine(cls, s: float = 0.008, beta_max: float = 1000.0) -> VPSDE:
        return cls(CosineSchedule(s, beta_max))

    @classmethod
    def ddpm(cls, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> VPSDE:
        return cls(DiscreteSchedule.ddpm_linear(n_steps, beta_start, beta_end))

    def __repr__(self) -> str:
        return f"VPSDE({self.schedule!r})"

    @property
    def sampling_eps(self) -> float:
        """Default end time of samplers: ``1e-3`` (continuous) or ``1/N`` (discrete)."""
        return self.schedule.sampling_eps

    @property
    def discrete_steps(self) -> int | None:
        """``N`` for a discrete (DDPM) schedule, whose natural times are ``i/N``; else ``None``."""
        return self.schedule.N if isinstance(self.schedule, DiscreteSchedule) else None

    # Coefficients (float64, shape of t) ----------------------------------------------
    def integrated_beta(self, t) -> torch.Tensor:
        """``B(t) = ∫₀ᵗ β(s) ds``."""
        return self.schedule.integrated_beta(as_time(t))

    def beta(self, t) -> torch.Tensor:
        """``β(t)``."""
        return self.schedule.beta(as_time(t))

    def log_alpha_bar(self, t) -> torch.Tensor:
        """``log ᾱ(t) = -B(t)``."""
        return -self.integrated_beta(t)

    def alpha_bar(self, t) -> torch.Tensor:
        """``ᾱ(t) = exp(-B(t))``."""
        return torch.exp(-self.integrated_beta(t))

    def alpha(self, t) -> torch.Tensor:
        """Mean coefficient ``α(t) = exp(-B(t)/2)`` of ``q(x_t | x_0)``."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def sigma(self, t) -> torch.Tensor:
        """Standard deviation ``σ(t) = √(1 - ᾱ(t)) = √(-expm1(-B(t)))`` of ``q(x_t | x_0)``."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def log_snr(self, t) -> torch.Tensor:
        """``λ(t) = log(α²/σ²) = -B - log(-expm1(-B))``."""
        b = self.integrated_beta(t)
        return -b - torch.log(-torch.expm1(-b))

    def time_for_integrated_beta(self, b, *, lo: float = 0.0, hi: float = 1.0, t0=None) -> torch.Tensor:
        """The ``t ∈ [lo, hi]`` with ``B(t) = b`` (float64, ``b``'s shape): Newton steps
        ``t -= (B(t) - b)/β(t)`` from ``t0`` (default the midpoint), falling back to bisection of
        the bracket whenever a step would leave it; ~10 steps to relative accuracy ~1e-15."""
        b = torch.as_tensor(b, dtype=torch.float64, device=b.device if isinstance(b, torch.Tensor) else "cpu")
        lo_t, hi_t = torch.full_like(b, lo), torch.full_like(b, hi)
        t = 0.5 * (lo_t + hi_t) if t0 is None else torch.full_like(b, t0).clamp(lo, hi)
        for _ in range(100):
            f = self.schedule.integrated_beta(t) - b
            lo_t, hi_t = torch.where(f < 0, t, lo_t), torch.where(f < 0, hi_t, t)
            newton = t - f / self.schedule.beta(t)
            t_new = torch.where((newton >= lo_t) & (newton <= hi_t), newton, 0.5 * (lo_t + hi_t))
            done = (t_new - t).abs() <= 4 * torch.finfo(torch.float64).eps * t
            t = t_new
            if done.all():
                break
        return t

    def time_for_log_snr(self, lam, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """The ``t ∈ [lo, hi]`` with ``λ(t) = lam`` (float64, ``lam``'s shape): ``λ = -B - log(1 - e^{-B})``
        inverts to ``B = log(1 + e^{-λ})``, then :meth:`time_for_integrated_beta`."""
        lam = torch.as_tensor(lam, dtype=torch.float64, device=lam.device if isinstance(lam, torch.Tensor) else "cpu")
        return self.time_for_integrated_beta(torch.logaddexp(-lam, torch.zeros_like(lam)), lo=lo, hi=hi)

    def diffusion(self, t) -> torch.Tensor:
        """``g(t) = √β(t)``."""
        return torch.sqrt(self.beta(t))

    def transition(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_t | x_s) = N(m x_s, v I)`` for ``s ≤ t``; returns ``(m, v)``.

        ``m = α(t)/α(s) = exp(-ΔB/2)``, ``v = 1 - ᾱ(t)/ᾱ(s) = -expm1(-ΔB)``, ``ΔB = B(t) - B(s)``.
        """
        s, t = as_time(s), as_time(t)
        if (s > t).any():
            raise ValueError("transition(s, t): expected s ≤ t")
        db = self.schedule.integrated_beta_between(s, t)
        return torch.exp(-0.5 * db), -torch.expm1(-db)

    # On data x of shape (B, *dims) ------------------------------------------------------
    def _coef(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if c.ndim == 1 and c.shape[0] != x.shape[0]:
            raise ValueError(f"t has {c.shape[0]} entries but x has batch size {x.shape[0]}")
        return append_dims(c, x.ndim).to(device=x.device, dtype=x.dtype)

    def marginal_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t = α(t) x_0 + σ(t) ε``, ``ε ~ N(0, I)``; returns ``(x_t, ε)``. ``ε`` is drawn on the
        generator's device (CPU or ``x0``'s) and moved to ``x0``'s (:mod:`scoresde.rng`)."""
        if noise is None:
            noise = randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}: expected {tuple(x0.shape)}")
        t = as_time(t, device=x0.device)
        return self._coef(self.alpha(t), x0) * x0 + self._coef(self.sigma(t), x0) * noise, noise

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``f(x, t) = -½ β(t) x``."""
        return -0.5 * self._coef(self.beta(as_time(t, device=x.device)), x) * x

    def reverse_drift(self, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
        """Reverse-SDE drift ``f - g² s`` (Song et al. 2021, eq. 6), to be integrated backwards in t."""
        g2 = self._coef(self.beta(as_time(t, device=x.device)), x)
        return self.drift(x, t) - g2 * score

    def probability_flow_drift(self, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE drift ``f - ½ g² s`` (Song et al. 2021, eq. 13)."""
        g2 = self._coef(self.beta(as_time(t, device=x.device)), x)
        return self.drift(x, t) - 0.5 * g2 * score

    # Prior ---------------------------------------------------------------------------
    def prior_sample(self, shape, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """A sample of the prior ``p_1 ≈ N(0, I)`` of the given shape ``(B, *dims)`` on ``device``
        (default: the generator's device, else the CPU), drawn on the generator's device."""
        device = draw_device(generator, "cpu") if device is None else device
        return randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)`` summed over all but the batch dim; float64, shape ``(B,)``."""
        z = z.to(torch.float64).flatten(1)
        return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
