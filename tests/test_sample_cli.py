"""``python -m scoresde.sample`` on saved runs: every flag, every kind of --ckpt, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scoresde.evaluation.report import draw_samples
from scoresde.sample import main as sample_main
from scoresde.training.checkpoint import load_run

from .train_util import TINY_DIGITS, TINY_TOY, restore_threads, train_run  # noqa: F401


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, base in (("toy", TINY_TOY), ("digits", TINY_DIGITS)):
        train_run(root / f"{name}.yaml", root / name, base, sample={"n": 0}, train={"steps": 2})
    return root


def test_every_flag(runs, tmp_path):
    out = tmp_path / "x.png"
    args = ["--ckpt", runs / "toy", "--sampler", "ddim", "--n", "10", "--steps", "4", "--out", out,
            "--device", "cpu"]
    assert sample_main([*args, "--seed", "1"]) == 0
    first = np.load(tmp_path / "x.npz")["samples"]
    assert first.shape == (10, 2) and np.isfinite(first).all()
    assert out.read_bytes()[:4] == b"\x89PNG"
    # the same as sampling the loaded EMA model with the library, seed 1
    run = load_run(runs / "toy")
    expected, nfe, _ = draw_samples(run.model, "ddim", 10, steps=4, seed=1, device="cpu")
    assert np.array_equal(first, expected.numpy()) and nfe == 4
    assert sample_main([*args, "--seed", "1"]) == 0
    assert np.array_equal(first, np.load(tmp_path / "x.npz")["samples"])  # deterministic
    assert sample_main([*args, "--seed", "2"]) == 0
    assert not np.array_equal(first, np.load(tmp_path / "x.npz")["samples"])


def test_defaults_come_from_the_run(runs, capsys):
    assert sample_main(["--ckpt", runs / "toy", "--n", "5"]) == 0  # the run's sampler: ddim, 5 steps
    assert (runs / "toy" / "samples" / "ddim_seed0.png").is_file()
    assert "5 NFE" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["folder", "safetensors", "checkpoint"])
def test_ckpt_may_be_a_folder_weights_or_checkpoint(runs, tmp_path, which):
    ckpt = {"folder": runs / "digits", "safetensors": runs / "digits" / "ema.safetensors",
            "checkpoint": runs / "digits" / "checkpoints" / "ckpt_000000002.pt"}[which]
    out = tmp_path / f"{which}.png"
    assert sample_main(["--ckpt", ckpt, "--n", "16", "--sampler", "ddim", "--steps", "2", "--out", out]) == 0
    samples = np.load(out.with_suffix(".npz"))["samples"]
    assert samples.shape == (16, 1, 8, 8)
    # a 4×4 grid of 8×8 images with 1-pixel gaps, upscaled 16× (128 // 8)
    assert Image.open(out).size == ((4 * 9 + 1) * 16, (4 * 9 + 1) * 16)
