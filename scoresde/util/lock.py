"""One owner per folder: an exclusive, advisory OS lock on the folder itself that dies with its process.

``python -m scoresde.train`` holds the lock of its run folder for the whole run, so a second
``train`` on the same folder (two ``--resume auto`` at once included) is refused with one line
naming the holder's process id instead of both writing the same checkpoints and log::

    with FolderLock(run) as lock:   # FolderBusy (a ValueError: exit status 2) if another process holds it
        ...                         # lock.note: a warning where the file system has no locks

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a descriptor of the folder (no lock file: taking
it writes nothing, and a refused process leaves the folder exactly as it was). The kernel drops
it when the process ends in any way (exit, crash, ``kill -9``), so there is never a stale lock to
clean up. The holder's process id is read from ``/proc/locks`` (Linux); elsewhere the refusal
says "another process". Readers (``sample``, ``evaluate``) take no lock: every file of a run
folder is replaced atomically, so they see the old or the new file, never a torn one.

File systems without ``flock`` (some network file systems answer ``ENOLCK`` or ``EOPNOTSUPP``)
and platforms without ``fcntl`` (Windows): the folder is used without a lock and ``note`` says
so, for the program to print as a warning; nothing then stops a second writer.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["FolderBusy", "FolderLock", "lock_holder"]

_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class FolderBusy(ValueError):
    """Another process holds the folder's lock (bad input for a program: exit status 2)."""


def lock_holder(folder) -> int | None:
    """The process id holding a ``flock`` on ``folder`` (Linux ``/proc/locks``), ``None`` if unknown."""
    try:
        inode = os.stat(folder).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF" ("->" marks a waiter)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[2] != "->":
            try:
                pid, ino = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
            except (ValueError, IndexError):
                continue
            if ino == inode and pid != os.getpid():
                return pid
    return None


class FolderLock:
    """The exclusive lock of ``folder`` (which must exist), taken by :meth:`acquire` or ``with``."""

    def __init__(self, folder, what: str = "run folder"):
        self.folder, self.what = Path(folder), what
        self.fd: int | None = None
        self.note: str | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None:  # pragma: no cover - Windows
            self.note = f"{self.what} {str(self.folder)!r} is used without a lock (no fcntl on this platform)"
            return self
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = lock_holder(self.folder)
            who = f"process {pid}" if pid is not None else "another process"
            raise FolderBusy(f"{self.what} {str(self.folder)!r} is in use by {who}: expected one writer at a "
                             f"time (wait for it to finish, or choose another folder)") from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            self.note = (f"{self.what} {str(self.folder)!r} is on a file system without locks "
                         f"({os.strerror(e.errno)}): nothing stops a second writer")
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None and self.note is None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
