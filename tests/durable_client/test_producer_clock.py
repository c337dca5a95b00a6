"""The producer's batching and pipelining under trio's autojump clock (virtual time).

A tiny in-test server (httpx2.MockTransport) implements the producer rules of PROTOCOL.md
§5.2.1, and can hold a request back to make pipelined batches arrive out of order.
"""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
import trio
import trio.testing

from resumable_streams.durable import IdempotentAppendResult, IdempotentProducer
from resumable_streams.errors import DurableStreamClientError

URL = "http://ds.test/v1/stream/s"


class FakeServer:
    """Producer state of one stream; ``delay`` holds back requests with that seq."""

    def __init__(self, delay: dict[int, float] | None = None) -> None:
        self.messages: list[object] = []
        self.last_seq = -1
        self.requests: list[tuple[int, int]] = []
        self.delay = delay or {}

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        epoch = int(request.headers["Producer-Epoch"])
        seq = int(request.headers["Producer-Seq"])
        self.requests.append((epoch, seq))
        if seq in self.delay:
            await trio.sleep(self.delay.pop(seq))
        if seq <= self.last_seq:
            return httpx2.Response(204, headers={"Producer-Seq": str(self.last_seq)})
        if seq != self.last_seq + 1:
            return httpx2.Response(
                409,
                headers={
                    "Producer-Expected-Seq": str(self.last_seq + 1),
                    "Producer-Received-Seq": str(seq),
                },
                content=b"Producer sequence gap",
            )
        self.last_seq = seq
        self.messages.extend(json.loads(request.content))
        return httpx2.Response(200, headers={"Stream-Next-Offset": str(len(self.messages))})


@pytest.mark.trio
async def test_linger_collects_appends_into_one_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    async with (
        client,
        IdempotentProducer(
            URL, "p", client=client, linger_ms=1000, content_type="application/json"
        ) as producer,
    ):
        for i in range(5):
            producer.append_nowait({"i": i})
        await trio.sleep(0.5)
        assert server.requests == []  # still lingering
        await trio.sleep(1)
        assert server.requests == [(0, 0)]
        assert producer.state.next_seq == 1
    assert server.messages == [{"i": i} for i in range(5)]


@pytest.mark.trio
async def test_full_batches_go_at_once_and_reordering_is_repaired(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(delay={0: 5.0})  # seq 0 arrives after seq 1 and 2
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    async with (
        client,
        IdempotentProducer(
            URL,
            "p",
            client=client,
            linger_ms=60_000,
            max_batch_bytes=8,
            max_in_flight=3,
            content_type="application/json",
        ) as producer,
    ):
        for i in range(3):
            producer.append_nowait({"n": i})  # 7 bytes each: one batch apiece
        with trio.fail_after(30):
            await producer.flush()
    assert server.messages == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert server.requests[:3] == [(0, 0), (0, 1), (0, 2)]
    assert len(server.requests) == 5  # seq 1 and 2 were resent after seq 0 landed


@pytest.mark.trio
async def test_cancelling_the_owner_leaves_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(delay={0: 1000.0})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        with trio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                producer = IdempotentProducer(
                    URL, "p", client=client, task_group=tg, content_type="application/json"
                )
                producer.append_nowait({"stuck": True})
                await producer.flush()  # never returns: the request is held for 1000 s
    assert producer.in_flight_count == 0


def msg(k: str) -> dict[str, str]:
    """A 12-byte JSON message: {"v":"kkkk"}."""
    return {"v": k * 4}


@pytest.mark.trio
async def test_buffered_bytes_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """Past ``max_buffered_bytes`` unsent, append_nowait refuses and append() waits."""
    server = FakeServer(delay={0: 5.0})  # the first batch takes 5 s
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client,
        IdempotentProducer(
            URL,
            "p",
            client=client,
            linger_ms=0,
            max_buffered_bytes=36,
            content_type="application/json",
        ) as producer,
    ):
        for k in "abc":
            producer.append_nowait(msg(k))
        with pytest.raises(anyio.WouldBlock, match="max_buffered_bytes=36"):
            producer.append_nowait(msg("x"))
        start = trio.current_time()
        with trio.fail_after(30):
            result = await producer.append(msg("d"))  # waits for room, then for durability
        assert trio.current_time() - start >= 5.0
        assert not result.duplicate
        producer.append_nowait(msg("e"))  # room again
        await producer.flush()
    assert server.messages == [msg(k) for k in "abcde"]


@pytest.mark.trio
async def test_bounded_buffer_without_background_task_drains_in_append(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(
            URL, "p", client=client, max_buffered_bytes=30, content_type="application/json"
        )
        producer.append_nowait(msg("a"))
        producer.append_nowait(msg("b"))
        with pytest.raises(anyio.WouldBlock):
            producer.append_nowait(msg("c"))
        with trio.fail_after(30):
            await producer.append(msg("c"))  # sends the held two itself, then its own
        await producer.close()
    assert server.messages == [msg(k) for k in "abc"]
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        IdempotentProducer(URL, "p", client=client, max_buffered_bytes=0)


class ClosingServer(FakeServer):
    """:class:`FakeServer` that also takes a producer's close request (``Stream-Closed``)."""

    def __init__(self, delay: dict[int, float] | None = None) -> None:
        super().__init__(delay)
        self.closed = False

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if not request.headers.get("Stream-Closed"):
            return await super().__call__(request)
        seq = int(request.headers["Producer-Seq"])
        self.requests.append((int(request.headers["Producer-Epoch"]), seq))
        if seq in self.delay:
            await trio.sleep(self.delay.pop(seq))
        done = {"Stream-Next-Offset": str(len(self.messages)), "Stream-Closed": "true"}
        if self.closed and seq == self.last_seq:
            return httpx2.Response(204, headers=done)
        if seq != self.last_seq + 1:
            gap = {
                "Producer-Expected-Seq": str(self.last_seq + 1),
                "Producer-Received-Seq": str(seq),
            }
            return httpx2.Response(409, headers=gap, content=b"Producer sequence gap")
        self.last_seq = seq
        self.closed = True
        return httpx2.Response(204, headers=done)


@pytest.mark.trio
async def test_cancelled_flush_loses_nothing_and_leaves_no_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flush cancelled with one batch in flight and two queued: the next flush sends all."""
    server = FakeServer(delay={0: 1000.0})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(
            URL,
            "p",
            client=client,
            content_type="application/json",
            max_batch_bytes=1,  # one message per batch
            max_in_flight=1,
        )
        for k in "abc":
            producer.append_nowait(msg(k))
        with trio.move_on_after(10):
            await producer.flush()  # seq 0 is held: cancelled in flight, b and c queued
        producer.append_nowait(msg("d"))
        with trio.fail_after(100):
            await producer.flush()
    assert server.messages == [msg(k) for k in "abcd"]
    assert [seq for _, seq in server.requests] == [0, 0, 1, 2, 3]  # seq 0 resent, no gap
    assert producer.next_seq == 4


@pytest.mark.trio
async def test_cancelled_append_is_sent_by_the_next_flush(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(delay={0: 1000.0})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(URL, "p", client=client, content_type="application/json")
        with trio.move_on_after(10):
            await producer.append(msg("a"))
        result = await producer.append(msg("b"))
        assert result.offset == "2"
    assert server.messages == [msg("a"), msg("b")]


@pytest.mark.trio
async def test_close_stream_retried_after_cancellation_reuses_its_seq(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ClosingServer(delay={1: 1000.0})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(URL, "p", client=client, content_type="application/json")
        producer.append_nowait(msg("a"))
        with trio.move_on_after(10):
            await producer.close_stream()  # the close request (seq 1) is held: cancelled
        with trio.fail_after(100):
            result = await producer.close_stream()
    assert result.final_offset == "1"
    assert server.closed
    assert server.requests == [(0, 0), (0, 1), (0, 1)]


@pytest.mark.trio
async def test_a_batch_waiting_on_a_cancelled_one_is_resent_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two flushers without a background loop; the one holding seq 0 is cancelled.

    The other's seq 1 arrived first (gap) and waits for seq 0: it must neither hang nor fail,
    but resend both, in order.
    """
    server = FakeServer(delay={0: 1000.0})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(
            URL, "p", client=client, content_type="application/json", max_batch_bytes=1
        )
        cancel_a = trio.CancelScope()

        async def flush_a() -> None:
            with cancel_a:
                await producer.flush()

        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                producer.append_nowait(msg("a"))
                nursery.start_soon(flush_a)
                await trio.sleep(1)  # seq 0 is held by the server
                producer.append_nowait(msg("b"))
                nursery.start_soon(producer.flush)
                await trio.sleep(5)  # seq 1: gap, waits for seq 0
                cancel_a.cancel()
    assert server.messages == [msg("a"), msg("b")]
    assert producer.next_seq == 2


@pytest.mark.trio
async def test_append_outlives_a_cancelled_background_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The task group running the loop is cancelled mid-send: append() sends it itself."""
    server = FakeServer(delay={0: 1000.0})
    results: list[IdempotentAppendResult] = []
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client,
        trio.open_nursery() as outer,
    ):
        with trio.fail_after(100):
            async with anyio.create_task_group() as loop_group:
                producer = IdempotentProducer(
                    URL, "p", client=client, task_group=loop_group, content_type="application/json"
                )

                async def append_a() -> None:
                    results.append(await producer.append(msg("a")))

                outer.start_soon(append_a)
                await trio.sleep(10)  # seq 0 is held by the server
                loop_group.cancel_scope.cancel()
    assert server.messages == [msg("a")]
    assert [r.offset for r in results] == ["1"]


class RejectingServer(FakeServer):
    """:class:`FakeServer` that answers 413 to bodies over 100 bytes (not stored)."""

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if len(request.content) > 100:
            return httpx2.Response(413, content=b"Payload too large")
        if int(request.headers["Producer-Epoch"]) > max((e for e, _ in self.requests), default=0):
            self.last_seq = -1  # a new epoch starts at seq 0
        return await super().__call__(request)


@pytest.mark.trio
async def test_batches_behind_a_rejected_one_say_why_and_restart_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = RejectingServer()
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        producer = IdempotentProducer(URL, "p", client=client, content_type="application/json")
        with pytest.raises(DurableStreamClientError) as rejected:
            await producer.append({"big": "x" * 200})
        assert rejected.value.status == 413
        with pytest.raises(DurableStreamClientError) as blocked:
            await producer.append(msg("a"))
        assert blocked.value.code == "PRODUCER_BLOCKED"
        assert "(epoch 0, seq 0)" in str(blocked.value)
        assert "restart()" in str(blocked.value)
        assert blocked.value.__cause__ is rejected.value
        await producer.restart()
        assert (await producer.append(msg("b"))).offset == "1"
    assert server.messages == [msg("b")]


@pytest.mark.trio
async def test_cancelled_owner_flushes_for_at_most_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the body of ``async with`` does not wait for a stuck server forever."""

    async def stuck(request: httpx2.Request) -> httpx2.Response:
        await trio.sleep(80_000)  # virtual: a regression fails the assert below, not hangs
        return httpx2.Response(200, headers={"Stream-Next-Offset": "1"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(stuck)) as client:
        with trio.move_on_after(1):
            async with IdempotentProducer(
                URL, "p", client=client, content_type="application/json"
            ) as producer:
                producer.append_nowait(msg("a"))
                await trio.sleep(10)
        # virtual time: the cancel at 1 s, then at most shutdown_timeout of flushing
        assert trio.current_time() <= 32  # shutdown_timeout defaults to 30
    assert producer.in_flight_count == 0
