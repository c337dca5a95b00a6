"""What the SSE and WebSocket endpoints share: open a stream at a position, relay it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from .._protocol.transport import MAX_MESSAGE_CHARS, split_chunk
from ..errors import ConfigurationError, SlowConsumerError
from ..resumable.context import ResumableStreamContext
from ..resumable.producer import MakeStream
from ..resumable.streams import ResumableStream

__all__ = ["ClientGone", "ConnectionWatch", "Outcome", "check_heartbeat", "open_at", "relay"]

logger = logging.getLogger("resumable_streams.transports")


async def open_at(
    ctx: ResumableStreamContext,
    stream_id: str,
    make_stream: MakeStream | None,
    position: int | None,
) -> ResumableStream | Literal["DONE", "NOT_FOUND"]:
    """Open ``stream_id`` for a client that starts at ``position``.

    At position 0 / ``None`` with a ``make_stream``: create the stream or join it
    (``ctx.resumable_stream``). Past 0, or without ``make_stream``: resume only - a client
    that already holds part of a stream must not start a second producer.
    """
    if make_stream is not None and not position:
        stream = await ctx.resumable_stream(stream_id, make_stream, position)
        return "DONE" if stream is None else stream
    result = await ctx.resume_existing_stream(stream_id, position)
    if result is None:
        logger.debug("stream %r: finished before a client at %s reconnected", stream_id, position)
        return "DONE"
    return result


def check_heartbeat(heartbeat: float) -> None:
    """Reject a heartbeat interval that is not a number of seconds > 0."""
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not heartbeat > 0:
        raise ConfigurationError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")


class ClientGone(Exception):
    """The peer went away (raised by a connection's ``send`` / while waiting for data)."""


class ConnectionWatch:
    """One connection's only task, while its subscriber idles: a stream :class:`Waiter`.

    The relay's task itself parks in the connection's ``receive()`` (so a client that leaves
    is noticed at once, and its subscription freed), with a deadline for the next heartbeat;
    new data wakes it by cancelling that wait (``receive()`` of every supported server is
    cancel-safe: nothing is lost). So an idle subscriber costs one parked coroutine chain,
    no second task, no event, no lock. Subclasses say what receiving and a heartbeat are.
    """

    __slots__ = ("heartbeat", "last", "receive", "scope", "woken")

    def __init__(self, heartbeat: float, receive: Callable[[], Awaitable[Any]]) -> None:
        self.heartbeat = heartbeat
        self.receive = receive
        """The peer's next message (awaited directly: one coroutine frame less per idler)."""
        self.last = anyio.current_time()
        self.scope: anyio.CancelScope | None = None
        self.woken = False

    def is_gone(self, message: Any) -> bool:
        """Whether ``message`` from :attr:`receive` says the peer is gone."""
        raise NotImplementedError

    async def send_heartbeat(self) -> None:
        """Send one heartbeat; raise :class:`ClientGone` if the peer is gone."""
        raise NotImplementedError

    def wrote(self) -> None:
        """Output was sent: the next heartbeat is due ``heartbeat`` seconds from now."""
        self.last = anyio.current_time()

    def wake(self) -> None:
        self.woken = True
        if self.scope is not None:
            self.scope.cancel()

    async def wait(self, seconds: float) -> bool:
        deadline = anyio.current_time() + seconds
        while not self.woken:
            now = anyio.current_time()
            due = self.last + self.heartbeat
            if now >= due:
                await self.send_heartbeat()
                self.last = now
                continue
            if now >= deadline:
                return False
            message = None
            with anyio.CancelScope(deadline=min(due, deadline)) as scope:
                self.scope = scope
                try:
                    message = await self.receive()
                finally:
                    self.scope = None
            if scope.cancelled_caught:
                continue
            if self.is_gone(message):
                raise ClientGone
        self.woken = False
        return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a relay ended: ``kind`` is ``done``, ``failed`` or ``retry`` (slow consumer)."""

    kind: Literal["done", "failed", "retry"]
    position: int


async def relay(
    stream: ResumableStream, emit: Callable[[str, int], Awaitable[None]]
) -> Outcome | None:
    """Pass the stream's text with the position after it to ``emit``; say how it ended.

    What is already there when the client is ready goes out as one message: the chunks
    that queued up while the last one was being sent are joined (up to
    :data:`~resumable_streams._protocol.transport.MAX_MESSAGE_CHARS`), and the message
    carries the position after all of them - the same resume point as the last chunk's.
    A longer text (a large replay) is passed as several pieces, each with the position
    after it, so a client whose connections keep dropping mid-replay still makes progress.

    A producer error (seen only by the creator's iterator) is logged and reported as
    ``failed``; a consumer that fell too far behind gets ``retry`` and resumes from its
    position; ``None`` when the client went away (:class:`ClientGone` from ``emit`` or from
    the stream's waiter). Cancellation propagates; the producer keeps running.
    """
    while True:
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            return Outcome("done", stream.position)
        except SlowConsumerError:
            return Outcome("retry", stream.position)
        except ClientGone:
            return None
        except Exception:
            logger.exception("stream %r: the producer failed", stream.stream_id)
            return Outcome("failed", stream.position)
        more = stream.next_ready()
        if more is not None:
            parts = [chunk, more]
            size = len(chunk) + len(more)
            while size < MAX_MESSAGE_CHARS and (more := stream.next_ready()) is not None:
                parts.append(more)
                size += len(more)
            chunk = "".join(parts)
        if chunk:
            try:
                for piece, end in split_chunk(chunk, stream.position):
                    await emit(piece, end)
            except ClientGone:
                return None
