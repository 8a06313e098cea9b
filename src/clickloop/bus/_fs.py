"""File primitives for the local bus: inter-process locks, atomic replace, directory fsync.

The local bus is a set of plain files shared by processes on one host. Three
primitives make that safe:

* :class:`FileLock` — an exclusive ``flock`` on a lock file, plus a thread lock
  because ``flock`` only excludes *other open file descriptions*, not other
  threads using the same one;
* :func:`atomic_write` — write aside, fsync, rename over, fsync the directory:
  a reader sees the old content or the new one, never a mix, even after a crash;
* :func:`fsync_dir` — make a created, renamed or deleted directory entry durable.

Local filesystems only: ``flock`` over NFS is not reliable.

>>> with FileLock(path / "lock"):                            # doctest: +SKIP
...     atomic_write(path / "offsets.json", b"{}")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Final

from clickloop.errors import UsageError

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
RESERVED: Final = frozenset({"groups"})


def check_name(kind: str, name: str) -> str:
    """Validate a topic or group name (it becomes a directory name)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED:
        raise UsageError(
            f"invalid {kind} name {name!r}",
            hint=f"use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
            f" (not {', '.join(sorted(RESERVED))})",
        )
    return name


class FileLock:
    """An exclusive lock shared by threads and processes (``flock`` on ``path``).

    Re-entrant neither across threads nor within one thread: hold it briefly.
    The lock is released by the kernel when the process dies, so a crashed
    holder never blocks the others.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._thread_lock = threading.Lock()

    def __enter__(self) -> FileLock:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content.

    With ``durable`` the data and the rename are fsynced before returning, so
    the new content survives a power loss, not only a process crash.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    """``pwrite`` all of ``data`` at ``position`` (a regular file may take it in pieces)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, position)
        view = view[n:]
        position += n
