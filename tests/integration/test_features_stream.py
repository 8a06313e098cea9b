"""The streaming engine on the real local bus and SQLite online store, against the batch engine."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clickloop.bus.base import open_bus
from clickloop.features import training_set
from clickloop.features.runner import StreamRunner
from clickloop.ingest.collector_records import to_messages
from clickloop.project import Project
from clickloop.stores.base import open_online_store
from tests.unit.features.conftest import FEATURES, make_project, read_events, sim_lake  # noqa: F401

pytestmark = pytest.mark.integration


def lenient(features: dict) -> dict:
    """The test feature sets, tolerating the simulator's late arrivals (up to days)."""
    return {name: {**spec, "allowed_lateness": "30d"} for name, spec in features.items()}


def publish(project: Project, sim: Path, *, limit: int | None = None) -> int:
    events = read_events(sim).sort_by("received_at")  # arrival order; duplicates kept
    if limit is not None:
        events = events.slice(0, limit)
    bus = open_bus(project)
    producer = bus.producer()
    msgs = to_messages(events)
    for start in range(0, len(msgs), 5000):
        producer.publish("events", msgs[start : start + 5000])
    producer.close()
    bus.close()
    return len(msgs)


def online_matches_batch(project: Project, runner: StreamRunner, sets: list[str],
                         oracle: Project | None = None) -> int:  # fmt: skip
    """Every user's online row equals the batch value (over ``oracle``'s lake, by default the
    project's) as of the stream's clock."""
    clock = runner.stream.clock
    users = sorted(runner.stream.states["user_activity"].entities)
    assert len(users) > 50
    with open_online_store(project) as store:
        online = store.read_many(users, sets)
        info = {s: store.info(s) for s in sets}
    ex = pa.table({"user_id": users,
                   "ts": pa.array(np.full(len(users), clock), pa.int64()).cast(
                       pa.timestamp("us", "UTC"))})  # fmt: skip
    batch = training_set(oracle or project, ex, sets).to_pylist()
    checked = 0
    for u, got, want in zip(users, online, batch, strict=True):
        for name, value in got.items():
            expect = want[name]
            if isinstance(value, dict):  # the store reads maps back as dicts
                expect = dict(expect)
            if name.endswith("since_last") and value is not None:
                # stored as of the row's time; the stream's clock moved on since
                assert expect is not None and expect >= value - 1e-6, (u, name)
                continue
            if isinstance(value, float) and isinstance(expect, float):
                assert math.isclose(value, expect, rel_tol=1e-9, abs_tol=1e-9), (u, name)
            else:
                assert value == expect, (u, name, value, expect)
            checked += 1
    assert all(i is not None and i.rows_applied > 0 for i in info.values())
    return checked


def test_stream_from_the_bus_matches_batch(tmp_path: Path, sim_lake: Path,  # noqa: F811
                                           sim_small: Path) -> None:  # fmt: skip
    project = make_project(tmp_path / "p", sim_lake, sim_small, features=lenient(FEATURES))
    sent = publish(project, sim_small)
    runner = StreamRunner(project, checkpoint_every=0.5, batch_size=3000, bootstrap="none")
    report = runner.run(until_idle=1.0)
    runner.close()
    assert report["messages"] == sent
    assert report["duplicates"] > 0  # the simulator repeats some records
    assert all(s["too_late"] == 0 for s in report["sets"].values())
    assert report["checkpoints"] >= 1
    checked = online_matches_batch(project, runner, ["user_activity", "user_clicks",
                                                     "user_impressions"])  # fmt: skip
    assert checked > 1000


def test_too_late_events_are_counted_not_applied(tmp_path: Path, sim_lake: Path,  # noqa: F811
                                                 sim_small: Path) -> None:  # fmt: skip
    strict = {"user_clicks": {**FEATURES["user_clicks"], "allowed_lateness": "1s"}}
    project = make_project(tmp_path / "p", sim_lake, sim_small, features=strict)
    publish(project, sim_small)
    runner = StreamRunner(project, bootstrap="none")
    report = runner.run(until_idle=1.0)
    runner.close()
    # the simulator delivers ~1% of events late, many by more than a second
    assert report["sets"]["user_clicks"]["too_late"] > 0
    applied = report["sets"]["user_clicks"]["applied"]
    assert applied + report["sets"]["user_clicks"]["too_late"] == sum(
        1 for e in read_events(sim_small).column("type").to_pylist() if e == "click"
    ) - _click_duplicates(sim_small)


def _click_duplicates(sim: Path) -> int:
    ev = read_events(sim)
    seen: set[str] = set()
    dup = 0
    for t, i in zip(ev.column("type").to_pylist(), ev.column("event_id").to_pylist(),
                    strict=True):  # fmt: skip
        if i in seen and t == "click":
            dup += 1
        seen.add(i)
    return dup


def test_restart_resumes_without_double_counting(tmp_path: Path, sim_lake: Path,  # noqa: F811
                                                 sim_small: Path) -> None:  # fmt: skip
    project = make_project(tmp_path / "p", sim_lake, sim_small, features=lenient(FEATURES))
    publish(project, sim_small)
    first = StreamRunner(project, checkpoint_every=0.2, batch_size=2000, bootstrap="none")
    first.run(max_messages=12_000)
    first.close()
    second = StreamRunner(project, checkpoint_every=0.2, batch_size=2000)
    second.run(until_idle=1.0)
    second.close()
    online_matches_batch(project, second, ["user_activity", "user_clicks"])
    assert timedelta(seconds=second.report.seconds) < timedelta(minutes=5)
