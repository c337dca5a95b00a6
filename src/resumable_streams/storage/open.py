"""``open_storage``: build an engine by name and own its background tasks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio

from .._core.groups import unwrap_single
from ..errors import ConfigurationError
from .base import StreamStorage
from .memory import MemoryStorage

__all__ = ["StorageKind", "open_storage"]

logger = logging.getLogger("resumable_streams.storage")

StorageKind = Literal["memory", "sqlite", "redis"]


async def _sweep_forever(storage: StreamStorage, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        try:
            removed = await storage.sweep(now=time.time())
        except Exception:  # the sweeper must outlive a transient storage error
            logger.exception("TTL sweep failed")
        else:
            if removed:
                logger.debug("TTL sweep removed %d streams", removed)


@asynccontextmanager
async def open_storage(
    kind: StorageKind = "memory",
    *,
    data_dir: str | Path | None = None,
    redis_url: str | None = None,
    sweep_interval: float = 1.0,
) -> AsyncIterator[StreamStorage]:
    """Open a storage engine; the context owns its sweeper (and writer thread, etc.).

    ``kind`` is ``"memory"``, ``"sqlite"`` (needs ``data_dir``) or ``"redis"`` (needs
    ``redis_url``: ``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://host:port``
    for a Redis Cluster). Expired streams are also removed lazily on access; the sweeper (every
    ``sweep_interval`` seconds, ``inf`` to disable) reclaims the ones nobody touches.
    """
    engine = _open_engine(kind, data_dir=data_dir, redis_url=redis_url)
    with unwrap_single():
        async with engine as storage, anyio.create_task_group() as tg:
            if math.isfinite(sweep_interval):
                tg.start_soon(_sweep_forever, storage, sweep_interval)
            try:
                yield storage
            finally:
                tg.cancel_scope.cancel()


@asynccontextmanager
async def _open_engine(
    kind: StorageKind, *, data_dir: str | Path | None, redis_url: str | None
) -> AsyncIterator[StreamStorage]:
    if kind == "memory":
        yield MemoryStorage()
    elif kind == "sqlite":
        from .sqlite import SqliteStorage

        if data_dir is None:
            raise ConfigurationError("sqlite storage needs data_dir")
        async with SqliteStorage.open(data_dir) as sqlite_storage:
            yield sqlite_storage
    elif kind == "redis":
        from .redis import RedisStorage

        if not redis_url:
            raise ConfigurationError("redis storage needs redis_url")
        async with RedisStorage.open(redis_url) as redis_storage:
            yield redis_storage
    else:
        raise ConfigurationError(f"unknown or unavailable storage {kind!r}")
