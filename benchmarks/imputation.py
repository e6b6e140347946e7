"""Imputation against the exact conditional: replacement, RePaint and SMC at equal NFE.

For Gaussian mixtures in 2, 8 and 32 dimensions (linear VP-SDE, the exact oracle as the model)
with a third to a half of the coordinates observed, ``--obs`` observations are drawn from the
mixture itself; for each, ``--n`` completions by each method are scored against the exact
conditional ``GaussianMixture.condition(mask, x_obs)``:

- ``SW1``: sliced Wasserstein-1 (``scoresde.evaluation.metrics.sliced_wasserstein``, 256 fixed
  directions) between the imputed coordinates and ``4n`` exact conditional draws, averaged over
  the observations; ``floor``: the same for ``n`` other exact draws (the Monte Carlo noise at this
  sample size), ``SW1/floor`` their ratio (≈ 1 for an exact method);
- ``Δlogp``: the mean exact conditional log-density of the imputations minus that of the exact
  draws (≈ 0 ± a few hundredths for an exact method; > 0: piled on the modes, < 0: spread out or
  in the wrong modes).

Budgets of about 100, 400 and 1600 NFE: replacement and SMC take ``K = NFE - 1`` steps (SMC's
NFE are batched calls of ``particles ×`` the batch: ``evals`` gives network evaluations per
completion), RePaint ``r = 4`` takes per step on ``K = (NFE - 1)/4`` steps. Every method runs on the
same log-SNR-spaced grid with DDIM η = 1 as its step.

    python benchmarks/imputation.py [--quick] [--only 8-D] [--n 500] [--obs 4]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone

import torch

from scoresde import GaussianMixture
from scoresde.evaluation.metrics import sliced_wasserstein
from scoresde.samplers.impute import impute

BUDGETS = (100, 400, 1600)
PARTICLES = (1, 4, 16, 64)
RESAMPLINGS = 4
SPACING = "logsnr"


def problems() -> dict:
    """name → (mixture, mask): a third to a half of the coordinates observed."""
    ring = GaussianMixture.ring(8, radius=1.0, std=0.15)
    mask8 = torch.zeros(8, dtype=torch.bool)
    mask8[:3] = True
    mask32 = torch.zeros(32, dtype=torch.bool)
    mask32[::3] = True  # 11 of 32
    return {
        "2-D ring, 1 of 2 observed": (ring, torch.tensor([True, False])),
        "8-D, 4 comp., 3 of 8 observed": (GaussianMixture.random(8, 4, seed=0), mask8),
        "32-D, 4 comp., 11 of 32 observed": (GaussianMixture.random(32, 4, seed=0, mean_scale=0.5), mask32),
    }


def observations(gm: GaussianMixture, n_obs: int, seed: int = 0) -> torch.Tensor:
    """``n_obs`` observations ``(n_obs, D)``: draws of the mixture itself."""
    return gm.sample(n_obs, generator=torch.Generator().manual_seed(seed))


def methods(nfe: int, particles=PARTICLES) -> list:
    """(label, impute keyword arguments) at about ``nfe`` NFE."""
    rows = [("replacement", {"method": "replacement", "steps": nfe - 1}),
            (f"repaint r={RESAMPLINGS}", {"method": "repaint", "resamplings": RESAMPLINGS,
                                          "steps": max(1, round((nfe - 1) / RESAMPLINGS))})]
    rows += [(f"smc P={p}", {"method": "smc", "particles": p, "steps": nfe - 1}) for p in particles]
    return rows


class Scorer:
    """Scores completions of one observation against its exact conditional (one path for the
    benchmark and its test): ``SW1`` to ``4n`` exact draws, ``Δlogp``, and the floor of ``n`` exact draws."""

    def __init__(self, gm: GaussianMixture, mask: torch.Tensor, x_obs: torch.Tensor, n: int, seed: int = 1):
        self.mask, self.cond = mask, gm.condition(mask, x_obs)
        self.ref = self.cond.sample(4 * n, generator=torch.Generator().manual_seed(seed))
        self.ref_logp = float(self.cond.log_prob(self.ref).mean())
        self.seed = seed
        self.floor = self.score(self.cond.sample(n, generator=torch.Generator().manual_seed(seed + 1)))

    def score(self, xu: torch.Tensor) -> tuple[float, float]:
        """(SW1, Δlogp) of imputed coordinates ``(n, D_u)``."""
        xu = xu.to(torch.float64)
        sw = sliced_wasserstein(xu, self.ref, generator=torch.Generator().manual_seed(self.seed + 2))
        return sw, float(self.cond.log_prob(xu).mean()) - self.ref_logp


def run_method(gm, mask, x_obs, n: int, kwargs: dict, seed: int) -> tuple[torch.Tensor, object]:
    """``n`` completions of ``x_obs``; returns the imputed coordinates and the result."""
    observed = x_obs.expand(n, -1).clone()
    res = impute(gm, observed, mask, spacing=SPACING, generator=torch.Generator().manual_seed(seed), **kwargs)
    return res.x[:, ~mask], res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="completions per observation")
    ap.add_argument("--obs", type=int, default=4, help="observations per problem")
    ap.add_argument("--only", help="run the problems whose name contains this")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--max-work", type=float, default=float("inf"),
                    help="skip rows with more particle-steps × dimension² than this (time on a shared CPU)")
    ap.add_argument("--quick", action="store_true", help="n=100, 2 observations, 100 NFE")
    args = ap.parse_args()
    if args.quick:
        args.n, args.obs, args.budgets = 100, 2, "100"
    budgets = [int(b) for b in args.budgets.split(",")]
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"# benchmarks/imputation.py, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
          f"{platform.machine()}, 1 thread; n={args.n} completions × {args.obs} observations per row, "
          f"reference 4n exact draws, 256 directions, linear VP-SDE, {SPACING} grid")
    print("| problem | method | NFE | evals/completion | SW1 | SW1/floor | Δlogp | min ESS/P | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (gm, mask) in problems().items():
        if args.only and args.only not in name:
            continue
        obs = observations(gm, args.obs)
        scorers = [Scorer(gm, mask, x, args.n, seed=10 * i + 1) for i, x in enumerate(obs)]
        floor_sw = sum(s.floor[0] for s in scorers) / len(scorers)
        floor_lp = sum(s.floor[1] for s in scorers) / len(scorers)
        print(f"| {name} | floor (exact draws) | – | – | {floor_sw:.4f} | 1.00 | {floor_lp:+.3f} | – | – |",
              flush=True)
        for nfe in budgets:
            for label, kwargs in methods(nfe):
                work = args.n * args.obs * kwargs.get("particles", 1) * nfe * gm.dim**2
                if work > args.max_work:
                    print(f"| {name} | {label} | {nfe} | – | skipped (--max-work) | | | | |", flush=True)
                    continue
                t0 = time.process_time()
                sws, lps, ess_min, nfes = [], [], [], []
                for i, (x, sc) in enumerate(zip(obs, scorers)):
                    xu, res = run_method(gm, mask, x, args.n, kwargs, seed=100 + i)
                    sw, lp = sc.score(xu)
                    sws.append(sw)
                    lps.append(lp)
                    nfes.append(res.nfe)
                    if "ess" in res.info:
                        ess_min.append(float(res.info["ess"].min()) / res.info["particles"])
                sw = sum(sws) / len(sws)
                evals = nfes[0] * kwargs.get("particles", 1)
                ess = f"{min(ess_min):.2f}" if ess_min else "–"
                print(f"| {name} | {label} | {nfes[0]} | {evals} | {sw:.4f} | {sw / floor_sw:.2f} | "
                      f"{sum(lps) / len(lps):+.3f} | {ess} | {time.process_time() - t0:.1f} |", flush=True)
    print(f"# wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
