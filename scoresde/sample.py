"""``python -m scoresde.sample``: draw samples from a trained run (EMA weights).

    python -m scoresde.sample --ckpt runs/digits --sampler ode --n 64
    python -m scoresde.sample --ckpt runs/digits/ema.safetensors --sampler ddim --steps 50 --out x.png

A class-conditional run (``model.num_classes``; docs/conditioning.md) samples a class with
classifier-free guidance, or one row per class (``--n`` per class)::

    python -m scoresde.sample --ckpt runs/digits_cond --class 3 --guidance 2 --n 64
    python -m scoresde.sample --ckpt runs/digits_cond --class all --n 8

Writes a PNG (image grid, or scatter plot for 2-D data) and an ``.npz`` with ``samples``
(``(n, *shape)`` float32 in model space) next to it. ``--ckpt`` is a run folder, a
checkpoint ``.pt``, an ``ema.safetensors`` file or a diffusers DDPM folder
(:mod:`scoresde.interop`; its default sampler and steps are ``DiffusersModel.default_sampling``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from scoresde.cli import ArgumentParser, run_cli
from scoresde.evaluation.report import write_samples
from scoresde.training.checkpoint import load_model
from scoresde.util.checks import check_choice, check_int
from scoresde.util.choices import SAMPLERS
from scoresde.util.host import resolve_device

__all__ = ["main", "build_parser"]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.sample", description="Sample from a trained run.")
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint .pt, ema.safetensors or diffusers folder")
    p.add_argument("--sampler", help=f"one of {', '.join(SAMPLERS)} "
                                     f"(default: the run's sample.sampler)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps)")
    p.add_argument("--out", help="PNG path (default RUN/samples/<sampler>_seed<S>.png); .npz beside it")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draw and sampler noise")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--class", dest="label", metavar="K|all",
                   help="class-conditional runs: sample class K, or one row of --n per class (all)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w ≥ 0 with --class (default 0)")
    return p


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    check_int("--n", args.n)
    if args.steps is not None:
        check_int("--steps", args.steps)
    check_int("--seed", args.seed, 0)
    if args.sampler is not None:
        check_choice("--sampler", args.sampler, SAMPLERS)
    if not args.seed < 2**63:
        raise ValueError(f"--seed {args.seed}: expected an integer in [0, 2**63)")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: expected a file name ending in .png")
    device = resolve_device(args.device)
    run = load_model(args.ckpt, device=device)
    return write_samples(run, args.ckpt, sampler=args.sampler, n=args.n, steps=args.steps, seed=args.seed,
                         out=args.out, device=device, label=args.label, guidance=args.guidance)


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.sample")


if __name__ == "__main__":
    sys.exit(main())
