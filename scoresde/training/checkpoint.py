"""Crash-safe checkpoints of the full training state, EMA weight export, and loading a run
(:func:`load_run`) or whatever a program's ``--ckpt`` names (:func:`load_model`).

Layout of a run folder's ``checkpoints/``::

    ckpt_000001000.pt   torch.save of a dict of tensors and plain types (weights_only-loadable)
    latest              one line: the file name of the newest complete checkpoint

Every file is written by :func:`scoresde.util.atomic.atomic_write` (temporary file, fsync, rename,
fsync of the folder): a process killed at any moment leaves either the old or the new file,
never a torn one. Old
checkpoints are pruned (keep-last-k) only after the new one and its pointer are on disk.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from scoresde.core.model import ScoreModel
from scoresde.interop.loader import is_diffusers_folder, load_diffusers
from scoresde.training.build import build_model
from scoresde.training.config import Config, config_from_dict, config_to_yaml, read_yaml_text
from scoresde.util.atomic import atomic_write, remove_temp_files

__all__ = ["FORMAT", "save_checkpoint", "latest_checkpoint", "load_checkpoint", "check_checkpoint",
           "check_weights", "TRAINING_ENTRIES", "capture_rng", "restore_rng", "export_ema_safetensors",
           "load_run", "load_model", "LoadedRun"]

FORMAT = "scoresde-checkpoint-1"
EMA_FORMAT = "scoresde-ema-1"
_CKPT = re.compile(r"^ckpt_(\d+)\.pt$")


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as ``(step, path)``, oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("ckpt_*.pt") if (m := _CKPT.match(p.name))]
    return sorted(found)


def save_checkpoint(folder, state: dict, step: int, keep_last: int = 2) -> Path:
    """Save ``state`` as ``folder/ckpt_<step>.pt``, point ``latest`` at it, then prune.

    Returns the checkpoint's path. Temp files left by a killed writer are removed too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write(folder / f"ckpt_{step:09d}.pt", lambda f: torch.save(state, f))
    atomic_write(folder / "latest", lambda f: f.write(f"{path.name}\n".encode()))
    for _, old in _checkpoints(folder)[:-keep_last]:
        if old != path:
            old.unlink(missing_ok=True)
    remove_temp_files(folder)
    return path


def latest_checkpoint(folder) -> Path | None:
    """The checkpoint ``folder/latest`` names; the newest complete one if the pointer is absent."""
    folder = Path(folder)
    pointer = folder / "latest"
    if pointer.is_file():
        name = pointer.read_text().strip()
        if _CKPT.match(name) and (folder / name).is_file():
            return folder / name
    found = _checkpoints(folder) if folder.is_dir() else []
    return found[-1][1] if found else None


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True``; ``ValueError`` naming the file if it
    is missing, truncated, corrupt or not a scoresde checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} not found: expected a file written by scoresde.train")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for torn or corrupt files
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: torn, truncated "
                         f"or not a torch file): expected a complete scoresde checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r}: expected a scoresde training checkpoint "
                         f"(format {FORMAT})")
    check_checkpoint(state, path)
    return state


# The entries of a checkpoint and their types (docs/training.md, "The run folder").
_ENTRIES = {"model": dict, "ema": dict, "ema_updates": int, "optimizer": dict, "scheduler": dict,
            "step": int, "data": dict, "rng": (list, dict), "bad_steps": int, "log_window": (list, tuple),
            "config": dict, "world_size": int}


def check_weights(weights, what: str) -> None:
    """``weights`` must map names to tensors with finite floating-point values; ``ValueError``
    naming ``what`` and the first bad entry otherwise."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{what}: expected a non-empty state dict of tensors, got {type(weights).__name__}")
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{what}: entry {name!r} is a {type(value).__name__}, expected a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{what}: weight {name!r} holds non-finite values (NaN or inf): "
                             f"expected finite weights")


TRAINING_ENTRIES = tuple(k for k in _ENTRIES if k != "world_size")  # world_size: optional


def check_checkpoint(state: dict, path, required=("step",)) -> None:
    """The ``required`` entries present, every entry of its type, ``step`` ≥ 0, finite weights;
    ``ValueError`` naming the file and the entry otherwise (``TRAINING_ENTRIES``: all, to resume)."""
    where = f"checkpoint {str(path)!r}"
    for key in required:
        if key not in state:
            raise ValueError(f"{where} has no {key!r} entry: expected a complete scoresde checkpoint "
                             f"(entries {', '.join(TRAINING_ENTRIES)})")
    for key, kind in _ENTRIES.items():
        value = state.get(key)
        if key in state and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            words = {int: "an integer", dict: "a dict", list: "a list", tuple: "a tuple"}
            names = " or ".join(words[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ValueError(f"{where}: entry {key!r} is a {type(value).__name__}, expected {names}")
    if state.get("step", 0) < 0:
        raise ValueError(f"{where}: step {state['step']}, expected an integer ≥ 0")
    counters = {key: state[key] for key in ("ema_updates", "bad_steps") if key in state}
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    counters.update({f"data.{key}": data[key] for key in ("epoch", "position") if key in data})
    for key, value in counters.items():  # a negative counter would replay or skip steps silently
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: entry {key!r} is {value!r}, expected an integer ≥ 0")
    if state.get("world_size", 1) < 1:
        raise ValueError(f"{where}: entry 'world_size' is {state['world_size']}, expected an integer ≥ 1 "
                         f"(the processes that wrote it)")
    for key in ("model", "ema"):
        if key in state:
            check_weights(state[key], f"{where}, entry {key!r}")


# RNG states as tensors and plain types (torch.load(weights_only=True) refuses numpy objects).
def capture_rng() -> dict:
    """The torch CPU/CUDA, numpy and Python RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64, device="cpu"),
                   "gauss_next": gauss_next},
    }


def restore_rng(rng: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def export_ema_safetensors(path, model, config: Config, step: int | None = None) -> Path:
    """Write EMA weights (a module or a state dict) to ``path`` with the config as YAML metadata."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    meta = {"format": EMA_FORMAT, "config": config_to_yaml(config), "step": str(step)}
    data = _canonical(st_save(tensors, metadata=meta))
    return atomic_write(path, lambda f: f.write(data))


def _canonical(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted (``sort_keys`` sorts the nested
    ``__metadata__`` too): safetensors writes the metadata in hash order, which differs between
    processes, so identical runs would give different bytes. The tensor offsets are unchanged;
    the header is padded to 8 bytes."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def _read_safetensors(path: Path) -> tuple[dict, Config, int | None]:
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        header = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header]).get("__metadata__") or {}
    except (OSError, SafetensorError, ValueError, AttributeError) as e:
        raise ValueError(f"weights file {str(path)!r} cannot be read ({str(e).splitlines()[0][:100]}): "
                         f"expected a safetensors file written by scoresde.train") from None
    if not isinstance(meta, dict) or meta.get("format") != EMA_FORMAT or "config" not in meta:
        raise ValueError(f"weights file {str(path)!r}: expected scoresde EMA weights with config metadata")
    try:
        config = read_yaml_text(meta["config"], origin=f"weights file {str(path)!r}: its config metadata")
    except yaml.YAMLError as e:
        raise ValueError(f"weights file {str(path)!r}: its config metadata is not valid YAML "
                         f"({str(e).splitlines()[0]}): expected the run's config") from None
    if not isinstance(config, dict):
        raise ValueError(f"weights file {str(path)!r}: its config metadata is a {type(config).__name__}, "
                         f"expected a mapping of config sections")
    step = meta.get("step")
    if step not in (None, "None") and not (isinstance(step, str) and step.isdigit()):
        raise ValueError(f"weights file {str(path)!r}: step metadata {step!r}, expected an integer ≥ 0")
    cfg = _config_of(config, path)
    check_weights(tensors, f"weights file {str(path)!r}")
    return tensors, cfg, int(step) if step not in (None, "None") else None


def _config_of(data: dict, path: Path) -> Config:
    """The validated config stored in a checkpoint or weights file; errors name the file."""
    try:
        return config_from_dict(data, origin=str(path))
    except (ValueError, TypeError) as e:
        text = str(e)
        raise type(e)(text if text.startswith(str(path)) else f"{str(path)!r}: {text}") from None


@dataclass
class LoadedRun:
    """A trained score model (eval mode) with its config, step and the file it came from (``config``
    and ``step`` are ``None`` for a diffusers folder)."""

    model: ScoreModel
    config: Config
    step: int | None
    source: Path


def load_run(run_dir, *, device="cpu", ema: bool = True) -> LoadedRun:
    """Load a trained model (eval mode, weights frozen) from a run folder, a checkpoint ``.pt``
    or an ``ema.safetensors``.

    A run folder gives its latest checkpoint (or ``ema.safetensors`` when no checkpoint is
    left). ``ema=True`` loads the EMA weights (used for sampling and evaluation).
    """
    path, state = Path(run_dir), None
    if path.is_dir():  # read without a lock: a training process may be writing the folder
        folder = path
        for attempt in range(10):
            ckpt = latest_checkpoint(folder / "checkpoints")
            if ckpt is None and not (folder / "ema.safetensors").is_file():
                raise ValueError(f"run folder {str(folder)!r} has no checkpoints/ and no ema.safetensors: "
                                 f"expected a folder written by scoresde.train")
            path = ckpt if ckpt is not None else folder / "ema.safetensors"
            if ckpt is None:
                break
            try:
                state = load_checkpoint(ckpt)  # once open, the file stays readable even if pruned
                break
            except ValueError:
                if ckpt.exists() or attempt == 9:
                    raise
                # pruned by the writer between reading `latest` and opening it: read `latest` again
    elif not path.is_file():
        raise ValueError(f"--ckpt {str(path)!r} not found: expected a run folder, a checkpoint "
                         f"or an ema.safetensors file")
    if path.suffix == ".safetensors":
        if not ema:
            raise ValueError(f"{str(path)!r} holds only EMA weights: expected a checkpoint for ema=False")
        weights, cfg, step = _read_safetensors(path)
    else:
        state = load_checkpoint(path) if state is None else state
        check_checkpoint(state, path, required=("step", "config", "ema" if ema else "model"))
        weights, step = state["ema"] if ema else state["model"], state["step"]
        cfg = _config_of(state["config"], path)
    model = build_model(cfg)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as e:
        detail = (str(e).splitlines()[1:] or [str(e)])[0].strip()
        raise ValueError(f"{str(path)!r}: weights do not fit the model its config describes "
                         f"({detail})") from None
    return LoadedRun(model.to(device).eval().requires_grad_(False), cfg, step, path)


def load_model(path, *, device="cpu"):
    """What a program's ``--ckpt`` names, loaded for sampling or evaluation: a :class:`LoadedRun`
    whose ``model`` is a scoresde run's EMA model, or a
    :class:`~scoresde.interop.adapter.DiffusersModel` for a diffusers folder (then ``config`` and
    ``step`` are ``None``)."""
    if is_diffusers_folder(path):
        return LoadedRun(load_diffusers(path, device=device), None, None, Path(path))
    if (Path(path) / "config.json").is_file() or (Path(path) / "scheduler_config.json").is_file():
        raise ValueError(f"{str(path)!r} is one part of a diffusers folder: expected the folder holding "
                         f"unet/ and scheduler/ (or model_index.json)")
    return load_run(path, device=device, ema=True)
