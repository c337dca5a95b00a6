"""What the SSE and WebSocket endpoints share: open a stream at a position, relay it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .._protocol.transport import split_chunk
from ..errors import SlowConsumerError
from ..resumable.context import ResumableStreamContext
from ..resumable.producer import MakeStream
from ..resumable.streams import ResumableStream

__all__ = ["Outcome", "open_at", "relay"]

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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a relay ended: ``kind`` is ``done``, ``failed`` or ``retry`` (slow consumer)."""

    kind: Literal["done", "failed", "retry"]
    position: int


async def relay(stream: ResumableStream, emit: Callable[[str, int], Awaitable[None]]) -> Outcome:
    """Pass each non-empty chunk with the position after it to ``emit``; say how it ended.

    A chunk longer than :data:`~resumable_streams._protocol.transport.MAX_MESSAGE_CHARS`
    (a large replay) is passed as several pieces, each with the position after it, so a
    client whose connections keep dropping mid-replay still makes progress.

    A producer error (seen only by the creator's iterator) is logged and reported as
    ``failed``; a consumer that fell too far behind gets ``retry`` and resumes from its
    position. Cancellation (a client gone) propagates; the producer keeps running.
    """
    while True:
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            return Outcome("done", stream.position)
        except SlowConsumerError:
            return Outcome("retry", stream.position)
        except Exception:
            logger.exception("stream %r: the producer failed", stream.stream_id)
            return Outcome("failed", stream.position)
        if chunk:
            for piece, end in split_chunk(chunk, stream.position):
                await emit(piece, end)
