"""The Redis online store against a real redis-server: keys, expiry, round trips, failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clickloop.errors import BackendUnavailableError
from clickloop.project import Project
from clickloop.stores.base import open_online_store
from clickloop.stores.redis import RedisOnlineStore
from clickloop.testing.servers import RedisServer, free_port

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def rows(entities, ts=NOW, **features) -> pa.Table:
    return pa.table(
        {
            "entity": entities,
            "_event_ts": pa.array([ts] * len(entities), pa.timestamp("us", "UTC")),
            **features,
        }
    )


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A server of this module's own: these tests count commands, flush scripts and restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(own_redis.url)
    c.flushall()
    yield c
    c.close()


def test_rows_are_one_key_per_entity_with_redis_expiry_from_event_time(own_redis, client):
    store = RedisOnlineStore(own_redis.url, key_prefix="shop:")
    now = datetime.now(UTC)  # the wall clock now, not at collection: the suite may be minutes in
    store.write(
        "activity", rows(["u1"], now - timedelta(minutes=10), n=[1]), ttl=timedelta(hours=1)
    )
    store.write("plain", rows(["u1"], n=[2]))
    keys = {k.decode() for k in client.keys("*")}
    assert keys == {"shop:f:activity:u1", "shop:f:plain:u1", "shop:s:activity", "shop:s:plain",
                    "shop:m:activity", "shop:m:plain"}  # fmt: skip
    pttl = client.pttl("shop:f:activity:u1")
    assert 49 * 60_000 < pttl <= 50 * 60_000  # expires an hour after the event, not the write
    assert client.pttl("shop:f:plain:u1") == -1
    # an update without a TTL removes the expiry, one with a TTL resets it
    store.write("activity", rows(["u1"], n=[3]))
    assert client.pttl("shop:f:activity:u1") == -1
    store.close()


def test_one_read_is_one_command_whatever_the_number_of_feature_sets(own_redis, client):
    store = RedisOnlineStore(own_redis.url)
    for fs in ("a", "b", "c"):
        store.write(fs, rows(["u"], **{f"{fs}__x": [1]}))
    store.read("u", ["a"])  # schemas cached, connection open
    client.config_resetstat()
    assert store.read("u", ["a", "b", "c"]) == {"a__x": 1, "b__x": 1, "c__x": 1}
    stats = client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert set(stats) == {"cmdstat_mget", "cmdstat_config|resetstat"}
    client.config_resetstat()
    store.read_many([f"u{i}" for i in range(100)], ["a", "b", "c"])
    assert client.info("commandstats")["cmdstat_mget"]["calls"] == 1
    store.close()


def test_key_prefixes_keep_projects_apart_on_one_server(own_redis, client):
    shop, blog = (
        RedisOnlineStore(own_redis.url, key_prefix="shop:"),
        RedisOnlineStore(own_redis.url, key_prefix="blog:"),
    )
    shop.write("fs", rows(["u"], n=[1]))
    blog.write("fs", rows(["u"], n=[2]))
    assert shop.read("u", ["fs"]) == {"n": 1} and blog.read("u", ["fs"]) == {"n": 2}
    assert shop.count("fs") == 1
    assert blog.delete("fs") == 1
    assert shop.read("u", ["fs"]) == {"n": 1}
    assert [i.name for i in shop.feature_sets()] == ["fs"] and blog.feature_sets() == []
    shop.close()
    blog.close()


def test_globs_in_prefixes_and_entities_do_not_widen_scans(own_redis, client):
    star, plain = (
        RedisOnlineStore(own_redis.url, key_prefix="p*"),
        RedisOnlineStore(own_redis.url, key_prefix="px"),
    )
    star.write("fs", rows(["*", "[a]"], n=[1, 2]))
    plain.write("fs", rows(["u"], n=[3]))
    assert star.count("fs") == 2 and plain.count("fs") == 1
    assert star.delete("fs") == 2
    assert plain.read("u", ["fs"]) == {"n": 3}
    star.close()
    plain.close()


def test_writes_survive_a_script_cache_flush_and_a_server_restart(own_redis, client):
    store = RedisOnlineStore(own_redis.url)
    store.write("fs", rows(["u"], n=[1]))
    client.script_flush()
    assert store.write("fs", rows(["v"], n=[2])) == 1
    own_redis.restart()  # no persistence: data and scripts are gone, connections are dead
    assert store.read("u", ["fs"]) == {}
    assert store.write("fs", rows(["u"], n=[3])) == 1
    assert store.read("u", ["fs"]) == {"n": 3}
    store.close()


def test_an_unreachable_server_is_a_clear_error_that_never_shows_the_password():
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    store = RedisOnlineStore(url, socket_timeout=timedelta(seconds=1))
    for call in (
        store.ping,
        lambda: store.read("u", ["fs"]),
        lambda: store.write("fs", rows(["u"], n=[1])),
    ):
        with pytest.raises(
            BackendUnavailableError, match=r"Redis online store at redis://127\.0\.0\.1:\d+/0"
        ) as err:
            call()
        assert "hunter2" not in str(err.value) and "hunter2" not in repr(err.value.details)
    store.close()


def test_open_online_store_follows_the_project_configuration(own_redis, client, tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text(
        "stores:\n  online: {type: redis, url: '${ONLINE_URL}', key_prefix: 'proj:'}\n"
    )
    project = Project.load(tmp_path, env={"ONLINE_URL": own_redis.url})
    with open_online_store(project) as store:
        assert isinstance(store, RedisOnlineStore)
        store.write("fs", rows(["u"], n=[1]))
    assert client.exists("proj:f:fs:u")


def test_many_feature_sets_and_entities_in_read_many_beyond_one_mget(own_redis, client):
    store = RedisOnlineStore(own_redis.url, key_prefix=f"{uuid.uuid4().hex[:6]}:")
    ids = [f"u{i}" for i in range(1500)]
    store.write("a", rows(ids, a=list(range(1500))))
    store.write("b", rows(ids[::2], b=[str(i) for i in range(0, 1500, 2)]))
    got = store.read_many([*ids, "ghost"], ["a", "b"])  # 3002 keys: several MGETs, one round trip
    assert got[-1] == {}
    assert got[3] == {"a": 3} and got[4] == {"a": 4, "b": "4"}
    assert sum(len(g) for g in got) == 1500 + 750
    store.close()
