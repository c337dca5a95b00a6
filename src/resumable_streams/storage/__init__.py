"""Durable Streams storage engines behind one interface (:class:`StreamStorage`).

- :class:`MemoryStorage` - in-process, lost on exit (tests, development).
- :class:`SqliteStorage` - embedded and durable: stdlib sqlite3 in WAL mode, one writer
  thread with group commit; an append is acknowledged only after its commit.
- :class:`RedisStorage` - shared by many server processes through one Redis or a Redis
  Cluster (``redis+cluster://``); live readers woken through pub/sub.

Open an engine with ``async with open_storage(...)``: the context owns its background tasks
(the TTL sweeper, the writer thread).
"""

from __future__ import annotations

from .base import Notifier as Notifier
from .base import ReadResult as ReadResult
from .base import StreamStorage as StreamStorage
from .memory import MemoryStorage as MemoryStorage
from .open import open_storage as open_storage
from .redis import RedisStorage as RedisStorage
from .sqlite import SqliteStorage as SqliteStorage

__all__ = [
    "MemoryStorage",
    "Notifier",
    "ReadResult",
    "RedisStorage",
    "SqliteStorage",
    "StreamStorage",
    "open_storage",
]
