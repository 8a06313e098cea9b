"""One exception hierarchy for the whole project.

Every error clickloop raises on purpose is a :class:`ClickloopError`. Each
subclass also inherits the matching built-in (``ValueError``, ``LookupError``,
…) so callers that already catch those keep working, and each knows the HTTP
status a service should answer with and the process exit code a CLI should end
with. Messages say what failed, on what, and how to fix it::

    >>> raise NotFoundError("model 'ctr' has no alias 'champion'",
    ...                     hint="run `clickloop models promote ctr VERSION`")
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class ClickloopError(Exception):
    """Root of every deliberate clickloop error.

    ``hint`` is an optional sentence on how to fix the problem; ``details`` are
    machine-readable facts (shown with ``--json`` and in HTTP error bodies).
    """

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = EXIT_FAILURE
    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``--json`` and HTTP error bodies)."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class ConfigError(ClickloopError, ValueError):
    """The project configuration is invalid: names file, key path, and fix."""

    http_status = 500
    exit_code = EXIT_USAGE
    code = "config_error"


class UsageError(ClickloopError, ValueError):
    """A command or call was used wrongly (bad argument, bad combination)."""

    http_status = 400
    exit_code = EXIT_USAGE
    code = "usage_error"


class InvalidInputError(ClickloopError, ValueError):
    """Input data is malformed (a record, a file, a request body)."""

    http_status = 400
    code = "invalid_input"


class NotFoundError(ClickloopError, LookupError):
    """Something named does not exist (a model, an alias, an entity, a file)."""

    http_status = 404
    code = "not_found"


class ConflictError(ClickloopError, RuntimeError):
    """The operation conflicts with current state (e.g. a gate refused a promotion)."""

    http_status = 409
    code = "conflict"


class AuthError(ClickloopError, PermissionError):
    """Missing or wrong credentials."""

    http_status = 401
    code = "unauthorized"


class PayloadTooLargeError(ClickloopError, ValueError):
    """A request or record exceeds a configured size limit."""

    http_status = 413
    code = "payload_too_large"


class OverloadedError(ClickloopError, RuntimeError):
    """Backpressure: the caller should retry after ``retry_after`` seconds."""

    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)
        self.retry_after = retry_after


class BackendUnavailableError(ClickloopError, ConnectionError):
    """A configured backend (Kafka, Redis, PostgreSQL, object store) cannot be reached."""

    http_status = 503
    code = "backend_unavailable"


class MissingExtraError(ClickloopError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""

    http_status = 500
    exit_code = EXIT_USAGE
    code = "missing_extra"

    def __init__(self, package: str, extra: str, *, feature: str) -> None:
        super().__init__(
            f"{feature} needs the Python package '{package}', which is not installed",
            hint=f"pip install 'clickloop[{extra}]'",
            package=package,
            extra=extra,
        )


class DataError(ClickloopError, RuntimeError):
    """Stored data is inconsistent or corrupt (a torn file, a bad checksum)."""

    http_status = 500
    code = "data_error"


def require(package: str, extra: str, *, feature: str) -> Any:
    """Import an optional dependency or raise :class:`MissingExtraError`.

    >>> kafka = require("confluent_kafka", "kafka", feature="the Kafka bus")
    """
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingExtraError(package.split(".", maxsplit=1)[0], extra, feature=feature) from exc
