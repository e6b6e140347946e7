"""``python -m scoresde.evaluate --fid N`` end to end on tiny digits-shaped and CIFAR-shaped runs
(random-weights features: the path CI can run without the ``fid`` extra), its bad input, and the
training report's FID when an extractor is available."""

from __future__ import annotations

import json
import math

import pytest

from scoresde.evaluation import fid as fid_lib

from .train_util import TINY_DIGITS, TINY_TOY, run_module, tiny_cifar10, write_config


def _figures(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("fid figures: "))
    return {k: float(v) for k, v in (item.split("=") for item in line[len("fid figures: "):].split(", "))}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fid_digits")
    cfg = write_config(tmp / "c.yaml", TINY_DIGITS)
    run = tmp / "run"
    done = run_module("scoresde.train", "--config", cfg, "--out", run, timeout=300)
    assert done.returncode == 0, done.stderr
    return run


def _evaluate(run, *extra, timeout=300):
    return run_module("scoresde.evaluate", "--ckpt", run, "--fid-features", "random", "--sampler", "ddim",
                      "--steps", "2", "--fid-batch", "8", *extra, timeout=timeout)


def test_evaluate_fid_on_a_digits_run_reports_and_caches(digits_run):
    done = _evaluate(digits_run, "--fid", "20")
    assert done.returncode == 0, done.stderr
    got = _figures(done.stdout)
    assert got["fid_n"] == 20 and got["fid_n_ref"] == 1437  # the whole training split (the run used 128)
    assert math.isfinite(got["fid"]) and got["fid"] > 0 and math.isfinite(got["kid"])
    assert "against the 1437 images of digits train, random2048-seed0 features" in done.stdout
    cache = digits_run / "fid_reference_digits_random2048-seed0.npz"
    stamp = cache.stat().st_mtime_ns
    again = _evaluate(digits_run, "--fid", "20")
    assert again.returncode == 0 and _figures(again.stdout) == got  # seeded samples, the cached reference
    assert cache.stat().st_mtime_ns == stamp
    other = _evaluate(digits_run, "--fid", "20", "--seed", "1")
    assert _figures(other.stdout)["fid"] != got["fid"]  # other samples


def test_evaluate_fid_on_a_cifar_shaped_run(tmp_path):
    root = tiny_cifar10(tmp_path / "cifar-10-batches-py", n_per_batch=8)
    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS, data={"name": "cifar10", "root": str(root)},
                       model={**TINY_DIGITS["model"], "attn_resolutions": [16]}, sample={"n": 0})
    run = tmp_path / "run"
    done = run_module("scoresde.train", "--config", cfg, "--out", run, timeout=300)
    assert done.returncode == 0, done.stderr
    done = _evaluate(run, "--fid", "12", "--bpd", "--limit", "2", "--rtol", "1e-2", "--atol", "1e-2")
    assert done.returncode == 0, done.stderr
    got = _figures(done.stdout)
    assert (got["fid_n"], got["fid_n_ref"]) == (12, 40) and math.isfinite(got["fid"])
    assert "bits/dim (ODE" in done.stdout  # --fid goes with the likelihood flags
    assert (run / "fid_reference_cifar10_random2048-seed0.npz").is_file()


@pytest.mark.parametrize("args, message", [
    (["--fid", "1"], "--fid 1: expected an integer ≥ 2"),
    (["--bpd", "--sampler", "ddim"], "--sampler: only with --fid N"),
    (["--fid", "4", "--fid-features", "clip"], "--fid-features"),
    (["--fid", "4", "--sampler", "euler"], "--sampler"),
])
def test_bad_fid_flags_are_one_line_and_status_2(digits_run, args, message):
    done = run_module("scoresde.evaluate", "--ckpt", digits_run, *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_fid_of_a_toy_run_and_without_the_extra_are_refused(tmp_path, digits_run):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY)
    done = run_module("scoresde.train", "--config", cfg, "--out", tmp_path / "toy", timeout=300)
    assert done.returncode == 0, done.stderr
    done = run_module("scoresde.evaluate", "--ckpt", tmp_path / "toy", "--fid", "4", "--fid-features", "random")
    assert done.returncode == 2 and "FID needs images (C, H, W)" in done.stderr
    if fid_lib.inception_missing() is not None:  # as in CI: the extra is not installed
        done = run_module("scoresde.evaluate", "--ckpt", digits_run, "--fid", "4")
        assert done.returncode == 2 and 'pip install -e ".[fid]"' in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_the_training_report_adds_fid_when_an_extractor_is_there(tmp_path, monkeypatch):
    from scoresde.train import main

    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS, sample={**TINY_DIGITS["sample"], "n": 6})
    monkeypatch.setattr(fid_lib, "report_extractor", lambda device="cpu": fid_lib.RandomFeatures(dims=32))
    assert main(["--config", str(cfg), "--out", str(tmp_path / "with")]) == 0
    summary = json.loads((tmp_path / "with" / "summary.json").read_text())
    assert summary["fid_n"] == 6 and summary["fid_n_ref"] == 1437 and math.isfinite(summary["fid"])
    assert summary["fid_extractor"] == "random32-seed0" and math.isfinite(summary["kid"])
    monkeypatch.setattr(fid_lib, "report_extractor", lambda device="cpu": None)  # no extra: no FID
    assert main(["--config", str(cfg), "--out", str(tmp_path / "without")]) == 0
    assert "fid" not in json.loads((tmp_path / "without" / "summary.json").read_text())
