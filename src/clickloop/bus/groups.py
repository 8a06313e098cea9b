"""Consumer groups of the local bus: membership by lease, partition ownership, offsets.

A group lives in ``<bus>/groups/<group>/``::

    lock             flock held while the group state or the offsets change
    state.json       generation, members (and their topics), partition → owner
    offsets.json     committed offsets: {topic: {partition: next offset}} (atomic, fsynced)
    members/<id>.hb  one file per member; its mtime is the member's last heartbeat

Members heartbeat by touching their file (a background thread, every
``session_timeout / 4``). A member whose heartbeat is older than the session
timeout is expelled by whichever member syncs next, and its partitions are
freed. Every member computes the same round-robin assignment over the live
members, sorted by id; a partition moves to its new owner only after the old
owner released it (in its own ``poll``), so a partition is never read by two
live members at once. A member commits only partitions it owns at the moment
of the commit — checked under the group lock, so a commit never races a hand-over.

>>> m = GroupMember(bus_path, "lake", ["events"], partitions=lambda t: 4,  # doctest: +SKIP
...                 session_timeout=10.0)
>>> m.sync(set())                      # join: {("events", 0): 0, ...} partition → start offset
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clickloop.bus._fs import FileLock, atomic_write
from clickloop.bus.base import PartitionsRevokedError, TopicPartition, check_offsets

log = logging.getLogger(__name__)


def assign(
    members: Mapping[str, Sequence[str]], partitions: Mapping[str, int]
) -> dict[str, list[TopicPartition]]:
    """Round-robin assignment of every (topic, partition) over the members subscribed to it.

    Deterministic: the same members and partition counts give the same answer
    in every process.

    >>> assign({"a": ["t"], "b": ["t"]}, {"t": 3})
    {'a': [('t', 0), ('t', 2)], 'b': [('t', 1)]}
    """
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    order = sorted(members)
    if not order:
        return out
    turn = itertools.cycle(order)
    for topic in sorted(partitions):
        subs = {m for m in order if topic in members[m]}
        if not subs:
            continue
        for p in range(partitions[topic]):
            m = next(turn)
            while m not in subs:
                m = next(turn)
            out[m].append((topic, p))
    return out


def _key(tp: TopicPartition) -> str:
    return f"{tp[0]}/{tp[1]}"


def _tp(key: str) -> TopicPartition:
    topic, _, p = key.rpartition("/")
    return topic, int(p)


def read_offsets(group_dir: Path) -> dict[TopicPartition, int]:
    """The group's committed offsets (empty when it never committed)."""
    try:
        raw = json.loads((group_dir / "offsets.json").read_bytes())
    except FileNotFoundError:
        return {}
    return {(t, int(p)): int(o) for t, parts in raw.items() for p, o in parts.items()}


class GroupMember:
    """This process's membership in a group; used by one consumer (one thread)."""

    def __init__(
        self,
        bus_path: Path,
        group: str,
        topics: Sequence[str],
        *,
        partitions: Callable[[str], int],
        session_timeout: float,
        max_poll_interval: float = 300.0,
    ) -> None:
        self.group = group
        self.topics = list(dict.fromkeys(topics))
        self.dir = bus_path / "groups" / group
        (self.dir / "members").mkdir(parents=True, exist_ok=True)
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.session_timeout = session_timeout
        self.max_poll_interval = max_poll_interval
        self.generation = 0
        self.pending = False  # partitions assigned to us are still held by another member
        self._partitions = partitions
        self._lock = FileLock(self.dir / "lock")
        self._hb = self.dir / "members" / f"{self.member_id}.hb"
        self._hb.touch()
        self._last_poll = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"bus-heartbeat-{group}", daemon=True
        )
        self._thread.start()

    # -- the poll thread -----------------------------------------------------------------

    def polled(self) -> None:
        """Tell the heartbeat thread that the application is alive and polling."""
        self._last_poll = time.monotonic()

    def sync(self, current: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Reconcile with the group; return the partitions owned now.

        Value ``None``: keep reading where you are; an int: (re)start there (a
        partition newly claimed, at the group's committed offset).
        """
        current = set(current)
        with self._lock:
            state = self._load()
            members: dict[str, Any] = state["members"]
            owners: dict[str, str] = state["owners"]
            changed = False
            now = time.time()
            self._touch()
            for mid in [m for m in members if m != self.member_id and self._expired(m, now)]:
                log.warning(
                    "bus group %r: member %s missed its heartbeats for %.0f s; "
                    "expelling it and freeing its partitions",
                    self.group,
                    mid,
                    self.session_timeout,
                )
                del members[mid]
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / "members" / f"{mid}.hb").unlink()
                changed = True
            expelled = self.member_id not in members
            if expelled:
                if current:
                    log.warning(
                        "bus group %r: this member (%s) was expelled (no heartbeat for %.0f s); "
                        "rejoining, uncommitted work on its partitions will be redelivered",
                        self.group,
                        self.member_id,
                        self.session_timeout,
                    )
                members[self.member_id] = {
                    "topics": self.topics,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "joined": now,
                }
                changed = True
            for key in [k for k, o in owners.items() if o not in members]:
                del owners[key]
                changed = True
            if changed:
                state["generation"] += 1
            topics = sorted({t for m in members.values() for t in m["topics"]})
            counts = {t: self._partitions(t) for t in topics}
            target = set(
                assign({m: v["topics"] for m, v in members.items()}, counts)[self.member_id]
            )
            for key in [k for k, o in owners.items() if o == self.member_id]:
                if _tp(key) not in target:
                    del owners[key]  # released: its new owner claims it on its next sync
                    changed = True
            owned: dict[TopicPartition, int | None] = {}
            offsets: dict[TopicPartition, int] | None = None
            self.pending = False
            for tp in sorted(target):
                key = _key(tp)
                fresh = False
                if key not in owners:
                    owners[key] = self.member_id
                    changed = fresh = True
                if owners[key] != self.member_id:
                    self.pending = True
                    continue
                if tp in current and not fresh and not expelled:
                    owned[tp] = None
                else:
                    offsets = read_offsets(self.dir) if offsets is None else offsets
                    owned[tp] = offsets.get(tp, 0)
            if changed:
                self._save(state)
            self.generation = state["generation"]
        return owned

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store ``offsets`` if this member owns every partition in it; else store nothing."""
        clean = check_offsets(self.group, self.topics, offsets)
        if not clean:
            return
        with self._lock:
            state = self._load()
            self._touch()
            mine = self.member_id in state["members"]
            revoked = sorted(
                tp for tp in clean if not mine or state["owners"].get(_key(tp)) != self.member_id
            )
            if revoked:
                raise PartitionsRevokedError(self.group, revoked)
            stored = read_offsets(self.dir)
            stored.update(clean)
            out: dict[str, dict[str, int]] = {}
            for (topic, part), off in sorted(stored.items()):
                out.setdefault(topic, {})[str(part)] = off
            atomic_write(self.dir / "offsets.json", json.dumps(out).encode())

    def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        stored = read_offsets(self.dir)
        return {tp: stored.get(tp, 0) for tp in tps}

    def leave(self) -> None:
        """Leave the group now (its partitions go to the others on their next sync)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._lock:
            state = self._load()
            if state["members"].pop(self.member_id, None) is not None:
                for key in [k for k, o in state["owners"].items() if o == self.member_id]:
                    del state["owners"][key]
                state["generation"] += 1
                self._save(state)
            with contextlib.suppress(FileNotFoundError):
                self._hb.unlink()
        self._lock.close()

    # -- internals ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.session_timeout / 4)
        warned = False
        while not self._stop.wait(interval):
            if time.monotonic() - self._last_poll > self.max_poll_interval:
                if not warned:
                    log.warning(
                        "bus group %r: poll() not called for %.0f s; this member stops "
                        "heartbeating and will be expelled (its partitions go to others)",
                        self.group,
                        self.max_poll_interval,
                    )
                    warned = True
                continue
            warned = False
            try:
                self._touch()
            except OSError as exc:  # e.g. the group directory was removed
                log.warning("bus group %r: heartbeat failed: %s", self.group, exc)

    def _touch(self) -> None:
        try:
            os.utime(self._hb)
        except FileNotFoundError:  # expelled and cleaned up: recreate; sync() rejoins
            self._hb.touch()

    def _expired(self, member: str, now: float) -> bool:
        try:
            return now - (self.dir / "members" / f"{member}.hb").stat().st_mtime > (
                self.session_timeout
            )
        except FileNotFoundError:
            return True

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads((self.dir / "state.json").read_bytes())
            if isinstance(state, dict) and {"generation", "members", "owners"} <= state.keys():
                return state
            log.warning(
                "bus group %r: unexpected state file; starting a new generation", self.group
            )
        except FileNotFoundError:
            pass
        except ValueError:
            log.warning(
                "bus group %r: unreadable state file; starting a new generation", self.group
            )
        return {"generation": 0, "members": {}, "owners": {}}

    def _save(self, state: dict[str, Any]) -> None:
        # membership is soft state (leases rebuild it), so no fsync: only offsets need one
        atomic_write(self.dir / "state.json", json.dumps(state).encode(), durable=False)
