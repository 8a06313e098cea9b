"""The HTTP collector (``clickloop ingest serve``): events in over HTTP, durable on the bus.

Endpoints (one ``collector`` source per process):

``POST /v1/events``
    One JSON event, a JSON array of events, or NDJSON (``application/x-ndjson``;
    sniffed when the type is absent, ``text/plain`` as ``sendBeacon`` sends, or
    the form type ``curl -d`` sends); ``Content-Encoding: gzip`` accepted.
    **202** ``{"accepted": n, "rejected": 0}`` once every event is durable on
    the bus. **400** when any record is refused: the body lists each
    refused record (``index``, NDJSON ``line``, ``reason``, ``detail``) and how
    many of the others were accepted — they *are* published (partial
    acceptance) unless the request says ``?atomic=true``, which publishes all
    or nothing. A body that is not JSON at all is a 400 with reason
    ``unparseable``. **413** over ``max_body`` (checked while the body streams
    in, before and after decompression), **415** for an unknown content type or
    encoding, **408** for a body slower than 30 s, **401** without a valid
    bearer token, **503** with ``Retry-After`` when ``max_inflight`` requests
    are already in flight or the bus did not confirm the write.
``GET /v1/p.gif?event_id=…&ts=…&type=…&user_id=…``
    The tracking pixel: query parameters are the event's fields (``url``
    defaults to the ``Referer``; other parameters become ``props``). Always a
    1×1 GIF with no-cache headers: **200** once durable, **400** for an invalid
    event (``X-Clickloop-Reason`` names the reason), 401 / 503 as above.
``GET /healthz``, ``GET /readyz``, ``GET /metrics``
    Alive; ready (bus reachable, not overloaded); Prometheus metrics.

Authentication: ``Authorization: Bearer <token>`` against the source's
``tokens`` (constant-time; no tokens = authentication off, warned at start-up
and by ``clickloop doctor``); ``pixel_public`` opens the pixel. Browsers on
``cors_origins`` may call the collector. Every error becomes a response in one
place (:func:`error_response`), with the status the error class declares.

Concurrent requests share one validation and one durable publish (group
commit, :mod:`clickloop.ingest.collector_pipeline`); each is answered only once
its own events are durable.

>>> from clickloop.project import Project
>>> serve(Project.load("shop"), "web", port=8081)              # doctest: +SKIP
>>> with BackgroundCollector(Project.load("shop")) as c:        # doctest: +SKIP
...     httpx.post(f"{c.url}/v1/events", json={...})
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from clickloop.bus.base import Bus
from clickloop.errors import BackendUnavailableError, UsageError
from clickloop.ingest.collector_app import (
    BODY_TIMEOUT_S,
    EVENTS_PATH,
    PIXEL_PATH,
    Collector,
    error_response,
    find_source,
)
from clickloop.project import Project

__all__ = [
    "EVENTS_PATH",
    "PIXEL_PATH",
    "BackgroundCollector",
    "Collector",
    "bind",
    "error_response",
    "find_source",
    "serve",
]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one); IPv6 hosts welcome."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --port, or stop what already listens there",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server(collector: Collector, access_log: bool, on_ready: Callable[[], None] | None) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Like uvicorn's, minus re-raising the signal after the graceful shutdown:
            # SIGTERM/SIGINT end `serve` normally (exit 0 once everything is durable).
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        collector.app,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="on",
        access_log=access_log,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(BODY_TIMEOUT_S),
    )
    return Server(config)


def serve(
    project: Project,
    source: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    access_log: bool = False,
    on_ready: Callable[[str], None] | None = None,
    bus: Bus | None = None,
) -> Collector:
    """Run the collector until SIGINT/SIGTERM; in-flight requests finish first.

    ``on_ready(url)`` is called once it accepts requests. Returns the collector
    (its metrics hold the totals).
    """
    collector = Collector(project, source, bus=bus)
    sock = bind(host or collector.config.host, collector.config.port if port is None else port)
    url = _url(sock)

    def ready() -> None:
        # Everything loaded so far (modules, config, the app) lives as long as the process:
        # moved out of the collector's sight, full collections stop costing ~70 ms pauses.
        gc.collect()
        gc.freeze()
        if on_ready is not None:
            on_ready(url)

    server = _server(collector, access_log, ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise BackendUnavailableError(
            f"the collector for source {collector.name!r} failed to start (see the log above)"
        )
    return collector


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BackgroundCollector:
    """A collector serving from a thread of this process (tests, notebooks, the demo).

    >>> with BackgroundCollector(Project.load("shop"), port=0) as c:   # doctest: +SKIP
    ...     httpx.get(f"{c.url}/healthz")
    """

    def __init__(
        self,
        project: Project,
        source: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bus: Bus | None = None,
        publish_timeout: float = 30.0,
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.collector = Collector(
            project, source, bus=bus, publish_timeout=publish_timeout, body_timeout=body_timeout
        )
        self._sock = bind(host, port)
        self.url = _url(self._sock)
        self._ready = threading.Event()
        self._server = _server(self.collector, False, self._ready.set)
        self._thread = threading.Thread(target=self._main, name="collector", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 30.0) -> BackgroundCollector:
        self._thread.start()
        if not self._ready.wait(timeout) or not self._server.started:
            self.stop()
            raise BackendUnavailableError(
                f"the collector did not start within {timeout:g} s"
                + (f": {self._error}" if self._error else "")
            )
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop accepting, finish in-flight requests, publish what they carried, close."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
