"""Handle-less HEAD / DELETE, forks, conditional reads (ETag / 304) and large catch-up bodies.

Every test runs against the Node reference server and this project's server (the ``server``
fixture); async tests under trio and asyncio.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import pytest

from resumable_streams.durable import (
    AsyncDurableStream,
    DurableStream,
    RetentionGoneError,
    StreamNotFoundError,
    astream,
    stream,
)

from .conftest import ServerProcess

pytestmark = pytest.mark.anyio


def test_head_static_and_delete_static(stream_url: str) -> None:
    with pytest.raises(StreamNotFoundError):
        DurableStream.head_static(stream_url)
    DurableStream.create(stream_url, content_type="text/plain", body="abc").close()
    info = DurableStream.head_static(stream_url, headers={"X-Test": "1"})
    assert info.exists
    assert info.offset
    assert info.content_type is not None
    assert info.content_type.startswith("text/plain")
    DurableStream.delete_static(stream_url)
    with pytest.raises(StreamNotFoundError):
        DurableStream.delete_static(stream_url)


async def test_async_head_static_and_delete_static(stream_url: str) -> None:
    with anyio.fail_after(10):
        await (await AsyncDurableStream.create(stream_url, content_type="text/plain")).aclose()
        assert (await AsyncDurableStream.head_static(stream_url)).exists
        await AsyncDurableStream.delete_static(stream_url)
        with pytest.raises(StreamNotFoundError):
            await AsyncDurableStream.head_static(stream_url)


async def test_fork_shares_the_past_not_the_future(server_stream_urls: list[str]) -> None:
    src_url, fork_url = server_stream_urls
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(src_url, content_type="application/json") as src:
            for i in range(3):
                await src.append({"i": i})
            async with await src.fork(fork_url) as fork:
                assert fork.content_type is not None
                assert fork.content_type.startswith("application/json")  # inherited
                await fork.append({"fork": 1})
                await src.append({"i": 3})
                async with fork.stream(live=False) as res:
                    assert await res.read_json() == [{"i": 0}, {"i": 1}, {"i": 2}, {"fork": 1}]
            async with src.stream(live=False) as res:
                assert await res.read_json() == [{"i": i} for i in range(4)]


def test_fork_at_an_offset_plus_sub_offset(server_stream_urls: list[str]) -> None:
    src_url, fork_url = server_stream_urls
    with DurableStream.create(src_url, content_type="application/json") as src:
        first = src.append({"i": 0})
        for i in range(1, 4):
            src.append({"i": i})
        with (
            DurableStream.create(
                fork_url, forked_from=src_url, fork_offset=first.next_offset, fork_sub_offset=1
            ) as fork,
            fork.stream(live=False) as res,
        ):
            assert res.read_json() == [{"i": 0}, {"i": 1}]


def test_fork_errors(server: ServerProcess, server_stream_urls: list[str]) -> None:
    src_url, fork_url = server_stream_urls
    with pytest.raises(StreamNotFoundError):
        DurableStream.create(fork_url, forked_from=server.stream_url("missing-source"))
    with pytest.raises(ValueError, match="forked_from"):
        DurableStream.create(fork_url, fork_offset="0_0")
    with pytest.raises(ValueError, match="-2"):
        DurableStream.create(fork_url, forked_from=src_url, fork_sub_offset=-2)


def test_deleting_a_forked_source_keeps_the_fork(server_stream_urls: list[str]) -> None:
    src_url, fork_url = server_stream_urls
    with (
        DurableStream.create(src_url, content_type="text/plain", body="shared") as src,
        src.fork(fork_url) as fork,
    ):
        src.delete()
        with pytest.raises(RetentionGoneError) as info:
            src.head()
        assert info.value.status == 410
        with fork.stream(live=False) as res:
            assert res.read_text() == "shared"


async def test_if_none_match_304_then_changed(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(
            stream_url, content_type="application/json", body={"a": 1}
        ) as s:
            async with s.stream(live=False) as res:
                assert await res.read_json() == [{"a": 1}]
                etag = res.etag
            assert etag
            async with astream(stream_url, live=False, if_none_match=etag) as res:
                assert [item async for item in res.iter_json()] == []
                assert res.not_modified
            await s.append({"b": 2})
            async with astream(stream_url, live=False, if_none_match=etag) as res:
                assert not res.not_modified
                assert [item async for item in res.iter_json()] == [{"a": 1}, {"b": 2}]
                assert res.etag != etag


def test_sync_if_none_match(stream_url: str) -> None:
    DurableStream.create(stream_url, content_type="text/plain", body="x").close()
    with stream(stream_url, live=False) as res:
        assert res.read_text() == "x"
        etag = res.etag
    with stream(stream_url, live=False, if_none_match=etag) as res:
        assert res.read_text() == ""
        assert res.not_modified


JSON = {"Content-Type": "application/json"}


async def post_array(url: str, messages: list[Any]) -> None:
    """One POST of a JSON array: the server stores each element as a message."""
    async with httpx2.AsyncClient() as client:
        (await client.post(url, content=json.dumps(messages), headers=JSON)).raise_for_status()


def collect(events: list[Any]) -> tuple[list[Any], list[Any]]:
    data = [e for e in events if e.data is not None]
    return data, [e.next_offset for e in data]


@pytest.mark.parametrize("json_mode", [True, False])
async def test_large_catch_up_body_arrives_in_bounded_pieces(
    stream_url: str, json_mode: bool
) -> None:
    """A body larger than ``max_chunk_bytes`` is never held whole (Node sends 3 MB at once)."""
    ctype = "application/json" if json_mode else "application/octet-stream"
    limit = 64 * 1024
    with anyio.fail_after(60):
        async with await AsyncDurableStream.create(stream_url, content_type=ctype) as s:
            for part in range(3):
                if json_mode:
                    batch = [{"p": part, "i": i, "pad": "z" * 80} for i in range(3000)]
                    await post_array(stream_url, batch)
                else:
                    await s.append(bytes([part]) * 1_000_000)
            tail = (await s.head()).offset
            async with s.stream(live=False, max_chunk_bytes=limit) as res:
                events = [ev async for ev in res.iter_events()]
    data, offsets = collect(events)
    assert len(data) > 3
    # each piece is bounded: the limit plus at most one message
    assert max(len(e.data) for e in data) <= limit + 200
    assert offsets[-1] == tail
    assert data[-1].up_to_date
    if json_mode:
        items = [m for e in data for m in json.loads(e.data)]
        assert [(m["p"], m["i"]) for m in items] == [(p, i) for p in range(3) for i in range(3000)]
    else:
        assert b"".join(e.data for e in data) == b"".join(bytes([p]) * 1_000_000 for p in range(3))


def test_sync_iter_json_over_pieces(stream_url: str) -> None:
    with DurableStream.create(stream_url, content_type="application/json") as s:
        batch = [{"i": i, "pad": "y" * 50} for i in range(2000)]
        httpx2.post(stream_url, content=json.dumps(batch), headers=JSON).raise_for_status()
        with s.stream(live=False, max_chunk_bytes=4096) as res:
            assert [m["i"] for m in res.iter_json()] == list(range(2000))


def test_response_session_properties(stream_url: str) -> None:
    """``start_offset``, ``closed`` and ``status_text``, as on the official client's response."""
    with DurableStream.create(stream_url, content_type="text/plain") as s:
        first = s.append("a")
        s.append("b")
        with s.stream(live=False, offset=first.next_offset) as res:
            assert res.read_text() == "b"
            assert res.start_offset == first.next_offset
            assert res.offset != res.start_offset
            open_inside = not res.closed
            assert isinstance(res.status_text, str)
            assert res.status == 200
        assert open_inside
        assert res.closed
        with s.stream(live=False) as res:
            assert res.start_offset == "-1"


async def test_what_the_official_client_refuses_works_here(stream_url: str) -> None:
    """The official client raises ``SSEReadAllError`` for ``read_*`` in SSE mode and
    ``SSENotSupportedError`` for SSE on a binary stream; both are importable here (drop-in
    ``except`` clauses), and neither case is an error: read-all returns up to the tail and a
    binary stream's SSE payloads are decoded."""
    from resumable_streams.durable import (
        DurableStreamClientError,
        SSENotSupportedError,
        SSEReadAllError,
    )

    assert issubclass(SSEReadAllError, DurableStreamClientError)
    assert issubclass(SSENotSupportedError, DurableStreamClientError)
    with anyio.fail_after(20):
        text = await AsyncDurableStream.create(stream_url, content_type="text/plain")
        async with text:
            await text.append("a;")
            await text.append("b;")
            async with text.stream(live="sse") as res:
                assert await res.read_text() == "a;b;"
        binary_url = stream_url + "-bin"
        raw = await AsyncDurableStream.create(binary_url, content_type="application/octet-stream")
        async with raw:
            await raw.append(b"\x00\xff\x01")
            async with raw.stream(live="sse") as res:
                assert await res.read_bytes() == b"\x00\xff\x01"
