"""Fan one backend subscription per channel out to many in-process listeners.

Backends speak the seed's ``subscribe(channel, callback)`` / ``unsubscribe(channel)``, which
allow one callback per channel. :class:`ChannelMux` keeps any number of listeners per channel
and subscribes the backend only while a channel has at least one, so two producers or
resumers in one process never steal each other's subscription.

Backends that can tell when a lost connection was restored (``on_resubscribe``, see
:class:`~resumable_streams.backends.Subscriber`) let a channel's watchers know: messages
published to it meanwhile were lost, and they re-synchronize.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..backends.base import Subscriber

__all__ = ["ChannelMux", "Listener"]

logger = logging.getLogger("resumable_streams")

Listener = Callable[[str], None]
"""A synchronous, non-blocking message handler."""


class _Channel:
    __slots__ = ("_lock", "listeners", "subscribed")

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._lock: anyio.Lock | None = None
        self.subscribed = False

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """Serialize (un)subscribing; the lock exists only while held or awaited.

        There is a channel per idle resumer: an idle one keeps no lock.
        """
        lock = self._lock
        if lock is None:
            lock = self._lock = anyio.Lock()
        try:
            async with lock:
                yield
        finally:
            if self._lock is lock and not lock.locked() and not lock.statistics().tasks_waiting:
                self._lock = None


class ChannelMux:
    """Many listeners per channel over one :class:`Subscriber`."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self._channels: dict[str, _Channel] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        hook = getattr(subscriber, "on_resubscribe", None)
        if hook is not None:
            hook(self._resubscribed)

    def watch_reconnect(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``channel``'s subscription is restored after a lost connection."""
        self._watchers.setdefault(channel, set()).add(callback)

    def unwatch_reconnect(self, channel: str, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` for ``channel`` (idempotent)."""
        watchers = self._watchers.get(channel)
        if watchers is not None:
            watchers.discard(callback)
            if not watchers:
                del self._watchers[channel]

    def _resubscribed(self, channel: str) -> None:
        for callback in tuple(self._watchers.get(channel, ())):
            try:
                callback()
            except Exception:
                logger.exception("reconnect watcher of channel %r failed", channel)

    def listener_count(self, channel: str) -> int:
        """How many in-process listeners ``channel`` has."""
        entry = self._channels.get(channel)
        return len(entry.listeners) if entry else 0

    async def add(self, channel: str, listener: Listener) -> None:
        """Add ``listener``; returns once the backend subscription is confirmed."""
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = _Channel()
        entry.listeners.append(listener)
        try:
            async with entry.lock():
                if not entry.subscribed and listener in entry.listeners:
                    await self.subscriber.subscribe(channel, self._deliverer(channel))
                    entry.subscribed = True
        except BaseException:
            await self._discard(channel, entry, listener)
            raise

    async def remove(self, channel: str, listener: Listener) -> None:
        """Remove ``listener``; the backend unsubscribes when the channel has none left."""
        entry = self._channels.get(channel)
        if entry is not None:
            await self._discard(channel, entry, listener)

    async def _discard(self, channel: str, entry: _Channel, listener: Listener) -> None:
        if listener in entry.listeners:
            entry.listeners.remove(listener)
        if entry.listeners:
            return
        async with entry.lock():
            if entry.listeners:
                return
            try:
                if entry.subscribed:
                    entry.subscribed = False
                    await self.subscriber.unsubscribe(channel)
            finally:
                if not entry.listeners and self._channels.get(channel) is entry:
                    del self._channels[channel]

    def _deliverer(self, channel: str) -> Callable[[str], None]:
        def deliver(message: str) -> None:
            entry = self._channels.get(channel)
            if entry is None:
                return
            for listener in tuple(entry.listeners):
                try:
                    listener(message)
                except Exception:
                    logger.exception("listener on channel %r failed", channel)

        return deliver
