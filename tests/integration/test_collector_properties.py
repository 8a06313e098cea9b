"""Hypothesis against the live collector: never a 5xx, nothing valid lost, every reject explained.

One real server (uvicorn on loopback, the real local bus) answers every
generated body; after each answer the test reads what reached the bus and
checks it against what the answer promised.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clickloop.bus.base import open_bus
from clickloop.events import Reason
from clickloop.ingest.collector import BackgroundCollector
from tests.integration.test_collector import AUTH, Drain, make_project
from tests.unit.ingest.test_collector_records import junk, records, valid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REASONS = {r.value for r in Reason}
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Drain]]:
    root = tmp_path_factory.mktemp("collector-props")
    project = make_project(Path(root) / "p", f", max_body: {MAX_BODY}")
    with BackgroundCollector(project) as c:
        bus = open_bus(project)
        drain = Drain(bus, "props")
        with httpx.Client(base_url=c.url, headers=AUTH, timeout=60) as client:
            yield client, drain
        drain.close()
        bus.close()


odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=20_000),
    st.sampled_from(["\u0000", "\ud7ff\ue000\uffff", "𝕏" * 50, '"\\', "\n\r\t"]),
)
odd_record = st.one_of(
    records,
    st.dictionaries(st.one_of(odd_text, st.sampled_from(["event_id", "ts", "props"])), junk),
    records.map(lambda r: {**r, "url": "https://a.example/" + "x" * 9000}),
    records.map(lambda r: {**r, "event_id": 10**30}),
)
mostly_valid = st.one_of(valid, valid, valid, odd_record)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        odd_text,
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()  # integers of any size


def _ndjson(items: list[Any]) -> bytes:
    lines = []
    for item in items:
        if isinstance(item, bytes):
            lines.append(item)  # raw junk line
        else:
            lines.append(_dumps(item))
    return b"\n".join(lines) + b"\n"


bodies = st.one_of(
    st.lists(mostly_valid, min_size=2, max_size=30).map(
        lambda rs: ("application/json", _dumps(rs))
    ),
    st.lists(mostly_valid, max_size=30).map(lambda rs: ("application/json", _dumps(rs))),
    mostly_valid.map(lambda r: ("application/json", _dumps(r))),
    st.lists(st.one_of(odd_record, json_values), max_size=20).map(
        lambda xs: ("application/json", _dumps(xs))
    ),
    st.lists(
        st.one_of(mostly_valid, mostly_valid, json_values, st.binary(max_size=30), st.just(b"")),
        min_size=2,
        max_size=25,
    ).map(lambda xs: ("application/x-ndjson", _ndjson(xs))),
    st.tuples(st.sampled_from([None, "application/json", "text/plain"]), st.binary(max_size=500)),
    st.integers(1000, 3000).map(lambda d: ("application/json", b"[" * d + b"]" * d)),
)


def _spelled_id(v: Any) -> str:
    return v if isinstance(v, str) else str(int(v))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(body=bodies, compress=st.booleans())
def test_never_a_5xx_nothing_valid_lost_every_reject_explained(live, body, compress):
    client, drain = live
    ctype, payload = body
    headers = {"Content-Type": ctype} if ctype else {}
    if compress:
        payload, headers = gzip.compress(payload), {**headers, "Content-Encoding": "gzip"}
    r = client.post("/v1/events", content=payload, headers=headers)
    assert r.status_code in (202, 400, 413), r.text[:500]
    event(f"status {r.status_code}")
    published = drain.new()
    if r.status_code == 413:
        assert published == []
        return
    answer = r.json()
    if r.status_code == 202:
        accepted, errors = answer["accepted"], []
        assert answer["rejected"] == 0
    else:
        d = answer["details"]
        accepted, errors = d["accepted"], d["errors"]
        assert not d["truncated"]
        assert d["rejected"] == len(errors) == sum(d["reasons"].values())
        for e in errors:
            assert e["reason"] in REASONS and e["detail"]
    assert len(published) == accepted  # every event answered as accepted is on the bus
    event(f"{r.status_code}, {'some' if accepted else 'none'} published")
    if any(e["index"] is None for e in errors):  # the body itself was unreadable
        assert accepted == 0 and len(errors) == 1 and errors[0]["reason"] == "unparseable"
        return
    parsed = _records(ctype, gzip.decompress(payload) if compress else payload)
    refused = {e["index"] for e in errors}
    assert len(refused) == len(errors)
    assert accepted + len(errors) == len(parsed)
    kept = [rec for i, rec in enumerate(parsed) if i not in refused]
    assert all(isinstance(rec, dict) for rec in kept)
    want = Counter(
        (_spelled_id(rec["event_id"]), _spelled_id(rec["user_id"]), rec["type"]) for rec in kept
    )
    got = Counter((m["event_id"], m["user_id"], m["type"]) for m in published)
    assert got == want


def _records(ctype: str | None, payload: bytes) -> list[Any]:
    """The records of a body, as a client would count them (the test's own reading)."""
    if payload.startswith(b"\xef\xbb\xbf"):
        payload = payload[3:]
    if ctype != "application/x-ndjson":
        try:
            value = json.loads(payload)
        except ValueError:
            ctype = "application/x-ndjson"  # a sniffed multi-line body
        else:
            return value if isinstance(value, list) else [value]
    out: list[Any] = []
    for line in payload.split(b"\n"):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)  # unparseable: refused, never published
    return out


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(params=st.dictionaries(st.text(min_size=1, max_size=10), odd_text, max_size=8), rec=records)
def test_the_pixel_always_answers_a_gif_and_never_a_5xx(live, params, rec):
    client, drain = live
    query = {**{k: v if isinstance(v, str) else json.dumps(v) for k, v in rec.items()}, **params}
    r = client.get("/v1/p.gif", params=query)
    assert r.status_code in (200, 400, 413, 414, 431), r.headers
    published = drain.new()
    if r.status_code == 200:
        assert r.content.startswith(b"GIF89a") and len(published) == 1
    else:
        assert published == []
        if r.status_code == 400:
            assert r.content.startswith(b"GIF89a")
            assert r.headers["x-clickloop-reason"] in REASONS
