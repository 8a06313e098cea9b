"""The collector's request bodies and pixel queries, as records.

:func:`parse_body` reads one JSON object, a JSON array of objects, or NDJSON
(one object per line) and refuses, per record, what is not an object
(``not_an_object``) or, in NDJSON, not JSON (``unparseable``). A body that is
not JSON at all is an :class:`~clickloop.errors.InvalidInputError`.
:func:`parse_query` turns a tracking pixel's query string into one record.

>>> parsed = parse_body(b'[{"event_id": "e1"}, 5]', "application/json")
>>> parsed.total, parsed.records, [r.reason for r in parsed.rejects]
(2, [{'event_id': 'e1'}], ['not_an_object'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from clickloop.errors import InvalidInputError
from clickloop.events.schema import Reason

NDJSON_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
JSON_TYPES: Final = frozenset({"application/json", "text/json"})
# Bodies of these types (or none) are sniffed: navigator.sendBeacon sends text/plain,
# `curl -d` sends application/x-www-form-urlencoded.
SNIFFED_TYPES: Final = frozenset(
    {"", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded"}
)
PIXEL_IGNORED: Final = frozenset({"_"})  # the conventional cache-buster parameter

_BOM: Final = b"\xef\xbb\xbf"


class UnsupportedMediaTypeError(InvalidInputError):
    """The body's Content-Type or Content-Encoding is not one the collector reads."""

    http_status = 415
    code = "unsupported_media_type"


@dataclass(frozen=True, slots=True)
class Reject:
    """One refused record: its position in the request, a reason code and a detail."""

    index: int
    reason: str
    detail: str
    line: int | None = None  # 1-based line of an NDJSON body

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "reason": self.reason, "detail": self.detail}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass
class Parsed:
    """The records of one request: objects to validate, and what was refused while parsing."""

    records: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # request index of each record
    rejects: list[Reject] = field(default_factory=list)
    total: int = 0  # records in the request (objects + refused)
    lines: dict[int, int] | None = None  # request index → NDJSON line


def media_type(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` → ``"application/json"``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> Parsed:
    """Split a request body into records.

    JSON (``application/json``) is one object or an array of objects; NDJSON
    (``application/x-ndjson`` and friends) is one object per line, blank lines
    skipped. Without a content type (or with ``text/plain``, as
    ``navigator.sendBeacon`` sends) the body is read as JSON if it parses as
    JSON, otherwise as NDJSON if it has several lines.

    >>> parse_body(b'{"a": 1}\\n[2]\\n', "application/x-ndjson").rejects[0].reason
    'not_an_object'
    """
    kind = media_type(content_type)
    if kind.endswith("+json"):
        kind = "application/json"
    if kind not in NDJSON_TYPES and kind not in JSON_TYPES and kind not in SNIFFED_TYPES:
        raise UnsupportedMediaTypeError(
            f"cannot read a request body of type {kind!r}",
            hint="send application/json (an object or an array of objects) "
            "or application/x-ndjson (one object per line)",
            content_type=kind,
        )
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        raise _unparseable("the request body is empty")
    if kind in NDJSON_TYPES:
        return _ndjson(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if kind in SNIFFED_TYPES and b"\n" in body.strip():
            return _ndjson(body)
        raise _unparseable(f"the request body is not valid JSON: {exc}") from None
    return _json(value)


def _unparseable(message: str) -> InvalidInputError:
    return InvalidInputError(
        message,
        hint="send one JSON object, a JSON array of objects, or NDJSON "
        "(Content-Type: application/x-ndjson), UTF-8 encoded",
        accepted=0,
        rejected=1,  # the body, as one unreadable record
        reasons={Reason.UNPARSEABLE.value: 1},
        errors=[{"index": None, "reason": Reason.UNPARSEABLE.value, "detail": message}],
        truncated=False,
    )


def _json(value: Any) -> Parsed:
    items = value if isinstance(value, list) else [value]
    out = Parsed(total=len(items))
    for i, item in enumerate(items):
        if isinstance(item, dict):
            out.records.append(item)
            out.positions.append(i)
        else:
            out.rejects.append(
                Reject(i, Reason.NOT_AN_OBJECT.value, f"a JSON {_kind_name(item)}, not an object")
            )
    return out


def _ndjson(body: bytes) -> Parsed:
    out = Parsed(lines={})
    index = 0
    for number, raw in enumerate(body.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        assert out.lines is not None
        out.lines[index] = number
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            out.rejects.append(
                Reject(index, Reason.UNPARSEABLE.value, f"not valid JSON: {exc}", number)
            )
        else:
            if isinstance(item, dict):
                out.records.append(item)
                out.positions.append(index)
            else:
                out.rejects.append(
                    Reject(
                        index,
                        Reason.NOT_AN_OBJECT.value,
                        f"a JSON {_kind_name(item)}, not an object",
                        number,
                    )
                )
        index += 1
    out.total = index
    return out


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "value"


def parse_query(params: Iterable[tuple[str, str]], referer: str | None = None) -> dict[str, Any]:
    """A tracking pixel's query parameters as one record (the last of repeated names wins).

    The page that shows the pixel is the request's ``Referer``: it is the
    event's ``url`` unless the query names one. The cache-buster ``_`` is ignored.

    >>> parse_query([("event_id", "e1"), ("plan", "pro"), ("_", "17")], "https://a.example/x")
    {'event_id': 'e1', 'plan': 'pro', 'url': 'https://a.example/x'}
    """
    record: dict[str, Any] = {}
    for name, value in params:
        if name not in PIXEL_IGNORED:
            record[name] = value
    if referer and "url" not in record:
        record["url"] = referer
    return record
