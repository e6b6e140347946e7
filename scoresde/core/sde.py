"""The score SDEs of Song et al. 2021: VP, sub-VP and VE, one interface (docs/sdes.md).

Each is linear with Gaussian marginals ``q(x_t | x_0) = N(α(t) x_0, σ(t)² I)``:

- :class:`VPSDE`, ``dx = -½ β x dt + √β dw`` (their eq. 11): ``α = e^{-B/2}``, ``σ² = 1 - α²``;
- :class:`SubVPSDE`, ``dx = -½ β x dt + √(β (1 - e^{-2B})) dw`` (eq. 29): ``α = e^{-B/2}``, ``σ = 1 - α²``;
- :class:`VESDE`, ``dx = √(dσ²/dt) dw`` (eq. 30): ``α = 1``, ``σ(t) = σ_min (σ_max/σ_min)^t``
  or SMLD's discrete levels,

with ``B(t) = ∫₀ᵗ β``. The shared interface (:class:`GaussianSDE`): ``alpha``, ``sigma``,
``log_snr`` ``λ = log(α²/σ²)`` and its inverse ``time_for_log_snr``, ``drift``,
``diffusion`` ``g`` and ``g2`` ``= g²``, ``transition(s, t)``, ``marginal_sample``,
``prior_sample``/``prior_log_prob``, ``likelihood_weight`` ``g²/σ² = -dλ/dt``, the ODE clock
(``clock``, ``clock_rate``, ``time_for_clock``), the probability-flow drift ``flow_drift``,
``sampling_eps`` and ``discrete_steps``.
For every such SDE ``f(t) = d log α/dt`` and ``g² = dσ²/dt - 2 f σ²``.

Conventions (docs/architecture.md, "Contracts"):
- ``t`` is a Python number or a tensor of shape ``()`` or ``(B,)`` with values in ``[0, 1]``.
- Coefficient methods (``alpha``, ``sigma``, ...) return float64 tensors of ``t``'s shape.
- Methods on data ``x`` of shape ``(B, *dims)`` broadcast coefficients with
  :func:`append_dims` and return ``x``'s dtype.

Samplers and the likelihood use only the generic interface, so code written for "an SDE
with Gaussian marginals ``α(t) x_0 + σ(t) ε``" runs on all three. For VP and sub-VP there is
also the schedule's ``integrated_beta``/``beta``/``time_for_integrated_beta``.

**Capabilities** (what only some SDEs have) are declared on the class, as torchsde declares
``noise_type``/``sde_type``: ``variance_preserving`` (``σ² = 1 - α²``, VP only: DDPM's
ancestral step and variational bound need it) and ``discrete_steps`` (``N`` of a discrete
schedule, else ``None``). Library code reads them only through :func:`is_variance_preserving`
(with :func:`not_vp_reason` and :func:`require_variance_preserving`, one message for every
refusal) and :func:`discrete_steps_of`, and takes the flow's drift only through
:func:`flow_drift`: the one place that says what an SDE object that declares nothing means.
A user's duck-typed SDE (an object with ``sigma``, the clock, ... but not a :class:`GaussianSDE`)
is a **continuous VP-SDE** unless it says otherwise: variance preserving, no discrete steps,
VP's flow drift. The transition ``q(x_t | x_s)`` is :meth:`GaussianSDE.transition` on every SDE.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import torch

from scoresde.core import schedules as sch
from scoresde.util.choices import SDE_KINDS
from scoresde.util.rng import draw_device, randn

__all__ = ["GaussianSDE", "VPSDE", "SubVPSDE", "VESDE", "SDE_KINDS", "append_dims", "as_time", "remember_time",
           "trusted_times", "is_variance_preserving", "not_vp_reason", "require_variance_preserving",
           "discrete_steps_of", "flow_drift"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``v`` (shape ``()`` or ``(B,)``) until it has ``ndim`` dims."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} to {ndim} dims")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


_CHECK_TIMES = [True]  # False inside trusted_times()


@contextlib.contextmanager
def trusted_times():
    """Inside, :func:`as_time` does not range-check ``(B,)`` tensors: for times the caller drew in
    ``[0, 1]`` itself (the training step's loss), where reading the check's result back would
    synchronise a GPU with the host at every step (and break a compiled graph in two)."""
    before, _CHECK_TIMES[0] = _CHECK_TIMES[0], False
    try:
        yield
    finally:
        _CHECK_TIMES[0] = before


# The last time tensor that as_time returned (a weak reference) and its version counter: passed
# through unchecked while unmodified, so a sampler's time is converted once per network call
# although score_of, the model and the SDE's coefficients each accept any t. A miss only checks again.
_last_time: tuple = (None, None)


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter: not remembered
        return None


def remember_time(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t``, a float64 tensor of checked times (``as_time``'s own result or a view of one),
    so that :func:`as_time` returns it as it is while it stays unmodified; returns ``t``."""
    global _last_time
    version = _version(t)
    if version is not None:
        _last_time = (weakref.ref(t), version)
    return t


def as_time(t, *, device=None) -> torch.Tensor:
    """``t`` as a float64 tensor; ``ValueError`` unless finite, in ``[0, 1]``, of shape ``()`` or ``(B,)``
    (``(B,)`` tensors are not range-checked inside :func:`trusted_times`). The tensor it returned
    last is returned again unchecked while unmodified (:func:`remember_time`)."""
    ref, version = _last_time
    if ref is not None and t is ref() and (device is None or t.device == torch.device(device)) \
            and _version(t) == version:
        return t
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
        return remember_time(t)
    if not _CHECK_TIMES[0]:
        return t
    bad = ~((t >= 0) & (t <= 1))
    if bad.any():
        raise ValueError(f"t={t[bad].flatten()[0].item()!r}: expected times in [0, 1]")
    return remember_time(t)


def _on(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float64 coefficient of shape ``()`` or ``(B,)`` shaped against ``x`` in its dtype and device."""
    return append_dims(c, x.ndim).to(device=x.device, dtype=x.dtype)


def _f64(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64, device=v.device if isinstance(v, torch.Tensor) else "cpu")


class GaussianSDE:
    """An SDE ``dx = f(t) x dt + g(t) dw`` with ``q(x_t | x_0) = N(α(t) x_0, σ(t)² I)``.

    Subclasses implement ``alpha``, ``sigma``, ``log_snr``, ``time_for_log_snr``, ``g2``,
    ``drift_coef`` (``f``), ``_transition``, ``time_for_sigma``, the clock trio and set
    ``kind``, ``prior_std``, ``sampling_eps``, ``discrete_steps``. Coefficients are float64
    tensors of ``t``'s shape; methods on data follow ``x``'s dtype and device.
    """

    kind: str = ""
    variance_preserving: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r})"

    @property
    def sampling_eps(self) -> float:
        """Default end time of samplers, the schedule's: ``1e-3`` (continuous VP, sub-VP), ``1e-5``
        (continuous VE, as score_sde) or ``1/N`` (discrete)."""
        return self.schedule.sampling_eps

    @property
    def discrete_steps(self) -> int | None:
        """``N`` for a discrete schedule (DDPM's β_i, SMLD's σ_i), whose natural times are ``i/N``;
        else ``None``."""
        return self.schedule.N if isinstance(self.schedule, (sch.DiscreteSchedule, sch.DiscreteSigmas)) else None

    # Interface (float64, shape of t) --------------------------------------------------
    def alpha(self, t) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sigma(self, t) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_snr(self, t) -> torch.Tensor:  # pragma: no cover - interface
        """``λ(t) = log(α(t)²/σ(t)²)``, decreasing in ``t``."""
        raise NotImplementedError

    def time_for_log_snr(self, lam, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:  # pragma: no cover
        """The ``t ∈ [lo, hi]`` with ``λ(t) = lam`` (clamped to the interval), float64."""
        raise NotImplementedError

    def g2(self, t) -> torch.Tensor:  # pragma: no cover - interface
        """``g(t)²``, the squared diffusion coefficient."""
        raise NotImplementedError

    def drift_coef(self, t) -> torch.Tensor:  # pragma: no cover - interface
        """``f(t) = d log α/dt`` of the linear drift ``f(t) x``."""
        raise NotImplementedError

    def time_for_sigma(self, sigma: float) -> float:  # pragma: no cover - interface
        """The time ``t`` with ``σ(t) = sigma``."""
        raise NotImplementedError

    # Derived ---------------------------------------------------------------------------
    def diffusion(self, t) -> torch.Tensor:
        """``g(t)``."""
        return torch.sqrt(self.g2(t))

    def likelihood_weight(self, t) -> torch.Tensor:
        """``g(t)²/σ(t)² = -dλ/dt``: the weight that makes DSM the likelihood bound's score term."""
        return self.g2(t) / self.sigma(t) ** 2

    def transition(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(x_t | x_s) = N(m x_s, v I)`` for ``s ≤ t``; returns ``(m, v)`` (float64).

        ``m = α(t)/α(s)`` and ``v = σ(t)² - m² σ(s)²``, each SDE in a form without cancellation.
        """
        s, t = as_time(s), as_time(t)
        if (s > t).any():
            raise ValueError("transition(s, t): expected s ≤ t")
        return self._transition(s, t)

    def _coef(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if c.ndim == 1 and c.shape[0] != x.shape[0]:
            raise ValueError(f"t has {c.shape[0]} entries but x has batch size {x.shape[0]}")
        return append_dims(c, x.ndim).to(device=x.device, dtype=x.dtype)

    def marginal_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t = α(t) x_0 + σ(t) ε``, ``ε ~ N(0, I)``; returns ``(x_t, ε)``. ``ε`` is drawn on the
        generator's device (CPU or ``x0``'s) and moved to ``x0``'s (:mod:`scoresde.util.rng`)."""
        if noise is None:
            noise = randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}: expected {tuple(x0.shape)}")
        t = as_time(t, device=x0.device)
        return self._coef(self.alpha(t), x0) * x0 + self._coef(self.sigma(t), x0) * noise, noise

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``f(t) x``."""
        return self._coef(self.drift_coef(as_time(t, device=x.device)), x) * x

    def reverse_drift(self, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
        """Reverse-SDE drift ``f - g² s`` (Song et al. 2021, eq. 6), to be integrated backwards in t."""
        g2 = self._coef(self.g2(as_time(t, device=x.device)), x)
        return self.drift(x, t) - g2 * score

    def flow_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` with ``dx/d(clock) = a x + b ε`` along the probability flow: ``dx/dt = f x + ½ g²/σ ε``
        divided by ``clock_rate`` (VP: ``(-½, ½/σ)`` in ``B``; sub-VP: ``(-½, ½ (1 + e^{-B}))``;
        continuous VE: ``(0, log(σ_max/σ_min) σ)`` in ``t``; SMLD: ``(0, 1/(2σ))`` in ``σ²``)."""
        t = as_time(t)
        rate = self.clock_rate(t)
        return self.drift_coef(t) / rate, 0.5 * self.g2(t) / (self.sigma(t) * rate)

    def flow_drift(self, x: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """The probability-flow drift in the SDE's clock, ``v = dx/d(clock) = a x + b ε`` with
        ``(a, b)`` = :meth:`flow_coefficients` and ``ε = ε(x, t)`` (same shape as ``x``): times
        ``clock_rate(t)`` it is ``dx/dt = f x - ½ g² s``, ``s = -ε/σ`` (Song et al. 2021, eq. 13).
        Scalar ``t``; ``x``'s dtype. Called through :func:`flow_drift`."""
        a, b = self.flow_coefficients(t)
        return _on(a, x) * x + _on(b, x) * eps

    def network_input_scale(self, t) -> torch.Tensor | None:
        """Factor applied to ``x_t`` before an ε-network sees it: ``1/√(α² + σ²)`` (unit scale for
        unit-variance data; Karras et al. 2022's ``c_in``), or ``None`` for no scaling."""
        t = as_time(t)
        return torch.rsqrt(self.alpha(t) ** 2 + self.sigma(t) ** 2)

    # Prior ---------------------------------------------------------------------------
    prior_std: float = 1.0

    def prior_sample(self, shape, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """A sample of the prior ``N(0, prior_std² I)`` of the given shape ``(B, *dims)`` on ``device``
        (default: the generator's device, else the CPU), drawn on the generator's device."""
        device = draw_device(generator, "cpu") if device is None else device
        z = randn(shape, generator=generator, dtype=dtype, device=device)
        return z if self.prior_std == 1.0 else z * self.prior_std

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, prior_std² I)`` summed over all but the batch dim; float64, shape ``(B,)``."""
        z = z.to(torch.float64).flatten(1)
        d, s = z.shape[1], self.prior_std
        return -0.5 * (z**2).sum(1) / s**2 - 0.5 * d * math.log(2 * math.pi) - d * math.log(s)


class _BetaSDE(GaussianSDE):
    """What VP and sub-VP share: a :class:`~scoresde.core.schedules.Schedule` ``β(t)``, ``α = e^{-B/2}``."""

    def __init__(self, schedule: sch.Schedule):
        if not isinstance(schedule, sch.Schedule):
            raise ValueError(f"schedule={schedule!r}: expected a scoresde.core.schedules.Schedule")
        self.schedule = schedule

    # Convenience constructors -------------------------------------------------------
    @classmethod
    def linear(cls, beta_min: float = 0.1, beta_max: float = 20.0):
        return cls(sch.LinearSchedule(beta_min, beta_max))

    @classmethod
    def cosine(cls, s: float = 0.008, beta_max: float = 1000.0):
        return cls(sch.CosineSchedule(s, beta_max))

    @classmethod
    def ddpm(cls, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        return cls(sch.DiscreteSchedule.ddpm_linear(n_steps, beta_start, beta_end))

    def integrated_beta(self, t) -> torch.Tensor:
        """``B(t) = ∫₀ᵗ β(s) ds``."""
        return self.schedule.integrated_beta(as_time(t))

    def beta(self, t) -> torch.Tensor:
        """``β(t)``."""
        return self.schedule.beta(as_time(t))

    def alpha_bar(self, t) -> torch.Tensor:
        """``ᾱ(t) = α(t)² = exp(-B(t))``."""
        return torch.exp(-self.integrated_beta(t))

    def alpha(self, t) -> torch.Tensor:
        """Mean coefficient ``α(t) = exp(-B(t)/2)`` of ``q(x_t | x_0)``."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def drift_coef(self, t) -> torch.Tensor:
        """``f(t) = -½ β(t)``."""
        return -0.5 * self.beta(t)

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``f(x, t) = -½ β(t) x``."""
        return -0.5 * self._coef(self.beta(as_time(t, device=x.device)), x) * x

    def time_for_integrated_beta(self, b, *, lo: float = 0.0, hi: float = 1.0, t0=None) -> torch.Tensor:
        """The ``t ∈ [lo, hi]`` with ``B(t) = b`` (float64, ``b``'s shape): Newton steps
        ``t -= (B(t) - b)/β(t)`` from ``t0`` (default the midpoint), falling back to bisection of
        the bracket whenever a step would leave it; ~10 steps to relative accuracy ~1e-15."""
        b = _f64(b)
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

    # The ODE clock: B (continuous in every schedule's right-hand side, docs/sdes.md).
    def clock(self, t) -> torch.Tensor:
        return self.integrated_beta(t)

    def clock_rate(self, t) -> torch.Tensor:
        return self.beta(t)

    def time_for_clock(self, u, *, lo: float = 0.0, hi: float = 1.0, t0=None) -> torch.Tensor:
        return self.time_for_integrated_beta(u, lo=lo, hi=hi, t0=t0)

    def _integrated_beta_between(self, s, t) -> torch.Tensor:
        return self.schedule.integrated_beta_between(s, t)


class VPSDE(_BetaSDE):
    """The VP-SDE ``dx = -½ β(t) x dt + √β(t) dw`` driven by a :class:`~scoresde.core.schedules.Schedule`.

    ``σ(t)² = 1 - α(t)²``; a discrete schedule makes it DDPM exactly. Example::

        sde = VPSDE(LinearSchedule())           # Song et al. 2021
        sde = VPSDE(DiscreteSchedule.ddpm_linear())  # DDPM, exactly
    """

    kind = "vp"
    variance_preserving = True

    def sigma(self, t) -> torch.Tensor:
        """Standard deviation ``σ(t) = √(1 - ᾱ(t)) = √(-expm1(-B(t)))`` of ``q(x_t | x_0)``."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def log_snr(self, t) -> torch.Tensor:
        """``λ(t) = log(α²/σ²) = -B - log(-expm1(-B))``."""
        b = self.integrated_beta(t)
        return -b - torch.log(-torch.expm1(-b))

    def time_for_log_snr(self, lam, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """``λ = -B - log(1 - e^{-B})`` inverts to ``B = log(1 + e^{-λ})``, then ``t = B⁻¹(B)``."""
        lam = _f64(lam)
        return self.time_for_integrated_beta(torch.logaddexp(-lam, torch.zeros_like(lam)), lo=lo, hi=hi)

    def time_for_sigma(self, sigma: float) -> float:
        """``B = -log(1 - σ²)``, then ``t = B⁻¹(B)``."""
        _check_sigma(self, sigma)
        return float(self.time_for_integrated_beta(_f64(-math.log1p(-sigma**2))))

    def g2(self, t) -> torch.Tensor:
        """``g(t)² = β(t)``."""
        return self.beta(t)

    def diffusion(self, t) -> torch.Tensor:
        """``g(t) = √β(t)``."""
        return torch.sqrt(self.beta(t))

    def likelihood_weight(self, t) -> torch.Tensor:
        """``β(t)/σ(t)² = β/(1 - e^{-B})``."""
        return self.beta(t) / -torch.expm1(-self.integrated_beta(t))

    def flow_drift(self, x: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """``v = dx/dB = -½ (x - ε/σ)``: :meth:`GaussianSDE.flow_drift` with ``(a, b) = (-½, ½/σ)``,
        written without forming ``b`` (the form every VP figure was computed with). Uses only
        ``sigma``: also the drift of an SDE object that does not declare itself (:func:`flow_drift`)."""
        return -0.5 * (x - eps / _on(self.sigma(t), x))

    def network_input_scale(self, t) -> None:
        """None: ``α² + σ² = 1``, the input needs no scaling."""
        return None

    def _transition(self, s, t):
        # m = exp(-ΔB/2), v = 1 - ᾱ(t)/ᾱ(s) = -expm1(-ΔB), ΔB = B(t) - B(s).
        db = self._integrated_beta_between(s, t)
        return torch.exp(-0.5 * db), -torch.expm1(-db)


class SubVPSDE(_BetaSDE):
    """The sub-VP SDE ``dx = -½ β x dt + √(β (1 - e^{-2B})) dw`` (Song et al. 2021, eq. 29).

    Same mean scale as the VP-SDE of the same schedule, ``α = e^{-B/2}``, but a smaller
    variance: ``σ(t) = 1 - α(t)² = -expm1(-B)``, the square of the VP-SDE's ``σ²`` — at
    equal ``α``, sub-VP's variance is VP's variance squared, so its log-SNR is higher by
    ``-log σ_VP²``. Its diffusion ``g² = β (1 - e^{-2B})`` vanishes as ``t → 0``. The prior is
    ``N(0, I)`` as for VP (``σ(1) = 1 - α(1)² ≈ 1``).
    """

    kind = "subvp"

    def sigma(self, t) -> torch.Tensor:
        """``σ(t) = 1 - e^{-B(t)} = -expm1(-B(t))``."""
        return -torch.expm1(-self.integrated_beta(t))

    def log_snr(self, t) -> torch.Tensor:
        """``λ(t) = -B - 2 log(-expm1(-B))``."""
        b = self.integrated_beta(t)
        return -b - 2.0 * torch.log(-torch.expm1(-b))

    def time_for_log_snr(self, lam, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """Closed form: with ``a = e^{-B}``, ``e^λ = a/(1 - a)²`` gives
        ``B = log1p(d/2 + √(d (1 + d/4)))``, ``d = e^{-λ}``; then ``t = B⁻¹(B)``."""
        d = torch.exp(-_f64(lam))
        b = torch.log1p(0.5 * d + torch.sqrt(d * (1.0 + 0.25 * d)))
        return self.time_for_integrated_beta(b, lo=lo, hi=hi)  # stays in its bracket [lo, hi]

    def time_for_sigma(self, sigma: float) -> float:
        """``B = -log(1 - σ)``, then ``t = B⁻¹(B)``."""
        _check_sigma(self, sigma)
        return float(self.time_for_integrated_beta(_f64(-math.log1p(-sigma))))

    def g2(self, t) -> torch.Tensor:
        """``g(t)² = β(t) (1 - e^{-2B(t)})``."""
        t = as_time(t)
        return self.schedule.beta(t) * -torch.expm1(-2.0 * self.schedule.integrated_beta(t))

    def likelihood_weight(self, t) -> torch.Tensor:
        """``g²/σ² = β (1 + e^{-B})/(1 - e^{-B})``."""
        b = self.integrated_beta(t)
        return self.beta(t) * (1.0 + torch.exp(-b)) / -torch.expm1(-b)

    def _transition(self, s, t):
        # m = exp(-ΔB/2); v = σ(t)² - m² σ(s)² = (1 - e^{-ΔB}) (1 - e^{-(B(s) + B(t))}).
        db = self._integrated_beta_between(s, t)
        b_sum = self.schedule.integrated_beta(s) + self.schedule.integrated_beta(t)
        return torch.exp(-0.5 * db), torch.expm1(-db) * torch.expm1(-b_sum)


class VESDE(GaussianSDE):
    """The VE-SDE ``dx = √(dσ²/dt) dw`` (Song et al. 2021, eq. 30; SMLD/NCSN) of a
    :class:`~scoresde.core.schedules.SigmaSchedule`.

    ``α = 1``, ``q(x_t | x_0) = N(x_0, σ(t)² I)``, ``g² = dσ²/dt``, no drift. The prior is
    ``N(0, σ_max² I)``, but the true marginal at ``t = 1`` is the data plus ``σ_max ε``: the
    prior ignores the data's mean and spread, so ``KL(p_1 ‖ prior) > 0`` (for a point ``x_0``
    it is ``‖x_0‖²/(2σ_max²)``, plus ``D/2 (r - log(1 + r))``-type terms for a spread ``r``
    of data variance over ``σ_max²``, see docs/sdes.md). ``σ_max`` is chosen large for that reason.

    Example::

        sde = VESDE.geometric(0.01, 50.0)       # continuous, NCSN++
        sde = VESDE.smld(1000, 0.01, 50.0)      # SMLD's 1000 discrete levels, exactly
    """

    kind = "ve"

    def __init__(self, schedule: sch.SigmaSchedule):
        if not isinstance(schedule, sch.SigmaSchedule):
            raise ValueError(f"schedule={schedule!r}: expected a scoresde.core.schedules.SigmaSchedule")
        self.schedule = schedule
        self.prior_std = math.sqrt(float(schedule.sigma2(_f64(1.0))))

    @classmethod
    def geometric(cls, sigma_min: float = 0.01, sigma_max: float = 50.0) -> VESDE:
        return cls(sch.GeometricSigmas(sigma_min, sigma_max))

    @classmethod
    def smld(cls, n_steps: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0) -> VESDE:
        return cls(sch.DiscreteSigmas.smld(n_steps, sigma_min, sigma_max))

    def alpha(self, t) -> torch.Tensor:
        """``α = 1``."""
        return torch.ones_like(as_time(t))

    def sigma(self, t) -> torch.Tensor:
        """``σ(t)``."""
        return torch.sqrt(self.schedule.sigma2(as_time(t)))

    def log_snr(self, t) -> torch.Tensor:
        """``λ(t) = -log σ(t)²``."""
        return -self.schedule.log_sigma2(as_time(t))

    def time_for_log_snr(self, lam, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """``σ² = e^{-λ}``, inverted in closed form."""
        return self.schedule.time_for_sigma2(torch.exp(-_f64(lam))).clamp(lo, hi)

    def time_for_sigma(self, sigma: float) -> float:
        _check_sigma(self, sigma)
        return float(self.schedule.time_for_sigma2(_f64(float(sigma) ** 2)))

    def g2(self, t) -> torch.Tensor:
        """``g(t)² = dσ²/dt``."""
        return self.schedule.dsigma2(as_time(t))

    def drift_coef(self, t) -> torch.Tensor:
        """``f = 0``."""
        return torch.zeros_like(as_time(t))

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """No drift."""
        return torch.zeros_like(x)

    def _transition(self, s, t):
        # m = 1, v = σ(t)² - σ(s)²: SMLD's perturbation step between levels.
        return torch.ones_like(t), self.schedule.sigma2_between(s, t)

    def clock(self, t) -> torch.Tensor:
        return self.schedule.clock(as_time(t))

    def clock_rate(self, t) -> torch.Tensor:
        return self.schedule.clock_rate(as_time(t))

    def time_for_clock(self, u, *, lo: float = 0.0, hi: float = 1.0, t0=None) -> torch.Tensor:
        return self.schedule.time_for_clock(u).clamp(lo, hi)


def _check_sigma(sde, sigma) -> None:
    lo, hi = float(sde.sigma(0.0)), float(sde.sigma(1.0))
    if isinstance(sigma, bool) or not (isinstance(sigma, (int, float)) and lo < sigma < hi):
        raise ValueError(f"sigma={sigma!r}: expected a number in (σ(0)={lo:.4g}, σ(1)={hi:.4g}) of {sde!r}")


# Capabilities: the one place that reads them ----------------------------------------------------
def is_variance_preserving(sde) -> bool:
    """``sde.variance_preserving``; True for an SDE object that does not declare it (module docstring)."""
    return bool(getattr(sde, "variance_preserving", True))


def not_vp_reason(sde) -> str | None:
    """None for a VP-SDE (:func:`is_variance_preserving`), else the one message, the same for
    every caller, that says why DDPM's chain cannot run on ``sde`` and what to use instead."""
    if is_variance_preserving(sde):
        return None
    return (f"DDPM's chain (its ancestral step and its variational bound) needs a VP-SDE (σ² = 1 - α²), "
            f"got {type(sde).__name__} (sde.kind={getattr(sde, 'kind', '?')}): sample with 'ddim' (eta=1) "
            f"or pc's reverse_diffusion predictor, and take bits/dim from the probability-flow ODE")


def require_variance_preserving(sde) -> None:
    """``ValueError`` with :func:`not_vp_reason`'s message unless ``sde`` is VP."""
    reason = not_vp_reason(sde)
    if reason is not None:
        raise ValueError(reason)


def discrete_steps_of(sde) -> int | None:
    """``sde.discrete_steps``; None (continuous) for an SDE object that does not declare it."""
    return getattr(sde, "discrete_steps", None)


def flow_drift(sde, x: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """The probability-flow drift ``dx/d(clock)`` of ``sde`` at ``x`` given ``ε(x, t)``: its own
    :meth:`GaussianSDE.flow_drift`; for an SDE object that is not a :class:`GaussianSDE`, VP's
    (:meth:`VPSDE.flow_drift`, which needs only ``sigma``) unless it declares itself not variance
    preserving, then the general ``a x + b ε`` of its ``flow_coefficients``."""
    if isinstance(sde, GaussianSDE):
        return sde.flow_drift(x, t, eps)
    own = VPSDE.flow_drift if is_variance_preserving(sde) else GaussianSDE.flow_drift
    return own(sde, x, t, eps)
