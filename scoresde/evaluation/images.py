"""Pictures of samples: an image grid (Pillow) or a 2-D scatter plot over the data (matplotlib)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scoresde.util.atomic import atomic_write

__all__ = ["image_grid", "save_grid", "save_scatter", "save_samples_png"]


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Samples ``(B, C, H, W)`` in ``[-1, 1]`` as one uint8 image ``(rows·(H+pad)+pad, ..., C)``."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"samples of shape {tuple(x.shape)}: expected (B, 1 or 3, H, W)")
    b, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    img = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top:top + h, left:left + w] = img[i].permute(1, 2, 0).numpy()
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    return grid


def _put(path, data: bytes):
    """``data`` written to a path (atomically) or to a binary file object (``path.write``)."""
    if hasattr(path, "write"):
        path.write(data)
        return path
    return atomic_write(path, lambda f: f.write(data))


def _write_png(path, pil: Image.Image) -> Path:
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return _put(path, buf.getvalue())


def save_grid(path, x: torch.Tensor, max_images: int = 64) -> Path:
    """Save the first ``max_images`` samples as a PNG grid, upscaled so small images stay visible."""
    x = x[:max_images]
    scale = max(1, 128 // x.shape[-1])
    grid = image_grid(x, scale=scale)
    pil = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return _write_png(path, pil)


def save_scatter(path, samples: torch.Tensor, data: torch.Tensor | None = None,
                 title: str = "") -> Path:
    """2-D samples ``(B, 2)`` as a scatter plot over the data (grey)."""
    import matplotlib  # only for 2-D data

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if data is not None:
        d = data.detach().cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=2, c="0.75", label="data")
    s = samples.detach().float().cpu().numpy()
    ax.scatter(s[:, 0], s[:, 1], s=2, c="C0", label="samples")
    if data is not None:  # frame the data; far outliers would squash the picture
        lo, hi = d.min(0), d.max(0)
        pad = 0.25 * (hi - lo)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return _put(path, buf.getvalue())


def save_samples_png(path, samples: torch.Tensor, data: torch.Tensor | None = None,
                     title: str = "") -> Path:
    """A grid for images ``(B, C, H, W)``, a scatter plot for 2-D vectors ``(B, 2)``; ``path`` a file
    name (written atomically) or a binary file object."""
    if samples.ndim == 4:
        return save_grid(path, samples)
    if samples.ndim == 2 and samples.shape[1] == 2:
        return save_scatter(path, samples, data, title)
    raise ValueError(f"samples of shape {tuple(samples.shape)}: expected images or 2-D points")
