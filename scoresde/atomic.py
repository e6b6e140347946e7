"""Atomic file writes: a file is either its old or its new content, never torn.

``atomic_write(path, write)`` calls ``write(f)`` on a temporary file in the same folder,
flushes and fsyncs it, renames it over ``path`` (``os.replace``) and fsyncs the folder. A
process killed at any moment leaves the old file or the new one; the temporary file is named
``.<name>.<random>.tmp`` so a later start can recognise and remove leftovers. Checkpoints,
EMA weights, images, sample arrays, the run log, the summary and cached metric weights are
all written through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write) -> Path:
    """Write ``path`` atomically: ``write(f)`` into a temp file beside it, fsync, rename, fsync dir."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))
