"""Ownership of background work: nursery-scoped producers, lifespan, custom/redis-py clients."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio
import trio

from resumable_streams import (
    ResumableStream,
    create_resumable_stream_context,
    open_resumable_stream_context,
)
from resumable_streams.backends.memory import MemoryBroker, MemoryPublisher, MemorySubscriber
from resumable_streams.errors import ContextAlreadyRunningError
from tests.resumable.conftest import MakeCtx


async def numbers(n: int, delay: float = 0.0) -> AsyncIterator[str]:
    for i in range(n):
        if delay:
            await anyio.sleep(delay)
        yield f"{i},"


@pytest.mark.trio
async def test_nursery_scoped_producer_trio(autojump_clock: trio.abc.Clock) -> None:
    """A producer started into the caller's nursery lives exactly as long as that nursery."""
    async with open_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}") as ctx:
        async with trio.open_nursery() as nursery:
            stream = await ctx.resumable_stream(
                "s", lambda: numbers(5, delay=1.0), task_group=nursery
            )
            assert isinstance(stream, ResumableStream)
            assert await stream.__anext__() == "0,"
            await stream.aclose()
            assert await ctx.has_existing_stream("s") is True
        # the nursery waited for its producer, which finished the stream (fake clock: 5 s)
        assert await ctx.has_existing_stream("s") == "DONE"


@pytest.mark.trio
async def test_nursery_cancel_still_finishes_stream_trio(autojump_clock: trio.abc.Clock) -> None:
    async with open_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}") as ctx:
        async with trio.open_nursery() as nursery:
            await ctx.resumable_stream("s", lambda: numbers(10**6, delay=1.0), task_group=nursery)
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
        assert await ctx.has_existing_stream("s") == "DONE"


@pytest.mark.anyio
async def test_lifespan_runs_the_context() -> None:
    ctx = create_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}")
    states = [ctx.running]
    async with ctx.lifespan(object()):
        states.append(ctx.running)
        stream = await ctx.resumable_stream("s", lambda: numbers(3))
        assert isinstance(stream, ResumableStream)
        with anyio.fail_after(5):
            assert await stream.read_all() == "0,1,2,"
    states.append(ctx.running)
    assert states == [False, True, False]


@pytest.mark.anyio
async def test_aclose_cancels_producers_which_finish_their_streams() -> None:
    async with open_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}") as ctx:
        stream = await ctx.resumable_stream("s", lambda: numbers(10**9, delay=0.01))
        assert isinstance(stream, ResumableStream)
        await stream.__anext__()
        with anyio.fail_after(5):
            await ctx.aclose()
        assert await ctx.has_existing_stream("s") == "DONE"


@pytest.mark.anyio
async def test_custom_publisher_and_subscriber_plug_in() -> None:
    """Anything that implements the seed's Publisher/Subscriber protocols works."""
    broker = MemoryBroker()
    async with (
        open_resumable_stream_context(
            publisher=MemoryPublisher(broker), subscriber=MemorySubscriber(broker)
        ) as a,
        open_resumable_stream_context(
            publisher=MemoryPublisher(broker), subscriber=MemorySubscriber(broker)
        ) as b,
    ):
        stream = await a.resumable_stream("s", lambda: numbers(50, delay=0.001))
        resumed = await b.resume_existing_stream("s")
        assert isinstance(stream, ResumableStream)
        assert isinstance(resumed, ResumableStream)
        with anyio.fail_after(5):
            expected = "".join(f"{i}," for i in range(50))
            assert await stream.read_all() == expected
            assert await resumed.read_all() == expected


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_redis_py_clients_asyncio(redis_url: str, key_prefix: str) -> None:
    """An asyncio app can hand over its existing redis-py clients (wrapped automatically)."""
    pub = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    sub = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with (
            open_resumable_stream_context(
                publisher=pub, subscriber=sub, key_prefix=key_prefix
            ) as ctx,
            open_resumable_stream_context(redis_url=redis_url, key_prefix=key_prefix) as co,
        ):
            stream = await ctx.resumable_stream("s", lambda: numbers(100, delay=0.001))
            resumed = await co.resume_existing_stream("s")
            resumed2 = await ctx.resume_existing_stream("s", skip_characters=2)
            expected = "".join(f"{i}," for i in range(100))
            with anyio.fail_after(10):
                assert isinstance(stream, ResumableStream)
                assert await stream.read_all() == expected
                assert isinstance(resumed, ResumableStream)
                assert await resumed.read_all() == expected
                assert isinstance(resumed2, ResumableStream)
                assert await resumed2.read_all() == expected[2:]
            assert await ctx.resumable_stream("s", lambda: numbers(1)) is None
    finally:
        await pub.aclose()
        await sub.aclose()


@pytest.mark.anyio
async def test_context_cancelled_from_outside_finishes_streams(make_ctx: MakeCtx) -> None:
    """Cancelling the scope around the context (a timeout, a shutdown) cancels its
    producers, which still finish their streams through connections that are still open;
    a resumer in another context sees the end, and the cancellation stays a cancellation."""
    after_block: list[str] = []
    with anyio.fail_after(10):
        async with make_ctx() as observer:
            with anyio.CancelScope() as outer:
                async with make_ctx() as ctx:
                    stream = await ctx.resumable_stream("s", lambda: numbers(10**9, delay=0.01))
                    assert isinstance(stream, ResumableStream)
                    first = await stream.__anext__()
                    resumed = await observer.resume_existing_stream("s")
                    assert isinstance(resumed, ResumableStream)
                    outer.cancel()
                    await anyio.sleep_forever()
                after_block.append("ran")  # pragma: no cover - must not run
            assert outer.cancelled_caught
            assert after_block == []
            assert await observer.has_existing_stream("s") == "DONE"
            assert isinstance(resumed, ResumableStream)
            text = await resumed.read_all()  # ends: the producer sent DONE
            assert first == "0,"
            count = text.count(",")
            assert count >= 1
            assert text == "".join(f"{i}," for i in range(count))


@pytest.mark.anyio
async def test_entering_a_running_context_again_is_refused() -> None:
    ctx = open_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}")
    async with ctx:
        with pytest.raises(ContextAlreadyRunningError, match="already running"):
            await ctx.__aenter__()
        assert ctx.running
        stream = await ctx.resumable_stream("s", lambda: numbers(2))
        assert isinstance(stream, ResumableStream)
        assert await stream.read_all() == "0,1,"
    assert not ctx.running


@pytest.mark.anyio
async def test_connecting_can_be_cancelled() -> None:
    """A server that accepts TCP but never answers: the caller's timeout still works."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with anyio.fail_after(10), anyio.move_on_after(0.5) as scope:
            async with open_resumable_stream_context(redis_url=f"redis://127.0.0.1:{port}"):
                pytest.fail("connected to a silent server")  # pragma: no cover
        assert scope.cancelled_caught


@pytest.mark.anyio
async def test_an_error_while_being_cancelled_is_not_wrapped_in_a_group() -> None:
    async def block_whose_cleanup_fails() -> None:
        with anyio.move_on_after(0.1):
            async with open_resumable_stream_context(redis_url=f"memory://{uuid.uuid4()}"):
                try:
                    await anyio.sleep_forever()
                finally:
                    raise ValueError("cleanup failed")

    with pytest.raises(ValueError, match="cleanup failed"):
        await block_whose_cleanup_fails()


@pytest.mark.anyio
async def test_producer_in_an_enclosing_task_group_finishes_before_the_context_closes(
    make_ctx: MakeCtx,
) -> None:
    """``task_group=`` a group that outlives the context: the context waits for (then would
    cancel) such producers while its connections are still open, so the stream ends DONE."""

    async def slow() -> AsyncIterator[str]:
        for i in range(3):
            yield f"{i},"
            await anyio.sleep(0.05)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with make_ctx() as ctx:
                stream = await ctx.resumable_stream("s", slow, task_group=tg)
                assert isinstance(stream, ResumableStream)
            async with make_ctx() as observer:
                assert await observer.has_existing_stream("s") == "DONE"
            assert await stream.read_all() == "0,1,2,"


@pytest.mark.anyio
async def test_cancelled_after_the_source_ended_still_publishes_the_tail() -> None:
    """The source finished; its last batch (tail + DONE) is being published when the context
    is cancelled: the batch still goes out, so a resumer gets the whole text, promptly."""
    broker = MemoryBroker()
    slow = anyio.Event()

    class SlowPublisher(MemoryPublisher):
        async def publish_many(self, items: list[tuple[str, str]]) -> list[int]:
            if slow.is_set():
                await anyio.sleep(0.3)
            return await super().publish_many(items)

    gate = anyio.Event()

    async def source() -> AsyncIterator[str]:
        yield "a"
        await gate.wait()
        yield "b"
        yield "c"

    with anyio.fail_after(10):
        async with open_resumable_stream_context(
            publisher=MemoryPublisher(broker), subscriber=MemorySubscriber(broker)
        ) as observer:
            with anyio.CancelScope() as outer:
                async with open_resumable_stream_context(
                    publisher=SlowPublisher(broker), subscriber=MemorySubscriber(broker)
                ) as ctx:
                    await ctx.resumable_stream("s", source)
                    resumed = await observer.resume_existing_stream("s")
                    assert isinstance(resumed, ResumableStream)
                    assert await resumed.__anext__() == "a"
                    slow.set()
                    gate.set()
                    await anyio.sleep(0.1)  # the source is done; "bc" + DONE in flight
                    outer.cancel()
                    await anyio.sleep_forever()
            assert isinstance(resumed, ResumableStream)
            with anyio.fail_after(2):  # well before the 10 s DONE watchdog
                assert await resumed.read_all() == "bc"
