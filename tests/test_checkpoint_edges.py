"""Checkpoint files at their edges: default pruning, nested folders, the pointer's content, a
pointer naming something else, pickled objects refused, and what load_run hands back.
(Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import pytest
import torch

from scoresde.build import build_model
from scoresde.checkpoint import FORMAT, latest_checkpoint, load_checkpoint, load_run, save_checkpoint
from scoresde.config import config_from_dict

from .train_util import TINY_TOY


class Opaque:
    """Not a tensor or plain type: a weights-only load must refuse it."""


def _state(step):
    return {"format": FORMAT, "step": step, "w": torch.full((2,), float(step))}


def test_default_keeps_two_in_a_new_nested_folder(tmp_path):
    folder = tmp_path / "a" / "b" / "checkpoints"
    for step in (1, 2, 3, 4):
        save_checkpoint(folder, _state(step), step)
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt_000000003.pt", "ckpt_000000004.pt", "latest"]
    assert (folder / "latest").read_text() == "ckpt_000000004.pt\n"


def test_a_pointer_to_something_else_falls_back_to_the_newest(tmp_path):
    save_checkpoint(tmp_path, _state(1), 1)
    save_checkpoint(tmp_path, _state(2), 2)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "latest").write_text("notes.txt\n")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_000000002.pt"


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "step": 1, "obj": Opaque()}, path)
    with pytest.raises(ValueError, match=r"^checkpoint '.*evil\.pt' cannot be read \(UnpicklingError"):
        load_checkpoint(path)


def test_load_run_returns_a_frozen_model_and_its_source(tmp_path):
    cfg = config_from_dict(TINY_TOY)
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"format": FORMAT, "step": 5, "config": TINY_TOY | {"data": {**TINY_TOY["data"], "shape": [2]}},
             "model": model.state_dict(), "ema": model.state_dict()}
    path = save_checkpoint(tmp_path / "checkpoints", state, 5)
    run = load_run(tmp_path)
    assert run.source == path and run.step == 5 and not run.model.training
    assert not any(p.requires_grad for p in run.model.parameters())
