"""Canonical events for the lake's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from clickloop.events.schema import EVENT_SCHEMA

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_events(n: int, *, start: datetime = T0, step: timedelta = timedelta(minutes=1),
                prefix: str = "e", offset: int = 0) -> pa.Table:  # fmt: skip
    """``n`` canonical events, one per ``step`` from ``start``, ids ``{prefix}{i}``."""
    ts = [start + step * i for i in range(n)]
    return pa.table(
        {
            "event_id": [f"{prefix}{i + offset}" for i in range(n)],
            "ts": ts,
            "received_at": [t + timedelta(seconds=1) for t in ts],
            "type": ["page_view"] * n,
            "user_id": [f"u{i % 7}" for i in range(n)],
            "session_id": [None] * n,
            "url": ["https://shop.example.com/items/1/2"] * n,
            "referrer": [None] * n,
            "props": [[("k", str(i))] for i in range(n)],
        },
        schema=EVENT_SCHEMA,
    )
