"""The feature engines on production backends: Kafka (Tansu) in, Redis out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clickloop.features import materialize
from clickloop.features.runner import StreamRunner
from clickloop.stores.base import open_online_store
from tests.integration.test_features_stream import lenient, online_matches_batch, publish
from tests.unit.features.conftest import FEATURES, make_project, sim_lake  # noqa: F401

pytestmark = pytest.mark.integration


def test_stream_from_kafka_into_redis(tmp_path: Path, sim_lake: Path, sim_small: Path,  # noqa: F811
                                      kafka_server, redis_server) -> None:  # fmt: skip
    sets = {k: v for k, v in lenient(FEATURES).items() if k in ("user_activity", "user_clicks")}
    project = make_project(
        tmp_path / "p", sim_lake, sim_small, features=sets,
        bus={"type": "kafka", "bootstrap": kafka_server.bootstrap, "partitions": 3,
             "topic_prefix": f"features-{time.time_ns()}-", "session_timeout": "6s"},
        stores={"online": {"type": "redis", "url": redis_server.url,
                           "key_prefix": f"f{time.time_ns()}:"}},
    )  # fmt: skip
    sent = publish(project, sim_small)
    runner = StreamRunner(project, checkpoint_every=1.0)
    report = runner.run(until_idle=3.0, max_seconds=240)
    runner.close()
    assert report["messages"] == sent
    assert online_matches_batch(project, runner, list(sets)) > 1000


def test_materialize_into_redis_keeps_newer_stream_values(
    tmp_path: Path,
    sim_lake: Path,  # noqa: F811
    sim_small: Path,
    redis_server,
) -> None:
    from clickloop.features import backfill

    project = make_project(
        tmp_path / "p", sim_lake, sim_small,
        features={"user_clicks": FEATURES["user_clicks"]},
        stores={"online": {"type": "redis", "url": redis_server.url,
                           "key_prefix": f"m{time.time_ns()}:"}},
    )  # fmt: skip
    backfill(project, ["user_clicks"], start=datetime(2026, 11, 1, tzinfo=UTC),
             end=datetime(2026, 11, 3, tzinfo=UTC))  # fmt: skip
    first = materialize(project, ["user_clicks"], as_of=datetime(2026, 11, 2, tzinfo=UTC))
    assert first[0]["rows"] > 0 and first[0]["applied"] == first[0]["rows"]
    later = materialize(project, ["user_clicks"])  # the 11-03 snapshot replaces 11-02
    assert later[0]["as_of"] == "2026-11-03T00:00:00+00:00"
    again = materialize(project, ["user_clicks"], as_of=datetime(2026, 11, 2, tzinfo=UTC))
    assert again[0]["applied"] < again[0]["rows"]  # older rows never overwrite newer ones
    with open_online_store(project) as store:
        info = store.info("user_clicks")
        assert info is not None and info.max_event_ts == datetime(2026, 11, 3, tzinfo=UTC)
