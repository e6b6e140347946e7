"""What the machine offers: the device a program runs on and the memory a size may take.

Plain helpers with no package imports, used by the programs (flags), by the run (config keys)
and by ``scoresde.training.build.check_sizes``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

__all__ = ["resolve_device", "available_memory", "check_memory", "cpu_cores", "set_threads", "use_threads"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; "
                             f"expected cpu or auto")
        index = int(name[5:]) if name.startswith("cuda:") else local_rank
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: expected a GPU index below {torch.cuda.device_count()}")
        return torch.device("cuda", index)
    return torch.device("cpu")


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux ``MemAvailable``, capped by a cgroup limit);
    ``None`` where that cannot be read."""
    try:
        info = Path("/proc/meminfo").read_text()
        avail = next(int(line.split()[1]) * 1024 for line in info.splitlines()
                     if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return avail


def check_memory(name: str, value, nbytes: float, what: str, available: int | None = None) -> None:
    """``ValueError`` naming ``name`` (a config key or flag) and ``value`` when ``nbytes`` (a lower
    bound of what it needs) exceeds the available memory (``value=None``: ``name`` says both)."""
    available = available_memory() if available is None else available
    if available is not None and nbytes > available:
        what_was = name if value is None else f"{name}={value}"
        raise ValueError(f"{what_was}: needs at least {nbytes / 2**30:.3g} GiB for {what}, more than "
                         f"the {available / 2**30:.3g} GiB of memory available: expected a smaller value")


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def set_threads(name: str, threads: int | None) -> str | None:
    """``torch.set_num_threads(threads)``, capped at :func:`cpu_cores` (more threads than cores only
    contend: 1 000 threads made 20 steps take 44 s instead of 0.5 s); ``None`` leaves torch's
    default (so does 0). Returns a warning line naming ``name`` when the count was capped, else ``None``."""
    if not threads:
        return None
    cores = cpu_cores()
    torch.set_num_threads(min(threads, cores))
    if threads > cores:
        return f"warning: {name}={threads} is more than the {cores} CPU cores available: using {cores} threads"
    return None


def use_threads(flag: int | None, config) -> None:
    """The thread count of ``sample``/``evaluate``: ``--threads`` (``flag``), else the run's
    ``train.threads`` (``config``; ``None`` for a diffusers folder: torch's default), through
    :func:`set_threads`; the warning line, if capped, on standard error."""
    threads = flag or (config.train.threads if config is not None else None)
    note = set_threads("--threads" if flag else "train.threads", threads)
    if note:
        print(note, file=sys.stderr)
