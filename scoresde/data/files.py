"""Readers for image data sets kept in a local folder, in their standard file formats.

- MNIST (LeCun et al. 1998): IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (optionally ``.gz``). An IDX file is a
  big-endian header ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = uint8), ``ndim`` big-endian
  int32 sizes, then the data in C order.
- scikit-learn's digits (embedded in the package, no file): 1797 8×8 images with levels 0..16.
- CIFAR-10 (Krizhevsky 2009), python version: pickles ``data_batch_1..5`` and ``test_batch``,
  dicts with ``b'data'`` (uint8, ``(N, 3072)``: 1024 red, 1024 green, 1024 blue values, each a
  32×32 image in row-major order) and ``b'labels'`` (N ints).

- Your own images: an ``.npz`` holding one uint8 array (``images``, ``x`` or its only array) of
  shape ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``, or a folder of image files
  (PNG, JPEG, BMP, WebP, all of one size), read with Pillow in sorted file-name order.

No torchvision: the formats are read directly. CIFAR pickles are read with an
unpickler that only builds plain containers and numpy arrays, so a hostile file cannot run code.
Every reader is ``read_*(root, split, n=None)`` and returns ``(images (N, C, H, W) int64,
labels (N,) int64)`` (``n`` lets a reader stop early; the loader keeps the first ``n``).
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from scoresde.util.host import check_memory

__all__ = ["MNIST_FILES", "CIFAR10_FILES", "IMAGE_SUFFIXES", "read_idx", "read_digits", "read_mnist", "read_cifar10",
           "read_images"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def _find(folders: list[Path], names: tuple[str, ...], what: str, allow_gz: bool) -> list[Path]:
    """The first folder holding every file in ``names`` (or its ``.gz``); else FileNotFoundError."""
    for folder in folders:
        found = []
        for name in names:
            plain, gz = folder / name, folder / (name + ".gz")
            found.append(plain if plain.is_file() else gz if allow_gz and gz.is_file() else None)
        if all(found):
            return found
    where = " or ".join(str(f) for f in folders)
    suffix = " (optionally .gz)" if allow_gz else ""
    raise FileNotFoundError(f"{what}: expected files {', '.join(names)}{suffix} in {where}")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (uint8 data) as a numpy array of the shape in its header."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable (gzip) IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + size:
        raise ValueError(f"{path}: IDX header promises shape {shape} ({size} bytes) "
                         f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_digits(root, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8×8 digits (levels 0..16), split 80/20 with ``random_state=0``:
    images ``(N, 1, 8, 8)``, labels ``(N,)``. ``root`` is unused (the data are embedded)."""
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


def read_mnist(root: Path, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from ``root`` (or ``root/MNIST/raw``, ``root/mnist``): images (N, 1, 28, 28), labels (N,)."""
    root = Path(root)
    img_path, lab_path = _find([root, root / "MNIST" / "raw", root / "mnist"], MNIST_FILES[split],
                               f"MNIST {split} split", allow_gz=True)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise ValueError(f"{img_path}: expected 3-D image data (N, H, W), got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{lab_path}: expected {images.shape[0]} labels, got shape {labels.shape}")
    return (torch.from_numpy(images.astype(np.int64))[:, None],
            torch.from_numpy(labels.astype(np.int64)))


class _SafeUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, numbers and numpy arrays; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as err:  # pickle raises many types on garbage
        raise ValueError(f"{path}: not a CIFAR-10 python pickle ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels'")
    # Types and shapes are checked on what the pickle built, before any conversion: np.asarray of
    # nested lists that share one another would build every element of the expanded tree.
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {got}")
    if isinstance(labels, list) and all(type(v) is int for v in labels):
        labels = np.asarray(labels, dtype=np.int64)
    elif not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu"):
        raise ValueError(f"{path}: b'labels' must be a list or array of integers, got {type(labels).__name__}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected {data.shape[0]} labels, got shape {labels.shape}")
    return data, labels


def read_cifar10(root: Path, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` or ``root``: images ``(N, 3, 32, 32)``, labels ``(N,)``.

    With ``n``, batches are read only until ``n`` images are in hand."""
    root = Path(root)
    paths = _find([root / "cifar-10-batches-py", root], CIFAR10_FILES[split],
                  f"CIFAR-10 {split} split", allow_gz=False)
    images, labels = [], []
    for path in paths:
        data, lab = _read_cifar_batch(path)
        images.append(data)
        labels.append(lab)
        if n is not None and sum(len(d) for d in images) >= n:
            break
    x = np.concatenate(images).reshape(-1, 3, 32, 32)  # R, G, B planes, each row-major 32×32
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(np.concatenate(labels).astype(np.int64))


def _channels_first(x: np.ndarray, channels: int | None, where: str) -> np.ndarray:
    """``(N, H, W)`` → ``(N, 1, H, W)``; ``(N, H, W, C)`` → ``(N, C, H, W)`` when the channel count
    (``channels``, else a last axis of 1, 3 or 4 and a second that is not) says so."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{where}: images of shape {x.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if channels is not None:
        if x.shape[1] == channels:
            return x
        if x.shape[3] == channels:
            return x.transpose(0, 3, 1, 2)
        raise ValueError(f"{where}: images of shape {x.shape}: expected {channels} channels first or last")
    return x.transpose(0, 3, 1, 2) if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4) else x


_DEFLATE_RATIO = 1032  # the most bytes deflate can expand one compressed byte to


def _check_npz_member(archive: zipfile.ZipFile, key: str, path: Path) -> None:
    """The ``.npy`` header of ``key`` in an ``.npz``, read before its data: a uint8 array whose size
    (shape × 1 byte) is what the archive holds — the member's stated size, which a stored member
    cannot exceed and a deflated one can exceed at most 1032-fold — and what memory holds (the
    loader keeps int64 and float32 copies: 12 bytes a value). ``ValueError`` otherwise."""
    try:
        info = archive.getinfo(key + ".npy")
    except KeyError:
        return  # np.load names members without .npy too; it reads those itself
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"{path}: array {key!r} has .npy format {version}: expected 1.0, 2.0 or 3.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
        header = member.tell()
    if dtype != np.uint8:
        raise ValueError(f"{path}: array {key!r} is {dtype}: expected uint8 images")
    nbytes = math.prod(shape)
    limit = info.compress_size * (_DEFLATE_RATIO if info.compress_type != zipfile.ZIP_STORED else 1)
    if info.file_size != header + nbytes or nbytes > limit or info.compress_size > path.stat().st_size:
        raise ValueError(f"{path}: array {key!r} claims shape {tuple(shape)} ({nbytes} bytes) but the file "
                         f"holds {info.compress_size} bytes of it: expected a header that matches its data")
    check_memory(f"{path}: array {key!r} of shape", tuple(shape), 12.0 * nbytes,
                 "the images as int64 and float32")


def read_images(path: Path, channels: int | None = None) -> torch.Tensor:
    """uint8 images from an ``.npz`` file or a folder of image files as int64 ``(N, C, H, W)``.

    ``channels`` (e.g. the model's) settles the layout of an ``.npz`` array and the Pillow mode
    of image files (1: ``L``, 3: ``RGB``); without it files keep their own mode."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.keys())
                key = next((k for k in ("images", "x") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise ValueError(f"{path}: holds arrays {', '.join(keys) or 'none'}: expected one array "
                                     f"or one named 'images' or 'x'")
                _check_npz_member(f.zip, key, path)  # before the array is read
                x = f[key]
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable .npz file ({err})") from None
        if x.dtype != np.uint8:
            raise ValueError(f"{path}: array {key!r} is {x.dtype}: expected uint8 images")
        x = _channels_first(x, channels, str(path))
    elif path.is_dir():
        from PIL import Image  # only image folders need Pillow

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no image files: expected {', '.join(IMAGE_SUFFIXES)} files")
        mode = {1: "L", 3: "RGB"}.get(channels)
        arrays = []
        for p in files:
            try:
                with Image.open(p) as im:
                    a = np.asarray(im.convert(mode) if mode else im)
            except OSError as err:
                raise ValueError(f"{p}: not a readable image ({err})") from None
            if a.dtype != np.uint8:
                raise ValueError(f"{p}: pixels are {a.dtype}: expected 8-bit images")
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if arrays and a.shape != arrays[0].shape:
                raise ValueError(f"{p}: image of shape {a.shape} (C, H, W): expected {arrays[0].shape} "
                                 f"like {files[0].name}")
            arrays.append(a)
        x = np.stack(arrays)
    else:
        raise ValueError(f"{path}: not found: expected an .npz file of uint8 images or a folder of image files")
    if x.shape[0] < 1:
        raise ValueError(f"{path}: holds no images")
    return torch.from_numpy(np.ascontiguousarray(x).astype(np.int64))
