"""Human units used across the configuration: durations and byte sizes.

>>> parse_duration("90m")
datetime.timedelta(seconds=5400)
>>> format_duration(parse_duration("7d"))
'7d'
>>> parse_bytes("64MiB")
67108864
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.I)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.I)
_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_duration(value: Any) -> timedelta:
    """Parse ``"30s"``, ``"10m"``, ``"1h"``, ``"7d"``, ``"2w"``, ``"250ms"`` or seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10m' or '7d', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m[1]) * _UNIT_SECONDS[m[2].lower()])
    raise ValueError(
        f"expected a duration like '250ms', '30s', '10m', '1h', '7d' or '2w', got {value!r}"
    )


def format_duration(td: timedelta) -> str:
    """The shortest exact spelling of a duration (``7d``, ``90m``, ``1500ms``)."""
    ms = round(td.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):  # days, not weeks: "7d" reads as written
        size = int(_UNIT_SECONDS[unit] * 1000)
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_bytes(value: Any) -> int:
    """Parse ``"64MB"``, ``"1GiB"``, ``"512k"`` or a plain integer into bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '64MiB', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _BYTES.match(value)
        if m and m[2].lower() in _BYTE_UNITS:
            return int(float(m[1]) * _BYTE_UNITS[m[2].lower()])
    raise ValueError(f"expected a size like '512KiB', '64MB' or '1GiB', got {value!r}")


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
