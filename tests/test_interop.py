"""diffusers DDPMs as scoresde models (:mod:`scoresde.interop`), checked against diffusers itself.

Tiny random ``UNet2DModel``s (45 k parameters, 3×8×8) saved with ``save_pretrained``: no download.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import diffusers  # the dev extra installs it: missing, the tests fail rather than skip
import numpy as np
import pytest
import torch

from scoresde.evaluate import main as evaluate_main
from scoresde.interop import DiffusersModel, load_diffusers, load_model
from scoresde.likelihood.ode import bits_per_dim, log_likelihood
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.sample import main as sample_main
from scoresde.samplers import SAMPLERS, sample

N = 1000
ROOT = Path(__file__).resolve().parent.parent


def tiny_unet(seed: int = 0, out_channels: int = 3, zero_output: bool = False, **kw):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=4, **kw)
    if zero_output:  # ε ≡ 0: the model's probability flow is linear, its likelihood closed-form
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet.eval()


def save_pipeline(folder: Path, unet, scheduler) -> Path:
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --- the model ---------------------------------------------------------------------------------

def test_time_convention_k_is_t_equals_k_plus_one_over_n():
    """diffusers' ᾱ_k is our ᾱ((k+1)/N): to float64 round-off against their betas, to their float32
    storage (relative 1e-6) against their alphas_cumprod; the UNet sees k itself."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2")
    model = load_diffusers(tiny_unet(), sched)
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    exact = torch.cumprod(1 - sched.betas.double(), 0)
    torch.testing.assert_close(model.sde.alpha_bar(t), exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(model.sde.alpha_bar(t), sched.alphas_cumprod.double(), rtol=1e-6, atol=0)
    k = torch.tensor([0, 1, 499, 998, 999])
    assert torch.equal(model.net.timestep(((k + 1) / N).double()), k.float())
    assert torch.equal(model.net.timestep(((k + 1) / N).float()), k.float())  # float32 times snap too
    assert torch.equal(model.net.timestep(torch.tensor([10.5 / N], dtype=torch.float64)), torch.tensor([9.5]))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_eps_equals_diffusers_forward(tmp_path, prediction_type):
    """ε of the loaded folder = diffusers' forward at timestep k, turned into ε by diffusers' own
    formulas (DDIMScheduler.step's pred_epsilon) with ᾱ_k in float64 from the scheduler's betas
    (diffusers' float32 ᾱ_0 = 0.9999 leaves 1 - ᾱ_0 with a relative error ~1e-3), to float32 round-off."""
    unet = tiny_unet(1)
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, prediction_type=prediction_type)
    model = load_diffusers(save_pipeline(tmp_path / "pipe", unet, sched))
    assert isinstance(model, DiffusersModel) and model.data_shape == (3, 8, 8)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([0, 1, 250, 700, 999])
    with torch.no_grad():
        out = unet(x, k).sample.double()
    a = torch.cumprod(1 - sched.betas.double(), 0)[k].reshape(-1, 1, 1, 1)
    xd = x.double()
    ref = {"epsilon": out, "v_prediction": a.sqrt() * out + (1 - a).sqrt() * xd,
           "sample": (xd - a.sqrt() * out) / (1 - a).sqrt()}[prediction_type]
    ours = model.eps(x, (k + 1).double() / N)
    assert ours.dtype == x.dtype
    # float32 round-off of the network output and of the conversion (|ε| up to ~300 for "sample" at σ = 0.01)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.eps(x[2:3], 251 / N), ours[2:3])  # a scalar t, the same ε
    s = model.sde.sigma(torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(model.score(x, 0.3), -model.eps(x, 0.3) / float(s))


class _Oracle(torch.nn.Module):
    """A stand-in UNet whose output is the exact target (ε, v or x_0) of a known draw x_t = α x_0 + σ ε."""

    def __init__(self, target):
        super().__init__()
        self.target, self.dtype = target, torch.float64
        self.config = types.SimpleNamespace(sample_size=4, in_channels=2)

    def forward(self, x, timestep):
        return types.SimpleNamespace(sample=self.target)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_recover_the_true_eps(prediction_type):
    """The conversions are exact algebra: fed the true v = α ε - σ x_0 or the true x_0 of a draw at
    any t (grid or not), ``eps`` returns that draw's ε to float64 round-off."""
    sde = load_diffusers(tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=N)).sde
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(4, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(4, 2, 4, 4, generator=g,
                                                                                      dtype=torch.float64)
    t = torch.tensor([0.001, 0.0123, 0.5, 1.0], dtype=torch.float64)
    a, s = sde.alpha(t).reshape(-1, 1, 1, 1), sde.sigma(t).reshape(-1, 1, 1, 1)
    target = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction_type]
    model = DiffusersModel(_Oracle(target), sde, prediction_type)
    torch.testing.assert_close(model.eps(a * x0 + s * eps, t), eps, rtol=1e-12, atol=1e-11)


def test_learned_variance_contributes_its_eps_half(tmp_path):
    unet = tiny_unet(2, out_channels=6)
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, variance_type="learned_range")
    model = load_diffusers(save_pipeline(tmp_path / "pipe", unet, sched))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = unet(x, torch.tensor([10, 10])).sample[:, :3]
    torch.testing.assert_close(model.eps(x, 11 / N), ref, rtol=1e-6, atol=1e-6)


def test_bin_weights_unet_scheduler_pair_and_reduced_precision(tmp_path):
    """``.bin`` weights in a unet/ + scheduler/ pair (no model_index.json); bf16/fp16 weights get the
    same float32 integer timestep diffusers' own fp16 call gets, and return x's dtype."""
    unet = tiny_unet(3)
    sched = diffusers.DDIMScheduler(num_train_timesteps=N, beta_schedule="scaled_linear")
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    sched.save_pretrained(tmp_path / "scheduler")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    model = load_diffusers(tmp_path)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.eps(x, 0.25), unet(x, 249).sample, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.sde.alpha_bar(0.25), torch.cumprod(1 - sched.betas.double(), 0)[249])
    for dtype in (torch.bfloat16, torch.float16):
        low = load_diffusers(tmp_path, dtype=dtype)
        assert low.unet.dtype == dtype and low.eps(x, 0.25).dtype == torch.float32
        with torch.no_grad():
            ref = copy.deepcopy(unet).to(dtype)(x.to(dtype), torch.tensor([249] * 3)).sample.float()
        assert torch.equal(low.eps(x, 0.25), ref)
    model64 = load_diffusers(tiny_unet(3).double(), sched)
    assert model64.eps(x.double(), 0.25).dtype == torch.float64


def _diffusers_ddim(unet, sched, x_T, steps):
    sched.set_timesteps(steps)
    x = x_T
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(unet(x, k).sample, k, x, eta=0.0).prev_sample
    return x, sched.timesteps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ten_step_ddim_equals_diffusers(prediction_type):
    """Our ``ddim`` on the grid 0.1, 0.2, …, 1 (then to 0) is diffusers' DDIMScheduler with
    ``trailing`` timesteps 999, 899, …, 99 and ``set_alpha_to_one``, from the same x_T, in float64:
    to float64 round-off once diffusers' ᾱ table is computed in float64 from the same betas, and
    to its float32 storage error (relative ~1e-6) with the table as diffusers builds it."""
    unet = tiny_unet(4).double()
    kw = dict(num_train_timesteps=N, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing",
              prediction_type=prediction_type)
    model = load_diffusers(unet, diffusers.DDIMScheduler(**kw))
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = sample(model, "ddim", x_T, steps=10, t_eps=0.1)
    grid = ours.info["grid"].sort().values
    assert torch.allclose(grid[grid > 0], torch.arange(1, 11, dtype=torch.float64) / 10)  # then 0 (denoise)

    stock = diffusers.DDIMScheduler(**kw)
    ref32, timesteps = _diffusers_ddim(unet, stock, x_T, 10)
    assert timesteps.tolist() == list(range(999, 0, -100))
    exact = diffusers.DDIMScheduler(**kw)
    exact.alphas_cumprod = torch.cumprod(1 - exact.betas.double(), 0)
    ref64, _ = _diffusers_ddim(unet, exact, x_T, 10)
    assert ours.nfe == 10
    torch.testing.assert_close(ours.x, ref64, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.x, ref32, rtol=1e-4, atol=1e-4)


def test_ddim_on_diffusers_leading_timesteps():
    """diffusers' default ``leading`` timesteps 900, 800, …, 0 given to our ``ddim`` as DDPM indices
    (``timesteps=``, t = (k+1)/N): the same x_0 as DDIMScheduler, float64 round-off."""
    unet = tiny_unet(5).double()
    kw = dict(num_train_timesteps=N, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    model = load_diffusers(unet, diffusers.DDIMScheduler(**kw))
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = diffusers.DDIMScheduler(**kw)
    exact.alphas_cumprod = torch.cumprod(1 - exact.betas.double(), 0)
    ref, timesteps = _diffusers_ddim(unet, exact, x_T, 10)
    ours = sample(model, "ddim", x_T, timesteps=timesteps.tolist(), denoise=True)  # set_alpha_to_one: to t = 0
    assert ours.nfe == 10
    torch.testing.assert_close(ours.x, ref, rtol=1e-10, atol=1e-10)


def test_every_sampler_and_estimator_accepts_the_model():
    model = load_diffusers(tiny_unet(6), diffusers.DDPMScheduler(num_train_timesteps=N))
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 8, 8, generator=g)
    for name in sorted(SAMPLERS):
        opts = {"method": "euler"} if name == "ode" else {}
        res = sample(model, name, x_T, steps=4, generator=g, **opts)
        assert res.x.shape == x_T.shape and torch.isfinite(res.x).all(), name
    x_int = torch.randint(0, 256, (2, 3, 8, 8), generator=g)
    vlb = ddpm_vlb_bits_per_dim(model, x_int, 256, n_terms=5, generator=g)
    assert vlb.info["N"] == N and math.isfinite(vlb.bpd)


def test_likelihood_of_a_zero_network_is_closed_form():
    """ε ≡ 0 makes the probability flow dx/dt = -½β x, so log p_{t_eps}(x) =
    log N(x α(1)/α(t_eps); 0, I) + D log(α(1)/α(t_eps)) exactly (Hutchinson is exact too: the
    Jacobian is a multiple of I)."""
    model = load_diffusers(tiny_unet(7, zero_output=True), diffusers.DDPMScheduler(num_train_timesteps=N))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t_eps = 1e-3
    ratio = float(model.sde.alpha(1.0) / model.sde.alpha(t_eps))
    expected = model.sde.prior_log_prob(x * ratio) + 192 * math.log(ratio)
    res = log_likelihood(model, x, trace="hutchinson", t_eps=t_eps, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.log_prob, expected, rtol=1e-5, atol=0)  # solver tolerance 1e-5


# --- the programs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zero_pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    save_pipeline(root / "pipe", tiny_unet(8, zero_output=True), diffusers.DDPMScheduler(num_train_timesteps=N))
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)  # channels last
    np.savez(root / "images.npz", images=images)
    return root


def test_programs_end_to_end_on_a_pipeline_folder(zero_pipe, tmp_path, capsys):
    """``sample`` (in process) and ``evaluate`` (as a user runs it, a subprocess) on the folder; their
    figures equal the library's on the same model, data and seeds."""
    pipe, data = zero_pipe / "pipe", zero_pipe / "images.npz"
    out = tmp_path / "s.png"
    assert sample_main(["--ckpt", pipe, "--sampler", "ddim", "--steps", "5", "--n", "4", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "4 samples, sampler ddim, 5 NFE" in printed and "DDPMScheduler" in printed
    samples = np.load(out.with_suffix(".npz"))["samples"]
    model = load_model(pipe).model
    x_T = model.sde.prior_sample((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    expected = sample(model, "ddim", x_T, steps=5, generator=torch.Generator().manual_seed(0)).x
    np.testing.assert_allclose(samples, expected.numpy(), rtol=0, atol=1e-6)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # one thread, as the suite
    r = subprocess.run([sys.executable, "-m", "scoresde.evaluate", "--ckpt", pipe, "--data", data, "--bpd",
                        "--vlb", "--vlb-terms", "10", "--limit", "2", "--device", "cpu"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "images.npz, 2 examples, D = 192, 256 levels" in r.stdout
    x_int = torch.from_numpy(np.load(data)["images"][:2].astype(np.int64)).permute(0, 3, 1, 2)
    bpd = bits_per_dim(model, x_int, 256, trace="hutchinson", generator=torch.Generator().manual_seed(0))
    vlb = ddpm_vlb_bits_per_dim(model, x_int, 256, n_terms=10, generator=torch.Generator().manual_seed(0))
    assert f"bits/dim (ODE, Hutchinson, 1 probe(s)): {bpd.bpd:.4f} ± {bpd.stderr:.4f}" in r.stdout
    assert f"bits/dim (DDPM VLB, N = 1000, 10 terms): {vlb.bpd:.4f} ± {vlb.stderr:.4f}" in r.stdout


def test_image_folder_data(zero_pipe, tmp_path, capsys):
    from PIL import Image

    images = np.load(zero_pipe / "images.npz")["images"]
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i:02d}.png")
    assert evaluate_main(["--ckpt", zero_pipe / "pipe", "--data", tmp_path, "--bpd", "--limit", "2",
                          "--rtol", "1e-3", "--atol", "1e-3"]) == 0
    assert "2 examples, D = 192, 256 levels" in capsys.readouterr().out


def _bad_folders(root: Path) -> dict:
    """Each bad folder and a fragment its one-line error must contain."""
    base = root / "pipe"
    cases = {}

    def copy(name):
        shutil.copytree(base, root / name)
        return root / name

    p = copy("conditional")
    cfg = json.loads((p / "unet" / "config.json").read_text())
    (p / "unet" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    cases["conditional"] = (p, "conditional UNet (UNet2DConditionModel")
    p = root / "classes"
    save_pipeline(p, tiny_unet(9, class_embed_type="identity"), diffusers.DDPMScheduler(num_train_timesteps=N))
    cases["classes"] = (p, "class embeddings")
    p = copy("latent")
    (p / "vae").mkdir()
    cases["latent"] = (p, "found vae/ of a latent-diffusion pipeline")
    p = copy("ve")
    shutil.rmtree(p / "scheduler")
    diffusers.ScoreSdeVeScheduler().save_pretrained(p / "scheduler")
    cases["ve"] = (p, "ScoreSdeVeScheduler has no VP noise schedule")
    p = copy("edm")
    shutil.rmtree(p / "scheduler")
    diffusers.EDMEulerScheduler().save_pretrained(p / "scheduler")
    cases["edm"] = (p, "EDMEulerScheduler has no VP noise schedule (betas; found sigma_min, sigma_max")
    p = copy("no_weights")
    (p / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    cases["no_weights"] = (p, "no weights (found config.json)")
    p = copy("no_scheduler")
    shutil.rmtree(p / "scheduler")
    cases["no_scheduler"] = (p, "no scheduler/scheduler_config.json (found model_index.json, unet/)")
    p = copy("torn_weights")
    (p / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 10)
    cases["torn_weights"] = (p, "weights cannot be loaded (Unable to load weights from checkpoint file for 'unet/")
    return cases


@pytest.fixture(scope="module")
def bad_folders(zero_pipe):
    return _bad_folders(zero_pipe)


@pytest.mark.parametrize("case", ["conditional", "classes", "latent", "ve", "edm", "no_weights", "no_scheduler",
                                  "torn_weights"])
@pytest.mark.parametrize("program", ["sample", "evaluate"])
def test_bad_folders_exit_2_with_one_line(bad_folders, case, program, capsys):
    folder, fragment = bad_folders[case]
    before = sorted(str(p) for p in folder.rglob("*"))
    main = sample_main if program == "sample" else evaluate_main
    extra = ["--n", "2"] if program == "sample" else ["--data", "digits", "--bpd"]
    assert main(["--ckpt", folder, *extra]) == 2
    assert fragment in one_line_error(capsys)
    assert sorted(str(p) for p in folder.rglob("*")) == before  # nothing written
    with pytest.raises(ValueError, match="expected"):
        load_diffusers(folder)


@pytest.mark.parametrize("args, fragment", [
    ([], "--data missing"),
    (["--data", "digits"], "examples of shape (1, 8, 8): expected the model's (3, 8, 8)"),
    (["--data", "IMAGES", "--levels", "17"], "x_int: expected values in 0..16"),
    (["--data", "digits", "--levels", "17"], "--levels 17: only for an .npz / image folder"),
    (["--data", "nowhere.npz"], "nowhere.npz: not found"),
    (["--data", "digits", "UNET"], "is one part of a diffusers folder: expected the folder holding unet/"),
])
def test_evaluate_data_errors(zero_pipe, args, fragment, capsys):
    args = [str(zero_pipe / "images.npz") if a == "IMAGES" else a for a in args if a != "UNET"]
    ckpt = zero_pipe / "pipe" / ("unet" if "is one part" in fragment else "")
    assert evaluate_main(["--ckpt", ckpt, "--bpd", *args]) == 2
    assert fragment in one_line_error(capsys)


def test_in_memory_misuse_is_one_value_error():
    unet, sched = tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=N)
    with pytest.raises(ValueError, match="expected the UNet's diffusers scheduler"):
        load_diffusers(unet)
    with pytest.raises(ValueError, match="scheduler KarrasVeScheduler has no VP noise schedule"):
        load_diffusers(unet, diffusers.KarrasVeScheduler())
    with pytest.raises(ValueError, match="rescale_betas_zero_snr=True"):
        load_diffusers(unet, diffusers.DDIMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="found Linear: expected a diffusers UNet2DModel"):
        load_diffusers(torch.nn.Linear(2, 2), sched)
    with pytest.raises(ValueError, match="dtype=torch.int32"):
        load_diffusers(unet, sched, dtype=torch.int32)


# --- export: scoresde runs for diffusers users -------------------------------------------------

def _random_run(folder: Path, **model) -> Path:
    """A run folder holding only ``ema.safetensors`` of a randomly initialised network (every weight
    drawn, so that no zero-initialised layer hides a wrong mapping)."""
    from scoresde.training.build import build_model
    from scoresde.training.checkpoint import export_ema_safetensors
    from scoresde.training.config import config_from_dict

    cfg = config_from_dict({"data": {"name": "digits"}, "sde": {"schedule": "linear"},
                            "model": {"kind": "unet", "channel_mult": [1, 1], "num_res_blocks": 1,
                                      "attn_resolutions": [4], **model}})
    net_model = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net_model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    folder.mkdir()
    export_ema_safetensors(folder / "ema.safetensors", net_model, cfg, step=1)
    return folder


def test_export_is_the_run_at_diffusers_timesteps(tmp_path):
    """A U-Net run (widths 128 and 256: one group count; two heads of 64) exported to a DDPMPipeline
    folder: diffusers' own UNet at timestep k computes the run's ε at t = (k+1)/1000 to float32
    round-off (the time shift is folded into the first time layer), its scheduler's ᾱ_k is the run's
    continuous linear-schedule ᾱ((k+1)/1000) to diffusers' float32 storage of the betas."""
    from scoresde.interop import export_diffusers
    from scoresde.training.checkpoint import load_run

    run_dir = _random_run(tmp_path / "run", channels=128, num_heads=2)
    folder = export_diffusers(run_dir)
    assert folder == run_dir / "diffusers" and (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    run = load_run(run_dir)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([0, 17, 500, 999])
    with torch.no_grad():
        theirs = pipe.unet(x, k).sample
    ours = run.model.eps(x, (k + 1).double() / 1000)
    assert ours.abs().max() > 0.3  # a network that computes something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod.double(), run.model.sde.alpha_bar(t), rtol=1e-6, atol=0)
    assert not pipe.scheduler.config.clip_sample and pipe.scheduler.config.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="exists: expected a new folder"):
        export_diffusers(run_dir / "ema.safetensors")  # the same default folder: never overwritten


@pytest.mark.parametrize("model, fragment", [
    ({"channels": 8}, "group norms of 2 sizes (2, 4 groups for widths 8, 16): UNet2DModel has one"),
    ({"channels": 128, "base": "lattice"}, "model.base='lattice': the lattice base has no diffusers counterpart"),
    ({"kind": "mlp"}, "model.kind: found MLP: only the U-Net has a UNet2DModel counterpart"),
])
def test_export_refuses_what_has_no_counterpart(tmp_path, model, fragment):
    from scoresde.interop import export_diffusers

    with pytest.raises(ValueError, match=None) as err:
        export_diffusers(_random_run(tmp_path / "run", **model))
    assert fragment in str(err.value)
    assert not (tmp_path / "run" / "diffusers").exists()
