"""Step-for-step reproduction of diffusers' ``DDIMScheduler`` and ``DDPMScheduler`` by the
``ddim`` and ``ancestral`` samplers on diffusers' own timesteps (``timesteps=``, time
``t = (k + 1)/N``), from the same ``x_T``, with the same noise and the oracle's exact ε.

diffusers keeps its ``ᾱ`` table in float32; the tests check that table against ours to float32
round-off (the time convention) and then give the scheduler the float64 table of the same
betas, so both sides run in float64 and must agree to float64 round-off.
"""

import diffusers
import pytest
import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.samplers import sample

N = 1000
BASE = dict(num_train_timesteps=N, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False)


def _alphas_cumprod64():
    """diffusers' ᾱ_k = Π_{j ≤ k} (1 - β_j) of the linear betas, in float64."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, N, dtype=torch.float64), 0)


def _float64(sched):
    ac = _alphas_cumprod64()
    torch.testing.assert_close(sched.alphas_cumprod.to(torch.float64), ac, rtol=2e-6, atol=0)  # their float32
    sched.alphas_cumprod = ac
    if hasattr(sched, "final_alpha_cumprod"):  # DDIM: 1 or ᾱ_0
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if sched.config.set_alpha_to_one \
            else ac[0]
    if hasattr(sched, "one"):  # DDPM
        sched.one = torch.tensor(1.0, dtype=torch.float64)
    return sched


def _problem(seed=0):
    gm = GaussianMixture.random(3, 3, seed=seed, sde=VPSDE.ddpm(N))
    x_T = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    return gm, x_T


def _run_diffusers(sched, gm, x_T, steps, seed, **step_kw):
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    for k in sched.timesteps:
        eps = gm.eps(x, (int(k) + 1) / N)  # their timestep k is our time (k + 1)/N
        x = sched.step(eps, k, x, generator=g, **step_kw).prev_sample
    return x, sched.timesteps


def test_time_convention_matches_diffusers_alphas_cumprod():
    """Their ᾱ_k is our ᾱ((k + 1)/N): in float64 to round-off; their float32 table to float32 round-off."""
    sde = VPSDE.ddpm(N)
    ours = sde.alpha_bar(torch.arange(1, N + 1, dtype=torch.float64) / N)
    torch.testing.assert_close(ours, _alphas_cumprod64(), rtol=1e-13, atol=0)
    theirs = diffusers.DDPMScheduler(**BASE).alphas_cumprod.to(torch.float64)
    torch.testing.assert_close(theirs, ours, rtol=2e-6, atol=0)


@pytest.mark.parametrize("spacing,steps", [("leading", 10), ("trailing", 10), ("leading", 37), ("trailing", 40),
                                           ("linspace", N)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_ddim_reproduces_diffusers_ddim_scheduler(spacing, steps, eta, alpha_to_one):
    """``set_alpha_to_one=True``: the last step goes to ᾱ = 1, our ``denoise=True`` (Tweedie).
    ``False``: it goes to ᾱ_0, i.e. time 1/N, our ``denoise=False`` on the grid extended by k = 0
    (when the timesteps already end at k = 0, diffusers' last step is the identity)."""
    gm, x_T = _problem(1)
    sched = _float64(diffusers.DDIMScheduler(**BASE, timestep_spacing=spacing, set_alpha_to_one=alpha_to_one))
    want, ks = _run_diffusers(sched, gm, x_T, steps, seed=7, eta=eta)
    ks = ks.tolist()
    if not alpha_to_one and ks[-1] != 0:
        ks = ks + [0]
    got = sample(gm, "ddim", x_T, timesteps=ks, eta=eta, denoise=alpha_to_one,
                 generator=torch.Generator().manual_seed(7))
    assert got.nfe == len(ks) - (not alpha_to_one)
    torch.testing.assert_close(got.x, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spacing,steps", [("linspace", 10), ("trailing", 37)])
def test_diffusers_ddim_steps_off_its_own_grid(spacing, steps):
    """Why ``linspace`` is tested only at N steps and ``trailing`` only where K divides N:
    diffusers' DDIM steps from k to k - ⌊N/K⌋, not to the next listed timestep, so e.g. with
    ``linspace`` and K = 10 it evaluates ε at 888 on a state it moved to 899 (docs/samplers.md).
    Such a run is not a sampler on one time grid; ours on the listed timesteps differs."""
    sched = diffusers.DDIMScheduler(**BASE, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    gaps = set((sched.timesteps[:-1] - sched.timesteps[1:]).tolist())
    assert gaps != {N // steps}


@pytest.mark.parametrize("spacing,steps", [("leading", 10), ("trailing", 10), ("linspace", 10),
                                           ("trailing", 37), ("linspace", 37)])
def test_ancestral_reproduces_diffusers_ddpm_scheduler(spacing, steps):
    """DDPMScheduler's ``fixed_small`` variance is our ``beta_tilde``; its last step goes to ᾱ = 1
    (our ``denoise=True``). Tolerance: diffusers clamps that last variance at 1e-20 and adds
    1e-10 z when the last timestep is not 0 (trailing, linspace); otherwise float64 round-off."""
    gm, x_T = _problem(2)
    sched = _float64(diffusers.DDPMScheduler(**BASE, timestep_spacing=spacing))
    want, ks = _run_diffusers(sched, gm, x_T, steps, seed=11)
    got = sample(gm, "ancestral", x_T, timesteps=ks, variance="beta_tilde",
                 generator=torch.Generator().manual_seed(11))
    assert got.nfe == steps
    atol = 1e-12 if int(ks[-1]) == 0 else 1e-9
    torch.testing.assert_close(got.x, want, rtol=1e-10, atol=atol)


def test_full_ddpm_chain_is_ancestral_with_default_grid():
    """All N steps: DDPMScheduler(1000 steps) is ``ancestral(steps=N, variance="beta_tilde")``
    with no explicit grid: DDPM exactly as a VP-SDE."""
    gm, x_T = _problem(3)
    sched = _float64(diffusers.DDPMScheduler(**BASE))
    want, _ = _run_diffusers(sched, gm, x_T, N, seed=5)
    got = sample(gm, "ancestral", x_T, steps=N, variance="beta_tilde", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got.x, want, rtol=1e-10, atol=1e-12)
