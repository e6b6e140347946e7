"""Where should the stochastic samplers stop? (issue 26, item 4: ``ancestral`` and ``sde``.)

On the cases of ``vs_diffusers.py`` (exact ε, DDPM's linear schedule), ``ancestral`` (variance
``beta`` and ``beta_tilde``) and ``sde`` with default options and with the end time ``t_eps`` at
``σ/α = 0.05, 0.1, 0.2`` (then the Tweedie step), against diffusers' ``DDPMScheduler``
(leading spacing, its default) at the same NFE. Printed per cell: SW1 / its floor (an exact
sample of the same size against the exact law) and the mean log-density gap.

    python benchmarks/stochastic_end.py --n 20000 --cases "narrow mode 1-D" "thin ring 2-D"
"""

from __future__ import annotations

import argparse
import datetime
import math
import os

import torch
import vs_diffusers as V
from oracle_metrics import Case

from scoresde import VPSDE
from scoresde.samplers import SAMPLERS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--cases", nargs="*", default=[name for name, _ in V.CASES])
    ap.add_argument("--nfe", type=int, nargs="*", default=[10, 20, 50])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sde = VPSDE.ddpm()
    ddpm = dict((label, f) for label, f, _ in V.diffusers_configs())["DDPM leading"]

    def t_of(ratio):
        return float(sde.time_for_log_snr(torch.tensor(-2 * math.log(ratio), dtype=torch.float64)))

    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, n={args.n}, "
          f"load {os.getloadavg()[0]:.1f}; cells: SW1/floor Δlogp")
    for name in args.cases:
        case = Case(name, dict(V.CASES)[name](sde), args.n, 10, 64)
        fl = case.floors(3)
        print(f"## {name}: SW1 floor {fl['sw1']:.2e}", flush=True)
        for nfe in args.nfe:
            cells = []

            def add(label, x, case=case, cells=cells, fl=fl):
                m = case.metrics(x, False)
                cells.append(f"{label}: {m['sw1'] / fl['sw1']:.2f} {m['dlogp']:+.3f}")

            add("DDPM", V.run_diffusers(ddpm, case.oracle, case.x_T, nfe)[0])
            for end in (None, 0.05, 0.1, 0.2):
                t_eps = None if end is None else t_of(end)
                for sampler, steps, kw in (("ancestral", nfe, {}), ("ancestral", nfe, {"variance": "beta_tilde"}),
                                           ("sde", nfe - 1, {})):
                    r = SAMPLERS[sampler](case.oracle, case.x_T, steps=steps, t_eps=t_eps,
                                          generator=torch.Generator().manual_seed(5), **kw)
                    add(f"{sampler}{' β̃' if kw else ''} end {end or 'default'}", r.x)
            print(f"NFE {nfe}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
