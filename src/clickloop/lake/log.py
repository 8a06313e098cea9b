"""The lake's commit log: the only record of which files exist.

A lake is its log. ``_log/00000000000000000042.json`` is commit 42: the data
files it adds (and, for compaction, removes), the accounting of what came in
(received / accepted / quarantined by reason / duplicates, per source) and the
source checkpoints it advances (a file's fingerprint and how far it was read;
a bus partition's next offset). Readers see exactly the files named by the
commits, so a file written by a writer that crashed before committing is
invisible, and a commit is all-or-nothing: it is one object, created
exclusively under the next number.

Writers race for the next number with :meth:`Storage.put_exclusive`; the loser
re-reads what won, checks whether it conflicts (an expected checkpoint moved,
a file it compacts is gone) and tries the next number. Every
``CHECKPOINT_EVERY`` commits a checkpoint (``…42.checkpoint.json``: the whole
state) lets readers skip replaying history.

>>> log = CommitLog(Storage.open("memory://log-doc"))
>>> log.refresh().version
0
>>> log.try_commit(Commit(operation="append", counts={"web": SourceCounts(received=1, accepted=1)}))
True
>>> log.state.sources["web"].accepted
1
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from clickloop.errors import DataError
from clickloop.lake.storage import Storage

log = logging.getLogger(__name__)

LOG_DIR: Final = "_log"
CHECKPOINT_EVERY: Final = 100
FORMAT: Final = 1


def _name(version: int) -> str:
    return f"{LOG_DIR}/{version:020d}.json"


def _checkpoint_name(version: int) -> str:
    return f"{LOG_DIR}/{version:020d}.checkpoint.json"


LAST_CHECKPOINT: Final = f"{LOG_DIR}/_last_checkpoint"


@dataclass
class FileEntry:
    """One committed data file (``kind`` is ``events`` or ``quarantine``)."""

    path: str
    kind: str
    dt: str  # partition date: event date (events) or arrival date (quarantine)
    rows: int
    bytes: int
    ts_min: int  # µs; events: event time; quarantine: arrival time
    ts_max: int
    received_max: int
    ids: str | None = None  # dedupe sidecar (events only)
    version: int = 0  # the commit that added it
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(**d)


@dataclass
class SourceCounts:
    """What one source delivered: ``received == accepted + duplicates + Σ quarantined``."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def balanced(self) -> bool:
        return self.received == self.accepted + self.duplicates + self.quarantined_total

    def add(self, other: SourceCounts) -> None:
        self.received += other.received
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        for reason, n in other.quarantined.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": dict(sorted(self.quarantined.items())),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SourceCounts:
        return cls(
            received=int(d.get("received", 0)),
            accepted=int(d.get("accepted", 0)),
            duplicates=int(d.get("duplicates", 0)),
            quarantined={str(k): int(v) for k, v in d.get("quarantined", {}).items()},
        )


@dataclass
class Commit:
    """One atomic change to the lake."""

    operation: str  # ingest-batch, ingest-stream, append, compact, …
    add: list[FileEntry] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # tombstones of vacuumed files
    counts: dict[str, SourceCounts] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)  # key → new value
    expect: dict[str, Any] = field(default_factory=dict)  # key → value it must still have
    writer: str = ""
    time: float = 0.0
    version: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": self.version,
                "operation": self.operation,
                "time": self.time,
                "writer": self.writer,
                "add": [e.to_json() for e in self.add],
                "remove": self.remove,
                "forget": self.forget,
                "counts": {k: v.to_json() for k, v in self.counts.items()},
                "checkpoints": self.checkpoints,
                "expect": self.expect,
                "info": self.info,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Commit:
        try:
            d = orjson.loads(data)
            return cls(
                operation=d["operation"],
                add=[FileEntry.from_json(e) for e in d.get("add", [])],
                remove=list(d.get("remove", [])),
                forget=list(d.get("forget", [])),
                counts={k: SourceCounts.from_json(v) for k, v in d.get("counts", {}).items()},
                checkpoints=dict(d.get("checkpoints", {})),
                expect=dict(d.get("expect", {})),
                writer=d.get("writer", ""),
                time=float(d.get("time", 0.0)),
                version=int(d["version"]),
                info=dict(d.get("info", {})),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{where}: unreadable lake commit: {exc}") from exc


@dataclass
class LakeState:
    """The lake as of one version: live files, totals, checkpoints."""

    version: int = 0
    files: dict[str, FileEntry] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)  # path → time it was removed
    sources: dict[str, SourceCounts] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    commits: int = 0
    last_commit: float = 0.0

    def conflicts(self, commit: Commit) -> list[str]:
        """Why ``commit`` cannot apply on top of this state (empty when it can)."""
        out = []
        for key, value in commit.expect.items():
            if self.checkpoints.get(key) != value:
                out.append(f"checkpoint {key} moved (another writer advanced it)")
        out += [f"{p} is no longer live" for p in commit.remove if p not in self.files]
        return out

    def apply(self, commit: Commit) -> None:
        for path in commit.remove:
            self.files.pop(path, None)
            self.removed[path] = commit.time
        for path in commit.forget:
            self.removed.pop(path, None)
        for entry in commit.add:
            entry.version = commit.version
            self.files[entry.path] = entry
        for name, counts in commit.counts.items():
            self.sources.setdefault(name, SourceCounts()).add(counts)
        for key, value in commit.checkpoints.items():
            if value is None:
                self.checkpoints.pop(key, None)
            else:
                self.checkpoints[key] = value
        self.version = commit.version
        self.commits += 1
        self.last_commit = commit.time

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": self.version,
                "files": [e.to_json() for e in self.files.values()],
                "removed": self.removed,
                "sources": {k: v.to_json() for k, v in self.sources.items()},
                "checkpoints": self.checkpoints,
                "commits": self.commits,
                "last_commit": self.last_commit,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> LakeState:
        try:
            d = orjson.loads(data)
            files = [FileEntry.from_json(e) for e in d["files"]]
            return cls(
                version=int(d["version"]),
                files={e.path: e for e in files},
                removed={str(k): float(v) for k, v in d.get("removed", {}).items()},
                sources={k: SourceCounts.from_json(v) for k, v in d["sources"].items()},
                checkpoints=dict(d.get("checkpoints", {})),
                commits=int(d.get("commits", 0)),
                last_commit=float(d.get("last_commit", 0.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{where}: unreadable lake checkpoint: {exc}") from exc

    def copy(self) -> LakeState:
        return LakeState.from_bytes(self.to_bytes(), "copy")


class CommitLog:
    """Reads and extends the log of one lake; keeps the state at the newest version."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.state = LakeState()
        self._loaded = False
        self.changes: list[Commit] | None = None
        # readers may share a lake between threads: a commit must be applied once
        self._lock = threading.RLock()

    def refresh(self) -> LakeState:
        """Catch up with commits made since the last refresh (by anyone); return the state.

        :attr:`changes` then lists the commits applied, or is ``None`` when the
        state was (re)loaded from a checkpoint and the caller must diff.
        """
        with self._lock:
            return self._refresh()

    def _refresh(self) -> LakeState:
        self.changes = []
        if not self._loaded:
            self.state = self._load_checkpoint()
            self._loaded = True
            self.changes = None
        while True:
            while (commit := self._read(self.state.version + 1)) is not None:
                self.state.apply(commit)
                if self.changes is not None:
                    self.changes.append(commit)
            # the next commit may be missing because it was pruned after a newer
            # checkpoint (this reader fell far behind): start again from there
            newest = self._last_checkpoint()
            if newest <= self.state.version:
                return self.state
            self.state = self._read_checkpoint(newest)
            self.changes = None

    def _read(self, version: int) -> Commit | None:
        name = _name(version)
        try:
            data = self.storage.read(name)
        except FileNotFoundError:
            return None
        commit = Commit.from_bytes(data, f"{self.storage.url}/{name}")
        if commit.version != version:
            raise DataError(f"{self.storage.url}/{name}: names version {commit.version}")
        return commit

    def _last_checkpoint(self) -> int:
        try:
            return int(self.storage.read(LAST_CHECKPOINT).decode().strip())
        except (FileNotFoundError, ValueError):
            return 0

    def _load_checkpoint(self) -> LakeState:
        version = self._last_checkpoint() or self._newest_checkpoint_listed()
        return self._read_checkpoint(version)

    def _read_checkpoint(self, version: int) -> LakeState:
        if not version:
            return LakeState()
        name = _checkpoint_name(version)
        try:
            return LakeState.from_bytes(self.storage.read(name), f"{self.storage.url}/{name}")
        except FileNotFoundError:
            raise DataError(
                f"{self.storage.url}/{name} is missing although {LAST_CHECKPOINT} names it",
                hint="restore it from a backup; the lake log cannot be replayed without it",
            ) from None

    def _newest_checkpoint_listed(self) -> int:
        best = 0
        for entry in self.storage.listdir(LOG_DIR):
            base = entry["name"].rsplit("/", 1)[-1]
            if base.endswith(".checkpoint.json"):
                best = max(best, int(base.split(".", 1)[0]))
        return best

    def try_commit(self, commit: Commit) -> bool:
        """Write ``commit`` as the next version if the current state allows it.

        Returns ``False`` when another writer took the version first: the
        caller refreshes (see :meth:`new_commits`), re-checks and retries.
        Raises :class:`~clickloop.errors.ConflictError` when the commit no
        longer applies (checked against the state known at call time).
        """
        with self._lock:
            return self._try_commit(commit)

    def _try_commit(self, commit: Commit) -> bool:
        from clickloop.errors import ConflictError

        problems = self.state.conflicts(commit)
        if problems:
            raise ConflictError(f"lake commit refused: {'; '.join(problems)}", reasons=problems)
        commit.version = self.state.version + 1
        commit.time = commit.time or time.time()
        if not self.storage.put_exclusive(_name(commit.version), commit.to_bytes()):
            return False
        self.state.apply(commit)
        if commit.version % CHECKPOINT_EVERY == 0:
            self.write_checkpoint()
        return True

    def write_checkpoint(self) -> None:
        """Write the whole state as a checkpoint (deterministic: racing writers agree)."""
        v = self.state.version
        if not v:
            return
        self.storage.put_atomic(_checkpoint_name(v), self.state.to_bytes())
        self.storage.put_atomic(LAST_CHECKPOINT, str(v).encode())

    def prune(self) -> int:
        """Delete log objects older than the previous checkpoint; return how many."""
        checkpoints = sorted(
            int(e["name"].rsplit("/", 1)[-1].split(".", 1)[0])
            for e in self.storage.listdir(LOG_DIR)
            if e["name"].endswith(".checkpoint.json")
        )
        if len(checkpoints) < 2:
            return 0
        keep_from = checkpoints[-2]  # readers that started from it may still replay after it
        n = 0
        for e in self.storage.listdir(LOG_DIR):
            base = e["name"].rsplit("/", 1)[-1]
            head = base.split(".", 1)[0]
            if head.isdigit() and int(head) < keep_from:
                self.storage.remove(e["name"])
                n += 1
        return n
