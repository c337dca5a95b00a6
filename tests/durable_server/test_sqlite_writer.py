"""The sqlite writer's waits: cancelled callers neither lose nor duplicate a write."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from resumable_streams._protocol.durable.offsets import ZERO
from resumable_streams._protocol.durable.planning import AppendRequest, CreateRequest
from resumable_streams.storage.sqlite import SqliteStorage

pytestmark = pytest.mark.anyio

NOW = 1_000_000.0
TOKEN = re.compile(rb"<(\d+)>")


async def test_cancelled_appends_are_whole_and_written_once(tmp_path: Path) -> None:
    """Appends cancelled before, while and after they are queued: each is there at most once,
    whole, and every one that returned is there; the engine keeps working and closes."""
    acked: list[int] = []

    async def append(storage: SqliteStorage, i: int) -> None:
        await storage.append("s", AppendRequest("text/plain", b"<%d>" % i), now=NOW)
        acked.append(i)

    with anyio.fail_after(30):
        async with SqliteStorage.open(tmp_path) as storage:
            await storage.create("s", CreateRequest("text/plain"), now=NOW)
            i = 0
            for round_ in range(40):
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        for _ in range(8):
                            tg.start_soon(append, storage, i)
                            i += 1
                        for _ in range(round_ % 5):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()
            await append(storage, i)  # still works after all that
            result = await storage.read("s", ZERO, now=NOW, max_bytes=1 << 30, touch=False)
            data = b"".join(r.data for r in result.records)
            assert result.meta.tail.position == len(data)
        async with SqliteStorage.open(tmp_path) as reopened:
            result = await reopened.read("s", ZERO, now=NOW, max_bytes=1 << 30, touch=False)
            assert b"".join(r.data for r in result.records) == data
    stored = [int(m) for m in TOKEN.findall(data)]
    assert b"".join(b"<%d>" % n for n in stored) == data, "torn or foreign bytes"
    assert len(stored) == len(set(stored)), "an append was written twice"
    assert set(acked) <= set(stored), "an answered append is missing"
    assert i in stored
