"""``python -m scoresde.evaluate``: test bits/dim of a trained run (EMA weights).

    python -m scoresde.evaluate --ckpt runs/digits --bpd --vlb       # as the run's summary.json
    python -m scoresde.evaluate --ckpt runs/digits --bpd --trace exact --limit 64 --seed 3

``--bpd``: bits/dim by the probability-flow ODE with uniform dequantization; ``--vlb``: the DDPM
variational bound. Both go through :func:`scoresde.evaluation.bpd_eval.evaluate_likelihood`, the function
the training run's report uses, and start from the **run's own** ``eval.*`` settings and seed
(``config.yaml``); every flag below overrides one of them. The settings used are printed first,
so ``--bpd --vlb`` without other flags reproduces ``summary.json``'s bits/dim exactly (same
examples, same seed, same thread count). Results: mean ± standard error over the examples, NFE.
``--ckpt`` may also be a diffusers DDPM folder (:mod:`scoresde.interop`): then the settings start
from :class:`~scoresde.evaluation.bpd_eval.EvalSettings`' defaults and ``--data`` names the data set:
``digits``, ``mnist``, ``cifar10`` (files under ``--data-root``) or your own ``.npz`` / image
folder of integer images with ``--levels`` levels (default 256).
``--fid N``: FID and KID of N samples against the training split, :func:`scoresde.evaluation.fid.print_fid`
(Inception via ``pip install -e ".[fid]"``, or ``--fid-features random``: a pipeline check; docs/fid.md).
Bad input (missing or corrupt checkpoint, bad flag, data without levels, no CUDA): one line, exit 2.
"""

from __future__ import annotations

import sys

from scoresde.cli import ArgumentParser, run_cli, smoke, smoke_cap
from scoresde.core.sde import not_vp_reason
from scoresde.evaluation import fid as fid_lib
from scoresde.evaluation.bpd_eval import EvalSettings, evaluation_data, print_likelihood
from scoresde.training.checkpoint import load_model
from scoresde.util.checks import check_choice, check_int
from scoresde.util.choices import PROBES, SAMPLERS, SPLITS, TRACES, VARIANCES
from scoresde.util.host import resolve_device, use_threads

__all__ = ["main", "build_parser"]

_RUN = "default: the run's"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.evaluate", description="Test bits/dim of a trained run.")
    p.add_argument("--ckpt", required=True, help="run folder, checkpoint .pt, ema.safetensors or diffusers folder")
    p.add_argument("--data", help="digits | mnist | cifar10 | an .npz or folder of uint8 images "
                                  "(default: the run's data set; required for a diffusers folder)")
    p.add_argument("--data-root", help="folder of the mnist / cifar10 files (default: the run's data.root, "
                                       "else $SCORESDE_DATA or ./data)")
    p.add_argument("--levels", type=int, help="levels of an .npz / image folder's values (default 256)")
    p.add_argument("--bpd", action="store_true", help="bits/dim by the probability-flow ODE")
    p.add_argument("--vlb", action="store_true", help="bits/dim by the DDPM variational bound")
    p.add_argument("--trace", help=f"{' | '.join(TRACES)} ({_RUN} eval.bpd_trace)")
    p.add_argument("--probes", type=int, help=f"Hutchinson probes per example ({_RUN} eval.bpd_probes)")
    p.add_argument("--probe", help=f"{' | '.join(PROBES)} (default rademacher)")
    p.add_argument("--dequant", type=int, help="dequantization draws per example (default 1)")
    p.add_argument("--ode-sigma", type=float, help=f"ODE starts at σ(t_eps) = this ({_RUN} eval.ode_sigma)")
    p.add_argument("--ode-t-eps", action="store_true",
                   help="ODE starts at t_eps = 1e-5 instead of the run's eval.ode_sigma")
    p.add_argument("--rtol", type=float, help=f"ODE relative tolerance ({_RUN} eval.rtol)")
    p.add_argument("--atol", type=float, help=f"ODE absolute tolerance ({_RUN} eval.atol)")
    p.add_argument("--vlb-sigma", type=float, help=f"bound from σ(τ_1) = this ({_RUN} eval.vlb_sigma)")
    p.add_argument("--vlb-ddpm-grid", action="store_true",
                   help="bound on the grid i/N instead of the run's eval.vlb_sigma grid")
    p.add_argument("--vlb-steps", type=int, help=f"steps of the log-SNR grid ({_RUN} eval.vlb_steps)")
    p.add_argument("--vlb-terms", type=int, help=f"random subset of the terms ({_RUN} eval.vlb_terms)")
    p.add_argument("--vlb-all-terms", action="store_true", help="every term instead of eval.vlb_terms")
    p.add_argument("--variance", help=f"VLB reverse variance: {' | '.join(VARIANCES)} (default beta)")
    p.add_argument("--split", default="test", help="test | train of a named data set (default test)")
    p.add_argument("--limit", type=int, help=f"first N examples, 0: all ({_RUN} eval.bpd_n)")
    p.add_argument("--batch-size", type=int, help=f"examples per solve ({_RUN} eval.batch_size)")
    p.add_argument("--seed", type=int, help=f"seed of dequantization, probes and VLB noise ({_RUN} seed)")
    p.add_argument("--threads", type=int, help=f"torch CPU threads ({_RUN} train.threads)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--fid", type=int, metavar="N", help="FID and KID of N samples against the training split")
    p.add_argument("--sampler", help=f"sampler of the FID samples ({_RUN} sample.sampler)")
    p.add_argument("--steps", type=int, help=f"sampler steps of the FID samples ({_RUN} sample.steps)")
    p.add_argument("--fid-batch", type=int, default=250, help="samples per batch of the FID (default 250)")
    p.add_argument("--fid-features", default="inception", help="inception (torch-fidelity's) | random (a check)")
    p.add_argument("--no-mixture", action="store_true", help="conditional runs: skip p(x) by the class mixture")
    return p


# The flags that set one of EvalSettings' fields: EvalSettings.check is their one check.
_FLAGS = {"limit": "--limit", "trace": "--trace", "probes": "--probes", "probe": "--probe", "dequant": "--dequant",
          "ode_sigma": "--ode-sigma", "rtol": "--rtol", "atol": "--atol", "vlb_sigma": "--vlb-sigma",
          "vlb_steps": "--vlb-steps", "vlb_terms": "--vlb-terms", "variance": "--variance",
          "batch_size": "--batch-size", "seed": "--seed"}
_CLEARS = {"ode_t_eps": "ode_sigma", "vlb_ddpm_grid": "vlb_sigma", "vlb_all_terms": "vlb_terms"}


def _check_args(args) -> None:
    """The flags that are the program's own (not settings): what to do, split, threads, seed range,
    and the pairs that exclude each other."""
    if not (args.bpd or args.vlb or args.fid is not None):
        raise ValueError("nothing to evaluate: expected --bpd, --vlb and/or --fid N")
    if args.fid is None and (args.sampler is not None or args.steps is not None):
        raise ValueError(f"--{'sampler' if args.sampler is not None else 'steps'}: only with --fid N")
    check_choice("--fid-features", args.fid_features, ("inception", "random"))
    if args.sampler is not None:
        check_choice("--sampler", args.sampler, SAMPLERS)
    for flag, value, low in (("--fid", args.fid, 2), ("--steps", args.steps, 1), ("--fid-batch", args.fid_batch, 1),
                             ("--threads", args.threads, 1)):
        if value is not None:
            check_int(flag, value, low)
    check_choice("--split", args.split, SPLITS)
    if args.seed is not None and not args.seed < 2**63:
        raise ValueError(f"--seed {args.seed}: expected an integer in [0, 2**63)")
    if args.levels is not None and not 2 <= check_int("--levels", args.levels, 2) <= 256:
        raise ValueError(f"--levels {args.levels}: expected an integer in [2, 256] (the images are uint8)")
    for flag, name in _CLEARS.items():
        if getattr(args, name) is not None and getattr(args, flag):
            raise ValueError(f"--{name.replace('_', '-')} and --{flag.replace('_', '-')}: expected at most one")


def settings_from_args(config, args) -> EvalSettings:
    """The run's settings (:meth:`EvalSettings.from_config`; :class:`EvalSettings`' defaults for a
    model without a config, a diffusers folder) with the flags given applied (and checked, once)."""
    flags = {name: getattr(args, name) for name in _FLAGS}
    clear = [name for flag, name in _CLEARS.items() if getattr(args, flag)]
    base = EvalSettings.from_config(config) if config is not None else EvalSettings()
    return base.replace(labels=_FLAGS, clear=clear, ode=args.bpd, vlb=args.vlb, **flags)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    device = resolve_device(args.device)
    run = load_model(args.ckpt, device=device)
    settings = settings_from_args(run.config, args)
    if settings.vlb and not_vp_reason(run.model.sde):  # before any work: sub-VP and VE have no DDPM bound
        raise ValueError(f"--vlb: {not_vp_reason(run.model.sde)} (--bpd; docs/sdes.md)")
    settings = settings.replace(limit=smoke_cap(settings.limit), vlb_terms=smoke_cap(settings.vlb_terms)) \
        if smoke("scoresde.evaluate") else settings  # smoke-test sizes: docs/testing.md
    use_threads(args.threads, run.config)
    if args.fid is not None:
        ref = evaluation_data(run, args.data, root=args.data_root, levels=args.levels, split="train")
        fid_lib.print_fid(run, ref, args, device)
        if not (args.bpd or args.vlb):
            return 0
    data = evaluation_data(run, args.data, root=args.data_root, levels=args.levels, split=args.split)
    return print_likelihood(run, data, settings, split=args.split, device=device, mixture=not args.no_mixture)


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.evaluate")


if __name__ == "__main__":
    sys.exit(main())
