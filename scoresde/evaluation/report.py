"""The figures a finished run reports besides bits/dim: samples (PNG + ``.npz``) and a
sample-quality metric. Test bits/dim come from :func:`scoresde.evaluation.likelihood.evaluate_likelihood`.

Used by ``python -m scoresde.train`` after training (on the unwrapped EMA model, rank 0
only: an adaptive ODE solve through DDP would synchronise ranks at every step) and by
``python -m scoresde.sample``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from scoresde.data.toy import toy_oracle
from scoresde.evaluation import metrics
from scoresde.evaluation.images import save_samples_png
from scoresde.samplers import sample
from scoresde.util.atomic import atomic_write

__all__ = ["draw_samples", "save_samples", "sample_metrics", "model_shape"]


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
    out: dict = {}
    g = torch.Generator().manual_seed(seed)
    if x.ndim == 2:
        n = x.shape[0]
        if data_name == "ring":
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
