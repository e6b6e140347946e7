"""Test bits/dim of a class-conditional model: ``p(x | y)``, and ``p(x)`` two ways.

:func:`evaluate_conditional_likelihood` is the one function behind these figures (the training
run's report, ``python -m scoresde.evaluate``, ``notebooks/conditional.ipynb``). It runs the
estimators of :mod:`scoresde.evaluation.bpd_eval` (same :class:`EvalSettings`, same helpers) on
:func:`scoresde.core.conditional.condition`-ed models:

- ``p(x | y)`` with each example's own label, ODE and DDPM bound: the examples of class ``k`` are
  evaluated under ``condition(model, k)``; cost: one pass over the data (as unconditional bits/dim).
- ``p(x)`` through the null label: ``evaluate_likelihood(condition(model, None), ...)``, ODE and
  bound; cost: one pass.
- ``p(x)`` through the exact class mixture ``log p(x) = logsumexp_y [log p(y) + log p(x | y)]``
  (ODE only): every example under every class, ``K`` passes, so **K × the ODE's NFE**. All ``K``
  passes draw the same dequantization noise and probes (the same seed), so each example's ``K``
  log-densities are of the same point ``z`` and the identity holds per example and draw. With
  Hutchinson traces each ``log p(z | y)`` is an unbiased estimate; their log-sum-exp is not
  (exact traces make it exact up to the solver's tolerance).

Figures (:meth:`ConditionalReport.figures`): ``bpd_cond_ode``, ``bpd_cond_vlb``,
``bpd_null_ode``, ``bpd_null_vlb``, ``bpd_mixture_ode``, each with ``_stderr`` and ``_nfe``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch

from scoresde.core.bpd import BpdResult, bpd_offset, summarize
from scoresde.core.conditional import condition, num_classes_of
from scoresde.core.model import model_device
from scoresde.core.sde import is_variance_preserving
from scoresde.data.loader import load_dataset
from scoresde.evaluation.bpd_eval import (
    EvalSettings,
    evaluate_likelihood,
    ode_bpd,
    vlb_bpd,
    vlb_skipped_note,
)

__all__ = ["ConditionalReport", "evaluate_conditional_likelihood", "class_log_prior_of", "check_conditional_request",
           "evaluate_run_conditional"]


@dataclass
class ConditionalReport:
    """What :func:`evaluate_conditional_likelihood` found (``None``: not asked for or not computable)."""

    settings: EvalSettings
    n: int = 0
    cond_ode: BpdResult | None = None
    cond_vlb: BpdResult | None = None
    null_ode: BpdResult | None = None
    null_vlb: BpdResult | None = None
    mixture_ode: BpdResult | None = None
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def figures(self) -> dict:
        out: dict = {}
        for key in ("cond_ode", "cond_vlb", "null_ode", "null_vlb", "mixture_ode"):
            r = getattr(self, key)
            if r is not None:
                out.update({f"bpd_{key}": float(r.bpd), f"bpd_{key}_stderr": float(r.stderr),
                            f"bpd_{key}_nfe": int(r.nfe), f"bpd_{key}_seconds": self.seconds.get(key, 0.0)})
        if out:
            out["bpd_n"] = self.n
        return out

    def lines(self) -> list[str]:
        """The result lines ``python -m scoresde.evaluate`` prints for a class-conditional model."""
        names = {"cond_ode": "p(x | y), ODE", "cond_vlb": "p(x | y), DDPM bound",
                 "null_ode": "p(x) by the null label, ODE", "null_vlb": "p(x) by the null label, DDPM bound",
                 "mixture_ode": "p(x) by the class mixture, ODE"}
        out = []
        for key, name in names.items():
            r = getattr(self, key)
            if r is not None:
                out.append(f"bits/dim ({name}): {r.bpd:.4f} ± {r.stderr:.4f}   NFE {r.nfe}, "
                           f"{self.seconds.get(key, 0.0):.1f} s")
        figures = {k: v for k, v in self.figures().items() if not k.endswith("_seconds")}
        out.append("figures: " + ", ".join(f"{k}={v!r}" for k, v in figures.items()))
        return out


def class_log_prior_of(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``log p(y)``: the label frequencies of ``labels`` (e.g. the training split), float64 ``(K,)``
    on the CPU; a class that never occurs is refused (its ``log p(y)`` would be ``-inf``)."""
    counts = torch.bincount(labels.cpu().long(), minlength=num_classes).to(torch.float64)
    if counts.numel() != num_classes or not bool((counts > 0).all()):
        raise ValueError(f"labels: expected every class 0..{num_classes - 1} to occur, got counts "
                         f"{counts.long().tolist()}")
    return torch.log(counts / counts.sum())


def _by_class(fn, model, x_int: torch.Tensor, labels: torch.Tensor, k: int) -> BpdResult:
    """``fn(condition(model, c), x_int[labels == c])`` for each class ``c`` present, the per-sample
    figures put back in the examples' order."""
    per_sample = torch.empty(x_int.shape[0], dtype=torch.float64, device="cpu")
    nfe, terms = 0, {}
    for c in range(k):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() == 0:
            continue
        res = fn(condition(model, c), x_int[idx.to(x_int.device)])
        per_sample[idx.cpu()] = res.per_sample.cpu().to(torch.float64)
        nfe += res.nfe
        for name, v in res.terms.items():  # the bound's L_T, L_sum, L_0: example-weighted means
            terms[name] = terms.get(name, 0.0) + float(v) * idx.numel() / x_int.shape[0]
    bpd, stderr = summarize(per_sample[None])
    return BpdResult(bpd, stderr, nfe, per_sample, terms, {"by_class": True})


def evaluate_conditional_likelihood(model, data, settings: EvalSettings | None = None, *,
                                    class_log_prior: torch.Tensor | None = None, mixture: bool = True,
                                    progress: bool = False) -> ConditionalReport:
    """Bits/dim of a class-conditional ``model`` on a labelled split ``data`` (module docstring).

    Args:
        model: a class-conditional model (``.num_classes = K ≥ 1``, ``.eps(x, t, y)``).
        data: a :class:`~scoresde.data.loader.Dataset` with integer levels and ``labels``.
        settings: as for :func:`~scoresde.evaluation.bpd_eval.evaluate_likelihood` (``ode``,
            ``vlb``, ``limit``, solver options, ``seed``).
        class_log_prior: ``log p(y)`` ``(K,)`` for the mixture (default: uniform, ``-log K``;
            the programs pass the training split's label frequencies, :func:`class_log_prior_of`).
        mixture: also ``p(x)`` by the class mixture (``K`` × the ODE's NFE; needs ``settings.ode``).
    """
    settings = EvalSettings() if settings is None else settings
    k = num_classes_of(model)
    if k < 1:
        raise ValueError(f"model={type(model).__name__}: expected a class-conditional model (num_classes ≥ 1)")
    report = ConditionalReport(settings)
    if data.x_int is None or data.levels is None:
        report.notes.append(f"bits/dim skipped: data set {data.name!r} is continuous")
        return report
    if data.labels is None:
        raise ValueError(f"data set {data.name!r} has no class labels: expected labelled data for p(x | y)")
    s = settings
    x_int = data.x_int[:s.limit] if s.limit else data.x_int
    labels = data.labels[:x_int.shape[0]].cpu()
    x_int = x_int.to(model_device(model))
    report.n = int(x_int.shape[0])
    vp = is_variance_preserving(model.sde)

    def timed(key, fn):
        start = time.perf_counter()
        setattr(report, key, fn())
        report.seconds[key] = time.perf_counter() - start

    if s.ode:
        timed("cond_ode", lambda: _by_class(lambda m, x: ode_bpd(m, x, data.levels, s, progress=progress),
                                            model, x_int, labels, k))
    if s.vlb and vp:
        timed("cond_vlb", lambda: _by_class(lambda m, x: vlb_bpd(m, x, data.levels, s, progress=progress),
                                            model, x_int, labels, k))
    elif s.vlb:
        report.notes.append(vlb_skipped_note(model))
    null = evaluate_likelihood(condition(model, None), data, s, progress=progress)
    report.null_ode, report.null_vlb = null.ode, null.vlb
    report.seconds.update(null_ode=null.ode_seconds, null_vlb=null.vlb_seconds)
    if mixture and s.ode:
        log_prior = (torch.full((k,), -math.log(k), dtype=torch.float64, device="cpu") if class_log_prior is None
                     else torch.as_tensor(class_log_prior, dtype=torch.float64, device="cpu"))
        if log_prior.shape != (k,) or not bool(torch.isfinite(log_prior).all()):
            raise ValueError(f"class_log_prior has shape {tuple(log_prior.shape)}: expected ({k},) finite "
                             f"log-probabilities")
        timed("mixture_ode", lambda: _mixture(model, x_int, data.levels, s, log_prior, k, progress))
    return report


def _mixture(model, x_int, levels: int, s: EvalSettings, log_prior: torch.Tensor, k: int,
             progress: bool) -> BpdResult:
    """``-log₂ p(z)/D + offset`` with ``log p(z) = logsumexp_y[log p(y) + log p(z | y)]`` per example
    and dequantization draw: draw ``r`` of every class runs with the generator seeded ``s.seed + r``."""
    dim = math.prod(x_int.shape[1:])
    offset = bpd_offset(levels)
    scale = dim * math.log(2)
    draws, nfe = [], 0
    for r in range(s.dequant):
        log_p = []
        for c in range(k):
            res = ode_bpd(condition(model, c), x_int, levels, s, seed=s.seed + r, n_dequant=1, progress=progress)
            log_p.append(-(res.per_sample.cpu().to(torch.float64) - offset) * scale)  # log p(z | c), nats
            nfe += res.nfe
        joint = torch.stack(log_p, 1) + log_prior[None]  # (B, K)
        draws.append(-torch.logsumexp(joint, 1) / scale + offset)
    values = torch.stack(draws)  # (draws, B)
    bpd, stderr = summarize(values)
    return BpdResult(bpd, stderr, nfe, values.mean(0), info={"classes": k, "passes": k * s.dequant})


def check_conditional_request(model, data, mixture: bool) -> int:
    """``python -m scoresde.evaluate``'s checks for a (possibly) class-conditional model: labelled data,
    ``--no-mixture`` only for a conditional model. Returns the number of classes (0: unconditional)."""
    classes = num_classes_of(model)
    if classes and data.labels is None:
        raise ValueError(f"--data {data.name}: has no class labels; a class-conditional model's bits/dim of "
                         f"p(x | y) need labelled data (digits, mnist, cifar10)")
    if not mixture and not classes:
        raise ValueError("--no-mixture: only for a class-conditional model (model.num_classes ≥ 1)")
    return classes


def evaluate_run_conditional(run, data, settings: EvalSettings, *, mixture: bool = True) -> ConditionalReport:
    """:func:`evaluate_conditional_likelihood` of a loaded run with ``log p(y)`` its training split's
    label frequencies (as its report used; uniform for a model without a config)."""
    k, cfg, log_prior = num_classes_of(run.model), run.config, None
    if cfg is not None:
        train = load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed)
        log_prior = class_log_prior_of(train.labels, k) if train.labels is not None else None
    return evaluate_conditional_likelihood(run.model, data, settings, class_log_prior=log_prior, mixture=mixture,
                                           progress=sys.stderr.isatty())
