"""The canonical event: one Arrow schema every stage agrees on.

=============  ==========================  ===============================================
field          type                        meaning
=============  ==========================  ===============================================
event_id       string, required            dedupe key (≤ 128 characters)
ts             timestamp[us, UTC], req.    event time, when it happened on the client
received_at    timestamp[us, UTC], req.    arrival time at the first clickloop component
type           string, required            ``page_view``, ``impression``, ``click``,
                                           ``conversion``, ``exposure`` or a custom name
user_id        string, required            the visitor (cookie or account id)
session_id     string                      the visit
url            string                      absolute http(s) URL of the page
referrer       string                      absolute URL of the previous page
props          map<string, string>         scalar properties; numbers and booleans are
                                           kept in their JSON spelling (``12.5``, ``true``)
=============  ==========================  ===============================================
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, Literal, get_args

import pyarrow as pa

UTC_US: Final = pa.timestamp("us", tz="UTC")
PROPS_TYPE: Final = pa.map_(pa.string(), pa.string())

EVENT_SCHEMA: Final = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("ts", UTC_US, nullable=False),
        pa.field("received_at", UTC_US, nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("props", PROPS_TYPE),
    ],
    metadata={"clickloop.schema": "event/1"},
)

FieldName = Literal[
    "event_id", "ts", "received_at", "type", "user_id", "session_id", "url", "referrer", "props"
]
FIELDS: Final[tuple[str, ...]] = get_args(FieldName)
REQUIRED: Final = ("event_id", "ts", "type", "user_id")
TIMESTAMP_FIELDS: Final = ("ts", "received_at")

STANDARD_TYPES: Final = ("page_view", "impression", "click", "conversion", "exposure")
TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")

MAX_EVENT_ID: Final = 128
MAX_ID: Final = 256
MAX_URL: Final = 8192


class Reason(StrEnum):
    """Machine-readable reason codes for quarantined records (stable; never renamed)."""

    UNPARSEABLE = "unparseable"  # the record is not valid JSON / CSV / Parquet
    NOT_AN_OBJECT = "not_an_object"  # JSON that is not an object
    TOO_LARGE = "too_large"  # one record over the size limit
    MISSING_EVENT_ID = "missing_event_id"
    BAD_EVENT_ID = "bad_event_id"  # empty, too long, or not a scalar
    MISSING_TS = "missing_ts"
    BAD_TS = "bad_ts"  # present but not a time in the declared format
    TS_OUT_OF_RANGE = "ts_out_of_range"  # before 1990 (usually an epoch unit mix-up)
    TS_IN_FUTURE = "ts_in_future"  # later than received_at + max_future
    BAD_RECEIVED_AT = "bad_received_at"
    MISSING_TYPE = "missing_type"
    BAD_TYPE = "bad_type"  # not matching ^[a-z][a-z0-9_.:-]{0,63}$
    MISSING_USER_ID = "missing_user_id"
    BAD_USER_ID = "bad_user_id"
    BAD_SESSION_ID = "bad_session_id"
    BAD_URL = "bad_url"  # not an absolute http(s) URL with a host, or too long
    BAD_REFERRER = "bad_referrer"
    BAD_PROPS = "bad_props"  # props is not an object


# Order in which checks are reported: the first failing check is the record's reason.
REASON_ORDER: Final[tuple[Reason, ...]] = tuple(Reason)


def empty_events() -> pa.Table:
    """An empty table with the canonical schema."""
    return EVENT_SCHEMA.empty_table()
