"""Training throughput (issues 7 and 27): the program's step against the best bare loop, one run.

    python benchmarks/train_throughput.py --config configs/cifar10_ddpmpp.yaml --device cuda
    python benchmarks/train_throughput.py --device cpu [--config ...] [KEY=VALUE ...]
    python benchmarks/train_throughput.py --profile 20           # torch.profiler table of the program

Loops, all on the same device, the same ε-network (same initial weights) and the config's batch:

- ``program``: :meth:`scoresde.training.trainer.Trainer.train_step` exactly as ``python -m
  scoresde.train`` drives it (``sync=True`` only on logging steps: every ``train.log_every``-th),
  with the config's ``train.compile`` / ``train.fused`` / ``train.channels_last`` / ``train.amp``:
  data order, per-step generators, ``t``/noise draws, the loss, bad-step bookkeeping, clipping,
  AdamW with warm-up and the EMA update.
- ``bare eager``: one fixed batch on the device, ``t ~ U``, ``x_t = α x0 + σ ε``,
  ``mse(net(x_t, t), ε)`` (bf16 autocast on CUDA when ``train.amp``), backward, AdamW (fused on
  CUDA) — nothing else.
- ``bare compiled``: the same with ``torch.compile`` of the network and of the loss around it
  (``--compile-mode``), AdamW fused on CUDA.

Each loop runs ``--block`` steps per timing (the device synchronised at both ends), ``--repeats``
times, interleaved; the table shows the median steps/s and peak device memory of each, and the
ratio of the program to the best bare loop. Without the data files (CIFAR-10 pickles) the
examples are random images of the config's shape (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import time

import torch

from scoresde.core.sde import append_dims
from scoresde.data.loader import Dataset, load_dataset
from scoresde.training.build import build_model
from scoresde.training.config import load_config
from scoresde.training.distributed import DistInfo
from scoresde.training.trainer import Trainer


def _data(cfg):
    try:
        return load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed), "files"
    except (ValueError, OSError):
        shape, n = tuple(cfg.data.shape), max(4 * cfg.train.batch_size, 512)
        g = torch.Generator().manual_seed(0)
        x_int = torch.randint(0, 256, (n, *shape), generator=g)
        return Dataset(cfg.data.name, (2 * x_int.float() + 1) / 256 - 1, x_int, 256, shape, None), "random"


def bare_loop(model, x0: torch.Tensor, cfg, device, compiled: bool, mode: str | None):
    """A closure doing one bare training step on the fixed batch ``x0`` (on ``device``)."""
    net, sde = model.net, model.sde
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=0.0, fused=cuda or None)
    amp = cfg.train.amp and cuda

    def loss_of(x0, t, noise, alpha, sigma):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net(alpha * x0 + sigma * noise, t)
        return torch.nn.functional.mse_loss(out.float(), noise)

    loss_fn = torch.compile(loss_of, mode=mode) if compiled else loss_of
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        t = 1e-3 + (1 - 1e-3) * torch.rand(x0.shape[0], generator=g, device=device)  # (B,) float32
        noise = torch.randn(x0.shape, generator=g, device=device)
        t64 = t.double()
        alpha = append_dims(sde.alpha(t64), x0.ndim).float()
        sigma = append_dims(sde.sigma(t64), x0.ndim).float()
        loss = loss_fn(x0, t, noise, alpha, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def program_loop(trainer: Trainer):
    every = trainer.cfg.train.log_every

    def step():
        trainer.train_step(sync=(trainer.step + 1) % every == 0)

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step, n: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="default: configs/digits.yaml")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per loop first (compilation)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--compile-mode", default="default", help="mode of the bare compiled loop")
    p.add_argument("--no-bare-compiled", action="store_true", help="skip the compiled bare loop")
    p.add_argument("--profile", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config, [*args.overrides, f"device={device.type}"])
    data, source = _data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    bare_models = {"bare eager": copy.deepcopy(model).to(device)}
    if not args.no_bare_compiled:
        bare_models["bare compiled"] = copy.deepcopy(model).to(device)
    trainer = Trainer(cfg, model.to(device), data, device, DistInfo())
    x0 = data.x[:cfg.train.batch_size].float().to(device)
    loops = {"program": program_loop(trainer)}
    mode = None if args.compile_mode == "default" else args.compile_mode
    for name, m in bare_models.items():
        loops[name] = bare_loop(m, x0, cfg, device, compiled=name == "bare compiled", mode=mode)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        _rate(loops["program"], args.warmup, device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            _rate(loops["program"], args.profile, device)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    memory, compile_s = {}, {}
    for name, step in loops.items():  # warm-up (compilation) and peak memory, one loop at a time
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        _rate(step, args.warmup, device)
        compile_s[name] = time.perf_counter() - t0
        memory[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rates = {name: [] for name in loops}
    names = list(loops)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            rates[name].append(_rate(loops[name], args.block, device))
    best = max((n for n in names if n != "program"), key=lambda n: statistics.median(rates[n]))
    ratios = [a / b for a, b in zip(rates["program"], rates[best])]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    tc = cfg.train
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"# {cfg.data.name} {tuple(cfg.data.shape)} ({source} data), {cfg.model.kind} "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, batch {tc.batch_size}, amp {tc.amp}, "
          f"program: compile {tc.compile} ({tc.compile_mode}), fused {tc.fused}, channels_last {tc.channels_last}, "
          f"sync-free {trainer.sync_free}, log_every {tc.log_every}; {args.repeats} × {args.block} steps each")
    print("| loop | steps/s (median) | ms/step | peak memory (GiB) | warm-up (s) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        m = statistics.median(rates[name])
        print(f"| {name} | {m:.2f} | {1e3 / m:.1f} | {memory[name]:.2f} | {compile_s[name]:.1f} |")
    print(f"ratio program / best bare loop ({best}), median of per-repeat ratios: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
