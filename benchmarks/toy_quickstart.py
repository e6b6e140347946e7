"""The toy quick start's quality against CPU training time (issue 26, item 6).

    python benchmarks/toy_quickstart.py [--marks 30,60] [--config configs/toy2d.yaml] [KEY=VALUE ...]

Trains ``--config`` (with ``--set``-style overrides) by the program's own :class:`Trainer`, one
thread, and at each mark of **CPU seconds spent in training steps** (``time.process_time``, so a
machine shared with other jobs gives the same figures as an idle one, up to cache effects) draws
the run's samples from the EMA model exactly as ``python -m scoresde.train`` does after training
(:func:`scoresde.evaluation.report.draw_samples`, the config's sampler, ``sample.n`` samples, seed)
and scores them by the run's own metric (:func:`scoresde.evaluation.report.sample_metrics`): sliced
W1 to the exact ring oracle and its floor (two oracle draws of the same size). Sampling time is not
counted. One line per mark.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from scoresde.data.loader import load_dataset
from scoresde.evaluation.report import draw_samples, sample_metrics
from scoresde.training import distributed
from scoresde.training.build import build_model
from scoresde.training.config import load_config
from scoresde.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--marks", default="30,60", help="CPU seconds of training at which to score (default 30,60)")
    p.add_argument("--config", default=str(ROOT / "configs" / "toy2d.yaml"))
    p.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE, as train's --set")
    args = p.parse_args(argv)
    marks = sorted(float(m) for m in args.marks.split(","))
    cfg = load_config(args.config, args.overrides)
    if cfg.data.name != "ring":
        raise SystemExit(f"data.name={cfg.data.name!r}: expected 'ring' (the toy set with an exact oracle)")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    data = load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, build_model(cfg, data), data, device, distributed.DistInfo())
    print(f"# {args.config} {' '.join(args.overrides)}: sampler {cfg.sample.sampler}, n = {cfg.sample.n}")
    spent = 0.0
    for mark in marks:
        while spent < mark:
            start = time.process_time()
            trainer.train_step()
            spent += time.process_time() - start
        model = build_model(cfg)
        trainer.ema.copy_to(model)
        model.eval().requires_grad_(False)
        x, nfe, _ = draw_samples(model, cfg.sample.sampler, cfg.sample.n, steps=cfg.sample.steps,
                                 seed=cfg.seed, device=device)
        m = sample_metrics(x, cfg.data.name, None, None, cache_dir=None, seed=cfg.seed)
        print(f"cpu {spent:6.1f} s  step {trainer.step:6d}  sliced W1 {m['sliced_w1']:.4f}  floor "
              f"{m['sliced_w1_floor']:.4f}  ratio {m['sliced_w1'] / m['sliced_w1_floor']:.2f}  NFE {nfe}", flush=True)


if __name__ == "__main__":
    main()
