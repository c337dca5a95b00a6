"""The resumable-stream context: the seed's API on a task group you can see.

Two ways to run one, the same object either way:

* trio-native / structured: ``async with open_resumable_stream_context(...) as ctx:``;
* seed style (FastAPI and other asyncio apps): ``ctx = create_resumable_stream_context(...)``
  at import time, then run it for the application's lifetime with ``lifespan=ctx.lifespan``
  (Starlette / FastAPI) or ``async with ctx:`` in your own startup code.

While it runs, the context owns one task group holding every producer (unless you hand a
producer your own task group), the backend's pub/sub reader, and the Redis connections it
opened. Leaving the block waits for running producers to finish (``shutdown_timeout`` bounds
the wait, then they are cancelled); every cancelled producer still finishes its stream
(sentinel DONE, listeners told) within ``cleanup_timeout``. Nothing outlives the block.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Literal, Protocol, cast

import anyio
from anyio.abc import TaskGroup

from .._core.groups import unwrap_single
from .._core.mux import ChannelMux
from .._protocol.resumable import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_KEY_PREFIX,
    DEFAULT_TTL,
    DONE_VALUE,
    Keys,
    is_not_integer_error,
)
from ..backends.base import Publisher, Subscriber
from ..backends.setup import open_backends
from ..errors import ConfigurationError, ContextAlreadyRunningError, ContextNotRunningError
from .producer import MakeStream, Producer
from .streams import LocalStream, ResumableStream, resume

__all__ = [
    "ResumableStreamContext",
    "create_resumable_stream_context",
    "open_resumable_stream_context",
]

logger = logging.getLogger("resumable_streams")

MAX_STREAM_ID_LENGTH = 1024


class TaskStarter(Protocol):
    """Anything with ``await start(fn)``: an anyio ``TaskGroup`` or a trio ``Nursery``."""

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: object, name: object = None
    ) -> Any:
        """Start ``func`` and wait for it to report that it started."""


def _configure_debug_logging() -> None:
    if os.environ.get("DEBUG") and logger.level in (logging.NOTSET, logging.WARNING):
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            handler = logging.StreamHandler()
            fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)


def _check_stream_id(stream_id: object) -> str:
    if not isinstance(stream_id, str) or not stream_id:
        raise ConfigurationError(f"stream_id must be a non-empty str, got {stream_id!r}")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise ConfigurationError(
            f"stream_id is {len(stream_id)} characters long; the limit is {MAX_STREAM_ID_LENGTH}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in stream_id):
        raise ConfigurationError(f"stream_id must not contain control characters: {stream_id!r}")
    return stream_id


def _check_skip(skip_characters: object) -> int | None:
    if skip_characters is None:
        return None
    if isinstance(skip_characters, bool) or not isinstance(skip_characters, int):
        raise ConfigurationError(
            f"skip_characters must be an int >= 0 or None, got {skip_characters!r}"
        )
    if skip_characters < 0:
        raise ConfigurationError(f"skip_characters must be >= 0, got {skip_characters}")
    return skip_characters


def _positive(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")


class ResumableStreamContext:
    """Creates and resumes streams (the seed's ``ResumableStreamContext``).

    Build it with :func:`create_resumable_stream_context` or
    :func:`open_resumable_stream_context`; it must be running (``async with ctx:``) for any
    method to be used. All methods are checkpoints.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        publisher: Publisher | Any | None = None,
        subscriber: Subscriber | Any | None = None,
        ttl: int = DEFAULT_TTL,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        done_watchdog_interval: float = 10.0,
        max_replay_size: int | None = None,
        max_listeners: int | None = None,
        consumer_buffer_limit: int = 64 << 20,
        prune_listeners: bool = True,
        publish_timeout: float = 10.0,
        cleanup_timeout: float = 5.0,
        shutdown_timeout: float | None = None,
    ) -> None:
        _configure_debug_logging()
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive int (seconds), got {ttl!r}")
        _positive("ack_timeout", ack_timeout)
        _positive("done_watchdog_interval", done_watchdog_interval)
        _positive("publish_timeout", publish_timeout)
        _positive("cleanup_timeout", cleanup_timeout)
        _positive("shutdown_timeout", shutdown_timeout, optional=True)
        for name, limit in (
            ("max_replay_size", max_replay_size),
            ("max_listeners", max_listeners),
        ):
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise ConfigurationError(f"{name} must be an int >= 0 or None, got {limit!r}")
        if not isinstance(consumer_buffer_limit, int) or consumer_buffer_limit <= 0:
            raise ConfigurationError(
                f"consumer_buffer_limit must be a positive int, got {consumer_buffer_limit!r}"
            )
        if (publisher is None or subscriber is None) and not redis_url:
            redis_url = os.environ.get("REDIS_URL") or os.environ.get("KV_URL")
            if not redis_url:
                raise ConfigurationError(
                    "no Redis configured: pass redis_url=... (or publisher= and subscriber=), "
                    "set the REDIS_URL or KV_URL environment variable, or use "
                    "redis_url='memory://' for the in-process backend"
                )
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.keys = Keys.for_prefix(key_prefix)
        self.ttl = ttl
        self.ack_timeout = ack_timeout
        self.done_watchdog_interval = done_watchdog_interval
        self.max_replay_size = max_replay_size
        self.max_listeners = max_listeners
        self.consumer_buffer_limit = consumer_buffer_limit
        self.prune_listeners = prune_listeners
        self.publish_timeout = publish_timeout
        self.cleanup_timeout = cleanup_timeout
        self.shutdown_timeout = shutdown_timeout
        self._given_publisher = publisher
        self._given_subscriber = subscriber
        self._publisher: Publisher | None = None
        self._mux: ChannelMux | None = None
        self._tg: TaskGroup | None = None
        self._producers: dict[str, Producer] = {}
        self._cm: AbstractAsyncContextManager[ResumableStreamContext] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the context is inside its ``async with`` block."""
        return self._tg is not None

    @property
    def publisher(self) -> Publisher:
        """The command client in use (only while running)."""
        if self._publisher is None:
            raise self._not_running()
        return self._publisher

    @property
    def mux(self) -> ChannelMux:
        """The subscription multiplexer in use (only while running)."""
        if self._mux is None:
            raise self._not_running()
        return self._mux

    def _not_running(self) -> ContextNotRunningError:
        return ContextNotRunningError(
            "the resumable-stream context is not running: use `async with ctx:` / "
            "`async with open_resumable_stream_context(...)`, or pass `lifespan=ctx.lifespan` "
            "to Starlette/FastAPI"
        )

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[ResumableStreamContext]:
        # The backends (and their connection tasks) must outlive the producers: a cancelled
        # producer still finishes its stream through them. So they run in a shielded scope,
        # and a cancellation from outside reaches the block's body and the producers through
        # `relay`, which cancels `body` only; the backends close after the producers are done,
        # given at most `cleanup_timeout`, and the cancellation then carries on outward.
        body = anyio.CancelScope()
        exiting = False

        async def relay() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                if not exiting:
                    body.cancel()

        with unwrap_single():
            async with anyio.create_task_group() as relay_tg:
                relay_tg.start_soon(relay)
                try:
                    with anyio.CancelScope() as keep:
                        async with open_backends(
                            self.redis_url, self._given_publisher, self._given_subscriber
                        ) as (publisher, subscriber):
                            # Connecting can be cancelled; once open, the backends are
                            # shielded so they outlive the producers.
                            keep.shield = True
                            self._publisher = publisher
                            self._mux = ChannelMux(subscriber)
                            try:
                                with body, unwrap_single():
                                    async with anyio.create_task_group() as tg:
                                        self._tg = tg
                                        try:
                                            yield self
                                        finally:
                                            if self.shutdown_timeout is not None:
                                                tg.start_soon(
                                                    self._cancel_after, tg, self.shutdown_timeout
                                                )
                                # Producers started into a caller's task group may still
                                # run: they need these connections to finish their streams.
                                await self._wait_for_producers()
                            finally:
                                self._tg = None
                                self._mux = None
                                self._publisher = None
                                self._producers.clear()
                                keep.deadline = anyio.current_time() + self.cleanup_timeout
                finally:
                    exiting = True
                    relay_tg.cancel_scope.cancel()
            # Cancelled from outside: the body's scope swallowed the relayed cancellation, so
            # re-raise the outer one here rather than return as if the block had finished.
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def _cancel_after(self, tg: TaskGroup, delay: float) -> None:
        """``shutdown_timeout``: one deadline for all producers, then cancel the rest."""
        with anyio.move_on_after(delay) as scope:
            while self._producers:
                await next(iter(self._producers.values())).finished.wait()
        if scope.cancelled_caught:
            logger.warning("shutdown_timeout: cancelling %d producers", len(self._producers))
            tg.cancel_scope.cancel()

    async def _wait_for_producers(self) -> None:
        """Wait for producers running in callers' task groups, then cancel the rest.

        The wait is bounded by ``shutdown_timeout``; each cancelled producer finishes its
        stream (within ``cleanup_timeout``) before the connections close.
        """
        if not self._producers:
            return
        with anyio.move_on_after(self.shutdown_timeout or math.inf):
            for producer in list(self._producers.values()):
                await producer.finished.wait()
        remaining = list(self._producers.values())
        if remaining:
            logger.warning("context closing: cancelling %d producers", len(remaining))
        for producer in remaining:
            producer.cancelled = True
            producer._pump_scope.cancel()
        with anyio.move_on_after(2 * self.cleanup_timeout, shield=True):
            for producer in remaining:
                await producer.finished.wait()

    async def __aenter__(self) -> ResumableStreamContext:
        if self._cm is not None:
            raise ContextAlreadyRunningError(
                "this resumable-stream context is already running (entered twice?)"
            )
        cm = self._run()
        self._cm = cm
        try:
            return await cm.__aenter__()
        except BaseException:
            self._cm = None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._cm = self._cm, None
        assert cm is not None
        return await cm.__aexit__(exc_type, exc, tb)

    def lifespan(self, app: object) -> AbstractAsyncContextManager[None]:
        """A Starlette / FastAPI ``lifespan``: the context runs while the app does."""

        @asynccontextmanager
        async def span() -> AsyncIterator[None]:
            async with self:
                yield

        return span()

    async def aclose(self) -> None:
        """Cancel every running producer now; each still finishes its stream.

        Returns when they are finished. The ``async with`` block (or lifespan) then closes
        the connections when it exits.
        """
        producers = list(self._producers.values())
        for producer in producers:
            producer.cancelled = True
            producer._pump_scope.cancel()
        for producer in producers:
            await producer.finished.wait()

    def spawn_cleanup(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a short cleanup coroutine in the context's task group (if running)."""
        if self._tg is not None:
            self._tg.start_soon(fn)

    # -- the seed's API --------------------------------------------------------------------

    async def resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
        *,
        task_group: TaskStarter | None = None,
    ) -> ResumableStream | None:
        """Create the stream if it does not exist yet, else resume it (idempotent; INCR).

        The first caller becomes the producer and gets the stream from the start; later
        callers resume it (skipping ``skip_characters`` UTF-16 units). Returns ``None`` when
        the stream is already finished. ``task_group``: run the producer there instead of in
        the context's task group (its lifetime is then that task group's).
        """
        stream_id = _check_stream_id(stream_id)
        skip = _check_skip(skip_characters)
        self._check_make_stream(make_stream)
        sentinel = self.keys.sentinel(stream_id)
        # Subscribe before INCR: a resumer that sees a count > 1 publishes its request only
        # after our subscription is live (upstream #41, for the idempotent path too).
        producer = Producer(self, stream_id, make_stream)
        await producer.subscribe()
        try:
            count = await self.publisher.incr(sentinel)
        except Exception as exc:
            await self._discard(producer)
            if is_not_integer_error(exc):
                return None
            raise
        if count != 1 or stream_id in self._producers:
            await self._discard(producer)
            return await resume(self, stream_id, skip)
        try:
            # 2.2.13 behaviour: an expiry right after INCR, so a crash cannot leave an
            # immortal sentinel.
            await self.publisher.set(sentinel, "1", ex=self.ttl)
        except BaseException:
            await self._discard(producer)
            raise
        return await self._start(producer, task_group)

    async def create_new_resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
        *,
        task_group: TaskStarter | None = None,
    ) -> ResumableStream | None:
        """Start a new stream (explicit API: ``SET sentinel "1" EX ttl``, even over DONE).

        ``skip_characters`` is accepted for signature compatibility and ignored, as in the
        Node library. Raises :class:`~resumable_streams.errors.ConfigurationError` if this
        context is already producing ``stream_id``.
        """
        stream_id = _check_stream_id(stream_id)
        _check_skip(skip_characters)
        self._check_make_stream(make_stream)
        if stream_id in self._producers:
            raise ConfigurationError(f"stream {stream_id!r} is already being produced here")
        producer = Producer(self, stream_id, make_stream)
        await producer.subscribe()  # before the sentinel is set (upstream #41)
        try:
            await self.publisher.set(self.keys.sentinel(stream_id), "1", ex=self.ttl)
        except BaseException:
            await self._discard(producer)
            raise
        return await self._start(producer, task_group)

    async def resume_existing_stream(
        self, stream_id: str, skip_characters: int | None = None
    ) -> ResumableStream | Literal["NOT_FOUND"] | None:
        """Resume an existing stream: the iterator, ``None`` if finished, or ``"NOT_FOUND"``.

        Raises :class:`~resumable_streams.errors.AckTimeoutError` if the stream is marked
        active but no producer answers within ``ack_timeout``.
        """
        stream_id = _check_stream_id(stream_id)
        skip = _check_skip(skip_characters)
        return await resume(self, stream_id, skip, check_sentinel=True)

    async def has_existing_stream(self, stream_id: str) -> Literal[True, "DONE"] | None:
        """``None`` (no such stream), ``True`` (active) or ``"DONE"`` (finished)."""
        stream_id = _check_stream_id(stream_id)
        value = await self.publisher.get(self.keys.sentinel(stream_id))
        if value is None:
            return None
        if value == DONE_VALUE:
            return "DONE"
        return True

    async def cancel_stream(self, stream_id: str) -> int:
        """Stop a stream from any process (upstream ``cancelStream``'s cancel channel).

        Its producer - Python or Node - cancels its source and finishes the stream as done.
        Returns how many producers received the request (0: none is running).
        """
        stream_id = _check_stream_id(stream_id)
        return await self.publisher.publish(self.keys.cancel(stream_id), "")

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _check_make_stream(make_stream: object) -> None:
        if not callable(make_stream):
            raise ConfigurationError(
                f"make_stream must be a callable returning an async iterable, got {make_stream!r}"
            )

    async def _discard(self, producer: Producer) -> None:
        with anyio.CancelScope(shield=True):
            await producer.unsubscribe()

    async def _start(self, producer: Producer, task_group: TaskStarter | None) -> ResumableStream:
        tg = task_group or cast("TaskStarter | None", self._tg)
        if tg is None:
            await self._discard(producer)
            raise self._not_running()
        self._producers[producer.stream_id] = producer
        try:
            await tg.start(self._run_producer, producer)
        except BaseException:
            self._producers.pop(producer.stream_id, None)
            await self._discard(producer)
            raise
        return LocalStream(producer)

    async def _run_producer(
        self, producer: Producer, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await producer.run(task_status=task_status)
        finally:
            if self._producers.get(producer.stream_id) is producer:
                del self._producers[producer.stream_id]


def create_resumable_stream_context(
    *,
    redis_url: str | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    publisher: Publisher | Any | None = None,
    subscriber: Subscriber | Any | None = None,
    **options: Any,
) -> ResumableStreamContext:
    """Build a context (seed style). Run it with ``async with ctx:`` or ``lifespan=ctx.lifespan``.

    ``redis_url`` falls back to ``REDIS_URL`` / ``KV_URL``; ``"memory://"`` (or
    ``"memory://name"``) selects the in-process backend. ``publisher`` / ``subscriber`` may
    be your own :class:`~resumable_streams.backends.Publisher` /
    :class:`~resumable_streams.backends.Subscriber`, a ``coredis.Redis`` or a
    ``redis.asyncio.Redis`` client. Other options: see :class:`ResumableStreamContext`.
    """
    return ResumableStreamContext(
        redis_url=redis_url,
        key_prefix=key_prefix,
        publisher=publisher,
        subscriber=subscriber,
        **options,
    )


def open_resumable_stream_context(
    *,
    redis_url: str | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    publisher: Publisher | Any | None = None,
    subscriber: Subscriber | Any | None = None,
    **options: Any,
) -> ResumableStreamContext:
    """Build a context for the structured form: ``async with open_...(...) as ctx:``.

    Same arguments as :func:`create_resumable_stream_context`; the block owns every task
    and connection of the context.
    """
    return create_resumable_stream_context(
        redis_url=redis_url,
        key_prefix=key_prefix,
        publisher=publisher,
        subscriber=subscriber,
        **options,
    )
