"""Likelihood speed (issue 7, item 5): digits bits/dim per second vs the cost of its network calls.

    python benchmarks/likelihood_speed.py [--n 128] [--batch 128] [--repeats 3] [--threads 1]
                                          [--trace hutchinson] [--ckpt run/ema.safetensors]

:func:`scoresde.likelihood.ode.bits_per_dim` on ``--n`` digits test images with the digits U-Net
(random weights, or ``--ckpt``) at the evaluation defaults (probability-flow ODE, dopri5
``rtol = atol = 1e-5``, Hutchinson trace with one Rademacher probe, batches of ``--batch``).
Every right-hand-side evaluation of the solve is one batched call: the network on the whole
batch plus one VJP per probe. In the same run, interleaved, the benchmark times that unit
alone (``t_call``: a float32 forward of the network with ``x`` requiring grad, then
``autograd.grad`` with a probe, median of ``--calls``), and reports

- samples/s = n / T (T: wall time of ``bits_per_dim``),
- the overhead ``1 - NFE · t_call / T`` and ``1 - T_in / T`` with ``T_in`` the time spent
  inside the network's forward and backward during the solve (measured on the same calls).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from timing_nets import timed_digits_model

from scoresde.data.loader import load_dataset
from scoresde.likelihood.ode import bits_per_dim


def _call_time(net, x, t, calls: int) -> float:
    """Median time of one forward + one VJP of ``net`` at ``x`` (float32)."""
    times = []
    v = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    for _ in range(calls):
        t0 = time.perf_counter()
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xr, t), xr, grad_outputs=v)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trace", default="hutchinson")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--null-net", action="store_true",
                   help="replace the U-Net by ε = 0.3 x: ms/NFE is then the pure overhead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, model, timed = timed_digits_model(args.ckpt, args.null_net)
    test = load_dataset("digits", "test")
    x_int = test.x_int[:args.n]
    x = test.x[:args.n]
    x_call, t_call = x[:args.batch].float(), torch.full((min(args.batch, args.n),), 0.5)
    _call_time(timed.net, x_call, t_call, 2)  # warm-up
    rows = []
    for _ in range(args.repeats):
        tc = _call_time(timed.net, x_call, t_call, args.calls)
        timed.seconds = 0.0
        t0 = time.perf_counter()
        r = bits_per_dim(model, x_int, test.levels, batch_size=args.batch, trace=args.trace,
                         generator=torch.Generator().manual_seed(0))
        total = time.perf_counter() - t0
        rows.append({"T": total, "in": timed.seconds, "call": tc, "nfe": r.nfe, "bpd": r.bpd})
    med = {k: statistics.median(row[k] for row in rows) for k in ("T", "in", "call")}
    over_call = statistics.median(1 - row["nfe"] * row["call"] / row["T"] for row in rows)
    over_in = statistics.median(1 - row["in"] / row["T"] for row in rows)
    nfe = rows[-1]["nfe"]
    print(f"# digits test, n {args.n}, batch {args.batch}, trace {args.trace}, torch "
          f"{torch.__version__}, threads {args.threads}, {args.repeats} repeats, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| n | NFE (all batches) | T (s) | samples/s | t_call (ms) | NFE·t_call (s) | "
          "overhead (NFE·t_call) | T_in (s) | overhead (T_in) | bits/dim |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.n} | {nfe} | {med['T']:.2f} | {args.n / med['T']:.2f} | {1e3 * med['call']:.1f} | "
          f"{nfe * med['call']:.2f} | {100 * over_call:.1f} % | {med['in']:.2f} | "
          f"{100 * over_in:.1f} % | {rows[-1]['bpd']:.3f} |")


if __name__ == "__main__":
    main()
