"""Imputation and inpainting with any unconditional model (docs/conditioning.md, "Imputation and
inpainting").

Given observed values ``y`` on a mask ``M`` (``True`` = observed), :func:`impute` draws the
unobserved part ``x_u`` from (an approximation of) ``p(x_u | x_o = y)`` using only the model's
``.sde`` and ``.eps`` (through the NFE counter of :mod:`scoresde.samplers.base`), and returns
full examples whose observed part is ``y`` exactly. The grid is the samplers' grid
(:func:`~scoresde.samplers.base.sampler_grid`): ``steps`` intervals ``1 = τ_K > … > τ_1 = t_eps``
and one last Tweedie step ``x̂_0(x, t_eps)`` to ``t = 0``. Three methods:

- ``replacement`` (Song et al. 2021, App. I): after every step of a sampler the observed part of
  the state is overwritten by a fresh forward-diffused copy of the observation,
  ``α(τ) y + σ(τ) z``. Defined on the samplers whose step maps the state at one grid time to the
  state at the next with no memory (``IMPUTE_SAMPLERS``: ``ddim`` — default, with ``η = 1``, the
  exact ancestral step of VP, sub-VP and VE —, ``ancestral`` (VP only), ``sde``, ``pc``,
  ``heun``); ``dpmpp`` (multistep: it reuses earlier ``x̂_0``) and ``ode`` (adaptive: no grid to
  replace on) are refused. Biased even with exact scores and infinitely many steps: the unobserved
  part never learns which noise the observed part carries. NFE ``= K·c + 1`` (``c`` the
  sampler's ε calls per step).
- ``repaint`` (Lugmayr et al. 2022, jump length 1): each step is taken ``r = resamplings`` times;
  between takes the state jumps back from ``τ_{k+1}`` to ``τ_k`` with the SDE's forward
  transition ``N(m x, v I)``. Less biased, not exact. NFE ``= K·r·c + 1``.
- ``smc``: sequential Monte Carlo over the reverse process, twisted by the forward-diffused
  observation (the noiseless-inpainting case of MCGdiff, Cardoso et al. 2023). With the
  ancestral kernel ``p(x_s | x_t) = N(μ(x_t), v)`` (DDIM with ``η = 1``) and the potentials
  ``g_t(x_t) = N(x_t,o; α_t y, σ_t² I)``, each particle's observed part is drawn from
  ``∝ N(μ_o, v) g_s`` (a product of Gaussians), its unobserved part from ``N(μ_u, v)``, and its
  weight is multiplied by ``N(α_s y; μ_o, v + σ_s²) / g_t(x_t)``. The last step sets ``x_o = y``
  with weight ``N(y; x̂_0,o, σ²/α² at t_eps)``. The weights telescope: the particle system
  targets the reverse chain's own conditional of ``x_u`` given ``x_o = y`` and is exact as
  ``particles → ∞`` (and the chain's as steps → ∞). Particles are resampled (systematic)
  whenever the effective sample size ``(Σw)²/Σw²`` falls below ``ess_threshold · particles``;
  one particle per example is drawn from the final weights. NFE ``= K + 1`` batched calls of
  ``particles`` times the batch.

Edge cases: an all-observed mask returns a copy of ``observed`` (0 NFE); a mask with nothing
observed is plain sampling (the method's sampler from a prior draw: :func:`~scoresde.samplers.
ddim.ddim` with ``η = 1`` and ``steps = K + 1`` for ``smc``; the same NFE as plain sampling).
Values of ``observed`` at unobserved positions are never read (NaN may mark them).
"""

from __future__ import annotations

import functools
import math

import torch

from scoresde.core.model import x0_of
from scoresde.samplers.ancestral import ancestral
from scoresde.samplers.base import (
    NFECounter,
    SampleResult,
    check_steps,
    progress_bar,
    sampler_grid,
)
from scoresde.samplers.ddim import ddim
from scoresde.samplers.heun import heun
from scoresde.samplers.pc import pc
from scoresde.samplers.reverse_sde import reverse_sde
from scoresde.util.checks import check_choice, check_int, check_model, check_number
from scoresde.util.choices import IMPUTE_METHODS, IMPUTE_SAMPLERS, INPAINT_MASKS, SPACINGS
from scoresde.util.rng import rand, randn

__all__ = ["impute", "inpaint_mask", "IMPUTE_METHODS", "IMPUTE_SAMPLERS", "STEP_SAMPLERS"]

# The samplers replacement and RePaint wrap: one call with ``times=[τ_k, τ_{k+1}]`` is one step.
STEP_SAMPLERS = {"ddim": ddim, "ancestral": ancestral, "sde": reverse_sde, "pc": pc, "heun": heun}
_DEFAULTS = {
    "replacement": {"sampler": "ddim", "sampler_options": None},
    "repaint": {"sampler": "ddim", "sampler_options": None, "resamplings": 10},
    "smc": {"particles": 16, "ess_threshold": 0.5, },
}
_NOT_STEPWISE = {"dpmpp": "a multistep solver (it reuses earlier steps' x̂_0)",
                 "ode": "an adaptive solver (no grid times to replace at)"}
_SET_BY_IMPUTE = ("times", "timesteps", "steps", "t_eps", "denoise", "generator", "progress")


@torch.no_grad()
def impute(model, observed: torch.Tensor, mask: torch.Tensor, *, method: str = "smc", steps: int = 100,
           generator: torch.Generator | None = None, progress: bool = False, t_eps: float | None = None,
           spacing: str = "uniform", **options) -> SampleResult:
    """Complete ``observed`` where ``mask`` is False with draws given the observed part.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)`` (a class-conditional model made plain by
            ``condition(model, y, w)`` too).
        observed: ``(B, *dims)`` floating-point tensor; one example to complete per row (repeat a
            row for several completions of it). Entries where ``mask`` is False are ignored.
        mask: ``torch.bool`` tensor of shape ``dims`` (one mask for the batch) or ``(B, *dims)``;
            ``True`` = observed.
        method: ``"smc"`` (default), ``"replacement"`` or ``"repaint"``.
        steps: grid intervals ``K`` from ``t = 1`` to ``t_eps`` (then one Tweedie step).
        generator: ``torch.Generator`` for every draw (prior, noise, resampling).
        t_eps: end of the grid (default as the samplers': :func:`~scoresde.samplers.base.default_t_eps`).
        spacing: the grid's spacing (:func:`~scoresde.samplers.base.time_grid`; default ``"uniform"``).
        sampler, sampler_options (replacement, repaint): the step sampler (one of
            ``IMPUTE_SAMPLERS``, default ``"ddim"`` with ``eta=1``) and its options.
        resamplings (repaint): ``r ≥ 1`` takes of each step (default 10).
        particles (smc): particles per example (default 16); ess_threshold (smc): resample when
            the effective sample size falls below this fraction of ``particles`` (default 0.5;
            0 never, 1 at every step).

    Returns:
        ``SampleResult(x, nfe, t_end=0.0, info)``: ``x`` of ``observed``'s shape, dtype and device
        with ``x[mask] == observed[mask]``; ``info["method"]``, ``info["grid"]`` and for ``smc``
        ``info["ess"]`` (float64 ``(K + 1, B)``: the effective sample size after each step's
        reweighting, the last row the final one) and ``info["resampled"]`` (bool ``(K, B)``).
    """
    check_model(model)
    check_choice("method", method, IMPUTE_METHODS)
    unknown = sorted(set(options) - set(_DEFAULTS[method]))
    if unknown:
        raise ValueError(f"option {unknown[0]!r}: the {method} method accepts {', '.join(_DEFAULTS[method])}")
    opts = {**_DEFAULTS[method], **options}
    _check_observed(observed)
    mask = _check_mask(mask, observed)
    if not bool(torch.isfinite(observed[mask]).all()):
        bad = int((~torch.isfinite(observed[mask])).sum())
        raise ValueError(f"observed: {bad} of the {int(mask.sum())} observed values (mask True) are NaN or "
                         f"infinite; expected finite values where mask is True")
    steps = check_steps(steps)
    if method == "smc":
        particles = check_int("particles", opts["particles"])
        threshold = check_number("ess_threshold", opts["ess_threshold"], low=0, high=1,
                                 low_closed=True, high_closed=True)
        sampler, step_fn, step_opts = "ddim", ddim, {"eta": 1.0}
    else:
        sampler = opts["sampler"]
        step_fn, step_opts = _check_sampler(sampler, opts["sampler_options"])
        resamplings = check_int("resamplings", opts["resamplings"]) if method == "repaint" else 1
    _check_gaussian_sde(model.sde, method)
    check_choice("spacing", spacing, SPACINGS)
    grid = sampler_grid(model.sde, steps, t_eps, True, spacing)
    info = {"method": method, "grid": grid}

    if bool(mask.all()):  # nothing to impute
        return SampleResult(x=observed.clone(), nfe=0, t_end=0.0, info=info)
    net = NFECounter(model)
    if not bool(mask.any()):  # plain sampling with the method's sampler
        x_T = _prior(net.sde, observed, generator)
        res = step_fn(net, x_T, times=grid, denoise=True, generator=generator, progress=progress, **step_opts)
        return SampleResult(x=res.x, nfe=net.nfe, t_end=0.0, info={**info, "grid": res.info["grid"]})
    if method == "smc":
        x, extra = _smc(net, observed, mask, grid, particles, threshold, generator, progress)
    else:
        step = functools.partial(step_fn, denoise=False, generator=generator, **step_opts)
        x = _replace(net, observed, mask, grid, step, resamplings, generator, progress)
        extra = {"sampler": sampler, "sampler_options": step_opts}
        if method == "repaint":
            extra["resamplings"] = resamplings
    x = torch.where(mask, observed, x.to(observed.dtype))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"impute ({method}): {int((~torch.isfinite(x)).sum())} values of the result are not "
                         f"finite; check the model's ε (model.eps)")
    return SampleResult(x=x, nfe=net.nfe, t_end=0.0, info={**info, **extra})


# Input checks --------------------------------------------------------------------------------
def _check_observed(observed) -> None:
    if not isinstance(observed, torch.Tensor) or not observed.is_floating_point():
        what = f"a tensor of dtype {observed.dtype}" if isinstance(observed, torch.Tensor) else type(observed).__name__
        raise TypeError(f"observed: got {what}; expected a floating-point torch.Tensor of shape (B, *dims)")
    if observed.ndim < 2 or observed.shape[0] < 1:
        raise ValueError(f"observed has shape {tuple(observed.shape)}: expected (B, *dims) with B ≥ 1")


def _check_mask(mask, observed: torch.Tensor) -> torch.Tensor:
    """The mask as a bool tensor of ``observed``'s shape on its device."""
    one, batch = tuple(observed.shape[1:]), tuple(observed.shape)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        what = f"a tensor of dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask: got {what}; expected a torch.bool tensor (True = observed) of shape {one} "
                        f"or {batch}")
    if tuple(mask.shape) not in (one, batch):
        raise ValueError(f"mask has shape {tuple(mask.shape)}: expected {one} (one mask) or {batch} "
                         f"(one per example), observed having shape {batch}")
    return mask.to(observed.device).expand(batch)


def _check_sampler(name, sampler_options):
    if name in _NOT_STEPWISE:
        raise ValueError(f"sampler={name!r}: replacement and repaint need a sampler whose step maps the state "
                         f"at one grid time to the next with no memory, one of {', '.join(IMPUTE_SAMPLERS)}; "
                         f"{name!r} is {_NOT_STEPWISE[name]}")
    check_choice("sampler", name, IMPUTE_SAMPLERS)
    if sampler_options is None:
        sampler_options = {}
    if not isinstance(sampler_options, dict):
        raise ValueError(f"sampler_options={sampler_options!r}: expected a dict of the sampler's options or None")
    taken = sorted(set(sampler_options) & set(_SET_BY_IMPUTE))
    if taken:
        raise ValueError(f"sampler_options: {taken[0]!r} is set by impute itself; expected only the "
                         f"{name} sampler's own options")
    opts = {"eta": 1.0, **sampler_options} if name == "ddim" else dict(sampler_options)
    return STEP_SAMPLERS[name], opts


def _check_gaussian_sde(sde, method: str) -> None:
    needed = ("alpha", "sigma", "transition", "prior_sample", "marginal_sample")
    missing = [a for a in needed if not callable(getattr(sde, a, None))]
    if missing:
        raise ValueError(f"model.sde={type(sde).__name__}: the {method} method needs an SDE with Gaussian "
                         f"marginals N(α x_0, σ² I) and transitions (VP, sub-VP or VE); it lacks "
                         f"{', '.join(missing)}")


# Replacement and RePaint ---------------------------------------------------------------------
def _prior(sde, observed, generator):
    return sde.prior_sample(observed.shape, generator=generator, dtype=observed.dtype, device=observed.device)


def _replace(net, y, mask, grid, step, resamplings, generator, progress):
    """Song et al.'s replacement (``resamplings = 1``) or RePaint (``resamplings = r``); ``step(net, x,
    times=...)`` one step of the sampler."""
    sde = net.sde
    x = _prior(sde, y, generator)
    bar = progress_bar(grid.numel() - 1, progress, "impute")
    x = torch.where(mask, _diffuse(sde, y, grid[0], generator), x)
    for k in range(grid.numel() - 1):
        for u in range(resamplings):
            x = step(net, x, times=grid[k:k + 2]).x
            x = torch.where(mask, _diffuse(sde, y, grid[k + 1], generator), x)
            if u < resamplings - 1:  # jump back: x_{τ_k} ~ q(x_{τ_k} | x_{τ_{k+1}})
                m, v = sde.transition(grid[k + 1], grid[k])
                z = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = float(m) * x + float(v) ** 0.5 * z
        bar.update(1)
    bar.close()
    return x0_of(net, x, grid[-1])


def _diffuse(sde, y, t, generator):
    """A forward-diffused copy ``α(t) y + σ(t) z`` of the observation (fresh noise)."""
    yz = torch.nan_to_num(y)  # unobserved entries may be NaN; they are never kept
    return sde.marginal_sample(yz, t, generator=generator)[0]


# Sequential Monte Carlo ----------------------------------------------------------------------
def _smc(net, observed, mask, grid, particles, threshold, generator, progress):
    sde = net.sde
    b = observed.shape[0]
    dev, dt = observed.device, observed.dtype
    rep = lambda v: v.repeat_interleave(particles, 0)  # noqa: E731  (B, ...) → (B·P, ...)
    y = rep(torch.nan_to_num(observed)).to(torch.float64)
    obs = rep(mask)
    obs64 = obs.to(torch.float64)
    alpha, sigma = sde.alpha(grid), sde.sigma(grid)  # float64, decreasing time
    _, trans_var = sde.transition(grid[1:], grid[:-1])  # variance of q(x_{τ_k} | x_{τ_{k+1}})
    log_w = torch.zeros(b, particles, dtype=torch.float64, device=dev)
    ess_rows, resampled_rows = [], []
    bar = progress_bar(grid.numel(), progress, "impute smc")

    def log_gauss(value, mean, var):  # Σ over observed coordinates of log N(value; mean, var), (B, P)
        lp = -0.5 * (value - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
        return (lp * obs64).flatten(1).sum(1).reshape(b, particles)

    x = _smc_start(sde, _prior(sde, y.to(dt), generator).to(torch.float64), y, obs, float(alpha[0]),
                   float(sigma[0]))  # P independent prior draws per example
    log_w -= log_gauss(x, float(alpha[0]) * y, float(sigma[0]) ** 2)  # prior/proposal ∝ 1/g_1 on the observed part
    last = grid.numel() - 1
    for k in range(grid.numel()):
        t, at, st = grid[k], float(alpha[k]), float(sigma[k])
        eps = net.eps(x.to(dt), t).to(torch.float64)
        x0 = (x - st * eps) / at
        bar.update(1)
        if k == last:  # the end: x_o = y, weight N(y; x̂_0,o, (σ/α)²); x_u = x̂_0,u
            log_w += log_gauss(y, x0, (st / at) ** 2)
            ess_rows.append(_ess(log_w))
            break
        tw = log_gauss(at * y, x, st**2)  # the twist g_t(x_t)
        log_w += tw
        ess_rows.append(_ess(log_w))
        need = ess_rows[-1] < threshold * particles
        resampled_rows.append(need)
        if bool(need.any()):
            idx = _systematic(log_w, generator)
            idx = torch.where(need[:, None], idx, torch.arange(particles, device=dev)[None])
            x, eps, x0 = (_gather(v, idx, particles) for v in (x, eps, x0))
            tw = torch.gather(tw, 1, idx)
            log_w = torch.where(need[:, None], torch.zeros_like(log_w), log_w)
        # propose x_s: the ancestral kernel N(μ, v) (DDIM, η = 1), times g_s on the observed part
        as_, ss = float(alpha[k + 1]), float(sigma[k + 1])
        var = ss**2 / st**2 * float(trans_var[k])
        mean = as_ * x0 + math.sqrt(max(ss**2 - var, 0.0)) * eps
        prec = 1.0 / var + 1.0 / ss**2
        z = randn(x.shape, generator=generator, dtype=torch.float64, device=dev)
        q_mean = torch.where(obs, (mean / var + as_ * y / ss**2) / prec, mean)
        q_std = torch.where(obs, _f64(1.0 / math.sqrt(prec), dev), _f64(math.sqrt(var), dev))
        x = q_mean + q_std * z
        # weight p(x_s | x_t) / q(x_s | x_t), the twist at x_t divided out
        log_p = -0.5 * ((x - mean) ** 2 / var).flatten(1).sum(1)
        log_q = -0.5 * (z**2).flatten(1).sum(1) - torch.log(q_std / math.sqrt(var)).flatten(1).sum(1)
        log_w += (log_p - log_q).reshape(b, particles) - tw
    bar.close()
    x0 = x0.reshape(b, particles, *x0.shape[1:])[torch.arange(b, device=dev), _categorical(log_w, generator)]
    resampled = torch.stack(resampled_rows) if resampled_rows else torch.zeros(0, b, dtype=torch.bool)
    return x0, {"particles": particles, "ess_threshold": threshold, "ess": torch.stack(ess_rows).cpu(),
                "resampled": resampled.cpu()}


def _smc_start(sde, x, y, obs, a1: float, s1: float) -> torch.Tensor:
    """Prior draws ``x`` with the observed part moved to a draw of prior × g_1 (a product of Gaussians)."""
    prior_std = float(sde.prior_std)
    prec = 1.0 / prior_std**2 + 1.0 / s1**2
    return torch.where(obs, (a1 * y / s1**2) / prec + x / (prior_std * math.sqrt(prec)), x)


def _f64(v: float, device) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64, device=device)


def _ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size ``(Σ w)² / Σ w²`` per example, from log-weights ``(B, P)``."""
    return torch.exp(2 * torch.logsumexp(log_w, 1) - torch.logsumexp(2 * log_w, 1))


def _systematic(log_w: torch.Tensor, generator) -> torch.Tensor:
    """Systematic resampling: ``P`` ancestor indices per example ``(B, P)``, one uniform draw each."""
    b, p = log_w.shape
    cdf = torch.cumsum(torch.softmax(log_w, 1), 1)
    u = (rand((b, 1), generator=generator, dtype=torch.float64, device=log_w.device)
         + torch.arange(p, dtype=torch.float64, device=log_w.device)[None]) / p
    return torch.searchsorted(cdf, u).clamp(max=p - 1)


def _categorical(log_w: torch.Tensor, generator) -> torch.Tensor:
    """One index per example drawn with probabilities ``softmax(log_w)``."""
    cdf = torch.cumsum(torch.softmax(log_w, 1), 1)
    u = rand((log_w.shape[0], 1), generator=generator, dtype=torch.float64, device=log_w.device)
    return torch.searchsorted(cdf, u).clamp(max=log_w.shape[1] - 1)[:, 0]


def _gather(x: torch.Tensor, idx: torch.Tensor, particles: int) -> torch.Tensor:
    b = idx.shape[0]
    xs = x.reshape(b, particles, *x.shape[1:])
    return xs[torch.arange(b, device=x.device)[:, None], idx].reshape(x.shape)


# Masks for images ----------------------------------------------------------------------------
def inpaint_mask(kind: str, shape, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A ``torch.bool`` mask (``True`` = observed) of image shape ``(C, H, W)`` that hides a region.

    ``"bottom"``: the bottom half of the rows (``⌈H/2⌉`` kept on top); ``"right"``: the right half of
    the columns; ``"center"``: the central ``⌊H/2⌋ × ⌊W/2⌋`` square; ``"random:P"``: each pixel
    (all its channels) hidden with probability ``P ∈ (0, 1)``, drawn from ``generator``.
    """
    if len(shape) != 3:
        raise ValueError(f"shape={tuple(shape)}: expected an image shape (C, H, W)")
    c, h, w = (int(s) for s in shape)
    device = "cpu" if device is None else device
    keep = torch.ones(h, w, dtype=torch.bool, device=device)
    if kind == "bottom":
        keep[(h + 1) // 2:] = False
    elif kind == "right":
        keep[:, (w + 1) // 2:] = False
    elif kind == "center":
        h0, w0 = (h - h // 2) // 2, (w - w // 2) // 2
        keep[h0:h0 + h // 2, w0:w0 + w // 2] = False
    elif isinstance(kind, str) and kind.startswith("random:"):
        try:
            p = float(kind.split(":", 1)[1])
        except ValueError:
            p = math.nan
        if not 0 < p < 1:
            raise ValueError(f"mask {kind!r}: expected random:P with P a number in (0, 1)")
        keep = rand((h, w), generator=generator, dtype=torch.float64, device=device) >= p
    else:
        raise ValueError(f"mask {kind!r}: expected one of {', '.join(INPAINT_MASKS)}")
    return keep[None].expand(c, h, w).clone()
