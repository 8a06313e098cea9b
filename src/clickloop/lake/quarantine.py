"""Quarantine: records that could not become events, kept with why and where they came from.

Every record an acquisition path refuses is kept here — never dropped
silently — as one row of :data:`QUARANTINE_SCHEMA` under
``quarantine/dt=<arrival date>/…parquet``:

=============  ====================  =================================================
field          type                  meaning
=============  ====================  =================================================
payload        binary                the record exactly as received (a JSONL line, a
                                     bus message); CSV and Parquet rows, which have no
                                     text of their own, as a JSON object of their cells
reason         string                a :class:`~clickloop.events.Reason` code
detail         string                what was wrong, quoting the offending value
source         string                the source name (``files``, a configured source,
                                     ``bus:events``)
received_at    timestamp[us, UTC]    when it arrived
origin         string                where: ``path:line`` / ``path#row`` /
                                     ``topic/partition@offset``
=============  ====================  =================================================

>>> t = rejects_table([b"{oops"], ["unparseable"], ["not JSON"], "files", 0, ["a.jsonl:1"])
>>> t.column("reason").to_pylist()
['unparseable']
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import pyarrow as pa

from clickloop.events.schema import UTC_US

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("received_at", UTC_US, nullable=False),
        pa.field("origin", pa.string()),
    ],
    metadata={"clickloop.schema": "quarantine/1"},
)


def rejects_table(
    payloads: Sequence[bytes | str] | pa.Array,
    reasons: Sequence[str] | pa.Array,
    details: Sequence[str | None] | pa.Array,
    source: str,
    received_at: int | datetime | Sequence[int] | pa.Array,
    origins: Sequence[str | None] | pa.Array | None = None,
) -> pa.Table:
    """A quarantine table; ``received_at`` is one time (µs or datetime) or one per row."""
    n = len(payloads)
    if isinstance(payloads, pa.Array):
        payload = payloads.cast(pa.binary())
    else:
        payload = pa.array(
            [p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p for p in payloads],
            pa.binary(),
        )
    if isinstance(received_at, int | datetime):
        scalar = pa.scalar(received_at, UTC_US)
        received = pa.array([scalar.value] * n, pa.int64()).cast(UTC_US)
    elif isinstance(received_at, pa.Array):
        received = received_at.cast(UTC_US)
    else:
        received = pa.array(list(received_at), pa.int64()).cast(UTC_US)
    return pa.table(
        [
            payload,
            pa.array(reasons, pa.string()) if not isinstance(reasons, pa.Array) else reasons,
            pa.array(details, pa.string()) if not isinstance(details, pa.Array) else details,
            pa.array([source] * n, pa.string()),
            received,
            _origins(origins, n),
        ],
        schema=QUARANTINE_SCHEMA,
    )


def _origins(origins: Sequence[str | None] | pa.Array | None, n: int) -> pa.Array:
    if origins is None:
        return pa.nulls(n, pa.string())
    if isinstance(origins, pa.Array):
        return origins
    return pa.array(origins, pa.string())
