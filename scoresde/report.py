"""The figures a finished run reports: samples (PNG + ``.npz``), a sample-quality metric,
and test bits/dim by the probability-flow ODE and by the DDPM variational bound.

Used by ``python -m scoresde.train`` after training (on the unwrapped EMA model, rank 0
only: adaptive ODE solves must never run through DDP, PITFALLS.md) and by
``python -m scoresde.sample``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write
from .images import save_samples_png
from .samplers import sample

__all__ = ["draw_samples", "save_samples", "sample_metrics", "likelihood_figures"]


def draw_samples(model, sampler: str, n: int, *, steps: int, seed: int, device, progress: bool = False):
    """``n`` samples of ``model`` by ``sampler``; returns ``(x (n, *shape) on the CPU, nfe, seconds)``."""
    shape = tuple(model_shape(model))
    g = torch.Generator(device=device).manual_seed(seed)
    x_T = model.sde.prior_sample((n, *shape), generator=g, device=device)  # (n, *shape)
    start = time.perf_counter()
    with torch.no_grad():
        res = sample(model, sampler, x_T, steps=steps, generator=g, progress=progress)
    return res.x.float().cpu(), res.nfe, time.perf_counter() - start


def model_shape(model) -> tuple:
    return tuple(model.net.data_shape)


def save_samples(png_path, x: torch.Tensor, data: torch.Tensor | None = None, title: str = "") -> Path:
    """The PNG (grid or scatter over ``data``) and a ``.npz`` with ``samples`` beside it."""
    png_path = Path(png_path)
    shown = x.clamp(-1, 1) if x.ndim == 4 else x
    save_samples_png(png_path, shown, data, title)
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=x.numpy())
    atomic_write(png_path.with_suffix(".npz"), lambda f: f.write(buf.getvalue()))
    return png_path


def sample_metrics(x: torch.Tensor, data_name: str, train, test, *, cache_dir, seed: int) -> dict:
    """Sliced W1 to the reference (the exact ring oracle, else the test split) for 2-D data, with
    the same distance between real draws as its floor; the digits Fréchet distance and floor."""
    try:
        from . import metrics  # noqa: PLC0415 - written by another issue; optional until it lands
    except ImportError:
        return {"notes": ["sample metrics skipped: scoresde.metrics is not available"]}
    out: dict = {}
    g = torch.Generator().manual_seed(seed)
    if x.ndim == 2:
        n = x.shape[0]
        if data_name == "ring":
            from .data import toy_oracle  # noqa: PLC0415

            oracle = toy_oracle("ring")
            ref = oracle.sample(n, generator=g).float()
            other = oracle.sample(n, generator=g).float()
        else:
            ref, other = test.x[:n], train.x[:n]
        out["sliced_w1"] = metrics.sliced_wasserstein(x, ref, generator=g)
        out["sliced_w1_floor"] = metrics.sliced_wasserstein(other, ref, generator=g)
        out["sliced_w1_reference"] = "ring oracle" if data_name == "ring" else "test split"
    elif data_name == "digits":
        fd = metrics.digits_frechet(x.clamp(-1, 1), cache_dir=cache_dir, seed=seed)
        out["fd"], out["fd_floor"] = float(fd["fd"]), float(fd["floor"])
    return out


def likelihood_figures(model, test, *, ode: bool, vlb: bool, n: int, trace: str, probes: int,
                       vlb_terms, batch_size: int, seed: int, progress: bool = False,
                       ode_sigma: float | None = None, vlb_sigma: float | None = None,
                       vlb_steps: int = 1000) -> dict:
    """Test bits/dim ± standard error (probability-flow ODE, DDPM bound) on the first ``n``
    test examples (all if 0); skipped with a note for data without integer levels.

    ``ode_sigma``: the ODE starts at ``σ(t_eps) = ode_sigma`` (default ``t_eps = 1e-5``);
    ``vlb_sigma``: the bound runs on ``vlb_steps`` log-SNR steps from ``σ(τ_1) = vlb_sigma``
    (:func:`scoresde.vlb_grid.grid_vlb_bits_per_dim`; default the grid ``i/N``)."""
    from .vlb_grid import grid_vlb_bits_per_dim, t_of_sigma  # noqa: PLC0415

    out: dict = {"notes": []}
    if not (ode or vlb):
        return out
    if test.x_int is None or test.levels is None:
        out["notes"].append(f"bits/dim skipped: data set {test.name!r} is continuous")
        return out
    x_int = test.x_int[:n] if n else test.x_int
    out["bpd_n"] = int(x_int.shape[0])
    if ode:
        try:
            from .likelihood import bits_per_dim  # noqa: PLC0415 - optional until it lands
        except ImportError:
            out["notes"].append("bits/dim (ODE) skipped: scoresde.likelihood is not available")
        else:
            start = time.perf_counter()
            r = bits_per_dim(model, x_int, test.levels, trace=trace, n_probes=probes,
                             generator=torch.Generator().manual_seed(seed), batch_size=batch_size,
                             progress=progress,
                             **({} if ode_sigma is None else {"t_eps": t_of_sigma(model.sde, ode_sigma)}))
            out.update(bpd_ode=float(r.bpd), bpd_ode_stderr=float(r.stderr), bpd_ode_nfe=int(r.nfe),
                       bpd_ode_seconds=time.perf_counter() - start)
    if vlb:
        try:
            from .likelihood import ddpm_vlb_bits_per_dim  # noqa: PLC0415
        except ImportError:
            try:
                from .vlb import ddpm_vlb_bits_per_dim  # noqa: PLC0415
            except ImportError:
                ddpm_vlb_bits_per_dim = None
        if ddpm_vlb_bits_per_dim is None:
            out["notes"].append("bits/dim (VLB) skipped: not available")
        else:
            start = time.perf_counter()
            with torch.no_grad():
                opts = dict(n_terms=vlb_terms, generator=torch.Generator().manual_seed(seed),
                             batch_size=batch_size, progress=progress)
                if vlb_sigma is None:
                    r = ddpm_vlb_bits_per_dim(model, x_int, test.levels, **opts)
                else:
                    r = grid_vlb_bits_per_dim(model, x_int, test.levels, N=vlb_steps,
                                              t_eps=t_of_sigma(model.sde, vlb_sigma), **opts)
            out.update(bpd_vlb=float(r.bpd), bpd_vlb_stderr=float(r.stderr), bpd_vlb_nfe=int(r.nfe),
                       bpd_vlb_seconds=time.perf_counter() - start)
    return out
