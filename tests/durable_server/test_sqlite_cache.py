"""The sqlite writer's metadata cache never serves stale metadata."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from resumable_streams._protocol.durable.offsets import ZERO
from resumable_streams._protocol.durable.planning import AppendRequest, CreateRequest, Rejected
from resumable_streams.storage.sqlite import SqliteStorage

pytestmark = pytest.mark.anyio

NOW = 1_000_000.0


async def _read_all(storage: SqliteStorage, name: str, now: float = NOW) -> bytes:
    result = await storage.read(name, ZERO, now=now, max_bytes=1 << 30, touch=False)
    return b"".join(r.data for r in result.records)


async def test_another_connection_committing_invalidates_the_cache(tmp_path: Path) -> None:
    """Two engines on one file (as two processes would be): appends interleave correctly."""
    with anyio.fail_after(20):
        async with SqliteStorage.open(tmp_path) as a, SqliteStorage.open(tmp_path) as b:
            await a.create("s", CreateRequest("text/plain"), now=NOW)
            expected = b""
            for i in range(6):
                engine = a if i % 2 == 0 else b
                plan = await engine.append("s", AppendRequest("text/plain", b"%d" % i), now=NOW)
                expected += b"%d" % i
                assert plan.meta is not None
                assert plan.meta.tail.position == len(expected)
            assert await _read_all(a, "s") == expected
            assert await _read_all(b, "s") == expected


async def test_a_rolled_back_job_leaves_no_stale_entry(tmp_path: Path) -> None:
    """An append that finds the stream expired drops it, then fails (404): rolled back."""
    with anyio.fail_after(20):
        async with SqliteStorage.open(tmp_path) as storage:
            await storage.create("t", CreateRequest("text/plain", ttl=10), now=NOW)
            await storage.append("t", AppendRequest("text/plain", b"a"), now=NOW)
            with pytest.raises(Rejected) as info:
                await storage.append("t", AppendRequest("text/plain", b"b"), now=NOW + 20)
            assert info.value.status == 404
            # the expiry's drop was rolled back with the job: at an earlier time the stream is
            # still there, with its data, and appends continue at the right offset
            plan = await storage.append("t", AppendRequest("text/plain", b"c"), now=NOW + 1)
            assert plan.meta is not None
            assert plan.meta.tail.position == 2
            assert await _read_all(storage, "t", now=NOW + 1) == b"ac"


async def test_the_tail_is_recovered_from_the_records(tmp_path: Path) -> None:
    """Appends that change only the tail skip the metadata row; every reader still sees it.

    Checked through the read-only connections (head, read, list_streams) and a fresh engine on
    the same file (what a restart sees), with appends batched concurrently.
    """
    with anyio.fail_after(20):
        async with SqliteStorage.open(tmp_path) as storage:
            await storage.create("s", CreateRequest("text/plain"), now=NOW)
            async with anyio.create_task_group() as tg:
                for _i in range(20):
                    tg.start_soon(
                        lambda: storage.append("s", AppendRequest("text/plain", b"xy"), now=NOW)
                    )
            assert (await storage.head("s", now=NOW)).tail.position == 40
            result = await storage.read("s", ZERO, now=NOW, max_bytes=1 << 30)
            assert result.meta.tail.position == 40
            assert result.up_to_date
            (listed,) = await storage.list_streams(now=NOW)
            assert listed.tail.position == 40
            closed = await storage.append(
                "s", AppendRequest("text/plain", b"z", close=True), now=NOW
            )
            assert closed.meta is not None
            assert closed.meta.closed
        async with SqliteStorage.open(tmp_path) as reopened:
            meta = await reopened.head("s", now=NOW)
            assert meta.tail.position == 41
            assert meta.closed
            assert await _read_all(reopened, "s") == b"xy" * 20 + b"z"


async def test_an_append_rejected_after_an_expiry_in_a_batch(tmp_path: Path) -> None:
    """A batch in which one append expires its stream and is refused is redone safely."""
    with anyio.fail_after(20):
        async with SqliteStorage.open(tmp_path) as storage:
            await storage.create("t", CreateRequest("text/plain", ttl=10), now=NOW)
            await storage.create("u", CreateRequest("text/plain"), now=NOW)
            outcomes: list[int] = []

            async def append(name: str, now: float) -> None:
                try:
                    await storage.append(name, AppendRequest("text/plain", b"a"), now=now)
                    outcomes.append(200)
                except Rejected as exc:
                    outcomes.append(exc.status)

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(append, "u", NOW)
                    if i == 5:
                        tg.start_soon(append, "t", NOW + 20)
            assert sorted(outcomes) == [200] * 10 + [404]
            assert await _read_all(storage, "u") == b"a" * 10
            # the refused append's expiry was rolled back with it
            assert (await storage.head("t", now=NOW + 1)).tail == ZERO
