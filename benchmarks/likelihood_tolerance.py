"""Default ODE tolerances against the Hutchinson error on digits (issue 26, item 5).

    python benchmarks/likelihood_tolerance.py --ckpt RUN [--n 64] [--tols 1e-3,1e-4,1e-5] [--tight 1e-8]
                                              [--probes 16] [--factor 10] [--threads 1]

``RUN`` is a trained digits run (the default ``python -m scoresde.train``). Everything goes through
the evaluation's own path: the run is loaded as ``python -m scoresde.evaluate`` loads it
(:func:`scoresde.training.checkpoint.load_model`), the data and settings are the run's
(:func:`scoresde.evaluation.bpd_eval.evaluation_data`, :meth:`EvalSettings.from_config`: its
``ode_sigma``, trace, probe kind, seed), and the first ``--n`` test examples are evaluated in one
batch (``--n`` ≤ the run's ``eval.batch_size``; the adaptive solver's error control is over the whole
batch, so a batch of ``n`` is not quite the evaluation's batch of 256).

1. **Solver error.** :func:`scoresde.evaluation.bpd_eval.ode_bpd` (the evaluation's bits/dim) at
   ``rtol = atol = tol`` for each ``--tols``, at ``10·tight`` and at ``--tight``. The generator is
   seeded the same for every solve, so every solve sees the same dequantization noise and the
   same Rademacher probe: the estimator's noise cancels in ``bpd(tol) − bpd(tight)`` and what is
   left is the solver's error. Printed: mean and max over examples of that per-example |Δ|, the
   error of the subset's mean bpd and, as a bound on the test set's, that plus two standard errors
   over the examples, NFE per solve. The row ``10·tight`` against ``tight`` checks
   that the reference has converged.
2. **One-probe Hutchinson error.** :func:`scoresde.likelihood.ode.log_likelihood` with ``--probes``
   probes solved jointly (at the run's own tolerance) on the same dequantized points (drawn as
   :func:`scoresde.likelihood.ode.bits_per_dim` draws them; checked: with one probe this path gives
   ``ode_bpd``'s per-example bits/dim to round-off). Per example, the standard deviation of the
   one-probe estimate is ``stderr·√P`` (the sample std over the P probes), in bits/dim. The
   one-probe noise in a mean over ``N`` examples is ``rms(std)/√N``: printed for the subset and for
   the whole test split (the figure the evaluation reports).
3. **Verdict.** A tolerance is *enough* when its solver error is below the one-probe Hutchinson
   error by ``--factor``, both per example (mean |Δ| against the mean one-probe std) and for the
   test-set mean (the bound |Δ mean| + 2 SE against the test split's Hutchinson SE). :func:`loosest_enough` names
   the loosest such tolerance.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time

import torch

from scoresde.core.bpd import bpd_offset, dequantize, nats_to_bpd
from scoresde.evaluation.bpd_eval import EvalSettings, evaluation_data, ode_bpd
from scoresde.likelihood.ode import log_likelihood
from scoresde.likelihood.vlb_grid import t_of_sigma
from scoresde.training.checkpoint import load_model
from scoresde.util.rng import rand

DEFAULT_TOLS = (1e-3, 1e-4, 1e-5)


# Pure logic ------------------------------------------------------------------------------------
def solver_error(per: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float, float]:
    """(mean, max) over examples of ``|per − ref|``, the error of the mean ``|mean(per − ref)|`` and
    its bound as an estimate of the whole test set's: that plus two standard errors,
    ``|mean| + 2·std/√n`` (bits/dim)."""
    d = per.to(torch.float64) - ref.to(torch.float64)
    bias = float(d.mean().abs())
    return float(d.abs().mean()), float(d.abs().max()), bias, bias + 2 * float(d.std()) / math.sqrt(d.numel())


def one_probe_std(stderr_nats: torch.Tensor, n_probes: int, dim: int) -> torch.Tensor:
    """Per-example std of a one-probe estimate in bits/dim from the standard error (nats) of the
    mean of ``n_probes`` probes: ``stderr·√P / (D ln 2)``."""
    return nats_to_bpd(stderr_nats.to(torch.float64) * math.sqrt(n_probes), dim)


def mean_se(std: torch.Tensor, n: int) -> float:
    """Standard deviation of a mean over ``n`` examples of independent noises of the given
    per-example stds (typical example: their rms): ``rms(std)/√n``."""
    return float(std.to(torch.float64).pow(2).mean().sqrt()) / math.sqrt(n)


def loosest_enough(rows, probe_std: float, test_se: float, factor: float):
    """The loosest tolerance whose solver error is ``factor`` times below the one-probe noise both
    per example (``mean_err·factor ≤ probe_std``) and in the test-set mean
    (``bias_bound·factor ≤ test_se``); ``rows`` are ``(tol, mean_err, bias_bound)``. ``None`` if none is."""
    ok = [tol for tol, err, bias in rows if err * factor <= probe_std and bias * factor <= test_se]
    return max(ok) if ok else None


# Measurements ----------------------------------------------------------------------------------
def dequantized(x_int: torch.Tensor, levels: int, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """The points :func:`bits_per_dim` evaluates for one batch (its first draw from a generator seeded
    ``seed``: the noise ``u``), and the generator, ready to draw the probes as it does."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = rand(x_int.shape, generator=gen, dtype=torch.float64, device=x_int.device)
    return dequantize(x_int, levels, u=u, dtype=torch.float64), gen


def probes_solve(model, x_int, levels, s: EvalSettings, n_probes: int, rtol: float, t_eps: float):
    """:func:`log_likelihood` of the evaluation's dequantized points with ``n_probes`` joint probes:
    (per-example bits/dim, per-example stderr in nats or None, NFE)."""
    z, gen = dequantized(x_int, levels, s.seed)
    r = log_likelihood(model, z, trace=s.trace, probe=s.probe, n_probes=n_probes, t_eps=t_eps, rtol=rtol,
                       atol=rtol, generator=gen)
    dim = math.prod(x_int.shape[1:])
    bpd = nats_to_bpd(-r.log_prob.cpu(), dim) + bpd_offset(levels)
    return bpd, r.stderr, r.nfe


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="a trained digits run folder (read only)")
    p.add_argument("--n", type=int, default=64, help="first N test examples, one batch (default 64)")
    p.add_argument("--tols", default=",".join(f"{t:g}" for t in DEFAULT_TOLS),
                   help="rtol = atol values to test (default 1e-3,1e-4,1e-5)")
    p.add_argument("--tight", type=float, default=1e-8, help="reference tolerance (default 1e-8)")
    p.add_argument("--probes", type=int, default=16, help="Hutchinson probes of the joint solve (default 16)")
    p.add_argument("--factor", type=float, default=10.0, help="'clearly below' factor of the verdict (default 10)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tols = sorted({float(t) for t in a.tols.split(",")}, reverse=True)
    if a.probes < 2:
        p.error("--probes: expected at least 2 (their spread is the measurement)")

    run = load_model(a.ckpt)
    data = evaluation_data(run)
    s = EvalSettings.from_config(run.config).replace(limit=a.n, vlb=False)
    if s.trace != "hutchinson":
        p.error(f"the run evaluates with the {s.trace} trace: nothing to compare against")
    if not 2 <= a.n <= min(s.batch_size, len(data.x_int)):
        p.error(f"--n {a.n}: expected 2..{min(s.batch_size, len(data.x_int))} (one batch of the evaluation)")
    x_int, levels, dim, n_test = data.x_int[:a.n], data.levels, data.dim, len(data.x_int)
    t_eps = 1e-5 if s.ode_sigma is None else t_of_sigma(run.model.sde, s.ode_sigma)
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"# ODE tolerance vs one-probe Hutchinson error, {now:%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cpus, {a.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"run {a.ckpt} (step {run.step}): {data.name} test, first {a.n} of {n_test} examples, D = {dim}, "
          f"{levels} levels; settings: {s.describe()}")

    # 1. the solver error, same dequantization and probe for every solve
    looser = a.tight * 10
    per, nfe, secs = {}, {}, {}
    for tol in tols + [t for t in (looser, a.tight) if t not in tols]:
        start = time.perf_counter()
        r = ode_bpd(run.model, x_int, levels, s.replace(rtol=tol, atol=tol))
        per[tol], nfe[tol], secs[tol] = r.per_sample, r.nfe, time.perf_counter() - start
        print(f"  rtol = atol = {tol:.0e}: mean bpd {r.bpd:.6f}, NFE {r.nfe}, {secs[tol]:.0f} s", flush=True)

    # the probes' path is the evaluation's: one probe reproduces ode_bpd's per-example figures
    check_tol = tols[0]
    one, _, _ = probes_solve(run.model, x_int, levels, s, 1, check_tol, t_eps)
    gap = float((one - per[check_tol]).abs().max())
    print(f"  path check at {check_tol:.0e}: log_likelihood on the same draws vs ode_bpd, max |Δ| {gap:.1e} bits/dim")
    assert gap < 1e-9, gap

    # 2. the one-probe Hutchinson spread, P probes jointly at the run's tolerance
    start = time.perf_counter()
    many, stderr, nfe_p = probes_solve(run.model, x_int, levels, s, a.probes, s.rtol, t_eps)
    secs_p = time.perf_counter() - start
    std = one_probe_std(stderr.cpu(), a.probes, dim)
    std_mean, std_median = float(std.mean()), float(std.median())
    se_n, se_test = mean_se(std, a.n), mean_se(std, n_test)
    data_se = float(per[s.rtol].std()) / math.sqrt(a.n) if s.rtol in per else float("nan")

    ref = per[a.tight]
    print(f"\nSolver error: per-example |bpd(tol) − bpd({a.tight:.0e})|, same dequantization and same probe "
          f"(bits/dim, n = {a.n}); ratios: the one-probe Hutchinson error over the solver error")
    print("\n| rtol = atol | NFE per solve | s | mean \\|Δ\\| | max \\|Δ\\| | \\|Δ mean bpd\\| (+2 SE) | "
          "one-probe std / mean \\|Δ\\| | test-set Hutchinson SE / (\\|Δ mean\\| + 2 SE) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for tol in tols + ([looser] if looser not in tols else []):
        mean_err, max_err, bias, bound = solver_error(per[tol], ref)
        if tol in tols:
            rows.append((tol, mean_err, bound))
        tag = " (default)" if tol == s.rtol else " (reference check)" if tol == looser else ""
        print(f"| {tol:.0e}{tag} | {nfe[tol]} | {secs[tol]:.0f} | {mean_err:.1e} | {max_err:.1e} | {bias:.1e} "
              f"({bound:.1e}) | {std_mean / max(mean_err, 1e-300):.0f} | {se_test / max(bound, 1e-300):.0f} |")
    print(f"| {a.tight:.0e} (reference) | {nfe[a.tight]} | {secs[a.tight]:.0f} | 0 | 0 | 0 | — | — |")

    print(f"\nOne-probe Hutchinson error: {a.probes} {s.probe} probes solved jointly at rtol = atol = {s.rtol:g} "
          f"(NFE {nfe_p}, {secs_p:.0f} s), same dequantization; per-example std of one probe = stderr·√{a.probes}")
    print("\n| per-example one-probe std: mean | median | min | max | its SE in the mean of n examples | "
          f"… of the {n_test}-example test set | data SE (std of bpd over the n examples / √n) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {std_mean:.2e} | {std_median:.2e} | {float(std.min()):.2e} | {float(std.max()):.2e} | {se_n:.2e} | "
          f"{se_test:.2e} | {data_se:.2e} |")
    default_mean = float(per[s.rtol].mean()) if s.rtol in per else math.nan
    print(f"\nmean bpd over the n examples: one probe at the default {default_mean:.4f}, "
          f"{a.probes} probes {float(many.mean()):.4f}, reference {float(ref.mean()):.4f}")
    best = loosest_enough(rows, std_mean, se_test, a.factor)
    verdict = "none of them" if best is None else f"{best:.0e}"
    print(f"loosest tolerance with its solver error ≥ {a.factor:g}× below the one-probe Hutchinson error "
          f"(per example and in the test-set mean): {verdict}; the run's default is {s.rtol:g}")


if __name__ == "__main__":
    main()
