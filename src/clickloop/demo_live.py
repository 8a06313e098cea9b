"""The demo's live step: traffic through the HTTP collector, the bus, the lake and the stream.

Three real components run side by side in this process, each on its own thread,
exactly as they would as three services: the collector (``clickloop ingest
serve``) answering POSTs on a loopback port, the stream ingester (``clickloop
ingest stream``) committing the bus to the lake, and the streaming feature
engine (``clickloop features stream``) updating the online store. A client
posts the day's events as NDJSON batches over keep-alive HTTP.
"""

from __future__ import annotations

import http.client
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from pydantic import SecretStr

from clickloop.config.infra import CollectorSourceConfig
from clickloop.errors import BackendUnavailableError

if TYPE_CHECKING:
    from clickloop.demo import Story
    from clickloop.project import Project

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT = 300.0  # seconds for the ingester and the feature stream to drain the bus


class Poster:
    """A keep-alive HTTP client posting NDJSON batches and tallying the collector's answers."""

    def __init__(self, url: str, token: str) -> None:
        self.headers = {
            "Content-Type": "application/x-ndjson",
            "Authorization": f"Bearer {token}",
        }
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=60
        )
        self.requests = 0
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.status: dict[int, int] = {}

    def post(self, lines: list[bytes]) -> None:
        body = b"\n".join(lines) + b"\n"
        self.conn.request("POST", "/v1/events", body, self.headers)
        resp = self.conn.getresponse()
        answer = orjson.loads(resp.read() or b"{}")
        self.requests += 1
        self.status[resp.status] = self.status.get(resp.status, 0) + 1
        if resp.status == 202:
            self.accepted += int(answer["accepted"])
        elif resp.status == 400:  # partial acceptance: the valid ones are durable on the bus
            details = answer.get("details", {})
            self.accepted += int(details.get("accepted", 0))
            for reason, n in details.get("reasons", {}).items():
                self.rejected[reason] = self.rejected.get(reason, 0) + int(n)
        else:
            raise BackendUnavailableError(
                f"the collector answered {resp.status} to a demo batch: {answer}"
            )

    def close(self) -> None:
        self.conn.close()


def _lines(files: list[Path]) -> list[bytes]:
    out: list[bytes] = []
    for path in files:
        out.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return out


def run_live(
    project: Project, files: list[Path], story: Story, *, batch_size: int = 500
) -> dict[str, Any]:
    """Post ``files`` through a collector while the ingester and the feature stream run."""
    from clickloop.demo import wait_until
    from clickloop.features import StreamRunner
    from clickloop.ingest.collector import BackgroundCollector
    from clickloop.ingest.stream import StreamReport, run_stream

    lines = _lines(files)
    stop_ingest, stop_features = threading.Event(), threading.Event()
    ingested: dict[str, Any] = {"received": 0}
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def on_commit(report: StreamReport) -> None:
        ingested["received"] = report.counts.received

    def ingest() -> None:
        try:
            results["ingest"] = run_stream(project, stop=stop_ingest, on_batch=on_commit)
        except BaseException as exc:  # reported below
            errors.append(exc)
            stop_features.set()

    # seed the stream's state from the lake (days 1–6, batch-imported, never on the bus)
    # before today's traffic starts, so the bootstrap reads exactly that history
    runner = StreamRunner(project, bootstrap="lake")
    boot = runner.bootstrap()
    story.say(
        f"feature stream bootstrapped from the lake: {boot.events:,} events "
        f"({boot.start[:10] if boot.start else '-'} … {boot.end[:10] if boot.end else '-'}) "
        f"in {boot.seconds:.1f}s — the history its windows need, which never crossed the bus"
    )
    fed = {"messages": 0}

    def on_features(n: int) -> None:
        fed["messages"] += n

    def features() -> None:
        try:
            results["features"] = runner.run(stop=stop_features, on_batch=on_features)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=ingest, name="demo-ingest", daemon=True),
        threading.Thread(target=features, name="demo-features", daemon=True),
    ]
    # a token for this run only (as a deployment would set COLLECTOR_TOKEN): never printed
    token = secrets.token_urlsafe(24)
    web = project.config.sources["web"]
    if isinstance(web, CollectorSourceConfig):
        web.tokens = [SecretStr(token)]
    t0 = time.perf_counter()
    with BackgroundCollector(project, "web") as collector:
        story.say(
            f"collector listening on {collector.url} (POST /v1/events, GET /v1/p.gif; "
            "bearer-token authentication with a token made for this run)"
        )
        for t in threads:
            t.start()
        poster = Poster(collector.url, token)
        t_post = time.perf_counter()
        try:
            for i in range(0, len(lines), batch_size):
                poster.post(lines[i : i + batch_size])
        finally:
            poster.close()
        posted_s = time.perf_counter() - t_post
    published = poster.accepted
    drained = wait_until(
        lambda: errors or (ingested["received"] >= published and fed["messages"] >= published),
        CATCH_UP_TIMEOUT,
    )
    stop_ingest.set()
    stop_features.set()
    for t in threads:
        t.join(60)
    try:
        parity = _parity(project, runner, lines) if not errors and drained else None
    finally:
        runner.close()
    if errors:
        raise errors[0]
    if not drained:
        raise BackendUnavailableError(
            f"the stream did not catch up within {CATCH_UP_TIMEOUT:g} s: ingested "
            f"{ingested['received']:,} and featurised {fed['messages']:,} of {published:,}"
        )
    total_s = time.perf_counter() - t0 - (parity or {}).get("seconds", 0.0)
    ing = results["ingest"]
    feats = results["features"]
    story.say(
        f"posted {len(lines):,} records in {poster.requests} requests of ≤{batch_size} "
        f"({len(lines) / posted_s:,.0f} records/s): {published:,} accepted durable on the bus "
        f"(202), rejected with reasons: "
        + (", ".join(f"{r} {n:,}" for r, n in sorted(poster.rejected.items())) or "none")
    )
    c = ing.counts
    story.say(
        f"stream ingester: {ing.batches} micro-batches → lake: accepted {c.accepted:,}, "
        f"duplicates {c.duplicates:,}"
        + (f", quarantined {c.quarantined_total:,}" if c.quarantined_total else "")
    )
    story.say(
        f"feature stream: {feats['messages']:,} events → {feats['rows_written']:,} online rows "
        f"updated, {feats['checkpoints']} checkpoints; everything drained in {total_s:.1f}s"
    )
    assert parity is not None  # computed whenever the stream drained without errors
    too_late = {name: st.get("too_late", 0) for name, st in feats.get("sets", {}).items()}
    story.say(
        f"parity: for the {parity['entities']:,} users active today, the stream's values as of "
        f"its clock equal the batch engine's point-in-time values for {parity['identical']:,} "
        f"({parity['values']:,} values compared)"
    )
    if parity["differ"]:
        story.say(
            f"  {len(parity['differ'])} differ ({', '.join(parity['differ'][:3])}…): the stream "
            f"applies an event only within allowed_lateness of its clock; later ones are "
            f"counted as too late and left to the batch path — "
            + ", ".join(f"{n}: {v:,}" for n, v in too_late.items())
        )
    return {
        "parity": {**parity, "too_late": too_late},
        "collector": {
            "records": len(lines),
            "requests": poster.requests,
            "accepted": published,
            "rejected_by_reason": poster.rejected,
            "status": {str(k): v for k, v in poster.status.items()},
        },
        "ingest": ing.to_dict(),
        "features": {
            k: feats.get(k) for k in ("messages", "rows_written", "checkpoints", "bootstrap")
        },
        "seconds_to_drain": round(total_s, 2),
    }


def _parity(project: Project, runner: Any, lines: list[bytes]) -> dict[str, Any]:
    """Stream state vs the batch engine, as of the stream's clock, for today's users."""
    from datetime import UTC, datetime, timedelta

    from clickloop.features import as_of_values

    t0 = time.perf_counter()
    users: set[str] = set()
    for line in lines:
        try:
            user = orjson.loads(line).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(user, str) and user:
            users.add(user)
    entities = sorted(users)
    clock = runner.stream.clock
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clock)
    sets = [fs.name for fs in runner.sets if list(fs.entity) == ["user_id"]]  # keyed by user
    batch = as_of_values(project, entities, when, sets)
    identical, compared, differ = 0, 0, []
    for entity, row in zip(entities, batch, strict=True):
        same = True
        for name in sets:
            for feature, value in runner.stream.values(name, entity).items():
                compared += 1
                if not _same(value, row.get(feature)):
                    same = False
                    log.debug(
                        "parity: %s %s stream=%r batch=%r", entity, feature, value, row.get(feature)
                    )
        if same:
            identical += 1
        else:
            differ.append(entity)
    return {
        "entities": len(entities),
        "identical": identical,
        "values": compared,
        "differ": differ,
        "as_of": when.isoformat(),
        "seconds": time.perf_counter() - t0,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)
