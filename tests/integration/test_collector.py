"""The HTTP collector as clients meet it: a real uvicorn server on loopback, the real local bus."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clickloop.bus.base import Bus, Consumer, Producer, open_bus
from clickloop.errors import BackendUnavailableError
from clickloop.ingest.collector import BackgroundCollector
from clickloop.project import Project

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- helpers shared by the collector's integration tests -------------------------------------


def make_project(root: Path, source: str = "", bus: str = "") -> Project:
    """A project with one collector source ``web`` (extra source keys in ``source``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text(
        "project: t\n"
        + (f"bus: {bus}\n" if bus else "")
        + "sources:\n"
        + f"  web: {{type: collector, tokens: ['${{T_TOKEN}}'], port: 0{source}}}\n"
    )
    return Project.load(root, env={"T_TOKEN": TOKEN})


def event(i: int | str, **kw: Any) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {"event_id": f"e{i}", "ts": now_ms, "type": "click", "user_id": f"u{i}", **kw}


class Drain:
    """Reads everything appended to the ``events`` topic since the last call."""

    def __init__(self, bus: Bus, group: str = "test-drain") -> None:
        self.bus = bus
        self.consumer: Consumer = bus.consumer(group, ["events"])
        self.seen = 0

    def new(self, timeout: float = 10.0, expect: int | None = None) -> list[dict[str, Any]]:
        """The new messages: up to the topic's end offsets, or ``expect`` of them and
        then nothing more for a second (for brokers whose end offsets lag)."""
        target = self.seen + expect if expect is not None else self._end()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while self.seen < target and time.monotonic() < deadline:
            self._read(out, 0.2)
        if expect is not None:
            self._read(out, 1.0)
        assert self.seen == target, f"read {self.seen} of {target} messages"
        return out

    def _end(self) -> int:
        return sum(self.bus.end_offsets("events").values())

    def _read(self, out: list[dict[str, Any]], timeout: float) -> None:
        batch = self.consumer.poll(10_000, timeout)
        self.seen += len(batch)
        for m in batch:
            body = json.loads(m.value)
            assert m.key == body["user_id"].encode()
            out.append(body)

    def close(self) -> None:
        self.consumer.close()


class GatedBus(Bus):
    """The real bus, with publishes that wait for a gate (or fail) on demand."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.waiting = 0

    def producer(self) -> Producer:
        outer = self

        class Gated(Producer):
            def __init__(self) -> None:
                self.p = outer.inner.producer()

            def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
                outer.waiting += 1
                outer.gate.wait(60)
                outer.waiting -= 1
                if outer.fail:
                    raise BackendUnavailableError("broker 127.0.0.1:1 refused the connection")
                self.p.publish(topic, records)

            def close(self) -> None:
                self.p.close()

        return Gated()

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return self.inner.consumer(group, topics)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.inner.end_offsets(topic)

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        return self.inner.committed_offsets(group, topic)

    def close(self) -> None:
        self.inner.close()


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BackgroundCollector, Drain]]:
    project = make_project(tmp_path / "p", ", pixel_public: true, max_body: 64KiB")
    with BackgroundCollector(project) as c:
        bus = open_bus(project)
        drain = Drain(bus)
        try:
            yield c, drain
        finally:
            drain.close()
            bus.close()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[BackgroundCollector, GatedBus, Drain]]:
    project = make_project(tmp_path / "p", ", max_inflight: 3")
    bus = GatedBus(open_bus(project))
    try:
        with BackgroundCollector(project, bus=bus) as c:
            drain = Drain(bus)
            yield c, bus, drain
            bus.gate.set()
            drain.close()
    finally:
        bus.gate.set()
        bus.close()


# -- POST /v1/events -------------------------------------------------------------------------


def test_one_event_an_array_and_ndjson_are_accepted_once_durable(served):
    c, drain = served
    r = httpx.post(f"{c.url}/v1/events", json=event(1, props={"price": 12.5}), headers=AUTH)
    assert r.status_code == 202 and r.json() == {"accepted": 1, "rejected": 0}
    (msg,) = drain.new()  # durable before the answer: already on the bus
    assert msg["event_id"] == "e1" and msg["props"] == {"price": "12.5"}
    assert msg["ts"].endswith("Z") and msg["received_at"].endswith("Z")
    r = httpx.post(f"{c.url}/v1/events", json=[event(2), event(3)], headers=AUTH)
    assert r.status_code == 202 and r.json()["accepted"] == 2
    nd = b"\n".join(json.dumps(event(i)).encode() for i in (4, 5, 6)) + b"\n"
    r = httpx.post(
        f"{c.url}/v1/events",
        content=nd,
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 202 and r.json()["accepted"] == 3
    assert sorted(m["event_id"] for m in drain.new()) == ["e2", "e3", "e4", "e5", "e6"]


def test_a_beacon_body_without_json_content_type_is_sniffed(served):
    c, drain = served
    body = json.dumps([event(1), event(2)]).encode()
    r = httpx.post(
        f"{c.url}/v1/events", content=body, headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert r.status_code == 202 and len(drain.new()) == 2


def test_invalid_records_are_reported_one_by_one_and_the_valid_ones_published(served):
    c, drain = served
    body = [event(1), {"event_id": "e2", "ts": "yesterday", "type": "click", "user_id": "u"}, 7]
    r = httpx.post(f"{c.url}/v1/events", json=body, headers=AUTH)
    assert r.status_code == 400
    out = r.json()
    assert out["error"] == "invalid_input"
    d = out["details"]
    assert (d["accepted"], d["rejected"]) == (1, 2)
    assert d["reasons"] == {"bad_ts": 1, "not_an_object": 1}
    assert [(e["index"], e["reason"]) for e in d["errors"]] == [(1, "bad_ts"), (2, "not_an_object")]
    assert "'yesterday'" in d["errors"][0]["detail"]
    assert [m["event_id"] for m in drain.new()] == ["e1"]


def test_atomic_requests_publish_all_or_nothing(served):
    c, drain = served
    body = [event(1), event(2, user_id=None)]
    r = httpx.post(f"{c.url}/v1/events?atomic=true", json=body, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["details"]["accepted"] == 0
    assert "atomic" in r.json()["message"]
    r = httpx.post(f"{c.url}/v1/events?atomic=1", json=[event(1), "x"], headers=AUTH)
    assert r.status_code == 400 and r.json()["details"]["accepted"] == 0
    assert drain.new() == []
    r = httpx.post(f"{c.url}/v1/events?atomic=1", json=[event(1), event(2)], headers=AUTH)
    assert r.status_code == 202 and len(drain.new()) == 2


def test_a_flood_of_bad_records_lists_the_first_thousand_and_counts_them_all(served):
    c, drain = served
    body = [{"event_id": f"e{i}"} for i in range(1500)] + [event(1)]
    r = httpx.post(f"{c.url}/v1/events", json=body, headers=AUTH)
    assert r.status_code == 400
    d = r.json()["details"]
    assert (d["accepted"], d["rejected"], d["truncated"]) == (1, 1500, True)
    assert d["reasons"] == {"missing_ts": 1500}
    assert [e["index"] for e in d["errors"]] == list(range(1000))
    assert len(drain.new()) == 1


def test_ndjson_errors_name_the_line(served):
    c, drain = served
    nd = json.dumps(event(1)) + "\n\n{not json\n" + json.dumps(event(2, ts=True)) + "\n"
    r = httpx.post(
        f"{c.url}/v1/events",
        content=nd.encode(),
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 400
    errors = r.json()["details"]["errors"]
    assert [(e["index"], e["line"], e["reason"]) for e in errors] == [
        (1, 3, "unparseable"),
        (2, 4, "bad_ts"),
    ]
    assert len(drain.new()) == 1


def test_an_unparseable_body_is_400_unparseable_and_publishes_nothing(served):
    c, drain = served
    for body in (b"{oops", b"", b"\xff\xfe\x00", b"[" * 5000):
        r = httpx.post(
            f"{c.url}/v1/events",
            content=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, body[:10]
        assert r.json()["details"]["errors"][0]["reason"] == "unparseable"
    r = httpx.post(
        f"{c.url}/v1/events", content=b"a=1", headers={**AUTH, "Content-Type": "multipart/x"}
    )
    assert r.status_code == 415
    assert drain.new() == []


# -- sizes -----------------------------------------------------------------------------------


def test_a_declared_body_over_max_body_is_refused_before_it_is_read(served):
    c, drain = served
    r = httpx.post(f"{c.url}/v1/events", content=b" " * (64 * 1024 + 1), headers=AUTH)
    assert r.status_code == 413
    assert r.json()["details"]["max_body"] == 64 * 1024
    assert drain.new() == []


def test_a_streamed_body_over_max_body_is_refused_while_it_streams(served):
    c, _ = served
    host, port = c.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\r\n".encode()
        )
        chunk = b"[" + b" " * 8191
        for _ in range(12):  # 96 KiB > 64 KiB, and never the final chunk: the server must
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # answer without the whole body
            chunk = b" " * 8192
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]


def test_a_body_that_trickles_in_too_slowly_is_408_and_frees_its_slot(tmp_path):
    project = make_project(tmp_path / "p", ", max_inflight: 1")
    with BackgroundCollector(project, body_timeout=0.5) as c:
        host, port = c.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
                + b'[{"event_id":'
            )
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
        assert b"request_timeout" in reply
        r = httpx.post(f"{c.url}/v1/events", json=event(1), headers=AUTH)
        assert r.status_code == 202  # the one slot is free again


def test_gzip_bodies_are_read_and_their_inflated_size_is_limited(served):
    c, drain = served
    ok = gzip.compress(json.dumps([event(1), event(2)]).encode())
    r = httpx.post(
        f"{c.url}/v1/events",
        content=ok,
        headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 202 and len(drain.new()) == 2
    bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")
    assert len(bomb) < 64 * 1024
    r = httpx.post(f"{c.url}/v1/events", content=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = httpx.post(
        f"{c.url}/v1/events", content=b"not gzip", headers={**AUTH, "Content-Encoding": "gzip"}
    )
    assert r.status_code == 400
    r = httpx.post(f"{c.url}/v1/events", content=b"{}", headers={**AUTH, "Content-Encoding": "br"})
    assert r.status_code == 415


# -- auth ------------------------------------------------------------------------------------


def test_posts_need_a_valid_bearer_token(served):
    c, drain = served
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(f"{c.url}/v1/events", json=event(1), headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in r.text
    r = httpx.post(
        f"{c.url}/v1/events", json=event(1), headers={"authorization": f"bearer {TOKEN}"}
    )
    assert r.status_code == 202
    assert len(drain.new()) == 1


def test_any_of_several_tokens_is_accepted_and_a_private_pixel_needs_one(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "clickloop.yaml").write_text(
        "sources:\n  web: {type: collector, tokens: [one, two], pixel_public: false}\n"
    )
    with BackgroundCollector(Project.load(root, env={})) as c:
        for tok in ("one", "two"):
            r = httpx.post(
                f"{c.url}/v1/events", json=event(tok), headers={"Authorization": f"Bearer {tok}"}
            )
            assert r.status_code == 202
        r = httpx.get(f"{c.url}/v1/p.gif", params=event("p"))
        assert r.status_code == 401 and r.content.startswith(b"GIF89a")
        r = httpx.get(
            f"{c.url}/v1/p.gif", params=event("p"), headers={"Authorization": "Bearer two"}
        )
        assert r.status_code == 200


def test_without_tokens_authentication_is_off_and_says_so(tmp_path, caplog):
    root = tmp_path / "p"
    root.mkdir()
    (root / "clickloop.yaml").write_text("sources:\n  web: {type: collector}\n")
    with (
        caplog.at_level("WARNING", logger="clickloop"),
        BackgroundCollector(Project.load(root, env={})) as c,
    ):
        assert httpx.post(f"{c.url}/v1/events", json=event(1)).status_code == 202
    assert any("AUTHENTICATION DISABLED" in r.getMessage() for r in caplog.records)


def test_an_empty_token_refuses_to_start(tmp_path):
    from clickloop.errors import ConfigError

    root = tmp_path / "p"
    root.mkdir()
    (root / "clickloop.yaml").write_text(
        "sources:\n  web: {type: collector, tokens: ['${TOK:-}']}\n"
    )
    with pytest.raises(ConfigError, match=r"sources\.web\.tokens\[0\] is empty"):
        BackgroundCollector(Project.load(root, env={}))


def test_browsers_on_allowed_origins_may_post_with_a_token(tmp_path):
    project = make_project(tmp_path / "p", ", cors_origins: ['https://shop.example.com']")
    with BackgroundCollector(project) as c:
        preflight = {
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        r = httpx.options(f"{c.url}/v1/events", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = httpx.options(
            f"{c.url}/v1/events", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = httpx.post(
            f"{c.url}/v1/events",
            json=event(1),
            headers={**AUTH, "Origin": "https://shop.example.com"},
        )
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == "https://shop.example.com"


# -- the pixel -------------------------------------------------------------------------------


def test_the_pixel_records_an_event_from_its_query_and_referer(served):
    c, drain = served
    q = {"event_id": "p1", "ts": str(int(time.time() * 1000)), "type": "page_view"}
    r = httpx.get(
        f"{c.url}/v1/p.gif",
        params={**q, "user_id": "u9", "plan": "pro", "_": "123"},
        headers={"Referer": "https://shop.example.com/items/1/2"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif" and r.content.startswith(b"GIF89a")
    assert "no-store" in r.headers["cache-control"] and r.headers["expires"] == "0"
    (msg,) = drain.new()
    assert msg["url"] == "https://shop.example.com/items/1/2"
    assert msg["props"] == {"plan": "pro"}


def test_an_invalid_pixel_still_answers_a_gif_with_the_reason(served):
    c, drain = served
    r = httpx.get(f"{c.url}/v1/p.gif", params={"event_id": "p", "type": "page_view"})
    assert r.status_code == 400 and r.content.startswith(b"GIF89a")
    assert r.headers["x-clickloop-reason"] == "missing_ts"
    assert "no-store" in r.headers["cache-control"]
    assert httpx.head(f"{c.url}/v1/p.gif", params=event(1)).status_code == 200
    assert drain.new() == []  # HEAD (prefetchers, link checkers) records nothing


# -- backpressure and bus trouble ------------------------------------------------------------


def test_a_blocked_bus_fills_max_inflight_then_503_with_retry_after(gated):
    c, bus, drain = gated
    bus.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        pending = [
            pool.submit(httpx.post, f"{c.url}/v1/events", json=event(i), headers=AUTH, timeout=60)
            for i in range(3)
        ]
        deadline = time.monotonic() + 10
        while httpx.get(f"{c.url}/readyz").json()["inflight"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.post(f"{c.url}/v1/events", json=event(9), headers=AUTH)
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"] == "overloaded"
        ready = httpx.get(f"{c.url}/readyz")
        assert ready.status_code == 503 and "overloaded" in ready.json()["problems"][0]
        assert all(not f.done() for f in pending)  # nobody was answered before durability
        bus.gate.set()
        assert [f.result().status_code for f in pending] == [202, 202, 202]
    assert sorted(m["event_id"] for m in drain.new()) == ["e0", "e1", "e2"]
    assert httpx.get(f"{c.url}/readyz").status_code == 200


def test_a_failing_bus_is_503_retry_after_and_not_ready(gated):
    c, bus, drain = gated
    bus.fail = True
    r = httpx.post(f"{c.url}/v1/events", json=[event(1), event(2)], headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "backend_unavailable"
    # a request with nothing valid to publish still gets its own answer
    r = httpx.post(f"{c.url}/v1/events", json=[{"event_id": "x"}], headers=AUTH)
    assert r.status_code == 400
    ready = httpx.get(f"{c.url}/readyz")
    assert ready.status_code == 503 and "last publish failed" in ready.text
    bus.fail = False
    assert httpx.post(f"{c.url}/v1/events", json=event(3), headers=AUTH).status_code == 202
    assert httpx.get(f"{c.url}/readyz").status_code == 200
    assert [m["event_id"] for m in drain.new()] == ["e3"]
    assert metrics(c.url)[("clickloop_collector_publish_errors_total", ())] == 1


def test_stopping_finishes_in_flight_requests_first(tmp_path):
    project = make_project(tmp_path / "p")
    bus = GatedBus(open_bus(project))
    c = BackgroundCollector(project, bus=bus).start()
    bus.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        f = pool.submit(httpx.post, f"{c.url}/v1/events", json=event(1), headers=AUTH, timeout=60)
        while bus.waiting == 0:
            time.sleep(0.01)
        stopping = pool.submit(c.stop)
        time.sleep(0.3)
        bus.gate.set()
        assert f.result().status_code == 202
        stopping.result()
    drain = Drain(bus)
    assert [m["event_id"] for m in drain.new()] == ["e1"]
    drain.close()
    bus.close()


def test_a_bus_that_never_confirms_is_answered_503_and_does_not_hold_shutdown(tmp_path):
    project = make_project(tmp_path / "p")
    bus = GatedBus(open_bus(project))
    bus.gate.clear()
    try:
        c = BackgroundCollector(project, bus=bus, publish_timeout=1.0).start()
        t0 = time.monotonic()
        r = httpx.post(f"{c.url}/v1/events", json=event(1), headers=AUTH, timeout=30)
        assert r.status_code == 503 and "did not confirm" in r.json()["message"]
        assert r.headers["Retry-After"] == "1"
        assert time.monotonic() - t0 < 10
        t0 = time.monotonic()
        c.stop()
        assert time.monotonic() - t0 < 20
    finally:
        bus.gate.set()
        bus.close()


# -- health, readiness, metrics --------------------------------------------------------------


def test_health_ready_and_metrics_tell_what_happened(served):
    c, _ = served
    assert httpx.get(f"{c.url}/healthz").json()["alive"] is True
    ready = httpx.get(f"{c.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    httpx.post(f"{c.url}/v1/events", json=[event(1), event(2), {"x": 1}], headers=AUTH)
    httpx.post(f"{c.url}/v1/events", content=b"{", headers=AUTH)
    httpx.post(f"{c.url}/v1/events", json=event(3))  # 401: not received
    httpx.get(f"{c.url}/v1/p.gif", params=event(4))
    m = metrics(c.url)
    src = (("source", "web"),)
    assert m[("clickloop_collector_events_received_total", src)] == 5
    assert m[("clickloop_collector_events_accepted_total", src)] == 3
    assert (
        m[("clickloop_collector_events_rejected_total", (("reason", "missing_event_id"), *src))]
        == 1
    )
    assert m[("clickloop_collector_events_rejected_total", (("reason", "unparseable"), *src))] == 1
    assert (
        m[("clickloop_collector_requests_total", (("endpoint", "/v1/events"), ("status", "400")))]
        == 2
    )
    assert (
        m[("clickloop_collector_requests_total", (("endpoint", "/v1/events"), ("status", "401")))]
        == 1
    )
    assert m[("clickloop_collector_request_seconds_count", (("endpoint", "/v1/events"),))] == 3
    assert m[("clickloop_collector_inflight_requests", ())] == 0
    assert m[("clickloop_collector_max_inflight", ())] == 64
    assert m[("clickloop_collector_publish_batch_events_sum", ())] == 3
    assert m[("clickloop_collector_payload_bytes_count", ())] == 2
    assert m[("clickloop_collector_publish_seconds_count", ())] >= 1
    assert m[("clickloop_collector_validate_seconds_count", ())] >= 2


def test_unknown_paths_and_methods_answer_json_errors(served):
    c, _ = served
    r = httpx.get(f"{c.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.get(f"{c.url}/v1/events")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
