"""In-process backend with Redis semantics: the embedded default (``redis_url="memory://"``).

Contexts that name the same broker (``memory://name``) share streams, as processes sharing
one Redis do. Publishing delivers to subscribers in order; a key with an expiry vanishes
when it is due.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import ClassVar

from .base import MessageCallback, dispatch

__all__ = ["MemoryBroker", "MemoryPublisher", "MemorySubscriber"]


class MemoryBroker:
    """One in-memory "Redis": string keys with expiry, and pub/sub channels."""

    _registry: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float | None]] = {}
        self._channels: defaultdict[str, list[MessageCallback]] = defaultdict(list)

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The process-wide broker called ``name`` (created on first use)."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls()
        return broker

    def get(self, key: str) -> str | None:
        """GET."""
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._values[key]
            return None
        return value

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        """SET [EX]."""
        if ex is not None and ex <= 0:
            raise ValueError(f"ERR invalid expire time in 'set' command: {ex}")
        self._values[key] = (value, None if ex is None else time.monotonic() + ex)

    def incr(self, key: str) -> int:
        """INCR (keeps an existing expiry, like Redis)."""
        current = self.get(key)
        try:
            number = int(current) if current is not None else 0
        except ValueError:
            raise ValueError("ERR value is not an integer or out of range") from None
        expires = self._values[key][1] if current is not None else None
        self._values[key] = (str(number + 1), expires)
        return number + 1

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires (``None``: no expiry or no key)."""
        if self.get(key) is None:
            return None
        expires = self._values[key][1]
        return None if expires is None else expires - time.monotonic()

    async def publish(self, channel: str, message: str) -> int:
        """Deliver to every current subscriber of ``channel``, in subscription order."""
        callbacks = list(self._channels.get(channel, ()))
        for callback in callbacks:
            await dispatch(callback, message, channel)
        return len(callbacks)

    def subscribe(self, channel: str, callback: MessageCallback) -> None:
        """Add a subscriber."""
        self._channels[channel].append(callback)

    def unsubscribe(self, channel: str, callback: MessageCallback) -> None:
        """Remove a subscriber."""
        callbacks = self._channels.get(channel)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._channels[channel]


class MemoryPublisher:
    """:class:`~resumable_streams.backends.Publisher` over a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def connect(self) -> None:
        """Nothing to connect."""

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH."""
        return await self.broker.publish(channel, message)

    async def publish_many(self, items: list[tuple[str, str]]) -> list[int]:
        """PUBLISH each pair, in order."""
        return [await self.broker.publish(channel, message) for channel, message in items]

    async def set(self, key: str, value: str, *, ex: int | None = None) -> None:
        """SET [EX]."""
        self.broker.set(key, value, ex)

    async def get(self, key: str) -> str | None:
        """GET."""
        return self.broker.get(key)

    async def incr(self, key: str) -> int:
        """INCR."""
        return self.broker.incr(key)


class MemorySubscriber:
    """:class:`~resumable_streams.backends.Subscriber` over a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._callbacks: dict[str, MessageCallback] = {}

    async def connect(self) -> None:
        """Nothing to connect."""

    async def subscribe(self, channel: str, callback: MessageCallback) -> None:
        """Subscribe (replacing this subscriber's earlier callback for ``channel``)."""
        await self.unsubscribe(channel)
        self._callbacks[channel] = callback
        self.broker.subscribe(channel, callback)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe."""
        callback = self._callbacks.pop(channel, None)
        if callback is not None:
            self.broker.unsubscribe(channel, callback)
