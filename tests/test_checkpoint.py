"""Crash-safe checkpoint files, RNG state round trips, EMA export and load_run.

Checkpoint files at their edges: default pruning, nested folders, the pointer's content, a
pointer naming something else, pickled objects refused, what load_run hands back, weights files
and configs that are refused (each message in full), the RNG state's layout and its CUDA
branches, and the canonical safetensors header. (Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import scoresde.training.checkpoint as checkpoint_module
from scoresde.core.model import ScoreModel
from scoresde.training.build import build_model
from scoresde.training.checkpoint import (
    FORMAT,
    capture_rng,
    check_checkpoint,
    check_weights,
    export_ema_safetensors,
    latest_checkpoint,
    load_checkpoint,
    load_run,
    restore_rng,
    save_checkpoint,
)
from scoresde.training.config import config_from_dict, config_to_yaml
from scoresde.util.atomic import atomic_write

from .train_util import TINY_TOY, same_tensors


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


# Edges -----------------------------------------------------------------------------------


class Opaque:
    """Not a tensor or plain type: a weights-only load must refuse it."""




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


# Weights files, configs and RNG states at their edges -------------------------------------------

def _model():
    cfg = config_from_dict(TINY_TOY)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _ema_file(path, tensors, meta):
    """A safetensors file with the given metadata (strings), as another writer would make it."""
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def test_a_run_folder_with_only_ema_weights_loads_them_and_a_module_exports_its_state(tmp_path):
    cfg, model = _model()
    (tmp_path / "checkpoints").mkdir()  # pruned away: no checkpoint left
    path = export_ema_safetensors(tmp_path / "ema.safetensors", model, cfg)  # a module, not a dict
    run = load_run(tmp_path)
    assert run.source == tmp_path / "ema.safetensors" == path and run.step is None and run.config == cfg
    assert same_tensors(run.model.state_dict(), model.state_dict())
    meta = safe_open(str(path), "pt").metadata()
    assert meta == {"format": "scoresde-ema-1", "config": config_to_yaml(cfg), "step": "None"}


def test_load_run_moves_the_model_to_the_device_asked_for(tmp_path):
    cfg, model = _model()
    export_ema_safetensors(tmp_path / "ema.safetensors", model.state_dict(), cfg, step=7)
    run = load_run(tmp_path / "ema.safetensors", device="meta")  # any device but the CPU default
    assert {p.device.type for p in run.model.parameters()} == {"meta"} and run.step == 7


def test_latest_is_followed_even_to_an_older_checkpoint(tmp_path):
    save_checkpoint(tmp_path, _state(1), 1)
    save_checkpoint(tmp_path, _state(2), 2)
    (tmp_path / "latest").write_text("ckpt_000000001.pt\n")  # e.g. a run rolled back by hand
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_000000001.pt"


def test_pruning_tolerates_a_checkpoint_already_removed(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(1), 1, keep_last=1)
    gone = tmp_path / "ckpt_000000000.pt"  # listed, but removed by another process meanwhile
    real = checkpoint_module._checkpoints
    monkeypatch.setattr(checkpoint_module, "_checkpoints", lambda folder: [(0, gone), *real(folder)])
    save_checkpoint(tmp_path, _state(2), 2, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000002.pt", "latest"]


def test_canonical_header_is_sorted_compact_and_padded():
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, dtype=torch.float64)}
    data = st_save(tensors, metadata={"z": "1000", "a": "2"})
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    shuffled = {k: header[k] for k in sorted(header, reverse=True)}
    shuffled["__metadata__"] = {"z": "1000", "a": "2"}
    text = json.dumps(shuffled, separators=(", ", ": ")).encode()  # unsorted, with spaces
    raw = len(text).to_bytes(8, "little") + text + data[8 + n:]
    out = checkpoint_module._canonical(raw)
    m = int.from_bytes(out[:8], "little")
    compact = {k: json.dumps(header[k], sort_keys=True, separators=(",", ":")) for k in "ab"}
    expected = '{"__metadata__":{"a":"2","z":"1000"},"a":' + compact["a"] + ',"b":' + compact["b"] + "}"
    assert len(expected) == 146  # padded with 6 spaces to 152
    assert out[8:8 + m].decode() == expected + " " * 6 and m == 152
    assert same_tensors(st_load(out), tensors)


def test_weights_file_refusals_say_what_is_wrong(tmp_path):
    cfg, model = _model()
    weights = model.state_dict()
    good = {"format": "scoresde-ema-1", "config": config_to_yaml(cfg)}
    bad_config = yaml.safe_dump(TINY_TOY | {"sde": {"beta_max": 1e6}})
    long = json.dumps({"w": "a" * 150}).encode()
    (tmp_path / "long.safetensors").write_bytes(len(long).to_bytes(8, "little") + long)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    nan = {**weights, "net.out.bias": torch.full((2,), math.nan)}
    cases = {
        "long": None,
        "junk": None,
        "noconfig": ({"format": "scoresde-ema-1"}, weights),
        "foreign": ({"format": "other", "config": good["config"]}, weights),
        "yaml": ({**good, "config": "a: ["}, weights),
        "list": ({**good, "config": "[1, 2]"}, weights),
        "step": ({**good, "step": "abc"}, weights),
        "rules": ({**good, "config": bad_config}, weights),
        "unknown": ({**good, "config": yaml.safe_dump(TINY_TOY | {"foo": 1})}, weights),
        "nan": (good, nan),
        "unfit": (good, {k: v for k, v in weights.items() if k != "net.inp.bias"}),
    }
    for name, spec in cases.items():
        if spec is not None:
            _ema_file(tmp_path / f"{name}.safetensors", spec[1], spec[0])
    f = {name: str(tmp_path / f"{name}.safetensors") for name in cases}

    def reader_error(name):  # the safetensors reader's own words: the message quotes its first line, ≤ 100 chars
        with pytest.raises(SafetensorError) as err:
            st_load((tmp_path / f"{name}.safetensors").read_bytes())
        return str(err.value).splitlines()[0][:100]

    assert len(reader_error("long")) == 100  # cut: its first line is longer
    expected = {
        "long": f"weights file {f['long']!r} cannot be read ({reader_error('long')}): "
                f"expected a safetensors file written by scoresde.train",
        "junk": f"weights file {f['junk']!r} cannot be read ({reader_error('junk')}): "
                f"expected a safetensors file written by scoresde.train",
        "noconfig": f"weights file {f['noconfig']!r}: expected scoresde EMA weights with config metadata",
        "foreign": f"weights file {f['foreign']!r}: expected scoresde EMA weights with config metadata",
        "yaml": f"weights file {f['yaml']!r}: its config metadata is not valid YAML (while parsing a flow node): "
                f"expected the run's config",
        "list": f"weights file {f['list']!r}: its config metadata is a list, expected a mapping of config sections",
        "step": f"weights file {f['step']!r}: step metadata 'abc', expected an integer ≥ 0",
        "rules": f"{f['rules']!r}: config key 'sde.beta_max': expected (sde.beta_min + sde.beta_max)/2 ≤ 80",
        "unknown": f"{f['unknown']}: unknown config key 'foo': expected one of data, device,",
        "nan": f"weights file {f['nan']!r}: weight 'net.out.bias' holds non-finite values (NaN or inf): "
               f"expected finite weights",
        "unfit": f"{f['unfit']!r}: weights do not fit the model its config describes "
                 f"(Missing key(s) in state_dict: \"net.inp.bias\".)",
    }
    for name, start in expected.items():
        with pytest.raises(ValueError) as err:
            load_run(f[name])
        assert str(err.value).startswith(start), (name, str(err.value))


def test_checkpoint_refusals_name_the_file_and_the_entry(tmp_path):
    cfg, model = _model()
    weights = model.state_dict()
    full = {"format": FORMAT, "step": 3, "config": TINY_TOY, "model": weights, "ema": weights}
    only_ema = save_checkpoint(tmp_path / "a", {k: v for k, v in full.items() if k != "model"}, 3)
    only_model = save_checkpoint(tmp_path / "b", {k: v for k, v in full.items() if k != "ema"}, 3)
    no_config = save_checkpoint(tmp_path / "c", {k: v for k, v in full.items() if k != "config"}, 3)
    bad_config = save_checkpoint(tmp_path / "d", full | {"config": TINY_TOY | {"foo": 1}}, 3)
    assert load_run(only_ema).step == 3 and load_run(only_model, ema=False).step == 3
    entries = "entries model, ema, ema_updates, optimizer, scheduler, step, data, rng, bad_steps, log_window, config"
    for path, ema, message in [
        (only_ema, False, f"checkpoint {str(only_ema)!r} has no 'model' entry: expected a complete scoresde "
                          f"checkpoint ({entries})"),
        (only_model, True, f"checkpoint {str(only_model)!r} has no 'ema' entry"),
        (no_config, True, f"checkpoint {str(no_config)!r} has no 'config' entry"),
        (bad_config, True, f"{bad_config}: unknown config key 'foo'"),
    ]:
        with pytest.raises(ValueError) as err:
            load_run(path, ema=ema)
        assert str(err.value).startswith(message), str(err.value)


def test_check_checkpoint_types_and_step():
    where = "checkpoint 'x.pt'"
    for state, message in [
        ({"step": True}, f"{where}: entry 'step' is a bool, expected an integer"),
        ({"step": 1, "rng": (1,)}, f"{where}: entry 'rng' is a tuple, expected a list or a dict"),
        ({"step": 1, "log_window": {}}, f"{where}: entry 'log_window' is a dict, expected a list or a tuple"),
        ({"step": -1}, f"{where}: step -1, expected an integer ≥ 0"),
        ({"step": 1, "ema": {}}, f"{where}, entry 'ema': expected a non-empty state dict of tensors, got dict"),
        ({"step": 1, "model": {"w": 1}}, f"{where}, entry 'model': entry 'w' is a int, expected a tensor"),
    ]:
        with pytest.raises(ValueError) as err:
            check_checkpoint(state, "x.pt")
        assert str(err.value) == message
    check_checkpoint({"step": 0, "model": {"n": torch.tensor([3])}}, "x.pt")  # integer buffers: no finiteness
    check_checkpoint({"config": {}}, "x.pt", required=())  # nothing required: no step is fine
    with pytest.raises(ValueError) as err:
        check_weights([torch.zeros(2)], "weights of x")
    assert str(err.value) == "weights of x: expected a non-empty state dict of tensors, got list"


def test_rng_state_layout_is_cpu_tensors_and_plain_types():
    with torch.device("meta"):  # the library's tensors are placed explicitly, whatever the default
        rng = capture_rng()
    keys = np.random.get_state()[1]
    assert rng["numpy"]["keys"].dtype == torch.int64 and rng["numpy"]["keys"].device.type == "cpu"
    assert torch.equal(rng["numpy"]["keys"], torch.from_numpy(keys.astype(np.int64)))
    state = rng["python"]["state"]
    assert state.dtype == torch.int64 and state.device.type == "cpu"
    assert tuple(state.tolist()) == random.getstate()[1]


def test_cuda_rng_states_are_captured_and_restored_when_cuda_is_there(monkeypatch):
    """The CUDA branches, with torch.cuda's RNG functions stood in for (no GPU here)."""
    calls = []
    states = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: calls.append(list(s)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rng = capture_rng()
    assert rng["cuda"] == []
    restore_rng(rng | {"cuda": states})  # written on a GPU machine, resumed on a CPU-only one
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: tuple(states))
    rng = capture_rng()
    assert rng["cuda"] == states and isinstance(rng["cuda"], list)
    restore_rng(rng)
    restore_rng(rng | {"cuda": []})  # written on the CPU: the GPU streams are left alone
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(calls[0], states))


def test_a_checkpoint_saved_behind_newer_ones_is_kept(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, _state(step), step, keep_last=3)
    path = save_checkpoint(tmp_path, _state(3), 3, keep_last=2)  # e.g. a run resumed from step 2 again
    assert sorted(p.name for p in tmp_path.glob("ckpt_*")) == [
        "ckpt_000000003.pt", "ckpt_000000004.pt", "ckpt_000000006.pt"]
    assert latest_checkpoint(tmp_path) == path


def test_latest_skips_a_pointer_to_a_missing_file_and_foreign_names(tmp_path):
    for name in ("ckpt_8.pt", "ckpt_9.pt", "ckpt_10.pt", "ckpt_11.pt.bak", "ckpt_x.pt"):
        torch.save(_state(1), tmp_path / name)
    (tmp_path / "latest").write_text("ckpt_000000012.pt\n")  # pruned by hand
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_10.pt"  # by step number, not by name


def test_load_checkpoint_messages_and_map_location(tmp_path):
    path = save_checkpoint(tmp_path, _state(1), 1)
    assert load_checkpoint(path, map_location="meta")["w"].device.type == "meta"
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save(_state(1) | {"step": -1}, tmp_path / "negative.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever torch raises; the message names its type
        torch.load(tmp_path / "junk.pt", weights_only=True)
    kind = type(raised.value).__name__
    for name, message in [
        ("missing.pt", "checkpoint {!r} not found: expected a file written by scoresde.train"),
        ("list.pt", "checkpoint {!r}: expected a scoresde training checkpoint (format scoresde-checkpoint-1)"),
        ("negative.pt", "checkpoint {!r}: step -1, expected an integer ≥ 0"),
        ("junk.pt", "checkpoint {!r} cannot be read (" + kind + ": torn, truncated or not a torch file): "
                    "expected a complete scoresde checkpoint"),
    ]:
        with pytest.raises(ValueError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == message.format(str(tmp_path / name))


def test_pickled_objects_are_refused_even_where_torch_load_defaults_to_pickle(tmp_path, monkeypatch):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "step": 1, "obj": Opaque()}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load's default: unpickle anything
    with pytest.raises(ValueError, match=r"^checkpoint '.*evil\.pt' cannot be read \(UnpicklingError"):
        load_checkpoint(path)
