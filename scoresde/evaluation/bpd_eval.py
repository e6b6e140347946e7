"""Test bits/dim of a model: the one function behind every likelihood figure the project reports.

:func:`evaluate_likelihood` is called by the training run's final report (``summary.json``),
by ``python -m scoresde.evaluate`` and by ``notebooks/likelihood.ipynb``, so the same model, data
and :class:`EvalSettings` give the same figures whichever program asks. The settings mirror the
config's ``eval.*`` keys (:meth:`EvalSettings.from_config`) plus the solver options that have
no config key (their defaults are what training uses).

    settings = EvalSettings.from_config(run.config)          # what the run reported with
    report = evaluate_likelihood(run.model, load_dataset("digits", "test"), settings)
    report.figures()   # {"bpd_ode": ..., "bpd_ode_stderr": ..., "bpd_vlb": ..., ...}

Randomness: the dequantization noise, the Hutchinson probes and the bound's noise come from
CPU generators seeded with ``settings.seed`` (one for the ODE, one for the bound), drawn on the
CPU and moved to the model's device (:mod:`scoresde.util.rng`): the figures do not depend on where
the model runs beyond floating-point round-off.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from scoresde.core.bpd import BpdResult
from scoresde.core.model import activation_bytes, model_device
from scoresde.core.sde import is_variance_preserving, not_vp_reason
from scoresde.data.loader import DATASET_NAMES, load_dataset, load_images
from scoresde.likelihood.ode import bits_per_dim
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.likelihood.vlb_grid import grid_vlb_bits_per_dim, t_of_sigma
from scoresde.util.checks import check_choice, check_flag, check_int, check_number
from scoresde.util.choices import PROBES, TRACES, VARIANCES
from scoresde.util.host import check_memory

__all__ = ["EvalSettings", "LikelihoodReport", "evaluate_likelihood", "ode_bpd", "vlb_bpd", "evaluation_data",
           "print_likelihood"]


_OPTIONAL = ("ode_sigma", "vlb_sigma", "vlb_terms")  # None is a setting of its own for these
_RULES = {"ode": ("flag", None), "vlb": ("flag", None), "trace": ("choice", TRACES), "probe": ("choice", PROBES),
          "variance": ("choice", VARIANCES), "limit": ("int", 0), "probes": ("int", 1), "dequant": ("int", 1),
          "vlb_steps": ("int", 1), "batch_size": ("int", 1), "seed": ("int", 0), "vlb_terms": ("int", 1),
          "rtol": ("number", None), "atol": ("number", None), "ode_sigma": ("number", None),
          "vlb_sigma": ("number", None)}


@dataclass(frozen=True)
class EvalSettings:
    """How test bits/dim are computed. Config key in brackets; defaults as the config schema's.

    Attributes:
        ode: bits/dim by the probability-flow ODE [``eval.bpd``].
        vlb: bits/dim by the DDPM variational bound [``eval.vlb``].
        limit: the first ``limit`` examples of the split (0: all) [``eval.bpd_n``].
        trace: ``hutchinson`` or ``exact`` divergence [``eval.bpd_trace``].
        probes: Hutchinson probes per example [``eval.bpd_probes``].
        probe: ``rademacher`` or ``gaussian`` probes (no config key).
        dequant: dequantization draws per example (no config key).
        ode_sigma: the ODE starts at ``σ(t_eps) = ode_sigma``; ``None``: ``t_eps = 1e-5`` [``eval.ode_sigma``].
        rtol, atol: dopri5 tolerances of the ODE [``eval.rtol``, ``eval.atol``]; ``1e-4``: on the digits run
            its solver error is ≥ 30× below the one-probe Hutchinson error, at a third of ``1e-5``'s NFE
            (``benchmarks/likelihood_tolerance.py``; docs/benchmarks.md).
        vlb_sigma: the bound runs on ``vlb_steps`` log-SNR steps from ``σ(τ_1) = vlb_sigma``;
            ``None``: the DDPM grid ``i/N`` (``N`` the schedule's own, else 1000) [``eval.vlb_sigma``].
        vlb_steps: steps of that log-SNR grid [``eval.vlb_steps``].
        vlb_terms: random terms per example (unbiased); ``None``: all [``eval.vlb_terms``].
        variance: reverse variance of the bound, ``beta`` or ``beta_tilde`` (no config key).
        batch_size: examples per solve / per network call [``eval.batch_size``].
        seed: seed of the dequantization, probes and the bound's noise [``seed``].
    """

    ode: bool = True
    vlb: bool = True
    limit: int = 256
    trace: str = "hutchinson"
    probes: int = 1
    probe: str = "rademacher"
    dequant: int = 1
    ode_sigma: float | None = None
    rtol: float = 1e-4
    atol: float = 1e-4
    vlb_sigma: float | None = None
    vlb_steps: int = 1000
    vlb_terms: int | None = None
    variance: str = "beta"
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        self.check({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @staticmethod
    def check(values: dict, labels: dict | None = None) -> None:
        """The one check of each setting (``ValueError`` naming ``labels.get(name, name)`` and the
        value): run when settings are made (:meth:`replace`, the constructor), never again below.
        A program passes its flags as ``labels`` (``{"probes": "--probes"}``) so the message names them."""
        labels = labels or {}
        for name, value in values.items():
            kind, arg = _RULES[name]
            where = labels.get(name, name)
            if kind == "flag":
                check_flag(where, value)
            elif kind == "choice":
                check_choice(where, value, arg)
            elif kind == "int":
                check_int(where, value, arg, none_ok=name == "vlb_terms")
            elif value is not None or name not in _OPTIONAL:
                check_number(where, value, low=0)

    @classmethod
    def _checked(cls, values: dict) -> EvalSettings:
        """Settings from values already checked at their gate (the config's rules, :meth:`check`)."""
        settings = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(settings, name, value)
        return settings

    @classmethod
    def from_config(cls, config, *, labels: dict | None = None, **overrides) -> EvalSettings:
        """The settings a run's config describes (``eval.*`` and ``seed``, checked by the config's
        rules when it was read), then ``overrides`` (:meth:`replace`: ``None`` values are ignored, so
        unset command-line flags can be passed as they are)."""
        e = config.eval
        base = cls._checked(dict(ode=e.bpd, vlb=e.vlb, limit=e.bpd_n, trace=e.bpd_trace, probes=e.bpd_probes,
                                 probe=cls.probe, dequant=cls.dequant, ode_sigma=e.ode_sigma, rtol=e.rtol,
                                 atol=e.atol, vlb_sigma=e.vlb_sigma, vlb_steps=e.vlb_steps, vlb_terms=e.vlb_terms,
                                 variance=cls.variance, batch_size=e.batch_size, seed=config.seed))
        return base.replace(labels=labels, **overrides)

    def replace(self, *, labels: dict | None = None, clear=(), **overrides) -> EvalSettings:
        """A copy with the given fields changed (``None`` values ignored) and the optional fields
        named in ``clear`` set to ``None``; unknown names refused, each new value checked once
        (:meth:`check`, messages naming ``labels``)."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted((set(overrides) | set(clear)) - set(names))
        if unknown:
            raise ValueError(f"setting {unknown[0]!r}: expected one of {', '.join(sorted(names))}")
        new = {k: v for k, v in overrides.items() if v is not None}
        self.check(new, labels)
        values = {name: getattr(self, name) for name in names}
        values.update(new)
        values.update({name: None for name in clear if name in _OPTIONAL})
        return self._checked(values)

    def describe(self) -> str:
        """One line naming every setting that enters the figures."""
        parts = [f"examples {'all' if self.limit == 0 else f'first {self.limit}'}", f"seed {self.seed}",
                 f"batch {self.batch_size}"]
        if self.ode:
            start = "t_eps 1e-05" if self.ode_sigma is None else f"σ(t_eps) {self.ode_sigma:g}"
            trace = "exact trace" if self.trace == "exact" else f"Hutchinson {self.probes} {self.probe}"
            parts.append(f"ODE: {start}, {trace}, dequant {self.dequant}, dopri5 rtol {self.rtol:g} "
                         f"atol {self.atol:g}")
        if self.vlb:
            grid = ("grid i/N" if self.vlb_sigma is None
                    else f"{self.vlb_steps} log-SNR steps from σ {self.vlb_sigma:g}")
            terms = "all terms" if self.vlb_terms is None else f"{self.vlb_terms} terms"
            parts.append(f"VLB: {grid}, {terms}, variance {self.variance}")
        return "; ".join(parts)


@dataclass
class LikelihoodReport:
    """What :func:`evaluate_likelihood` found: the results (``None`` when not asked for or not
    computable), their wall times, the number of examples, notes (e.g. why a figure is missing)."""

    settings: EvalSettings
    n: int = 0
    ode: BpdResult | None = None
    vlb: BpdResult | None = None
    ode_seconds: float = 0.0
    vlb_seconds: float = 0.0
    notes: list = field(default_factory=list)

    def figures(self) -> dict:
        """The flat figures written to ``summary.json`` (``bpd_n``, ``bpd_ode``, ``bpd_ode_stderr``,
        ``bpd_ode_nfe``, ``bpd_ode_seconds`` and the same for ``bpd_vlb``)."""
        out: dict = {}
        if self.ode is None and self.vlb is None:
            return out
        out["bpd_n"] = self.n
        for key, r, secs in (("bpd_ode", self.ode, self.ode_seconds), ("bpd_vlb", self.vlb, self.vlb_seconds)):
            if r is not None:
                out.update({key: float(r.bpd), f"{key}_stderr": float(r.stderr), f"{key}_nfe": int(r.nfe),
                            f"{key}_seconds": secs})
        return out

    def lines(self) -> list[str]:
        """The result lines ``python -m scoresde.evaluate`` prints: mean ± standard error, NFE, time."""
        out, s = [], self.settings
        if self.ode is not None:
            r = self.ode
            how = "exact trace" if s.trace == "exact" else f"Hutchinson, {s.probes} probe(s)"
            out.append(f"bits/dim (ODE, {how}): {r.bpd:.4f} ± {r.stderr:.4f}   NFE {r.nfe} "
                       f"({r.info['nfe_per_solve']:.0f} per solve), {self.ode_seconds:.1f} s")
        if self.vlb is not None:
            r, t = self.vlb, self.vlb.terms
            out.append(f"bits/dim (DDPM VLB, N = {r.info['N']}, {r.info['n_terms']} terms): {r.bpd:.4f} ± "
                       f"{r.stderr:.4f}   [L_T {t['L_T']:.4f}, sum L_t-1 {t['L_sum']:.4f}, L_0 {t['L_0']:.4f}]"
                       f"   NFE {r.nfe}, {self.vlb_seconds:.1f} s")
        figures = {k: v for k, v in self.figures().items() if not k.endswith("_seconds")}
        out.append("figures: " + ", ".join(f"{k}={v!r}" for k, v in figures.items()))
        return out


def evaluate_likelihood(model, data, settings: EvalSettings | None = None, *,
                        progress: bool = False) -> LikelihoodReport:
    """Test bits/dim of ``model`` on a :class:`~scoresde.data.loader.Dataset` split, by ``settings``.

    The examples (the first ``settings.limit``) are moved to the model's device. Data without
    integer levels give no figures and a note. The bound runs under ``no_grad``.
    """
    settings = EvalSettings() if settings is None else settings
    report = LikelihoodReport(settings)
    if not (settings.ode or settings.vlb):
        return report
    if data.x_int is None or data.levels is None:
        report.notes.append(f"bits/dim skipped: data set {data.name!r} is continuous")
        return report
    x_int = data.x_int[:settings.limit] if settings.limit else data.x_int
    x_int = x_int.to(model_device(model))
    report.n = int(x_int.shape[0])
    s = settings
    if s.ode:
        start = time.perf_counter()
        report.ode = ode_bpd(model, x_int, data.levels, s, progress=progress)
        report.ode_seconds = time.perf_counter() - start
    if s.vlb and not is_variance_preserving(model.sde):
        report.notes.append(vlb_skipped_note(model))
    elif s.vlb:
        start = time.perf_counter()
        report.vlb = vlb_bpd(model, x_int, data.levels, s, progress=progress)
        report.vlb_seconds = time.perf_counter() - start
    return report


def vlb_skipped_note(model) -> str:
    """The note of a report whose model's SDE is not VP: the one refusal message."""
    return f"bits/dim (VLB) skipped: {not_vp_reason(model.sde)}"


def ode_bpd(model, x_int: torch.Tensor, levels: int, s: EvalSettings, *, seed: int | None = None,
            n_dequant: int | None = None, progress: bool = False) -> BpdResult:
    """ODE bits/dim of ``x_int`` (on the model's device) by the settings ``s``; the generator of the
    dequantization noise and probes is seeded with ``seed`` (default ``s.seed``)."""
    extra = {} if s.ode_sigma is None else {"t_eps": t_of_sigma(model.sde, s.ode_sigma)}
    seed = s.seed if seed is None else seed
    return bits_per_dim(model, x_int, levels, n_dequant=s.dequant if n_dequant is None else n_dequant,
                        batch_size=s.batch_size, trace=s.trace, probe=s.probe, n_probes=s.probes, rtol=s.rtol,
                        atol=s.atol, generator=torch.Generator(device="cpu").manual_seed(seed),
                        progress=progress, **extra)


def vlb_bpd(model, x_int: torch.Tensor, levels: int, s: EvalSettings, *, progress: bool = False) -> BpdResult:
    """The DDPM bound's bits/dim of ``x_int`` (on the model's device) by the settings ``s`` (VP only)."""
    opts = dict(n_terms=s.vlb_terms, variance=s.variance, batch_size=s.batch_size, progress=progress,
                generator=torch.Generator(device="cpu").manual_seed(s.seed))
    with torch.no_grad():
        if s.vlb_sigma is None:
            return ddpm_vlb_bits_per_dim(model, x_int, levels, **opts)
        return grid_vlb_bits_per_dim(model, x_int, levels, N=s.vlb_steps,
                                     t_eps=t_of_sigma(model.sde, s.vlb_sigma), **opts)


def evaluation_data(run, name: str | None = None, *, root=None, levels: int | None = None, split: str = "test"):
    """The data set ``python -m scoresde.evaluate`` evaluates ``run`` (a loaded ``--ckpt``: ``.model``,
    ``.config``, ``.source``) on: ``name`` (``--data``: a data-set name, an ``.npz`` or an image folder
    with ``levels`` levels), else the run's own; examples of the model's shape."""
    cfg = run.config
    if name is None and cfg is None:
        raise ValueError(f"--data missing: {run.source} is a diffusers folder without a data set of its own; "
                         f"expected --data {' | '.join(DATASET_NAMES[-3:])} or an .npz / image folder")
    if levels is not None and (name is None or name in DATASET_NAMES):
        raise ValueError(f"--levels {levels}: only for an .npz / image folder given as --data")
    shape = tuple(run.model.net.data_shape)
    if name is None or name in DATASET_NAMES:
        name = name or cfg.data.name
        own = cfg is not None and cfg.data.name == name
        root = root or (cfg.data.root if own else None)
        data = load_dataset(name, split, root=root, seed=cfg.seed if own else 0)
    else:
        data = load_images(name, 256 if levels is None else levels, channels=shape[0])
    if tuple(data.shape) != shape:
        raise ValueError(f"--data {data.name}: examples of shape {tuple(data.shape)}: expected the model's "
                         f"{shape}")
    return data


def print_likelihood(run, data, settings: EvalSettings, *, split: str, device, mixture: bool = True) -> int:
    """What ``python -m scoresde.evaluate`` prints for a loaded ``--ckpt`` (``run``) on ``data``: what
    is evaluated, the settings, the results (:meth:`LikelihoodReport.lines`). Sizes are checked
    against memory first. Returns the exit status 0. A class-conditional model gets the three kinds of
    bits/dim (:func:`scoresde.evaluation.conditional.evaluate_conditional_likelihood`; the class
    mixture unless ``mixture=False``)."""
    from scoresde.evaluation.conditional import check_conditional_request  # conditional.py uses this module

    classes = check_conditional_request(run.model, data, mixture)
    if data.levels is None or data.x_int is None:
        raise ValueError(f"data set {data.name!r} has no integer levels: bits/dim needs integer data "
                         f"(digits, mnist, cifar10)")
    n = data.x_int.shape[0] if settings.limit == 0 else min(settings.limit, data.x_int.shape[0])
    batch = min(settings.batch_size, n) * data.dim * 4.0  # bytes of one float32 batch
    check_memory("--probes", settings.probes, batch * settings.probes, "the Hutchinson probes of one batch")
    check_memory("--dequant", settings.dequant, 8.0 * n * settings.dequant, "the per-draw results (float64)")
    check_memory("--vlb-steps", settings.vlb_steps, 16.0 * (settings.vlb_steps + 1), "the VLB grid (float64)")
    rows = min(settings.batch_size, n) * (settings.probes if settings.ode else 1)
    check_memory("--batch-size", settings.batch_size,  # measured on a probe batch, with the backward's tensors
                 rows * activation_bytes(run.model, device, grad=bool(settings.ode)),
                 "the network's activations on one batch (measured on a probe batch)")
    what = f"{run.source} (step {run.step})" if run.config is not None else run.model.describe()
    split = f" {split}" if data.name in DATASET_NAMES else ""  # an .npz / image folder is what it is
    print(f"{what}: {data.name}{split}, {n} examples, "
          f"D = {data.dim}, {data.levels} levels, {device}")
    print(f"settings: {settings.describe()}")
    try:
        if classes:  # p(x | y), p(x) by the null label and by the class mixture (docs/conditioning.md)
            from scoresde.evaluation.conditional import evaluate_run_conditional
            report = evaluate_run_conditional(run, data, settings, mixture=mixture)
        else:
            report = evaluate_likelihood(run.model, data, settings, progress=True)
    except RuntimeError as e:  # e.g. an ODE solve that fails: one line, not a traceback
        raise ValueError(str(e)) from None
    for line in report.lines():
        print(line)
    return 0
