"""Data: toy sets, digits' fixed split, MNIST/CIFAR-10 readers on tiny generated files, errors."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from scoresde.data.files import CIFAR10_FILES, MNIST_FILES
from scoresde.data.loader import DATASET_NAMES, Dataset, load_dataset, to_model_space, toy_oracle

TOY = ["ring", "moons", "swissroll", "checkerboard"]


# Toy sets ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TOY)
def test_toy_shapes_and_determinism(name):
    tr, te = load_dataset(name, "train", n=500), load_dataset(name, "test")
    assert tr.x.shape == (500, 2) and te.x.shape == (2000, 2) and tr.shape == (2,)
    assert tr.x.dtype == torch.float32 and tr.x_int is None and tr.levels is None
    assert torch.equal(tr.x, load_dataset(name, "train", n=500).x)  # same (seed, split): same draw
    assert not torch.equal(tr.x, te.x[:500])  # train and test are independent draws
    assert not torch.equal(tr.x, load_dataset(name, "train", n=500, seed=1).x)
    assert tr.x.abs().max() < 1.5  # "roughly [-1, 1]"


def test_toy_default_sizes():
    assert len(load_dataset("moons")) == 10000


def test_ring_is_the_oracle():
    """E|x|² = r² + D s² = 1 + 2·0.01 for the oracle's ring; per-sample |x|² has std
    ≈ 2 r s = 0.2 (to first order), so over n = 10000 the standard error is 0.002."""
    d = load_dataset("ring")
    mean_sq = (d.x.double() ** 2).sum(1).mean().item()
    assert abs(mean_sq - 1.02) < 5 * 0.2 / 100  # 5 standard errors
    oracle = toy_oracle("ring")
    centre = oracle.means[d.labels]  # labels are the oracle's components
    assert ((d.x.double() - centre) ** 2).sum(1).max() < (5 * 0.1) ** 2 * 2  # within 5σ per axis
    with pytest.raises(ValueError, match="ring"):
        toy_oracle("moons")


def test_checkerboard_only_black_cells():
    d = load_dataset("checkerboard", n=2000)
    cell = torch.floor((d.x.double() + 1) * 2).long()  # 4×4 board on [-1, 1]²
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    black = torch.tensor([i * 4 + j for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    assert torch.equal(black[d.labels], cell[:, 0] * 4 + cell[:, 1])  # label = the black cell's rank
    assert torch.equal(torch.unique(d.labels), torch.arange(8))


def test_moons_lie_near_their_arcs():
    d = load_dataset("moons", n=2000)
    x = d.x.double() * 1.5 + torch.tensor([0.5, 0.25], dtype=torch.float64)  # undo the scaling
    centre = torch.where(d.labels[:, None] == 0, torch.tensor([0.0, 0.0], dtype=torch.float64),
                         torch.tensor([1.0, 0.5], dtype=torch.float64))
    radius = (x - centre).norm(dim=1)
    assert (radius - 1).abs().max() < 6 * 0.05  # noise std 0.05 per axis


# Digits ---------------------------------------------------------------------------------
def test_digits_fixed_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(tr) == 1437 and len(te) == 360 and tr.shape == (1, 8, 8) and tr.levels == 17
    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(digits.images, digits.target, test_size=0.2, random_state=0)
    assert np.array_equal(tr.x_int[:, 0].numpy(), x_tr) and np.array_equal(te.labels.numpy(), y_te)
    assert tr.x_int.dtype == torch.int64 and tr.labels.dtype == torch.int64
    assert torch.equal(tr.x, to_model_space(tr.x_int, 17))
    assert tr.x.min() >= -1 and tr.x.max() <= 1
    assert len(load_dataset("digits", n=10)) == 10


# MNIST ----------------------------------------------------------------------------------
def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _mnist_folder(folder, n=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (img_name, lab_name) in MNIST_FILES.items():
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _write_idx(folder / img_name, images, gz)
        _write_idx(folder / lab_name, labels, gz)
        arrays[split] = images, labels
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_reads_idx_files_exactly(tmp_path, gz, split):
    images, labels = _mnist_folder(tmp_path, gz=gz)[split]
    d = load_dataset("mnist", split, root=tmp_path)
    assert d.shape == (1, 28, 28) and d.levels == 256
    assert np.array_equal(d.x_int[:, 0].numpy(), images) and np.array_equal(d.labels.numpy(), labels)
    assert torch.equal(d.x, to_model_space(d.x_int, 256))
    assert len(load_dataset("mnist", split, root=tmp_path, n=2)) == 2


def test_mnist_torchvision_layout(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    images, _ = _mnist_folder(tmp_path / "MNIST" / "raw")["train"]
    assert np.array_equal(load_dataset("mnist", root=tmp_path).x_int[:, 0].numpy(), images)


def test_mnist_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*" + str(tmp_path)):
        load_dataset("mnist", "test", root=tmp_path)


@pytest.mark.parametrize("corruption", ["magic", "truncated", "gzip"])
def test_mnist_corrupt_file_named(tmp_path, corruption):
    _mnist_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    if corruption == "magic":
        path.write_bytes(b"\x00\x00\x0d\x03" + raw[4:])
    elif corruption == "truncated":
        path.write_bytes(raw[:-7])
    else:
        path.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)


# CIFAR-10 -------------------------------------------------------------------------------
def _cifar_folder(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, names in CIFAR10_FILES.items():
        data, labels = [], []
        for name in names:
            d, lab = rng.integers(0, 256, (n, 3072)).astype(np.uint8), rng.integers(0, 10, n).tolist()
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": d, b"labels": lab, b"batch_label": b"x"}, f)
            data.append(d)
            labels += lab
        arrays[split] = np.concatenate(data), np.array(labels)
    return arrays


@pytest.mark.parametrize("layout", ["cifar-10-batches-py", "."])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_reads_pickles_exactly(tmp_path, layout, split):
    data, labels = _cifar_folder(tmp_path / layout)[split]
    d = load_dataset("cifar10", split, root=tmp_path)
    assert d.shape == (3, 32, 32) and d.levels == 256 and len(d) == len(labels)
    assert np.array_equal(d.labels.numpy(), labels)
    # Pixel (c, i, j) of image k is byte c·1024 + 32 i + j of row k (R, G, B planes, row-major).
    k, c, i, j = len(labels) - 1, 2, 5, 31
    assert d.x_int[k, c, i, j].item() == data[k, c * 1024 + 32 * i + j]
    assert np.array_equal(d.x_int.reshape(len(labels), -1).numpy(), data)


def test_cifar10_n_reads_only_what_it_needs(tmp_path):
    _cifar_folder(tmp_path)
    (tmp_path / "data_batch_5").write_bytes(b"garbage")  # never opened when n ≤ 3
    assert len(load_dataset("cifar10", root=tmp_path, n=3)) == 3


def test_cifar10_missing_files_named(tmp_path):
    _cifar_folder(tmp_path)
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4.*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content", [b"garbage", pickle.dumps({b"data": 1}), pickle.dumps(_Evil()),
                                     pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]})])
def test_cifar10_corrupt_or_hostile_file_named(tmp_path, content):
    _cifar_folder(tmp_path)
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", "test", root=tmp_path)


# Bad input ------------------------------------------------------------------------------
def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="cifar10") as err:
        load_dataset("imagenet")
    assert all(name in str(err.value) for name in DATASET_NAMES)


def test_dataset_checks_its_fields():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="labels"):
        Dataset("toy", x, None, None, (2,), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="expected"):
        Dataset("toy", x, None, None, (3,), None)
    with pytest.raises(ValueError, match="levels"):
        Dataset("toy", x, torch.zeros(3, 2, dtype=torch.int64), None, (2,), None)


@pytest.mark.parametrize("kwargs", [dict(split="val"), dict(n=0), dict(n=2.5)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        load_dataset("moons", **kwargs)
