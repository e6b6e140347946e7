"""Data sets and the scaling between integer levels and model space ``[-1, 1]``.

:func:`load_dataset` is the one entry point: toy 2-D sets (:mod:`scoresde.toy`), scikit-learn's
digits (embedded, no download), MNIST and CIFAR-10 from a local folder
(:mod:`scoresde.data_files`). It returns a :class:`Dataset` of tensors; batching is the caller's.

Scaling convention (MATH.md, "Bits per dimension"): integer data ``k ∈ {0..L-1}`` lives
in bins ``[2k/L - 1, 2(k+1)/L - 1]`` of model space. Training data are the bin centres
(:func:`to_model_space`); likelihoods use uniform dequantization (:func:`dequantize`).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data_files, toy
from .rng import rand
from .toy import toy_oracle

__all__ = ["to_model_space", "dequantize", "Dataset", "load_dataset", "load_images", "DATASET_NAMES",
           "toy_oracle"]

DATASET_NAMES = (*toy.TOY_SETS, "digits", "mnist", "cifar10")
SPLITS = ("train", "test")
TOY_SIZES = {"train": 10000, "test": 2000}


def _check_levels(x_int: torch.Tensor, levels: int) -> None:
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"levels={levels!r}: expected an integer ≥ 2")
    if x_int.is_floating_point() and not torch.equal(x_int, torch.round(x_int)):
        raise ValueError("x_int: expected integer data (whole numbers) for the given levels")
    if x_int.numel() and (x_int.min() < 0 or x_int.max() > levels - 1):
        raise ValueError(f"x_int: expected values in 0..{levels - 1}, got "
                         f"{x_int.min().item()}..{x_int.max().item()}")


def to_model_space(x_int: torch.Tensor, levels: int, dtype=torch.float32) -> torch.Tensor:
    """Bin centres: ``(2k + 1)/L - 1``."""
    _check_levels(x_int, levels)
    return ((2 * x_int.to(torch.float64) + 1) / levels - 1).to(dtype)


def dequantize(x_int: torch.Tensor, levels: int, u: torch.Tensor | None = None,
               generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """Uniform dequantization ``z = 2 (k + u)/L - 1`` with ``u ~ U[0, 1)`` (or the given ``u``), on
    ``x_int``'s device; ``u`` is drawn on the generator's device (CPU or ``x_int``'s) and moved."""
    _check_levels(x_int, levels)
    if u is None:
        u = rand(x_int.shape, generator=generator, dtype=torch.float64, device=x_int.device)
    return (2 * (x_int.to(torch.float64) + u.to(torch.float64)) / levels - 1).to(dtype)


@dataclass
class Dataset:
    """A data set as tensors.

    Attributes:
        name: the name given to :func:`load_dataset`.
        x: float32 ``(N, *shape)`` in model space (``[-1, 1]`` bin centres for integer data;
            toy sets roughly in ``[-1, 1]``).
        x_int: int64 ``(N, *shape)`` integer levels ``0..levels-1``, or ``None`` (continuous data).
        levels: number of levels ``L`` per dimension (17 digits, 256 images), or ``None``.
        shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        labels: int64 ``(N,)`` class labels, or ``None``.
    """

    name: str
    x: torch.Tensor
    x_int: torch.Tensor | None
    levels: int | None
    shape: tuple
    labels: torch.Tensor | None

    def __post_init__(self):
        n, shape = self.x.shape[0], tuple(self.shape)
        if tuple(self.x.shape[1:]) != shape:
            raise ValueError(f"Dataset {self.name!r}: x has shape {tuple(self.x.shape)}, "
                             f"expected (N, *{shape})")
        if self.x_int is not None and self.x_int.shape != self.x.shape:
            raise ValueError(f"Dataset {self.name!r}: x_int has shape {tuple(self.x_int.shape)}, "
                             f"expected {tuple(self.x.shape)}")
        if (self.x_int is None) != (self.levels is None):
            raise ValueError(f"Dataset {self.name!r}: x_int and levels must be given together")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"Dataset {self.name!r}: labels have shape {tuple(self.labels.shape)}, "
                             f"expected ({n},)")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        """``D``, the number of dimensions of one sample."""
        return math.prod(self.shape)


def load_dataset(name: str, split: str = "train", *, root=None, n: int | None = None,
                 seed: int = 0) -> Dataset:
    """Load a data set by name.

    Args:
        name: one of ``ring``, ``moons``, ``swissroll``, ``checkerboard`` (toy 2-D),
            ``digits`` (scikit-learn ``load_digits``, 8×8, 17 levels), ``mnist``, ``cifar10``.
        split: ``"train"`` or ``"test"``. Digits: a fixed 80/20 split
            (``train_test_split(test_size=0.2, random_state=0)``); toy sets: independent draws.
        root: folder of the MNIST / CIFAR-10 files (default ``$SCORESDE_DATA`` or ``./data``).
        n: toy sets: number of samples (default 10000 train, 2000 test); others: keep the
            first ``n`` (all if ``None`` or larger).
        seed: toy sets only: the draw is a function of ``(seed, split)``.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"n={n!r}: expected a positive integer or None")
    if name in toy.TOY_SETS:
        return _load_toy(name, split, TOY_SIZES[split] if n is None else int(n), seed)
    if name == "digits":
        x_int, labels = _digits(split)
        levels = 17
    else:
        root = Path(root if root is not None else os.environ.get("SCORESDE_DATA", "data"))
        if name == "mnist":
            x_int, labels = data_files.read_mnist(root, split)
        else:
            x_int, labels = data_files.read_cifar10(root, split, n=n)
        levels = 256
    if n is not None:
        x_int, labels = x_int[:n], labels[:n]
    return Dataset(name, to_model_space(x_int, levels), x_int, levels, tuple(x_int.shape[1:]), labels)


def load_images(path, levels: int = 256, *, channels: int | None = None) -> Dataset:
    """Your own integer images as a :class:`Dataset`: an ``.npz`` of uint8 images or a folder of
    image files (:func:`scoresde.data_files.read_images`), each value a level ``0..levels-1``."""
    x_int = data_files.read_images(Path(path), channels)
    return Dataset(str(path), to_model_space(x_int, levels), x_int, levels, tuple(x_int.shape[1:]), None)


def _load_toy(name: str, split: str, n: int, seed: int) -> Dataset:
    """A toy set drawn with a generator seeded by ``(name, seed, split)``: train and test are independent."""
    key = np.random.SeedSequence([int(seed), SPLITS.index(split), DATASET_NAMES.index(name)])
    generator = torch.Generator(device="cpu").manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> 1))
    x, labels = toy.TOY_SETS[name](n, generator)
    return Dataset(name, x, None, None, tuple(x.shape[1:]), labels)


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8×8 digits (levels 0..16), split 80/20 with ``random_state=0``."""
    x, y = _digits_split()[split]
    return torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.copy())  # fresh tensors per call


@functools.lru_cache(maxsize=1)
def _digits_split() -> dict:
    """Parsed once per process (scikit-learn reads a CSV file each time)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.int64)  # (1797, 8, 8), values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target.astype(np.int64),
                                              test_size=0.2, random_state=0)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}
