"""torchrun --standalone --nproc_per_node=2 (gloo, CPU): identical parameters on both ranks,
equal to one process with the same global batch (train.grad_accum=2) up to float rounding,
only rank 0 writes, and resume works under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from scoresde.train import main

from .train_util import ENV, TINY_TOY, loss_log, params, restore_threads, write_config  # noqa: F401


def _torchrun(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scoresde.train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 4, "ckpt_every": 2, "keep_last": 5})
    ddp = tmp_path / "ddp"
    first = _torchrun("--config", cfg, "--out", ddp, "--set", "train.steps=2")
    assert first.returncode == 0, first.stderr[-2000:]
    second = _torchrun("--out", ddp, "--resume", "auto", "--set", "train.steps=4")  # resume under torchrun
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("run folder") == 1  # rank 0 alone reports

    summary = json.loads((ddp / "summary.json").read_text())
    h0, h1 = summary["rank_param_sha256"]
    assert summary["world_size"] == 2 and h0 == h1  # bit-identical parameters on both ranks

    # rank 0 alone wrote: one log line per step, the expected files and nothing else
    assert [r["step"] for r in loss_log(ddp)] == [1, 2, 3, 4]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == \
        ["ckpt_000000002.pt", "ckpt_000000004.pt", "latest"]
    assert {p.name for p in ddp.iterdir()} == {"config.yaml", "checkpoints", "ema.safetensors",
                                               "metrics.jsonl", "summary.json"}

    single = tmp_path / "single"
    assert main(["--config", cfg, "--out", single, "--set", "train.grad_accum=2"]) == 0
    a, b = params(ddp), params(single)
    for k in a["model"]:  # float32 sums in a different order: a few ulps after 4 Adam steps
        assert torch.allclose(a["model"][k], b["model"][k], rtol=0, atol=1e-6), k
    for ra, rb in zip(loss_log(ddp), loss_log(single)):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)
