"""scoresde's samplers with DEFAULT options versus diffusers' schedulers on the same exact ε.

Both sides drive the analytic oracle (:class:`scoresde.core.analytic.GaussianMixture`) on the
discrete DDPM schedule (``VPSDE.ddpm()``: linear β 1e-4..0.02, N = 1000). diffusers' integer
timestep ``k`` is our time ``t = (k + 1)/N``: their ``ᾱ_k = Π_{j≤k}(1 - β_j)`` is our
``ᾱ((k+1)/N)`` (checked numerically below). Errors: sliced W1 to a large oracle sample of
``p_0`` and the gap in mean ``log p_0`` under the oracle, with the Monte Carlo noise floor (the
same metrics for a fresh exact sample of the same size).

Our side: every sampler with its default options only (no t_eps, spacing or order chosen by
hand), at the largest ``steps`` whose NFE fits the budget. "Ours" in the summary is ``dpmpp``,
the default sampler (no choice made on any data); the summary also shows the sampler with the
best SW1 on the selection run, reported on the evaluation run. diffusers' side: each scheduler
family has a few configurations (spacings, orders, sigma grids); the best one per (data set,
NFE budget) is chosen on a *selection* run (its own noise), then reported on the *evaluation*
run (the noise our samplers get), so diffusers' minimum over configurations is not biased
down by the noise it is selected on. A configuration may use at most the NFE budget.

Data sets: the project's two (``ring-8 2-D``, ``mix-4 16-D``) and three never tuned for:
``skew-6 8-D`` (weights 0.5 … 0.05, narrow modes), ``img-3 (1,6,6)`` (36-D, image-shaped,
broad modes) and ``bimodal 1-D`` (weights 0.9/0.1, std 0.05 and 0.3).

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
from scoresde.evaluation.metrics import random_directions, sliced_wasserstein
from scoresde.samplers import SAMPLERS

N_TRAIN = 1000
NFES = (10, 20, 50, 100)


# Metrics -----------------------------------------------------------------------------------
def projections(dim: int, n_proj: int, seed: int) -> torch.Tensor:
    """``(dim, n_proj)``: the directions ``scoresde.evaluation.metrics.sliced_wasserstein`` draws from ``seed``."""
    return random_directions(dim, n_proj, torch.Generator().manual_seed(seed)).T


def sliced_w1(x: torch.Tensor, ref_sorted: torch.Tensor, proj: torch.Tensor) -> float:
    """Mean over directions of the exact 1-D W1 between the empirical laws of ``x`` (n points)
    and of a reference whose projections are pre-sorted, ``(M, n_proj)`` with ``n | M``: the
    value of ``scoresde.evaluation.metrics.sliced_wasserstein`` (checked in ``Problem``) without re-sorting
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
def diffusers_families(full: bool = False):
    """Name → list of (config label, scheduler factory). Common: linear β 1e-4..0.02, N = 1000,
    ε-prediction, clip_sample and thresholding off. Default: each family's default and the
    configurations that won any cell of the full grid (``full=True``: every spacing × order ×
    sigma grid × UniPC variant, 36 in all) in the 2026-11-23 run recorded in docs/benchmarks.md."""
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
    if not full:
        keep = {"DDPMScheduler": ("leading", "linspace", "trailing"),
                "DDIMScheduler": ("leading", "linspace", "trailing"),
                "DPMSolverMultistep": ("linspace o2", "linspace o3 lu", "linspace o2 lu", "linspace o3 karras",
                                       "leading o2"),
                "UniPCMultistep": ("linspace o2 bh2 karras", "linspace o3 bh2 karras", "leading o3 bh2",
                                   "leading o2 bh2", "trailing o2 bh2", "linspace o2 bh2")}
        fam = {name: [c for c in cfgs if c[0] in keep[name]] for name, cfgs in fam.items()}
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
OUR_SAMPLERS = ("dpmpp", "heun", "ddim", "ancestral", "pc", "sde", "ode")  # default options only


def steps_for_budget(fn, oracle, nfe: int) -> int | None:
    """Largest ``steps`` whose NFE (default options) is at most ``nfe`` (bisection on a 1-sample probe)."""
    probe = torch.zeros((1,) + oracle.event_shape, dtype=torch.float64)

    def cost(s):
        return fn(oracle, probe, steps=s, generator=torch.Generator().manual_seed(0)).nfe

    lo, hi = 0, nfe
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= nfe else (lo, mid - 1)
    return lo or None


def evaluate_ours(name, prob, nfe: int):
    """(label, NFE, errors on the evaluation noise, SW1 on the selection noise) of sampler ``name``
    with default options, or None when no run fits the budget (the adaptive ``ode``, whose
    NFE a step count does not bound, counts only when its real NFE fits); errors are reported."""
    fn = SAMPLERS[name]
    try:
        steps = steps_for_budget(fn, prob.oracle, nfe)
        if steps is None:
            return None
        sel, r = (fn(prob.oracle, x, steps=steps, generator=torch.Generator().manual_seed(5))
                  for x in (prob.x_sel, prob.x_eval))
    except (ValueError, TypeError, RuntimeError) as err:  # reported, never hidden
        return f"ERROR {type(err).__name__}: {err}", 0, (math.inf, math.inf), math.inf
    if max(sel.nfe, r.nfe) > nfe:
        return None
    return f"steps={steps}", r.nfe, prob.errors(r.x), prob.errors(sel.x)[0]


# The run ----------------------------------------------------------------------------------------
def evaluate_family(cfgs, prob: Problem, nfe: int):
    """Pick diffusers' best configuration (SW1) on the selection noise, score it on the evaluation noise."""
    def run(cfg, x_T):
        return run_diffusers(cfg, prob.oracle, x_T, nfe, seed=5)

    best = None
    for name, cfg in cfgs:
        x, calls = run(cfg, prob.x_sel)
        sw = prob.errors(x)[0] if calls <= nfe else math.inf
        if best is None or sw < best[0]:
            best = (sw, name, cfg)
    x, calls = run(best[2], prob.x_eval)
    return best[1], calls, prob.errors(x)


def make_problems(sde, n, ref_mult, n_proj, sel_n):
    mix = GaussianMixture.random(16, 4, seed=0, sde=sde)
    skew = GaussianMixture.random(8, 6, seed=3, sde=sde, mean_scale=1.0, var_range=(0.005, 0.05))
    skew = GaussianMixture([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], skew.means, skew.covs, sde=sde)
    img = GaussianMixture.random(36, 3, seed=7, sde=sde, mean_scale=0.5, var_range=(0.05, 0.5),
                                 event_shape=(1, 6, 6))
    bimodal = GaussianMixture([0.9, 0.1], [[-1.0], [1.5]], torch.tensor([0.05, 0.3]) ** 2, sde=sde)
    cases = [("ring-8 2-D", GaussianMixture.ring(sde=sde)), ("mix-4 16-D", mix), ("skew-6 8-D", skew),
             ("img-3 (1,6,6)", img), ("bimodal 1-D", bimodal)]
    return [Problem(name, gm, n, ref_mult, n_proj, sel_n) for name, gm in cases]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, two NFE budgets (smoke test)")
    ap.add_argument("--n", type=int, default=5000, help="samples per evaluation run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-configs", action="store_true", help="diffusers: all 36 configurations, not the 17 winners")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, nfes, ref_mult, n_proj = (args.n, NFES, 10, 256) if not args.quick else (1000, (10, 20), 4, 32)
    sel_n = max(n // 4, 500)
    start = time.time()
    sde = VPSDE.ddpm()
    fams_d = diffusers_families(args.all_configs)
    gap = check_time_mapping(sde, fams_d["DDIMScheduler"][0][1])
    print(f"# scoresde (default options) vs diffusers {__import__('diffusers').__version__}, torch "
          f"{torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# DDPM linear β 1e-4..0.02, N={N_TRAIN}; mapping t=(k+1)/N checked: max rel. ᾱ gap {gap:.1e}")
    print(f"# n={n} samples per evaluation run (diffusers' selection runs: {sel_n}), reference {ref_mult}n "
          f"exact samples, {n_proj} projections; diffusers configurations: "
          f"{sum(len(v) for v in fams_d.values())}")
    problems = make_problems(sde, n, ref_mult, n_proj, sel_n)
    rows = []
    for nfe in nfes:
        for name in OUR_SAMPLERS:
            rows.append((nfe, "scoresde", name, [evaluate_ours(name, p, nfe) for p in problems]))
        for fam in fams_d:
            rows.append((nfe, "diffusers", fam, [evaluate_family(fams_d[fam], p, nfe) for p in problems]))
        print(f"# NFE {nfe} done at {time.time() - start:.0f} s", flush=True)
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
    errors = [(r[0], r[2], p.name, c[0]) for r in rows for p, c in zip(problems, r[3])
              if c is not None and str(c[0]).startswith("ERROR")]
    print(f"\nErrors: {len(errors)}" + "".join(f"\n  NFE {e[0]} {e[1]} {e[2]}: {e[3]}" for e in errors))
    print("\nSummary, SW1 (Δlogp): ours = dpmpp, the default sampler with default options (no choice made on "
          "any data); 'sel' = our sampler with the best SW1 on the selection run; diffusers = its best scheduler "
          "configuration (selected). Goals: ours/diffusers ≤ 0.8 at NFE 10, 20; ours/floor ≤ 1.1 at NFE 50, 100")
    for nfe in sorted({r[0] for r in rows}):
        for j, p in enumerate(problems):
            o, d = _cell(rows, nfe, j, "dpmpp", 0), _best(rows, nfe, j, "diffusers", 0)
            ol, dl = _cell(rows, nfe, j, "dpmpp", 1), _best(rows, nfe, j, "diffusers", 1)
            sel, who = _best(rows, nfe, j, "scoresde", 0), _best_name(rows, nfe, j)
            print(f"NFE {nfe:>3} {p.name}: SW1 ours {o:.4f} diffusers {d:.4f} ratio {o / d:.2f} "
                  f"(sel: {who} {sel / d:.2f}) | Δlogp ours {ol:.4f} diffusers {dl:.4f} ratio {ol / dl:.2f} | "
                  f"SW1 ours/floor {o / p.floor_paired[0]:.2f} (paired) {o / p.floor_iid[0]:.2f} (i.i.d.)")


def _cell(rows, nfe, j, name, metric):
    return next((r[3][j][2][metric] for r in rows if r[0] == nfe and r[2] == name and r[3][j]), math.nan)


def _best_name(rows, nfe, j):
    """Our sampler with the best SW1 on the selection noise."""
    cands = [(r[3][j][3], r[2]) for r in rows if r[0] == nfe and r[1] == "scoresde" and r[3][j] is not None]
    return min(cands)[1] if cands else "none"


def _best(rows, nfe, j, kind, metric):
    if kind == "scoresde":  # the sampler selected on the selection noise, scored on the evaluation noise
        name = _best_name(rows, nfe, j)
        return next((r[3][j][2][metric] for r in rows if r[0] == nfe and r[1] == kind and r[2] == name), math.nan)
    vals = [r[3][j][2][metric] for r in rows if r[0] == nfe and r[1] == kind and r[3][j] is not None]
    return min(vals) if vals else math.nan


if __name__ == "__main__":
    main()
