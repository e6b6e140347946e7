"""Sample-quality metrics that need no downloaded weights.

- :func:`sliced_wasserstein`: the sliced Wasserstein-1 distance (Rabin et al. 2011;
  Bonneel et al. 2015) between two samples, for vector data: the mean over random unit
  directions ``θ`` of the exact 1-D ``W1`` between the projections ``θ·x`` and ``θ·y``.
- :func:`frechet_distance` (Dowson & Landau 1982; the formula behind FID, Heusel et al. 2017):
  ``‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁^{½} Σ₂ Σ₁^{½})^{½})`` between Gaussians.
- :func:`digits_frechet`: the Fréchet distance between sample and test-split statistics in the
  feature space of a small classifier trained on the digits training split in seconds
  (:class:`DigitsFeatures`), reported with its floor, the same distance from the training
  split to the test split. An FID-like number for 8×8 digits, without Inception weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from scoresde.data.loader import load_dataset
from scoresde.util.atomic import atomic_write_bytes
from scoresde.util.checks import check_int
from scoresde.util.progress import progress_bar
from scoresde.util.rng import draw_device, randn

__all__ = ["sliced_wasserstein", "digits_cache_path", "wasserstein_1d", "random_directions", "frechet_distance",
           "feature_statistics", "DigitsFeatures", "digits_frechet"]


def random_directions(dim: int, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``n`` directions uniform on the unit sphere in ``R^dim`` (normalised Gaussians), float64 (n, dim),
    drawn on the generator's device and returned on ``device`` (default: where they were drawn)."""
    where = draw_device(generator, "cpu")
    g = randn((n, dim), generator=generator, dtype=torch.float64, device=where if device is None else device)
    return g / g.norm(dim=1, keepdim=True)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``W1 = ∫ |F_a(z) - F_b(z)| dz`` between the empirical distributions of the columns
    of ``a`` ``(N, P)`` and ``b`` ``(M, P)`` (any ``N``, ``M``); float64 ``(P,)``.

    On the merged sorted values, ``F_a - F_b`` is constant between neighbours: sum its absolute
    value times the gap."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    values = torch.cat([a, b], 0)  # (N + M, P)
    steps = torch.cat([torch.full_like(a, 1.0 / a.shape[0]), torch.full_like(b, -1.0 / b.shape[0])], 0)
    values, order = torch.sort(values, dim=0)
    cdf_gap = torch.cumsum(torch.gather(steps, 0, order), 0)[:-1]  # F_a - F_b on each interval
    return (cdf_gap.abs() * torch.diff(values, dim=0)).sum(0)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced ``W1``: ``mean_θ W1(θ·x, θ·y)`` over ``n_projections`` random unit directions.

    ``x`` ``(N, *dims)`` and ``y`` ``(M, *dims)`` are flattened; sizes may differ (the 1-D
    distances are exact for empirical distributions either way). Same ``generator`` state,
    same directions. ``y`` is moved to ``x``'s device; ``generator`` may be on the CPU or there.
    """
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    y = y.reshape(y.shape[0], -1).to(device=x.device, dtype=torch.float64)
    if x.shape[1] != y.shape[1] or x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"x has shape {tuple(x.shape)}, y {tuple(y.shape)}: expected non-empty "
                         f"samples of the same dimension")
    n_projections = check_int("n_projections", n_projections)
    theta = random_directions(x.shape[1], n_projections, generator, device=x.device)  # (P, D)
    return float(wasserstein_1d(x @ theta.T, y @ theta.T).mean())


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """``‖μ₁ - μ₂‖² + tr Σ₁ + tr Σ₂ - 2 tr (Σ₁^{½} Σ₂ Σ₁^{½})^{½}``, the squared 2-Wasserstein
    distance between ``N(μ₁, Σ₁)`` and ``N(μ₂, Σ₂)``. Float64, via symmetric eigendecompositions
    (``Σ₁^{½} Σ₂ Σ₁^{½}`` is symmetric PSD, so its root's trace is ``Σ √λ_i``)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"shapes {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}: "
                         f"expected (D,), (D, D), (D,), (D, D)")
    s1 = _sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0, None)).sum()
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_root
    return float(max(fd, 0.0))  # ≥ 0 exactly; rounding can leave -1e-10 for equal inputs


def feature_statistics(f) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of features ``(N, F)``, float64."""
    f = np.asarray(f, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def digits_cache_path(cache_dir, seed: int) -> Path:
    """Where :class:`DigitsFeatures` keeps its weights in ``cache_dir`` (a run folder)."""
    return Path(cache_dir) / f"digits_features_seed{int(seed)}.safetensors"


class DigitsFeatures:
    """A small MLP classifier of the 8×8 digits, trained on the fixed training split; its
    penultimate layer (``feature_dim`` SiLU units) is the feature space for :func:`digits_frechet`.

    Deterministic for a given ``seed`` (full-batch Adam, single-threaded, light Gaussian-noise
    augmentation; a few seconds on a CPU). With ``cache_dir`` the weights are stored as
    ``digits_features_seed<seed>.safetensors`` and reused. ``progress``: report the fit's steps
    (:func:`scoresde.util.progress.progress_bar`).
    """

    VERSION = "1"
    HIDDEN, FEATURES, STEPS, LR, NOISE = 256, 64, 300, 3e-3, 0.1

    def __init__(self, *, cache_dir=None, seed: int = 0, progress: bool = False):
        self.seed = int(seed)
        self.progress = bool(progress)
        self._split_stats = None
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):  # a CPU model, whatever the default
            torch.manual_seed(self.seed)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, self.HIDDEN), nn.SiLU(),
                                      nn.Linear(self.HIDDEN, self.FEATURES), nn.SiLU())
            self.head = nn.Linear(self.FEATURES, 10)
        path = None if cache_dir is None else digits_cache_path(cache_dir, self.seed)
        if path is None or not self._load(path):
            self._train()
            if path is not None:
                self._save(path)
        self.body.eval()
        self.head.eval()

    def _params(self) -> dict:
        return {**{f"body.{k}": v for k, v in self.body.state_dict().items()},
                **{f"head.{k}": v for k, v in self.head.state_dict().items()}}

    def _metadata(self) -> dict:
        return {"version": self.VERSION, "seed": str(self.seed), "hidden": str(self.HIDDEN),
                "features": str(self.FEATURES), "steps": str(self.STEPS)}

    def _load(self, path: Path) -> bool:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as f:
                if f.metadata() != self._metadata():
                    return False
            state = load_file(str(path))
            self.body.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("body.")})
            self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        except Exception:  # a stale or damaged cache is retrained and overwritten
            return False
        return True

    def _save(self, path: Path) -> None:
        from safetensors.torch import save

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self._params().items()}
        atomic_write_bytes(path, save(tensors, metadata=self._metadata()))

    def _train(self) -> None:
        """Single-threaded: the weights are then bitwise the same whatever torch's thread
        setting (and a model this small trains faster on one core than on contended ones)."""
        train = load_dataset("digits", "train")
        x, y = train.x, train.labels
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._fit(x, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed)
        params = list(self.body.parameters()) + list(self.head.parameters())
        opt = torch.optim.Adam(params, lr=self.LR, weight_decay=1e-4)
        with progress_bar(self.STEPS, self.progress, "digits features", unit="steps") as bar:
            for _ in range(self.STEPS):
                noisy = x + self.NOISE * torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
                loss = nn.functional.cross_entropy(self.head(self.body(noisy)), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, FEATURES)`` float64 of images ``(N, 1, 8, 8)`` in ``[-1, 1]`` (clamped)."""
        if tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x has shape {tuple(x.shape)}: expected (N, 1, 8, 8) digits")
        if not torch.isfinite(x).all():
            raise ValueError("x: expected finite values")
        return self.body(x.detach().cpu().float().clamp(-1, 1)).double()

    def split_statistics(self) -> tuple:
        """Feature mean and covariance of the digits train and test splits (computed once)."""
        if self._split_stats is None:
            self._split_stats = tuple(feature_statistics(self.features(load_dataset("digits", s).x))
                                      for s in ("train", "test"))
        return self._split_stats

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The class (``0..9``, int64 ``(N,)``, CPU) this classifier assigns to images ``(N, 1, 8, 8)``."""
        return self.head(self.features(x).float()).argmax(1)

    @torch.no_grad()
    def accuracy(self, split: str = "test") -> float:
        d = load_dataset("digits", split)
        logits = self.head(self.features(d.x).float())
        return float((logits.argmax(1) == d.labels).double().mean())


def digits_frechet(samples: torch.Tensor, *, cache_dir=None, seed: int = 0,
                   features: DigitsFeatures | None = None, progress: bool = False) -> dict:
    """Fréchet distance between digit samples ``(N, 1, 8, 8)`` in ``[-1, 1]`` and the test split,
    in :class:`DigitsFeatures` space; ``floor`` is the same distance from the training split.

    Returns ``{"fd": float, "floor": float}``; with fewer samples than the test split's 360 the
    estimate is biased upwards (as FID is): compare runs at equal ``N``.
    """
    if samples.shape[0] < 2:
        raise ValueError(f"samples has {samples.shape[0]} rows: expected at least 2")
    net = features if features is not None else DigitsFeatures(cache_dir=cache_dir, seed=seed, progress=progress)
    train, test = net.split_statistics()
    fd = frechet_distance(*feature_statistics(net.features(samples)), *test)
    return {"fd": fd, "floor": frechet_distance(*train, *test)}


