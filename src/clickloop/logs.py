"""Logging set-up for entry points (CLI, services). Library code never calls this.

Library modules only do ``log = logging.getLogger(__name__)``. An entry point
calls :func:`configure` once, choosing readable console lines for people or
JSON lines for machines (one object per line, ready for fluentd / fluent-bit /
Loki: ``time``, ``level``, ``logger``, ``message`` plus any ``extra=`` fields).

Secrets never reach a log: values of keys that look secret are masked, and
``SecretStr`` values print as ``**********`` by construction.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["console", "json"]

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api[_-]?key|authorization)", re.I)
_SECRET_IN_URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@"
)


def redact(text: str) -> str:
    """Mask the password in any ``scheme://user:password@host`` inside ``text``.

    >>> redact("postgresql://app:hunter2@db:5432/x")
    'postgresql://app:***@db:5432/x'
    """
    return _SECRET_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields are kept, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = _clean(key, value)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message key=value …`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        extras = " ".join(
            f"{k}={_clean(k, v)}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {redact(record.getMessage())}"
        if extras:
            line = f"{line}  {extras}"
        if record.exc_info:
            line = f"{line}\n{redact(self.formatException(record.exc_info))}"
        return line


def configure(
    fmt: LogFormat = "console", level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Install one handler on the ``clickloop`` logger (idempotent).

    >>> configure("json", "DEBUG")
    """
    root = logging.getLogger("clickloop")
    for handler in list(root.handlers):
        if getattr(handler, "_clickloop", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler._clickloop = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    root.propagate = False
