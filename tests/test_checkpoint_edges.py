"""Checkpoint files at their edges: default pruning, nested folders, the pointer's content, a
pointer naming something else, pickled objects refused, and what load_run hands back.
(Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import pytest
import torch

from scoresde.training.build import build_model
from scoresde.training.checkpoint import FORMAT, latest_checkpoint, load_checkpoint, load_run, save_checkpoint
from scoresde.training.config import config_from_dict

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


def test_every_refusal_names_the_file(tmp_path):
    """Each error message starts with the offending path (the CLIs print it as their one line)."""
    from safetensors.torch import save_file

    from scoresde.training.checkpoint import export_ema_safetensors

    cfg = config_from_dict(TINY_TOY)
    torch.manual_seed(0)
    model = build_model(cfg)
    export_ema_safetensors(tmp_path / "ema.safetensors", model.state_dict(), cfg, step=1)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    torch.save({"step": 1}, tmp_path / "other.pt")
    small = {k: v[..., :1].clone() if v.ndim else v for k, v in model.state_dict().items()}
    export_ema_safetensors(tmp_path / "small.safetensors", small, cfg, step=1)
    (tmp_path / "empty").mkdir()
    cases = [
        (lambda: load_checkpoint(tmp_path / "missing.pt"), "checkpoint '{}' not found", "missing.pt"),
        (lambda: load_checkpoint(tmp_path / "other.pt"), "checkpoint '{}': expected a scoresde", "other.pt"),
        (lambda: load_run(tmp_path / "empty"), "run folder '{}' has no checkpoints/", "empty"),
        (lambda: load_run(tmp_path / "nope"), "--ckpt '{}' not found", "nope"),
        (lambda: load_run(tmp_path / "ema.safetensors", ema=False), "'{}' holds only EMA weights", "ema.safetensors"),
        (lambda: load_run(tmp_path / "plain.safetensors"), "weights file '{}': expected scoresde",
         "plain.safetensors"),
        (lambda: load_run(tmp_path / "junk.safetensors"), "weights file '{}' cannot be read (", "junk.safetensors"),
        (lambda: load_run(tmp_path / "small.safetensors"), "'{}': weights do not fit the model", "small.safetensors"),
    ]
    for call, start, name in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(start.format(tmp_path / name)), str(err.value)
        assert "\n" not in str(err.value)
