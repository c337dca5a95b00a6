"""Exactly-once writers: :class:`IdempotentProducer` (anyio) and :class:`SyncIdempotentProducer`.

Sequencing, retries, auto-claim and error mapping are the sans-IO core's
(:func:`~resumable_streams._protocol.durable.client.produce_flow`); this module batches
appends and runs batches concurrently, in task groups a caller can see:

- ``async with IdempotentProducer(...) as producer:`` opens the producer's own task group, which
  runs the linger / batching loop and every in-flight batch;
- ``IdempotentProducer(..., task_group=tg)`` runs them in the caller's task group instead;
- with neither, nothing runs in the background: ``append_nowait()`` only buffers, and batches are
  sent by ``await producer.flush()`` / ``append()`` / ``close()`` in the caller's own task.

:class:`SyncIdempotentProducer` runs an :class:`IdempotentProducer` on an event loop in a
thread it owns (an anyio blocking portal), for threaded code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import httpx2

from resumable_streams._protocol.durable import client as core
from resumable_streams._protocol.durable import headers as h
from resumable_streams.durable._async_client import (
    AsyncDurableStream,
    AsyncFlowRunner,
    _make_client,
)
from resumable_streams.durable._async_http import AsyncConnectionPool
from resumable_streams.durable._sync_client import DurableStream
from resumable_streams.durable._types import CloseResult, IdempotentAppendResult, ProducerState
from resumable_streams.errors import DurableStreamClientError, ProducerClosedError

__all__ = ["IdempotentProducer", "SyncIdempotentProducer"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


class _Requeue(Exception):
    """Raised inside a batch's send: it waited for an earlier batch whose send was cancelled."""


@dataclass(eq=False)
class _Batch:
    """Messages collected for one POST, and how it ended."""

    messages: list[bytes] = field(default_factory=list)
    size: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when a send of it ends (done or cancelled) or the background loop stops."""
    result: core.BatchResult | None = None
    error: DurableStreamClientError | None = None
    epoch: int = -1
    seq: int = -1


class IdempotentProducer:
    """Exactly-once appends to one stream, batched and pipelined (Kafka-style).

    ``stream`` is an :class:`AsyncDurableStream` (its URL, headers, params, content type and
    HTTP client are used — upstream issue #212 forgot the headers) or a URL. ``producer_id``
    names this writer; ``epoch`` fences older instances (``auto_claim=True`` takes over from
    them on ``403``). ``state=`` restores a saved :class:`ProducerState` so a restarted process
    continues exactly where the previous one stopped.

    Appends are collected for ``linger_ms`` or until ``max_batch_bytes``; up to ``max_in_flight``
    batches are sent concurrently, each with its own ``Producer-Seq``. Network errors, 5xx and
    429 are retried with ``retry`` (a replay the server already has answers "duplicate"). Errors
    go to ``on_error(exc)`` and are re-raised by the next :meth:`flush`.

    Memory is bounded: at most ``max_buffered_bytes`` of appended messages are held until the
    server has them (default 64 MiB; ``None`` = no bound). Beyond it :meth:`append_nowait`
    raises ``anyio.WouldBlock`` and :meth:`append` waits for room; a single message larger
    than the bound is still taken when nothing else is held.

    Cancellation: cancelling ``flush()`` / ``append()`` / ``close_stream()`` (or the task group
    running the loop) loses nothing and opens no sequence gap: a batch whose send was cancelled
    is kept and resent with the same ``(epoch, seq)`` before any newer one (the server answers
    "duplicate" if the first attempt had landed, so its ``append()`` may then report
    ``duplicate=True``). A batch the server rejects (4xx, not stored) blocks the later batches
    of its epoch: they fail with ``code="PRODUCER_BLOCKED"``; :meth:`restart` goes on.

    Leaving ``async with`` by an exception (or a cancellation) still flushes, shielded, but for
    at most :attr:`shutdown_timeout` seconds; what is not stored by then is logged and dropped.
    """

    shutdown_timeout: float = 30.0
    """Seconds ``__aexit__`` spends flushing after an exception or a cancellation."""

    def __init__(
        self,
        stream: AsyncDurableStream | str,
        producer_id: str | None = None,
        *,
        client: httpx2.AsyncClient | None = None,
        epoch: int = 0,
        auto_claim: bool = False,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        linger_ms: float = 5,
        max_in_flight: int = 5,
        max_buffered_bytes: int | None = DEFAULT_MAX_BUFFERED_BYTES,
        content_type: str | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        retry: core.RetryPolicy | None = None,
        state: ProducerState | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        if state is None:
            if producer_id is None:
                raise ValueError("give producer_id (or a saved state=)")
            state = ProducerState(producer_id, epoch, 0)
        elif producer_id is not None and producer_id != state.producer_id:
            raise ValueError(f"producer_id {producer_id!r} differs from state's {state!r}")
        state.validate()
        if max_buffered_bytes is not None and max_buffered_bytes <= 0:
            raise ValueError(f"max_buffered_bytes must be > 0 or None, got {max_buffered_bytes!r}")
        if max_batch_bytes <= 0 or max_in_flight <= 0 or linger_ms < 0:
            raise ValueError(
                "max_batch_bytes and max_in_flight must be > 0 and linger_ms >= 0, got "
                f"{max_batch_bytes}, {max_in_flight}, {linger_ms}"
            )
        self._state = ProducerState(state.producer_id, state.epoch, state.next_seq)
        if isinstance(stream, AsyncDurableStream):
            self.url = stream.url
            self._headers: dict[str, Any] = {**stream.headers, **(headers or {})}
            self._params: dict[str, Any] = {**stream.params, **(params or {})}
            self.content_type = content_type or stream.content_type or h.DEFAULT_CONTENT_TYPE
            self._client: httpx2.AsyncClient | AsyncConnectionPool = client or stream._client
            self._owns_client = False
            self._retry = retry or stream.retry
        else:
            self.url = stream
            self._headers = dict(headers or {})
            self._params = dict(params or {})
            self.content_type = content_type or h.DEFAULT_CONTENT_TYPE
            self._owns_client = client is None
            self._client, _ = _make_client(client, 30.0, stream)
            self._retry = retry or core.RetryPolicy()
        self._json = core.is_json_type(self.content_type)
        self._auto_claim = auto_claim
        self._claimed = not auto_claim
        self._max_batch_bytes = max_batch_bytes
        self._linger = linger_ms / 1000
        self._max_in_flight = max_in_flight
        self._max_buffered = max_buffered_bytes
        self._buffered = 0  # bytes of messages appended and not yet stored (or failed)
        self._changed = anyio.Event()  # set when a send ends or the loop stops
        self._on_error = on_error
        self._pending = _Batch()
        self._queue: list[_Batch] = []
        # batches whose send was cancelled: resent first, with the same (epoch, seq), so a
        # cancelled flush() / append() neither loses them nor opens a sequence gap
        self._resend: list[_Batch] = []
        self._closing: core.Batch | None = None  # close_stream()'s request, kept for a retry
        self._in_flight: dict[tuple[int, int], _Batch] = {}
        self._finished: dict[tuple[int, int], _Batch] = {}
        self._slots = anyio.Semaphore(max_in_flight)
        self._wakeup = anyio.Event()
        self._flush_requested = False
        self._errors: list[DurableStreamClientError] = []
        self._closed = False
        self._client_closed = False
        self._loop_running = False
        self._loop_done = anyio.Event()
        self._own_tg: anyio.abc.TaskGroup | None = None
        self._tg = task_group
        if task_group is not None:
            self._loop_running = True
            task_group.start_soon(self._run_loop)

    # -- state -------------------------------------------------------------------------------

    @property
    def producer_id(self) -> str:
        """The id of this producer."""
        return self._state.producer_id

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._state.epoch

    @property
    def next_seq(self) -> int:
        """The sequence number the next batch will take."""
        return self._state.next_seq

    @property
    def state(self) -> ProducerState:
        """A copy of ``(producer_id, epoch, next_seq)``: save it after :meth:`flush`."""
        return ProducerState(self._state.producer_id, self._state.epoch, self._state.next_seq)

    @property
    def pending_count(self) -> int:
        """Messages waiting for the next batch."""
        return len(self._pending.messages)

    @property
    def in_flight_count(self) -> int:
        """Batches being sent."""
        return len(self._in_flight)

    # -- appending -----------------------------------------------------------------------------

    def _encode(self, data: Any) -> bytes:
        if self._closed:
            raise ProducerClosedError(f"producer {self.producer_id!r} is closed", url=self.url)
        message = core.encode_message(data, self.content_type)
        if not message:
            raise ValueError("cannot append an empty message")
        return message

    def _has_room(self, size: int) -> bool:
        limit = self._max_buffered
        return limit is None or not self._buffered or self._buffered + size <= limit

    def _add(self, message: bytes) -> _Batch:
        size = len(message)
        self._buffered += size
        batch = self._pending
        if batch.size and batch.size + size > self._max_batch_bytes:
            self._rotate()
            batch = self._pending
        batch.messages.append(message)
        batch.size += size
        if batch.size >= self._max_batch_bytes:
            self._rotate()
        elif batch.size == size:
            # the first message of a batch starts the linger timer; later ones need no wakeup
            self._wakeup.set()
        return batch

    def _rotate(self) -> None:
        """Queue the pending batch for sending now and start a new one."""
        self._queue.append(self._pending)
        self._pending = _Batch()
        self._request_flush()

    def append_nowait(self, data: Any) -> None:
        """Add ``data`` to the current batch and return at once (fire and forget).

        bytes / str, or on a JSON stream any JSON value (a ``str`` there is pre-serialized JSON,
        as in the official client). Delivery errors go to ``on_error`` and the next
        :meth:`flush`. Without a running task group (see the module docs) the batch is only
        sent by the next ``flush()`` / ``append()`` / ``close()``. Raises ``anyio.WouldBlock``
        when ``max_buffered_bytes`` are already held (``await append()`` waits instead).
        """
        message = self._encode(data)
        if not self._has_room(len(message)):
            raise anyio.WouldBlock(
                f"producer {self.producer_id!r} holds {self._buffered} unsent bytes "
                f"(max_buffered_bytes={self._max_buffered}); await append() or flush()"
            )
        self._add(message)

    async def append(self, data: Any) -> IdempotentAppendResult:
        """Append ``data`` and wait until its batch is durable (or raise its error).

        Waits first for room if ``max_buffered_bytes`` are already held.
        """
        message = self._encode(data)
        if not self._has_room(len(message)):
            self._request_flush()
            await self._wait_for(lambda: self._has_room(len(message)))
            if self._closed:
                raise ProducerClosedError(f"producer {self.producer_id!r} is closed", url=self.url)
        batch = self._add(message)
        self._request_flush()
        await self._wait_for(batch.done.is_set, batch)
        if batch.error is not None:
            # raised here, so flush() need not raise it again
            if batch.error in self._errors:
                self._errors.remove(batch.error)
            raise batch.error
        assert batch.result is not None
        return IdempotentAppendResult(batch.result.offset, batch.result.duplicate)

    def _request_flush(self) -> None:
        self._flush_requested = True
        self._wakeup.set()

    # -- flushing ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send everything appended so far and wait until it is durable.

        Raises the first delivery error since the previous ``flush()`` (later ones were passed
        to ``on_error``).
        """
        self._request_flush()
        await self._wait_for(lambda: not self._in_flight and not self._has_work())
        self._raise_errors()

    async def _wait_for(self, done: Callable[[], bool], batch: _Batch | None = None) -> None:
        """Wait until ``done()``; without a running background loop, send from this task.

        With ``batch``, only that batch's sends wake this task (not every batch's).
        Cancel-safe: a batch whose send is cancelled is resent later with the same seq.
        """
        while not done():
            if not self._loop_running and self._has_work():
                await self._drain_here()
            elif batch is not None:
                if batch.wake.is_set():
                    batch.wake = anyio.Event()
                await batch.wake.wait()
            else:
                # the loop sends (or another caller's drain does); wait until a send ends
                if self._changed.is_set():
                    self._changed = anyio.Event()
                await self._changed.wait()

    def _raise_errors(self) -> None:
        if self._errors:
            first = self._errors[0]
            self._errors.clear()
            raise first

    async def _drain_here(self) -> None:
        """Send pending batches from the caller's task (no background task group)."""
        async with anyio.create_task_group() as tg:
            await self._dispatch_all(tg)

    def _has_work(self) -> bool:
        return bool(self._resend or self._queue or self._pending.messages)

    def _take_batch(self) -> _Batch | None:
        """The next batch to send: a cancelled one first, then queued, then pending."""
        if self._resend:
            return self._resend.pop(0)
        if self._queue:
            return self._queue.pop(0)
        if self._pending.messages:
            batch, self._pending = self._pending, _Batch()
            return batch
        return None

    async def _dispatch_all(self, tg: anyio.abc.TaskGroup) -> None:
        """Start a send for every batch waiting; cancel-safe (an untaken batch stays queued)."""
        self._flush_requested = False
        while self._has_work():
            await self._slots.acquire()
            try:
                if not self._claimed:
                    # auto_claim: the first batch settles the epoch before pipelining starts
                    while self._in_flight and not self._claimed:
                        if self._changed.is_set():
                            self._changed = anyio.Event()
                        await self._changed.wait()
            except BaseException:
                self._slots.release()
                raise
            batch = self._take_batch()
            if batch is None:
                self._slots.release()
                break
            if batch.seq < 0:
                batch.epoch = self._state.epoch
                batch.seq = self._state.next_seq
                self._state.next_seq += 1
            self._in_flight[(batch.epoch, batch.seq)] = batch
            tg.start_soon(self._send, batch)

    async def _send(self, batch: _Batch) -> None:
        key = (batch.epoch, batch.seq)
        body = core.batch_body(batch.messages, self._json)
        flow_batch = core.Batch(body, batch.epoch, batch.seq)
        flow = core.produce_flow(
            flow_batch,
            url=self.url,
            state=self._state,
            headers=self._headers,
            params=self._params,
            content_type=self.content_type,
            auto_claim=self._auto_claim,
            policy=self._retry,
        )
        cancelled = True
        try:
            batch.result = await AsyncFlowRunner(
                self._client, flow, wait_for_seqs=self._wait_for_seqs
            ).run()
            cancelled = False
            self._claimed = True
        except _Requeue:
            pass  # resent after the batch it waited for (``cancelled`` stays True)
        except DurableStreamClientError as exc:
            cancelled = False
            batch.error = exc
            self._errors.append(exc)
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    logger.exception("on_error callback of producer %r failed", self.producer_id)
        finally:
            self._in_flight.pop(key, None)
            if (flow_batch.epoch, flow_batch.seq) != key:
                self._in_flight.pop((flow_batch.epoch, flow_batch.seq), None)
            batch.epoch, batch.seq = flow_batch.epoch, flow_batch.seq
            self._slots.release()
            self._changed.set()
            batch.wake.set()
            if cancelled:
                # the server may or may not have it: resend the same (epoch, seq) later (a
                # replay of a stored batch answers "duplicate"); its appenders keep waiting
                self._resend.append(batch)
                self._resend.sort(key=lambda b: (b.epoch, b.seq))
            else:
                self._finished[(batch.epoch, batch.seq)] = batch
                self._prune_finished()
                batch.done.set()
                self._buffered -= batch.size

    def _prune_finished(self) -> None:
        limit = 4 * self._max_in_flight + 16
        while len(self._finished) > limit:
            del self._finished[next(iter(self._finished))]

    async def _wait_for_seqs(self, epoch: int, seqs: range) -> None:
        for seq in seqs:
            batch = self._in_flight.get((epoch, seq)) or self._finished.get((epoch, seq))
            if batch is None:
                continue
            while not batch.done.is_set():
                if any(b is batch for b in self._resend):
                    # its send was cancelled: it goes again later, and this one after it
                    raise _Requeue
                if self._changed.is_set():
                    self._changed = anyio.Event()
                await self._changed.wait()
            if batch.error is not None:
                raise DurableStreamClientError(
                    f"producer {self.producer_id!r}: the batch (epoch {epoch}, seq {seq}) ahead "
                    f"of this one failed ({batch.error}), so the server cannot take later "
                    f"batches of epoch {epoch}; call restart() to go on in a new epoch",
                    code="PRODUCER_BLOCKED",
                    url=self.url,
                ) from batch.error

    async def _run_loop(self) -> None:
        """The linger / batching loop; in-flight batches run in a task group nested in it."""
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    if not self._flush_requested and self._linger > 0:
                        with anyio.move_on_after(self._linger):
                            while not self._flush_requested:
                                await self._wakeup.wait()
                                self._wakeup = anyio.Event()
                    await self._dispatch_all(tg)
                    if self._closed and not self._has_work():
                        break
        finally:
            self._loop_running = False
            self._loop_done.set()
            # wake waiters: they send what is left themselves
            self._changed.set()
            for batch in [*self._resend, *self._queue, self._pending]:
                batch.wake.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush, stop the background loop and close the HTTP client it created.

        Further appends raise :class:`ProducerClosedError`. Raises the first undelivered
        batch's error, after shutting down.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
        finally:
            self._wakeup.set()
            if self._tg is not None or self._own_tg is not None:
                await self._loop_done.wait()
            await self._close_client()

    async def _close_client(self) -> None:
        if self._owns_client and not self._client_closed:
            self._client_closed = True
            with anyio.CancelScope(shield=True):
                await self._client.aclose()

    async def restart(self) -> None:
        """Flush, then start a new session: epoch + 1, sequence 0."""
        await self.flush()
        self._state.epoch += 1
        self._state.next_seq = 0

    async def close_stream(self, data: Any = None) -> CloseResult:
        """Flush, then close the stream with producer headers (optionally appending ``data``).

        Safe to retry: the server accepts a replay of the same closing ``(id, epoch, seq)``.
        The producer itself is closed afterwards.
        """
        await self.flush()
        body = b""
        if data is not None:
            body = core.encode_append_body(data, self.content_type)
        flow_batch = self._closing
        if flow_batch is None or flow_batch.body != body:
            flow_batch = core.Batch(body, self._state.epoch, self._state.next_seq, close=True)
            self._state.next_seq += 1
        # kept until it succeeds: a retry after a cancellation or an error replays the same
        # (epoch, seq) instead of leaving a sequence gap
        self._closing = flow_batch
        flow = core.produce_flow(
            flow_batch,
            url=self.url,
            state=self._state,
            headers=self._headers,
            params=self._params,
            content_type=self.content_type,
            auto_claim=self._auto_claim,
            policy=self._retry,
        )
        result = await AsyncFlowRunner(self._client, flow).run()
        self._closing = None
        await self.close()
        return CloseResult(final_offset=result.offset or "")

    async def __aenter__(self) -> IdempotentProducer:
        if self._tg is None and not self._loop_running:
            self._own_tg = anyio.create_task_group()
            await self._own_tg.__aenter__()
            self._loop_running = True
            self._own_tg.start_soon(self._run_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._own_tg = self._own_tg, None
        try:
            if exc is None:
                await self.close()
            else:
                try:
                    with anyio.move_on_after(self.shutdown_timeout, shield=True) as scope:
                        await self.close()
                    if scope.cancelled_caught:
                        logger.error(
                            "producer %r: %d bytes not stored within shutdown_timeout=%ss",
                            self.producer_id,
                            self._buffered,
                            self.shutdown_timeout,
                        )
                except DurableStreamClientError:
                    logger.exception("producer %r: error while closing", self.producer_id)
        finally:
            if tg is not None:
                if exc is not None:
                    tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
            await self._close_client()


class SyncIdempotentProducer(AbstractContextManager["SyncIdempotentProducer"]):
    """:class:`IdempotentProducer` for threaded code.

    It owns an event loop in a background thread (an anyio blocking portal) which runs the
    async producer and its batching task group; every method is thread-safe and blocks only
    as documented. Use it as a context manager, or call :meth:`close`. ``stream`` may be a
    :class:`DurableStream` handle (its URL, headers, params and content type are used) or a URL.
    """

    def __init__(
        self,
        stream: DurableStream | str,
        producer_id: str | None = None,
        *,
        backend: str = "trio",
        **kwargs: Any,
    ) -> None:
        if isinstance(stream, DurableStream):
            kwargs.setdefault("headers", stream.headers)
            kwargs.setdefault("params", stream.params)
            kwargs.setdefault("content_type", stream.content_type)
            kwargs.setdefault("retry", stream.retry)
            url = stream.url
        else:
            url = stream
        self._portal_cm = anyio.from_thread.start_blocking_portal(backend)
        self._portal = self._portal_cm.__enter__()
        try:
            self._producer: IdempotentProducer = self._portal.call(
                self._start, url, producer_id, kwargs
            )
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._portal.start_task_soon(self._producer._run_loop)
        self._closed = False

    @staticmethod
    async def _start(
        url: str, producer_id: str | None, kwargs: dict[str, Any]
    ) -> IdempotentProducer:
        producer = IdempotentProducer(url, producer_id, **kwargs)
        # the loop runs in the portal's task group, started right below
        producer._loop_running = True
        producer._tg = _PORTAL_MARKER
        return producer

    @property
    def state(self) -> ProducerState:
        """A copy of ``(producer_id, epoch, next_seq)``: save it after :meth:`flush`."""
        return self._producer.state

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._producer.epoch

    @property
    def next_seq(self) -> int:
        """The sequence number the next batch will take."""
        return self._producer.next_seq

    def append_nowait(self, data: Any) -> None:
        """Queue ``data`` and return at once (fire and forget).

        Raises ``anyio.WouldBlock`` when ``max_buffered_bytes`` are held unsent.
        """
        self._check_open()
        self._portal.call(self._producer.append_nowait, data)

    def append(self, data: Any) -> IdempotentAppendResult:
        """Append ``data`` and block until its batch is durable."""
        self._check_open()
        result: IdempotentAppendResult = self._portal.call(self._producer.append, data)
        return result

    def flush(self) -> None:
        """Block until everything appended is durable; raise the first delivery error.

        After :meth:`close` there is nothing left to flush: it returns at once.
        """
        if not self._closed:
            self._portal.call(self._producer.flush)

    def restart(self) -> None:
        """Flush, then epoch + 1, sequence 0."""
        self._check_open()
        self._portal.call(self._producer.restart)

    def close_stream(self, data: Any = None) -> CloseResult:
        """Flush, close the stream with producer headers, then close this producer."""
        self._check_open()
        try:
            result: CloseResult = self._portal.call(self._producer.close_stream, data)
            return result
        finally:
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ProducerClosedError(
                f"producer {self._producer.producer_id!r} is closed", url=self._producer.url
            )

    def close(self) -> None:
        """Flush, stop the event-loop thread and release everything."""
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.call(self._producer.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _PortalMarker:
    """Stands in for a task group: the portal's own task group runs the loop."""


_PORTAL_MARKER: Any = _PortalMarker()
