"""Sampler overhead for the digits U-Net (issue 7, item 3): time outside network evaluations.

    python benchmarks/sampler_overhead.py [--batch 128] [--steps 50] [--repeats 5] [--threads 1]
                                          [--samplers ddim,ode,...] [--ckpt run/ema.safetensors]

For every sampler in ``scoresde.samplers.SAMPLERS`` (fixed ``--steps``; ``ode`` is adaptive,
dopri5 at its default tolerances) this measures, in one process and interleaved:

- ``T``: the wall time of the sampler on a batch of ``--batch`` prior draws (float32, like
  ``python -m scoresde.sample``), under ``torch.no_grad`` with the model in eval mode;
- ``t_net``: the network's own forward time, ``net(x, t)`` on the same batch (float32),
  timed right before each sampler run as the median of ``--net-calls`` calls;
- ``T_in``: the time spent inside the network's ``forward`` during that very sampler run
  (a wrapper times each call), which is immune to load changes between the two timings.

The overhead is ``1 - NFE · t_net / T`` (the issue's definition) and ``1 - T_in / T`` (the
same quantity measured on the same calls, far less noisy on a shared machine); the goal is
≤ 5 %. ``ms/NFE`` is the absolute overhead per network evaluation, ``(T - T_in) / NFE``.
Each repeat runs every sampler once (samplers in a rotated order, so load bursts do not hit
one sampler systematically);
the table shows medians over repeats. The network's weights (random by default, or
``--ckpt``) change the adaptive solver's NFE, not the cost per evaluation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from timing_nets import timed_digits_model

from scoresde.samplers import SAMPLERS, sample


def _net_time(net, x, t, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        net(x, t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--net-calls", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samplers", default=",".join(sorted(SAMPLERS)))
    p.add_argument("--ckpt", default=None, help="optional EMA weights (safetensors) of a digits run")
    p.add_argument("--null-net", action="store_true",
                   help="replace the U-Net by ε = 0.3 x: ms/NFE is then the pure overhead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, model, timed = timed_digits_model(args.ckpt, args.null_net)
    names = args.samplers.split(",")
    shape = (args.batch, *cfg.data.shape)
    x_T = model.sde.prior_sample(shape, generator=torch.Generator().manual_seed(1))
    t_net_in = torch.full((args.batch,), 0.5)
    rows = {n: {"T": [], "in": [], "net": [], "nfe": None} for n in names}
    with torch.no_grad():
        _net_time(timed.net, x_T, t_net_in, 3)  # warm-up
        for n in names:  # warm-up run of each sampler
            sample(model, n, x_T, steps=min(args.steps, 3), generator=torch.Generator().manual_seed(2))
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                rows[n]["net"].append(_net_time(timed.net, x_T, t_net_in, args.net_calls))
                g = torch.Generator().manual_seed(2)
                timed.seconds = 0.0
                t0 = time.perf_counter()
                res = sample(model, n, x_T, steps=args.steps, generator=g)
                rows[n]["T"].append(time.perf_counter() - t0)
                rows[n]["in"].append(timed.seconds)
                rows[n]["nfe"] = res.nfe
    print(f"# torch {torch.__version__}, threads {args.threads}, batch {args.batch}, steps "
          f"{args.steps}, repeats {args.repeats}, load average {os.getloadavg()[0]:.1f}")
    print("| sampler | NFE | T (s) | t_net (ms) | NFE·t_net (s) | overhead (NFE·t_net) | "
          "T_in (s) | overhead (T_in) | ms/NFE |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        row = rows[n]
        fractions = [1 - row["nfe"] * tn / tt for tn, tt in zip(row["net"], row["T"])]
        inside = [1 - ti / tt for ti, tt in zip(row["in"], row["T"])]
        per_nfe = [(tt - ti) / row["nfe"] for ti, tt in zip(row["in"], row["T"])]
        tt, tn = statistics.median(row["T"]), statistics.median(row["net"])
        print(f"| {n} | {row['nfe']} | {tt:.3f} | {1e3 * tn:.2f} | {row['nfe'] * tn:.3f} | "
              f"{100 * statistics.median(fractions):.1f} % | {statistics.median(row['in']):.3f} | "
              f"{100 * statistics.median(inside):.1f} % | {1e3 * statistics.median(per_nfe):.2f} |")


if __name__ == "__main__":
    main()
