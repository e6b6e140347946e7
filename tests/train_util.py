"""Helpers shared by the training/CLI tests: tiny configs, tiny data files, running the CLIs."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scoresde.training.runlog import read_metrics

# A 2-D ring run small enough for a fraction of a second per step on a busy CPU.
TINY_TOY = {
    "seed": 0, "device": "cpu",
    "data": {"name": "ring", "n": 256},
    "model": {"kind": "mlp", "hidden": 32, "depth": 1, "time_dim": 16},
    "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "warmup_steps": 2, "log_every": 1,
              "ckpt_every": 2, "keep_last": 2, "threads": 1, "tensorboard": False},
    "sample": {"sampler": "ddim", "steps": 5, "n": 0},
    "eval": {"bpd": False, "vlb": False},
}

# A digits run with a tiny U-Net.
TINY_DIGITS = {
    "seed": 0, "device": "cpu",
    "data": {"name": "digits", "n": 128},
    "model": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [4], "dropout": 0.1},
    "train": {"steps": 2, "batch_size": 16, "log_every": 1, "ckpt_every": 2, "threads": 1,
              "tensorboard": False},
    "sample": {"sampler": "ddim", "steps": 3, "n": 4},
    "eval": {"bpd": False, "vlb": False},
}

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_config(path: Path, base: dict, **sections) -> Path:
    """``base`` updated section by section (``train={"steps": 8}``) written as YAML."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_module(module: str, *args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """``python -m <module> args`` in a subprocess with one thread; text output captured."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout, **kw)


def loss_log(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")}
            for r in read_metrics(run / "metrics.jsonl")]


def snapshot(folder: Path) -> dict:
    """``{relative path: bytes}`` of every file below ``folder`` (to prove nothing was damaged)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_mnist(root: Path, n_train: int = 40, n_test: int = 8, size: int = 28, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size)))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return root


def tiny_cifar10(root: Path, n_per_batch: int = 8, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3 * size * size), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def params(run: Path) -> dict:
    """The model state of a run's latest checkpoint."""
    from scoresde.training.checkpoint import latest_checkpoint, load_checkpoint

    return load_checkpoint(latest_checkpoint(run / "checkpoints"))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_run(config: Path, out: Path, base: dict, **sections) -> Path:
    """Write ``base`` updated by ``sections`` (:func:`write_config`) to ``config`` and train it into
    ``out`` with ``scoresde.train.main`` in this process, giving back torch's thread count (which
    ``main`` sets from the config; for module-scoped fixtures, which :func:`restore_threads` does
    not cover). Returns ``out``."""
    from scoresde.train import main

    n = torch.get_num_threads()
    try:
        assert main(["--config", write_config(config, base, **sections), "--out", out]) == 0
    finally:
        torch.set_num_threads(n)
    return out


@pytest.fixture(autouse=True)
def restore_threads():
    """``main`` sets torch's thread count from the config: give it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _fresh_signal_state() -> None:
    """A forked child starts with the signal state of a fresh ``python -m scoresde.train``, whatever
    the test process (a pytest-xdist worker that ran other files first) left behind: nothing
    blocked, Python's own SIGINT handler (KeyboardInterrupt), SIGTERM's default."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def fork_main(argv, log_path: Path | None = None, *, file_limit: int | None = None, stdout: bool = True) -> int:
    """Run ``scoresde.train.main(argv)`` in a forked child (no interpreter start-up, so many
    kills stay cheap); returns the child's pid. Its stderr (and stdout unless ``stdout=False``)
    goes to ``log_path``. ``file_limit``: the child's files cannot grow past that many bytes
    (``RLIMIT_FSIZE``; a write beyond fails with ``EFBIG`` instead of a kill): a real write failure."""
    from scoresde.train import main

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # its lazy torch._dynamo import: once, here
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 99
        try:
            _fresh_signal_state()
            fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 2)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            if stdout:
                os.dup2(fd, 1)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
            if file_limit is not None:
                import resource
                import signal

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
            torch.set_num_threads(1)
            code = main([str(a) for a in argv])
        finally:
            os._exit(code)
    return pid


def wait_status(pid: int, timeout: float = 120.0) -> int:
    """Exit status of a forked child (``-signum`` if killed by a signal)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise TimeoutError(f"child {pid} did not finish in {timeout} s")
