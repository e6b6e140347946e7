"""The pieces of benchmarks/likelihood_tolerance.py (issue 26, item 5) against exact answers.

The benchmark compares the solver error of the ODE bits/dim with the spread of a one-probe
Hutchinson estimate; its conversions and its verdict are checked on hand-made numbers, and its
probes' path (the evaluation's dequantized points, then :func:`log_likelihood`) against the
evaluation's own :func:`ode_bpd`, which it must reproduce exactly.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.evaluation.bpd_eval import EvalSettings, ode_bpd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_likelihood_tolerance",
                                                  ROOT / "benchmarks" / "likelihood_tolerance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_solver_error_is_mean_max_bias_and_its_bound(bench):
    per = torch.tensor([1.0, 2.0, 3.5])
    ref = torch.tensor([1.5, 2.0, 3.0])  # differences -0.5, 0, +0.5: std 0.5
    assert bench.solver_error(per, ref) == (pytest.approx(1 / 3), 0.5, 0.0, pytest.approx(2 * 0.5 / math.sqrt(3)))
    mean_err, max_err, bias, bound = bench.solver_error(per + 0.25, ref)  # differences -0.25, 0.25, 0.75
    assert (mean_err, max_err, bias, bound) == (pytest.approx(1.25 / 3), 0.75, pytest.approx(0.25),
                                                pytest.approx(0.25 + 2 * 0.5 / math.sqrt(3)))


def test_one_probe_std_is_the_sample_std_over_probes_in_bits_per_dim(bench):
    g = torch.Generator().manual_seed(0)
    values = torch.randn((8, 5), generator=g, dtype=torch.float64) * 3  # nats, 8 probes × 5 examples
    stderr = values.std(0) / math.sqrt(8)  # what log_likelihood reports
    torch.testing.assert_close(bench.one_probe_std(stderr, 8, 64), values.std(0) / (64 * math.log(2)),
                               rtol=1e-12, atol=0)


def test_mean_se_is_the_rms_over_root_n(bench):
    assert bench.mean_se(torch.tensor([3.0, 4.0]), 2) == pytest.approx(math.sqrt(12.5) / math.sqrt(2))
    assert bench.mean_se(torch.full((10,), 0.6), 360) == pytest.approx(0.6 / math.sqrt(360))


def test_loosest_enough_needs_both_margins(bench):
    rows = [(1e-3, 2e-3, 1e-4), (1e-4, 5e-4, 2e-5), (1e-5, 1e-5, 1e-6)]
    assert bench.loosest_enough(rows, probe_std=0.1, test_se=0.005, factor=10) == 1e-3
    assert bench.loosest_enough(rows, probe_std=0.1, test_se=5e-4, factor=10) == 1e-4  # 1e-3: 1e-4·10 > 5e-4
    assert bench.loosest_enough(rows, probe_std=0.004, test_se=0.005, factor=10) == 1e-5  # per-example margin
    assert bench.loosest_enough(rows, probe_std=1e-5, test_se=1e-6, factor=10) is None


def test_probe_path_reproduces_the_evaluations_bits_per_dim(bench):
    """One probe on the benchmark's dequantized points gives ode_bpd's per-example figures exactly."""
    gm = GaussianMixture.random(2, 3, seed=1, sde=VPSDE.linear())
    x_int = torch.randint(0, 5, (6, 2), generator=torch.Generator().manual_seed(2))
    s = EvalSettings(limit=6, rtol=1e-3, atol=1e-3, seed=7)
    bpd, stderr, _ = bench.probes_solve(gm, x_int, 5, s, 1, 1e-3, 1e-5)
    assert stderr is None
    torch.testing.assert_close(bpd, ode_bpd(gm, x_int, 5, s).per_sample, rtol=0, atol=1e-12)
    many, stderr, _ = bench.probes_solve(gm, x_int, 5, s, 4, 1e-3, 1e-5)
    assert stderr.shape == (6,) and bool((stderr > 0).any())  # in 2-D some examples' 4 probes may agree


def test_eval_default_tolerances_are_the_measured_ones():
    """``eval.rtol = eval.atol = 1e-4`` (and :class:`EvalSettings`' mirror): chosen by
    ``benchmarks/likelihood_tolerance.py --ckpt <default digits run> --n 128`` (docs/benchmarks.md,
    "Default tolerances vs the Hutchinson error on digits"): at 1e-4 the solver error is 238× below
    the one-probe Hutchinson std per example, its worst example 24× below the smallest std and the
    test-set mean's error 33× below the one-probe SE, at 116 NFE against 1e-5's 326; at 1e-3 the worst
    example is only 4× below. Change it only with a new measurement."""
    from scoresde.training.config import Config

    cfg = Config()
    assert (cfg.eval.rtol, cfg.eval.atol) == (1e-4, 1e-4)
    assert (EvalSettings().rtol, EvalSettings().atol) == (1e-4, 1e-4)
    settings = EvalSettings.from_config(cfg)
    assert (settings.rtol, settings.atol) == (1e-4, 1e-4)
