"""``python -m scoresde.sample --inpaint``: test digits with a hidden region, completed by every
imputation method at about equal NFE, on a tiny trained run (what it writes, what it reports)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.data.loader import load_dataset
from scoresde.sample import main as sample_main
from scoresde.samplers.impute import inpaint_mask
from scoresde.train import main as train_main

from .train_util import TINY_DIGITS, restore_threads, write_config  # noqa: F401


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    n = torch.get_num_threads()
    cfg = write_config(root / "digits.yaml", TINY_DIGITS, sample={"n": 0}, train={"steps": 2})
    assert train_main(["--config", cfg, "--out", root / "digits"]) == 0
    torch.set_num_threads(n)
    return root / "digits"


def test_bottom_half_every_method_picture_npz_and_table(run, tmp_path, capsys):
    out = tmp_path / "inpaint.png"
    args = ["--ckpt", run, "--inpaint", "bottom", "--n", "3", "--steps", "5", "--completions", "2",
            "--particles", "2", "--out", out]
    assert sample_main(args) == 0
    text = capsys.readouterr().out
    data = np.load(out.with_suffix(".npz"))
    test = load_dataset("digits", "test")
    assert np.array_equal(data["originals"], test.x[:3].numpy())
    assert np.array_equal(data["labels"], test.labels[:3].numpy())
    mask = inpaint_mask("bottom", (1, 8, 8)).numpy()
    assert data["mask"].shape == (3, 1, 8, 8) and (data["mask"] == mask).all()
    assert list(data["methods"]) == ["replacement", "repaint", "smc"]
    assert list(data["nfe"]) == [5, 5, 5]  # replacement, SMC: K = 4, +1; RePaint: 1 step × r = 4, +1
    comp = data["completions"]
    assert comp.shape == (3, 3, 2, 1, 8, 8) and np.isfinite(comp).all()
    # the observed top half is the original's, exactly, in every completion
    assert np.array_equal(np.broadcast_to(data["originals"][:, None, None], comp.shape)[..., :4, :], comp[..., :4, :])
    assert data["predicted"].shape == (3, 3, 2)
    # the picture: 3 rows of original, masked, then 2 completions for each of 3 methods (+ 2 gaps, 1 gap)
    width, height = Image.open(out).size
    tile = 8 * 8 + 8  # 8-pixel images ×8, 1-pixel pads ×8
    assert height == 3 * tile + 8 and width == (2 + 1 + 3 * 2 + 2) * tile + 8
    for method in ("replacement", "repaint", "smc"):
        assert f"| {method} | 5 |" in text
    assert "| smc | 5 | 10 |" in text  # 2 particles: 10 network evaluations per completion
    assert "| originals |" in text and "label kept" in text


def test_one_method_random_mask_and_the_same_seed_the_same_bytes(run, tmp_path):
    out = tmp_path / "a.png"
    args = ["--ckpt", run, "--inpaint", "random:0.5", "--n", "2", "--steps", "3", "--method", "smc",
            "--particles", "2", "--completions", "1", "--out", out]
    assert sample_main(args) == 0
    first = out.with_suffix(".npz").read_bytes()
    data = np.load(out.with_suffix(".npz"))
    assert list(data["methods"]) == ["smc"] and data["completions"].shape == (2, 1, 1, 1, 8, 8)
    assert not np.array_equal(data["mask"][0], data["mask"][1])  # a random mask per image
    hidden = ~data["mask"][0]
    assert 0 < hidden.sum() < 64
    assert sample_main(args) == 0
    assert out.with_suffix(".npz").read_bytes() == first


def test_default_output_beside_the_run(run):
    assert sample_main(["--ckpt", run, "--inpaint", "center", "--n", "1", "--steps", "2", "--method", "replacement",
                        "--completions", "1"]) == 0
    assert (run / "samples" / "inpaint_center_seed0.png").is_file()
    assert (run / "samples" / "inpaint_center_seed0.npz").is_file()
