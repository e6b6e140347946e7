"""Bounds on the config files of a diffusers folder, checked before diffusers builds anything.

A folder someone else wrote is data (docs/interop.md): ``unet/config.json`` and
``scheduler/scheduler_config.json`` are read as JSON and each value diffusers would size memory
or pick code by is checked here first — the number of training steps, the β schedule's name
and values, the image size, the channel counts, the blocks. A bad value is one ``ValueError``
naming the file, the key and what was expected (the programs print it as one line, exit 2),
instead of a crash or a 40 GB allocation inside diffusers.
"""

from __future__ import annotations

import math

from scoresde.util.host import check_memory

__all__ = ["BETA_SCHEDULES", "MAX_TRAIN_TIMESTEPS", "MAX_SIZE", "check_unet_config", "check_scheduler_config"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")  # DDPM-type schedulers' names
MAX_TRAIN_TIMESTEPS = 1_000_000   # diffusers' DDPM uses 1 000
MAX_SIZE = 65_536                 # image side, channel count


def _int(where: str, key: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}: {key}={value!r}: expected an integer in [{low}, {high}]")
    return value


def _ints(where: str, key: str, value, low: int, high: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 64:
        raise ValueError(f"{where}: {key}={str(value)[:80]}: expected a list of 1 to 64 integers in [{low}, {high}]")
    return [_int(where, f"{key}[{i}]", v, low, high) for i, v in enumerate(value)]


def _unit(where: str, key: str, value) -> float:
    """A β: a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{where}: {key}={value!r}: expected a number in (0, 1)")
    return float(value)


def check_scheduler_config(cfg: dict, where: str) -> None:
    """``scheduler_config.json``: ``num_train_timesteps`` an integer in ``[1, 10⁶]``; ``trained_betas``
    that many numbers in (0, 1), or a known ``beta_schedule`` with ``beta_start``/``beta_end`` in (0, 1)."""
    n = cfg.get("num_train_timesteps", 1000)
    _int(where, "num_train_timesteps", n, 1, MAX_TRAIN_TIMESTEPS)
    betas = cfg.get("trained_betas")
    if betas is not None:
        if not isinstance(betas, list) or len(betas) != n:
            got = len(betas) if isinstance(betas, list) else repr(betas)[:40]
            raise ValueError(f"{where}: trained_betas holds {got} values: expected a list of "
                             f"num_train_timesteps={n} numbers in (0, 1)")
        for i, b in enumerate(betas):
            _unit(where, f"trained_betas[{i}]", b)
        return
    schedule = cfg.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"{where}: beta_schedule={schedule!r}: expected one of {', '.join(BETA_SCHEDULES)} "
                         f"(or trained_betas)")
    for key, default in (("beta_start", 0.0001), ("beta_end", 0.02)):
        _unit(where, key, cfg.get(key, default))


def check_unet_config(cfg: dict, where: str) -> None:
    """``unet/config.json``: ``sample_size`` (one side or ``[H, W]``), ``in_channels``,
    ``out_channels``, ``block_out_channels``, ``layers_per_block`` positive and bounded, and the
    network's weights (a lower bound: 3×3 convolutions of each block) fitting in memory."""
    size = cfg.get("sample_size", 32)
    if isinstance(size, (list, tuple)):
        sides = _ints(where, "sample_size", size, 1, MAX_SIZE)
        if len(sides) != 2:
            raise ValueError(f"{where}: sample_size={size!r}: expected one side or [height, width]")
    else:
        sides = [_int(where, "sample_size", size, 1, MAX_SIZE)] * 2
    for key in ("in_channels", "out_channels"):
        _int(where, key, cfg.get(key, 3), 1, MAX_SIZE)
    blocks = _ints(where, "block_out_channels", cfg.get("block_out_channels", [224, 448, 672, 896]), 1, MAX_SIZE)
    layers = _int(where, "layers_per_block", cfg.get("layers_per_block", 2), 1, 64)
    weights = sum(9 * c * c * 2 * layers for c in blocks)
    check_memory(f"{where}: block_out_channels", blocks, 4.0 * weights, "the UNet's weights (float32)")
    check_memory(f"{where}: sample_size", size, 4.0 * max(blocks) * math.prod(sides),
                 "one image's activations (float32)")
