"""Artifact storage: a directory per model version under a root that is a local path
(``<lake>/artifacts``) or any fsspec URL (``s3://bucket/clickloop/artifacts``).

Files are written first and ``model.json`` last, under a fresh unique key, so a
reader never sees a half-written version and a retried upload never collides.

>>> store = ArtifactStore("/srv/shop/.clickloop/lake/artifacts")
>>> uri = store.put_dir(Path("/tmp/model"), "models/ctr")        # doctest: +SKIP
>>> store.get_dir(uri, Path("/tmp/copy"))                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import fsspec

from clickloop.errors import BackendUnavailableError, DataError

LAST = "model.json"


class ArtifactStore:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
        self.local = self.fs.protocol in ("file", ("file", "local")) or "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def _join(self, key: str) -> str:
        return f"{self._root_path.rstrip('/')}/{key.strip('/')}"

    def uri(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}"

    def put_dir(self, source: Path, prefix: str) -> str:
        """Copy the files of ``source`` under ``prefix/<unique>``; return the directory URI."""
        key = f"{prefix.strip('/')}/{uuid.uuid4().hex[:16]}"
        target = self._join(key)
        files = sorted(p for p in source.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != LAST] + [p for p in files if p.name == LAST]
        try:
            if self.local:
                tmp = Path(target + ".partial")
                tmp.mkdir(parents=True, exist_ok=False)
                for p in ordered:
                    dest = tmp / p.relative_to(source)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, dest)
                    with open(dest, "rb") as fh:
                        os.fsync(fh.fileno())
                tmp.replace(target)  # the directory appears whole or not at all
            else:
                for p in ordered:
                    self.fs.put_file(str(p), f"{target}/{p.relative_to(source).as_posix()}")
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot write artifacts to {self.uri(key)}: {exc}"
            ) from exc
        return self.uri(key)

    def _path_of(self, uri: str) -> str:
        if not uri.startswith(self.root):
            raise DataError(f"artifact {uri} is not under this store's root {self.root}")
        return self._join(uri[len(self.root) :])

    def get_dir(self, uri: str, dest: Path) -> Path:
        """The artifact directory as a local path (remote ones are copied into ``dest``)."""
        path = self._path_of(uri)
        if self.local:
            if not Path(path).is_dir():
                raise DataError(
                    f"artifact directory {uri} is missing",
                    hint="the artifact store was changed or cleaned; re-register",
                )
            return Path(path)
        if (dest / LAST).exists():
            return dest
        tmp = dest.with_name(dest.name + f".partial-{uuid.uuid4().hex[:8]}")
        try:
            names = self.fs.find(path)
            if not names:
                raise DataError(f"artifact directory {uri} is missing")
            for name in names:
                rel = name[len(path.rstrip("/")) + 1 :]
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(name, str(tmp / rel))
        except OSError as exc:
            raise BackendUnavailableError(f"cannot read artifacts at {uri}: {exc}") from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.replace(dest)
        return dest

    def read_bytes(self, uri: str, name: str) -> bytes:
        with self.fs.open(f"{self._path_of(uri)}/{name}", "rb") as fh:
            data: bytes = fh.read()
        return data
