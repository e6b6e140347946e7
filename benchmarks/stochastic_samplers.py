"""The stochastic samplers' defaults against diffusers' ``DDPMScheduler`` (issue 26, item 4).

On the four cases of ``vs_diffusers.py`` (exact ε of a Gaussian mixture on DDPM's linear schedule,
N = 1000, the same ``x_T`` and noise seed for every run), at NFE 5, 10, 20 and 50 (everything
counted, the final Tweedie step included):

- ``DDPMScheduler`` with its defaults (``fixed_small`` variance β̃, leading timesteps);
- ``ddim`` with default options (the deterministic bar of "no worse than ``ddim``");
- ``ancestral``, ``sde`` and ``pc`` with their **defaults** (quadratic grid; ``pc``: the
  ancestral predictor on a VP-SDE and the few-step rule), beside the **previous** defaults
  (uniform grid; ``pc``: reverse diffusion, no few-step rule) and variants measured for the
  choice: ``ancestral`` with ``variance="beta_tilde"``, ``pc`` with reverse diffusion on the new
  grid, without the few-step rule, and with ``corrector_steps=0`` (the same NFE spent on
  predictor steps).

Cells: sliced W1 to the exact law divided by its floor (an exact sample of the same size against
the exact law, the mean of three draws), then the mean log-density gap ``Δlogp`` (negative:
blurred; positive: collapsed onto the modes); :mod:`oracle_metrics`. The goals (issue 26):
``pc`` within 1.5× the floor at 50 NFE; ``pc`` at ≤ 10 NFE no worse than ``ddim``;
``ancestral`` and ``sde`` at 10–50 NFE as sharp as ``DDPMScheduler`` (``|Δlogp|`` no larger)
with SW1 within 1.1× of the previous default.

    python benchmarks/stochastic_samplers.py              # the tables in docs/benchmarks.md (n = 20 000)
    python benchmarks/stochastic_samplers.py --n 2000 --nfe 10 --cases "narrow mode 1-D"   # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch
import vs_diffusers as V
from oracle_metrics import Case

from scoresde import VPSDE
from scoresde.samplers import SAMPLERS

# (label, sampler, NFE → steps, options); the rows of every table
PREVIOUS = {"spacing": "uniform"}  # the defaults of ancestral and sde before issue 26
PC_PREVIOUS = {"spacing": "uniform", "predictor": "reverse_diffusion", "few_steps": False}


def _half(nfe):  # pc: (1 + corrector_steps) NFE per step, + 1 for the Tweedie step
    return (nfe - 1) // 2


ROWS = (
    ("ddim", "ddim", lambda nfe: nfe, {}),
    ("ancestral", "ancestral", lambda nfe: nfe, {}),
    ("ancestral, previous (uniform)", "ancestral", lambda nfe: nfe, PREVIOUS),
    ("ancestral, variance β̃", "ancestral", lambda nfe: nfe, {"variance": "beta_tilde"}),
    ("sde", "sde", lambda nfe: nfe - 1, {}),
    ("sde, previous (uniform)", "sde", lambda nfe: nfe - 1, PREVIOUS),
    ("pc", "pc", _half, {}),
    ("pc, previous (uniform, reverse diffusion)", "pc", _half, PC_PREVIOUS),
    ("pc, reverse diffusion", "pc", _half, {"predictor": "reverse_diffusion", "few_steps": False}),
    ("pc, no few-step rule", "pc", _half, {"few_steps": False}),
    ("pc, corrector_steps=0", "pc", lambda nfe: nfe - 1, {"corrector_steps": 0}),
)


def run_row(case, sampler, steps, options, seed=5):
    """One sampler on the case's ``x_T``; ``(samples, NFE)`` or ``(None, 0)`` when no step fits."""
    if steps < 1:
        return None, 0
    r = SAMPLERS[sampler](case.oracle, case.x_T, steps=steps, generator=torch.Generator().manual_seed(seed),
                          **options)
    return r.x, r.nfe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="samples per run")
    ap.add_argument("--n-proj", type=int, default=128, help="directions of sliced W1")
    ap.add_argument("--cases", nargs="*", default=[name for name, _ in V.CASES])
    ap.add_argument("--nfe", type=int, nargs="*", default=[5, 10, 20, 50])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    unknown = sorted(set(args.cases) - {name for name, _ in V.CASES})
    if unknown:
        ap.error(f"--cases {unknown[0]!r}: expected one of {', '.join(name for name, _ in V.CASES)}")
    sde = VPSDE.ddpm()
    ddpm = dict((label, f) for label, f, _ in V.diffusers_configs())["DDPM leading"]
    start = time.time()
    print(f"# benchmarks/stochastic_samplers.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, {platform.machine()}, 1 thread, load {os.getloadavg()[0]:.1f}; "
          f"n={args.n} samples per run, {args.n_proj} directions; cells: SW1/floor, Δlogp (NFE used)")
    for name in args.cases:
        case = Case(name, dict(V.CASES)[name](sde), args.n, 10, args.n_proj)
        fl = case.floors(3)
        print(f"\n### {name}: SW1 floor {fl['sw1']:.2e} ± {fl['sw1_sd']:.0e} (n = {args.n}), "
              f"Δlogp of an exact sample ± {fl['dlogp_sd']:.0e}\n")
        print("| sampler | " + " | ".join(f"NFE {nfe}" for nfe in args.nfe) + " |")
        print("|---|" + "---|" * len(args.nfe))

        def cell(x, calls, fl=fl, case=case):
            if x is None:
                return "–"
            m = case.metrics(x, False)
            return f"{m['sw1'] / fl['sw1']:.2f}, {m['dlogp']:+.3f} ({calls})"

        cells = [cell(*V.run_diffusers(ddpm, case.oracle, case.x_T, nfe)) for nfe in args.nfe]
        print("| DDPMScheduler (defaults) | " + " | ".join(cells) + " |", flush=True)
        for label, sampler, steps_of, options in ROWS:
            cells = [cell(*run_row(case, sampler, steps_of(nfe), options)) for nfe in args.nfe]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n# wall time {time.time() - start:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
