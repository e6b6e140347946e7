"""scoresde's samplers (default options) versus diffusers' schedulers and k-diffusion's samplers,
on the same exact ε and the same noise, ranked by metrics without a noise floor (issue 26).

Every sampler drives the exact ε of a Gaussian mixture (:class:`oracle_metrics.FastOracle`)
on DDPM's discrete linear schedule (``VPSDE.ddpm()``: β 1e-4..0.02, N = 1000), from the same
``x_T`` (``n`` draws of N(0, I) at ``t = 1``), at an NFE budget (batched ε calls). Metrics
(:mod:`oracle_metrics`): the trajectory error against the exact probability-flow image of the
same ``x_T`` (scipy DOP853, rtol 1e-10; deterministic samplers), sliced W1 of ``n`` samples to
the exact law (floor stated) and the mean log-density gap under the oracle.

- **ours**: every sampler with default options (``ode``, whose adaptive NFE no step count
  bounds, is left out), at the largest ``steps`` whose NFE fits the budget. "ours" in the
  summary is ``dpmpp``, the default.
- **diffusers** (time mapping ``t = (k + 1)/N`` for its integer timestep ``k``, checked):
  DDIM, DPM-Solver++ 2M/3M, UniPC (bh1/bh2, order 2/3), DEIS (order 2/3) with linspace,
  trailing and leading timesteps, Karras and Lu (log-SNR) σ grids; DDPM (stochastic).
- **k-diffusion** (``DiscreteEpsDDPMDenoiser``, continuous t): ``lms``, ``dpmpp_2m``, ``heun``,
  ``euler`` and the stochastic ``dpmpp_2m_sde``, ``dpmpp_3m_sde``, on Karras σ (ρ = 7) and on
  the wrapper's own grid (``get_sigmas``).

Stage 1 runs every configuration on the ``n_traj`` trajectories (trajectory error); stage 2 runs
on all ``n`` samples our samplers, each peer's ``--top`` best deterministic configurations by
trajectory error and every stochastic configuration. "Best peer" is the minimum over those, per
metric, on the evaluation noise itself (a choice in the peers' favour).

    python benchmarks/vs_diffusers.py                  # the tables in docs/benchmarks.md
    python benchmarks/vs_diffusers.py --quick          # smoke test (small sizes)

Needs the ``bench`` extra (diffusers, k-diffusion; k-diffusion with ``pip install --no-deps``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import math
import os
import sys
import time
import types

import torch
from oracle_metrics import Case, sigma_tilde

from scoresde import VPSDE, GaussianMixture
from scoresde.samplers import SAMPLERS

N_TRAIN = 1000
NFES = (5, 10, 20, 50)
OURS = ("dpmpp", "heun", "ddim", "ancestral", "pc", "sde")  # default options; "ode" is adaptive
STOCHASTIC_OURS = {"ancestral", "pc", "sde"}


class Counted:
    """A model wrapper that counts ε calls (the peers' NFE)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a):
        self.calls += 1
        return self.fn(*a)


# diffusers -------------------------------------------------------------------------------------
def diffusers_configs():
    """(label, factory, deterministic) of every diffusers configuration compared."""
    import diffusers as d

    base = dict(num_train_timesteps=N_TRAIN, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    out = []

    def add(label, cls, det, **kw):
        out.append((label, lambda: cls(**base, **kw), det))

    for sp in ("linspace", "trailing", "leading"):
        add(f"DDIM {sp}", d.DDIMScheduler, True, clip_sample=False, timestep_spacing=sp)
    for sp in ("trailing", "leading"):
        add(f"DDPM {sp}", d.DDPMScheduler, False, clip_sample=False, timestep_spacing=sp)
    grids = (("linspace", {}), ("trailing", {}), ("karras", {"use_karras_sigmas": True}))
    for order in (2, 3):
        for name, g in grids + (("lu", {"use_lu_lambdas": True}),):
            sp = "linspace" if name in ("karras", "lu") else name
            add(f"DPM++{order}M {name}", d.DPMSolverMultistepScheduler, True, solver_order=order,
                algorithm_type="dpmsolver++", timestep_spacing=sp, **g)
        for st in ("bh1", "bh2"):
            for name, g in grids:
                sp = "linspace" if name == "karras" else name
                # bh1 ends with NaN at σ = 0 (its B(h) = h is infinite there): end at σ_min instead
                fin = {"final_sigmas_type": "sigma_min"} if st == "bh1" else {}
                add(f"UniPC o{order} {st} {name}", d.UniPCMultistepScheduler, True, solver_order=order,
                    solver_type=st, timestep_spacing=sp, **g, **fin)
        for name, g in grids:
            sp = "linspace" if name == "karras" else name
            add(f"DEIS o{order} {name}", d.DEISMultistepScheduler, True, solver_order=order,
                timestep_spacing=sp, **g)
    return out


def check_time_mapping(sde, make_scheduler) -> float:
    """Max relative gap between diffusers' ``ᾱ_k`` and our ``ᾱ((k+1)/N)``; asserts it is tiny."""
    ac = make_scheduler().alphas_cumprod.to(torch.float64)  # stored in float32 by diffusers
    ours = sde.alpha_bar(torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN)
    gap = float(((ac - ours).abs() / ours).max())
    assert gap < 1e-5, f"time mapping t = (k+1)/N broken: relative ᾱ gap {gap:.2e}"
    return gap


def run_diffusers(make_scheduler, oracle, x_T, nfe: int, seed: int = 5):
    """Drive one diffusers scheduler with the exact ε; returns (samples, NFE)."""
    sched = make_scheduler()
    sched.set_timesteps(nfe)
    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
    x, calls = x_T * sched.init_noise_sigma, 0
    for k in sched.timesteps:
        if float(k) != int(k):
            raise ValueError(f"non-integer diffusers timestep {k}")
        eps = oracle.eps(sched.scale_model_input(x, k), (int(k) + 1) / N_TRAIN)  # k ↔ t = (k+1)/N
        calls += 1
        x = sched.step(eps, k, x, **step_kw).prev_sample
    return x, calls


# k-diffusion ------------------------------------------------------------------------------------
def load_k_diffusion():
    """k_diffusion.sampling and .external, loaded from the installed files without the package's
    __init__ (which imports training extras); its utils module is replaced by the one function
    these two files use (append_dims)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion")
    where = spec.submodule_search_locations[0]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [where]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    mods = {}
    for name in ("sampling", "external"):
        s = importlib.util.spec_from_file_location(f"k_diffusion.{name}", os.path.join(where, f"{name}.py"))
        mods[name] = importlib.util.module_from_spec(s)
        sys.modules[f"k_diffusion.{name}"] = mods[name]
        s.loader.exec_module(mods[name])
    return mods["sampling"], mods["external"]


def kdiff_configs():
    """(label, (sampler name, grid), deterministic) of every k-diffusion configuration."""
    out = []
    for name in ("lms", "dpmpp_2m", "heun", "euler", "dpmpp_2m_sde", "dpmpp_3m_sde"):
        for grid in ("karras", "wrapper"):
            out.append((f"k-{name} {grid}", (name, grid), not name.endswith("sde")))
    return out


def run_kdiff(kd, spec, oracle, x_T, nfe: int, seed: int = 5):
    """One k-diffusion sampler through DiscreteEpsDDPMDenoiser on our ᾱ table; returns (x, NFE)."""
    sampling, external = kd
    name, grid = spec
    sde = oracle.sde
    ac = sde.alpha_bar(torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN)
    wrapper = None

    def inner(x_in, t_idx):  # the network: ε at the σ the wrapper means by this (fractional) index
        s = float(wrapper.t_to_sigma(t_idx.reshape(-1)[:1]))
        return oracle.eps_tilde(x_in * math.sqrt(1 + s * s), s)

    net = Counted(inner)
    wrapper = external.DiscreteEpsDDPMDenoiser(net, ac, quantize=False)
    n = (nfe + 1) // 2 if name == "heun" else nfe  # heun: 2n - 1 calls for n nonzero σ
    if grid == "karras":
        sig = sampling.get_sigmas_karras(n, float(wrapper.sigma_min), float(wrapper.sigma_max)).double()
    else:
        sig = wrapper.get_sigmas(n).double()
    x = x_T.to(torch.float64) * math.sqrt(1 + sigma_tilde(sde, 1.0) ** 2)  # x̃ = x/α at t = 1
    torch.manual_seed(seed)
    kw = {"noise_sampler": sampling.BrownianTreeNoiseSampler(x, float(sig[-2]), float(sig[0]), seed=seed)} \
        if name.endswith("sde") else {}
    x = getattr(sampling, f"sample_{name}")(wrapper, x, sig, disable=True, **kw)
    return x, net.calls


# ours ---------------------------------------------------------------------------------------------
def steps_for_budget(fn, oracle, nfe: int) -> int | None:
    """Largest ``steps`` whose NFE (default options) is at most ``nfe`` (bisection on a 1-sample probe)."""
    probe = torch.zeros((1,) + tuple(oracle.event_shape), dtype=torch.float64)

    def cost(s):
        return fn(oracle, probe, steps=s, generator=torch.Generator().manual_seed(0)).nfe

    lo, hi = 0, nfe
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= nfe else (lo, mid - 1)
    return lo or None


def run_ours(name, oracle, x_T, nfe: int, seed: int = 5):
    fn = SAMPLERS[name]
    steps = steps_for_budget(fn, oracle, nfe)
    if steps is None:
        return None, 0
    r = fn(oracle, x_T, steps=steps, generator=torch.Generator().manual_seed(seed))
    return r.x, r.nfe


# the run --------------------------------------------------------------------------------------------
def _thin(sde):
    return GaussianMixture.ring(n_modes=12, radius=1.0, std=0.03, sde=sde)


def _aniso(sde):
    return GaussianMixture.random(10, 4, seed=1, sde=sde, mean_scale=1.0, var_range=(1e-3, 1.0))


def _img(sde):
    return GaussianMixture.random(16, 3, seed=7, sde=sde, mean_scale=0.5, var_range=(0.05, 0.5),
                                  event_shape=(1, 4, 4))


def _narrow(sde):
    return GaussianMixture([0.9, 0.1], [[-1.0], [1.5]], torch.tensor([0.3, 0.02]) ** 2, sde=sde)


# low-dimensional thin structure, anisotropic 10-D, image-shaped, a narrow mode
CASES = (("thin ring 2-D", _thin), ("aniso 10-D", _aniso), ("img (1,4,4)", _img), ("narrow mode 1-D", _narrow))


def configs(kd, ours=OURS, peers="all"):
    out = [("ours", name, ("ours", name), name not in STOCHASTIC_OURS) for name in ours]
    out += [("diffusers", label, ("diffusers", f), det) for label, f, det in diffusers_configs()]
    out += [("k-diffusion", label, ("kdiff", spec), det) for label, spec, det in kdiff_configs()]
    keep = {"all": (True, False), "deterministic": (True,), "stochastic": (False,), "none": ()}[peers]
    return [c for c in out if c[0] == "ours" or c[3] in keep]


def run_one(kind, kd, oracle, x_T, nfe):
    side, what = kind
    if side == "ours":
        return run_ours(what, oracle, x_T, nfe)
    if side == "diffusers":
        return run_diffusers(what, oracle, x_T, nfe)
    return run_kdiff(kd, what, oracle, x_T, nfe)


def evaluate_case(case, cfgs, kd, nfes, top, log, default_only_above=math.inf):
    rows = []
    for nfe in nfes:
        stage1 = {}
        for _side, label, kind, det in cfgs:
            if not det:
                continue
            try:
                x, calls = run_one(kind, kd, case.oracle, case.x_T[: case.n_traj], nfe)
            except (ValueError, RuntimeError, IndexError) as err:
                log(f"#   {case.name} NFE {nfe} {label}: ERROR {type(err).__name__}: {err}")
                continue
            if x is None or calls > nfe:
                continue
            d = (x.to(torch.float64) - case.x_ref).reshape(case.n_traj, -1)
            stage1[label] = float(d.norm(dim=1).mean()) if torch.isfinite(d).all() else math.inf
        keep = set()
        for side in ("diffusers", "k-diffusion"):
            dets = sorted((stage1[lab], lab) for s, lab, _, det in cfgs if s == side and det and lab in stage1)
            keep |= {lab for _, lab in dets[:top]}
        for side, label, kind, det in cfgs:
            if label != "dpmpp" and nfe > default_only_above and not (side != "ours" and det and label in stage1):
                continue  # above this budget only the default sampler's samples are scored
            if side != "ours" and det and (label not in keep or nfe > default_only_above):
                if label in stage1:
                    rows.append((nfe, side, label, None, {"traj": stage1[label], "sw1": None, "dlogp": None}))
                continue
            try:
                x, calls = run_one(kind, kd, case.oracle, case.x_T, nfe)
            except (ValueError, RuntimeError, IndexError) as err:
                log(f"#   {case.name} NFE {nfe} {label}: ERROR {type(err).__name__}: {err}")
                continue
            if x is None or calls > nfe:
                continue
            rows.append((nfe, side, label, calls, case.metrics(x, det)))
        log(f"#   {case.name}: NFE {nfe} done at {time.time() - START:.0f} s")
    return rows


def fmt(v, w=".2e"):
    return "–" if v is None else f"{v:{w}}"


def print_case(case, fl, rows):
    print(f"\n### {case.name}  (D = {case.gm.dim}, K = {case.gm.n_components})\n")
    print(f"Floors (n = {case.n}): SW1 of an exact sample to the law {fl['sw1']:.2e} ± {fl['sw1_sd']:.1e}, "
          f"between two exact samples {fl['sw1_two']:.2e}; Δlogp of an exact sample ± {fl['dlogp_sd']:.1e}. "
          f"Reference flow ({case.n_traj} trajectories): |rtol 1e-8 − rtol 1e-10| ≤ {case.ref_check:.1e} "
          f"(50 trajectories).\n")
    print("| NFE | side | sampler | NFE used | trajectory error | SW1 | SW1/floor | Δlogp |")
    print("|---|---|---|---|---|---|---|---|")
    for nfe, side, label, calls, m in rows:
        ratio = None if m["sw1"] is None else m["sw1"] / fl["sw1"]
        print(f"| {nfe} | {side} | {label} | {fmt(calls, 'd') if calls else '–'} | {fmt(m['traj'])} | "
              f"{fmt(m['sw1'])} | {fmt(ratio, '.2f')} | {fmt(m['dlogp'], '+.3f')} |")


def summary(cases, floors, all_rows, nfes):
    print("\n### Summary: ours = dpmpp (default options) against the best of both peers\n")
    print("Ratios ours/best peer (trajectory error; SW1) and Δlogp (ours; the best peer's |Δlogp|). "
          "Goals: ≤ 0.8 at NFE 5, 10, 20; SW1 ≤ 1.05 × floor at NFE ≥ 50.\n")
    print("| case | NFE | traj ours | traj best peer (who) | ratio | SW1 ours | SW1 best peer (who) | ratio | "
          "SW1 ours/floor | Δlogp ours | best peer |Δlogp| |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, fl, rows in zip(cases, floors, all_rows):
        for nfe in nfes:
            ours = next((m for n_, side, lab, _, m in rows if n_ == nfe and lab == "dpmpp"), None)
            peers = [(m, lab) for n_, side, lab, _, m in rows if n_ == nfe and side != "ours"]
            if ours is None or not peers:
                continue
            bt = min(((m["traj"], lab) for m, lab in peers if m["traj"] is not None), default=(math.nan, "-"))
            bs = min(((m["sw1"], lab) for m, lab in peers if m["sw1"] is not None), default=(math.nan, "-"))
            bl = min((abs(m["dlogp"]) for m, lab in peers if m["dlogp"] is not None), default=math.nan)
            print(f"| {case.name} | {nfe} | {ours['traj']:.2e} | {bt[0]:.2e} ({bt[1]}) | {ours['traj'] / bt[0]:.2f} | "
                  f"{ours['sw1']:.2e} | {bs[0]:.2e} ({bs[1]}) | {ours['sw1'] / bs[0]:.2f} | "
                  f"{ours['sw1'] / fl['sw1']:.2f} | {ours['dlogp']:+.3f} | {bl:.3f} |")


START = time.time()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--n", type=int, default=100_000, help="samples per run (sliced W1, Δlogp)")
    ap.add_argument("--n-traj", type=int, default=2000, help="trajectories with an exact reference")
    ap.add_argument("--n-proj", type=int, default=128, help="directions of sliced W1")
    ap.add_argument("--nfe", type=int, nargs="*", default=list(NFES))
    ap.add_argument("--top", type=int, default=2, help="deterministic configurations per peer in stage 2")
    ap.add_argument("--cases", type=int, nargs="*", default=None, help="indices of the cases to run")
    ap.add_argument("--ours", nargs="*", default=list(OURS), help="our samplers to compare")
    ap.add_argument("--peers", choices=("all", "deterministic", "stochastic", "none"), default="all",
                    help="which of the peers' samplers to run")
    ap.add_argument("--no-stochastic-peers", dest="peers", action="store_const", const="deterministic",
                    help="the same as --peers deterministic")
    ap.add_argument("--default-only-above", type=float, default=math.inf,
                    help="NFE above which only dpmpp's samples are scored (peers: trajectory error only)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.n_traj, args.n_proj, args.nfe = 4000, 200, 32, [10]
    import diffusers

    kd = load_k_diffusion()
    sde = VPSDE.ddpm()
    cfgs = configs(kd, args.ours, args.peers)
    gap = check_time_mapping(sde, diffusers_configs()[0][1])
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"# scoresde vs diffusers {diffusers.__version__} and k-diffusion (sampling.py/external.py of "
          f"{_kd_version()}), torch {torch.__version__}, {now:%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}")
    print(f"# DDPM linear β 1e-4..0.02, N={N_TRAIN}; diffusers' t=(k+1)/N checked: max rel. ᾱ gap {gap:.1e}")
    print(f"# n={args.n} samples per run, {args.n_traj} reference trajectories, {args.n_proj} directions, "
          f"{sum(c[0] != 'ours' for c in cfgs)} peer configurations (top {args.top} deterministic per peer "
          f"+ all stochastic in stage 2)", flush=True)

    def log(msg):
        print(msg, flush=True)

    cases, floors, all_rows = [], [], []
    for i, (name, make) in enumerate(CASES):
        if args.cases is not None and i not in args.cases:
            continue
        case = Case(name, make(sde), args.n, args.n_traj, args.n_proj)
        log(f"# case {case.name} ready at {time.time() - START:.0f} s (FastOracle check {case.check:.0e})")
        fl = case.floors()
        rows = evaluate_case(case, cfgs, kd, args.nfe, args.top, log, args.default_only_above)
        print_case(case, fl, rows)
        cases.append(case)
        floors.append(fl)
        all_rows.append(rows)
        case.quantiles = None  # free memory
    summary(cases, floors, all_rows, args.nfe)
    print(f"\n# wall time {time.time() - START:.0f} s ({args.threads} thread(s), shared machine, "
          f"load {os.getloadavg()[0]:.1f})")


def _kd_version():
    try:
        from importlib.metadata import version
        return f"k-diffusion {version('k-diffusion')}"
    except Exception:  # noqa: BLE001
        return "k-diffusion"


if __name__ == "__main__":
    main()
