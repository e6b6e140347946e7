"""Inpainting test images with a trained model: every imputation method at equal NFE, judged by
the digits classifier (docs/conditioning.md, "Imputation and inpainting").

:func:`inpaint` takes the first ``n`` test images, hides the region of an inpainting mask
(:func:`scoresde.samplers.impute.inpaint_mask`), completes each ``completions`` times by each
method of :func:`scoresde.samplers.impute.impute` with about the same NFE, and, for the digits,
counts how often :class:`scoresde.evaluation.metrics.DigitsFeatures`' classifier (the one behind
the digits Fréchet distance) gives a completion the original's label. :func:`save_inpainting`
writes the picture (one row per image: original, masked, then the completions of each method)
and an ``.npz`` with everything, as one unit.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scoresde.data.loader import load_dataset
from scoresde.evaluation.images import image_grid
from scoresde.evaluation.metrics import DigitsFeatures
from scoresde.evaluation.report import _check_writable, model_shape
from scoresde.samplers.impute import impute, inpaint_mask
from scoresde.util.atomic import atomic_write_together
from scoresde.util.errors import WriteFailed, one_line
from scoresde.util.host import check_memory

__all__ = ["InpaintResult", "inpaint", "method_options", "save_inpainting", "write_inpainting",
           "REPAINT_RESAMPLINGS"]

REPAINT_RESAMPLINGS = 4


def method_options(method: str, nfe: int, particles: int, sampler: str | None = None) -> dict:
    """``impute`` keywords for ``method`` at about ``nfe`` NFE: replacement and SMC ``K = nfe - 1``
    steps, RePaint ``r = 4`` takes of ``K = (nfe - 1)/4`` steps; SMC with ``particles``."""
    steps = max(1, nfe - 1)
    step = {} if sampler is None else {"sampler": sampler}
    if method == "replacement":
        return {"method": method, "steps": steps, **step}
    if method == "repaint":
        return {"method": method, "steps": max(1, round(steps / REPAINT_RESAMPLINGS)),
                "resamplings": REPAINT_RESAMPLINGS, **step}
    return {"method": method, "steps": steps, "particles": particles}


@dataclass
class InpaintResult:
    originals: torch.Tensor  # (n, C, H, W)
    mask: torch.Tensor  # (n, C, H, W) bool, True = observed
    labels: torch.Tensor | None  # (n,)
    methods: list
    completions: torch.Tensor  # (n, methods, completions, C, H, W)
    nfe: dict
    evals: dict  # network evaluations per completion
    seconds: dict
    predicted: torch.Tensor | None = None  # (n, methods, completions) classifier labels
    kept: dict = field(default_factory=dict)  # method → fraction of completions given the original's label
    reference: dict = field(default_factory=dict)  # classifier on the originals / the masked images


def inpaint(model, data_name: str, kind: str, *, n: int, methods, nfe: int, particles: int, completions: int,
            seed: int, device, sampler: str | None = None, features: DigitsFeatures | None = None,
            cache_dir=None, progress: bool = False) -> InpaintResult:
    """Inpaint the first ``n`` test images of ``data_name`` by each of ``methods`` (see the module)."""
    test = load_dataset(data_name, "test")
    if n > test.x.shape[0]:
        raise ValueError(f"--n {n}: expected at most {test.x.shape[0]} (the {data_name} test split)")
    x = test.x[:n].to(device=device, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    if kind.startswith("random:"):  # a mask per image
        mask = torch.stack([inpaint_mask(kind, x.shape[1:], generator=g) for _ in range(n)]).to(device)
    else:  # one region for every image
        mask = inpaint_mask(kind, x.shape[1:]).to(device).expand(x.shape)
    observed = x.repeat_interleave(completions, 0)
    masks = mask.repeat_interleave(completions, 0)
    outs, nfes, evals, secs = [], {}, {}, {}
    for method in methods:
        opts = method_options(method, nfe, particles, sampler)
        start = time.perf_counter()
        res = impute(model, observed, masks, generator=torch.Generator(device=device).manual_seed(seed),
                     progress=progress, **opts)
        secs[method] = time.perf_counter() - start
        nfes[method], evals[method] = res.nfe, res.nfe * opts.get("particles", 1)
        outs.append(res.x.float().cpu().reshape(n, completions, *x.shape[1:]))
    result = InpaintResult(x.cpu(), mask.cpu(), None if test.labels is None else test.labels[:n].clone(),
                           list(methods), torch.stack(outs, 1), nfes, evals, secs)
    if data_name == "digits" and result.labels is not None:
        _classify(result, features or DigitsFeatures(cache_dir=cache_dir))
    return result


@torch.no_grad()
def _classify(result: InpaintResult, features: DigitsFeatures) -> None:
    def predict(images):
        return features.head(features.features(images).float()).argmax(1)

    n, m, c = result.completions.shape[:3]
    result.predicted = predict(result.completions.reshape(n * m * c, *result.completions.shape[3:])).reshape(n, m, c)
    hits = result.predicted == result.labels[:, None, None]
    result.kept = {method: float(hits[:, i].double().mean()) for i, method in enumerate(result.methods)}
    masked = torch.where(result.mask, result.originals, torch.zeros_like(result.originals))
    result.reference = {"originals": float((predict(result.originals) == result.labels).double().mean()),
                        "masked (hidden = 0)": float((predict(masked) == result.labels).double().mean())}


def save_inpainting(png_path, result: InpaintResult) -> Path:
    """The PNG (rows: original, masked with the hidden part grey, completions by method) and an
    ``.npz`` beside it (``originals``, ``mask``, ``completions``, ``methods``, ``labels``,
    ``predicted``, ``nfe``), written as one unit."""
    png_path = Path(png_path)
    n, m, c = result.completions.shape[:3]
    masked = torch.where(result.mask, result.originals, torch.zeros_like(result.originals))
    gap = torch.ones_like(result.originals[:, None])  # a white column between groups
    cols = [result.originals[:, None], masked[:, None], gap]
    for i in range(m):
        cols.append(result.completions[:, i])
        if i < m - 1:
            cols.append(gap)
    tiles = torch.cat(cols, 1)  # (n, columns, C, H, W)
    per_row = tiles.shape[1]
    scale = max(1, 64 // result.originals.shape[-1])
    grid = image_grid(tiles.reshape(-1, *tiles.shape[2:]).clamp(-1, 1), nrow=per_row, scale=scale)
    pil = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    png = io.BytesIO()
    pil.save(png, format="PNG", optimize=True)
    npz = io.BytesIO()
    np.savez_compressed(
        npz, originals=result.originals.numpy(), mask=result.mask.numpy(), completions=result.completions.numpy(),
        methods=np.array(result.methods), nfe=np.array([result.nfe[k] for k in result.methods]),
        labels=np.array([]) if result.labels is None else result.labels.numpy(),
        predicted=np.array([]) if result.predicted is None else result.predicted.numpy())
    atomic_write_together([(png_path.with_suffix(".npz"), lambda f: f.write(npz.getvalue())),
                           (png_path, lambda f: f.write(png.getvalue()))])
    return png_path


def write_inpainting(run, ckpt, *, kind: str, methods, nfe: int, particles: int, completions: int,
                     sampler: str | None, n: int, seed: int, out, device) -> int:
    """``python -m scoresde.sample --inpaint``: :func:`inpaint` on a loaded ``--ckpt``, written by
    :func:`save_inpainting` (default ``RUN/samples/inpaint_<mask>_seed<S>.png``); prints the table."""
    if run.config is None or len(model_shape(run.model)) != 3:
        raise ValueError(f"--inpaint {kind}: --ckpt {ckpt} is not a run trained on images (config.yaml "
                         f"with an image data set); expected one")
    dim = 1
    for s in model_shape(run.model):
        dim *= s
    check_memory("--n", n, 8.0 * dim * n * completions * particles, "the particles (float64 images)")
    run_dir = Path(ckpt) if Path(ckpt).is_dir() else run.source.parent
    name = f"inpaint_{kind.replace(':', '')}_seed{seed}.png"
    out = Path(out) if out else run_dir / "samples" / name
    _check_writable(out)
    start = time.perf_counter()
    result = inpaint(run.model, run.config.data.name, kind, n=n, methods=methods, nfe=nfe, particles=particles,
                     completions=completions, seed=seed, device=device, sampler=sampler, cache_dir=run_dir,
                     progress=sys.stderr.isatty())
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # folders this run creates
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_inpainting(out, result)
    except OSError as e:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
        raise WriteFailed(f"writing {out} failed: {one_line(e)}; no new PNG was written") from None
    print(f"wrote {out} and {out.with_suffix('.npz')}: {n} images, mask {kind}, {completions} "
          f"completions per method, {time.perf_counter() - start:.1f} s (step {run.step} of {run.source})")
    print("| method | NFE | evals/completion | label kept | seconds |\n|---|---|---|---|---|")
    for m in methods:
        kept = f"{result.kept[m]:.3f}" if m in result.kept else "–"
        print(f"| {m} | {result.nfe[m]} | {result.evals[m]} | {kept} | {result.seconds[m]:.1f} |")
    for what, acc in result.reference.items():
        print(f"| {what} | – | – | {acc:.3f} | – |")
    return 0
