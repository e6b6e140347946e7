"""Crash-safe checkpoint files, RNG state round trips, EMA export and load_run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from scoresde.core.model import ScoreModel
from scoresde.training.build import build_model
from scoresde.training.checkpoint import (
    FORMAT,
    capture_rng,
    export_ema_safetensors,
    latest_checkpoint,
    load_checkpoint,
    load_run,
    restore_rng,
    save_checkpoint,
)
from scoresde.training.config import config_from_dict
from scoresde.util.atomic import atomic_write

from .train_util import TINY_TOY


def _state(step: int) -> dict:
    return {"format": FORMAT, "step": step, "w": torch.full((3,), float(step))}


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def dies(f):
        f.write(b"half")
        raise KeyboardInterrupt  # a crash in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left


def test_save_points_latest_and_prunes_after_writing(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (10, 20, 30, 40):
        path = save_checkpoint(folder, _state(step), step, keep_last=2)
        assert latest_checkpoint(folder) == path
        assert load_checkpoint(path)["step"] == step
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt_000000030.pt", "ckpt_000000040.pt", "latest"]
    (folder / ".ckpt_000000050.pt.abc.tmp").write_bytes(b"torn")  # left by a killed writer
    save_checkpoint(folder, _state(50), 50, keep_last=2)
    assert not list(folder.glob("*.tmp"))


def test_latest_falls_back_to_the_newest_complete_file(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, _state(1), 1)
    save_checkpoint(folder, _state(2), 2)
    (folder / "latest").unlink()
    assert latest_checkpoint(folder).name == "ckpt_000000002.pt"
    assert latest_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("content, expected", [
    (None, "not found"),
    (b"", "cannot be read"),
    (b"garbage" * 10, "cannot be read"),
    ("truncated", "cannot be read"),
    ("foreign", "expected a scoresde training checkpoint"),
])
def test_bad_checkpoint_files_are_refused_with_one_line(tmp_path, content, expected):
    path = tmp_path / "ckpt_000000001.pt"
    if content == "truncated":
        torch.save(_state(1) | {"big": torch.zeros(10_000)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "foreign":
        torch.save({"state_dict": {}}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    path = save_checkpoint(tmp_path, {"format": FORMAT, "step": 0, "rng": capture_rng()}, 0)
    expected = (torch.rand(4), np.random.standard_normal(3), [random.random() for _ in range(3)])
    restore_rng(load_checkpoint(path)["rng"])  # torch.load(weights_only=True) inside
    got = (torch.rand(4), np.random.standard_normal(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


@pytest.fixture
def toy_model():
    cfg = config_from_dict(TINY_TOY)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_export_and_load_run_from_safetensors_checkpoint_and_folder(tmp_path, toy_model):
    cfg, model = toy_model
    ema = {k: v + 0.5 for k, v in model.state_dict().items()}  # distinct "EMA" weights
    export_ema_safetensors(tmp_path / "ema.safetensors", ema, cfg, step=3)
    loaded = load_run(tmp_path / "ema.safetensors")
    assert isinstance(loaded.model, ScoreModel) and not loaded.model.training
    assert loaded.config == cfg and loaded.step == 3
    assert all(torch.equal(loaded.model.state_dict()[k], ema[k]) for k in ema)

    state = {"format": FORMAT, "step": 5, "config": TINY_TOY | {"data": {**TINY_TOY["data"], "shape": [2]}},
             "model": model.state_dict(), "ema": ema}
    save_checkpoint(tmp_path / "checkpoints", state, 5)
    from_dir = load_run(tmp_path)  # the folder: its latest checkpoint wins over ema.safetensors
    raw = load_run(tmp_path, ema=False)
    x, t = torch.randn(6, 2), torch.full((6,), 0.3)
    assert from_dir.step == 5
    assert torch.equal(from_dir.model.eps(x, t), loaded.model.eps(x, t))
    assert torch.equal(raw.model.eps(x, t), model.eval().eps(x, t))


def test_load_run_refuses_folders_and_weights_that_do_not_fit(tmp_path, toy_model):
    cfg, model = toy_model
    with pytest.raises(ValueError, match="no checkpoints"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_run(tmp_path / "nope")
    sd = model.state_dict()
    sd.pop(next(iter(sd)))
    export_ema_safetensors(tmp_path / "ema.safetensors", sd, cfg)
    with pytest.raises(ValueError, match="do not fit"):
        load_run(tmp_path / "ema.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="cannot be read"):
        load_run(tmp_path / "bad.safetensors")
