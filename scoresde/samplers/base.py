"""What every sampler shares: the result type, the opening and the end of a run.

The shared signature (docs/architecture.md, "Contracts")::

    fn(model, x_T, *, steps=None, generator=None, progress=False, t_eps=None, denoise=True,
       **options) -> SampleResult

``model`` is anything with ``.sde`` and ``.eps(x, t)`` (a :class:`~scoresde.core.model.ScoreModel`,
the oracle :class:`~scoresde.core.analytic.GaussianMixture` or a user's own class); samplers reach
it only through :func:`~scoresde.core.model.eps_of`, :func:`~scoresde.core.model.score_of` and
:func:`~scoresde.core.model.x0_of`. ``x_T`` of shape ``(B, *dims)`` (floating point) is the state at
the first grid time (``t = 1``: a draw of the prior). NFE counts batched calls of ``model.eps``.

:func:`open_run` is every sampler's opening (option check, NFE counter, end time, time grid,
progress bar) and :func:`finish_run` its end (the optional Tweedie step to ``t = 0``, one
non-finite check, the result). Grid-based samplers also take an explicit grid, ``times=``
(continuous times) or ``timesteps=`` (DDPM indices ``k``, time ``t = (k + 1)/N``); see
``docs/samplers.md``, "Time grids".

Devices: samples come back on ``x_T``'s device. ``generator`` may live on the CPU or on
``x_T``'s device; noise is drawn on the generator's device and moved to ``x_T``'s
(:mod:`scoresde.util.rng`), so a CPU generator gives the same noise on every device. Time grids
are float64 CPU tensors (read as numbers or moved to the data's device where used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from scoresde.core.model import x0_of
from scoresde.core.sde import discrete_steps_of
from scoresde.util.checks import check_choice, check_flag, check_int, check_model, check_number, check_t_eps
from scoresde.util.choices import SPACINGS
from scoresde.util.errors import NonFiniteResult
from scoresde.util.progress import progress_bar

__all__ = ["SampleResult", "NFECounter", "Run", "open_run", "finish_run", "time_grid", "sampler_grid",
           "explicit_grid", "default_t_eps", "check_steps", "check_t_eps", "check_choice", "check_model",
           "check_options", "check_x_T", "progress_bar", "SPACINGS", "GRID_OPTIONS", "FEW_STEPS",
           "few_step_rule_applies"]

GRID_OPTIONS = ("times", "timesteps")


@dataclass
class SampleResult:
    """Samples ``x`` (shape and dtype of ``x_T``), the number of network evaluations and
    the end time actually reached (``0.0`` after a final denoising step)."""

    x: torch.Tensor
    nfe: int
    t_end: float
    info: dict = field(default_factory=dict)


class NFECounter:
    """Wraps a model (``.sde``, ``.eps``) and counts its batched ``eps`` calls. A relay: samplers
    call it through :func:`~scoresde.core.model.eps_of`, ``score_of`` or ``x0_of``, which convert
    ``t`` and check the result once; it passes both on unchanged."""

    def __init__(self, model):
        check_model(model)
        self.model, self.sde, self.nfe = model, model.sde, 0

    def eps(self, x, t):
        self.nfe += 1
        return self.model.eps(x, t)


def check_x_T(x_T, name: str) -> None:
    """``TypeError`` unless ``x_T`` is a floating-point tensor with a batch dimension."""
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
        what = f"a tensor of dtype {x_T.dtype}" if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise TypeError(f"x_T: the {name} sampler got {what}; expected a floating-point torch.Tensor")
    if x_T.ndim < 1:
        raise ValueError(f"x_T of shape {tuple(x_T.shape)}: expected (B, *dims)")
    if x_T.numel() == 0:
        raise ValueError(f"x_T of shape {tuple(x_T.shape)}: the {name} sampler got an empty tensor; expected "
                         f"(B, *dims) with B ≥ 1 and every size ≥ 1")


MAX_STEPS = 1_000_000  # a million network calls per sample: hours on any machine; more is refused


def check_steps(steps) -> int:
    """An integer in ``[1, MAX_STEPS]``: checked before a grid of that size is built."""
    steps = check_int("steps", steps)
    if steps > MAX_STEPS:
        raise ValueError(f"steps={steps}: expected at most {MAX_STEPS:,} (each step is a network call; "
                         f"the grid alone would take {8 * (steps + 1) / 2**30:.3g} GiB)")
    return steps


def check_options(name: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated by ``options``; ``ValueError`` for a keyword not in ``defaults``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"option {unknown[0]!r}: the {name} sampler accepts "
                         f"{', '.join(defaults) or 'no extra options'}")
    return {**defaults, **options}


def time_grid(sde, steps: int, t_eps: float, spacing: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    """Increasing float64 grid ``t_eps = τ_0 < τ_1 < … < τ_K = 1`` with ``K = steps``.

    Spacings: ``uniform`` in t; ``quadratic`` (``τ = t_eps + (1-t_eps) u²``, dense near 0);
    ``logsnr`` (uniform in ``λ = log α²/σ²``); ``karras`` (uniform in ``σ_K^{1/ρ}`` with
    ``σ_K = σ/α``, Karras et al. 2022 eq. 5). On a discrete schedule the times are the
    training times ``i/N``: each is rounded to the nearest one and, where rounding makes
    neighbours coincide (the log-SNR runs fast near ``t = 1/N``), they are re-spaced to
    consecutive ``i`` nearest the ideal grid, so any ``K ≤ N - N t_eps`` works.
    """
    steps = check_steps(steps)
    check_choice("spacing", spacing, SPACINGS)
    rho = check_number("rho", rho, low=0)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device="cpu")
    t0 = torch.tensor(t_eps, dtype=torch.float64, device="cpu")
    t1 = torch.tensor(1.0, dtype=torch.float64, device="cpu")
    if spacing == "uniform":
        grid = t_eps + (1.0 - t_eps) * u
    elif spacing == "quadratic":
        grid = t_eps + (1.0 - t_eps) * u**2
    elif spacing == "logsnr":
        lam0, lam1 = sde.log_snr(t0), sde.log_snr(t1)
        grid = sde.time_for_log_snr(lam0 + (lam1 - lam0) * u)
    else:  # karras: σ_K = exp(-λ/2)
        smin, smax = torch.exp(-0.5 * sde.log_snr(t0)), torch.exp(-0.5 * sde.log_snr(t1))
        sig = (smin ** (1 / rho) + u * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
        grid = sde.time_for_log_snr(-2.0 * torch.log(sig))
    grid[0], grid[-1] = t_eps, 1.0
    n = discrete_steps_of(sde)
    if n is not None:
        i0 = round(t_eps * n)
        if i0 < 1:
            raise ValueError(f"t_eps={t_eps!r}: rounds to 0 on the discrete schedule with N={n}; "
                             f"expected t_eps ≥ 1/(2N)")
        if steps > n - i0:
            raise ValueError(f"steps={steps}: a grid from t_eps={t_eps} on the discrete schedule with N={n} "
                             f"has at most {n - i0} distinct steps (times i/N, i = {i0}..{n}); use fewer "
                             f"steps or a smaller t_eps")
        idx = torch.round(grid * n)
        idx[0], idx[-1] = i0, n
        j = torch.arange(steps + 1, dtype=torch.float64, device="cpu")
        # re-space: idx - j non-decreasing (strictly increasing idx) and ≤ n - K (room for the rest)
        idx = torch.clamp(torch.cummax(idx - j, 0).values, max=n - steps) + j
        grid = idx / n
    if not torch.all(grid[1:] > grid[:-1]) or not math.isclose(float(grid[-1]), 1.0):
        raise ValueError(f"spacing={spacing!r} with steps={steps}: grid is not strictly increasing")
    return grid


# The default end time ---------------------------------------------------------------------------
# With few steps, a grid that runs to the SDE's smallest time spends its steps on the fast
# last stretch of the log-SNR; ending where the noise-to-signal ratio σ/α is still
# ≈ FEW_STEP_SCALE / K^FEW_STEP_POWER and taking the final Tweedie step from there is more
# accurate (docs/highorder.md, "The default end time"; measured by benchmarks/vs_diffusers.py).
FEW_STEP_SCALE = 2.8
FEW_STEP_POWER = 1.65


# The few-step rule of the samplers that call the network twice per interval (heun, pc with a
# corrector): below FEW_STEPS steps they spend those calls on one-call steps instead (same NFE).
FEW_STEPS = 5


def few_step_rule_applies(steps, enabled) -> bool:
    """True when ``steps`` is an integer count below :data:`FEW_STEPS` and the sampler's
    ``few_steps`` option is ``True`` (an invalid value is left to the sampler's own check)."""
    return enabled is True and isinstance(steps, int) and not isinstance(steps, bool) and 0 < steps < FEW_STEPS


def default_t_eps(sde, intervals: int) -> float:
    """End time used when ``t_eps`` is not given and the run ends with a Tweedie step.

    ``t`` with ``σ(t)/α(t) = max(σ/α at sde.sampling_eps, FEW_STEP_SCALE · K^-FEW_STEP_POWER)``,
    ``K`` the number of grid intervals: the SDE's ``sampling_eps`` from a few tens of steps up.
    """
    t_min = sde.sampling_eps
    lam_min = float(sde.log_snr(torch.tensor(t_min, dtype=torch.float64, device="cpu")))  # log-SNR at t_min (largest)
    lam = min(lam_min, -2.0 * math.log(FEW_STEP_SCALE * max(intervals, 1) ** -FEW_STEP_POWER))
    if lam >= lam_min:
        return t_min
    # capped at 0.9 so that a schedule with little noise at t = 1 still leaves a grid interval
    return min(0.9, float(sde.time_for_log_snr(torch.tensor(lam, dtype=torch.float64, device="cpu"))))


def sampler_grid(sde, intervals: int, t_eps, denoise: bool, spacing: str = "uniform",
                 rho: float = 7.0) -> torch.Tensor:
    """Decreasing float64 grid ``1 = τ_K > … > τ_0`` with ``K = intervals`` (just ``[1]`` for K = 0).

    ``t_eps=None``: :func:`default_t_eps` when ``denoise`` (else ``sde.sampling_eps``), lowered on
    a discrete schedule until ``K`` distinct training times fit; if even ``1/N`` leaves fewer
    than ``K`` intervals, the grid collapses to all of ``N, N-1, …, 1`` (fewer steps than asked).
    An explicit ``t_eps`` is kept; too many steps for it raise ``ValueError``.
    """
    if intervals == 0:
        return torch.ones(1, dtype=torch.float64, device="cpu")
    if t_eps is not None:
        return time_grid(sde, intervals, check_t_eps(t_eps, sde), spacing, rho).flip(0)
    t_eps = default_t_eps(sde, intervals) if denoise else sde.sampling_eps
    n = discrete_steps_of(sde)
    if n is not None:
        i0 = max(1, round(t_eps * n))
        i0 = max(1, min(i0, n - intervals))
        intervals, t_eps = min(intervals, n - i0), i0 / n
    return time_grid(sde, intervals, t_eps, spacing, rho).flip(0)


def explicit_grid(sde, times=None, timesteps=None) -> torch.Tensor:
    """A user's grid as a decreasing float64 tensor of times in ``(0, 1]``.

    ``times``: continuous times, strictly decreasing, in ``(0, 1]``. ``timesteps``: integer DDPM
    indices ``k``, strictly decreasing, in ``0..N-1`` on a discrete schedule, at times ``(k + 1)/N``.
    """
    if times is not None and timesteps is not None:
        raise ValueError("times and timesteps: give one explicit grid, not both")
    if timesteps is not None:
        n = discrete_steps_of(sde)
        if n is None:
            raise ValueError(f"timesteps=...: DDPM integer timesteps need a discrete schedule (e.g. "
                             f"VPSDE.ddpm()); {sde!r} is continuous: pass times= instead")
        try:
            ks = timesteps.detach().cpu() if isinstance(timesteps, torch.Tensor) else \
                torch.as_tensor(timesteps, device="cpu")
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"timesteps={_show(timesteps)}: expected a non-empty 1-D sequence of integers") from err
        if ks.ndim != 1 or ks.numel() == 0 or ks.is_complex() or ks.dtype == torch.bool or \
                not torch.equal(ks.to(torch.float64), ks.to(torch.float64).round()):
            raise ValueError(f"timesteps={_show(timesteps)}: expected a non-empty 1-D sequence of integers")
        ks = ks.to(torch.float64)
        if ks.min() < 0 or ks.max() > n - 1 or not torch.all(ks[1:] < ks[:-1]):
            raise ValueError(f"timesteps={_show(timesteps)}: expected strictly decreasing integers in 0..{n - 1}")
        return (ks + 1) / n
    try:  # a Python sequence straight to float64 (torch.as_tensor would make it float32)
        t = times.detach().cpu() if isinstance(times, torch.Tensor) else \
            torch.as_tensor(times, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"times={_show(times)}: expected a non-empty 1-D sequence of numbers") from err
    if t.ndim != 1 or t.numel() == 0 or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"times={_show(times)}: expected a non-empty 1-D sequence of numbers")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all() or t.min() <= 0 or t.max() > 1 or not torch.all(t[1:] < t[:-1]):
        raise ValueError(f"times={_show(times)}: expected strictly decreasing times in (0, 1]")
    return t


def _show(v) -> str:
    text = repr(v.tolist() if isinstance(v, torch.Tensor) else v)
    return text if len(text) <= 60 else text[:57] + "..."


# Opening and end of a run ------------------------------------------------------------------------
@dataclass
class Run:
    """A sampler run after :func:`open_run`: counted model, options, decreasing grid of positive
    times (from the start, ``x_T``'s time, to the end time), ``denoise`` and the progress bar."""

    name: str
    counted_model: NFECounter
    sde: object
    opts: dict
    grid: torch.Tensor
    denoise: bool
    bar: object
    dtype: torch.dtype


def open_run(name: str, model, x_T, *, steps, t_eps, denoise, progress, options: dict, defaults: dict,
             descent: bool = False, cost=None, gridded: bool = True) -> Run:
    """Every sampler's opening. ``defaults`` are the sampler's own options; grid-based samplers
    (``gridded``) also accept ``times``/``timesteps`` (then ``steps`` and ``t_eps`` must be None).

    ``descent``: ``steps`` counts updates including the final one to ``t = 0`` (ancestral, DDIM), so
    the grid has ``steps - denoise`` intervals; otherwise ``steps`` intervals. ``cost(K)`` is the
    number of ε calls of ``K`` intervals (progress bar total); the Tweedie step adds one.
    Samplers read ``opts["spacing"]``/``opts["rho"]`` for the grid when they have those options.
    """
    check_x_T(x_T, name)
    if gridded:
        defaults = {**defaults, **dict.fromkeys(GRID_OPTIONS)}
    opts = check_options(name, options, defaults)
    check_flag("denoise", denoise)
    counted = NFECounter(model)
    sde = counted.sde
    times, timesteps = opts.pop("times", None), opts.pop("timesteps", None)
    if times is not None or timesteps is not None:
        if steps is not None:
            raise ValueError(f"steps={steps!r}: an explicit grid (times= or timesteps=) sets the steps; drop steps")
        if t_eps is not None:
            raise ValueError(f"t_eps={t_eps!r}: an explicit grid ends at its own last time; drop t_eps")
        grid = explicit_grid(sde, times, timesteps)
    elif steps is None:
        raise ValueError("steps=None: expected an integer ≥ 1" + (" (or times= / timesteps=)" if gridded else ""))
    elif not gridded:
        check_steps(steps)
        grid = torch.tensor([1.0, check_t_eps(t_eps, sde)], dtype=torch.float64, device="cpu")
    else:
        intervals = check_steps(steps) - (1 if descent and denoise else 0)
        grid = sampler_grid(sde, intervals, t_eps, denoise, opts.get("spacing", "uniform"), opts.get("rho", 7.0))
    total = None if cost is None else cost(grid.numel() - 1) + int(denoise)
    return Run(name, counted, sde, opts, grid, denoise, progress_bar(total, progress, name, unit="NFE"),
               x_T.dtype)


def finish_run(run: Run, x: torch.Tensor, **info) -> SampleResult:
    """Every sampler's end: with ``denoise``, one Tweedie step ``x̂_0(x, τ_end)`` to ``t = 0`` (+1 NFE);
    then one check that the result is finite (:class:`~scoresde.util.errors.NonFiniteResult`, a
    ``ValueError``, naming the sampler otherwise)."""
    t_end = float(run.grid[-1])
    if run.denoise:
        x, t_end = x0_of(run.counted_model, x, run.grid[-1]), 0.0
        run.bar.update(1)
    run.bar.close()
    x = x.to(run.dtype)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteResult(f"{run.name} sampler: {bad} of {x.numel()} values of the result are not finite "
                         f"(NaN or inf); check the model's ε (model.eps) and the sampler's options")
    return SampleResult(x=x, nfe=run.counted_model.nfe, t_end=t_end, info={"grid": run.grid, **info})
