"""The iterators a context hands out, and the resume handshake.

Both iterator kinds are :class:`ResumableStream`: an async iterator of ``str`` that is also
an async context manager, with :attr:`~ResumableStream.position` - how far into the stream
(in UTF-16 code units, the unit of ``skip_characters``) the consumer has read. Pass it back as
``skip_characters`` to continue after a lost connection.

Cancel safety: neither iterator holds a task or a cancel scope across ``__anext__`` calls.
A consumer that stops early or is cancelled loses nothing - the producer runs on - and a
resumed iterator whose ``__anext__`` is cancelled frees its subscription at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, overload

import anyio

from .._core.groups import unwrap_single
from .._protocol.resumable import DONE_MESSAGE, DONE_VALUE, encode_request, utf16_len
from ..errors import (
    AckTimeoutError,
    ReadCancelledError,
    SlowConsumerError,
    StreamInterruptedError,
)

if TYPE_CHECKING:
    from .context import ResumableStreamContext
    from .producer import Producer

__all__ = ["ResumableStream", "Waiter", "resume"]

logger = logging.getLogger("resumable_streams")


class Waiter(Protocol):
    """Where an iterator parks while it has nothing to return (:attr:`ResumableStream.waiter`).

    The default waits on an event. A transport that must keep watching its connection while
    a subscriber idles supplies its own - parked in the connection's ``receive()``, woken by
    :meth:`wake` - so that one task per connection does both.
    """

    def wake(self) -> None:
        """Data (or a state change) arrived: end the current :meth:`wait`.

        A plain call that never blocks; it may come when nobody waits.
        """
        ...

    async def wait(self, seconds: float) -> bool:
        """``True`` once :meth:`wake` was called, ``False`` after ``seconds`` without it.

        It may raise: the iterator then releases its subscription and re-raises.
        """
        ...


class _EventWaiter:
    """The default :class:`Waiter`: an event created per wait (nothing held while busy)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()

    async def wait(self, seconds: float) -> bool:
        event = self._event = anyio.Event()
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            self._event = None
        return event.is_set()


class ResumableStream(AsyncIterator[str]):
    """An async iterator over a stream's text chunks; also an async context manager.

    ``async with`` (or :meth:`aclose`) releases what the iterator holds as soon as the
    consumer is done with it.
    """

    # Slots: there is one iterator per idle subscriber of a transport.
    __slots__ = ("__weakref__", "_closed", "_waiter", "position", "stream_id")

    def __init__(self, stream_id: str, position: int) -> None:
        self.stream_id = stream_id
        self.position = position
        """UTF-16 code units of the stream before the next chunk (skip included)."""
        self._closed = False
        self._waiter: Waiter | None = None

    @property
    def closed(self) -> bool:
        """Whether the iterator is finished or was closed."""
        return self._closed

    @property
    def waiter(self) -> Waiter:
        """How :meth:`__anext__` waits for data: a :class:`Waiter`.

        Settable, e.g. by a transport that watches its connection in the same task.
        """
        if self._waiter is None:
            self._waiter = _EventWaiter()
            self._waiter_changed()
        return self._waiter

    @waiter.setter
    def waiter(self, waiter: Waiter) -> None:
        self._waiter = waiter
        self._waiter_changed()

    def _waiter_changed(self) -> None:
        """Hook: register the waiter's ``wake`` where data arrives."""

    def __aiter__(self) -> ResumableStream:
        return self

    async def __anext__(self) -> str:
        raise NotImplementedError

    def next_ready(self) -> str | None:
        """The next chunk if one is already here (no waiting), else ``None``.

        Only plain chunks: the end, errors and re-synchronizations are left to
        :meth:`__anext__`. A transport uses it to send what queued up in one write.
        """
        return None

    async def aclose(self) -> None:
        """Stop iterating and release resources (idempotent; never cancels the producer)."""
        self._closed = True

    async def __aenter__(self) -> ResumableStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def read_all(self) -> str:
        """Read the rest of the stream and return it as one string."""
        async with self:
            return "".join([chunk async for chunk in self])

    def _advance(self, chunk: str) -> str:
        self.position += utf16_len(chunk)
        return chunk


class LocalStream(ResumableStream):
    """The creator's view of its own producer: reads the replay buffer, holds no queue."""

    __slots__ = ("_index", "_producer", "_raise_error")

    def __init__(self, producer: Producer) -> None:
        super().__init__(producer.stream_id, 0)
        self._producer = producer
        self._index = 0
        self._raise_error = True

    def next_ready(self) -> str | None:
        buffer = self._producer.buffer
        if self._closed or self._index >= len(buffer):
            return None
        chunk = buffer.chunk(self._index)
        if chunk is None:
            return None
        self._index += 1
        return self._advance(chunk)

    async def __anext__(self) -> str:
        producer = self._producer
        while not self._closed:
            buffer = producer.buffer
            if self._index < len(buffer):
                chunk = buffer.chunk(self._index)
                if chunk is None:
                    self._closed = True
                    raise SlowConsumerError(
                        self.stream_id, self.position, producer.ctx.max_replay_size or 0
                    )
                self._index += 1
                return self._advance(chunk)
            if producer.done:
                self._closed = True
                if producer.error is not None and self._raise_error:
                    self._raise_error = False
                    raise producer.error
                break
            waiter = self.waiter
            wakers = producer.progress_wakers
            wakers.add(waiter.wake)
            try:
                await waiter.wait(math.inf)
            finally:
                wakers.discard(waiter.wake)
        raise StopAsyncIteration


class _Reconnected:
    """Marks where in an inbox the pub/sub connection was restored (messages may be lost)."""


RECONNECTED = _Reconnected()


class _Inbox:
    """What one resumer's subscription callback fills: bounded, never blocks the reader.

    Kept small, as there is one per idle subscriber: a list read from ``head`` instead of a
    deque, a weak reference to its iterator instead of closures, a plain wake-up callback.
    """

    __slots__ = ("chars", "head", "items", "limit", "overflowed", "owner", "waker")

    def __init__(self, limit: int) -> None:
        self.items: list[str | _Reconnected] = []
        self.head = 0
        self.chars = 0
        self.limit = limit
        self.overflowed = False
        self.owner: weakref.ref[ResumedStream] | None = None
        self.waker: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return self.head < len(self.items)

    def first(self) -> str | _Reconnected:
        return self.items[self.head]

    def put(self, message: str) -> None:
        if self.overflowed:
            return
        self.items.append(message)
        self.chars += len(message)
        if self.chars > self.limit:
            self.overflowed = True
            self.items.clear()
            self.head = 0
            owner = self.owner() if self.owner is not None else None
            if owner is not None:
                owner._release_soon()
        if self.waker is not None:
            self.waker()

    def mark_reconnected(self) -> None:
        self.items.append(RECONNECTED)
        if self.waker is not None:
            self.waker()

    def pop(self) -> str | _Reconnected:
        items = self.items
        message = items[self.head]
        self.head += 1
        if self.head >= len(items):
            items.clear()
            self.head = 0
        elif self.head >= 64 and self.head * 2 >= len(items):
            del items[: self.head]
            self.head = 0
        if isinstance(message, str):
            self.chars -= len(message)
        return message

    async def wait_ack(self, seconds: float) -> None:
        """Wait until something arrived (at most ``seconds``): the resume ack."""
        if self or self.overflowed:
            return
        event = anyio.Event()
        self.waker = event.set
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            self.waker = None


class ResumedStream(ResumableStream):
    """A resumer's iterator: chunks arrive on its own chunk channel.

    It re-synchronizes by itself when messages may have been lost: after the pub/sub
    connection was restored (a Redis restart), and when the sentinel says the stream is
    finished or gone but no DONE came, it asks the producer again for a replay from
    :attr:`position` on a fresh channel. So a consumer that stays connected gets every
    character exactly once, or a :class:`~resumable_streams.errors.StreamInterruptedError`.
    """

    __slots__ = ("_cancelled", "_channel", "_ctx", "_inbox", "_misses", "_subscribed")

    def __init__(
        self,
        ctx: ResumableStreamContext,
        stream_id: str,
        channel: str,
        inbox: _Inbox,
        position: int,
    ) -> None:
        super().__init__(stream_id, position)
        self._ctx = ctx
        self._subscribed = False
        self._cancelled = False
        self._misses = 0
        self._attach(channel, inbox)

    def _attach(self, channel: str, inbox: _Inbox) -> None:
        self._channel = channel
        self._inbox = inbox
        inbox.owner = weakref.ref(self)
        inbox.waker = self._waiter.wake if self._waiter is not None else None
        self._subscribed = True
        self._ctx.mux.watch_reconnect(channel, inbox.mark_reconnected)

    def _waiter_changed(self) -> None:
        if self._waiter is not None:
            self._inbox.waker = self._waiter.wake

    def next_ready(self) -> str | None:
        inbox = self._inbox
        if not inbox:
            return None
        message = inbox.first()
        if not isinstance(message, str) or not message or message == DONE_MESSAGE:
            return None
        inbox.pop()
        self._misses = 0
        return self._advance(message)

    def __del__(self) -> None:
        if self._subscribed:
            # Free the subscription anyway (the context may be gone: then nothing to free).
            release = partial(_unsubscribe, self._ctx, self._channel, self._inbox)
            with contextlib.suppress(Exception):
                self._ctx.spawn_cleanup(release)
            warnings.warn(
                f"resumed stream {self.stream_id!r} was not closed: use `async with` or aclose()",
                ResourceWarning,
                stacklevel=1,
            )

    def _release_soon(self) -> None:
        self._ctx.spawn_cleanup(self._release)

    async def _release(self) -> None:
        if not self._subscribed:
            return
        self._subscribed = False
        self._inbox.waker = None
        self._ctx.mux.unwatch_reconnect(self._channel, self._inbox.mark_reconnected)
        await _unsubscribe(self._ctx, self._channel, self._inbox)

    async def aclose(self) -> None:
        """Unsubscribe and stop (the producer keeps running)."""
        self._closed = True
        await self._release()

    async def __anext__(self) -> str:
        while not self._closed:
            inbox = self._inbox
            if inbox:
                message = inbox.pop()
                if message is RECONNECTED:
                    await self._resync_after_reconnect()
                    continue
                assert isinstance(message, str)
                if message == DONE_MESSAGE:
                    await self.aclose()
                    break
                self._misses = 0
                if message:
                    return self._advance(message)
                continue
            if inbox.overflowed:
                await self.aclose()
                raise SlowConsumerError(self.stream_id, self.position, inbox.limit)
            try:
                woken = await self.waiter.wait(self._ctx.done_watchdog_interval)
            except BaseException as exc:  # cancelled, or the waiter's connection is gone
                self._closed = True
                self._cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
                with anyio.CancelScope(shield=True):
                    await self._release()
                raise
            if not woken and not inbox and await self._watchdog_says_done():
                logger.warning(
                    "stream %r: sentinel is DONE or gone but no DONE message came; closing",
                    self.stream_id,
                )
                await self.aclose()
                break
        if self._cancelled:
            raise ReadCancelledError(self.stream_id, self.position)
        raise StopAsyncIteration

    async def _resync(self) -> bool:
        """Ask again for a replay from :attr:`position` on a fresh channel; True if answered."""
        try:
            answered = await _request_replay(self._ctx, self.stream_id, self.position)
        except Exception as exc:  # Redis still coming back: the caller tries again later
            logger.warning("stream %r: re-synchronizing failed: %s", self.stream_id, exc)
            return False
        if not isinstance(answered, tuple):
            return False
        await self._release()  # the old channel, and whatever arrived on it
        self._attach(*answered)
        self._misses = 0
        logger.info("stream %r: re-synchronized at position %d", self.stream_id, self.position)
        return True

    async def _resync_after_reconnect(self) -> None:
        """Messages may have been lost while Redis was unreachable: re-request, or raise."""
        ctx = self._ctx
        deadline = anyio.current_time() + max(ctx.done_watchdog_interval, 3 * ctx.ack_timeout)
        delay = 0.05
        while not await self._resync():
            # The producer may not have re-subscribed yet; a finished stream never answers.
            value = await self._sentinel()
            if value == DONE_VALUE or anyio.current_time() >= deadline:
                await self.aclose()
                state = "the stream finished" if value == DONE_VALUE else "no producer answered"
                raise StreamInterruptedError(
                    self.stream_id,
                    self.position,
                    f"the connection to Redis was lost and {state} since",
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _sentinel(self) -> str | None:
        try:
            return await self._ctx.publisher.get(self._ctx.keys.sentinel(self.stream_id))
        except Exception as exc:
            logger.warning("stream %r: sentinel GET failed: %s", self.stream_id, exc)
            return "unknown"

    async def _watchdog_says_done(self) -> bool:
        """Upstream #47: close after two consecutive DONE-or-missing sentinel reads.

        Before counting a miss, ask the producer again: if one answers (the DONE message or
        chunks were lost, or the sentinel was lost with a restarted Redis), reading goes on
        from :attr:`position` without a gap.
        """
        value = await self._sentinel()
        if value not in (None, DONE_VALUE):
            self._misses = 0
            return False
        if await self._resync():
            return False
        self._misses += 1
        return self._misses >= 2


async def _unsubscribe(ctx: ResumableStreamContext, channel: str, inbox: _Inbox) -> None:
    with anyio.move_on_after(ctx.cleanup_timeout, shield=True):
        try:
            await ctx.mux.remove(channel, inbox.put)
        except Exception as exc:
            logger.warning("unsubscribing %r failed: %s", channel, exc)


async def _request_replay(
    ctx: ResumableStreamContext,
    stream_id: str,
    skip_characters: int | None,
    *,
    check_sentinel: bool = False,
) -> tuple[str, _Inbox] | Literal["NOT_FOUND", "DONE"] | None:
    """Subscribe a fresh listener and ask for a replay; ``(channel, inbox)`` once answered.

    ``None`` when no producer answered within ``ctx.ack_timeout`` (then unsubscribed). With
    ``check_sentinel``, the sentinel is read while the subscription is being made (one
    round trip saved): ``"NOT_FOUND"`` / ``"DONE"`` when there is nothing to resume.
    """
    listener_id = str(uuid.uuid4())
    channel = ctx.keys.chunk(listener_id)
    inbox = _Inbox(ctx.consumer_buffer_limit)
    if check_sentinel:
        found: list[str | None] = []

        async def read_sentinel() -> None:
            found.append(await ctx.publisher.get(ctx.keys.sentinel(stream_id)))

        with unwrap_single():
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_sentinel)
                await ctx.mux.add(channel, inbox.put)
        if not found[0] or found[0] == DONE_VALUE:
            await _unsubscribe(ctx, channel, inbox)
            return "DONE" if found[0] == DONE_VALUE else "NOT_FOUND"
    else:
        await ctx.mux.add(channel, inbox.put)
    acked = False
    try:
        await ctx.publisher.publish(
            ctx.keys.request(stream_id), encode_request(listener_id, skip_characters)
        )
        await inbox.wait_ack(ctx.ack_timeout)
        acked = bool(inbox) or inbox.overflowed
    finally:
        if not acked:
            await _unsubscribe(ctx, channel, inbox)
    return (channel, inbox) if acked else None


@overload
async def resume(
    ctx: ResumableStreamContext,
    stream_id: str,
    skip_characters: int | None,
    *,
    check_sentinel: Literal[False] = False,
) -> ResumedStream | None: ...


@overload
async def resume(
    ctx: ResumableStreamContext,
    stream_id: str,
    skip_characters: int | None,
    *,
    check_sentinel: Literal[True],
) -> ResumedStream | Literal["NOT_FOUND"] | None: ...


async def resume(
    ctx: ResumableStreamContext,
    stream_id: str,
    skip_characters: int | None,
    *,
    check_sentinel: bool = False,
) -> ResumedStream | Literal["NOT_FOUND"] | None:
    """Subscribe a fresh listener, ask the producer for a replay, and wait for the ack.

    Returns ``None`` when the stream turned out to be finished (and, with
    ``check_sentinel``, ``"NOT_FOUND"`` when it does not exist); raises
    :class:`~resumable_streams.errors.AckTimeoutError` when no producer answered within
    ``ctx.ack_timeout`` although the sentinel says the stream is active.
    """
    answered = await _request_replay(ctx, stream_id, skip_characters, check_sentinel=check_sentinel)
    if answered == "NOT_FOUND":
        return "NOT_FOUND"
    if answered == "DONE":
        return None
    if answered is None:
        value = await ctx.publisher.get(ctx.keys.sentinel(stream_id))
        if value == DONE_VALUE:
            return None
        raise AckTimeoutError(stream_id, ctx.ack_timeout)
    channel, inbox = answered
    if inbox and inbox.first() == DONE_MESSAGE:
        # Only possible when a producer sends DONE without a replay first; treat as done.
        await _unsubscribe(ctx, channel, inbox)
        return None
    return ResumedStream(ctx, stream_id, channel, inbox, skip_characters or 0)
