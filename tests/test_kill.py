"""Crash safety: SIGKILL a training run at random moments, many times; after every kill the
latest checkpoint loads, and resuming from it ends bit-identical to an uninterrupted run. Two
kills at chosen moments: during the ``ema.safetensors`` write, and before the first checkpoint."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

import scoresde.training.checkpoint as checkpoint_module
import scoresde.training.run as train_module
from scoresde.train import main
from scoresde.training.checkpoint import latest_checkpoint, load_checkpoint, load_run
from scoresde.training.runlog import read_metrics

from .train_util import TINY_TOY, fork_main, loss_log, params, same_tensors, wait_status, write_config

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


def _wait_for(path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path} never appeared"


def _straight(tmp_path, cfg, steps):
    straight = tmp_path / "straight"
    assert main(["--config", cfg, "--out", straight, "--set", f"train.steps={steps}"]) == 0
    return straight


def _kill_once_marked(argv, marker, monkeypatch):
    """Train ``argv`` in a forked child, SIGKILL it once ``marker`` exists, then undo the patches."""
    pid = fork_main(argv)
    _wait_for(marker)
    os.kill(pid, signal.SIGKILL)
    assert wait_status(pid) == -signal.SIGKILL
    monkeypatch.undo()


def test_a_kill_during_the_ema_write_leaves_the_old_file_and_the_next_start_cleans_up(tmp_path, monkeypatch):
    """SIGKILL while ``ema.safetensors`` is half written (the checkpoint of that step is on disk):
    the previous EMA file is whole, the torn temporary file is removed by the next start, and the
    resumed run equals an uninterrupted one."""
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, model={"dropout": 0.2},
                       train={"steps": 6, "ckpt_every": 2, "log_every": 1})
    run, marker = tmp_path / "run", tmp_path / "ema-write-started"
    real = checkpoint_module.atomic_write

    def half_then_hang(path, write):
        if path.name == "ema.safetensors" and (path.parent / "checkpoints" / "ckpt_000000004.pt").exists():
            def torn(f):
                f.write(b"\x00" * 64)  # part of the file, then the kill
                f.flush()
                marker.touch()
                time.sleep(120)
            return real(path, torn)
        return real(path, write)

    monkeypatch.setattr(checkpoint_module, "atomic_write", half_then_hang)
    _kill_once_marked(["--config", cfg, "--out", run], marker, monkeypatch)
    assert len(list(run.glob(".ema.safetensors.*.tmp"))) == 1  # the torn write, never renamed
    assert load_run(run / "ema.safetensors").step == 2  # the previous file, whole
    assert load_checkpoint(latest_checkpoint(run / "checkpoints"))["step"] == 4

    assert main(["--out", run, "--resume", "auto"]) == 0
    assert not list(run.glob(".*.tmp")) and not list((run / "checkpoints").glob(".*.tmp"))
    straight = _straight(tmp_path, cfg, 6)
    a, b = params(straight), params(run)
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
    assert loss_log(straight) == loss_log(run)  # each step once
    assert (straight / "ema.safetensors").read_bytes() == (run / "ema.safetensors").read_bytes()


def test_a_kill_before_the_first_checkpoint_restarts_the_folders_own_config(tmp_path, monkeypatch):
    """SIGKILL before any checkpoint (two log lines written): ``--out DIR --resume auto`` without
    ``--config`` restarts the folder's own config (not the digits default) and the log holds each
    step once, equal to an uninterrupted run's."""
    cfg = write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 4, "ckpt_every": 2, "log_every": 1})
    run, marker = tmp_path / "run", tmp_path / "first-save"

    def hang(*args, **kwargs):
        marker.touch()
        time.sleep(120)

    monkeypatch.setattr(train_module, "save_checkpoint", hang)
    _kill_once_marked(["--config", cfg, "--out", run], marker, monkeypatch)
    assert latest_checkpoint(run / "checkpoints") is None
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]  # the dead attempt's lines
    config_before = (run / "config.yaml").read_bytes()

    assert main(["--out", run, "--resume", "auto"]) == 0
    assert (run / "config.yaml").read_bytes() == config_before  # the folder's own config, untouched
    straight = _straight(tmp_path, cfg, 4)
    assert loss_log(straight) == loss_log(run) and [r["step"] for r in loss_log(run)] == [1, 2, 3, 4]
    a, b = params(straight), params(run)
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
