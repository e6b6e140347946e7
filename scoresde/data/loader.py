"""Data sets as tensors: :func:`load_dataset` is the one entry point.

It reads the data-set table (:mod:`scoresde.data.table`): toy 2-D sets (:mod:`scoresde.data.toy`),
scikit-learn's digits (embedded, no download), MNIST and CIFAR-10 from a local folder
(:mod:`scoresde.data.files`). It returns a :class:`Dataset` of tensors; batching is the caller's.

Integer data are scaled into model space ``[-1, 1]`` by :func:`scoresde.core.bpd.to_model_space`
(the bin centres; re-exported here with :func:`~scoresde.core.bpd.dequantize`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scoresde.core.bpd import dequantize, to_model_space
from scoresde.data import files as data_files
from scoresde.data.table import DATASET_NAMES, dataset_info
from scoresde.data.toy import toy_oracle
from scoresde.util.checks import check_choice, check_int
from scoresde.util.choices import SPLITS

__all__ = ["to_model_space", "dequantize", "Dataset", "load_dataset", "load_images", "DATASET_NAMES",
           "toy_oracle"]

TOY_SIZES = {"train": 10000, "test": 2000}


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
    info = dataset_info(name)
    check_choice("split", split, SPLITS)
    n = check_int("n", n, none_ok=True)
    if info.is_toy:
        return _load_toy(name, split, TOY_SIZES[split] if n is None else n, seed)
    root = Path(root if root is not None else os.environ.get("SCORESDE_DATA", "data"))
    x_int, labels = info.reader(root, split, n)
    if n is not None:
        x_int, labels = x_int[:n], labels[:n]
    return Dataset(name, to_model_space(x_int, info.levels), x_int, info.levels, tuple(x_int.shape[1:]), labels)


def load_images(path, levels: int = 256, *, channels: int | None = None) -> Dataset:
    """Your own integer images as a :class:`Dataset`: an ``.npz`` of uint8 images or a folder of
    image files (:func:`scoresde.data.files.read_images`), each value a level ``0..levels-1``."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256:
        raise ValueError(f"levels={levels!r}: expected an integer in [2, 256] (the images are uint8)")
    x_int = data_files.read_images(Path(path), channels)
    return Dataset(str(path), to_model_space(x_int, levels), x_int, levels, tuple(x_int.shape[1:]), None)


def _load_toy(name: str, split: str, n: int, seed: int) -> Dataset:
    """A toy set drawn with a generator seeded by ``(name, seed, split)``: train and test are independent."""
    key = np.random.SeedSequence([int(seed), SPLITS.index(split), DATASET_NAMES.index(name)])
    generator = torch.Generator(device="cpu").manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> 1))
    x, labels = dataset_info(name).reader(n, generator)
    return Dataset(name, x, None, None, tuple(x.shape[1:]), labels)
