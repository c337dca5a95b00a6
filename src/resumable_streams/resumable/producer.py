"""The producer side: run a source to completion and serve every listener, in order.

One :class:`Producer` per stream. Its ``run`` task (in the context's task group or the
caller's) owns two loops: the *pump* reads the source into a :class:`ReplayBuffer`, the
*flush loop* publishes what is queued for each listener. Resume requests are handled
synchronously in the subscription callback - register the listener and snapshot the buffer
in one step, with no checkpoint in between - so every chunk reaches a late joiner exactly
once: either in its replay or live afterwards. All publishes go through the one flush loop,
so each listener receives its messages in order; queued chunks for a listener are coalesced
into one message and a batch is pipelined (one round trip for all listeners).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .._protocol.resumable import (
    DONE_MESSAGE,
    DONE_VALUE,
    ReplayBuffer,
    RequestError,
    parse_request,
)
from ..backends.base import publish_many
from ..errors import InvalidChunkError

if TYPE_CHECKING:
    from .context import ResumableStreamContext

__all__ = ["MakeStream", "Producer"]

logger = logging.getLogger("resumable_streams")

MakeStream = Callable[[], AsyncIterable[str] | Awaitable[AsyncIterable[str]]]
"""A zero-argument callable returning the source: an async iterable of ``str``."""

#: Coalesced live messages are cut at this many characters.
MAX_MESSAGE_CHARS = 1 << 20
#: The pump waits for the flush loop when this many characters are queued.
HIGH_WATER_CHARS = 4 << 20
#: One pipeline carries at most this many characters (then the next one is sent): a large
#: replay must not pile up beyond Redis's pub/sub output-buffer limit (32 MB) at once.
MAX_PIPELINE_CHARS = 4 << 20


class Producer:
    """Runs one stream's source and answers resume requests (internal)."""

    def __init__(
        self, ctx: ResumableStreamContext, stream_id: str, make_stream: MakeStream
    ) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self._make_stream = make_stream
        self.buffer = ReplayBuffer(ctx.max_replay_size)
        self.listeners: dict[str, None] = {}
        self.done = False
        self.cancelled = False
        self.error: BaseException | None = None
        self._pending: dict[str, list[str]] = {}
        self._pending_chars = 0
        self._closing = False
        self._wake = anyio.Event()
        self._flushed = anyio.Event()
        self._progress = anyio.Event()
        self.progress_wakers: set[Callable[[], None]] = set()
        """Called (plain calls) whenever :meth:`wait_progress` would return."""
        self._pump_scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self._request_channel = ctx.keys.request(stream_id)
        self._cancel_channel = ctx.keys.cancel(stream_id)
        self._subscribed = False
        self._keys_finished = False
        self._reassert = False

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(self) -> None:
        """Listen on the request and cancel channels (done before the sentinel is set)."""
        await self.ctx.mux.add(self._request_channel, self._on_request)
        try:
            await self.ctx.mux.add(self._cancel_channel, self._on_cancel)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.ctx.mux.remove(self._request_channel, self._on_request)
            raise
        self._subscribed = True
        self.ctx.mux.watch_reconnect(self._request_channel, self.on_reconnect)

    async def unsubscribe(self) -> None:
        """Stop listening (idempotent)."""
        if self._subscribed:
            self._subscribed = False
            self.ctx.mux.unwatch_reconnect(self._request_channel, self.on_reconnect)
            await self.ctx.mux.remove(self._request_channel, self._on_request)
            await self.ctx.mux.remove(self._cancel_channel, self._on_cancel)

    def _on_request(self, message: str) -> None:
        try:
            request = parse_request(message)
        except RequestError as exc:
            logger.warning("stream %r: ignoring resume request: %s", self.stream_id, exc)
            return
        listener = request.listener_id
        if listener in self.listeners:
            logger.warning("stream %r: duplicate listenerId %r ignored", self.stream_id, listener)
            return
        limit = self.ctx.max_listeners
        if limit is not None and len(self.listeners) >= limit:
            logger.warning(
                "stream %r: refusing listener %r: max_listeners=%d reached",
                self.stream_id,
                listener,
                limit,
            )
            return
        replay = self.buffer.replay(request.skip_characters)
        if replay is None:
            logger.warning(
                "stream %r: refusing listener %r: skipCharacters=%d points before the "
                "retained replay window (max_replay_size=%s, %d characters dropped)",
                self.stream_id,
                listener,
                request.skip_characters,
                self.ctx.max_replay_size,
                self.buffer.dropped_units,
            )
            return
        # Register and snapshot in the same synchronous step: exactly-once delivery.
        self.listeners[listener] = None
        self._queue(listener, replay)  # always sent, even "": it is the ack
        if self.done:
            self._queue(listener, DONE_MESSAGE)
            del self.listeners[listener]
        logger.debug("stream %r: listener %r joined", self.stream_id, listener)

    def on_reconnect(self) -> None:
        """The pub/sub connection was restored: a restarted Redis may have lost the sentinel.

        The flush loop sets it again (while the stream runs) so new resumers still find it.
        """
        if not self.done:
            self._reassert = True
            self._wake.set()

    def _on_cancel(self, message: str) -> None:
        logger.debug("stream %r: cancel requested", self.stream_id)
        self.cancelled = True
        self._pump_scope.cancel()

    # -- the run task --------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the source to completion, then finish the stream (also on error or cancel)."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._flush_loop)
                task_status.started()
                with self._pump_scope:
                    try:
                        await self._pump()
                    except Exception as exc:
                        self.error = exc
                        logger.warning(
                            "stream %r: source failed after %d chunks: %r",
                            self.stream_id,
                            len(self.buffer),
                            exc,
                        )
                self._mark_done()
                await self._finish_keys()
                self._closing = True
                self._wake.set()
        finally:
            # Whatever ended the run (normally, an error, a cancellation at any point), the
            # stream is finished: DONE queued for every listener, the sentinel DONE, and
            # everything still queued published - shielded, within cleanup_timeout.
            with anyio.move_on_after(self.ctx.cleanup_timeout, shield=True):
                self._mark_done()
                self._closing = True
                if not self._keys_finished:
                    await self._finish_keys()
                await self._flush_all(anyio.current_time() + self.ctx.cleanup_timeout)
            self.finished.set()
            self._notify_progress()

    async def _pump(self) -> None:
        source: Any = self._make_stream()
        if inspect.isawaitable(source):
            source = await source
        if not isinstance(source, AsyncIterable):
            raise InvalidChunkError(
                f"make_stream() must return an async iterable of str, got {type(source).__name__}"
            )
        iterator: AsyncIterator[Any] = aiter(source)
        try:
            async for chunk in iterator:
                if not isinstance(chunk, str):
                    raise InvalidChunkError(
                        f"stream {self.stream_id!r}: source yielded {type(chunk).__name__} "
                        f"{chunk!r:.60}, expected str"
                    )
                if chunk:
                    self._append(chunk)
                while self._pending_chars > HIGH_WATER_CHARS:
                    await self._flushed.wait()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(self.ctx.cleanup_timeout, shield=True):
                    await aclose()

    def _append(self, chunk: str) -> None:
        self.buffer.append(chunk)
        for listener in self.listeners:
            self._queue(listener, chunk)
        self._notify_progress()

    def _notify_progress(self) -> None:
        event, self._progress = self._progress, anyio.Event()
        event.set()
        for wake in self.progress_wakers:
            wake()

    async def wait_progress(self) -> None:
        """Wait until a chunk is appended or the stream is finished."""
        if not self.done:
            await self._progress.wait()

    def _mark_done(self) -> None:
        if self.done:
            return
        self.done = True
        for listener in self.listeners:
            self._queue(listener, DONE_MESSAGE)
        self.listeners.clear()
        self._notify_progress()

    async def _finish_keys(self) -> None:
        """SET the sentinel to DONE (before unsubscribing: a late resumer then sees DONE)."""
        self._keys_finished = True
        ctx = self.ctx
        try:
            await ctx.publisher.set(ctx.keys.sentinel(self.stream_id), DONE_VALUE, ex=ctx.ttl)
        except Exception as exc:
            logger.error("stream %r: could not mark the sentinel DONE: %s", self.stream_id, exc)
        try:
            await self.unsubscribe()
        except Exception as exc:
            logger.warning("stream %r: unsubscribe failed: %s", self.stream_id, exc)

    # -- publishing ----------------------------------------------------------------------

    def _queue(self, listener: str, text: str) -> None:
        self._pending.setdefault(listener, []).append(text)
        self._pending_chars += len(text)
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            if self._reassert:
                self._reassert = False
                await self._reassert_sentinel()
            if self._pending:
                await self._flush_once()
            elif self._closing:
                return
            else:
                await self._wake.wait()

    async def _reassert_sentinel(self) -> None:
        ctx = self.ctx
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(ctx.publish_timeout):
                if not self.done:
                    await ctx.publisher.set(ctx.keys.sentinel(self.stream_id), "1", ex=ctx.ttl)
        except Exception as exc:
            logger.warning("stream %r: could not re-assert the sentinel: %s", self.stream_id, exc)

    async def _flush_all(self, deadline: float) -> None:
        while self._pending and anyio.current_time() < deadline:
            await self._flush_once(deadline)

    async def _flush_once(self, deadline: float | None = None) -> None:
        """Publish everything queued, giving up (and dropping it) at ``deadline``."""
        if deadline is None:
            deadline = anyio.current_time() + self.ctx.publish_timeout
        pending, self._pending = self._pending, {}
        self._pending_chars = 0
        items: list[tuple[str, str]] = []
        owners: list[str | None] = []
        for listener, parts in pending.items():
            channel = self.ctx.keys.chunk(listener)
            for message in _coalesce(parts):
                items.append((channel, message if message.isascii() else _to_wire(message)))
                owners.append(None if message is DONE_MESSAGE else listener)
        # Shielded: a batch taken off the queue is published whole or, after publish_timeout
        # of failures, dropped with its listeners (below) - never cut by a cancellation.
        results = None
        with anyio.CancelScope(shield=True, deadline=deadline):
            results = await self._publish_with_retry(items, deadline)
        if results is None:
            # Finding the gap is the listeners' job: they stop receiving, their watchdog
            # re-requests from their position, and the replay buffer fills the gap.
            for owner in set(owners):
                if owner is not None and owner in self.listeners:
                    del self.listeners[owner]
        elif self.ctx.prune_listeners:
            for owner, receivers in zip(owners, results, strict=True):
                if owner is not None and receivers == 0 and owner in self.listeners:
                    logger.debug("stream %r: pruning dead listener %r", self.stream_id, owner)
                    del self.listeners[owner]
        event, self._flushed = self._flushed, anyio.Event()
        event.set()

    async def _publish_with_retry(
        self, items: list[tuple[str, str]], deadline: float
    ) -> list[int] | None:
        results: list[int] = []
        for group in _pipelines(items):
            published = await self._publish_group(group, deadline)
            if published is None:
                return None
            results.extend(published)
        return results

    async def _publish_group(
        self, items: list[tuple[str, str]], deadline: float
    ) -> list[int] | None:
        delay = 0.05
        while True:
            try:
                return await publish_many(self.ctx.publisher, items)
            except Exception as exc:  # never let a backend failure crash the producer
                if anyio.current_time() + delay > deadline:
                    logger.error(
                        "stream %r: dropping %d messages after publish failures: %s",
                        self.stream_id,
                        len(items),
                        exc,
                    )
                    return None
                logger.warning("stream %r: publish failed, retrying: %s", self.stream_id, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)


def _pipelines(items: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """``items`` in order, grouped into pipelines of at most MAX_PIPELINE_CHARS each."""
    groups: list[list[tuple[str, str]]] = [[]]
    size = 0
    for item in items:
        if groups[-1] and size + len(item[1]) > MAX_PIPELINE_CHARS:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item[1])
    return groups


def _to_wire(message: str) -> str:
    """Pair adjacent surrogate halves and turn lone ones into U+FFFD, as node-redis does.

    A source may yield the two UTF-16 halves of one character in separate chunks; Redis
    carries UTF-8, which has no encoding for a lone surrogate.
    """
    return message.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _coalesce(parts: list[str]) -> list[str]:
    """Merge consecutive text parts into messages of at most MAX_MESSAGE_CHARS.

    ``DONE_MESSAGE`` stays a message of its own; an empty first part (an empty replay, the
    ack) survives as ``""`` when nothing follows it; a longer part (a large replay) is cut
    into pieces, never between the two halves of a surrogate pair.
    """
    messages: list[str] = []
    run: list[str] = []
    size = 0
    for part in parts:
        if part is DONE_MESSAGE:
            if run:
                messages.append("".join(run))
                run, size = [], 0
            messages.append(DONE_MESSAGE)
            continue
        for piece in _pieces(part):
            if size and size + len(piece) > MAX_MESSAGE_CHARS:
                messages.append("".join(run))
                run, size = [], 0
            run.append(piece)
            size += len(piece)
    if run:
        messages.append("".join(run))
    return messages


def _pieces(text: str) -> list[str]:
    """``text`` cut into pieces of at most MAX_MESSAGE_CHARS (surrogate pairs kept whole)."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return [text]
    pieces = []
    start = 0
    while start < len(text):
        end = min(start + MAX_MESSAGE_CHARS, len(text))
        if end < len(text) and "\ud800" <= text[end - 1] <= "\udbff":
            end -= 1  # a high surrogate stays with its low half
        pieces.append(text[start:end])
        start = end
    return pieces
