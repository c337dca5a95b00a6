from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from resumable_streams import (
    AckTimeoutError,
    ConfigurationError,
    ResumableStream,
    create_resumable_stream_context,
    open_resumable_stream_context,
)
from resumable_streams.backends.memory import MemoryBroker, MemoryPublisher, MemorySubscriber
from resumable_streams.errors import (
    ContextNotRunningError,
    InvalidChunkError,
    ReadCancelledError,
)

from .conftest import MakeCtx, chunks_source, gated

pytestmark = pytest.mark.anyio

CHUNKS = ["1\n", "2\n", "3\n", "4\n", "5\n"]
TEXT = "".join(CHUNKS)


async def read_all(stream: ResumableStream | str | None) -> str:
    assert isinstance(stream, ResumableStream), stream
    with anyio.fail_after(10):
        return await stream.read_all()


async def test_acts_like_a_normal_stream(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        stream = await ctx.resumable_stream("s", chunks_source(CHUNKS))
        assert await read_all(stream) == TEXT
        assert await ctx.has_existing_stream("s") == "DONE"


async def test_has_existing_stream_lifecycle(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        assert await ctx.has_existing_stream("s") is None
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "a"
            await gate.wait()
            yield "b"

        stream = await ctx.resumable_stream("s", gen)
        assert await ctx.has_existing_stream("s") is True
        gate.set()
        assert await read_all(stream) == "ab"
        assert await ctx.has_existing_stream("s") == "DONE"
        assert await ctx.resumable_stream("s", gen) is None
        assert await ctx.resume_existing_stream("s") is None
        assert await ctx.resume_existing_stream("other") == "NOT_FOUND"


async def test_resume_in_progress_and_done(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "1\n"
            yield "2\n"
            await gate.wait()
            yield "3\n"

        producer = await ctx.resumable_stream("s", gen)
        assert producer is not None
        assert await producer.__anext__() == "1\n"
        assert await producer.__anext__() == "2\n"
        resumer = await ctx.resumable_stream("s", gen)
        skipped = await ctx.resume_existing_stream("s", skip_characters=2)
        gate.set()
        assert await read_all(resumer) == "1\n2\n3\n"
        assert await read_all(skipped) == "2\n3\n"
        assert await read_all(producer) == "3\n"


@pytest.mark.parametrize(("skip", "expected"), [(0, TEXT), (2, TEXT[2:]), (5, TEXT[5:]), (99, "")])
async def test_skip_characters(make_ctx: MakeCtx, skip: int, expected: str) -> None:
    async with make_ctx() as ctx:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            for chunk in CHUNKS:
                yield chunk
            await gate.wait()

        producer = await ctx.create_new_resumable_stream("s", gen)
        assert producer is not None
        with anyio.fail_after(5):
            while producer.position < len(TEXT):
                await producer.__anext__()
        resumer = await ctx.resume_existing_stream("s", skip_characters=skip)
        gate.set()
        assert await read_all(resumer) == expected
        await producer.aclose()


async def test_many_resumers_join_while_chunks_flow(make_ctx: MakeCtx) -> None:
    """No chunk is lost or duplicated for resumers joining mid-stream (PyPI port bug)."""
    chunks = [f"<{i}>" for i in range(300)]
    async with make_ctx() as ctx:
        producer = await ctx.resumable_stream("s", chunks_source(chunks, delay=0.001))
        assert producer is not None
        results: list[str] = []

        async def join_and_read() -> None:
            stream = await ctx.resume_existing_stream("s")
            if stream is None:  # finished before we joined: nothing to check
                return
            assert not isinstance(stream, str)
            results.append(await read_all(stream))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(join_and_read)
                await anyio.sleep(0.02)
            assert await read_all(producer) == "".join(chunks)
        assert results
        assert all(r == "".join(chunks) for r in results)


async def test_two_contexts_share_streams(make_ctx: MakeCtx) -> None:
    """Two 'instances' (contexts) on one backend: produce on one, resume on the other."""
    async with make_ctx() as a, make_ctx() as b:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "hello "
            await gate.wait()
            yield "world"

        producer = await a.resumable_stream("s", gen)
        assert producer is not None
        assert await producer.__anext__() == "hello "
        resumer = await b.resumable_stream("s", gen)
        gate.set()
        assert await read_all(resumer) == "hello world"
        await producer.aclose()


async def test_source_error_finalizes_stream(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "partial"
            await gate.wait()
            raise RuntimeError("boom")

        producer = await ctx.resumable_stream("s", gen)
        assert producer is not None
        resumer = await ctx.resume_existing_stream("s")
        gate.set()
        assert await read_all(resumer) == "partial"
        assert await producer.__anext__() == "partial"
        with pytest.raises(RuntimeError, match="boom"):
            await producer.__anext__()
        assert await ctx.has_existing_stream("s") == "DONE"


async def test_non_str_chunk_is_an_error_not_a_crash(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:

        async def gen() -> AsyncIterator[str]:
            yield "ok"
            yield 42  # type: ignore[misc]

        producer = await ctx.resumable_stream("s", gen)
        assert producer is not None
        assert await producer.__anext__() == "ok"
        with pytest.raises(InvalidChunkError, match="int"):
            await producer.__anext__()
        assert await ctx.has_existing_stream("s") == "DONE"


async def test_consumer_stops_early_producer_finishes(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        producer = await ctx.resumable_stream("s", chunks_source(CHUNKS, delay=0.01))
        assert producer is not None
        async with producer:
            assert await producer.__anext__() == "1\n"
        with anyio.fail_after(5):
            while await ctx.has_existing_stream("s") != "DONE":
                await anyio.sleep(0.01)


async def test_cancelled_resumer_frees_subscription_and_loses_nothing(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "ab"
            await gate.wait()
            yield "cd"

        producer = await ctx.resumable_stream("s", gen)
        assert producer is not None
        resumer = await ctx.resume_existing_stream("s")
        assert isinstance(resumer, ResumableStream)
        assert await resumer.__anext__() == "ab"
        channel = resumer._channel  # type: ignore[attr-defined]
        assert ctx.mux.listener_count(channel) == 1
        with anyio.move_on_after(0.05):
            await resumer.__anext__()
        assert resumer.closed
        assert ctx.mux.listener_count(channel) == 0  # freed at once
        # Reading on is an error that says where to resume - not a silent end.
        with pytest.raises(ReadCancelledError, match="skip_characters=2") as info:
            await resumer.__anext__()
        assert info.value.position == 2
        again = await ctx.resume_existing_stream("s", skip_characters=resumer.position)
        gate.set()
        assert await read_all(again) == "cd"
        assert await read_all(producer) == "abcd"


async def test_cancel_stream_stops_producer(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx, make_ctx() as other:
        started = anyio.Event()

        async def forever() -> AsyncIterator[str]:
            yield "x"
            started.set()
            await anyio.sleep_forever()
            yield "never"

        producer = await ctx.resumable_stream("s", forever)
        resumer = await other.resume_existing_stream("s")
        await started.wait()
        assert await other.cancel_stream("s") >= 1
        assert await read_all(resumer) == "x"
        assert await read_all(producer) == "x"
        assert await ctx.has_existing_stream("s") == "DONE"


async def test_dead_producer_ack_timeout(make_ctx: MakeCtx) -> None:
    async with make_ctx(ack_timeout=0.2) as ctx:
        await ctx.publisher.set(ctx.keys.sentinel("ghost"), "1", ex=60)
        with anyio.fail_after(5), pytest.raises(AckTimeoutError, match="ghost"):
            await ctx.resume_existing_stream("ghost")
        # and DONE during the wait -> None
        await ctx.publisher.set(ctx.keys.sentinel("ghost2"), "DONE", ex=60)
        assert await ctx.resume_existing_stream("ghost2") is None


async def test_lost_done_message_watchdog(make_ctx: MakeCtx) -> None:
    """A resumer whose DONE message never arrives closes after two DONE sentinel reads."""
    async with make_ctx(done_watchdog_interval=0.05) as ctx:
        gate = anyio.Event()

        async def gen() -> AsyncIterator[str]:
            yield "a"
            await gate.wait()

        producer = await ctx.resumable_stream("s", gen)
        resumer = await ctx.resume_existing_stream("s")
        assert isinstance(resumer, ResumableStream)
        assert await resumer.__anext__() == "a"
        # Simulate a lost DONE: detach the resumer's channel, then let the producer finish.
        await ctx.mux.remove(resumer._channel, resumer._inbox.put)  # type: ignore[attr-defined]
        gate.set()
        assert await read_all(producer) == "a"
        assert await read_all(resumer) == ""


async def test_bad_arguments_are_clear(make_ctx: MakeCtx) -> None:
    async with make_ctx() as ctx:
        with pytest.raises(ConfigurationError, match="stream_id"):
            await ctx.resumable_stream("", chunks_source([]))
        with pytest.raises(ConfigurationError, match="control"):
            await ctx.resumable_stream("a\nb", chunks_source([]))
        with pytest.raises(ConfigurationError, match="-1"):
            await ctx.resume_existing_stream("s", skip_characters=-1)
        with pytest.raises(ConfigurationError, match="make_stream"):
            await ctx.resumable_stream("s", "not callable")  # type: ignore[arg-type]


async def test_not_running_and_missing_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("KV_URL", raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        create_resumable_stream_context()
    ctx = create_resumable_stream_context(redis_url="memory://")
    with pytest.raises(ContextNotRunningError, match="lifespan"):
        await ctx.has_existing_stream("s")
    monkeypatch.setenv("KV_URL", "memory://kv")
    async with create_resumable_stream_context() as kv:
        assert await kv.has_existing_stream("s") is None


async def test_an_abandoned_resumer_frees_its_subscription(make_ctx: MakeCtx) -> None:
    """A resumed iterator dropped without aclose(): collected, it warns and unsubscribes."""
    async with make_ctx() as ctx:
        gate = anyio.Event()
        producer = await ctx.resumable_stream("s", lambda: gated(["a"], ["b"], gate))
        assert isinstance(producer, ResumableStream)
        resumer = await ctx.resume_existing_stream("s")
        assert isinstance(resumer, ResumableStream)
        channel = resumer._channel  # type: ignore[attr-defined]
        assert await resumer.__anext__() == "a"
        with pytest.warns(ResourceWarning, match="was not closed"):
            del resumer  # no reference cycle holds it: collected here
        with anyio.fail_after(5):
            while ctx.mux.listener_count(channel):
                await anyio.sleep(0.01)
        gate.set()
        assert await read_all(producer) == "ab"


class RecordingBackend(MemoryPublisher, MemorySubscriber):
    """A memory backend that records the order of SET / INCR / SUBSCRIBE."""

    def __init__(self, broker: MemoryBroker) -> None:
        MemoryPublisher.__init__(self, broker)
        MemorySubscriber.__init__(self, broker)
        self.calls: list[str] = []

    async def set(self, key: str, value: str, *, ex: int | None = None) -> None:
        self.calls.append(f"SET {key.rsplit(':', 2)[-2]}")
        await MemoryPublisher.set(self, key, value, ex=ex)

    async def incr(self, key: str) -> int:
        self.calls.append(f"INCR {key.rsplit(':', 2)[-2]}")
        return await MemoryPublisher.incr(self, key)

    async def subscribe(self, channel: str, callback: Any) -> None:
        self.calls.append(f"SUBSCRIBE {channel.rsplit(':', 2)[-2]}")
        await MemorySubscriber.subscribe(self, channel, callback)


@pytest.mark.parametrize("api", ["idempotent", "explicit"])
async def test_request_channel_is_subscribed_before_the_sentinel_is_set(api: str) -> None:
    """Upstream #41: a resumer that sees the sentinel must find the producer listening."""
    backend = RecordingBackend(MemoryBroker())
    async with open_resumable_stream_context(publisher=backend, subscriber=backend) as ctx:
        if api == "idempotent":
            stream = await ctx.resumable_stream("s", chunks_source(CHUNKS))
        else:
            stream = await ctx.create_new_resumable_stream("s", chunks_source(CHUNKS))
        assert await read_all(stream) == TEXT
    first_sentinel_write = next(
        i for i, call in enumerate(backend.calls) if call in ("SET sentinel", "INCR sentinel")
    )
    assert "SUBSCRIBE request" in backend.calls[:first_sentinel_write]
