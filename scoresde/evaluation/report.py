"""The report of a finished run: samples (PNG + ``.npz``), a sample-quality metric, test
bits/dim (:func:`scoresde.evaluation.bpd_eval.evaluate_likelihood`) and ``summary.json``.

:func:`write_report` is what ``python -m scoresde.train`` does after training (on the unwrapped
EMA model, rank 0 only: an adaptive ODE solve through DDP would synchronise ranks at every
step); :func:`write_samples` is what ``python -m scoresde.sample`` does with the model ``--ckpt``
names. Both draw with :func:`draw_samples` and write with :func:`save_samples`.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from scoresde.core.conditional import Conditioned, num_classes_of
from scoresde.core.model import activation_bytes
from scoresde.data.loader import load_dataset
from scoresde.data.table import dataset_info
from scoresde.data.toy import toy_oracle
from scoresde.evaluation import metrics
from scoresde.evaluation.bpd_eval import EvalSettings, evaluate_likelihood
from scoresde.evaluation.images import save_samples_png
from scoresde.samplers import sample
from scoresde.samplers.base import MAX_STEPS
from scoresde.util.atomic import (
    atomic_write,
    atomic_write_together,
    first_non_file,
    nearest_existing,
    remove_empty,
    writable_folder,
)
from scoresde.util.errors import NonFiniteResult, WriteFailed, one_line
from scoresde.util.host import check_memory
from scoresde.util.progress import progress_bar

__all__ = ["draw_samples", "save_samples", "sample_metrics", "model_shape", "write_report",
           "write_samples"]


def draw_samples(model, sampler: str, n: int, *, steps: int, seed: int, device, progress: bool = False,
                 batch_size: int | None = None):
    """``n`` samples of ``model`` by ``sampler``; returns ``(x (n, *shape) on the CPU, nfe, seconds)``.
    A class-conditional model is sampled as ``condition(model, y, guidance=w)``
    (:func:`scoresde.core.conditional.condition`): the same prior draw as without labels.

    The prior draw ``x_T`` of all ``n`` comes first from the seeded generator. With ``batch_size``
    below ``n`` the sampler then runs on chunks of ``batch_size`` in turn (the network sees one
    chunk at a time: bounded memory for any ``n``; ``nfe`` counts every chunk's calls), each chunk's
    noise drawn from the same generator after the previous chunk's; otherwise on all ``n`` at once
    (the same samples as without ``batch_size``)."""
    shape = tuple(model_shape(model))
    g = torch.Generator(device=device).manual_seed(seed)
    x_T = model.sde.prior_sample((n, *shape), generator=g, device=device)  # (n, *shape)
    start = time.perf_counter()
    if batch_size is None or n <= batch_size:
        with torch.no_grad():
            res = sample(model, sampler, x_T, steps=steps, generator=g, progress=progress)
        return res.x.float().cpu(), res.nfe, time.perf_counter() - start
    out = torch.empty((n, *shape), dtype=torch.float32)  # on the CPU: only a chunk is on the device
    nfe = 0
    with torch.no_grad(), progress_bar(math.ceil(n / batch_size), progress, f"{sampler}, chunks") as bar:
        for lo in range(0, n, batch_size):
            res = sample(_rows(model, lo, lo + batch_size), sampler, x_T[lo:lo + batch_size], steps=steps, generator=g)
            out[lo:lo + batch_size] = res.x.float().cpu()
            nfe += res.nfe
            bar.update(1)
    return out, nfe, time.perf_counter() - start


def _rows(model, lo: int, hi: int):
    """``model`` for rows ``lo:hi`` of a batch: a conditioned model with one label per row keeps
    those rows' labels (``--class all``); any other model is the same for every row."""
    if isinstance(model, Conditioned) and model.y is not None and model.y.ndim == 1:
        return Conditioned(model.model, model.y[lo:hi], model.guidance)
    return model


def model_shape(model) -> tuple:
    return tuple(model.net.data_shape)


def save_samples(png_path, x: torch.Tensor, data: torch.Tensor | None = None, title: str = "") -> Path:
    """The PNG (grid or scatter over ``data``) and a ``.npz`` with ``samples`` beside it."""
    png_path = Path(png_path)
    shown = x.clamp(-1, 1) if x.ndim == 4 else x
    png = io.BytesIO()
    save_samples_png(png, shown, data, title)
    npz = io.BytesIO()
    np.savez_compressed(npz, samples=x.numpy())
    # one unit: the .npz, then the PNG as its mark (a kill never leaves a PNG beside another draw's .npz)
    atomic_write_together([(png_path.with_suffix(".npz"), lambda f: f.write(npz.getvalue())),
                           (png_path, lambda f: f.write(png.getvalue()))])
    return png_path


def sample_metrics(x: torch.Tensor, data_name: str, train, test, *, cache_dir, seed: int,
                   progress: bool = False) -> dict:
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
        fd = metrics.digits_frechet(x.clamp(-1, 1), cache_dir=cache_dir, seed=seed, progress=progress)
        out["fd"], out["fd_floor"] = float(fd["fd"]), float(fd["floor"])
    return out


def write_report(model, cfg, run: Path, train_data, test_data, device, summary: dict, start: float) -> int:
    """Samples, their metric and test bits/dim of ``model`` (the run's EMA model, eval mode) by the
    run's ``sample.*``/``eval.*`` settings, added to ``summary`` and written to ``RUN/summary.json``
    (``wall_seconds`` counted from ``start``); prints the summary line. Returns the exit status 0."""
    summary.update(sampler=cfg.sample.sampler, sample_steps=cfg.sample.steps, notes=[])
    progress = True  # a bar on a terminal, else a line every 10 s (scoresde.util.progress)
    if cfg.sample.n > 0:
        try:
            x, nfe, secs = draw_samples(model, cfg.sample.sampler, cfg.sample.n, steps=cfg.sample.steps,
                                        seed=cfg.seed, device=device, progress=progress)
        except NonFiniteResult as e:
            raise NonFiniteResult(f"the final samples of the step-{summary['steps']} EMA model are non-finite: "
                                  f"{e} (the checkpoint is kept)") from None
        png = save_samples(run / f"samples_{cfg.sample.sampler}.png", x,
                           train_data.x[:5000] if x.ndim == 2 else None,
                           f"{cfg.sample.sampler}, {nfe} NFE")
        summary.update(n_samples=cfg.sample.n, nfe=nfe, sample_seconds=secs, samples_png=png.name)
        m = sample_metrics(x, cfg.data.name, train_data, test_data, cache_dir=run, seed=cfg.seed,
                           progress=progress)
        summary["notes"] += m.pop("notes", [])
        summary.update(m)
        if x.ndim == 4:
            from scoresde.evaluation import fid  # it imports this module for draw_samples

            ref = train_data if cfg.data.n is None else load_dataset(cfg.data.name, "train", root=cfg.data.root)
            summary.update(fid.report_fid(x, ref, device=device, cache_dir=run, seed=cfg.seed, progress=progress))
    if num_classes_of(model):  # classes, guidance and the three kinds of bits/dim
        from scoresde.evaluation.guidance import conditional_report  # guidance.py draws with draw_samples
        conditional_report(model, cfg, run, train_data, test_data, device, summary, progress=progress)
    else:
        lk = evaluate_likelihood(model, test_data, EvalSettings.from_config(cfg), progress=progress)
        summary["notes"] += lk.notes
        summary.update(lk.figures())
    summary["wall_seconds"] = time.perf_counter() - start
    atomic_write(run / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    for note in summary["notes"]:
        print(f"note: {note}")
    figures = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
               if k not in ("notes", "samples_png", "rank_param_sha256", "guidance", "guidance_png", "classes_png")]
    print("summary: " + ", ".join(figures))
    print(f"wrote {run / 'summary.json'}")
    return 0


def write_samples(run, ckpt, *, sampler: str | None, n: int, steps: int | None, seed: int, out, device,
                  label=None, guidance: float | None = None, batch_size: int | None = None) -> int:
    """Samples of a loaded ``--ckpt`` (``run``: ``.model``, ``.config``, ``.step``, ``.source``; ``ckpt``
    the path it was named by) written as a PNG and an ``.npz`` beside it; prints one line.

    ``sampler``/``steps`` ``None``: the run's ``sample.*`` (a diffusers folder:
    ``DiffusersModel.default_sampling``); ``out`` ``None``: ``RUN/samples/<sampler>_seed<S>.png``.
    Sizes and paths are checked before sampling; non-finite samples stop with nothing written.
    ``label`` (``--class``: a class or ``"all"``, one row of ``n`` per class) and ``guidance``
    (``--guidance``) sample a class-conditional model (:func:`scoresde.evaluation.guidance.class_request`).
    ``batch_size``: the samples the network sees at once (``--batch-size``; :func:`draw_samples`)."""
    from scoresde.evaluation.guidance import class_request, save_class_grid  # guidance.py uses draw_samples

    cfg = run.config
    model, per_class, n, tag = class_request(run.model, label, guidance, n, ckpt)
    default_sampler, default_steps = ((cfg.sample.sampler, cfg.sample.steps) if cfg is not None
                                      else run.model.default_sampling)
    sampler, steps = sampler or default_sampler, steps or default_steps
    _check_sizes(run.model, n, steps, batch_size, device, guided=bool(guidance))
    # A run's samples go into its folder; a diffusers folder is someone else's model: ./samples/
    run_dir = Path(".") if cfg is None else Path(ckpt) if Path(ckpt).is_dir() else run.source.parent
    out = Path(out) if out else run_dir / "samples" / f"{sampler}{tag}_seed{seed}.png"
    _check_writable(out)
    start = time.perf_counter()
    try:
        x, nfe, _ = draw_samples(model, sampler, n, steps=steps, seed=seed, device=device,
                                 progress=True, batch_size=batch_size)
    except NonFiniteResult as e:
        raise NonFiniteResult(f"non-finite samples of {run.source}: {e}; nothing was written") from None
    background = None
    if x.ndim == 2 and cfg is not None and dataset_info(cfg.data.name).is_toy:  # generated in milliseconds
        background = load_dataset(cfg.data.name, "test", seed=cfg.seed).x
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # folders this run creates
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{sampler}, {nfe} NFE" + (tag.replace("_", ", ") if tag else "")
        save_samples(out, x, background, title)
        if per_class:  # one row per class: the grid replaces the square one (written after the .npz)
            save_class_grid(out, x, per_class, title)
    except OSError as e:
        remove_empty(made)  # innermost first; a folder another process filled meanwhile stays
        raise WriteFailed(f"writing {out} failed: {one_line(e)}; no new PNG was written") from None
    print(f"wrote {out} and {out.with_suffix('.npz')}: {n} samples, sampler {sampler}, "
          f"{nfe} NFE, {time.perf_counter() - start:.1f} s ("
          + (f"step {run.step} of {run.source})" if cfg is not None else f"{run.model.describe()})"))
    return 0


def _check_sizes(model, n: int, steps: int, batch_size: int | None, device, *, guided: bool) -> None:
    """``sample``'s sizes against the bounds and the memory available, before anything is drawn:
    ``steps`` at most :data:`~scoresde.samplers.base.MAX_STEPS` (before any grid is built); all
    ``n`` samples (``x_T`` and ``x``, float32, on the CPU) and, for one batch of ``batch_size``
    (guidance runs the network on twice the rows), the network's activations measured on a probe
    batch (:func:`~scoresde.core.model.activation_bytes`) plus ``x_T``, ``x`` and a few sampler
    states of the batch."""
    if steps > MAX_STEPS:
        raise ValueError(f"--steps={steps}: expected at most {MAX_STEPS:,} (each step is a network call)")
    dim = math.prod(model_shape(model))
    check_memory("--n", n, 8.0 * dim * n, "the samples (x_T and x, float32)")
    check_memory("--steps", steps, 8.0 * (steps + 1), "the sampler's time grid (float64)")
    batch = n if batch_size is None else min(n, batch_size)
    rows = batch * (2 if guided else 1)
    check_memory("--batch-size", batch, rows * activation_bytes(model, device) + 16.0 * dim * batch,
                 "the network's activations on one batch (measured on a probe batch)")


def _check_writable(out: Path) -> None:
    """The PNG and the .npz beside it can be written (checked before sampling)."""
    probe = nearest_existing(out.parent)
    if not writable_folder(probe):
        raise ValueError(f"--out {out}: {probe} is not a writable folder; expected a PNG path in one")
    bad = first_non_file((out, out.with_suffix(".npz")))
    if bad is not None:
        raise ValueError(f"--out {out}: {bad} is a folder or special file; expected a file name")
