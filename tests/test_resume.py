"""Exact resume (bit-identical parameters and loss log), --resume auto/PATH, model-mismatch
refusal, SIGINT/SIGTERM → checkpoint + clean exit, and the non-finite-loss guard."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

import scoresde.training.trainer as trainer_module
from scoresde.train import main
from scoresde.training.checkpoint import latest_checkpoint
from scoresde.training.runlog import read_metrics

from .train_util import TINY_TOY, fork_main, loss_log, params, same_tensors, snapshot, wait_status, write_config

# dropout > 0 so the global torch RNG matters; 256 examples / batch 32 = 8 steps per epoch,
# so 12 steps cross an epoch boundary (a fresh permutation) after the resume at step 5.
RESUME = dict(model={"dropout": 0.2}, train={"steps": 12, "ckpt_every": 4, "keep_last": 3})


def _assert_same_state(a: dict, b: dict):
    assert a["step"] == b["step"]
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert same_tensors(sa, sb)
    assert a["scheduler"] == b["scheduler"] and a["data"] == b["data"]


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, **RESUME)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["--config", cfg, "--out", straight]) == 0
    assert main(["--config", cfg, "--out", split, "--set", "train.steps=5"]) == 0
    assert params(split)["step"] == 5
    # no --config: the checkpoint's own config, with the new step count
    assert main(["--out", split, "--resume", "auto", "--set", "train.steps=12"]) == 0
    _assert_same_state(params(straight), params(split))
    assert loss_log(straight) == loss_log(split) and len(loss_log(split)) == 12


def test_resume_between_two_log_steps_restores_the_pending_loss_window(tmp_path):
    # log every 3 steps, checkpoint every 2: the first run ends at step 4, one step into the
    # window 4..6, and logs that partial window because the run ends there. The resumed run must
    # average steps 4, 5, 6 at step 6 as the uninterrupted run does, and its log must be the same.
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 6, "log_every": 3, "ckpt_every": 2})
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["--config", cfg, "--out", straight]) == 0
    assert main(["--config", cfg, "--out", split, "--set", "train.steps=4"]) == 0
    assert [r["step"] for r in loss_log(split)] == [3, 4]  # the run's end is logged
    assert main(["--out", split, "--resume", "auto", "--set", "train.steps=6"]) == 0
    assert [r["step"] for r in loss_log(straight)] == [3, 6]
    assert loss_log(split) == loss_log(straight)
    _assert_same_state(params(straight), params(split))


def test_resume_from_a_checkpoint_path_continues_its_run_folder(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 4, "ckpt_every": 2, "keep_last": 5})
    run = tmp_path / "run"
    assert main(["--config", cfg, "--out", run]) == 0
    first = run / "checkpoints" / "ckpt_000000002.pt"
    assert main(["--resume", first, "--set", "train.steps=6"]) == 0  # the run folder is inferred
    assert params(run)["step"] == 6
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 2})
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["--config", cfg, "--out", tmp_path / "run", "--resume", "auto"]) == 0
    assert params(tmp_path / "run")["step"] == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored


def test_a_checkpoint_of_another_model_is_refused_naming_the_keys(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 2})
    run = tmp_path / "run"
    assert main(["--config", cfg, "--out", run]) == 0
    before = snapshot(run)
    code = main(["--config", cfg, "--out", run, "--resume", "auto",
                 "--set", "model.hidden=64", "sde.beta_max=10", "train.steps=4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.hidden=64" in err and "sde.beta_max=10.0" in err and "train.steps" not in err
    assert snapshot(run) == before


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_at_the_next_step_and_exits_cleanly(tmp_path, signum, status):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 100_000, "ckpt_every": 100_000})
    run, log = tmp_path / "run", tmp_path / "out.txt"
    pid = fork_main(["--config", cfg, "--out", run], log)
    deadline = time.monotonic() + 60
    while len(read_metrics(run / "metrics.jsonl")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signum)
    assert wait_status(pid) == status
    step = params(run)["step"]
    assert step >= 3 and read_metrics(run / "metrics.jsonl")[-1]["step"] == step
    message = log.read_text()
    assert f"saved {latest_checkpoint(run / 'checkpoints')}" in message and "--resume auto" in message
    assert main(["--out", run, "--resume", "auto", "--set", f"train.steps={step + 2}"]) == 0
    assert params(run)["step"] == step + 2


def _nan_at(step: int, monkeypatch):
    """Make the loss of one training step NaN (its gradients too)."""
    real, calls = trainer_module.dsm_loss, []

    def loss(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == step:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "dsm_loss", loss)


def test_a_non_finite_loss_stops_naming_step_loss_and_t_range(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 6, "ckpt_every": 2})
    run = tmp_path / "run"
    _nan_at(3, monkeypatch)
    assert main(["--config", cfg, "--out", run]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "non-finite loss at step 3" in err and "loss=nan" in err and "batch t in [" in err
    assert params(run)["step"] == 2  # the last good checkpoint is kept
    assert not (run / "summary.json").exists()


def test_bad_steps_can_be_skipped(tmp_path, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 4, "max_bad_steps": 1})
    _nan_at(2, monkeypatch)
    assert main(["--config", cfg, "--out", tmp_path / "run"]) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["bad_steps"] for r in records] == [0, 1, 1, 1]
    assert records[1]["loss"] != records[1]["loss"]  # NaN: no good step in that log window
    assert all(torch.isfinite(v).all() for v in params(tmp_path / "run")["model"].values())
