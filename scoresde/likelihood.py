"""Probability-flow log-likelihood and bits per dimension (Song et al. 2021, eq. 39 and App. D.2).

Along the probability-flow ODE ``dx/dt = f̃(x, t)`` the density obeys the instantaneous
change of variables (Chen et al. 2018), so integrating forward from the data at ``t_eps``,

    log p_{t_eps}(x) = log p_1(x(1)) + ∫_{t_eps}^{1} ∇·f̃(x(t), t) dt,      p_1 = N(0, I).

The divergence is exact (``D`` vector–Jacobian products) or the Hutchinson–Skilling
estimate ``vᵀ (∂f̃/∂x) v`` with one probe ``v`` per sample held fixed for the whole solve
(Grathwohl et al. 2019; PITFALLS.md). :func:`bits_per_dim` turns it into bits/dim for
integer data by uniform dequantization (MATH.md, "Bits per dimension").

**Clock.** The solver integrates in the integrated rate ``B = B(t) = ∫₀ᵗ β`` instead of ``t``:
``dx/dB = f̃/β(t) = -½ (x - ε/σ)`` and ``d(∫∇·f̃)/dB = ∇·f̃ / β(t)``. The value of the integral is
unchanged (a change of variable), but the right-hand side no longer carries ``β(t)``, which
is discontinuous for the discrete DDPM schedule (piecewise constant) and steep for the
cosine one: with ``t`` as the clock dopri5 needs ~10× the NFE on a DDPM schedule and still
misses the tolerance at the jumps; with ``B`` every VP schedule gives the same ODE up to the
time fed to the network. ``t(B)`` comes from ``VPSDE.time_for_integrated_beta`` (Newton, warm-started).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .data import dequantize
from .odesolve import ADAPTIVE_METHODS, FIXED_METHODS, odeint_checked
from .rng import rand, randint, randn
from .samplers.base import check_choice, check_model, progress_bar
from .samplers.ode import ProbabilityFlow

__all__ = ["LikelihoodResult", "BpdResult", "log_likelihood", "bits_per_dim", "TRACES", "PROBES"]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class LikelihoodResult:
    """Per-sample ``log p_{t_eps}(x)`` in nats (float64, shape ``(B,)``) and its parts.

    ``log_prob = prior_log_prob + divergence_integral``; ``z`` is the latent ``x(1)``
    (shape of ``x``); ``nfe`` counts batched drift evaluations; ``stderr`` is the standard
    error of ``log_prob`` over Hutchinson probes (``None`` for the exact trace or one probe);
    ``probes`` are the Hutchinson probes used, ``(n_probes, B, *dims)`` (``None`` for the exact trace).
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    divergence_integral: torch.Tensor
    z: torch.Tensor
    nfe: int
    stderr: torch.Tensor | None = None
    probes: torch.Tensor | None = None


@dataclass
class BpdResult:
    """Mean bits/dim over a data set, its standard error, total NFE, per-sample bits/dim ``(B,)``.

    ``terms`` holds a breakdown in bits/dim (the variational bound's ``L_T``, ``L_sum``, ``L_0``);
    ``info`` holds extras such as ``nfe_per_solve``.
    """

    bpd: float
    stderr: float
    nfe: int
    per_sample: torch.Tensor
    terms: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: expected an integer ≥ {low}")
    return value


def _draw_probes(kind: str, shape, generator, dtype, device) -> torch.Tensor:
    """``(P, B, *dims)`` probes with ``E[v vᵀ] = I``: Rademacher ``±1`` or standard normal, drawn on
    the generator's device (:mod:`scoresde.rng`) and returned on ``device``."""
    if kind == "gaussian":
        v = randn(shape, generator=generator, dtype=torch.float64, device=device)
    else:
        v = randint(0, 2, shape, generator=generator, device=device).to(torch.float64) * 2 - 1
    return v.to(dtype=dtype, device=device)


def _drift_and_divergence(model, x, t, probes):
    """``f̃(x, t)`` and its divergence: ``(1, B)`` exact, or ``(P, B)`` Hutchinson ``vᵀ J v``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = ProbabilityFlow(model)(t, x)  # f̃ = f - ½ g² s (Song et al. 2021, eq. 13)
        if probes is None:  # exact trace: one VJP per coordinate, Σ_d ∂f_d/∂x_d
            flat = f.flatten(1)
            n = flat.shape[1]
            div = torch.zeros_like(flat[:, 0])
            for d in range(n):
                (g,) = torch.autograd.grad(flat[:, d].sum(), x, retain_graph=d < n - 1)
                div = div + g.flatten(1)[:, d]
            div = div[None]
        else:  # Hutchinson: vᵀ (∂f/∂x) v with the fixed probes, one VJP per probe
            rows = []
            for p, v in enumerate(probes):
                (g,) = torch.autograd.grad(f, x, grad_outputs=v, retain_graph=p < len(probes) - 1)
                rows.append((g * v).flatten(1).sum(1))
            div = torch.stack(rows)
    return f.detach(), div.detach()


def log_likelihood(model, x: torch.Tensor, *, trace: str = "exact", probe: str = "rademacher",
                   n_probes: int = 1, t_eps: float = 1e-5, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None,
                   dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None,
                   progress: bool = False) -> LikelihoodResult:
    """``log p_{t_eps}(x)`` in nats by the probability-flow ODE, ``t_eps`` → 1 (Song et al. 2021, eq. 39).

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)`` (a ScoreModel or the GaussianMixture oracle).
        x: ``(B, *dims)`` points in model space.
        trace: ``"exact"`` (``D`` VJPs per evaluation) or ``"hutchinson"`` (``n_probes`` VJPs).
        probe, n_probes: Hutchinson probe distribution and count. The probes are drawn once
            and held fixed for the whole solve. Their divergence integrals ride in one joint
            solve: the trajectory ``x(t)`` does not depend on the probe, so this equals
            ``n_probes`` independent solves up to solver tolerance at the cost of one network
            call per evaluation; ``log_prob`` averages them and ``stderr`` is their standard error.
        t_eps: start time; ``log_prob`` estimates ``log p_{t_eps}``.
        method, rtol, atol, steps: passed to :func:`scoresde.odesolve.odeint_checked`
            (defaults as score_sde's likelihood: dopri5, ``rtol = atol = 1e-5``); the
            clock is ``B`` (module docstring), so fixed-step methods take equal steps in ``B``.
        dtype: dtype of the augmented ODE state (float64 by default).
        generator: for the Hutchinson probes: a CPU generator or one on ``x``'s device; the
            probes are drawn on the generator's device and moved to ``x``'s (:mod:`scoresde.rng`).

    Returns tensors on ``x``'s device.
    """
    check_model(model)
    check_choice("trace", trace, TRACES)
    check_choice("probe", probe, PROBES)
    n_probes = _check_int("n_probes", n_probes)
    check_choice("method", method, ADAPTIVE_METHODS + FIXED_METHODS)
    if not (isinstance(t_eps, (int, float)) and not isinstance(t_eps, bool) and 0 < t_eps < 1):
        raise ValueError(f"t_eps={t_eps!r}: expected a number in (0, 1)")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r}: expected a floating torch dtype such as torch.float64")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x of shape {tuple(getattr(x, 'shape', ()))}: expected a tensor (B, *dims)")
    x = x.detach().to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError("x: expected finite values")
    probes = None
    if trace == "hutchinson":
        probes = _draw_probes(probe, (n_probes,) + tuple(x.shape), generator, dtype, x.device)

    nfe, clock = 0, {"t": t_eps}  # the last t(B) warm-starts the next inversion
    bar = progress_bar(1000, progress, "log-likelihood")
    sde = model.sde
    b_span = sde.integrated_beta(torch.tensor([t_eps, 1.0], dtype=torch.float64, device=x.device))

    def func(b, state):  # d(x, ∫∇·f̃)/dB = (f̃, ∇·f̃) / β(t(B))
        nonlocal nfe
        nfe += 1
        clock["t"] = float(sde.time_for_integrated_beta(float(b), lo=t_eps, hi=1.0, t0=clock["t"]))
        t = torch.tensor(clock["t"], dtype=torch.float64, device=x.device)
        f, div = _drift_and_divergence(model, state[0], t, probes)
        dt_db = (1.0 / sde.beta(t)).to(x.device)
        bar.update(int(1000 * float((b - b_span[0]) / (b_span[1] - b_span[0]))) - bar.n)
        return (f * dt_db).to(dtype), (div * dt_db).to(dtype)

    n_div = 1 if probes is None else n_probes
    y0 = (x, torch.zeros((n_div, x.shape[0]), dtype=dtype, device=x.device))
    try:
        xs, divs = odeint_checked(func, y0, b_span, method=method, rtol=rtol, atol=atol, steps=steps)
    finally:
        bar.close()
    z, div_int = xs[-1], divs[-1].to(torch.float64)  # (B, *dims), (P, B)
    prior = model.sde.prior_log_prob(z)
    stderr = None
    if probes is not None and n_probes > 1:
        stderr = div_int.std(0) / math.sqrt(n_probes)
    divergence = div_int.mean(0)
    return LikelihoodResult(prior + divergence, prior, divergence, z, nfe, stderr, probes)


def _check_data(x_int, levels) -> int:
    """``x_int`` must be ``(B, *dims)`` with ``B ≥ 1``; returns ``D = prod(dims)``."""
    if not isinstance(x_int, torch.Tensor) or x_int.ndim < 2 or x_int.shape[0] < 1:
        raise ValueError(f"x_int of shape {tuple(getattr(x_int, 'shape', ()))}: expected a "
                         f"tensor (B, *dims) of integers in 0..levels-1")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels={levels!r}: expected an integer ≥ 2")
    return math.prod(x_int.shape[1:])


def summarize(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over the data set of ``(n_draws, B)`` per-draw values.

    Each sample's draws are averaged first; the standard error is then ``std/√B`` over
    samples (which includes the draw noise). With a single sample it is the standard
    error over its draws (``nan`` with one draw).
    """
    per_sample = values.mean(0)
    if per_sample.numel() > 1:
        return float(per_sample.mean()), float(per_sample.std() / math.sqrt(per_sample.numel()))
    if values.shape[0] > 1:
        return float(per_sample.mean()), float(values.std() / math.sqrt(values.shape[0]))
    return float(per_sample.mean()), float("nan")


def bits_per_dim(model, x_int: torch.Tensor, levels: int, *, n_dequant: int = 1,
                 batch_size: int = 256, generator: torch.Generator | None = None,
                 progress: bool = False, **options) -> BpdResult:
    """Bits/dim of integer data ``x_int`` (``(B, *dims)``, values ``0..levels-1``) under ``model``.

    Uniform dequantization ``z = 2(k + u)/L - 1`` (:func:`scoresde.data.dequantize`) puts each
    level in a model-space bin of width ``w = 2/L``, so (MATH.md, "Bits per dimension")
    ``-log₂ P(k)/D ≤ -E_u[log p_z(z)]/(D ln 2) - log₂ w`` with ``-log₂ w = log₂ L - 1``.
    ``log p_z`` comes from :func:`log_likelihood` (``options`` are passed to it). Each sample
    is averaged over ``n_dequant`` draws; ``stderr`` is over the data set (see :func:`summarize`).
    ``x_int`` must be on the model's device; ``generator`` (CPU or that device) draws the
    dequantization noise and the probes, in this order per batch; ``per_sample`` is on the CPU.
    """
    dim = _check_data(x_int, levels)
    n_dequant = _check_int("n_dequant", n_dequant)
    batch_size = _check_int("batch_size", batch_size)
    offset = -math.log2(2.0 / levels)  # -log₂(bin width in model space [-1, 1])
    values = torch.empty((n_dequant, x_int.shape[0]), dtype=torch.float64, device="cpu")
    nfe = solves = 0
    starts = range(0, x_int.shape[0], batch_size)
    bar = progress_bar(n_dequant * len(starts), progress, "bits/dim")
    try:
        for r in range(n_dequant):
            for s in starts:
                chunk = x_int[s:s + batch_size]
                u = rand(chunk.shape, generator=generator, dtype=torch.float64, device=chunk.device)
                z = dequantize(chunk, levels, u=u, dtype=torch.float64)
                res = log_likelihood(model, z, generator=generator, **options)
                values[r, s:s + batch_size] = -res.log_prob.cpu() / (dim * math.log(2)) + offset
                nfe, solves = nfe + res.nfe, solves + 1
                bar.update(1)
                bar.set_postfix(bpd=f"{float(values[:r + 1, :s + len(chunk)].mean()):.4f}")
    finally:
        bar.close()
    bpd, stderr = summarize(values)
    return BpdResult(bpd, stderr, nfe, values.mean(0), info={"nfe_per_solve": nfe / solves,
                                                              "offset": offset})
