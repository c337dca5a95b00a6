"""Pub/sub + key-value backends for resumable streams.

A backend is a :class:`Publisher` and a :class:`Subscriber` (the seed's protocols, so custom
clients plug in). Shipped: :mod:`.memory` (in-process, same semantics), :mod:`.coredis`
(default, anyio-native, trio and asyncio) and :mod:`.redis_py` (adapters for an existing
``redis.asyncio`` client, asyncio only).
"""

from __future__ import annotations

from .base import MessageCallback as MessageCallback
from .base import Publisher as Publisher
from .base import Subscriber as Subscriber

__all__ = ["MessageCallback", "Publisher", "Subscriber"]
