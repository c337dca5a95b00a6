"""One storage suite, run against every engine (the ``storage`` fixture is parametrized)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from resumable_streams._protocol.durable.model import StreamMeta
from resumable_streams._protocol.durable.offsets import ZERO, Offset
from resumable_streams._protocol.durable.parsing import ProducerHeaders
from resumable_streams._protocol.durable.planning import AppendRequest, CreateRequest, Rejected
from resumable_streams.storage import StreamStorage, open_storage
from resumable_streams.storage.redis import RedisStorage
from resumable_streams.testing import RedisCluster

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real 3-node Redis Cluster on loopback, for the storage suite's cluster run."""
    with RedisCluster(3) as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StreamStorage]:
    """Every engine; redis gets a key prefix of its own (on one server, and on a cluster)."""
    if request.param.startswith("redis"):
        if request.param == "redis":
            url = request.getfixturevalue("redis_server").url
        else:
            url = request.getfixturevalue("redis_cluster").url
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        async with RedisStorage.open(url, prefix=prefix) as opened:
            yield opened
        return
    async with open_storage(request.param, data_dir=tmp_path / "data") as other:
        yield other


NOW = 1_000_000.0


async def _read_all(storage: StreamStorage, name: str, now: float = NOW) -> bytes:
    result = await storage.read(name, ZERO, now=now, max_bytes=1 << 30)
    return b"".join(r.data for r in result.records)


def _text(body: bytes, **kw: object) -> AppendRequest:
    return AppendRequest("text/plain", body, **kw)  # type: ignore[arg-type]


async def test_create_append_read(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        plan = await storage.create("s", CreateRequest("text/plain", body=b"ab"), now=NOW)
        assert plan.created
        assert plan.meta.tail == Offset(0, 2)
        again = await storage.create("s", CreateRequest("text/plain"), now=NOW)
        assert not again.created
        out = await storage.append("s", _text(b"cde"), now=NOW)
        assert out.status == 204
        assert out.headers["Stream-Next-Offset"] == str(Offset(0, 5))
        assert await _read_all(storage, "s") == b"abcde"
        tail = await storage.read("s", Offset(0, 2), now=NOW, max_bytes=100)
        assert [r.data for r in tail.records] == [b"cde"]
        assert tail.up_to_date
        now_read = await storage.read("s", "now", now=NOW, max_bytes=100)
        assert not now_read.records
        assert now_read.next_offset == Offset(0, 5)


async def test_read_is_bounded_but_returns_whole_appends(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        await storage.create("s", CreateRequest("application/octet-stream"), now=NOW)
        for _ in range(5):
            await storage.append("s", AppendRequest("application/octet-stream", b"x" * 10), now=NOW)
        first = await storage.read("s", ZERO, now=NOW, max_bytes=25)
        assert len(first.records) == 2
        assert not first.up_to_date
        one = await storage.read("s", ZERO, now=NOW, max_bytes=1)
        assert len(one.records) == 1


async def test_missing_and_deleted(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        for call in (
            storage.head("nope", now=NOW),
            storage.append("nope", _text(b"x"), now=NOW),
            storage.delete("nope", now=NOW),
        ):
            with pytest.raises(Rejected) as info:
                await call
            assert info.value.status == 404
        await storage.create("s", CreateRequest("text/plain", body=b"old"), now=NOW)
        await storage.delete("s", now=NOW)
        await storage.create("s", CreateRequest("text/plain", body=b"new"), now=NOW)
        assert await _read_all(storage, "s") == b"new"


async def test_producer_dedup_and_fencing(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        await storage.create("s", CreateRequest("text/plain"), now=NOW)

        async def send(epoch: int, seq: int, body: bytes = b"m") -> int:
            req = _text(body, producer=ProducerHeaders("p", epoch, seq))
            try:
                return (await storage.append("s", req, now=NOW)).status
            except Rejected as exc:
                return exc.status

        assert [await send(0, 0, b"a"), await send(0, 1, b"b"), await send(0, 1, b"b")] == [
            200,
            200,
            204,
        ]
        assert await send(0, 3) == 409
        assert await send(1, 0, b"c") == 200
        assert await send(0, 2) == 403
        assert await _read_all(storage, "s") == b"abc"


async def test_concurrent_appends_never_interleave(storage: StreamStorage) -> None:
    with anyio.fail_after(30):
        await storage.create("s", CreateRequest("text/plain"), now=NOW)

        async def writer(w: int) -> None:
            for i in range(20):
                await storage.append("s", _text(f"<{w}:{i}>".encode()), now=NOW)

        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(writer, w)
        data = (await _read_all(storage, "s")).decode()
        tokens = data[1:-1].split("><")
        assert sorted(tokens) == sorted(f"{w}:{i}" for w in range(8) for i in range(20))
        for w in range(8):  # each writer's appends in its own order
            mine = [int(t.split(":")[1]) for t in tokens if t.startswith(f"{w}:")]
            assert mine == sorted(mine)


async def test_close_then_append_rejected(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        await storage.create("s", CreateRequest("text/plain"), now=NOW)
        closed = await storage.append("s", _text(b"end", close=True), now=NOW)
        assert closed.headers["Stream-Closed"] == "true"
        with pytest.raises(Rejected) as info:
            await storage.append("s", _text(b"more"), now=NOW)
        assert info.value.status == 409
        again = await storage.append("s", AppendRequest(None, b"", close=True), now=NOW)
        assert again.status == 204


async def test_ttl_expiry_and_sweep(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        await storage.create("ttl", CreateRequest("text/plain", ttl=10), now=NOW)
        await storage.read("ttl", ZERO, now=NOW + 8, max_bytes=10)  # slides the window
        await storage.sweep(now=NOW + 8)  # queued after the touch (sqlite writes are FIFO)
        meta = await storage.head("ttl", now=NOW + 15)
        assert isinstance(meta, StreamMeta)
        with pytest.raises(Rejected):
            await storage.head("ttl", now=NOW + 19)
        await storage.create("gone", CreateRequest("text/plain", ttl=1), now=NOW)
        waiter = storage.notifier.event("gone")  # a live reader of "gone"
        assert await storage.sweep(now=NOW + 100) >= 1
        await waiter.wait()  # woken by the sweep, as by a DELETE (Redis: through pub/sub)
        created = await storage.create("gone", CreateRequest("text/plain"), now=NOW + 100)
        assert created.created


async def test_fork_copy_soft_delete_and_cascade(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        src = await storage.create("src", CreateRequest("text/plain", body=b"hello"), now=NOW)
        await storage.append("src", _text(b" world"), now=NOW)
        fork = await storage.create(
            "fork",
            CreateRequest(None, forked_from="src", fork_offset=src.meta.tail),
            now=NOW,
        )
        assert fork.meta.content_type == "text/plain"
        sub = await storage.create(
            "sub",
            CreateRequest(None, forked_from="src", fork_offset=ZERO, fork_sub_offset=3),
            now=NOW,
        )
        assert sub.meta.tail == Offset(0, 3)
        assert await _read_all(storage, "sub") == b"hel"
        await storage.append("fork", _text(b"!"), now=NOW)
        assert await _read_all(storage, "fork") == b"hello!"
        await storage.delete("src", now=NOW)  # soft: forks remain
        with pytest.raises(Rejected) as info:
            await storage.head("src", now=NOW)
        assert info.value.status == 410
        with pytest.raises(Rejected) as info:
            await storage.create("src", CreateRequest("text/plain"), now=NOW)
        assert info.value.status == 409
        await storage.delete("fork", now=NOW)
        await storage.delete("sub", now=NOW)  # last fork: source is collected
        with pytest.raises(Rejected) as info:
            await storage.head("src", now=NOW)
        assert info.value.status == 404


async def test_append_wakes_waiter_without_polling(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        await storage.create("s", CreateRequest("text/plain"), now=NOW)
        event = storage.notifier.event("s")
        async with anyio.create_task_group() as tg:

            async def later() -> None:
                await storage.append("s", _text(b"x"), now=NOW)

            tg.start_soon(later)
            await event.wait()
        assert await _read_all(storage, "s") == b"x"


async def test_list_streams_shows_live_streams_sorted(storage: StreamStorage) -> None:
    with anyio.fail_after(10):
        for name in ("b", "a/x", "c", "gone", "ttl"):
            await storage.create(name, CreateRequest("text/plain"), now=NOW)
        await storage.create("short", CreateRequest("text/plain", ttl=5), now=NOW)
        await storage.delete("gone", now=NOW)
        names = [meta.name for meta in await storage.list_streams(now=NOW + 10)]
        assert names == ["a/x", "b", "c", "ttl"]  # not deleted, not expired
        limited = await storage.list_streams(now=NOW + 10, limit=2)
        assert [meta.name for meta in limited] == ["a/x", "b"]
