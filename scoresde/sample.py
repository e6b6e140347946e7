"""``python -m scoresde.sample``: draw samples from a trained run (EMA weights).

    python -m scoresde.sample --ckpt runs/digits --sampler ode --n 64
    python -m scoresde.sample --ckpt runs/digits/ema.safetensors --sampler ddim --steps 50 --out x.png
    python -m scoresde.sample --ckpt runs/digits --inpaint bottom --n 16 [--method smc] [--steps 100]

A class-conditional run (``model.num_classes``; docs/conditioning.md) samples a class with
classifier-free guidance, or one row per class (``--n`` per class)::

    python -m scoresde.sample --ckpt runs/digits_cond --class 3 --guidance 2 --n 64
    python -m scoresde.sample --ckpt runs/digits_cond --class all --n 8

Writes a PNG (image grid, or scatter plot for 2-D data) and an ``.npz`` with ``samples``
(``(n, *shape)`` float32 in model space) next to it. ``--ckpt`` is a run folder, a
checkpoint ``.pt``, an ``ema.safetensors`` file or a diffusers DDPM folder
(:mod:`scoresde.interop`; its default sampler and steps are ``DiffusersModel.default_sampling``;
its samples go to ``./samples/``, never into the model's folder).

``--inpaint bottom|right|center|random:P`` instead completes the first ``--n`` test images with
their masked part hidden, by each imputation method (``--method``, default all three) at about
``--steps`` NFE each (default 100), ``--completions`` times per image, and reports how often the
digits classifier gives a completion the original's label (:mod:`scoresde.evaluation.inpaint`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from scoresde.cli import SMOKE_N, ArgumentParser, run_cli, smoke
from scoresde.evaluation.inpaint import write_inpainting
from scoresde.evaluation.report import write_samples
from scoresde.samplers.impute import inpaint_mask
from scoresde.training.checkpoint import load_model
from scoresde.util.checks import check_choice, check_int
from scoresde.util.choices import IMPUTE_METHODS, IMPUTE_SAMPLERS, INPAINT_MASKS, SAMPLERS
from scoresde.util.host import resolve_device, use_threads

__all__ = ["main", "build_parser"]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.sample", description="Sample from a trained run.")
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint .pt, ema.safetensors or diffusers folder")
    p.add_argument("--sampler", help=f"one of {', '.join(SAMPLERS)} "
                                     f"(default: the run's sample.sampler)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps)")
    p.add_argument("--out", help="PNG path (default RUN/samples/<sampler>_seed<S>.png, for a diffusers folder "
                                 "./samples/<sampler>_seed<S>.png); .npz beside it")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draw and sampler noise")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--inpaint", metavar="MASK", help=f"complete test images with a hidden region: "
                                                     f"{' | '.join(INPAINT_MASKS)} (P in (0, 1))")
    p.add_argument("--method", help=f"with --inpaint: one of {', '.join(IMPUTE_METHODS)}, or all (default)")
    p.add_argument("--particles", type=int, default=16, help="with --inpaint: SMC particles (default 16)")
    p.add_argument("--completions", type=int, default=3, help="with --inpaint: completions per image (default 3)")
    p.add_argument("--class", dest="label", metavar="K|all",
                   help="class-conditional runs: sample class K, or one row of --n per class (all)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w ≥ 0 with --class (default 0)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples the network sees at once; a larger --n runs in chunks (default 256)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the run's train.threads)")
    return p


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    check_int("--n", args.n)
    if args.steps is not None:
        check_int("--steps", args.steps)
    check_int("--seed", args.seed, 0)
    check_int("--batch-size", args.batch_size)
    if args.threads is not None:
        check_int("--threads", args.threads)
    if not args.seed < 2**63:
        raise ValueError(f"--seed {args.seed}: expected an integer in [0, 2**63)")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: expected a file name ending in .png")
    if args.inpaint is not None:
        return _inpaint(args)
    for flag in ("method", "particles", "completions"):
        if getattr(args, flag) != build_parser().get_default(flag):
            raise ValueError(f"--{flag} {getattr(args, flag)}: expected only with --inpaint")
    if args.sampler is not None:
        check_choice("--sampler", args.sampler, SAMPLERS)
    if smoke("scoresde.sample"):
        args.n = min(args.n, SMOKE_N)
    device, run = _load(args)
    return write_samples(run, args.ckpt, sampler=args.sampler, n=args.n, steps=args.steps, seed=args.seed,
                         out=args.out, device=device, label=args.label, guidance=args.guidance,
                         batch_size=args.batch_size)


def _inpaint(args) -> int:
    """``--inpaint``: the flags checked before the model is loaded; then :func:`write_inpainting`."""
    kind = args.inpaint
    try:
        inpaint_mask(kind, (1, 2, 2))
    except ValueError:
        raise ValueError(f"--inpaint {kind}: expected one of {', '.join(INPAINT_MASKS)} "
                         f"(P a number in (0, 1))") from None
    methods = list(IMPUTE_METHODS) if args.method in (None, "all") else \
        [check_choice("--method", args.method, IMPUTE_METHODS + ("all",))]
    check_int("--particles", args.particles)
    check_int("--completions", args.completions)
    nfe = 100 if args.steps is None else args.steps
    if nfe < 2:
        raise ValueError(f"--steps {nfe}: expected an integer ≥ 2 (the NFE of each method)")
    if args.sampler is not None:
        check_choice("--sampler", args.sampler, IMPUTE_SAMPLERS)
    device, run = _load(args)
    return write_inpainting(run, args.ckpt, kind=kind, methods=methods, nfe=nfe, particles=args.particles,
                            completions=args.completions, sampler=args.sampler, n=args.n, seed=args.seed,
                            out=args.out, device=device)


def _load(args):
    """The device and the model (``--ckpt``), then the thread count (``--threads`` or the run's)."""
    device = resolve_device(args.device)
    run = load_model(args.ckpt, device=device)
    use_threads(args.threads, run.config)
    return device, run


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.sample")


if __name__ == "__main__":
    sys.exit(main())
