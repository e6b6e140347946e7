"""Noise schedules of the VP-SDE, each given by its integrated rate ``B(t)``.

A schedule is a choice of ``B(t) = ∫₀ᵗ β(s) ds`` on ``t ∈ [0, 1]`` (see
docs/math.md, "The VP-SDE"); everything else (``ᾱ``, ``α``, ``σ``, drift, diffusion)
is derived from it by :class:`scoresde.sde.VPSDE`.

All methods take a float64 tensor ``t`` (any shape, already validated to lie in
``[0, 1]``) and return float64 tensors of the same shape.
"""

from __future__ import annotations

import math

import torch

from .checks import check_int

__all__ = ["Schedule", "LinearSchedule", "CosineSchedule", "DiscreteSchedule"]


class Schedule:
    """Base class: a schedule provides ``integrated_beta(t)`` and ``beta(t)``.

    ``sampling_eps`` is the natural time at which samplers stop (docs/math.md, "Time").
    """

    sampling_eps: float = 1e-3

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def beta(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def integrated_beta_between(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``B(t) - B(s)``; subclasses override it where a direct form is more accurate."""
        return self.integrated_beta(t) - self.integrated_beta(s)


class LinearSchedule(Schedule):
    """Song et al. 2021 (eq. 11 with the VP choice): ``β(t) = β_min + t (β_max - β_min)``.

    ``B(t) = β_min t + ½ t² (β_max - β_min)``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (math.isfinite(beta_min) and beta_min > 0):
            raise ValueError(f"beta_min={beta_min!r}: expected a finite number > 0")
        if not (math.isfinite(beta_max) and beta_max > beta_min):
            raise ValueError(
                f"beta_max={beta_max!r}: expected a finite number > beta_min={beta_min!r}"
            )
        self.beta_min, self.beta_max = beta_min, beta_max

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def integrated_beta(self, t):
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def integrated_beta_between(self, s, t):
        # (t - s) (β_min + ½ (t + s)(β_max - β_min)): no cancellation for t ≈ s.
        return (t - s) * (self.beta_min + 0.5 * (t + s) * (self.beta_max - self.beta_min))

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)


class CosineSchedule(Schedule):
    """Nichol & Dhariwal 2021 (eq. 17): ``ᾱ(t) = f(t)/f(0)``, ``f(t) = cos²((t+s)/(1+s)·π/2)``.

    So ``B(t) = 2 log cos(s/(1+s)·π/2) - 2 log cos((t+s)/(1+s)·π/2)`` and
    ``β(t) = π/(1+s) · tan((t+s)/(1+s)·π/2)``, which diverges at ``t = 1``.

    **Clip.** ``β(t)`` is clipped at ``beta_max`` (default 1000): past the time
    ``t_c`` where the cosine rate reaches ``beta_max`` the rate stays constant, so
    ``B`` grows linearly and ``ᾱ(1) = ᾱ(t_c)·exp(-beta_max (1 - t_c)) > 0``. With the
    default, ``t_c ≈ 0.998`` and ``ᾱ(1) ≈ 1.3e-6`` (``α(1) ≈ 1.1e-3``, the same order
    as the linear VP-SDE's ``6.6e-3``): the prior ``N(0, I)`` stays well defined and
    matches ``p_1`` closely. This plays the role of the discrete form's ``β_i ≤ 0.999``.
    """

    def __init__(self, s: float = 0.008, beta_max: float = 1000.0):
        s, beta_max = float(s), float(beta_max)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"s={s!r}: expected a finite offset > 0")
        beta_0 = math.pi / (1 + s) * math.tan(s / (1 + s) * math.pi / 2)
        if not (math.isfinite(beta_max) and beta_max > beta_0):
            raise ValueError(f"beta_max={beta_max!r}: expected a finite number > β(0)={beta_0:.4g}")
        self.s, self.beta_max = s, beta_max
        # t_c solves π/(1+s)·tan((t+s)/(1+s)·π/2) = beta_max.
        self.t_clip = min(1.0, math.atan(beta_max * (1 + s) / math.pi) * 2 / math.pi * (1 + s) - s)
        self._tan0 = math.tan(s / (1 + s) * math.pi / 2)

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s}, beta_max={self.beta_max})"

    def _phase(self, t):
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def _b_unclipped(self, t):
        # cos(φ0 + δ)/cos(φ0) = 1 - 2 sin²(δ/2) - tan(φ0) sin(δ), δ = t/(1+s)·π/2: log1p keeps
        # every digit for tiny t (a difference of two logs would not) and B(0) = 0 exactly.
        delta = t / (1 + self.s) * (math.pi / 2)
        return -2.0 * torch.log1p(-2.0 * torch.sin(delta / 2) ** 2 - self._tan0 * torch.sin(delta))

    def integrated_beta(self, t):
        tc = torch.as_tensor(self.t_clip, dtype=t.dtype, device=t.device)
        inner = self._b_unclipped(torch.minimum(t, tc))
        return inner + self.beta_max * torch.clamp(t - tc, min=0.0)

    def beta(self, t):
        raw = math.pi / (1 + self.s) * torch.tan(self._phase(torch.clamp(t, max=self.t_clip)))
        return torch.where(t >= self.t_clip, torch.full_like(t, self.beta_max), raw)


class DiscreteSchedule(Schedule):
    """DDPM's ``β_1..β_N`` as an exact, piecewise-constant VP-SDE rate.

    ``β(t) = -N log(1 - β_i)`` for ``t ∈ ((i-1)/N, i/N]``, so ``B(i/N) = -Σ_{j≤i} log(1-β_j)``,
    ``ᾱ(i/N) = Π_{j≤i}(1-β_j)`` and the SDE's transition from ``t_{i-1}`` to ``t_i`` is DDPM's
    forward step ``N(√(1-β_i) x, β_i I)`` exactly (docs/math.md, "DDPM as a VP-SDE"). ``B`` is piecewise linear.
    The natural sampling end point is the first grid point ``t_1 = 1/N``.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu").detach().reshape(-1)
        if betas.numel() < 1:
            raise ValueError("betas: expected at least one value, got an empty sequence")
        bad = ~((betas > 0) & (betas < 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"betas[{i}]={float(betas[i])!r}: expected every β_i in (0, 1)")
        self.betas = betas
        self.N = int(betas.numel())
        self.rates = -torch.log1p(-betas)  # B(i/N) - B((i-1)/N), per step
        self.grid_B = torch.cat([betas.new_zeros(1), torch.cumsum(self.rates, 0)])
        self.sampling_eps = 1.0 / self.N
        self._cache: dict = {}

    @classmethod
    def ddpm_linear(cls, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """Ho et al. 2020: ``β_i`` linear from ``beta_start`` to ``beta_end`` (defaults 1e-4, 0.02, N=1000)."""
        n_steps = _check_n(n_steps)
        return cls(torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64, device="cpu"))

    @classmethod
    def ddpm_cosine(cls, n_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Nichol & Dhariwal 2021: ``β_i = 1 - ᾱ_i/ᾱ_{i-1}`` from the cosine ``ᾱ``, clipped at ``max_beta``."""
        n_steps = _check_n(n_steps)
        t = torch.arange(n_steps + 1, dtype=torch.float64, device="cpu") / n_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
        return cls(betas)

    def __repr__(self) -> str:
        return f"DiscreteSchedule(N={self.N})"

    def _tables(self, device):
        key = str(device)
        if key not in self._cache:
            self._cache[key] = (self.grid_B.to(device), self.rates.to(device))
        return self._cache[key]

    def integrated_beta(self, t):
        grid_B, rates = self._tables(t.device)
        u = t * self.N
        k = torch.clamp(torch.floor(u), 0, self.N - 1).long()
        return grid_B[k] + (u - k) * rates[k]

    def beta(self, t):
        _, rates = self._tables(t.device)
        k = torch.clamp(torch.ceil(t * self.N) - 1, 0, self.N - 1).long()
        return self.N * rates[k]


def _check_n(n_steps) -> int:
    return check_int("n_steps", n_steps)
