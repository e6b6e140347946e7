"""The report of a class-conditional run: one row of samples per class, the classifier-free
guidance trade-off, and the three kinds of bits/dim (docs/conditioning.md).

:func:`conditional_report` is what :func:`scoresde.evaluation.report.write_report` adds for a model
with ``num_classes ≥ 1``; :func:`guidance_table` is the one function behind the guidance figures
(the run's report, ``notebooks/conditional.ipynb``, the benchmark in docs/benchmarks.md).

The guidance table (digits only: it needs the classifier behind the Fréchet distance,
:class:`scoresde.evaluation.metrics.DigitsFeatures`): for each ``w`` in :data:`GUIDANCE_WEIGHTS`,
``n`` samples with labels ``0, 1, …, K-1, 0, 1, …`` (balanced), all from the same prior draw and
seed; ``accuracy`` is the fraction the classifier assigns to the requested class and ``fd`` the
Fréchet distance of all ``n`` samples to the test split.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from scoresde.core.conditional import condition, num_classes_of
from scoresde.evaluation.bpd_eval import EvalSettings
from scoresde.evaluation.conditional import class_log_prior_of, evaluate_conditional_likelihood
from scoresde.evaluation.images import image_grid, save_samples_png
from scoresde.evaluation.metrics import DigitsFeatures, digits_frechet
from scoresde.util.atomic import atomic_write
from scoresde.util.checks import check_number

__all__ = ["GUIDANCE_WEIGHTS", "PER_CLASS", "class_labels", "balanced_labels", "draw_class_rows",
           "guidance_table", "plot_guidance", "save_class_grid", "conditional_report", "class_request"]

GUIDANCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
PER_CLASS = 8  # samples per class row of the report's grid


def class_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """``0 … 0, 1 … 1, …`` (``per_class`` of each), int64 on the CPU: one grid row per class."""
    return torch.arange(num_classes, device="cpu").repeat_interleave(per_class)


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """``0, 1, …, K-1, 0, 1, …`` (``n`` labels), int64 on the CPU."""
    return torch.arange(n, device="cpu") % num_classes


def class_request(model, label, guidance, n: int, ckpt) -> tuple:
    """``python -m scoresde.sample``'s ``--class``/``--guidance`` on a loaded model: ``(model to
    sample, samples per class row or 0, number of samples, file-name tag)``; without ``--class``
    the model itself. One ``ValueError`` naming the flag for what cannot work."""
    if label is None:
        if guidance is not None:
            raise ValueError(f"--guidance {guidance:g}: expected --class too (guidance steers towards a class)")
        return model, 0, n, ""
    if label != "all":
        try:
            label = int(label)
        except ValueError:
            raise ValueError(f"--class {label}: expected an integer class or all") from None
    w = 0.0 if guidance is None else check_number("--guidance", guidance, low=0, low_closed=True)
    k = num_classes_of(model)
    if k == 0:
        flag = f"--class {label}" if guidance is None else f"--class {label} --guidance {guidance:g}"
        raise ValueError(f"{flag}: {ckpt} is an unconditional model (model.num_classes=0); expected no "
                         f"--class or --guidance")
    if label == "all":
        return condition(model, class_labels(k, n), guidance=w), n, k * n, f"_classall_w{w:g}"
    if not 0 <= label < k:
        raise ValueError(f"--class {label}: expected a class in 0..{k - 1} or all")
    return condition(model, label, guidance=w), 0, n, f"_class{label}_w{w:g}"


def _draw(model, sampler, labels, *, steps, seed, device, guidance=0.0, progress=False):
    from scoresde.evaluation.report import draw_samples  # report.py calls this module

    x, nfe, secs = draw_samples(condition(model, labels.to(device), guidance=guidance), sampler, labels.shape[0],
                                steps=steps, seed=seed, device=device, progress=progress)
    return x, nfe, secs


def draw_class_rows(model, sampler: str, per_class: int, *, steps: int, seed: int, device,
                    guidance: float = 0.0, progress: bool = False):
    """``per_class`` samples of every class, class by class: ``(x (K·per_class, *shape), nfe, seconds)``."""
    labels = class_labels(num_classes_of(model), per_class)
    return _draw(model, sampler, labels, steps=steps, seed=seed, device=device, guidance=guidance,
                 progress=progress)


def save_class_grid(path, x: torch.Tensor, per_class: int, title: str = "") -> Path:
    """Images: one row per class (``per_class`` columns); 2-D points: a scatter plot."""
    if x.ndim != 4:
        return save_samples_png(path, x, None, title)
    from PIL import Image

    grid = image_grid(x.clamp(-1, 1), nrow=per_class, scale=max(1, 64 // x.shape[-1]))
    buf = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def guidance_table(model, sampler: str, n: int, *, steps: int, seed: int, device, features: DigitsFeatures,
                   progress: bool = False) -> list[dict]:
    """For each ``w``: ``{guidance, accuracy, fd, nfe, seconds}`` of ``n`` balanced digit samples
    (module docstring); NFE counts batched calls (a guided call is one, on twice the rows)."""
    k = num_classes_of(model)
    labels = balanced_labels(n, k)
    rows = []
    for w in GUIDANCE_WEIGHTS:
        x, nfe, secs = _draw(model, sampler, labels, steps=steps, seed=seed, device=device, guidance=float(w),
                             progress=progress)
        x = x.clamp(-1, 1)
        accuracy = float((features.classify(x) == labels).double().mean())
        fd = float(digits_frechet(x, features=features)["fd"])
        rows.append({"guidance": float(w), "accuracy": accuracy, "fd": fd, "nfe": int(nfe), "seconds": secs})
    return rows


def plot_guidance(path, rows: list[dict], title: str = "", fd_reference: float | None = None) -> Path:
    """Classified-as-requested fraction against Fréchet distance, one point per ``w`` (labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    fd = [r["fd"] for r in rows]
    acc = [100 * r["accuracy"] for r in rows]
    ax.plot(fd, acc, "o-", c="C0")
    for r, a in zip(rows, acc):
        ax.annotate(f"w={r['guidance']:g}", (r["fd"], a), textcoords="offset points", xytext=(5, -10))
    if fd_reference is not None:
        ax.axvline(fd_reference, c="0.6", ls="--", label=f"unguided / reference FD {fd_reference:.2f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("Fréchet distance to the test split (lower is better)")
    ax.set_ylabel("classified as the requested class (%)")
    ax.set_title(title or "classifier-free guidance")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def format_table(rows: list[dict]) -> str:
    lines = ["   w   classified as requested   Fréchet distance   NFE   seconds"]
    for r in rows:
        lines.append(f"{r['guidance']:4g}   {100 * r['accuracy']:22.1f} %   {r['fd']:16.3f}   {r['nfe']:3d}   "
                     f"{r['seconds']:7.1f}")
    return "\n".join(lines)


def conditional_report(model, cfg, run: Path, train_data, test_data, device, summary: dict, *,
                       progress: bool = False) -> None:
    """Adds to ``summary`` (and the run folder) what a class-conditional run reports: the class grid
    ``samples_classes.png``; for digits the guidance table (``guidance``) and its plot
    ``guidance.png``; bits/dim of ``p(x | y)`` and of ``p(x)`` by the null label (and by the class
    mixture when ``eval.mixture``), :func:`~scoresde.evaluation.conditional.evaluate_conditional_likelihood`."""
    k = num_classes_of(model)
    s = cfg.sample
    if s.n > 0:
        per_class = PER_CLASS if len(cfg.data.shape) == 3 else max(1, s.n // k)
        x, nfe, _ = draw_class_rows(model, s.sampler, per_class, steps=s.steps, seed=cfg.seed, device=device,
                                    progress=progress)
        png = save_class_grid(run / "samples_classes.png", x, per_class, f"{s.sampler}, {nfe} NFE, one class per row")
        summary["classes_png"] = png.name
        if cfg.data.name == "digits":
            features = DigitsFeatures(cache_dir=run, seed=cfg.seed, progress=progress)
            rows = guidance_table(model, s.sampler, s.n, steps=s.steps, seed=cfg.seed, device=device,
                                  features=features, progress=progress)
            summary["guidance"] = rows
            summary["guidance_png"] = plot_guidance(run / "guidance.png", rows, fd_reference=summary.get("fd"),
                                                    title=f"{cfg.data.name}, {s.sampler} {s.steps} steps, "
                                                          f"{s.n} samples").name
            print(format_table(rows))
        else:
            summary["notes"].append("guidance table skipped: it needs the digits classifier (data.name=digits)")
    settings = EvalSettings.from_config(cfg)
    log_prior = class_log_prior_of(train_data.labels, k) if train_data.labels is not None else None
    report = evaluate_conditional_likelihood(model, test_data, settings, class_log_prior=log_prior,
                                             mixture=cfg.eval.mixture, progress=progress)
    summary["notes"] += report.notes
    summary.update(report.figures())
