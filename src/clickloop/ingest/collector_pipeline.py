"""Group commit: many requests' records, one validation, one durable publish.

Each request hands its records to :meth:`Pipeline.submit` and waits. One
background task takes everything that arrived meanwhile, validates it in one
call on a validation thread, and hands the messages to a publishing thread
whose :meth:`~clickloop.bus.base.Producer.publish` returns only once they are
durable. Only then are the waiting requests answered. While one batch is being
published the next one is validated, so under load batches grow by themselves
and each request still waits for the durability of its own events.

Admission is bounded: :meth:`Pipeline.admit` refuses a request with
:class:`~clickloop.errors.OverloadedError` (HTTP 503 with ``Retry-After``) once
``max_inflight`` requests are between admission and their answer — never an
unbounded queue. A slot is held until the request's events are published,
even if the client gave up waiting, so memory stays bounded by
``max_inflight × max_body``.

>>> pipeline = Pipeline(EventValidator(Mapping()), producer, max_inflight=64)  # doctest: +SKIP
>>> await pipeline.start()                                                          # doctest: +SKIP
>>> with pipeline.admit() as slot:                                                  # doctest: +SKIP
...     result = await pipeline.submit(slot, records, arrival_us)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import numpy as np

from clickloop.bus.base import Producer
from clickloop.errors import BackendUnavailableError, ClickloopError, OverloadedError
from clickloop.ingest.collector_records import EventValidator, to_messages

log = logging.getLogger(__name__)

TOPIC: Final = "events"
MAX_BATCH_EVENTS: Final = 20_000  # records validated together (bounds one batch's latency)
MAX_PUBLISHING: Final = 2  # batches handed to the publishing thread and not yet durable
# Validating a batch has a fixed cost of a few milliseconds of CPU whatever its size. Under
# steady traffic (batches starting less than BUSY_S apart) the batcher waits LINGER_S for
# more requests before it validates, unless LINGER_EVENTS are already waiting: fewer,
# larger batches for a couple of milliseconds of latency; an idle collector never waits.
LINGER_S: Final = 0.004
LINGER_EVENTS: Final = 1000
BUSY_S: Final = 0.05


@dataclass
class Result:
    """One request's outcome: how many events were published, and every reject.

    ``rejects`` are ``(position, reason, detail)`` with positions into the
    records the request submitted.
    """

    accepted: int
    rejects: list[tuple[int, str, str]]


@dataclass
class _Job:
    records: list[dict[str, Any]]
    arrival_us: int
    atomic: bool
    publish: bool
    future: asyncio.Future[Result]


@dataclass
class _Batch:
    jobs: list[_Job]
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    results: list[Result | BaseException] = field(default_factory=list)


class Slot:
    """A request's admission; released when the request ends or its events are durable."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._released = False
        self._pending: asyncio.Future[Result] | None = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pending is not None and not self._pending.done():
            # the client stopped waiting; the events are still on their way to the bus
            self._pending.add_done_callback(lambda _: self._release())
        else:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pipeline._left()


class Pipeline:
    """Validate and publish records of concurrent requests in shared batches.

    ``on_validate(records, seconds)`` after each validation, ``on_batch(events,
    seconds)`` and ``on_error()`` after each publish (for metrics).
    """

    def __init__(
        self,
        validator: EventValidator,
        producer: Producer,
        *,
        max_inflight: int,
        retry_after: float = 1.0,
        timeout: float = 30.0,
        on_batch: Callable[[int, float], None] | None = None,
        on_error: Callable[[], None] | None = None,
        on_inflight: Callable[[int], None] | None = None,
        on_validate: Callable[[int, float], None] | None = None,
    ) -> None:
        self.validator = validator
        self.producer = producer
        self.max_inflight = max_inflight
        self.retry_after = retry_after
        self.timeout = timeout
        self.inflight = 0
        self.last_error: str | None = None  # the last publish failure, until a publish succeeds
        self._on_batch = on_batch
        self._on_error = on_error
        self._on_inflight = on_inflight
        self._on_validate = on_validate
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._publishing = asyncio.Semaphore(MAX_PUBLISHING)
        self._outstanding: set[asyncio.Future[Any]] = set()
        self._validating = ThreadPoolExecutor(1, thread_name_prefix="collector-validate")
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="collector-publish")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._queued_events = 0
        self._last_batch = -1.0

    # admission -------------------------------------------------------------------------

    def admit(self) -> Slot:
        """A slot for one request, or :class:`OverloadedError` when all are taken."""
        if self._closing:
            raise OverloadedError(
                "the collector is shutting down", retry_after=self.retry_after, inflight=0
            )
        if self.inflight >= self.max_inflight:
            raise OverloadedError(
                f"the collector has {self.inflight} requests in flight (max_inflight "
                f"{self.max_inflight}); retry after {self.retry_after:g} s",
                retry_after=self.retry_after,
                hint="slow down, or raise the source's max_inflight if the bus keeps up",
            )
        self.inflight += 1
        if self._on_inflight:
            self._on_inflight(self.inflight)
        return Slot(self)

    def _left(self) -> None:
        self.inflight -= 1
        if self._on_inflight:
            self._on_inflight(self.inflight)

    @property
    def overloaded(self) -> bool:
        return self.inflight >= self.max_inflight

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="collector-batches")

    async def close(self, timeout: float | None = None) -> None:
        """Finish every admitted request (their events are published), then stop the threads.

        A bus that confirms nothing within ``timeout`` (default: the request
        timeout plus 5 s, by when every waiting request has been answered 503)
        is abandoned with an error in the log rather than holding the process.
        """
        self._closing = True
        self._wakeup.set()
        deadline = time.monotonic() + (self.timeout + 5 if timeout is None else timeout)
        stuck = False
        while True:
            pending = {
                f for f in (self._task, *self._outstanding) if f is not None and not f.done()
            }
            left = deadline - time.monotonic()
            if not pending:
                break
            if left <= 0:
                stuck = True
                break
            await asyncio.wait(pending, timeout=left)
        if stuck:
            log.error(
                "the bus has not confirmed %d batch(es) within the shutdown timeout; stopping "
                "anyway (their requests were answered 503 and clients retry)",
                len(self._outstanding),
            )
            if self._task is not None:
                self._task.cancel()
            for job in self._queue:
                if not job.future.done():
                    job.future.set_exception(
                        BackendUnavailableError("the collector stopped before the bus answered")
                    )
        self._validating.shutdown(wait=not stuck, cancel_futures=True)
        self._publisher.shutdown(wait=not stuck, cancel_futures=True)

    # work --------------------------------------------------------------------------------

    async def submit(
        self,
        slot: Slot,
        records: list[dict[str, Any]],
        arrival_us: int,
        *,
        atomic: bool = False,
        publish: bool = True,
    ) -> Result:
        """Validate ``records`` and publish the valid ones; return once they are durable.

        With ``atomic`` nothing is published unless every record is valid; with
        ``publish=False`` nothing is (the records are only validated).
        Raises :class:`BackendUnavailableError` when the bus refused the batch or
        did not confirm it within ``timeout`` seconds (then some events may still
        become durable: a retry is deduplicated downstream by ``event_id``).
        """
        if not records:
            return Result(0, [])
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        slot._pending = future
        self._queue.append(_Job(records, arrival_us, atomic, publish, future))
        self._queued_events += len(records)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise BackendUnavailableError(
                f"the bus did not confirm the events within {self.timeout:g} s",
                hint="retry the request; the bus may be slow or unreachable",
                retry_after=self.retry_after,
            ) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            busy = loop.time() - self._last_batch < BUSY_S
            if busy and self._queued_events < LINGER_EVENTS and not self._closing:
                await asyncio.sleep(LINGER_S)
            self._last_batch = loop.time()
            batch = _Batch(self._take())
            try:
                await loop.run_in_executor(self._validating, self._prepare, batch)
            except BaseException as exc:  # a bug: answer everyone rather than hang them
                log.exception("validating a batch of %d requests failed", len(batch.jobs))
                batch.results = [exc] * len(batch.jobs)
                self._finish(batch)
                continue
            await self._publishing.acquire()
            done = loop.run_in_executor(self._publisher, self._publish, batch)
            self._outstanding.add(done)
            done.add_done_callback(lambda f, b=batch: self._published(f, b))  # type: ignore[misc]

    def _take(self) -> list[_Job]:
        jobs = [self._queue.popleft()]
        size = len(jobs[0].records)
        while self._queue and size + len(self._queue[0].records) <= MAX_BATCH_EVENTS:
            job = self._queue.popleft()
            jobs.append(job)
            size += len(job.records)
        self._queued_events -= size
        return jobs

    def _published(self, done: asyncio.Future[None], batch: _Batch) -> None:
        self._outstanding.discard(done)
        self._publishing.release()
        exc = done.exception()
        if exc is not None:
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if self._on_error:
                self._on_error()
            if not isinstance(exc, ClickloopError):
                exc = BackendUnavailableError(
                    f"publishing to the {TOPIC!r} topic failed: {self.last_error}",
                    hint="the events were not acknowledged; retry the request",
                )
            if isinstance(exc, BackendUnavailableError | OverloadedError):
                exc.details.setdefault("retry_after", self.retry_after)
            log.warning("publishing %d events failed: %s", len(batch.messages), self.last_error)
            # requests with nothing to publish keep their own answer (e.g. all rejected)
            batch.results = [
                exc if not isinstance(r, Result) or r.accepted else r for r in batch.results
            ]
        elif batch.messages:  # only a publish that happened proves the bus works again
            self.last_error = None
        self._finish(batch)

    @staticmethod
    def _finish(batch: _Batch) -> None:
        for job, result in zip(batch.jobs, batch.results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    # on the threads ----------------------------------------------------------------------

    def _prepare(self, batch: _Batch) -> None:
        """Validate the batch; on an unexpected failure, validate each request alone."""
        t0 = time.perf_counter()
        try:
            self._validate(batch, batch.jobs)
            if self._on_validate:
                records = sum(len(job.records) for job in batch.jobs)
                self._on_validate(records, time.perf_counter() - t0)
        except Exception:
            if len(batch.jobs) == 1:
                raise
            log.exception("validating %d requests together failed; one by one", len(batch.jobs))
            results: list[Result | BaseException] = []
            messages: list[tuple[bytes, bytes]] = []
            for job in batch.jobs:
                one = _Batch([job])
                try:
                    self._validate(one, [job])
                except Exception as exc:
                    results.append(exc)
                else:
                    results.extend(one.results)
                    messages.extend(one.messages)
            batch.results, batch.messages = results, messages

    def _validate(self, batch: _Batch, jobs: list[_Job]) -> None:
        records: list[dict[str, Any]] = []
        arrivals: list[int] = []
        starts = [0]
        for job in jobs:
            records.extend(job.records)
            arrivals.extend([job.arrival_us] * len(job.records))
            starts.append(len(records))
        outcome = self.validator.validate(records, arrivals)
        owner = np.searchsorted(np.asarray(starts[1:]), outcome.accepted, side="right")
        rejects: list[list[tuple[int, str, str]]] = [[] for _ in jobs]
        for pos, reason, detail in outcome.rejects:
            j = int(np.searchsorted(starts[1:], pos, side="right"))
            rejects[j].append((pos - starts[j], reason, detail))
        keep = np.ones(len(outcome.accepted), bool)
        for j, job in enumerate(jobs):
            if not job.publish or (job.atomic and rejects[j]):
                keep &= owner != j
        events = outcome.events if keep.all() else outcome.events.filter(keep)
        counts = np.bincount(owner[keep], minlength=len(jobs))
        batch.messages = to_messages(events)
        batch.results = [Result(int(counts[j]), rejects[j]) for j in range(len(jobs))]

    def _publish(self, batch: _Batch) -> None:
        if not batch.messages:
            return
        t0 = time.perf_counter()
        self.producer.publish(TOPIC, batch.messages)
        if self._on_batch:
            self._on_batch(len(batch.messages), time.perf_counter() - t0)
