"""``python -m scoresde.train``: every flag, every data kind, the run folder's contents."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scoresde.train import main
from scoresde.training.build import build_model
from scoresde.training.config import config_from_dict
from scoresde.training.runlog import read_metrics

from .train_util import (  # noqa: F401
    TINY_DIGITS,
    TINY_TOY,
    params,
    restore_threads,
    run_module,
    tiny_cifar10,
    tiny_mnist,
    write_config,
)


def test_toy_run_writes_the_documented_run_folder(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY)
    run = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(run), "--sampler", "ode", "--sample-steps", "3",
                 "--device", "cpu", "--seed", "3", "--set", "sample.n=64", "train.steps=3"]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "checkpoints", "ema.safetensors", "metrics.jsonl", "samples_ode.png",
            "samples_ode.npz", "summary.json"} <= names
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["sample"]["steps"] == 3 and resolved["data"]["shape"] == [2]
    assert resolved["train"]["steps"] == 3 and resolved["sample"]["sampler"] == "ode"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["sampler"] == "ode" and summary["nfe"] > 0
    assert summary["sliced_w1"] > 0 and summary["sliced_w1_floor"] > 0
    assert summary["sliced_w1_reference"] == "ring oracle"
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"step", "loss", "lr", "grad_norm", "time"} <= set(records[0])
    # linear warm-up over 2 steps: lr/2, then lr (TINY_TOY: lr 1e-3)
    assert [r["lr"] for r in records] == [5e-4, 1e-3, 1e-3]
    assert "summary:" in capsys.readouterr().out


def test_ema_moves_from_the_first_step(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 1, "ema_decay": 0.999})
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    torch.manual_seed(0)  # the run's initialisation (seed 0)
    w0 = build_model(config_from_dict(TINY_TOY)).state_dict()
    state = params(tmp_path / "run")
    w1, ema = state["model"], load_file(tmp_path / "run" / "ema.safetensors")
    for k in w0:  # first update: d = min(0.999, 1/10) → ema = 0.1 w0 + 0.9 w1
        assert torch.allclose(ema[k], 0.1 * w0[k] + 0.9 * w1[k], atol=1e-6)
    assert not torch.equal(ema["net.inp.weight"], w0["net.inp.weight"])


def test_seed_makes_runs_reproducible(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 2})
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main(["--config", str(cfg), "--out", str(tmp_path / name), "--seed", str(seed)]) == 0
    a, b, c = (params(tmp_path / n)["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.inp.weight"], c["net.inp.weight"])


def test_default_config_and_default_run_folder(tmp_path, monkeypatch):
    """No --config: the digits default (shrunk by --set); no --out: runs/digits, then runs/digits-2."""
    monkeypatch.chdir(tmp_path)
    shrink = ["--set", "train.steps=1", "data.n=32", "train.batch_size=16", "model.channels=8",
              "train.threads=1", "sample.n=0", "eval.bpd=false", "eval.vlb=false", "device=cpu"]
    assert main(shrink) == 0
    assert main(shrink) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "digits" / "config.yaml").read_text())
    assert saved["data"]["name"] == "digits" and saved["model"]["kind"] == "unet"
    assert (tmp_path / "runs" / "digits-2" / "checkpoints" / "latest").is_file()


def test_digits_run_reports_frechet_distance_and_bits_per_dim(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS,
                       sample={"n": 16}, eval={"bpd": True, "bpd_n": 4, "vlb": True, "vlb_terms": 2})
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["fd"] > s["fd_floor"] > 0  # 2 training steps: far from the data
    assert s["bpd_n"] == 4 and s["bpd_ode"] > 0 and s["bpd_ode_stderr"] >= 0 and s["bpd_vlb"] > 0
    assert (tmp_path / "run" / "samples_ddim.png").is_file()


@pytest.mark.parametrize("kind", ["mnist", "cifar10", "moons"])
def test_a_few_steps_on_each_data_kind(tmp_path, kind):
    if kind == "mnist":
        data = {"name": "mnist", "root": str(tiny_mnist(tmp_path / "mnist")), "n": None}
        overrides, base = {"model": {"attn_resolutions": [14]}}, TINY_DIGITS
    elif kind == "cifar10":
        data = {"name": "cifar10", "root": str(tiny_cifar10(tmp_path / "cifar")), "n": None}
        overrides, base = {"model": {"attn_resolutions": [16]}}, TINY_DIGITS
    else:
        data, overrides, base = {"name": "moons", "n": 128}, {"sample": {"n": 32}}, TINY_TOY
    cfg = write_config(tmp_path / "c.yaml", base, data=data, **overrides)
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["data"] == kind and s["steps"] == base["train"]["steps"]
    png = tmp_path / "run" / f"samples_{base['sample']['sampler']}.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dequantized_training_and_likelihood_weighting(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS, data={"dequantize": True},
                       loss={"weighting": "likelihood", "t_eps": 1e-4}, sample={"n": 0})
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 2 and all(r["loss"] > 0 for r in records)


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    flags = ("--config", "--sampler", "--sample-steps", "--out", "--device", "--seed", "--resume", "--set")
    assert all(flag in out for flag in flags)
