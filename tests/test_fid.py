"""Inception FID / KID (scoresde.evaluation.fid) through a feature extractor of random weights with
Inception's shapes: the Fréchet distance against a scipy ``sqrtm`` transcription, KID against its
unbiased MMD² formula written out pair by pair, the streamed statistics against numpy's, the
reference cache, and sampling end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.data.loader import Dataset, load_dataset
from scoresde.evaluation import fid as F
from scoresde.training.build import build_model
from scoresde.training.config import config_from_dict

from .train_util import TINY_DIGITS


def _images(n, seed, shift=0.0, channels=3, size=8):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(n, channels, size, size, generator=g) + shift).clamp(-1, 1)


def _features(x, extractor):
    return extractor(F.to_uint8(x)).numpy()


def test_to_uint8_rounds_the_bin_centres_and_repeats_grey():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 7.0]).view(1, 1, 1, 6)
    u = F.to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 1, 6)
    assert u[0, :, 0].tolist() == [[0, 0, 128, 191, 255, 255]] * 3  # round(127.5 (x+1)), half to even
    levels = torch.arange(256, dtype=torch.float64)  # cifar10's bin centres (k + ½)/128 - 1 ... exact?
    centres = (2 * levels + 1) / 256 - 1
    assert F.to_uint8(centres.float().view(1, 1, 16, 16).expand(1, 3, 16, 16)).flatten()[:256].tolist() \
        == list(range(256))
    with pytest.raises(ValueError, match=r"expected \(N, 1 or 3, H, W\)"):
        F.to_uint8(torch.zeros(2, 2, 4, 4))


def test_random_features_have_inceptions_shapes_and_are_seeded():
    net = F.RandomFeatures()
    u = F.to_uint8(_images(5, 0, size=32))
    f = net(u)
    assert f.shape == (5, 2048) and f.dtype == torch.float64 and net.name == "random2048-seed0"
    assert torch.equal(F.RandomFeatures()(u), f) and not torch.equal(F.RandomFeatures(seed=1)(u), f)
    with pytest.raises(ValueError, match="expected uint8"):
        net(torch.zeros(2, 3, 8, 8))


def test_streamed_statistics_equal_numpys():
    net = F.RandomFeatures(dims=16)
    x = _images(203, 1)
    stats = F.feature_statistics_of((x[i:i + 50] for i in range(0, 203, 50)), net)
    f = np.concatenate([_features(x[i:i + 50], net) for i in range(0, 203, 50)])  # the same float32 batches
    assert stats.n == 203 and stats.pool.shape == (203, 16) and stats.pool.dtype == np.float32
    np.testing.assert_allclose(stats.mu, f.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-12)


def _fid_scipy(mu1, s1, mu2, s2):
    """The FID formula as torch-fidelity / pytorch-fid write it, with scipy's general ``sqrtm``."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_equals_the_scipy_sqrtm_transcription():
    net = F.RandomFeatures(dims=16)
    a = F.feature_statistics_of([_images(300, 2)], net)
    b = F.feature_statistics_of([_images(250, 3, shift=0.2)], net)
    got = F.fid_kid(a, b)
    want = _fid_scipy(a.mu, a.sigma, b.mu, b.sigma)
    assert want > 1e-3 and got["fid"] == pytest.approx(want, rel=1e-7)
    assert (got["fid_n"], got["fid_n_ref"]) == (300, 250)
    assert F.fid_kid(a, a)["fid"] == pytest.approx(0.0, abs=1e-9)


def test_mmd2_unbiased_is_its_formula_pair_by_pair():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.3, 1.2, size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(7), 2)) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(5), 2)) / (5 * 4)
    xy = sum(k(a, b) for a in x for b in y) / (7 * 5)
    assert F.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # subsets as large as both sets: each subset is a permutation, every estimate the same
    mean, std = F.kernel_inception_distance(x[:5], y, subsets=4, subset_size=100)
    assert mean == pytest.approx(F.mmd2_unbiased(x[:5], y), rel=1e-12) and std < 1e-12


def test_kid_of_one_distribution_is_zero_within_its_spread():
    """Unbiased: for two samples of one distribution E[MMD²] = 0. 40 subset pairs of 100 Gaussian
    features; the mean of independent-enough estimates lies within 4 standard errors of 0."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    mean, std = F.kernel_inception_distance(a, b, subsets=40, subset_size=100, seed=3)
    assert abs(mean) < 4 * std / np.sqrt(40)
    far, _ = F.kernel_inception_distance(a, b + 0.5, subsets=40, subset_size=100, seed=3)
    assert far > 10 * std


class _Counting:
    def __init__(self, net):
        self.net, self.name, self.dims, self.images = net, net.name, net.dims, 0

    def __call__(self, u):
        self.images += u.shape[0]
        return self.net(u)


def test_reference_statistics_are_cached_by_data_and_extractor(tmp_path):
    data = load_dataset("digits", "train")
    net = _Counting(F.RandomFeatures(dims=32))
    first = F.reference_statistics(data, net, cache_dir=tmp_path, batch_size=500)
    path = tmp_path / f"fid_reference_digits_{net.name}.npz"
    assert path.is_file() and net.images == data.x.shape[0] and first.n == data.x.shape[0]
    again = F.reference_statistics(data, net, cache_dir=tmp_path)
    assert net.images == data.x.shape[0]  # read from the cache
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)
    assert np.array_equal(again.pool, first.pool)
    other = _Counting(F.RandomFeatures(dims=32, seed=1))  # another extractor: its own file
    F.reference_statistics(data, other, cache_dir=tmp_path)
    assert other.images == data.x.shape[0] and (tmp_path / f"fid_reference_digits_{other.name}.npz").is_file()
    changed = Dataset("digits", data.x.flip(0), None, None, data.shape, None)  # same name, other data
    F.reference_statistics(changed, net, cache_dir=tmp_path)
    assert net.images == 2 * data.x.shape[0]
    path.write_bytes(b"not an npz")  # damaged: computed again and replaced
    F.reference_statistics(data, net, cache_dir=tmp_path)
    assert net.images == 3 * data.x.shape[0] and np.array_equal(
        F.reference_statistics(data, net, cache_dir=tmp_path).mu, first.mu)


def test_sample_fid_end_to_end_on_a_tiny_digits_model(tmp_path):
    cfg = config_from_dict(TINY_DIGITS)
    torch.manual_seed(0)
    model = build_model(cfg).eval().requires_grad_(False)
    data = load_dataset("digits", "train")
    net = F.RandomFeatures(dims=64)
    out = F.sample_fid(model, data, n=30, sampler="ddim", steps=3, seed=0, device="cpu", extractor=net,
                       batch_size=16, cache_dir=tmp_path)
    assert out["fid_n"] == 30 and out["fid_n_ref"] == data.x.shape[0] and out["nfe"] == 3
    assert np.isfinite(out["fid"]) and out["fid"] > 0 and np.isfinite(out["kid"])
    again = F.sample_fid(model, data, n=30, sampler="ddim", steps=3, seed=0, device="cpu", extractor=net,
                         batch_size=16, cache_dir=tmp_path)
    assert again == out  # seeded batches, cached reference
    with pytest.raises(ValueError, match="expected the model's"):
        F.sample_fid(model, load_dataset("ring", "train", n=64), n=4, sampler="ddim", steps=2, seed=0,
                     device="cpu", extractor=net)


def test_the_inception_path_names_the_extra_when_it_cannot_load():
    why = F.inception_missing()
    if why is None:  # torch-fidelity importable here: the real extractor is built
        pytest.skip("torch-fidelity is installed; its weights are not downloaded in tests")
    assert why.startswith("torch-fidelity's Inception cannot be imported") and '".[fid]"' in why
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[fid\]\""):
        F.default_extractor()
