"""The lake's view of a filesystem: a root directory reached through fsspec.

The lake never cares whether its root is a local directory, ``memory://``,
``s3://`` or ``gs://``; every file operation goes through :class:`Storage`,
which offers the few primitives the commit protocol needs:

* :meth:`Storage.put_atomic` — readers see the old object or the new one, never
  a mix (local: write aside, fsync, rename, fsync the directory; object stores:
  one PUT is atomic already);
* :meth:`Storage.put_exclusive` — create an object only if it does not exist,
  which is how concurrent writers agree on the next commit number (local:
  ``link(2)``, atomic; object stores: fsspec's ``"xb"`` mode, atomic where the
  backend supports conditional writes, e.g. recent s3fs);
* :meth:`Storage.writer` — a streaming writer whose output appears under its
  final name only when complete;
* :meth:`Storage.arrow_filesystem` — the same root for pyarrow datasets.

>>> s = Storage.open("memory://lake-doc")
>>> s.put_exclusive("_log/1.json", b"{}")
True
>>> s.put_exclusive("_log/1.json", b"{}")
False
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from clickloop.errors import BackendUnavailableError, ConfigError

# fsspec's generic "xb" is check-then-write; within one process a lock at least
# makes it exclusive between threads (the memory filesystem lives in-process).
_EXCLUSIVE = threading.Lock()


@dataclass
class Storage:
    """A root directory on some filesystem; all paths given to methods are relative."""

    fs: Any  # fsspec.AbstractFileSystem
    root: str  # in the filesystem's own spelling (no protocol for local paths)
    url: str  # how the user wrote it (for messages)

    @classmethod
    def open(
        cls, location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
    ) -> Storage:
        """Open ``location`` (a local path or an fsspec URL)."""
        text = os.fspath(location)
        try:
            fs, root = fsspec.core.url_to_fs(text, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"cannot open lake root {text!r}: {exc}",
                hint="install the filesystem's extra (e.g. pip install 'clickloop[s3]') "
                "or check lake.root",
            ) from exc
        root = root.rstrip("/") or "/"
        if isinstance(fs, LocalFileSystem):
            root = str(Path(root).resolve())
            Path(root).mkdir(parents=True, exist_ok=True)
        return cls(fs=fs, root=root, url=text)

    # -- paths ---------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (relative to the root)."""
        return f"{self.root.rstrip('/')}/{rel.lstrip('/')}" if rel else self.root

    def rel(self, path: str) -> str:
        """The inverse of :meth:`path`."""
        prefix = self.root.rstrip("/") + "/"
        path = self.fs._strip_protocol(path) if not self.local else path
        return path[len(prefix) :] if path.startswith(prefix) else path

    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem on which :meth:`path` values can be opened."""
        if self.local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    # -- reads ---------------------------------------------------------------------------

    def read(self, rel: str) -> bytes:
        """The whole object; ``FileNotFoundError`` when absent."""
        if self.local:
            return Path(self.path(rel)).read_bytes()
        return bytes(self._call(self.fs.cat_file, self.path(rel)))

    def exists(self, rel: str) -> bool:
        return bool(self._call(self.fs.exists, self.path(rel)))

    def size(self, rel: str) -> int:
        if self.local:
            return Path(self.path(rel)).stat().st_size
        return int(self._call(self.fs.size, self.path(rel)))

    def listdir(self, rel: str) -> list[dict[str, Any]]:
        """Entries directly under ``rel`` (``name`` relative to the root, ``type``, ``size``,
        ``mtime`` when known); an absent directory is empty."""
        try:
            entries = self._call(self.fs.ls, self.path(rel), detail=True)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            mtime = e.get("mtime") or e.get("LastModified") or e.get("updated") or e.get("created")
            if hasattr(mtime, "timestamp"):
                mtime = mtime.timestamp()
            out.append(
                {
                    "name": self.rel(e["name"]),
                    "type": e.get("type", "file"),
                    "size": e.get("size", 0),
                    "mtime": float(mtime) if isinstance(mtime, int | float) else None,
                }
            )
        return out

    def walk_files(self, rel: str) -> Iterator[dict[str, Any]]:
        """Every file below ``rel`` (recursively)."""
        for entry in self.listdir(rel):
            if entry["type"] == "directory":
                yield from self.walk_files(entry["name"])
            else:
                yield entry

    # -- writes --------------------------------------------------------------------------

    def put_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data``; readers see the old or the new content, never a mix."""
        path = self.path(rel)
        if self.local:
            from clickloop.bus._fs import atomic_write

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(Path(path), data)
            return
        self._call(self.fs.pipe_file, path, data)

    def put_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists; ``True`` if this call created it."""
        path = self.path(rel)
        if self.local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
            from clickloop.bus._fs import atomic_write, fsync_dir

            atomic_write(tmp, data)
            try:
                os.link(tmp, target)  # atomic and fails if the name is taken
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            fsync_dir(target.parent)
            return True
        with _EXCLUSIVE:
            try:
                with self._call(self.fs.open, path, "xb") as f:
                    f.write(data)
            except FileExistsError:
                return False
        return True

    @contextlib.contextmanager
    def writer(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary file that appears as ``rel`` only once closed without error.

        Local files are written under a hidden name, fsynced and renamed; on
        object stores the upload itself completes atomically.
        """
        path = self.path(rel)
        if self.local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                with open(tmp, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                tmp.replace(target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            from clickloop.bus._fs import fsync_dir

            fsync_dir(target.parent)
            return
        f = self._call(self.fs.open, path, "wb")
        try:
            yield f
        except BaseException:
            discard = getattr(f, "discard", None)
            if callable(discard):  # abort a multipart upload instead of completing it
                discard()
            else:
                f.close()
                self.remove(rel)
            raise
        f.close()

    def remove(self, rel: str) -> None:
        """Delete ``rel``; absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                Path(self.path(rel)).unlink()
            else:
                self._call(self.fs.rm_file, self.path(rel))

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (FileNotFoundError, FileExistsError):
            raise
        except (ConnectionError, TimeoutError) as exc:
            raise BackendUnavailableError(
                f"lake storage {self.url} is unreachable: {exc}",
                hint="check the network and lake.storage_options",
            ) from exc
