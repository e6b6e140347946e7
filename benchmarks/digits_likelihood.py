"""Digits test bits/dim (issue 8): an ablation table and classical baselines, in one run.

    python benchmarks/digits_likelihood.py [--steps 2000] [--rows plain_simple,lattice_lik,...]
                                           [--threads 2] [--no-baselines]

Data: scikit-learn's digits, 8×8, 17 levels, the fixed 80/20 split (1437 train, 360 test).
Every trained row uses the same MLP ε-network (hidden 512, depth 3), batch 128, AdamW
lr 2e-3 (100 warm-up steps, cosine decay), gradient clipping 1, EMA 0.999 with warm-up, the
linear VP-SDE, and ``--steps`` optimizer steps; rows differ only as their names say:

- ``plain_*``: ``ScoreModel(MLP)``; ``lattice_*``: :class:`scoresde.core.lattice.LatticeResidualModel`,
  the exact ε* of the training set's per-pixel level frequencies plus the MLP (whose output
  layer starts at zero, so training starts from the lattice oracle).
- ``*_simple``: simple weighting, ``t ~ U[1e-3, 1]``; ``*_lik``: likelihood weighting with
  importance sampling (Song, Durkan, Murray & Ermon 2021), ``t_eps`` with ``σ(t_eps) = 0.02``;
  ``*_deq``: trained on uniformly dequantized data (fresh ``u`` every batch).

Estimators (each ± standard error over the 360 test images):
- ODE: :func:`scoresde.likelihood.ode.bits_per_dim`, probability-flow ODE from ``t_eps`` with
  ``σ(t_eps) = --ode-sigma`` (default 0.035 ≈ w/3.4, ``w = 2/17``), one uniform dequantization,
  Hutchinson trace (one Rademacher probe), dopri5 ``rtol = atol = 1e-4``.
- VLB: :func:`scoresde.likelihood.vlb_grid.grid_vlb_bits_per_dim`, the DDPM bound with a discretized
  Gaussian decoder on N = 1000 steps equally spaced in log-SNR from ``σ(τ_1) = --vlb-sigma``
  (default 0.02 ≈ w/6) to 1.
The ``plain_simple`` row is also evaluated at the library defaults (ODE from ``t_eps = 1e-5``,
VLB on the grid ``i/1000``): the starting point of the issue.

Baselines on the same split: sklearn ``GaussianMixture`` (50 diagonal, 10 full, 1 full
components; fitted to 20 dequantized copies of the training set, scored on 10 dequantized
draws of the test set; :func:`scoresde.likelihood.baselines.gmm_bits_per_dim`), and the exact
``-log₂ P(k)/D`` of the per-pixel level frequencies (a discrete model, no dequantization).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from scoresde.core.lattice import FactorizedLattice, LatticeResidualModel, lattice_log_probs
from scoresde.core.losses import dsm_loss
from scoresde.core.model import ScoreModel
from scoresde.core.sde import VPSDE
from scoresde.data.loader import dequantize, load_dataset
from scoresde.likelihood.baselines import gmm_bits_per_dim
from scoresde.likelihood.ode import bits_per_dim
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.likelihood.vlb_grid import grid_vlb_bits_per_dim, t_of_sigma
from scoresde.nets import MLP
from scoresde.training.ema import EMA

ROWS = {  # name: (lattice base, weighting, sigma of the training t_eps or None, dequantize)
    "plain_simple": (False, "simple", None, False),
    "plain_lik": (False, "likelihood", 0.02, False),
    "plain_lik_deq": (False, "likelihood", 0.02, True),
    "lattice_simple": (True, "simple", None, False),
    "lattice_lik": (True, "likelihood", 0.02, False),
    "lattice_lik_deq": (True, "likelihood", 0.02, True),
}


def train(model, data, *, steps, weighting, t_eps, dequant, seed, lr=2e-3, batch=128, ema_decay=0.999):
    """AdamW + warm-up + cosine decay + clipping + EMA; returns (EMA model, seconds)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr)
    ema = EMA(model, ema_decay)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(data), (batch,), generator=g)
        x0 = (dequantize(data.x_int[idx], data.levels, generator=g, dtype=torch.float32)
              if dequant else data.x[idx])  # (B, 1, 8, 8)
        loss = dsm_loss(model, x0, weighting=weighting, t_eps=t_eps, generator=g).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        opt.step()
        ema.update(model)
    seconds = time.perf_counter() - start
    ema_model = copy.deepcopy(model)
    ema.copy_to(ema_model)
    return ema_model.eval().requires_grad_(False), seconds


def evaluate(model, test, *, ode_t_eps, vlb_t_eps, default_grid=False, seed=0):
    """(ODE result, VLB result, seconds) on the test set."""
    start = time.perf_counter()
    ode = bits_per_dim(model, test.x_int, test.levels, t_eps=ode_t_eps, trace="hutchinson",
                       rtol=1e-4, atol=1e-4, batch_size=len(test),
                       generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if default_grid:
            vlb = ddpm_vlb_bits_per_dim(model, test.x_int, test.levels, N=1000, batch_size=len(test),
                                        generator=torch.Generator().manual_seed(seed + 1))
        else:
            vlb = grid_vlb_bits_per_dim(model, test.x_int, test.levels, t_eps=vlb_t_eps, N=1000,
                                        batch_size=len(test),
                                        generator=torch.Generator().manual_seed(seed + 1))
    return ode, vlb, time.perf_counter() - start


def line(name, train_s, ode, vlb, eval_s):
    o = f"{ode.bpd:.3f} ± {ode.stderr:.3f}" if ode is not None else "—"
    v = f"{vlb.bpd:.3f} ± {vlb.stderr:.3f}" if vlb is not None else "—"
    nfe = f"{ode.nfe} / {vlb.nfe}" if ode is not None and vlb is not None else "—"
    return f"| {name} | {train_s} | {o} | {v} | {nfe} | {eval_s} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ode-sigma", type=float, default=0.035)
    p.add_argument("--vlb-sigma", type=float, default=0.02)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rows = [r for r in a.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {', '.join(unknown)}; expected some of {', '.join(ROWS)}")
    torch.set_num_threads(a.threads)
    train_set, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    sde = VPSDE.linear()
    ode_t, vlb_t = t_of_sigma(sde, a.ode_sigma), t_of_sigma(sde, a.vlb_sigma)
    print(f"digits: {len(train_set)} train, {len(test)} test, 17 levels (w = {2 / 17:.4f}); "
          f"ODE t_eps = {ode_t:.5f} (σ = {a.ode_sigma}), VLB τ_1 = {vlb_t:.5f} (σ = {a.vlb_sigma}); "
          f"{a.steps} steps, {a.threads} threads")
    print("| configuration | train s | ODE bits/dim | VLB bits/dim | NFE (ODE / VLB) | eval s |")
    print("|---|---|---|---|---|---|")
    base = FactorizedLattice(lattice_log_probs(train_set.x_int, 17), sde, train_set.shape)
    if not a.no_baselines:
        for k, cov in ((50, "diag"), (10, "full"), (1, "full")):
            start = time.perf_counter()
            r = gmm_bits_per_dim(train_set.x_int, test.x_int, 17, n_components=k, covariance_type=cov,
                                 seed=a.seed)
            print(f"| sklearn GaussianMixture, {k} {cov} (dequantized) | {time.perf_counter() - start:.0f} "
                  f"| {r.bpd:.3f} ± {r.stderr:.3f} (exact density) | — | — | — |", flush=True)
        exact = -base.log_prob_discrete(test.x_int) / (64 * math.log(2))
        print(f"| per-pixel level frequencies, exact -log₂ P(k)/D | 0 | {float(exact.mean()):.3f} ± "
              f"{float(exact.std() / math.sqrt(len(exact))):.3f} (exact) | — | — | — |", flush=True)
        ode, vlb, es = evaluate(base, test, ode_t_eps=ode_t, vlb_t_eps=vlb_t, seed=a.seed)
        print(line("per-pixel frequencies as a diffusion (lattice oracle, no network)", 0, ode, vlb,
                   f"{es:.0f}"), flush=True)
    for name in rows:
        lattice, weighting, sigma, dequant = ROWS[name]
        torch.manual_seed(a.seed)
        net = MLP(train_set.shape, hidden=512, depth=3)
        if lattice:  # start from the lattice oracle itself: zero residual
            torch.nn.init.zeros_(net.out.weight)
            torch.nn.init.zeros_(net.out.bias)
        model = LatticeResidualModel(net, sde, base) if lattice else ScoreModel(net, sde)
        t_eps = t_of_sigma(sde, sigma) if sigma is not None else None
        ema_model, ts = train(model, train_set, steps=a.steps, weighting=weighting, t_eps=t_eps,
                              dequant=dequant, seed=a.seed)
        if name == "plain_simple":
            ode, vlb, es = evaluate(ema_model, test, ode_t_eps=1e-5, vlb_t_eps=None, default_grid=True,
                                    seed=a.seed)
            print(line(f"{name}, library defaults (ODE t_eps=1e-5, VLB grid i/1000)", f"{ts:.0f}", ode,
                       vlb, f"{es:.0f}"), flush=True)
        ode, vlb, es = evaluate(ema_model, test, ode_t_eps=ode_t, vlb_t_eps=vlb_t, seed=a.seed)
        print(line(name, f"{ts:.0f}", ode, vlb, f"{es:.0f}"), flush=True)


if __name__ == "__main__":
    main()
