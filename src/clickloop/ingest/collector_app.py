"""The collector's ASGI application: endpoints, authentication, the one error handler.

See :mod:`clickloop.ingest.collector` for the endpoints and how to run it.

>>> app = Collector(Project.load("shop"), "web").app        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from clickloop.bus.base import Bus, open_bus
from clickloop.config.infra import CollectorSourceConfig
from clickloop.errors import (
    AuthError,
    BackendUnavailableError,
    ClickloopError,
    ConfigError,
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    UsageError,
)
from clickloop.ingest.collector_auth import CollectorAuth
from clickloop.ingest.collector_body import (
    Parsed,
    Reject,
    UnsupportedMediaTypeError,
    parse_body,
    parse_query,
)
from clickloop.ingest.collector_metrics import CollectorMetrics, ObserveRequests
from clickloop.ingest.collector_pipeline import Pipeline, Result
from clickloop.ingest.collector_records import EventValidator
from clickloop.project import Project

log = logging.getLogger(__name__)

EVENTS_PATH: Final = "/v1/events"
PIXEL_PATH: Final = "/v1/p.gif"
MAX_LISTED_ERRORS: Final = 1000  # per response; counts by reason are always complete
BODY_TIMEOUT_S: Final = 30.0  # a body trickling in slower than this holds a slot no longer
BUS_PROBE_TTL_S: Final = 1.0
BUS_PROBE_TIMEOUT_S: Final = 2.0
GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE: Final = {
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


class RequestTimeoutError(InvalidInputError):
    """The request body did not arrive within the time allowed."""

    http_status = 408
    code = "request_timeout"


def find_source(project: Project, name: str | None = None) -> tuple[str, CollectorSourceConfig]:
    """The project's ``collector`` source called ``name`` (or its only one).

    >>> find_source(Project.load("shop"))                       # doctest: +SKIP
    ('web', CollectorSourceConfig(type='collector', ...))
    """
    collectors = {
        k: v for k, v in project.config.sources.items() if isinstance(v, CollectorSourceConfig)
    }
    if name is not None:
        if name in collectors:
            return name, collectors[name]
        if name in project.config.sources:
            raise UsageError(
                f"source {name!r} is a {project.config.sources[name].type} source, not a collector",
                hint=f"collector sources: {', '.join(collectors) or 'none'}",
            )
        raise UsageError(
            f"no source named {name!r} in {project.config_path or project.root}",
            hint=f"collector sources: {', '.join(collectors) or 'none'}",
        )
    if len(collectors) == 1:
        return next(iter(collectors.items()))
    if not collectors:
        raise ConfigError(
            f"{project.config_path or project.root} declares no collector source",
            hint="add one under sources:, e.g.  web: {type: collector, port: 8081}",
        )
    raise UsageError(
        f"several collector sources ({', '.join(collectors)}); say which",
        hint=f"pass --source {next(iter(collectors))}",
    )


class Collector:
    """The collector of one source: an ASGI :attr:`app` and the pipeline behind it.

    ``bus`` overrides the project's bus (it is then not closed by the collector).
    ``publish_timeout`` bounds how long a request waits for the bus to confirm
    its events before it is answered 503; ``body_timeout`` how long a body may
    take to arrive (408 after, so slow clients cannot hold admission slots).

    >>> app = Collector(Project.load("shop"), "web").app          # doctest: +SKIP
    """

    def __init__(
        self,
        project: Project,
        source: str | None = None,
        *,
        bus: Bus | None = None,
        publish_timeout: float = 30.0,
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.project = project
        self.publish_timeout = publish_timeout
        self.body_timeout = body_timeout
        self.name, self.config = find_source(project, source)
        self.auth = CollectorAuth.from_config(self.config, self.name)
        self.validator = EventValidator(self.config, max_future=project.config.ingest.max_future)
        self.max_body = int(self.config.max_body)
        self.registry = CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry, self.name, self.config.max_inflight)
        self.bus: Bus | None = bus
        self._own_bus = bus is None
        self.pipeline: Pipeline | None = None
        self._probe: tuple[float, str | None] = (0.0, None)  # (when, problem)
        self.app = Starlette(
            routes=[
                Route(EVENTS_PATH, self.post_events, methods=["POST"]),
                Route(PIXEL_PATH, self.pixel, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            ],
            middleware=[
                Middleware(ObserveRequests, metrics=self.metrics),
                *self._cors(),
            ],
            exception_handlers={
                ClickloopError: error_response,
                HTTPException: error_response,
                ClientDisconnect: error_response,
                Exception: error_response,
            },
            lifespan=self._lifespan,
        )

    def _cors(self) -> list[Middleware]:
        """Browsers on ``cors_origins`` may POST (with a token) and read the answers."""
        if not self.config.cors_origins:
            return []
        from starlette.middleware.cors import CORSMiddleware

        return [
            Middleware(
                CORSMiddleware,
                allow_origins=self.config.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "content-encoding"],
                expose_headers=["retry-after", "x-clickloop-error", "x-clickloop-reason"],
                max_age=86400,
            )
        ]

    # lifecycle ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.bus is None:
            self.bus = await asyncio.to_thread(open_bus, self.project)
        producer = await asyncio.to_thread(self.bus.producer)
        self.pipeline = Pipeline(
            self.validator,
            producer,
            max_inflight=self.config.max_inflight,
            timeout=self.publish_timeout,
            on_batch=self.metrics.published,
            on_error=self.metrics.publish_errors.inc,
            on_inflight=self.metrics.inflight.set,
            on_validate=self.metrics.validated,
        )
        await self.pipeline.start()
        if not self.auth.enabled:
            log.warning(
                "AUTHENTICATION DISABLED: source %r has no tokens, so anyone who can reach "
                '%s:%s can send events; add tokens: ["${COLLECTOR_TOKEN}"] to the source',
                self.name,
                self.config.host,
                self.config.port,
            )
        try:
            yield
        finally:
            await self.pipeline.close()
            await asyncio.to_thread(producer.close)
            if self._own_bus and self.bus is not None:
                await asyncio.to_thread(self.bus.close)
                self.bus = None

    def _running(self) -> Pipeline:
        if self.pipeline is None:  # only before start-up completes
            raise OverloadedError("the collector is starting", retry_after=1.0)
        return self.pipeline

    # endpoints ---------------------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:
        arrival_us = time.time_ns() // 1000
        self.auth.check(request.headers.get("authorization"))
        pipeline = self._running()
        with pipeline.admit() as slot:
            try:
                body = await self._read_body(request)
                parsed = parse_body(body, request.headers.get("content-type"))
            except InvalidInputError as exc:
                if exc.details.get("reasons"):  # an unparseable body counts as one reject
                    self.metrics.count(1, 0, {"unparseable": 1})
                raise
            atomic = request.query_params.get("atomic", "").lower() in ("1", "true", "yes")
            result = await pipeline.submit(
                slot,
                parsed.records,
                arrival_us,
                atomic=atomic,
                publish=not (atomic and parsed.rejects),
            )
        rejects = _merge(parsed, result)
        reasons = _counts(rejects)
        withheld = parsed.total - result.accepted - len(rejects)  # valid, held back by atomic
        self.metrics.count(
            parsed.total, result.accepted, {**reasons, "atomic": withheld} if withheld else reasons
        )
        if not rejects:
            return _json({"accepted": result.accepted, "rejected": 0}, 202)
        held = " (atomic: none published)" if atomic else ""
        raise InvalidInputError(
            f"{len(rejects)} of {parsed.total} events rejected; "
            f"{result.accepted} accepted and durable{held}",
            hint="each error names the record's index and why it was refused",
            accepted=result.accepted,
            rejected=len(rejects),
            reasons=reasons,
            errors=[r.to_dict() for r in rejects[:MAX_LISTED_ERRORS]],
            truncated=len(rejects) > MAX_LISTED_ERRORS,
        )

    async def pixel(self, request: Request) -> Response:
        if request.method == "HEAD":  # link checkers, prefetchers: not an event
            return Response(GIF, 200, headers=NO_CACHE, media_type="image/gif")
        arrival_us = time.time_ns() // 1000
        self.auth.check(request.headers.get("authorization"), pixel=True)
        pipeline = self._running()
        record = parse_query(request.query_params.multi_items(), request.headers.get("referer"))
        with pipeline.admit() as slot:
            result = await pipeline.submit(slot, [record], arrival_us)
        reasons = _counts([Reject(p, r, d) for p, r, d in result.rejects])
        self.metrics.count(1, result.accepted, reasons)
        if result.rejects:
            _, reason, detail = result.rejects[0]
            raise InvalidInputError(
                f"pixel event rejected: {detail}",
                accepted=0,
                rejected=1,
                reasons=reasons,
                errors=[{"index": 0, "reason": reason, "detail": detail}],
                truncated=False,
            )
        return Response(GIF, 200, headers=NO_CACHE, media_type="image/gif")

    async def healthz(self, request: Request) -> Response:
        return _json({"alive": True, "source": self.name}, 200)

    async def readyz(self, request: Request) -> Response:
        problems: list[str] = []
        pipeline = self.pipeline
        if pipeline is None or not pipeline.alive:
            problems.append("the publishing pipeline is not running")
        else:
            if pipeline.overloaded:
                problems.append(
                    f"overloaded: {pipeline.inflight} of {pipeline.max_inflight} requests in flight"
                )
            if pipeline.last_error:
                problems.append(f"the last publish failed: {pipeline.last_error}")
        bus_problem = await self._bus_problem()
        if bus_problem:
            problems.append(bus_problem)
        body = {
            "ready": not problems,
            "source": self.name,
            "inflight": pipeline.inflight if pipeline else 0,
            "max_inflight": self.config.max_inflight,
            "problems": problems,
        }
        return _json(body, 200 if not problems else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # helpers -----------------------------------------------------------------------------

    async def _bus_problem(self) -> str | None:
        """Whether the bus answers (cached for a second; never blocks the loop long)."""
        when, problem = self._probe
        if time.monotonic() - when < BUS_PROBE_TTL_S:
            return problem
        bus = self.bus
        if bus is None:
            problem = "the bus is not open"
        else:
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(bus.end_offsets, "events"), BUS_PROBE_TIMEOUT_S
                )
                problem = None
            except TimeoutError:
                problem = f"the bus did not answer within {BUS_PROBE_TIMEOUT_S:g} s"
            except Exception as exc:  # any failure to reach the bus is "not ready"
                problem = f"the bus is unreachable: {type(exc).__name__}: {exc}".splitlines()[0]
        self._probe = (time.monotonic(), problem)
        return problem

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it (or its decompressed form) exceeds max_body."""
        limit = self.max_body
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip"):
            raise UnsupportedMediaTypeError(
                f"cannot read a body with Content-Encoding {encoding!r}",
                hint="send it uncompressed or with Content-Encoding: gzip",
            )
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if "gzip" in encoding else None
        chunks: list[bytes] = []
        received = size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limit:
                        raise _too_large(limit)
                    if inflate is not None:
                        chunk = inflate.decompress(chunk, limit - size + 1)
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body did not arrive within {self.body_timeout:g} s"
            ) from None
        except zlib.error as exc:
            raise InvalidInputError(f"the gzip body is corrupt: {exc}") from None
        if inflate is not None and not inflate.eof:
            raise InvalidInputError("the gzip body is truncated")
        self.metrics.payload_bytes.observe(received)
        return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body exceeds max_body ({limit:,} bytes)",
        hint="send fewer events per request",
        max_body=limit,
    )


def _merge(parsed: Parsed, result: Result) -> list[Reject]:
    """Parse-time and validation rejects, in request order, indexed as the client sent them."""
    lines = parsed.lines or {}
    out = list(parsed.rejects)
    for pos, reason, detail in result.rejects:
        index = parsed.positions[pos]
        out.append(Reject(index, reason, detail, lines.get(index)))
    out.sort(key=lambda r: r.index)
    return out


def _counts(rejects: list[Reject]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def error_response(request: Request, exc: Exception) -> Response:
    """The one place where an exception becomes an HTTP response.

    A :class:`ClickloopError` answers with its ``http_status`` and
    ``to_dict()`` body (``Retry-After`` for overload and bus trouble,
    ``WWW-Authenticate`` for 401); routing errors keep their status; anything
    else is a bug and a 500. The pixel always answers with its GIF, the error
    code in ``X-Clickloop-Error`` and a record's reason in ``X-Clickloop-Reason``.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=499)  # nobody is listening; recorded in metrics only
    if isinstance(exc, ClickloopError):
        status, body = exc.http_status, exc.to_dict()
        retry = exc.details.get("retry_after")
        if isinstance(exc, OverloadedError | BackendUnavailableError):
            headers["Retry-After"] = str(max(1, math.ceil(float(retry or 1))))
        if isinstance(exc, AuthError):
            headers["WWW-Authenticate"] = 'Bearer realm="clickloop"'
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        body = {"error": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}
        headers.update(exc.headers or {})
    else:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        status = 500
        body = {"error": "internal", "message": "unexpected error; see the collector's log"}
    if request.url.path == PIXEL_PATH:
        headers.update(NO_CACHE)
        headers["X-Clickloop-Error"] = str(body["error"])
        errors = body.get("details", {}).get("errors") if isinstance(body, dict) else None
        if errors:
            headers["X-Clickloop-Reason"] = str(errors[0]["reason"])
        return Response(GIF, status, headers=headers, media_type="image/gif")
    return _json(body, status, headers)
