"""Inception FID and KID of image samples against a data set's training split (docs/fid.md).

- Features: torch-fidelity's Inception-v3 (``inception-v3-compat``: the TensorFlow FID graph's
  weights converted to PyTorch, the 2048 pool features, TensorFlow 1's bilinear resize to
  299 × 299), the extractor torchmetrics' FID uses too. It comes with the optional extra
  (``pip install -e ".[fid]"``) and downloads its weights on first use. Any object with
  ``name``, ``dims`` and ``__call__(uint8 (N, 3, H, W)) -> (N, dims)`` works in its place:
  :class:`RandomFeatures` (random weights, the same shapes) is the one the tests use.
- FID (Heusel et al. 2017): :func:`scoresde.evaluation.metrics.frechet_distance` (the function of
  the digits Fréchet distance) between the Gaussians fitted to the two feature sets.
- KID (Bińkowski et al. 2018): the unbiased MMD² with the kernel ``k(x, y) = (x·y/d + 1)³``
  (:func:`mmd2_unbiased`), mean and standard deviation over ``subsets`` random pairs of
  ``subset_size`` features (torch-fidelity's defaults: 100 subsets of 1000), drawn from the
  first ``KID_POOL`` features of each side.

Images in ``[-1, 1]`` become ``uint8`` by ``round(127.5 (x + 1))`` (samples and data alike); a
grey image's channel is repeated three times. The reference side (:func:`reference_statistics`)
is cached in a folder as ``fid_reference_<data>_<extractor>.npz``, keyed inside by the data's
fingerprint (a changed data set is recomputed).
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scoresde.evaluation.metrics import frechet_distance
from scoresde.evaluation.report import draw_samples, model_shape
from scoresde.util.atomic import atomic_write_bytes
from scoresde.util.checks import check_int
from scoresde.util.host import check_memory
from scoresde.util.progress import progress_bar

__all__ = ["INCEPTION", "KID_POOL", "inception_missing", "InceptionFeatures", "RandomFeatures", "to_uint8",
           "FeatureStats", "feature_statistics_of", "reference_statistics", "mmd2_unbiased",
           "kernel_inception_distance", "fid_kid", "sample_fid", "default_extractor", "report_extractor",
           "report_fid", "print_fid"]

INCEPTION = "inception-v3-compat"
KID_POOL = 10000  # features of each side kept for KID


def inception_missing() -> str | None:
    """``None`` when torch-fidelity's Inception can be imported, else why not (one line)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: F401
    except Exception as e:  # ImportError, or torchvision failing to load next to this torch
        first = " ".join(str(e).split())[:160]
        return (f"torch-fidelity's Inception cannot be imported ({type(e).__name__}: {first}); "
                f'expected pip install -e ".[fid]" (torch-fidelity with a torchvision built for this torch)')
    return None


class InceptionFeatures:
    """torch-fidelity's Inception-v3 pool features (2048) of ``uint8`` images, on ``device``."""

    name, dims = INCEPTION, 2048

    def __init__(self, device="cpu"):
        why = inception_missing()
        if why is not None:
            raise ValueError(why)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.device = torch.device(device)
        self.net = FeatureExtractorInceptionV3(INCEPTION, ["2048"]).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))[0].double().cpu()


class RandomFeatures(nn.Module):
    """Inception's shapes with random weights: ``uint8`` ``(N, 3, H, W)`` → float64 ``(N, dims)``.

    A strided convolution, SiLU, average pooling to 4 × 4 and a linear map, seeded; for tests and
    CPU checks of the FID path (its distances are not comparable with Inception's)."""

    def __init__(self, dims: int = 2048, seed: int = 0):
        super().__init__()
        self.dims, self.seed = check_int("dims", dims, 1), int(seed)
        self.name = f"random{self.dims}-seed{self.seed}"
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(self.seed)
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.SiLU(),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, self.dims))
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images of dtype {x.dtype} and shape {tuple(x.shape)}: expected uint8 (N, 3, H, W)")
        return self.body(x.cpu().float() / 255.0).double()


def default_extractor(device="cpu"):
    """:class:`InceptionFeatures` on ``device`` (``ValueError`` naming the extra when it is missing)."""
    return InceptionFeatures(device)


def report_extractor(device="cpu"):
    """The extractor of the training report's FID: Inception when the ``fid`` extra is installed,
    else ``None`` (no FID in the report)."""
    return InceptionFeatures(device) if inception_missing() is None else None


def report_fid(x: torch.Tensor, train_data, *, device, cache_dir, seed: int, batch_size: int = 250,
               progress: bool = False) -> dict:
    """The training report's FID and KID of the run's final samples ``x`` (``sample.n`` of them)
    against its training data; ``{}`` without an extractor (:func:`report_extractor`) or with
    fewer than 2 samples. Few samples bias FID upwards: compare runs at equal ``fid_n``, and use
    ``python -m scoresde.evaluate --fid 50000`` for the figure papers report."""
    extractor = report_extractor(device)
    if extractor is None or x.shape[0] < 2:
        return {}
    ref = reference_statistics(train_data, extractor, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    stats = feature_statistics_of(_batches(x, batch_size), extractor, total=x.shape[0], progress=progress,
                                  desc="sample features")
    return {**fid_kid(stats, ref, seed=seed), "fid_extractor": extractor.name}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in ``[-1, 1]`` (clamped) as ``uint8`` ``(N, 3, H, W)``, ``round(127.5 (x + 1))``;
    a single channel is repeated three times."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images of shape {tuple(x.shape)}: expected (N, 1 or 3, H, W)")
    if not torch.isfinite(x).all():
        raise ValueError("images: expected finite values")
    u = torch.round((x.detach().to(torch.float64).clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    return u.expand(-1, 3, -1, -1).contiguous() if u.shape[1] == 1 else u


@dataclass
class FeatureStats:
    """``n`` features' mean ``(d,)`` and unbiased covariance ``(d, d)`` (float64) and the first
    ``KID_POOL`` of them (float32 ``(≤ KID_POOL, d)``)."""

    mu: np.ndarray
    sigma: np.ndarray
    pool: np.ndarray
    n: int


def feature_statistics_of(batches, extractor, *, total: int | None = None, progress: bool = False,
                          desc: str = "features") -> FeatureStats:
    """Streams image batches (float ``[-1, 1]`` ``(B, C, H, W)``) through ``extractor``: running
    float64 sums of the features and of their outer products (no ``N × d`` array is kept), and
    the first ``KID_POOL`` features."""
    s1 = s2 = None
    n, pool = 0, []
    with progress_bar(total, progress, desc) as bar:
        for x in batches:
            f = extractor(to_uint8(x)).to(torch.float64).cpu()  # (B, d)
            if f.ndim != 2 or f.shape[0] != x.shape[0]:
                raise ValueError(f"feature extractor {getattr(extractor, 'name', extractor)!r} returned shape "
                                 f"{tuple(f.shape)} for {x.shape[0]} images: expected (B, d)")
            s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
            s2 = f.T @ f if s2 is None else s2 + f.T @ f
            kept = sum(p.shape[0] for p in pool)
            if kept < KID_POOL:
                pool.append(f[:KID_POOL - kept].to(torch.float32))
            n += f.shape[0]
            bar.update(x.shape[0])
    if n < 2:
        raise ValueError(f"{n} images: expected at least 2 for a covariance")
    mu = s1 / n
    sigma = (s2 - n * torch.outer(mu, mu)) / (n - 1)
    return FeatureStats(mu.numpy(), sigma.numpy(), torch.cat(pool).numpy(), n)


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


def _fingerprint(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def reference_statistics(data, extractor, *, cache_dir=None, batch_size: int = 250,
                         progress: bool = False) -> FeatureStats:
    """:class:`FeatureStats` of ``data``'s images (a :class:`~scoresde.data.loader.Dataset`, normally
    the training split) in a fixed random order (seed 0: the KID pool is a random subset), cached
    in ``cache_dir`` as ``fid_reference_<data.name>_<extractor.name>.npz``."""
    x = data.x
    if x.ndim != 4:
        raise ValueError(f"data set {data.name!r} holds examples of shape {tuple(data.shape)}: FID needs images")
    key = _fingerprint(x)
    path = None if cache_dir is None else Path(cache_dir) / f"fid_reference_{data.name}_{extractor.name}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == key and int(f["dims"]) == extractor.dims:
                    return FeatureStats(f["mu"], f["sigma"], f["pool"], int(f["n"]))
        except (OSError, ValueError, KeyError):  # damaged or foreign: computed again and replaced
            pass
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0), device="cpu")
    stats = feature_statistics_of(_batches(x[order], batch_size), extractor, total=x.shape[0],
                                  progress=progress, desc=f"{data.name} features")
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, key=np.array(key), dims=np.array(extractor.dims), mu=stats.mu, sigma=stats.sigma,
                 pool=stats.pool, n=np.array(stats.n))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    return stats


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of samples ``x`` ``(m, d)`` and ``y`` ``(n, d)`` under ``k(a, b) = (a·b/d + 1)³``:
    the means of ``k`` over pairs ``i ≠ j`` within ``x`` and within ``y``, minus twice the mean over
    all cross pairs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`mmd2_unbiased` over ``subsets`` pairs of random
    subsets (without replacement within a subset) of ``min(subset_size, len(f1), len(f2))`` rows."""
    subsets = check_int("subsets", subsets, 1)
    size = min(check_int("subset_size", subset_size, 2), f1.shape[0], f2.shape[0])
    if size < 2:
        raise ValueError(f"{f1.shape[0]} and {f2.shape[0]} features: expected at least 2 on each side for KID")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(f1[rng.choice(f1.shape[0], size, replace=False)],
                            f2[rng.choice(f2.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def fid_kid(samples: FeatureStats, reference: FeatureStats, *, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """``{"fid", "kid", "kid_std", "fid_n", "fid_n_ref"}`` of two :class:`FeatureStats`."""
    fid = frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma)
    kid, kid_std = kernel_inception_distance(samples.pool, reference.pool, subsets=kid_subsets,
                                             subset_size=kid_subset_size, seed=seed)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "fid_n": samples.n, "fid_n_ref": reference.n}


def _batch_seed(seed: int, b: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(b)]).generate_state(2, np.uint64)[0] >> 1)


def sample_fid(model, reference_data, *, n: int, sampler: str, steps: int, seed: int, device, extractor,
               batch_size: int = 250, cache_dir=None, progress: bool = False) -> dict:
    """FID and KID of ``n`` samples of ``model`` (``sampler``, ``steps``) against ``reference_data``.

    Samples are drawn in batches of ``batch_size`` (batch ``b`` from the seed ``(seed, b)``) and
    streamed through ``extractor`` as they come; the reference statistics come from (and go to)
    ``cache_dir`` (:func:`reference_statistics`). Also returns ``nfe`` (per batch) and ``fid_extractor``."""
    n, batch_size = check_int("n", n, 2), check_int("batch_size", batch_size, 1)
    shape = model_shape(model)
    if len(shape) != 3:
        raise ValueError(f"the model draws examples of shape {shape}: FID needs images (C, H, W)")
    if tuple(reference_data.shape) != tuple(shape):
        raise ValueError(f"data set {reference_data.name!r} holds examples of shape {tuple(reference_data.shape)}: "
                         f"expected the model's {tuple(shape)}")
    ref = reference_statistics(reference_data, extractor, cache_dir=cache_dir, batch_size=batch_size,
                               progress=progress)
    nfe = [0]

    def batches():
        for b in range(math.ceil(n / batch_size)):
            size = min(batch_size, n - b * batch_size)
            # a non-finite batch stops in the sampler (NonFiniteResult, a ValueError)
            x, nfe[0], _ = draw_samples(model, sampler, size, steps=steps, seed=_batch_seed(seed, b), device=device)
            yield x

    stats = feature_statistics_of(batches(), extractor, total=n, progress=progress, desc=f"{sampler} samples")
    return {**fid_kid(stats, ref, seed=seed), "nfe": nfe[0], "fid_extractor": extractor.name}


def _run_folder(run) -> Path | None:
    """The run folder a loaded run came from (its FID cache); ``None`` for a diffusers folder."""
    if run.config is None:
        return None
    src = Path(run.source)
    return src.parent.parent if src.parent.name == "checkpoints" else src.parent


def print_fid(run, ref, args, device) -> dict:
    """``python -m scoresde.evaluate --fid N``: FID and KID of a loaded run's samples against ``ref``
    (the data set's training split) by the flags ``args`` (``fid``, ``sampler``, ``steps``, ``seed``,
    ``fid_batch``, ``fid_features``; unset: the run's ``sample.*`` and seed), printed; returns the figures."""
    cfg = run.config
    sampler = args.sampler or (cfg.sample.sampler if cfg is not None else "ode")
    steps = args.steps or (cfg.sample.steps if cfg is not None else 100)
    seed = args.seed if args.seed is not None else (cfg.seed if cfg is not None else 0)
    if len(ref.shape) != 3:
        raise ValueError(f"--fid {args.fid}: data set {ref.name!r} holds examples of shape {tuple(ref.shape)}: "
                         f"FID needs images (C, H, W)")
    extractor = RandomFeatures() if args.fid_features == "random" else default_extractor(device)
    folder = _run_folder(run)
    check_memory("--fid", args.fid, 4.0 * KID_POOL * extractor.dims, "the KID pool of features")
    print(f"FID: {args.fid} samples ({sampler}, {steps} steps, seed {seed}) against the {ref.x.shape[0]} images of "
          f"{ref.name} train, {extractor.name} features, batches of {args.fid_batch}")
    out = sample_fid(run.model, ref, n=args.fid, sampler=sampler, steps=steps, seed=seed, device=device,
                     extractor=extractor, batch_size=args.fid_batch, cache_dir=folder, progress=sys.stderr.isatty())
    print(f"FID {out['fid']:.4f}   KID {out['kid']:.6f} ± {out['kid_std']:.6f}   NFE {out['nfe']} per sample"
          + ("" if folder is None else f"   (reference statistics cached in {folder})"))
    print("fid figures: " + ", ".join(f"{k}={out[k]!r}" for k in ("fid", "kid", "kid_std", "fid_n", "fid_n_ref")))
    return out
