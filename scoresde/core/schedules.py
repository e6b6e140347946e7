"""Noise schedules of the SDEs.

- VP and sub-VP: a choice of the integrated rate ``B(t) = ∫₀ᵗ β(s) ds`` on ``t ∈ [0, 1]``
  (:class:`Schedule`); everything else (``ᾱ``, ``α``, ``σ``, drift, diffusion) is derived
  from it by :class:`scoresde.core.sde.VPSDE` or :class:`scoresde.core.sde.SubVPSDE` (docs/sdes.md).
- VE: a choice of the noise variance ``σ(t)²`` (:class:`SigmaSchedule`), used by
  :class:`scoresde.core.sde.VESDE`: the continuous geometric ``σ(t) = σ_min (σ_max/σ_min)^t``
  (Song et al. 2021, eq. 30) or SMLD's discrete noise levels (Song & Ermon 2019).

All methods take a float64 tensor ``t`` (any shape, already validated to lie in
``[0, 1]``) and return float64 tensors of the same shape.
"""

from __future__ import annotations

import math

import torch

from scoresde.util.checks import check_int

__all__ = ["Schedule", "LinearSchedule", "CosineSchedule", "DiscreteSchedule", "SigmaSchedule",
           "GeometricSigmas", "DiscreteSigmas"]


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


class _Tabulated:
    """A cumulative quantity tabulated at ``t = i/N`` (``_cumulative``, ``N + 1`` values), linear
    in between with one rate per interval (``rates``, ``N`` values); tables cached per device."""

    def _tables(self, device):
        key = str(device)
        if key not in self._cache:
            self._cache[key] = (self._cumulative.to(device), self.rates.to(device))
        return self._cache[key]

    def _interpolate(self, t):
        """The cumulative quantity at ``t``: exact at ``i/N``, linear in between."""
        grid, rates = self._tables(t.device)
        u = t * self.N
        k = torch.clamp(torch.floor(u), 0, self.N - 1).long()
        return grid[k] + (u - k) * rates[k]

    def _rate(self, t):
        """Its derivative: ``N × rate`` of the interval ``((i-1)/N, i/N]`` holding ``t``."""
        _, rates = self._tables(t.device)
        k = torch.clamp(torch.ceil(t * self.N) - 1, 0, self.N - 1).long()
        return self.N * rates[k]


class DiscreteSchedule(_Tabulated, Schedule):
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
        self._cumulative = torch.cat([betas.new_zeros(1), torch.cumsum(self.rates, 0)])  # B(i/N)
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

    integrated_beta = _Tabulated._interpolate  # B(t), exact at i/N
    beta = _Tabulated._rate  # β(t) = N β'_i on ((i-1)/N, i/N]


class SigmaSchedule:
    """Base class of the VE noise schedules: ``σ(t)²`` increasing on ``[0, 1]``.

    Subclasses provide ``sigma2(t)``, its derivative ``dsigma2(t)`` (``= g(t)²`` of the VE-SDE),
    ``sigma2_between(s, t) = σ(t)² - σ(s)²`` without cancellation, ``log_sigma2(t)`` and the
    inverse ``time_for_sigma2(v)``. The *clock* (``clock``, ``clock_rate``, ``time_for_clock``)
    is the variable the probability-flow ODE is integrated in: one in which its right-hand
    side is continuous.
    """

    sampling_eps: float = 1e-5

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def dsigma2(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def log_sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(self.sigma2(t))

    def sigma2_between(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.sigma2(t) - self.sigma2(s)

    def time_for_sigma2(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class GeometricSigmas(SigmaSchedule):
    """``σ(t) = σ_min (σ_max/σ_min)^t`` (Song et al. 2021, eq. 30; NCSN++'s VE-SDE).

    ``log σ`` is linear in ``t``, so ``g(t)² = dσ²/dt = 2 log(σ_max/σ_min) σ(t)²`` and
    ``σ(t)² - σ(s)² = σ(s)² expm1(2 log(σ_max/σ_min) (t - s))``. Note ``σ(0) = σ_min > 0``:
    the SDE's state at ``t = 0`` is the data convolved with ``N(0, σ_min² I)``.
    The clock is ``t`` itself (every coefficient is smooth in it).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (math.isfinite(sigma_min) and sigma_min > 0):
            raise ValueError(f"sigma_min={sigma_min!r}: expected a finite number > 0")
        if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
            raise ValueError(f"sigma_max={sigma_max!r}: expected a finite number > sigma_min={sigma_min!r}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def __repr__(self) -> str:
        return f"GeometricSigmas(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def log_sigma2(self, t):
        return 2.0 * (math.log(self.sigma_min) + t * self.log_ratio)

    def sigma2(self, t):
        return torch.exp(self.log_sigma2(t))

    def dsigma2(self, t):
        return 2.0 * self.log_ratio * self.sigma2(t)

    def sigma2_between(self, s, t):
        return self.sigma2(s) * torch.expm1(2.0 * self.log_ratio * (t - s))

    def time_for_sigma2(self, v):
        return (0.5 * torch.log(v) - math.log(self.sigma_min)) / self.log_ratio

    def clock(self, t):
        return t

    def clock_rate(self, t):
        return torch.ones_like(t)

    def time_for_clock(self, u, **_):
        return torch.as_tensor(u, dtype=torch.float64, device=u.device if isinstance(u, torch.Tensor) else "cpu")


class DiscreteSigmas(_Tabulated, SigmaSchedule):
    """SMLD's noise levels ``σ_1 < … < σ_N`` (Song & Ermon 2019) as an exact VE-SDE.

    ``σ(t)²`` is piecewise linear with ``σ(i/N) = σ_i`` and ``σ(0) = σ_0 = 0``, so the VE-SDE's
    transition from ``t_{i-1}`` to ``t_i`` is SMLD's perturbation step
    ``x_i = x_{i-1} + √(σ_i² - σ_{i-1}²) z`` exactly and ``q(x_i | x_0) = N(x_0, σ_i² I)``: the
    VE counterpart of :class:`DiscreteSchedule`. ``g(t)² = N (σ_i² - σ_{i-1}²)`` is piecewise
    constant. The clock is ``σ²`` (piecewise linear in ``t``, inverted exactly).
    The natural sampling end point is the first level, ``t_1 = 1/N``.
    """

    def __init__(self, sigmas):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device="cpu").detach().reshape(-1)
        if sigmas.numel() < 1:
            raise ValueError("sigmas: expected at least one noise level, got an empty sequence")
        if not torch.isfinite(sigmas).all() or not (sigmas > 0).all() or not (sigmas.diff() > 0).all():
            raise ValueError(f"sigmas={sigmas.tolist()[:4]}...: expected finite, positive, increasing levels")
        self.sigmas = sigmas
        self.N = int(sigmas.numel())
        self.grid_s2 = torch.cat([sigmas.new_zeros(1), sigmas**2])  # σ_i², i = 0..N
        self.rates = self.grid_s2.diff()  # σ_i² - σ_{i-1}² per step
        self._cumulative = self.grid_s2
        self.sampling_eps = 1.0 / self.N
        self.sigma_min, self.sigma_max = float(sigmas[0]), float(sigmas[-1])
        self._cache: dict = {}

    @classmethod
    def smld(cls, n_steps: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0):
        """``N`` geometric levels from ``sigma_min`` to ``sigma_max`` (Song & Ermon 2019; score_sde's VE)."""
        n_steps = _check_n(n_steps)
        GeometricSigmas(sigma_min, sigma_max)  # the same checks of the end points
        if n_steps == 1:
            return cls([float(sigma_max)])
        return cls(torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), n_steps,
                                            dtype=torch.float64, device="cpu")))

    def __repr__(self) -> str:
        return f"DiscreteSigmas(N={self.N}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g})"

    sigma2 = _Tabulated._interpolate  # σ(t)², exact at i/N
    dsigma2 = _Tabulated._rate  # dσ²/dt on ((i-1)/N, i/N]

    def time_for_sigma2(self, v):
        grid, rates = self._tables(v.device)
        v = v.to(torch.float64)
        i = torch.searchsorted(grid, v.reshape(-1)).clamp(1, self.N).reshape(v.shape)  # σ²_{i-1} < v ≤ σ²_i
        frac = ((v - grid[i - 1]) / rates[i - 1]).clamp(0.0, 1.0)
        return (i - 1 + frac) / self.N

    def clock(self, t):
        return self.sigma2(t)

    def clock_rate(self, t):
        return self.dsigma2(t)

    def time_for_clock(self, u, **_):
        return self.time_for_sigma2(torch.as_tensor(
            u, dtype=torch.float64, device=u.device if isinstance(u, torch.Tensor) else "cpu"))



def _check_n(n_steps) -> int:
    return check_int("n_steps", n_steps)
