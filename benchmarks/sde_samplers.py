"""Every applicable sampler on trained digits runs of each SDE: NFE, seconds, Fréchet distance.

    python benchmarks/sde_samplers.py RUN [RUN ...] [--n 512] [--steps 50] [--seed 0] [--threads 1]

For each run folder (written by ``python -m scoresde.train``, e.g. with ``configs/digits.yaml``,
``configs/digits_subvp.yaml``, ``configs/digits_ve.yaml``), draws ``--n`` samples with every
sampler from the same prior draw (``--seed``), ``--steps`` steps each, and prints one table row
per (run, sampler): the SDE, NFE, wall seconds and the digits Fréchet distance (with its
train-vs-test floor). A sampler the SDE does not support (``ancestral`` off the VP-SDE) prints
its one-line ``ValueError`` instead of figures. The default sampler options are used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from scoresde.evaluation.metrics import digits_frechet
from scoresde.evaluation.report import draw_samples
from scoresde.samplers import SAMPLERS
from scoresde.training.checkpoint import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samplers", default=",".join(sorted(SAMPLERS)))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| run | SDE | sampler | NFE | seconds | Fréchet distance (floor) |")
    print("|---|---|---|---|---|---|")
    for run_dir in args.runs:
        run = load_run(run_dir)
        kind = run.config.sde.kind
        cache = Path(run_dir)
        for name in args.samplers.split(","):
            try:
                x, nfe, secs = draw_samples(run.model, name, args.n, steps=args.steps, seed=args.seed,
                                            device="cpu")
            except ValueError as e:
                print(f"| {Path(run_dir).name} | {kind} | {name} | — | — | refused: {e} |", flush=True)
                continue
            fd = digits_frechet(x.clamp(-1, 1), cache_dir=cache, seed=args.seed)
            print(f"| {Path(run_dir).name} | {kind} | {name} | {nfe} | {secs:.1f} | "
                  f"{float(fd['fd']):.2f} ({float(fd['floor']):.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
