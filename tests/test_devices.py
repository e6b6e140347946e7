"""Every entry point on any device.

CI has no GPU, so the first test catches device bugs on a CPU: PyTorch's default device is set
to ``meta`` while the model and the data live explicitly on ``cpu``. Any tensor the library
creates without naming its device then lands on ``meta`` and collides with the real ones
("Expected all tensors to be on the same device", or a meta tensor where a number is read),
exactly where a GPU run would mix a CPU tensor into CUDA data. The path is the user's: a tiny
training run with its final report (samples, metric, ODE and VLB bits/dim), every sampler,
the likelihood with both traces, the bound on both grids, the losses, metrics and baseline,
``python -m scoresde.evaluate`` and ``python -m scoresde.sample``.

The second test runs the same path on each available device (``cpu``, and ``cuda`` where there
is one), with generators on the CPU and on the data's device.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from scoresde import GaussianMixture
from scoresde.core.analytic import GaussianMixture as _GM  # noqa: F401 - the oracle's module imports cleanly
from scoresde.core.losses import dsm_loss
from scoresde.core.model import model_device
from scoresde.core.sde import VPSDE
from scoresde.data.loader import dequantize, load_dataset, to_model_space
from scoresde.evaluate import main as evaluate_main
from scoresde.evaluation.bpd_eval import EvalSettings, evaluate_likelihood
from scoresde.evaluation.metrics import digits_frechet, sliced_wasserstein
from scoresde.likelihood.baselines import gmm_bits_per_dim
from scoresde.likelihood.ode import bits_per_dim, log_likelihood
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.likelihood.vlb_grid import grid_vlb_bits_per_dim
from scoresde.sample import main as sample_main
from scoresde.samplers import SAMPLERS, sample
from scoresde.samplers.ode import encode
from scoresde.train import main as train_main
from scoresde.training.checkpoint import load_run

from .train_util import TINY_DIGITS, write_config

ROOT = Path(__file__).resolve().parents[1]

# A tiny digits run whose final report computes every figure: samples, Fréchet distance, ODE
# bits/dim from σ = 0.035 and the bound on a log-SNR grid.
RUN = dict(TINY_DIGITS, model={"kind": "mlp", "hidden": 32, "depth": 1, "time_dim": 16})
RUN_EVAL = {"bpd": True, "vlb": True, "bpd_n": 2, "ode_sigma": 0.035, "vlb_sigma": 0.02,
            "vlb_steps": 20, "vlb_terms": 4, "batch_size": 4, "rtol": 1e-2, "atol": 1e-2}
FAST_ODE = {"method": "euler", "steps": 3}  # the report's own solve above is adaptive (dopri5)


@pytest.fixture
def meta_default_device():
    """PyTorch's default device is ``meta`` for the test; the previous default is restored after."""
    previous = torch.get_default_device()
    threads = torch.get_num_threads()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(previous)
        torch.set_num_threads(threads)


def _train(tmp_path, device: str):
    cfg = write_config(tmp_path / "c.yaml", RUN, device=device, sample={"n": 4, "sampler": "ddim", "steps": 3},
                       eval=RUN_EVAL)
    assert train_main(["--config", cfg, "--out", tmp_path / "run"]) == 0
    return tmp_path / "run"


def _end_to_end(tmp_path, device: str, generator_device: str) -> None:
    dev = torch.device(device)
    run_dir = _train(tmp_path, device)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("bpd_ode", "bpd_vlb", "fd"):
        assert math.isfinite(summary[key]), (key, summary)

    model = load_run(run_dir, device=dev).model
    test = load_dataset("digits", "test")
    x_int = test.x_int[:2].to(dev)

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=generator_device).manual_seed(seed)

    # Every sampler, from a prior draw on the data's device.
    x_T = model.sde.prior_sample((2, 1, 8, 8), generator=gen(0), device=dev)
    assert x_T.device.type == dev.type
    for name in sorted(SAMPLERS):
        res = sample(model, name, x_T, steps=3, generator=gen(1))
        assert res.x.device.type == dev.type and res.x.shape == x_T.shape, name
        assert torch.isfinite(res.x).all(), name
    z = encode(model, to_model_space(x_int, 17).to(dev), **FAST_ODE)
    assert z.x.device.type == dev.type

    # The likelihood: both traces, both probe kinds, bits/dim, the bound on both grids.
    x = dequantize(x_int, 17, generator=gen(2))
    assert x.device.type == dev.type
    for trace, probe in (("exact", "rademacher"), ("hutchinson", "rademacher"), ("hutchinson", "gaussian")):
        r = log_likelihood(model, x, trace=trace, probe=probe, n_probes=2, generator=gen(3), **FAST_ODE)
        assert r.log_prob.device.type == dev.type and torch.isfinite(r.log_prob).all()
    assert math.isfinite(bits_per_dim(model, x_int, 17, generator=gen(4), **FAST_ODE).bpd)
    for n_terms in (None, 3):
        v = ddpm_vlb_bits_per_dim(model, x_int, 17, n_terms=n_terms, N=10, generator=gen(5))
        assert torch.isfinite(v.per_sample).all()
    g = grid_vlb_bits_per_dim(model, x_int, 17, t_eps=0.01, N=10, n_terms=3, generator=gen(6))
    assert torch.isfinite(g.per_sample).all()
    rep = evaluate_likelihood(model, test, EvalSettings(limit=2, rtol=0.1, atol=0.1, vlb_terms=3,
                                                        vlb_steps=10, vlb_sigma=0.02, ode_sigma=0.035))
    assert rep.n == 2 and rep.ode is not None and rep.vlb is not None

    # Losses, on a continuous and a discrete schedule, and the oracle as a model.
    x0 = to_model_space(x_int, 17).to(dev)
    for kw in ({}, {"weighting": "likelihood"}, {"weighting": "likelihood", "time_sampling": "discrete",
                                                  "n_steps": 10}):
        loss = dsm_loss(model, x0, generator=gen(7), **kw)
        assert loss.loss.device.type == dev.type and torch.isfinite(loss.loss)
    oracle = GaussianMixture.ring(sde=VPSDE.ddpm(n_steps=50))
    pts = oracle.sample(8, generator=torch.Generator(device="cpu").manual_seed(0)).to(dev)
    for name in ("ancestral", "dpmpp", "pc"):
        assert sample(oracle, name, torch.randn((4, 2), device=dev), steps=3, generator=gen(8)).x.device.type \
            == dev.type
    assert log_likelihood(oracle, pts, **FAST_ODE).log_prob.device.type == dev.type

    # Metrics and the classical baseline.
    assert sliced_wasserstein(pts, pts.flip(0), generator=gen(9)) >= 0
    assert digits_frechet(test.x[:8].to(dev), cache_dir=run_dir)["fd"] >= 0  # the report's cached features
    base = gmm_bits_per_dim(load_dataset("digits", "train").x_int[:64], test.x_int[:8], 17, n_components=2,
                            copies=2, n_dequant=1)
    assert 0 < base.bpd < 10

    # The programs on the run folder.
    assert evaluate_main(["--ckpt", run_dir, "--bpd", "--vlb", "--device", device, "--rtol", "0.1",
                          "--atol", "0.1"]) == 0
    assert sample_main(["--ckpt", run_dir, "--sampler", "pc", "--n", "2", "--steps", "2",
                        "--device", device, "--out", tmp_path / "s.png"]) == 0


def test_end_to_end_with_meta_as_default_device(tmp_path, meta_default_device):
    """With ``meta`` the default device, no library call may create a tensor without naming
    its device: the whole user path runs on explicit ``cpu`` tensors and CPU generators."""
    _end_to_end(tmp_path, "cpu", "cpu")


@pytest.mark.parametrize("device, generator_device", [
    ("cpu", "cpu"),
    *[pytest.param("cuda", g, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))
      for g in ("cpu", "cuda")],
])
def test_end_to_end_on_each_device(tmp_path, device, generator_device):
    """The same path with model and data on ``device`` and generators on the CPU or on ``device``."""
    threads = torch.get_num_threads()
    try:
        _end_to_end(tmp_path, device, generator_device)
    finally:
        torch.set_num_threads(threads)


def test_gpu_check_helpers(tmp_path):
    """``benchmarks/gpu_check.py`` writes CIFAR-10 pickles that the project's reader accepts and reads
    ``evaluate``'s exact ``figures:`` line (the script itself needs a GPU to be worth its minutes)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    folder = gpu_check.write_synthetic_cifar10(tmp_path / "cifar-10-batches-py", n_per_batch=3)
    for split, n in (("train", 15), ("test", 3)):
        data = load_dataset("cifar10", split, root=folder)
        assert data.x_int.shape == (n, 3, 32, 32) and data.levels == 256
    text = "settings: ...\nfigures: bpd_n=3, bpd_ode=1.9855498986613123, bpd_vlb_nfe=200\n"
    assert gpu_check.figures_line(text) == {"bpd_n": 3.0, "bpd_ode": 1.9855498986613123, "bpd_vlb_nfe": 200.0}


def test_draws_follow_the_generators_stream_and_land_on_the_datas_device():
    """``scoresde.util.rng``: a CPU generator's draw is the CPU stream's (bit for bit), moved to the
    requested device; without a generator the draw is made on the data's device."""
    from scoresde.util import rng

    for draw, ref in ((lambda g, d: rng.randn((5,), generator=g, dtype=torch.float64, device=d),
                       lambda g: torch.randn(5, generator=g, dtype=torch.float64, device="cpu")),
                      (lambda g, d: rng.rand((5,), generator=g, dtype=torch.float64, device=d),
                       lambda g: torch.rand(5, generator=g, dtype=torch.float64, device="cpu")),
                      (lambda g, d: rng.randint(0, 7, (5,), generator=g, device=d),
                       lambda g: torch.randint(0, 7, (5,), generator=g, device="cpu"))):
        expected = ref(torch.Generator(device="cpu").manual_seed(3))
        assert torch.equal(draw(torch.Generator(device="cpu").manual_seed(3), "cpu"), expected)
        moved = draw(torch.Generator(device="cpu").manual_seed(3), "meta")
        assert moved.device.type == "meta" and moved.shape == expected.shape
        assert draw(None, "meta").device.type == "meta"
    assert model_device(torch.nn.Linear(2, 2, device="meta")).type == "meta"
    assert model_device(GaussianMixture.ring()).type == "cpu"  # no parameters: the CPU


def test_evaluation_moves_the_data_it_is_given_to_the_models_device(monkeypatch):
    """The bug a GPU run of the old report hit (CPU test data fed to a CUDA model), checked without
    a GPU: a model whose parameters live on ``meta`` receives its examples on ``meta``."""
    from scoresde.evaluation import bpd_eval as evaluation
    from scoresde.likelihood.ode import BpdResult

    seen = {}

    def spy(name):
        def estimator(model, x_int, levels, **options):
            seen[name] = x_int.device.type
            return BpdResult(2.0, 0.1, 1, torch.zeros(x_int.shape[0], device="cpu"), info={"N": 1, "n_terms": 1})
        return estimator

    monkeypatch.setattr(evaluation, "bits_per_dim", spy("ode"))
    monkeypatch.setattr(evaluation, "ddpm_vlb_bits_per_dim", spy("vlb"))
    net = torch.nn.Linear(64, 64, device="meta")
    model = type("MetaModel", (torch.nn.Module,), {})()
    model.net, model.sde = net, VPSDE.linear()
    test = load_dataset("digits", "test")
    assert test.x_int.device.type == "cpu"
    report = evaluate_likelihood(model, test, EvalSettings(limit=4))
    assert seen == {"ode": "meta", "vlb": "meta"} and report.n == 4
