"""The default Redis backend, on coredis (anyio-native: runs under trio and asyncio).

:class:`CoredisPublisher` sends commands (pipelining :meth:`~CoredisPublisher.publish_many`);
:class:`CoredisSubscriber` owns one pub/sub connection whose reader task dispatches messages
to callbacks. It is an async context manager: enter it (the resumable-stream context does)
so that its reader runs in a task group you can see. coredis re-subscribes by itself after a
lost connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions

from ..errors import BackendError, BackendUnavailableError, ConfigurationError
from .base import MessageCallback, dispatch

__all__ = ["CoredisPublisher", "CoredisSubscriber", "open_coredis_client"]

logger = logging.getLogger("resumable_streams")
T = TypeVar("T")


async def _translate(call: Callable[[], Awaitable[T]], what: str) -> T:
    try:
        return await call()
    except coredis.exceptions.ConnectionError as exc:
        raise BackendUnavailableError(f"Redis connection failed during {what}: {exc}") from exc
    except (coredis.exceptions.RedisError, TimeoutError, OSError) as exc:
        raise BackendError(f"Redis {what} failed: {exc}") from exc


def open_coredis_client(url: str) -> AbstractAsyncContextManager[coredis.Redis[str]]:
    """Open a coredis client for ``url`` (``redis://`` or ``rediss://``), decoding to ``str``."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"unsupported Redis URL {url!r}: expected redis://, rediss:// or unix://"
        )
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url, decode_responses=True, connect_timeout=5, stream_timeout=30
    )
    return client


class CoredisPublisher:
    """:class:`~resumable_streams.backends.Publisher` over a ``coredis.Redis`` client."""

    def __init__(self, client: coredis.Redis[str]) -> None:
        self.client = client

    async def connect(self) -> None:
        """Check the connection with PING."""
        await _translate(self.client.ping, "PING")

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH."""
        return await _translate(lambda: self.client.publish(channel, message), "PUBLISH")

    async def publish_many(self, items: Sequence[tuple[str, str]]) -> list[int]:
        """PUBLISH each pair, in order, in one pipeline (one round trip)."""
        if len(items) == 1:
            return [await self.publish(*items[0])]

        async def run() -> list[int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, message in items:
                    pipe.publish(channel, message)
            return [int(r) for r in pipe.results or ()]

        return await _translate(run, "PUBLISH (pipelined)")

    async def set(self, key: str, value: str, *, ex: int | None = None) -> None:
        """SET [EX]."""
        await _translate(lambda: self.client.set(key, value, ex=ex), "SET")

    async def get(self, key: str) -> str | None:
        """GET."""
        return await _translate(lambda: self.client.get(key), "GET")

    async def incr(self, key: str) -> int:
        """INCR."""
        return await _translate(lambda: self.client.incr(key), "INCR")


class CoredisSubscriber:
    """:class:`~resumable_streams.backends.Subscriber` on one coredis pub/sub connection.

    Use as ``async with CoredisSubscriber(client) as sub:``; the reader task lives inside.
    Callbacks run in the reader task, in arrival order, and must not block for long (the
    library's own callbacks only append to buffers).
    """

    def __init__(self, client: coredis.Redis[str]) -> None:
        self.client = client
        self._callbacks: dict[str, MessageCallback] = {}
        self._pubsub: Any = None
        self._expected: dict[str, int] = {}  # confirmations our own SUBSCRIBEs will bring
        self._resubscribe_hooks: list[Callable[[str], None]] = []

    def on_resubscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(channel)`` when coredis restored ``channel`` after a lost connection.

        Messages published to the channel while the connection was down are lost.
        """
        self._resubscribe_hooks.append(callback)

    async def connect(self) -> None:
        """Refuse to run un-entered: the reader task needs a task group."""
        if self._pubsub is None:
            raise ConfigurationError(
                "CoredisSubscriber must be entered (`async with CoredisSubscriber(...)`)"
            )

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[CoredisSubscriber]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=False)
        try:
            async with pubsub, anyio.create_task_group() as tg:
                self._pubsub = pubsub
                tg.start_soon(self._reader, pubsub)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        except coredis.exceptions.ConnectionError as exc:
            raise BackendUnavailableError(f"Redis pub/sub connection failed: {exc}") from exc
        finally:
            self._pubsub = None
            self._callbacks.clear()

    async def __aenter__(self) -> CoredisSubscriber:
        self._cm = self._run()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    async def _reader(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message()
            if not message:
                continue
            kind = message.get("type")
            channel = message["channel"]
            if kind == "subscribe":
                self._confirmed(channel)
                continue
            if kind != "message":
                continue
            callback = self._callbacks.get(channel)
            if callback is not None:
                await dispatch(callback, message["data"], channel)

    def _confirmed(self, channel: str) -> None:
        """A SUBSCRIBE confirmation: ours, or coredis re-subscribing after a reconnect."""
        expected = self._expected.get(channel, 0)
        if expected > 1:
            self._expected[channel] = expected - 1
        elif expected == 1:
            del self._expected[channel]
        elif channel in self._callbacks:
            logger.info("Redis pub/sub re-subscribed %r after a lost connection", channel)
            for hook in self._resubscribe_hooks:
                try:
                    hook(channel)
                except Exception:
                    logger.exception("resubscribe hook for %r failed", channel)

    async def subscribe(self, channel: str, callback: MessageCallback) -> None:
        """SUBSCRIBE; returns once Redis confirmed the subscription."""
        await self.connect()
        self._callbacks[channel] = callback
        self._expected[channel] = self._expected.get(channel, 0) + 1
        try:
            await _translate(lambda: self._pubsub.subscribe(channel), "SUBSCRIBE")
        except BaseException:
            self._callbacks.pop(channel, None)
            self._expected.pop(channel, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        """UNSUBSCRIBE (no more callbacks for ``channel`` from now on)."""
        if self._callbacks.pop(channel, None) is None or self._pubsub is None:
            return
        await _translate(lambda: self._pubsub.unsubscribe(channel), "UNSUBSCRIBE")
