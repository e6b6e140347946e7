"""Crash safety: SIGKILL a training run at random moments, many times; after every kill the
latest checkpoint loads, and resuming from it ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from scoresde.checkpoint import latest_checkpoint, load_checkpoint, load_run
from scoresde.runlog import read_metrics
from scoresde.train import main

from .train_util import (  # noqa: F401
    TINY_TOY,
    fork_main,
    loss_log,
    params,
    restore_threads,
    same_tensors,
    wait_status,
    write_config,
)

KILLS = 12


@pytest.mark.slow
def test_random_sigkills_always_leave_a_loadable_checkpoint_and_resume_exactly(tmp_path):
    # A checkpoint at every step (each one a few fsyncs), so kills land in writes too.
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, model={"dropout": 0.2},
                       train={"steps": 100_000, "ckpt_every": 1, "keep_last": 2, "log_every": 1})
    killed = tmp_path / "killed"
    rng = random.Random(0)
    landed, steps_seen = 0, [0]
    for _ in range(KILLS):
        logged = len(read_metrics(killed / "metrics.jsonl"))
        pid = fork_main(["--config", cfg, "--out", killed, "--resume", "auto"])
        deadline = time.monotonic() + 30  # let it log a new step, then kill it at a random moment
        while len(read_metrics(killed / "metrics.jsonl")) <= logged and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))  # training steps and checkpoint writes both get hit
        os.kill(pid, signal.SIGKILL)
        landed += wait_status(pid) == -signal.SIGKILL
        ckpt = latest_checkpoint(killed / "checkpoints")
        if ckpt is not None:  # whatever moment the kill hit, the latest checkpoint is whole
            state = load_checkpoint(ckpt)
            assert ckpt.name == f"ckpt_{state['step']:09d}.pt"
            assert load_run(killed).step == state["step"]
            assert state["step"] >= steps_seen[-1]  # never goes back
            steps_seen.append(state["step"])
    assert landed == KILLS
    assert steps_seen[-1] > 0

    # Resume to a few steps past the last checkpoint; compare with one uninterrupted run
    # (checkpointing does not touch the training state, so it may save less often).
    n = steps_seen[-1] + 5
    assert main(["--out", killed, "--resume", "auto", "--set", f"train.steps={n}"]) == 0
    straight = tmp_path / "straight"
    assert main(["--config", cfg, "--out", straight, "--set", f"train.steps={n}",
                 "train.ckpt_every=100000"]) == 0
    a, b = params(straight), params(killed)
    assert a["step"] == b["step"] == n
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
    assert loss_log(straight) == loss_log(killed)
