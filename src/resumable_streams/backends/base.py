"""The two small interfaces every resumable-stream backend implements."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "MessageCallback",
    "Publisher",
    "Subscriber",
    "dispatch",
    "publish_many",
]

logger = logging.getLogger("resumable_streams")

MessageCallback = Callable[[str], Awaitable[None] | None]
"""Called with each message (a ``str``) received on a subscribed channel."""


@runtime_checkable
class Publisher(Protocol):
    """A Redis-like command client (the seed's ``Publisher``).

    ``incr`` on a key holding a non-integer must raise an exception whose text contains
    ``"not an integer"`` (Redis: ``ERR value is not an integer or out of range``).
    Backends may also offer ``publish_many(items) -> list[int]`` (pipelined, in order) and
    ``aclose()``; both are optional.
    """

    async def connect(self) -> Any:
        """Connect (may be a no-op)."""

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH; return the number of receivers."""

    async def set(self, key: str, value: str, *, ex: int | None = None) -> Any:
        """SET, with an expiry in seconds when ``ex`` is given."""

    async def get(self, key: str) -> str | None:
        """GET; ``None`` when the key does not exist."""

    async def incr(self, key: str) -> int:
        """INCR; return the new value."""


@runtime_checkable
class Subscriber(Protocol):
    """A Redis-like pub/sub client (the seed's ``Subscriber``).

    ``subscribe`` must return only once the subscription is active (Redis confirmed it), so
    that a message published afterwards is received. Optionally, ``on_resubscribe(callback)``
    registers ``callback(channel)`` for when a subscription was restored after a lost
    connection (messages published meanwhile were lost): resumers then re-synchronize at
    once instead of at their next watchdog check.
    """

    async def connect(self) -> Any:
        """Connect (may be a no-op)."""

    async def subscribe(self, channel: str, callback: MessageCallback) -> Any:
        """Subscribe ``callback`` to ``channel``."""

    async def unsubscribe(self, channel: str) -> Any:
        """Stop delivering ``channel``'s messages."""


async def dispatch(callback: MessageCallback, message: str, channel: str) -> None:
    """Call a subscriber callback, logging (never propagating) what it raises."""
    try:
        result = callback(message)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("callback for channel %r failed", channel)


async def publish_many(publisher: Publisher, items: Sequence[tuple[str, str]]) -> list[int]:
    """Publish ``(channel, message)`` pairs in order, pipelined when the backend can."""
    many = getattr(publisher, "publish_many", None)
    if many is not None:
        result: list[int] = await many(items)
        return result
    return [await publisher.publish(channel, message) for channel, message in items]
