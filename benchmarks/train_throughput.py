"""Training throughput (issue 7, item 4): ``scoresde.train``'s step vs a bare loop, one run.

    python benchmarks/train_throughput.py [--config configs/digits.yaml] [--block 10]
                                          [--repeats 8] [--threads 1] [--profile 20]

Both loops train the same ε-network (same initial weights) at the config's batch size:

- ``trainer``: :meth:`scoresde.training.trainer.Trainer.train_step`, the step ``python -m
  scoresde.train`` runs (data order and per-step generators, time and noise draws through
  :func:`scoresde.core.losses.dsm_loss`, the finiteness all-reduce, gradient clipping, AdamW with
  the warm-up schedule, the EMA update, the loss window for logging). The training CLI adds
  a progress-bar update per step, a log line every ``log_every`` steps and checkpoints; they
  are not timed here.
- ``bare``: one fixed batch, ``t ~ U``, ``x_t = α x0 + σ ε``, ``mse(net(x_t, t), ε)``,
  backward, ``AdamW.step()``; nothing else.

The two alternate in blocks of ``--block`` steps, ``--repeats`` times; the table shows the
median steps/s of each and the median of the per-repeat ratios (the goal: ≥ 0.9).
``--profile N`` prints torch.profiler's table for ``N`` trainer steps.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from scoresde.core.sde import append_dims
from scoresde.data.loader import load_dataset
from scoresde.training.build import build_model
from scoresde.training.config import load_config
from scoresde.training.distributed import DistInfo
from scoresde.training.trainer import Trainer


def bare_loop(model, x0: torch.Tensor, lr: float):
    """A closure doing one bare training step on ``x0``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    net, sde = model.net, model.sde
    g = torch.Generator().manual_seed(0)

    def step():
        t = 1e-3 + (1 - 1e-3) * torch.rand(x0.shape[0], generator=g)  # (B,) float32
        noise = torch.randn(x0.shape, generator=g)
        t64 = t.double()
        alpha = append_dims(sde.alpha(t64), x0.ndim).float()
        sigma = append_dims(sde.sigma(t64), x0.ndim).float()
        loss = torch.nn.functional.mse_loss(net(alpha * x0 + sigma * noise, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _rate(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="default: configs/digits.yaml")
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    data = load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    bare_model = copy.deepcopy(model)
    trainer = Trainer(cfg, model, data, torch.device("cpu"), DistInfo())
    bare = bare_loop(bare_model, data.x[:cfg.train.batch_size].float(), cfg.train.lr)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        _rate(trainer.train_step, 3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _rate(trainer.train_step, args.profile)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    _rate(trainer.train_step, 2)  # warm-up
    _rate(bare, 2)
    rates = {"trainer": [], "bare": []}
    for r in range(args.repeats):
        pair = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
        for name in pair:
            rates[name].append(_rate(trainer.train_step if name == "trainer" else bare, args.block))
    ratios = [a / b for a, b in zip(rates["trainer"], rates["bare"])]
    print(f"# {cfg.data.name}, batch {cfg.train.batch_size}, torch {torch.__version__}, threads "
          f"{args.threads}, {args.repeats} × {args.block} steps each, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| loop | steps/s (median) | ms/step |")
    print("|---|---:|---:|")
    for name, v in rates.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.2f} | {1e3 / m:.1f} |")
    print(f"ratio trainer/bare (median of per-repeat ratios): {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
