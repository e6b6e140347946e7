"""The shared homes at the bottom of the stack: argument checks, choice names, the time inversions,
the data-set table and the bits/dim scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scoresde import VPSDE, DiscreteSchedule, GaussianMixture
from scoresde.core.bpd import bpd_offset, dequantize, to_model_space
from scoresde.data.table import DATASETS, dataset_info
from scoresde.likelihood.ode import log_likelihood
from scoresde.samplers import SAMPLERS, sample
from scoresde.util import choices
from scoresde.util.checks import check_choice, check_int, check_number, check_shape, check_t_eps


@pytest.mark.parametrize("value", [0, -3, 2.0, 2.5, True, "3", None])
def test_check_int_refuses_non_integers_and_small_values(value):
    with pytest.raises(ValueError, match=rf"^n={value!r}: expected an integer ≥ 1$".replace("(", r"\(")):
        check_int("n", value)


def test_check_int_accepts_integers_and_flags_read_as_flags():
    assert check_int("n", np.int64(3)) == 3 and check_int("n", 0, 0) == 0
    assert check_int("n", None, none_ok=True) is None
    with pytest.raises(ValueError, match=r"^--steps 0: expected an integer ≥ 1$"):
        check_int("--steps", 0)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -1e-9, True, "1e-5", None])
def test_check_number_refuses_non_finite_and_out_of_range(value):
    with pytest.raises(ValueError, match="rtol=.*: expected a finite number > 0"):
        check_number("rtol", value, low=0)


def test_check_number_bounds():
    assert check_number("eta", 0, low=0, high=1, low_closed=True, high_closed=True) == 0.0
    assert check_number("eta", 1, low=0, high=1, low_closed=True, high_closed=True) == 1.0
    with pytest.raises(ValueError, match=r"eta=1.5: expected a number in \[0, 1\]"):
        check_number("eta", 1.5, low=0, high=1, low_closed=True, high_closed=True)
    with pytest.raises(ValueError, match=r"t_eps=1: expected a number in \(0, 1\)"):
        check_t_eps(1)
    assert check_t_eps(None, VPSDE.ddpm(50)) == 1 / 50


def test_check_choice_and_shape():
    assert check_choice("spacing", "logsnr", choices.SPACINGS) == "logsnr"
    with pytest.raises(ValueError, match="spacing='log_snr': expected one of uniform, quadratic, logsnr, karras"):
        check_choice("spacing", "log_snr", choices.SPACINGS)
    with pytest.raises(ValueError, match="order=True: expected one of 1, 2, 3"):
        check_choice("order", True, (1, 2, 3))
    assert check_shape("shape", [1, 8, 8]) == (1, 8, 8)
    for bad in ((), (2, 0), 3, (2.5,)):
        with pytest.raises(ValueError, match="expected a tuple of positive integers"):
            check_shape("shape", bad)


@pytest.mark.parametrize("tol", [math.inf, math.nan, 0.0])
def test_solver_tolerances_must_be_finite_and_positive(tol):
    gm = GaussianMixture.ring()
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="rtol=.*: expected a finite number > 0"):
        log_likelihood(gm, x, rtol=tol)
    with pytest.raises(ValueError, match="atol=.*: expected a finite number > 0"):
        sample(gm, "ode", x, steps=1, atol=tol)


def test_the_sampler_table_and_the_choice_names_agree():
    assert tuple(sorted(SAMPLERS)) == choices.SAMPLERS


@pytest.mark.parametrize("sde", [VPSDE.linear(), VPSDE.cosine(), VPSDE.ddpm(), VPSDE(DiscreteSchedule.ddpm_cosine(50))],
                         ids=["linear", "cosine", "ddpm", "ddpm-cosine"])
def test_time_inversions_invert_the_sde(sde):
    """``t(B(t)) = t`` and ``t(λ(t)) = t`` on every schedule (float64, to ~1e-12)."""
    t = torch.linspace(1e-4, 1.0, 257, dtype=torch.float64)
    torch.testing.assert_close(sde.time_for_integrated_beta(sde.integrated_beta(t)), t, rtol=0, atol=1e-12)
    torch.testing.assert_close(sde.time_for_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-10)


def test_dataset_table_matches_the_loaded_data():
    from scoresde.data.loader import load_dataset

    for name in ("digits", "ring"):
        info, data = dataset_info(name), load_dataset(name, "test", n=50)
        assert data.shape == info.shape and data.levels == info.levels
    assert DATASETS["cifar10"].shape == (3, 32, 32) and DATASETS["mnist"].levels == 256
    with pytest.raises(ValueError, match="dataset='svhn': expected one of ring, moons"):
        dataset_info("svhn")


def test_bits_per_dim_scaling():
    """Bins of width 2/L tile [-1, 1]: centres at (2k+1)/L - 1, dequantized points inside their
    bin, and the offset -log2(2/L) (7 bits for 8-bit data)."""
    k = torch.arange(17)[None]
    centres = to_model_space(k, 17, dtype=torch.float64)
    torch.testing.assert_close(centres, (2 * k.double() + 1) / 17 - 1)
    z = dequantize(k.expand(1000, 17), 17, generator=torch.Generator().manual_seed(0))
    assert bool(((z >= 2 * k / 17 - 1) & (z < 2 * (k + 1) / 17 - 1)).all())
    assert bpd_offset(256) == 7.0 and math.isclose(bpd_offset(17), math.log2(17) - 1)
