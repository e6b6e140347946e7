"""The programs on a class-conditional run (issue 22): ``train`` reports classes, the guidance
table and the three kinds of bits/dim; ``sample --class/--guidance`` draws what the library draws;
``evaluate`` prints the figures ``summary.json`` holds (one function behind each figure).
Bad input to these flags is in tests/test_reliability.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.core.conditional import condition
from scoresde.evaluate import main as evaluate_main
from scoresde.evaluation.guidance import GUIDANCE_WEIGHTS, PER_CLASS, balanced_labels, guidance_table
from scoresde.evaluation.metrics import DigitsFeatures
from scoresde.evaluation.report import draw_samples
from scoresde.sample import main as sample_main
from scoresde.train import main as train_main
from scoresde.training.checkpoint import load_run

from .train_util import TINY_DIGITS, write_config


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    n = torch.get_num_threads()
    cfg = write_config(root / "cond.yaml", TINY_DIGITS, data={"name": "digits", "n": 256},
                       model={"num_classes": 10}, train={"steps": 3},
                       sample={"sampler": "ddim", "steps": 4, "n": 20},
                       eval={"bpd": True, "bpd_n": 3, "vlb": True, "vlb_terms": 2, "mixture": True,
                             "batch_size": 4, "ode_sigma": 0.2, "rtol": 1e-2, "atol": 1e-2})
    assert train_main(["--config", cfg, "--out", root / "run"]) == 0
    torch.set_num_threads(n)
    return root / "run"


def test_the_report_holds_classes_guidance_and_three_bits_per_dim(cond_run):
    summary = json.loads((cond_run / "summary.json").read_text())
    rows = summary["guidance"]
    assert [r["guidance"] for r in rows] == list(GUIDANCE_WEIGHTS)
    # the table is guidance_table's, recomputed from the run's EMA model with the run's settings
    run = load_run(cond_run)
    features = DigitsFeatures(cache_dir=cond_run, seed=0)
    again = guidance_table(run.model, "ddim", 20, steps=4, seed=0, device="cpu", features=features)
    for a, b in zip(rows, again):
        assert a["accuracy"] == b["accuracy"] and a["fd"] == b["fd"] and a["nfe"] == b["nfe"] == 4
    for key in ("bpd_cond_ode", "bpd_cond_vlb", "bpd_null_ode", "bpd_null_vlb", "bpd_mixture_ode"):
        assert np.isfinite(summary[key]), key
    assert "bpd_ode" not in summary  # a conditional run reports the three kinds instead
    grid = Image.open(cond_run / summary["classes_png"])
    scale = 64 // 8
    assert grid.size == (PER_CLASS * 9 * scale + scale, 10 * 9 * scale + scale)  # one row per class
    assert Image.open(cond_run / summary["guidance_png"]).format == "PNG"


def test_sample_class_and_guidance_draw_what_the_library_draws(cond_run, tmp_path):
    out = tmp_path / "s.png"
    assert sample_main(["--ckpt", str(cond_run), "--class", "3", "--guidance", "2", "--n", "6",
                        "--sampler", "ddim", "--steps", "4", "--out", str(out)]) == 0
    x = np.load(out.with_suffix(".npz"))["samples"]
    run = load_run(cond_run)
    expected, _, _ = draw_samples(condition(run.model, torch.full((6,), 3), guidance=2.0), "ddim", 6, steps=4,
                                  seed=0, device="cpu")
    assert np.array_equal(x, expected.numpy())
    g = torch.Generator().manual_seed(0)  # the same thing through condition() itself
    x_T = run.model.sde.prior_sample((6, 1, 8, 8), generator=g)
    from scoresde.samplers import sample
    with torch.no_grad():
        direct = sample(condition(run.model, 3, guidance=2.0), "ddim", x_T, steps=4, generator=g).x
    assert np.array_equal(x, direct.float().numpy())


def test_sample_class_all_is_one_row_per_class(cond_run, tmp_path):
    out = tmp_path / "all.png"
    assert sample_main(["--ckpt", str(cond_run), "--class", "all", "--n", "3", "--sampler", "ddim", "--steps", "2",
                        "--out", str(out)]) == 0
    x = np.load(out.with_suffix(".npz"))["samples"]
    assert x.shape == (30, 1, 8, 8)
    run = load_run(cond_run)
    labels = torch.arange(10).repeat_interleave(3)
    expected, _, _ = draw_samples(condition(run.model, labels), "ddim", 30, steps=2, seed=0, device="cpu")
    assert np.array_equal(x, expected.numpy())
    assert Image.open(out).size[0] < Image.open(out).size[1]  # 3 columns, 10 rows


def test_default_sample_names_say_class_and_guidance(cond_run, tmp_path):
    run = tmp_path / "run"
    import shutil
    shutil.copytree(cond_run, run)
    assert sample_main(["--ckpt", str(run), "--class", "7", "--guidance", "0.5", "--n", "2", "--steps", "2"]) == 0
    assert (run / "samples" / "ddim_class7_w0.5_seed0.png").is_file()


def test_evaluate_prints_the_reports_figures(cond_run, capsys):
    assert evaluate_main(["--ckpt", str(cond_run), "--bpd", "--vlb"]) == 0
    out = capsys.readouterr().out
    figures = dict(kv.split("=") for kv in out.strip().splitlines()[-1].removeprefix("figures: ").split(", "))
    summary = json.loads((cond_run / "summary.json").read_text())
    for key in ("bpd_cond_ode", "bpd_cond_vlb", "bpd_null_ode", "bpd_null_vlb", "bpd_mixture_ode"):
        assert float(figures[key]) == summary[key], key
    assert "p(x) by the class mixture" in out


def test_balanced_labels():
    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
