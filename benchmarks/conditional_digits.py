"""The class-conditional digits run against the unconditional default (issue 22): prints tables.

    python -m scoresde.train --config configs/digits.yaml      --out runs/digits        # both at once or
    python -m scoresde.train --config configs/digits_cond.yaml --out runs/digits_cond   # back to back
    python benchmarks/conditional_digits.py runs/digits runs/digits_cond [--mixture-limit 64]

From the two runs' ``summary.json``: wall and training time, the conditional run's guidance table
(fraction classified as requested, Fréchet distance, NFE per w) against the unconditional run's
Fréchet distance, and every bits/dim both reports hold. With ``--mixture-limit N`` it also runs
``evaluate_conditional_likelihood`` (the function behind ``python -m scoresde.evaluate``) on the
first N test digits with the run's own settings, adding ``p(x)`` by the class mixture (10 × the
ODE's NFE) and the same digits' ``p(x | y)`` and null-label figures, next to scikit-learn's
``GaussianMixture`` baseline (50 diagonal components, as docs/likelihood_digits.md) on them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scoresde.data.loader import load_dataset
from scoresde.evaluation.bpd_eval import EvalSettings
from scoresde.evaluation.conditional import class_log_prior_of, evaluate_conditional_likelihood
from scoresde.likelihood.baselines import gmm_bits_per_dim
from scoresde.training.checkpoint import load_run


def _fmt(summary: dict, key: str) -> str:
    if key not in summary:
        return "–"
    err = summary.get(f"{key}_stderr")
    return f"{summary[key]:.3f}" + (f" ± {err:.3f}" if err is not None else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("uncond", type=Path)
    p.add_argument("cond", type=Path)
    p.add_argument("--mixture-limit", type=int, default=0, help="also the class mixture on the first N test digits")
    args = p.parse_args()
    torch.set_num_threads(1)
    u = json.loads((args.uncond / "summary.json").read_text())
    c = json.loads((args.cond / "summary.json").read_text())

    print("| run | wall s | training s | samples | Fréchet distance |")
    print("|---|---|---|---|---|")
    print(f"| unconditional | {u['wall_seconds']:.0f} | {u['train_seconds']:.0f} | {u['sampler']} ({u['nfe']} NFE) | "
          f"{u['fd']:.3f} |")
    print(f"| conditional (null label) | {c['wall_seconds']:.0f} | {c['train_seconds']:.0f} | {c['sampler']} "
          f"({c['nfe']} NFE) | {c['fd']:.3f} |")
    print(f"\nwall-time ratio conditional / unconditional: {c['wall_seconds'] / u['wall_seconds']:.2f} "
          f"(training {c['train_seconds'] / u['train_seconds']:.2f})\n")
    print("| w | classified as requested | Fréchet distance | FD / unconditional run's | NFE | seconds |")
    print("|---|---|---|---|---|---|")
    for r in c["guidance"]:
        print(f"| {r['guidance']:g} | {100 * r['accuracy']:.1f} % | {r['fd']:.3f} | {r['fd'] / u['fd']:.2f} | "
              f"{r['nfe']} | {r['seconds']:.1f} |")
    print("\n| bits/dim (all test digits) | ODE | DDPM bound |")
    print("|---|---|---|")
    print(f"| unconditional p(x) | {_fmt(u, 'bpd_ode')} | {_fmt(u, 'bpd_vlb')} |")
    print(f"| conditional p(x \\| y) | {_fmt(c, 'bpd_cond_ode')} | {_fmt(c, 'bpd_cond_vlb')} |")
    print(f"| conditional p(x), null label | {_fmt(c, 'bpd_null_ode')} | {_fmt(c, 'bpd_null_vlb')} |")
    if "bpd_mixture_ode" in c:
        print(f"| conditional p(x), class mixture | {_fmt(c, 'bpd_mixture_ode')} | – |")
    if args.mixture_limit:
        run = load_run(args.cond)
        cfg = run.config
        train, test = (load_dataset(cfg.data.name, s, seed=cfg.seed) for s in ("train", "test"))
        settings = EvalSettings.from_config(cfg, limit=args.mixture_limit)
        start = time.perf_counter()
        rep = evaluate_conditional_likelihood(run.model, test, settings,
                                              class_log_prior=class_log_prior_of(train.labels, run.model.num_classes))
        secs = time.perf_counter() - start
        gmm = gmm_bits_per_dim(train.x_int, test.x_int[:rep.n], 17, n_components=50, covariance_type="diag",
                               copies=20, n_dequant=10, seed=0)
        print(f"\nfirst {rep.n} test digits ({secs:.0f} s; {settings.describe()}):\n")
        print("| bits/dim | ODE | DDPM bound | ODE NFE |")
        print("|---|---|---|---|")
        for name, o, v in (("p(x \\| y)", rep.cond_ode, rep.cond_vlb), ("p(x), null label", rep.null_ode, rep.null_vlb),
                           ("p(x), class mixture", rep.mixture_ode, None)):
            print(f"| {name} | {o.bpd:.3f} ± {o.stderr:.3f} | "
                  + (f"{v.bpd:.3f} ± {v.stderr:.3f}" if v is not None else "–") + f" | {o.nfe} |")
        print(f"| GaussianMixture baseline (50 diag) | {gmm.bpd:.3f} ± {gmm.stderr:.3f} | – | – |")


if __name__ == "__main__":
    main()
