"""``python -m scoresde.evaluate``: test bits/dim of a trained run (EMA weights).

    python -m scoresde.evaluate --ckpt runs/digits --bpd
    python -m scoresde.evaluate --ckpt runs/digits --bpd --vlb --trace hutchinson --probes 4 --limit 512

``--bpd``: bits/dim by the probability-flow ODE with uniform dequantization
(:func:`scoresde.likelihood.bits_per_dim`); ``--vlb``: the DDPM variational bound
(:func:`scoresde.vlb.ddpm_vlb_bits_per_dim`). Both on the run's data set (it must have integer
levels), printed as mean ± standard error over the evaluated examples, with NFE. Bad input
(missing or corrupt checkpoint, bad flag, data without levels, CUDA missing) is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import sys
import time

import torch

from .checkpoint import load_run
from .cli import ArgumentParser, run_cli
from .data import load_dataset
from .distributed import resolve_device
from .likelihood import PROBES, TRACES, bits_per_dim
from .vlb import VARIANCES, ddpm_vlb_bits_per_dim

__all__ = ["main", "build_parser"]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.evaluate", description="Test bits/dim of a trained run.")
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint .pt or ema.safetensors")
    p.add_argument("--bpd", action="store_true", help="bits/dim by the probability-flow ODE")
    p.add_argument("--vlb", action="store_true", help="bits/dim by the DDPM variational bound")
    p.add_argument("--trace", default="hutchinson", help=f"{' | '.join(TRACES)} (default hutchinson)")
    p.add_argument("--probe", default="rademacher", help=f"{' | '.join(PROBES)} (default rademacher)")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per sample (default 1)")
    p.add_argument("--dequant", type=int, default=1, help="dequantization draws per sample (default 1)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (default 1e-5)")
    p.add_argument("--vlb-terms", type=int, help="random subset of the N terms (default: all N)")
    p.add_argument("--variance", default="beta", help=f"VLB reverse variance: {' | '.join(VARIANCES)}")
    p.add_argument("--split", default="test", help="test | train (default test)")
    p.add_argument("--limit", type=int, default=512, help="first N examples (0: all; default 512)")
    p.add_argument("--batch-size", type=int, default=256, help="examples per solve (default 256)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--seed", type=int, default=0, help="seed of dequantization, probes and VLB noise")
    return p


def _check_args(args) -> None:
    if not (args.bpd or args.vlb):
        raise ValueError("nothing to evaluate: expected --bpd and/or --vlb")
    for flag, value, choices in (("--trace", args.trace, TRACES), ("--probe", args.probe, PROBES),
                                 ("--variance", args.variance, VARIANCES),
                                 ("--split", args.split, ("test", "train"))):
        if value not in choices:
            raise ValueError(f"{flag} {value}: expected one of {', '.join(choices)}")
    for flag, value, low in (("--probes", args.probes, 1), ("--dequant", args.dequant, 1),
                             ("--limit", args.limit, 0), ("--batch-size", args.batch_size, 1),
                             ("--seed", args.seed, 0)):
        if value < low:
            raise ValueError(f"{flag} {value}: expected an integer ≥ {low}")
    if args.vlb_terms is not None and args.vlb_terms < 1:
        raise ValueError(f"--vlb-terms {args.vlb_terms}: expected an integer ≥ 1")
    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        if not value > 0:
            raise ValueError(f"{flag} {value}: expected a number > 0")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    device = resolve_device(args.device)
    run = load_run(args.ckpt, device=device, ema=True)
    data = load_dataset(run.config.data.name, args.split, root=run.config.data.root)
    if data.levels is None or data.x_int is None:
        raise ValueError(f"data set {data.name!r} has no integer levels: bits/dim needs integer data "
                         f"(digits, mnist, cifar10)")
    x_int = data.x_int if args.limit == 0 else data.x_int[:args.limit]
    x_int = x_int.to(device)
    progress = sys.stderr.isatty()
    print(f"{run.source} (step {run.step}): {data.name} {args.split}, {x_int.shape[0]} examples, "
          f"D = {data.dim}, {data.levels} levels")
    try:
        if args.bpd:
            start = time.perf_counter()
            r = bits_per_dim(run.model, x_int, data.levels, n_dequant=args.dequant,
                             batch_size=args.batch_size, trace=args.trace, probe=args.probe,
                             n_probes=args.probes, rtol=args.rtol, atol=args.atol,
                             generator=torch.Generator().manual_seed(args.seed), progress=progress)
            how = "exact trace" if args.trace == "exact" else f"Hutchinson, {args.probes} probe(s)"
            print(f"bits/dim (ODE, {how}): {r.bpd:.4f} ± {r.stderr:.4f}   NFE {r.nfe} "
                  f"({r.info['nfe_per_solve']:.0f} per solve), {time.perf_counter() - start:.1f} s")
        if args.vlb:
            start = time.perf_counter()
            with torch.no_grad():
                r = ddpm_vlb_bits_per_dim(run.model, x_int, data.levels, n_terms=args.vlb_terms,
                                          variance=args.variance, batch_size=args.batch_size,
                                          generator=torch.Generator().manual_seed(args.seed),
                                          progress=progress)
            t = r.terms
            print(f"bits/dim (DDPM VLB, N = {r.info['N']}, {r.info['n_terms']} terms): {r.bpd:.4f} ± "
                  f"{r.stderr:.4f}   [L_T {t['L_T']:.4f}, sum L_t-1 {t['L_sum']:.4f}, L_0 {t['L_0']:.4f}]"
                  f"   NFE {r.nfe}, {time.perf_counter() - start:.1f} s")
    except RuntimeError as e:  # e.g. an ODE solve that fails: one line, not a traceback
        raise ValueError(str(e)) from None
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.evaluate")


if __name__ == "__main__":
    sys.exit(main())
