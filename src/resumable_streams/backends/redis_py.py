"""Adapters for an existing ``redis.asyncio`` (redis-py) client - asyncio only.

For applications that already hold a redis-py client: pass it as ``publisher=`` and
``subscriber=`` and the context wraps it with these. redis-py's asyncio client does not run
under trio; under trio use the default coredis backend. The client stays yours: the context
never closes it (the subscriber's own pub/sub connection is closed on exit).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import sniffio

from ..errors import BackendError, BackendUnavailableError, ConfigurationError
from .base import MessageCallback, dispatch

__all__ = ["RedisPyPublisher", "RedisPySubscriber"]

logger = logging.getLogger("resumable_streams")


def _require_asyncio(what: str) -> None:
    if sniffio.current_async_library() != "asyncio":
        raise ConfigurationError(
            f"{what} wraps redis.asyncio, which runs only under asyncio; under trio use the "
            "default coredis backend (redis_url=...)"
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _translate(exc: Exception, what: str) -> BackendError:
    import redis.exceptions

    if isinstance(exc, redis.exceptions.ConnectionError | OSError):
        return BackendUnavailableError(f"Redis connection failed during {what}: {exc}")
    return BackendError(f"Redis {what} failed: {exc}")


class RedisPyPublisher:
    """:class:`~resumable_streams.backends.Publisher` over a ``redis.asyncio.Redis``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def connect(self) -> None:
        """Check the connection with PING (and that we run under asyncio)."""
        _require_asyncio("RedisPyPublisher")
        try:
            await self.client.ping()
        except Exception as exc:
            raise _translate(exc, "PING") from exc

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH."""
        try:
            return int(await self.client.publish(channel, message))
        except Exception as exc:
            raise _translate(exc, "PUBLISH") from exc

    async def publish_many(self, items: Sequence[tuple[str, str]]) -> list[int]:
        """PUBLISH each pair, in order, in one pipeline."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, message in items:
                    pipe.publish(channel, message)
                return [int(r) for r in await pipe.execute()]
        except Exception as exc:
            raise _translate(exc, "PUBLISH (pipelined)") from exc

    async def set(self, key: str, value: str, *, ex: int | None = None) -> None:
        """SET [EX]."""
        try:
            await self.client.set(key, value, ex=ex)
        except Exception as exc:
            raise _translate(exc, "SET") from exc

    async def get(self, key: str) -> str | None:
        """GET."""
        try:
            value = await self.client.get(key)
        except Exception as exc:
            raise _translate(exc, "GET") from exc
        return None if value is None else _text(value)

    async def incr(self, key: str) -> int:
        """INCR."""
        try:
            return int(await self.client.incr(key))
        except Exception as exc:
            raise _translate(exc, "INCR") from exc


class RedisPySubscriber:
    """:class:`~resumable_streams.backends.Subscriber` on a redis-py pub/sub connection.

    An async context manager: its reader task runs inside. Unlike redis-py's own
    ``subscribe()``, :meth:`subscribe` returns only after Redis confirmed the subscription.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._callbacks: dict[str, MessageCallback] = {}
        self._confirmed: dict[str, anyio.Event] = {}
        self._pubsub: Any = None
        self._stack: AsyncExitStack | None = None

    async def connect(self) -> None:
        """Refuse to run un-entered: the reader task needs a task group."""
        if self._pubsub is None:
            raise ConfigurationError("RedisPySubscriber must be entered (`async with ...`)")

    async def __aenter__(self) -> RedisPySubscriber:
        _require_asyncio("RedisPySubscriber")
        async with AsyncExitStack() as stack:
            self._pubsub = self.client.pubsub()
            stack.push_async_callback(self._pubsub.aclose)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(self._reader)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        stack, self._stack = self._stack, None
        self._callbacks.clear()
        try:
            if stack is not None:
                return await stack.__aexit__(*exc_info)
            return None
        finally:
            self._pubsub = None

    async def _reader(self) -> None:
        while True:
            if not self._pubsub.subscribed:
                await anyio.sleep(0.01)
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except Exception as exc:
                logger.warning("redis-py pub/sub read failed, retrying: %s", exc)
                await anyio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = _text(message["type"])
            channel = _text(message["channel"])
            if kind == "subscribe":
                event = self._confirmed.pop(channel, None)
                if event is not None:
                    event.set()
            elif kind == "message":
                callback = self._callbacks.get(channel)
                if callback is not None:
                    await dispatch(callback, _text(message["data"]), channel)

    async def subscribe(self, channel: str, callback: MessageCallback) -> None:
        """SUBSCRIBE and wait for the confirmation."""
        await self.connect()
        self._callbacks[channel] = callback
        event = self._confirmed[channel] = anyio.Event()
        try:
            await self._pubsub.subscribe(channel)
            with anyio.fail_after(5):
                await event.wait()
        except TimeoutError as exc:
            self._callbacks.pop(channel, None)
            raise BackendError(f"no SUBSCRIBE confirmation for {channel!r} within 5s") from exc
        except Exception as exc:
            self._callbacks.pop(channel, None)
            raise _translate(exc, "SUBSCRIBE") from exc

    async def unsubscribe(self, channel: str) -> None:
        """UNSUBSCRIBE."""
        if self._callbacks.pop(channel, None) is None or self._pubsub is None:
            return
        try:
            await self._pubsub.unsubscribe(channel)
        except Exception as exc:
            raise _translate(exc, "UNSUBSCRIBE") from exc
