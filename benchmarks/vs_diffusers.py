"""scoresde's samplers versus diffusers' schedulers on the same exact ε (issue 7, item 2).

Both sides drive the analytic oracle (:class:`scoresde.analytic.GaussianMixture`) on the
discrete DDPM schedule (``VPSDE.ddpm()``: linear β 1e-4..0.02, N = 1000). diffusers' integer
timestep ``k`` is our time ``t = (k + 1)/N``: their ``ᾱ_k = Π_{j≤k}(1 - β_j)`` is our
``ᾱ((k+1)/N)`` (checked numerically below). Errors: sliced W1 to a large oracle sample of
``p_0`` and the gap in mean ``log p_0`` under the oracle, with the Monte Carlo noise floor (the
same metrics for a fresh exact sample of the same size).

Fair shot for both sides: every family (scheduler or sampler) has a few configurations; the
best one per (data set, NFE budget) is chosen on a *selection* run (its own seed), then
reported on the *evaluation* run (another seed), so the minimum over configurations is not
biased down by the noise it is selected on. A configuration may use at most the NFE budget.

    python benchmarks/vs_diffusers.py            # the table in docs/benchmarks.md
    python benchmarks/vs_diffusers.py --quick    # smoke test (small sizes)
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import math
import time

import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.metrics import random_directions, sliced_wasserstein
from scoresde.samplers import SAMPLERS

N_TRAIN = 1000
NFES = (10, 20, 50, 100)


# Metrics -----------------------------------------------------------------------------------
def projections(dim: int, n_proj: int, seed: int) -> torch.Tensor:
    """``(dim, n_proj)``: the directions ``scoresde.metrics.sliced_wasserstein`` draws from ``seed``."""
    return random_directions(dim, n_proj, torch.Generator().manual_seed(seed)).T


def sliced_w1(x: torch.Tensor, ref_sorted: torch.Tensor, proj: torch.Tensor) -> float:
    """Mean over directions of the exact 1-D W1 between the empirical laws of ``x`` (n points)
    and of a reference whose projections are pre-sorted, ``(M, n_proj)`` with ``n | M``: the
    value of ``scoresde.metrics.sliced_wasserstein`` (checked in ``Problem``) without re-sorting
    the large reference for every sample."""
    xs = torch.sort(x.reshape(x.shape[0], -1).to(torch.float64) @ proj, dim=0).values
    m = ref_sorted.shape[0]
    if m % xs.shape[0]:
        raise ValueError(f"reference size {m} must be a multiple of the sample size {xs.shape[0]}")
    xs = xs.repeat_interleave(m // xs.shape[0], dim=0)  # quantile function on the finer grid
    return float((xs - ref_sorted).abs().mean())


class Problem:
    """One data set: oracle, reference sample, the selection/evaluation noise, the floors."""

    def __init__(self, name: str, oracle: GaussianMixture, n: int, ref_mult: int, n_proj: int, sel_n: int):
        self.name, self.oracle, self.n = name, oracle, n
        g = torch.Generator().manual_seed(1234)
        ref = oracle.sample(n * ref_mult, generator=g)
        self.proj = projections(oracle.dim, n_proj, seed=99)
        self.ref_sorted = torch.sort(ref.reshape(ref.shape[0], -1) @ self.proj, dim=0).values
        self.ref_logp = float(oracle.log_prob(ref).mean())
        x = oracle.sample(n, generator=g)
        lib = sliced_wasserstein(x, ref, n_projections=n_proj, generator=torch.Generator().manual_seed(99))
        assert abs(lib - sliced_w1(x, self.ref_sorted, self.proj)) < 1e-9 * lib, "SW1 disagrees with metrics"
        # i.i.d. floor: the errors of fresh exact samples of size n (mean and sd over 5 draws).
        floors = torch.tensor([self.errors(oracle.sample(n, generator=g)) for _ in range(5)])
        self.floor_iid, self.floor_iid_sd = floors.mean(0).tolist(), floors.std(0).tolist()
        shape = oracle.event_shape
        self.x_sel = torch.randn((sel_n,) + shape, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(11))
        self.x_eval = torch.randn((n,) + shape, dtype=torch.float64,
                                  generator=torch.Generator().manual_seed(22))
        # paired floor: the errors of the (numerically) exact probability-flow image of the very
        # noise x_eval every sampler starts from, denoised at t = 1/N.
        self.floor_paired = self.errors(reference_flow(oracle, self.x_eval))

    def errors(self, x: torch.Tensor) -> tuple[float, float]:
        """(sliced W1 to the reference, |mean log p_0(x) - mean log p_0(reference)|)."""
        if not torch.isfinite(x).all():
            return math.inf, math.inf
        sw = sliced_w1(x, self.ref_sorted, self.proj)
        return sw, abs(float(self.oracle.log_prob(x).mean()) - self.ref_logp)


def reference_flow(oracle: GaussianMixture, x_T: torch.Tensor) -> torch.Tensor:
    """Probability-flow image of ``x_T`` at ``t = 1/N``, denoised: DPM-Solver++(3M) through all
    N - 1 grid intervals (uniform t). Its distance to the 2M solution is printed as a check."""
    kw = dict(steps=N_TRAIN - 1, spacing="uniform", t_eps=1 / N_TRAIN)
    x3 = SAMPLERS["dpmpp"](oracle, x_T, order=3, **kw).x
    x2 = SAMPLERS["dpmpp"](oracle, x_T[:500], order=2, **kw).x
    print(f"# reference flow ({oracle.dim}-D): max |3M - 2M| = {float((x3[:500] - x2).abs().max()):.1e}")
    return x3


# diffusers -----------------------------------------------------------------------------------
def diffusers_families():
    """Name → list of (config label, scheduler factory). Common: linear β 1e-4..0.02, N = 1000,
    ε-prediction, clip_sample and thresholding off."""
    import diffusers as d

    base = dict(num_train_timesteps=N_TRAIN, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    fam = {"DDPMScheduler": [], "DDIMScheduler": [], "DPMSolverMultistep": [], "UniPCMultistep": []}
    for sp in ("leading", "linspace", "trailing"):
        fam["DDPMScheduler"].append((sp, dict(cls=d.DDPMScheduler, clip_sample=False, timestep_spacing=sp)))
        fam["DDIMScheduler"].append((sp, dict(cls=d.DDIMScheduler, clip_sample=False, timestep_spacing=sp)))
        for order in (2, 3):
            for sig in ("", "karras", "lu") if sp == "linspace" else ("",):  # sigma grids ignore sp
                kw = dict(use_karras_sigmas=sig == "karras", use_lu_lambdas=sig == "lu")
                fam["DPMSolverMultistep"].append(
                    (f"{sp} o{order} {sig}".strip(),
                     dict(cls=d.DPMSolverMultistepScheduler, solver_order=order, timestep_spacing=sp,
                          algorithm_type="dpmsolver++", **kw)))
            for sig in ("", "karras") if sp == "linspace" else ("",):
                for st in ("bh1", "bh2"):
                    fam["UniPCMultistep"].append(
                        (f"{sp} o{order} {st} {sig}".strip(),
                         dict(cls=d.UniPCMultistepScheduler, solver_order=order, solver_type=st,
                              timestep_spacing=sp, use_karras_sigmas=sig == "karras")))
    return {name: [(label, _factory(base, spec)) for label, spec in cfgs] for name, cfgs in fam.items()}


def _factory(base, spec):
    spec = dict(spec)
    cls = spec.pop("cls")
    return lambda: cls(**base, **spec)


def check_time_mapping(sde: VPSDE, make_scheduler) -> float:
    """Max relative gap between diffusers' ``ᾱ_k`` and our ``ᾱ((k+1)/N)``; asserts it is tiny."""
    ac = make_scheduler().alphas_cumprod.to(torch.float64)  # stored in float32 by diffusers
    ours = sde.alpha_bar(torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN)
    gap = float(((ac - ours).abs() / ours).max())
    assert gap < 1e-5, f"time mapping t = (k+1)/N broken: relative ᾱ gap {gap:.2e}"
    return gap


def run_diffusers(make_scheduler, oracle, x_T, nfe: int, seed: int):
    """Drive one diffusers scheduler with the oracle's exact ε; returns (samples, NFE)."""
    sched = make_scheduler()
    sched.set_timesteps(nfe)
    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
    x, calls = x_T * sched.init_noise_sigma, 0
    for k in sched.timesteps:
        if float(k) != int(k):
            raise ValueError(f"non-integer diffusers timestep {k}")
        t = (int(k) + 1) / N_TRAIN  # their timestep k is our t = (k+1)/N
        eps = oracle.eps(sched.scale_model_input(x, k), t)
        calls += 1
        x = sched.step(eps, k, x, **step_kw).prev_sample
    return x, calls


# scoresde --------------------------------------------------------------------------------------
_TE = [k / N_TRAIN for k in (1, 4, 16, 32)]  # end times t_eps = k/N tried (denoised there)
OUR_FAMILIES = {  # family → (sampler name, list of option dicts)
    "dpmpp": ("dpmpp", [dict(order=o, spacing=sp, t_eps=te, lower_order_final=lof) for o in (2, 3)
                        for sp in ("logsnr", "karras") for te in _TE for lof in (True, False)]),
    "heun": ("heun", [dict(spacing=sp, t_eps=te) for sp in ("karras", "logsnr") for te in _TE]),
    "ddim": ("ddim", [{}, dict(spacing="logsnr"), dict(spacing="karras")]),
    "ancestral": ("ancestral", [{}]),
    "ode euler": ("ode", [dict(method="euler")]),
    "ode rk4": ("ode", [dict(method="rk4")]),
}


def steps_for_budget(fn, oracle, opts, nfe: int) -> int | None:
    """Largest ``steps`` whose NFE is at most ``nfe`` (bisection on a 1-sample probe), or None."""
    probe = torch.zeros((1,) + oracle.event_shape, dtype=torch.float64)

    def cost(s):
        try:
            return fn(oracle, probe, steps=s, generator=torch.Generator().manual_seed(0), **opts).nfe
        except ValueError as err:  # e.g. a spacing with too many steps for the discrete grid
            if "option" in str(err):
                raise
            return math.inf

    lo, hi = 0, nfe
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= nfe else (lo, mid - 1)
    return lo or None


def label(opts) -> str:
    out = []
    for k, v in opts.items():
        if k in ("spacing", "method"):
            out.append(str(v))
        elif k == "t_eps":
            out.append(f"t_eps={round(v * N_TRAIN)}/N")
        elif k == "lower_order_final":
            out.append("" if v else "no-lof")
        else:
            out.append(f"{k}={v}")
    return " ".join(o for o in out if o) or "default"


def our_configs(family, prob, nfe):
    name, option_list = OUR_FAMILIES[family]
    fn = SAMPLERS[name]
    out = []
    for opts in option_list:
        if nfe > 16 and opts.get("lower_order_final") is False:
            continue  # differs from the default only below 15 steps
        try:
            steps = steps_for_budget(fn, prob.oracle, opts, nfe)
        except (TypeError, ValueError):  # option not supported by this sampler
            continue
        if steps is not None:
            out.append((f"{label(opts)} K={steps}", (fn, opts, steps)))
    return out


# The run ----------------------------------------------------------------------------------------
def evaluate_family(kind, cfgs, prob: Problem, nfe: int):
    """Pick the best configuration (SW1) on the selection noise, score it on the evaluation noise."""
    def run(cfg, x_T):
        if kind == "diffusers":
            return run_diffusers(cfg, prob.oracle, x_T, nfe, seed=5)
        fn, opts, steps = cfg
        r = fn(prob.oracle, x_T, steps=steps, generator=torch.Generator().manual_seed(5), **opts)
        return r.x, r.nfe

    best = None
    for name, cfg in cfgs:
        x, calls = run(cfg, prob.x_sel)
        sw = prob.errors(x)[0] if calls <= nfe else math.inf
        if best is None or sw < best[0]:
            best = (sw, name, cfg)
    x, calls = run(best[2], prob.x_eval)
    return best[1], calls, prob.errors(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, two NFE budgets (smoke test)")
    ap.add_argument("--n", type=int, default=10000, help="samples per evaluation run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, nfes, ref_mult, n_proj = (args.n, NFES, 10, 256) if not args.quick else (1000, (10, 20), 4, 32)
    sel_n = max(n // 4, 500)
    start = time.time()
    sde = VPSDE.ddpm()
    fams_d = diffusers_families()
    gap = check_time_mapping(sde, fams_d["DDIMScheduler"][0][1])
    missing = [f for f, (s, _) in OUR_FAMILIES.items() if s not in SAMPLERS]
    print(f"# scoresde vs diffusers {__import__('diffusers').__version__}, torch {torch.__version__}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# DDPM linear β 1e-4..0.02, N={N_TRAIN}; mapping t=(k+1)/N checked: max rel. ᾱ gap {gap:.1e}")
    print(f"# n={n} samples per evaluation run (selection runs: {sel_n}), reference {ref_mult}n exact "
          f"samples, {n_proj} projections; samplers not available (skipped): {', '.join(missing) or 'none'}")
    mix = GaussianMixture.random(16, 4, seed=0, sde=sde)
    problems = [Problem("ring-8 2-D", GaussianMixture.ring(sde=sde), n, ref_mult, n_proj, sel_n),
                Problem("mix-4 16-D", mix, n, ref_mult, n_proj, sel_n)]
    rows = []
    for nfe in nfes:
        for kind, fams in (("scoresde", [f for f in OUR_FAMILIES if f not in missing]),
                           ("diffusers", list(fams_d))):
            for fam in fams:
                cells = []
                for p in problems:
                    cfgs = fams_d[fam] if kind == "diffusers" else our_configs(fam, p, nfe)
                    cells.append(evaluate_family(kind, cfgs, p, nfe) if cfgs else None)
                rows.append((nfe, kind, fam, cells))
    print_table(rows, problems)
    print(f"# wall time {time.time() - start:.0f} s ({args.threads} thread(s), shared machine)")


def print_table(rows, problems):
    print("\n| NFE | side | family | " + " | ".join(
        f"{p.name} SW1 | Δlogp | config (NFE)" for p in problems) + " |")
    print("|" + "---|" * (3 + 3 * len(problems)))
    print("| - | floor | i.i.d. exact samples (mean ± sd of 5) | " + " | ".join(
        f"{p.floor_iid[0]:.4f} ± {p.floor_iid_sd[0]:.4f} | {p.floor_iid[1]:.4f} ± {p.floor_iid_sd[1]:.4f} | "
        for p in problems) + " |")
    print("| - | floor | exact flow of the same noise | " + " | ".join(
        f"{p.floor_paired[0]:.4f} | {p.floor_paired[1]:.4f} | " for p in problems) + " |")
    for nfe, kind, fam, cells in rows:
        txt = ["n/a | n/a | n/a" if c is None else f"{c[2][0]:.4f} | {c[2][1]:.4f} | {c[0]} ({c[1]})"
               for c in cells]
        print(f"| {nfe} | {kind} | {fam} | " + " | ".join(txt) + " |")
    print("\nSummary: best SW1 (Δlogp) per side; ratio ours/diffusers; ours / floor (paired, i.i.d.)")
    for nfe in sorted({r[0] for r in rows}):
        for j, p in enumerate(problems):
            o, d = _best(rows, nfe, j, "scoresde", 0), _best(rows, nfe, j, "diffusers", 0)
            ol, dl = _best(rows, nfe, j, "scoresde", 1), _best(rows, nfe, j, "diffusers", 1)
            print(f"NFE {nfe:>3} {p.name}: SW1 ours {o:.4f} diffusers {d:.4f} ratio {o / d:.2f} | "
                  f"Δlogp ours {ol:.4f} diffusers {dl:.4f} ratio {ol / dl:.2f} | SW1 ours/floor "
                  f"{o / p.floor_paired[0]:.2f} (paired) {o / p.floor_iid[0]:.2f} (i.i.d.)")



def _best(rows, nfe, j, kind, metric):
    vals = [r[3][j][2][metric] for r in rows if r[0] == nfe and r[1] == kind and r[3][j] is not None]
    return min(vals) if vals else math.nan


if __name__ == "__main__":
    main()
