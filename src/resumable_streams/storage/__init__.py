"""Durable Streams storage engines behind one interface (:class:`StreamStorage`).

- :class:`MemoryStorage` - in-process, lost on exit (tests, development).
- :class:`SqliteStorage` - embedded and durable: stdlib sqlite3 in WAL mode, one writer
  thread with group commit; an append is acknowledged only after its commit.

Open an engine with ``async with open_storage(...)``: the context owns its background tasks
(the TTL sweeper, the writer thread).
"""

from __future__ import annotations

from .base import Notifier as Notifier
from .base import ReadResult as ReadResult
from .base import StreamStorage as StreamStorage
from .memory import MemoryStorage as MemoryStorage
from .open import open_storage as open_storage
from .sqlite import SqliteStorage as SqliteStorage

__all__ = [
    "MemoryStorage",
    "Notifier",
    "ReadResult",
    "SqliteStorage",
    "StreamStorage",
    "open_storage",
]
