"""The client against real servers: the official Node reference server and this project's own.

Every test here runs against both (the ``server`` fixture); async tests also under trio and
asyncio. Anything that waits on the network runs under ``anyio.fail_after``.
"""

from __future__ import annotations

import json

import anyio
import pytest

from resumable_streams.durable import (
    AsyncDurableStream,
    BadRequestError,
    ContentTypeMismatchError,
    DurableStream,
    IdempotentProducer,
    ProducerState,
    SeqConflictError,
    SequenceGapError,
    StaleEpochError,
    StreamClosedError,
    StreamConsumedError,
    StreamExistsError,
    StreamNotFoundError,
    SyncIdempotentProducer,
    astream,
    stream,
)

pytestmark = pytest.mark.anyio

LIVE_MODES = ["long-poll", "sse"]


# -- handle operations (sync) -----------------------------------------------------------------


def test_create_append_head_read_json(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="application/json", ttl_seconds=3600) as s:
        s.append({"message": "hello"})
        s.append(json.dumps([1, 2]))  # pre-serialized: one message, the list
        s.append(3)
        info = s.head()
        assert info.content_type is not None
        assert info.content_type.startswith("application/json")
        assert info.ttl_seconds == 3600
        assert info.offset
        assert not info.stream_closed
        with s.stream(live=False) as res:
            assert list(res.iter_json()) == [{"message": "hello"}, [1, 2], 3]
            assert res.offset == info.offset
            assert res.up_to_date


def test_binary_stream_round_trip_and_resume(stream_url: str) -> None:
    payload = bytes(range(256))
    with DurableStream.create(stream_url, content_type="application/octet-stream") as s:
        first = s.append(payload)
        s.append(b"tail")
        with stream(stream_url, live=False) as res:
            assert res.read_bytes() == payload + b"tail"
        with stream(stream_url, live=False, offset=first.next_offset) as res:
            assert res.read_bytes() == b"tail"


def test_create_is_idempotent_and_conflicts_are_clear(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="text/plain") as s:
        DurableStream.create(stream_url, content_type="text/plain", client=s.client)
        with pytest.raises(StreamExistsError) as info:
            DurableStream.create(stream_url, content_type="application/json", client=s.client)
        assert info.value.status == 409
        with pytest.raises(ContentTypeMismatchError) as ct:
            s.append(b"{}", content_type="application/json")
        assert ct.value.details


def test_create_with_body_closed_and_expiry(server_stream_urls: list[str]) -> None:
    url, url2 = server_stream_urls
    with DurableStream.create(url, content_type="text/plain", body="all", closed=True) as s:
        info = s.head()
        assert info.stream_closed
        with s.stream(live="long-poll") as res:
            assert res.read_text() == "all"
            assert res.stream_closed
    with DurableStream.create(url2, expires_at="2099-01-01T00:00:00Z") as s2:
        assert s2.head().expires_at is not None


def test_connect_delete_and_not_found(stream_url: str) -> None:
    with pytest.raises(StreamNotFoundError) as info:
        DurableStream.connect(stream_url)
    assert info.value.status == 404
    DurableStream.create(stream_url, content_type="text/plain").close()
    with DurableStream.connect(stream_url) as s:
        assert s.content_type is not None
        assert s.content_type.startswith("text/plain")
        s.delete()
        with pytest.raises(StreamNotFoundError):
            s.head()
        with pytest.raises(StreamNotFoundError):
            stream(stream_url, live=False)


def test_close_stream_then_append_is_stream_closed(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="text/plain") as s:
        s.append("a")
        closed = s.close_stream("b")
        assert closed.final_offset
        assert s.close_stream().final_offset == closed.final_offset  # idempotent
        with pytest.raises(StreamClosedError) as info:
            s.append("c")
        assert info.value.final_offset == closed.final_offset
        with s.stream(live=False) as res:
            assert res.read_text() == "ab"


def test_stream_seq_regression(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="text/plain") as s:
        s.append("a", seq="09")
        s.append("b", seq="10")
        with pytest.raises(SeqConflictError) as info:
            s.append("c", seq="10")
        assert info.value.status == 409


def test_bad_request_carries_details(stream_url: str) -> None:
    DurableStream.create(stream_url, content_type="text/plain").close()
    with pytest.raises(BadRequestError) as info:
        stream(stream_url, live=False, offset="not,valid")
    assert info.value.status == 400


def test_response_is_one_shot(stream_url: str) -> None:
    DurableStream.create(stream_url, content_type="text/plain", body="x").close()
    with stream(stream_url, live=False) as res:
        assert res.read_text() == "x"
        with pytest.raises(StreamConsumedError):
            list(res.iter_text())


# -- live reads (async, both backends) ---------------------------------------------------------


@pytest.mark.parametrize("live", LIVE_MODES)
@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
async def test_live_tail_then_stop_on_close(stream_url: str, live: str, content_type: str) -> None:
    is_json = content_type == "application/json"
    received: list[object] = []
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type=content_type) as s:
            await s.append({"n": 0} if is_json else b"\x00\xff0")

            async def write() -> None:
                for i in range(1, 4):
                    await anyio.sleep(0.2)
                    await s.append({"n": i} if is_json else b"\x00\xff" + str(i).encode())
                await anyio.sleep(0.2)
                await s.close_stream()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                async with s.stream(live=live) as res:  # type: ignore[arg-type]
                    if is_json:
                        received.extend([item async for item in res.iter_json()])
                    else:
                        received.append(b"".join([chunk async for chunk in res]))
                    assert res.stream_closed
    if is_json:
        assert received == [{"n": i} for i in range(4)]
    else:
        assert received == [b"\x00\xff0\x00\xff1\x00\xff2\x00\xff3"]


@pytest.mark.parametrize("live", LIVE_MODES)
async def test_events_carry_offsets_and_resume(stream_url: str, live: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type="text/plain") as s:
            await s.append("one")
            async with astream(stream_url, live=live) as res:  # type: ignore[arg-type]
                it = res.iter_events(mode="text")
                first = await it.__anext__()
                while first.data is None:
                    first = await it.__anext__()
            assert first.data == "one"
            assert first.up_to_date
            await s.append("two")
            await s.close_stream()
            async with astream(stream_url, live=live, offset=first.next_offset) as res:  # type: ignore[arg-type]
                events = [ev async for ev in res.iter_events(mode="text")]
            assert "".join(ev.data for ev in events if ev.data) == "two"
            assert events[-1].stream_closed


async def test_long_poll_on_closed_stream_ends(stream_url: str) -> None:
    """The official client busy-loops here (~75k requests/min); this one returns."""
    with anyio.fail_after(10):
        async with await AsyncDurableStream.create(
            stream_url, content_type="text/plain", body="done", closed=True
        ) as s:
            for live in [True, "long-poll", "sse"]:
                async with s.stream(live=live, offset="now") as res:  # type: ignore[arg-type]
                    assert [c async for c in res.iter_text()] == []
                    assert res.stream_closed


async def test_offset_now_waits_for_new_data(stream_url: str) -> None:
    with anyio.fail_after(10):
        async with (
            await AsyncDurableStream.create(
                stream_url, content_type="application/json", body={"old": 1}
            ) as s,
            s.stream(live="long-poll", offset="now") as res,
            anyio.create_task_group() as tg,
        ):

            async def later() -> None:
                await anyio.sleep(0.3)
                await s.append({"new": 1})

            tg.start_soon(later)
            async for item in res.iter_json():
                assert item == {"new": 1}
                break


async def test_callable_headers_evaluated_per_request(stream_url: str) -> None:
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return f"Bearer {calls}"

    with anyio.fail_after(10):
        async with await AsyncDurableStream.create(
            stream_url, content_type="text/plain", headers={"Authorization": token}
        ) as s:
            await s.append("a")
            await s.head()
    assert calls == 3


# -- idempotent producer ------------------------------------------------------------------------


async def test_producer_batches_and_is_exactly_once(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(
            stream_url, content_type="application/json"
        ) as s:
            async with IdempotentProducer(
                s, producer_id="p", linger_ms=5, max_batch_bytes=64, max_in_flight=3
            ) as producer:
                for i in range(50):
                    producer.append_nowait(json.dumps({"i": i}))
                result = await producer.append({"i": 50})
                assert not result.duplicate
                await producer.flush()
                saved = producer.state
            assert saved.next_seq > 1
            async with s.stream(live=False) as res:
                assert await res.read_json() == [{"i": i} for i in range(51)]

            # a process restarted from saved state continues exactly once
            restored = IdempotentProducer(s, state=ProducerState.from_dict(saved.to_dict()))
            restored.append_nowait({"i": 51})
            await restored.close()
            assert restored.next_seq == saved.next_seq + 1
            async with s.stream(live=False) as res:
                assert len(await res.read_json()) == 52


async def test_producer_duplicate_replay(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type="text/plain") as s:
            p1 = IdempotentProducer(s, producer_id="dup")
            assert not (await p1.append("x")).duplicate
            await p1.close()
            replay = IdempotentProducer(s, producer_id="dup")  # same (id, epoch 0, seq 0)
            assert (await replay.append("x")).duplicate
            await replay.close()
            async with s.stream(live=False) as res:
                assert await res.read_text() == "x"


async def test_producer_stale_epoch_and_auto_claim(stream_url: str) -> None:
    errors: list[Exception] = []
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type="text/plain") as s:
            newer = IdempotentProducer(s, producer_id="w", epoch=1)
            await newer.append("1")
            await newer.close()
            zombie = IdempotentProducer(s, producer_id="w", epoch=0, on_error=errors.append)
            zombie.append_nowait("zombie")
            with pytest.raises(StaleEpochError) as info:
                await zombie.flush()
            assert info.value.current_epoch == 1
            assert errors == [info.value]
            await zombie.close()
            claimer = IdempotentProducer(s, producer_id="w", epoch=0, auto_claim=True)
            await claimer.append("2")
            assert claimer.epoch == 2
            await claimer.close()
            async with s.stream(live=False) as res:
                assert await res.read_text() == "12"


async def test_producer_sequence_gap(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type="text/plain") as s:
            p = IdempotentProducer(s, state=ProducerState("gap", 0, 5))
            with pytest.raises(SequenceGapError) as info:
                await p.append("x")
            assert (info.value.expected_seq, info.value.received_seq) == (0, 5)
            await p.close()


async def test_producer_close_stream_in_callers_task_group(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(stream_url, content_type="text/plain") as s:
            async with anyio.create_task_group() as tg:
                p = IdempotentProducer(s, producer_id="c", task_group=tg, linger_ms=1)
                p.append_nowait("a")
                p.append_nowait("b")
                result = await p.close_stream("c")
            assert result.final_offset
            info = await s.head()
            assert info.stream_closed
            async with s.stream(live=False) as res:
                assert await res.read_text() == "abc"


def test_sync_producer(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="application/json") as s:
        with SyncIdempotentProducer(s, producer_id="sync", linger_ms=1) as p:
            for i in range(20):
                p.append_nowait({"i": i})
            assert not p.append({"i": 20}).duplicate
            p.flush()
            assert p.state.next_seq >= 1
        with s.stream(live=False) as res:
            assert res.read_json() == [{"i": i} for i in range(21)]
