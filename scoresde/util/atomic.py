"""Atomic file writes: a file is either its old or its new content, never torn.

``atomic_write(path, write)`` calls ``write(f)`` on a temporary file in the same folder,
flushes and fsyncs it, renames it over ``path`` (``os.replace``) and fsyncs the folder. A
process killed at any moment leaves the old file or the new one; the temporary file is named
``.<name>.<random>.tmp`` so a later start can recognise and remove leftovers. Checkpoints,
EMA weights, images, sample arrays, the run log, the summary and cached metric weights are
all written through it.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_together", "current_umask", "fsync_dir",
           "remove_temp_files", "remove_empty", "nearest_existing", "writable_folder", "first_non_file"]


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


def current_umask() -> int:
    """The process's umask (read without a race on Linux)."""
    return _umask()


def _umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Sink:
    """A binary file that remembers the ``OSError`` of a failed write (disk full, file too large),
    which writers such as ``torch.save`` turn into a ``RuntimeError`` without the cause."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()

    def __getattr__(self, name):  # tell, seek, fileno, ...: the file's own
        return getattr(self.f, name)


def atomic_write(path, write) -> Path:
    """Write ``path`` atomically: ``write(f)`` into a temp file beside it, fsync, rename, fsync dir.

    The file gets the permissions of a normally created one (``0o666`` less the umask), not the
    ``0o600`` of a temporary file. A failed write inside ``write`` is raised as its ``OSError``
    (``torch.save`` would report it as a ``RuntimeError``). A writer killed before the rename
    leaves ``.<name>.*.tmp`` beside the target; :func:`remove_temp_files` cleans those up.
    """
    path = Path(path)
    tmp = _temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _temp(path: Path, write) -> Path:
    """``write(f)`` into a durable temp file beside ``path`` (mode ``0o666`` less the umask)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f)
            try:
                write(sink)
            except Exception:
                if sink.error is not None:
                    raise sink.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_together(parts) -> list[Path]:
    """Write several files as one unit: ``parts`` is a list of ``(path, write)``; the last path is
    the unit's mark (a sample's PNG beside its ``.npz``).

    Every part is first written to its temp file: a failure there (disk full) leaves every old
    file as it was and no temp file. Then the old mark is removed, the other parts are renamed
    into place, and the mark last. A process killed at any moment therefore never leaves a mark
    beside parts of another write: it leaves the old unit, or parts without a mark (old or new,
    never mixed with a mark), or the new unit; the next write of the unit removes the temp files
    such a kill left. Returns the paths."""
    paths = [Path(p) for p, _ in parts]
    temps: list[Path] = []
    try:
        for path, write in zip(paths, (w for _, w in parts)):
            temps.append(_temp(path, write))
        paths[-1].unlink(missing_ok=True)  # the old mark goes first: no mark beside new parts
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {p.parent for p in paths}:
        fsync_dir(folder)
    for path in paths:  # temp files of these names left by a writer killed earlier
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
    return paths


def remove_temp_files(folder) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) a killed :func:`atomic_write` left in ``folder``."""
    folder = Path(folder)
    gone = []
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                gone.append(tmp)
    return gone


def remove_empty(folders) -> None:
    """Remove ``folders`` (innermost first: the folders a failed write made) while each is empty;
    stop at the first that is not (another process's files are in it)."""
    for folder in folders:
        try:
            Path(folder).rmdir()
        except OSError:
            break


def atomic_write_bytes(path, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


# Checks before the first byte: can these paths be written? ---------------------------------------

def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (where it would be created)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def writable_folder(path: Path) -> bool:
    """True for a folder in which entries can be created and replaced."""
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def first_non_file(paths) -> Path | None:
    """The first of ``paths`` that exists and is not a plain file (a folder, a socket, ...): an
    atomic write could not replace it. ``None`` when every one is a file or absent."""
    return next((Path(p) for p in paths if Path(p).exists() and not Path(p).is_file()), None)
