"""Writes expected.safetensors: samples of the stored unconditional runs, drawn by the code of
main at 5ee0c21 (before class conditioning). tests/test_conditional_compat.py checks that every
later version draws the same bits. Run once, from the repository root:

    python -m scoresde.train --config configs/toy2d.yaml --out toyrun --set model.hidden=32 \
        model.depth=2 model.time_dim=16 train.steps=30 train.log_every=10 train.ckpt_every=30 \
        sample.n=0 data.n=2000 sde.kind=vp sde.beta_min=0.1 sde.beta_max=20.0 train.lr=2e-3
                                        # toy_ckpt.pt, toy_ema.safetensors (sde.*, lr: toy2d.yaml's then)
    python -m scoresde.train --out digrun --set model.channels=8 train.steps=4 train.log_every=2 \
        train.ckpt_every=4 sample.n=0 eval.bpd=false eval.vlb=false   # digits_ema.safetensors
    python tests/data/unconditional/make_expected.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from scoresde.evaluation.report import draw_samples, model_shape
from scoresde.samplers import sample
from scoresde.training.checkpoint import load_run

HERE = Path(__file__).resolve().parent
CASES = {  # name: (file, sampler, steps, n)
    "toy_ckpt_ode": ("toy_ckpt.pt", "ode", 20, 16),
    "toy_ema_sde": ("toy_ema.safetensors", "sde", 20, 16),
    "toy_ema_pc": ("toy_ema.safetensors", "pc", 10, 16),
    "digits_ema_ancestral": ("digits_ema.safetensors", "ancestral", 10, 4),
    "digits_ema_dpmpp": ("digits_ema.safetensors", "dpmpp", 8, 4),
}
# Options that reproduce a default of 5ee0c21 which a later issue changed (issue 26: dpmpp's corrector;
# the stochastic samplers' uniform grid and pc's reverse-diffusion predictor without the few-step rule).
OLD_DEFAULTS = {"dpmpp": {"corrector": False}, "ancestral": {"spacing": "uniform"}, "sde": {"spacing": "uniform"},
                "pc": {"spacing": "uniform", "predictor": "reverse_diffusion", "few_steps": False}}


def expected() -> dict:
    torch.set_num_threads(1)
    out = {}
    for name, (file, sampler, steps, n) in CASES.items():
        run = load_run(HERE / file)
        if sampler in OLD_DEFAULTS:  # draw_samples' draws, with the old default spelled out
            g = torch.Generator(device="cpu").manual_seed(0)
            x_T = run.model.sde.prior_sample((n, *model_shape(run.model)), generator=g, device="cpu")
            with torch.no_grad():
                x = sample(run.model, sampler, x_T, steps=steps, generator=g, **OLD_DEFAULTS[sampler]).x.float()
        else:
            x, nfe, _ = draw_samples(run.model, sampler, n, steps=steps, seed=0, device="cpu")
        out[name] = x.contiguous()
    return out


if __name__ == "__main__":
    save_file(expected(), str(HERE / "expected.safetensors"))
