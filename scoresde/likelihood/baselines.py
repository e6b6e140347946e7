"""A classical density baseline for bits/dim: scikit-learn's ``GaussianMixture`` on dequantized data.

The mixture is fitted to ``copies`` uniformly dequantized copies of the training set in model
space ``z = 2(k + u)/L - 1`` (several copies smooth the fit: one copy lets full covariances
collapse onto the data's 17-level lattice) and scored on ``n_dequant`` dequantized draws of
the test set. Bits/dim use the same bound and offset as :func:`scoresde.likelihood.ode.bits_per_dim`
(:mod:`scoresde.core.bpd`; docs/math.md, "Bits per dimension"): ``bpd = -E_u[log p_z(z)]/(D ln 2) - log₂(2/L)``.
"""

from __future__ import annotations

import torch

from scoresde.core.bpd import BpdResult, bpd_offset, check_int_data, dequantize, nats_to_bpd, summarize
from scoresde.util.checks import check_choice, check_int

__all__ = ["gmm_bits_per_dim", "COVARIANCE_TYPES"]

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


def gmm_bits_per_dim(train_int: torch.Tensor, test_int: torch.Tensor, levels: int, *,
                     n_components: int = 50, covariance_type: str = "diag", copies: int = 20,
                     n_dequant: int = 10, seed: int = 0, reg_covar: float = 1e-6) -> BpdResult:
    """Test bits/dim of a ``GaussianMixture`` fitted to dequantized training data.

    Args:
        train_int, test_int: ``(N, *dims)`` integers in ``0..levels-1`` (same ``dims``), on any
            device (scikit-learn works on the CPU: they are copied there).
        levels: ``L``, levels per dimension (17 for digits).
        n_components, covariance_type, reg_covar: passed to ``sklearn.mixture.GaussianMixture``.
        copies: dequantized copies of the training set the mixture is fitted to.
        n_dequant: dequantization draws per test example (averaged per example).
        seed: seeds the dequantization noise and scikit-learn's initialisation.

    Returns a :class:`~scoresde.core.bpd.BpdResult`: mean test bits/dim, its standard error
    over test examples, ``nfe = 0`` and per-example bits/dim; ``info`` holds the fit's
    training bits/dim and the offset.
    """
    from sklearn.mixture import GaussianMixture  # heavy import, only here

    dim = check_int_data(train_int, levels)
    train_int, test_int = train_int.cpu(), test_int.cpu()  # scikit-learn works on the CPU
    if check_int_data(test_int, levels) != dim or train_int.shape[1:] != test_int.shape[1:]:
        raise ValueError(f"test_int has shape {tuple(test_int.shape)}: expected (N, "
                         f"*{tuple(train_int.shape[1:])}) like train_int")
    n_components = check_int("n_components", n_components)
    copies, n_dequant = check_int("copies", copies), check_int("n_dequant", n_dequant)
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    z_train = torch.cat([dequantize(train_int, levels, generator=g) for _ in range(copies)])
    gmm = GaussianMixture(n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                          random_state=int(seed))
    gmm.fit(z_train.flatten(1).numpy())
    offset = bpd_offset(levels)
    values = torch.empty((n_dequant, test_int.shape[0]), dtype=torch.float64, device="cpu")
    for r in range(n_dequant):
        z = dequantize(test_int, levels, generator=g).flatten(1).numpy()
        values[r] = nats_to_bpd(-torch.from_numpy(gmm.score_samples(z)), dim) + offset
    bpd, stderr = summarize(values)
    train_bpd = float(nats_to_bpd(-torch.tensor(gmm.score(z_train.flatten(1).numpy()), device="cpu"), dim)) + offset
    return BpdResult(bpd, stderr, 0, values.mean(0), info={"train_bpd": train_bpd, "offset": offset})
