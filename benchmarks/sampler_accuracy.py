"""Sample error of every sampler against the exact oracle, by number of steps.

For (a) the 2-D ring of 8 Gaussians and (b) a random 16-D mixture of 4 Gaussians, each
sampler (default options, ``denoise=True``) runs from ``x_T ~ N(0, I)`` with
``steps ∈ {10, 20, 50, 100, 1000}`` on Song et al.'s linear VP-SDE, and is scored against
the oracle GaussianMixture:

- ``SW1``: sliced Wasserstein-1 distance to a large oracle sample of ``p_0`` (``--ref``
  points, ``--proj`` random directions; the 1-D W1 is ``∫|F - G|``);
- ``Δlogp``: mean oracle log-density of the samples minus that of exact samples
  (``E_q[log p_0] - E_p[log p_0]``; > 0 means samples piled up near the modes).

The ``floor`` row scores ``--n`` exact oracle samples the same way: the Monte Carlo noise
of each column at this sample size. ``ode`` (dopri5) is adaptive and ignores ``steps``: it
runs once. Run ``python benchmarks/sampler_accuracy.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from scoresde import GaussianMixture
from scoresde.samplers import SAMPLERS, sample

STEPS = (10, 20, 50, 100, 1000)
# pc with per-sample norms (the default) is also run with batch-mean norms: in 2-D the
# per-sample step sizes are heavy-tailed (see scoresde/samplers/pc.py).
EXTRA = {"pc[norms=sample]": ("pc", {"norms": "sample"}), "sde[srk]": ("sde", {"method": "srk"})}
SKIP_1000 = ("sde[srk]",)  # 4000 NFE: the slowest row, adds little over sde at 1000 steps


def sliced_w1(x: torch.Tensor, ref: torch.Tensor, dirs: torch.Tensor) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance ``∫|F_x - F_ref|`` of projections."""
    a = torch.sort(x @ dirs.T, dim=0).values.T.contiguous()  # (L, n)
    b = torch.sort(ref @ dirs.T, dim=0).values.T.contiguous()  # (L, m)
    grid = torch.sort(torch.cat([a, b], 1), dim=1).values  # (L, n + m)
    pts = grid[:, :-1].contiguous()
    fa = torch.searchsorted(a, pts, right=True) / a.shape[1]
    fb = torch.searchsorted(b, pts, right=True) / b.shape[1]
    return float(((fa - fb).abs() * grid.diff(dim=1)).sum(1).mean())


def score(gm, x, ref, ref_logp, dirs):
    x = x.reshape(x.shape[0], -1).double()
    if not torch.isfinite(x).all():
        return math.nan, math.nan
    return sliced_w1(x, ref, dirs), float(gm.log_prob(x).mean() - ref_logp)


def run(args):
    problems = {"ring8 (2-D)": GaussianMixture.ring(),
                "mixture (16-D, 4 comp.)": GaussianMixture.random(16, 4, seed=0)}
    names = {n: (n, {}) for n in SAMPLERS} | EXTRA
    if args.only:
        names = {n: v for n, v in names.items() if n in args.only.split(",")}
    steps_list = (10, 20) if args.quick else STEPS
    g = torch.Generator().manual_seed(0)
    print(f"# n={args.n} samples per run, reference {args.ref}, {args.proj} projections, "
          f"linear VP-SDE (β 0.1→20), t_eps=1e-3, denoise=True")
    print("| data | sampler | steps | NFE | SW1 | Δlogp | time (s) |\n|---|---|---|---|---|---|---|")
    for label, gm in problems.items():
        ref = gm.sample(args.ref, generator=g)
        ref_logp = float(gm.log_prob(ref).mean())
        dirs = torch.randn(args.proj, gm.dim, generator=g, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        floor = score(gm, gm.sample(args.n, generator=g), ref, ref_logp, dirs)
        print(f"| {label} | floor (exact samples) | – | – | {floor[0]:.4f} | {floor[1]:+.4f} | – |")
        x_T = torch.randn(args.n, gm.dim, generator=g, dtype=torch.float64)
        for name, (key, opts) in names.items():
            for steps in ((1,) if key == "ode" else steps_list):
                if name in SKIP_1000 and steps == 1000:
                    continue
                t0 = time.perf_counter()
                res = sample(gm, key, x_T, steps=steps, generator=torch.Generator().manual_seed(1),
                             **opts)
                sec = time.perf_counter() - t0
                sw, dlp = score(gm, res.x, ref, ref_logp, dirs)
                shown = "adaptive" if key == "ode" else steps
                print(f"| {label} | {name} | {shown} | {res.nfe} | {sw:.4f} | {dlp:+.4f} | {sec:.1f} |",
                      flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="steps 10, 20 and small samples (smoke run)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 4000; quick 400)")
    p.add_argument("--ref", type=int, default=None, help="oracle reference size (default 50000)")
    p.add_argument("--proj", type=int, default=128, help="random projections for SW1")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--only", default="", help="comma-separated rows to run, e.g. ode (default: all)")
    args = p.parse_args()
    args.n = args.n or (400 if args.quick else 4000)
    args.ref = args.ref or (5000 if args.quick else 50000)
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
