"""The probability-flow solver (scoresde.core.flow) on every VP schedule: NFE and error of sampling and likelihood.

    python benchmarks/flow_clock.py [--n 2000] [--threads 1]

For the 2-D ring of 8 Gaussians and a random 16-D mixture of 4, under the linear, cosine and
discrete DDPM schedules (the oracle is exact for each), with dopri5 at ``rtol = atol = 1e-5``:

- ``sample``: the ``ode`` sampler from ``x_T ~ N(0, I)`` to ``t_eps = sampling_eps`` without the
  denoising step; error = max |x - x_ref| against the same solve at ``rtol = atol = 1e-10``;
- ``log-lik``: ``log_likelihood`` (exact trace) of 200 oracle samples from ``t_eps = 1e-5``;
  error = max over samples of |ODE part - exact| in nats/dim, the ODE part being the oracle's
  exact ``log p_1(z)`` plus the divergence integral (the prior mismatch left out).
"""

from __future__ import annotations

import argparse
import time

import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.likelihood.ode import log_likelihood
from scoresde.samplers import sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="prior draws per sampling run (default 2000)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), dopri5 rtol = atol = 1e-5")
    print("| data | schedule | sample NFE | sample max err | ref NFE (1e-10) | log-lik NFE | log-lik max err/dim | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    sdes = {"linear": VPSDE.linear(), "cosine": VPSDE.cosine(), "ddpm N=1000": VPSDE.ddpm()}
    problems = {"ring8 (2-D)": GaussianMixture.ring(), "mixture (16-D)": GaussianMixture.random(16, 4, seed=0)}
    for label, gm0 in problems.items():
        for name, sde in sdes.items():
            gm = gm0.with_sde(sde)
            g = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            x_T = torch.randn(args.n, gm.dim, generator=g, dtype=torch.float64)
            r = sample(gm, "ode", x_T, steps=1, denoise=False)
            ref = sample(gm, "ode", x_T, steps=1, denoise=False, rtol=1e-10, atol=1e-10)
            x = gm.sample(200, generator=g)
            ll = log_likelihood(gm, x)
            ode_err = (gm.log_prob(ll.z, 1.0) + ll.divergence_integral - gm.log_prob(x, 1e-5)).abs().max() / gm.dim
            print(f"| {label} | {name} | {r.nfe} | {float((r.x - ref.x).abs().max()):.2e} | {ref.nfe} | {ll.nfe} "
                  f"| {float(ode_err):.2e} | {time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
