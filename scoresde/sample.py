"""``python -m scoresde.sample``: draw samples from a trained run (EMA weights).

    python -m scoresde.sample --ckpt runs/digits --sampler ode --n 64
    python -m scoresde.sample --ckpt runs/digits/ema.safetensors --sampler ddim --steps 50 --out x.png

Writes a PNG (image grid, or scatter plot for 2-D data) and an ``.npz`` with ``samples``
(``(n, *shape)`` float32 in model space) next to it. ``--ckpt`` is a run folder, a
checkpoint ``.pt``, an ``ema.safetensors`` file or a diffusers DDPM folder
(:mod:`scoresde.interop`; its default sampler and steps are ``DiffusersModel.default_sampling``).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from scoresde.cli import ArgumentParser, run_cli
from scoresde.data.loader import load_dataset
from scoresde.data.table import dataset_info
from scoresde.evaluation.report import draw_samples, model_shape, save_samples
from scoresde.training.checkpoint import load_model
from scoresde.util.atomic import first_non_file, nearest_existing, writable_folder
from scoresde.util.checks import check_choice, check_int
from scoresde.util.choices import SAMPLERS
from scoresde.util.errors import NonFiniteResult, WriteFailed, one_line
from scoresde.util.host import check_memory, resolve_device

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
    cfg = run.config  # None for a diffusers folder: its model says how it is sampled by default
    default_sampler, default_steps = ((cfg.sample.sampler, cfg.sample.steps) if cfg is not None
                                      else run.model.default_sampling)
    sampler, steps = args.sampler or default_sampler, args.steps or default_steps
    dim = math.prod(model_shape(run.model))
    check_memory("--n", args.n, 8.0 * dim * args.n, "the samples (x_T and x, float32)")
    check_memory("--steps", steps, 8.0 * (steps + 1), "the sampler's time grid (float64)")
    run_dir = Path(args.ckpt) if Path(args.ckpt).is_dir() else run.source.parent
    out = Path(args.out) if args.out else run_dir / "samples" / f"{sampler}_seed{args.seed}.png"
    _check_writable(out)

    start = time.perf_counter()
    try:
        x, nfe, _ = draw_samples(run.model, sampler, args.n, steps=steps, seed=args.seed, device=device,
                                 progress=sys.stderr.isatty())
    except NonFiniteResult as e:
        raise NonFiniteResult(f"non-finite samples of {run.source}: {e}; nothing was written") from None
    background = None
    if x.ndim == 2 and cfg is not None and dataset_info(cfg.data.name).is_toy:  # generated in milliseconds
        background = load_dataset(run.config.data.name, "test", seed=run.config.seed).x
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # folders this run creates
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_samples(out, x, background, f"{sampler}, {nfe} NFE")
    except OSError as e:
        for folder in made:  # innermost first; a folder another process filled meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise WriteFailed(f"writing {out} failed: {one_line(e)}; no new PNG was written") from None
    print(f"wrote {out} and {out.with_suffix('.npz')}: {args.n} samples, sampler {sampler}, "
          f"{nfe} NFE, {time.perf_counter() - start:.1f} s ("
          + (f"step {run.step} of {run.source})" if cfg is not None else f"{run.model.describe()})"))
    return 0


def _check_writable(out: Path) -> None:
    """The PNG and the .npz beside it can be written (checked before sampling)."""
    probe = nearest_existing(out.parent)
    if not writable_folder(probe):
        raise ValueError(f"--out {out}: {probe} is not a writable folder; expected a PNG path in one")
    bad = first_non_file((out, out.with_suffix(".npz")))
    if bad is not None:
        raise ValueError(f"--out {out}: {bad} is a folder or special file; expected a file name")


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.sample")


if __name__ == "__main__":
    sys.exit(main())
