"""Metrics against closed forms and reference implementations (scipy)."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from scoresde.data.loader import load_dataset
from scoresde.evaluation.metrics import (
    DigitsFeatures,
    digits_frechet,
    feature_statistics,
    frechet_distance,
    random_directions,
    sliced_wasserstein,
    wasserstein_1d,
)


# Wasserstein ----------------------------------------------------------------------------
@pytest.mark.parametrize("n,m", [(50, 50), (37, 80), (1, 9)])
def test_wasserstein_1d_matches_scipy(n, m):
    g = torch.Generator().manual_seed(n * m)
    a, b = torch.randn(n, 3, generator=g), 0.5 + 2 * torch.rand(m, 3, generator=g)
    ours = wasserstein_1d(a, b)
    for p in range(3):
        assert ours[p].item() == pytest.approx(scipy.stats.wasserstein_distance(a[:, p], b[:, p]), rel=1e-10)


def test_wasserstein_1d_equal_sizes_is_mean_sorted_gap():
    """For equal sizes the optimal coupling pairs order statistics: W1 = mean |a_(i) - b_(i)|."""
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    a, b = torch.randn(64, 1, **f64), torch.rand(64, 1, **f64)
    expected = (a.sort(0).values - b.sort(0).values).abs().mean()
    assert wasserstein_1d(a, b).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("dim", [2, 5])
def test_sliced_w1_of_a_shift(dim):
    """y = x + δu: each projection is a shift by δ u·θ, whose W1 is |δ u·θ| exactly, so
    SW1 = |δ| mean_θ |u·θ| for the directions drawn (same generator seed)."""
    x = torch.randn(300, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.zeros(dim, dtype=torch.float64)
    u[0] = 1.0
    delta = 0.7
    sw = sliced_wasserstein(x, x + delta * u, n_projections=64, generator=torch.Generator().manual_seed(5))
    theta = random_directions(dim, 64, torch.Generator().manual_seed(5))
    assert sw == pytest.approx(delta * (theta @ u).abs().mean().item(), rel=1e-10)


@pytest.mark.parametrize("dim", [2, 5])
def test_sliced_w1_of_a_shift_in_expectation(dim):
    """Over uniform directions E|θ₁| = Γ(d/2) / (√π Γ((d+1)/2)) (2/π in 2-D); with P = 5000
    directions the standard error is std|θ₁|/√P ≤ 0.6/√P."""
    x = torch.randn(100, dim, generator=torch.Generator().manual_seed(2))
    shift = torch.zeros(dim)
    shift[0] = -1.5
    sw = sliced_wasserstein(x, x + shift, n_projections=5000, generator=torch.Generator().manual_seed(3))
    e_abs_cos = math.gamma(dim / 2) / (math.sqrt(math.pi) * math.gamma((dim + 1) / 2))
    assert abs(sw - 1.5 * e_abs_cos) < 5 * 1.5 * 0.6 / math.sqrt(5000)  # 5 standard errors


def test_sliced_w1_zero_for_the_same_empirical_distribution():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(100)]) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-12)  # unequal sizes


def test_sliced_w1_scales_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    x, y = torch.randn(80, 3, **f64), torch.rand(120, 3, **f64)

    def sw(a, b):
        return sliced_wasserstein(a, b, n_projections=32, generator=torch.Generator().manual_seed(9))

    assert sw(-2.5 * x, -2.5 * y) == pytest.approx(2.5 * sw(x, y), rel=1e-10)
    assert sw(x, y) == pytest.approx(sw(y, x), rel=1e-12)
    assert sw(x, y) > 0.1


def test_sliced_w1_flattens_images_and_rejects_mismatch():
    x = torch.randn(10, 1, 2, 2)
    assert sliced_wasserstein(x, x.reshape(10, 4)) == 0.0
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 2), n_projections=0)


# Fréchet distance -----------------------------------------------------------------------
def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_diagonal_closed_form():
    """Diagonal covariances: FD = ‖μ₁ - μ₂‖² + Σ (√a_i - √b_i)²."""
    rng = np.random.default_rng(0)
    mu1, mu2, a, b = rng.normal(size=4), rng.normal(size=4), rng.uniform(0.1, 2, 4), rng.uniform(0.1, 2, 4)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_commuting_closed_form():
    """Commuting covariances Q diag(a) Qᵀ, Q diag(b) Qᵀ: the same as the diagonal case."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    mu = rng.normal(size=5)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    fd = frechet_distance(mu, (q * a) @ q.T, mu, (q * b) @ q.T)
    assert fd == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    c1, c2 = _random_spd(rng, 6), _random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    root = scipy.linalg.sqrtm(c1 @ c2).real  # tr √(Σ₁Σ₂) = tr √(Σ₁^½ Σ₂ Σ₁^½)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-8)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_1d_and_bad_shapes():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)  # (Δμ)² + (Δσ)²
    with pytest.raises(ValueError, match="expected"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# Digits Fréchet distance ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("digits_features")


@pytest.fixture(scope="module")
def features(cache_dir):
    return DigitsFeatures(cache_dir=cache_dir, seed=0)


def test_digits_classifier_is_accurate(features):
    assert features.accuracy("test") >= 0.9


def test_digits_frechet_floor_and_extremes(features):
    test, train = load_dataset("digits", "test").x, load_dataset("digits", "train").x
    same = digits_frechet(test, features=features)
    assert same["fd"] == pytest.approx(0.0, abs=1e-6)  # identical statistics
    assert digits_frechet(train, features=features)["fd"] == pytest.approx(same["floor"], rel=1e-12)
    assert same["floor"] > 0
    noise = torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert digits_frechet(noise, features=features)["fd"] > 20 * same["floor"]
    blurred = (train[:360] + 0.3 * torch.randn(360, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    fd_blur = digits_frechet(blurred, features=features)["fd"]
    assert same["floor"] < fd_blur < digits_frechet(noise, features=features)["fd"]


def test_digits_features_cache_roundtrip(features, cache_dir):
    path = cache_dir / "digits_features_seed0.safetensors"
    assert path.is_file()
    x = load_dataset("digits", "test").x[:20]
    loaded = DigitsFeatures(cache_dir=cache_dir, seed=0)
    assert torch.equal(loaded.features(x), features.features(x))


def test_digits_features_reject_bad_input(features):
    with pytest.raises(ValueError, match="8, 8"):
        features.features(torch.zeros(3, 1, 28, 28))
    with pytest.raises(ValueError, match="finite"):
        features.features(torch.full((3, 1, 8, 8), float("nan")))


@pytest.mark.slow
def test_digits_features_deterministic(features, tmp_path):
    """Training again with the same seed (no cache) gives bitwise the same network."""
    again = DigitsFeatures(seed=0)
    x = load_dataset("digits", "test").x
    assert torch.equal(again.features(x), features.features(x))
    stats = feature_statistics(again.features(x).numpy())
    assert stats[0].shape == (DigitsFeatures.FEATURES,)
