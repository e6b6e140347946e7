"""``python -m scoresde.train``: train a score model, then sample and evaluate it.

    python -m scoresde.train                       # digits default, ≈ 5 min on 2 CPU cores
    python -m scoresde.train --config configs/toy2d.yaml --sampler ode
    python -m scoresde.train --out runs/x --resume auto --set train.steps=4000
    torchrun --nproc_per_node=2 -m scoresde.train --config configs/toy2d.yaml

Run folder: ``config.yaml``, ``checkpoints/``, ``ema.safetensors``, ``metrics.jsonl``,
``samples_<sampler>.png`` (+ ``.npz``), ``summary.json`` (docs/training.md).
"""

from __future__ import annotations

import sys

from scoresde.cli import SMOKE_TRAIN, ArgumentParser, run_cli, smoke
from scoresde.training.config import DEFAULT_CONFIG
from scoresde.training.run import RunRequest, train_run

__all__ = ["main", "build_parser"]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.train", description="Train a score-based diffusion model.")
    p.add_argument("--config", help=f"YAML config (default {DEFAULT_CONFIG.name})")
    p.add_argument("--sampler", help="sampler for the final samples (sample.sampler; default ode)")
    p.add_argument("--sample-steps", type=int, help="sampler steps (sample.steps)")
    p.add_argument("--out", help="run folder (default runs/<config name>, or -2, -3, ... if taken)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:K (device)")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and noise (seed)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH",
                   help="continue the run folder's latest checkpoint (auto), or a checkpoint / run folder")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set train.steps=2000 model.channels=64")
    return p


def request_from_args(args) -> RunRequest:
    """The run the flags ask for: ``--set`` overrides first, then the flags that name a config key."""
    overrides = list(args.set)
    for key, value in (("seed", args.seed), ("sample.sampler", args.sampler),
                       ("sample.steps", args.sample_steps), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if smoke("scoresde.train"):
        overrides += SMOKE_TRAIN
    return RunRequest(config=args.config, out=args.out, resume=args.resume, overrides=tuple(overrides))


def _main(argv) -> int:
    return train_run(request_from_args(build_parser().parse_args(argv)))


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.train")


if __name__ == "__main__":
    sys.exit(main())
