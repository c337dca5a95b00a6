"""Handle batching (``batching=True``, the default, as in the official client).

Appends made while another append of the same handle is in flight are coalesced into the next
POST. Run against the Node reference server and this project's server; async tests under trio
and asyncio. POSTs are counted with an httpx event hook on a caller-supplied client; the one
gated transport below forwards every request to the real server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from resumable_streams.durable import (
    AsyncDurableStream,
    DurableStream,
    SeqConflictError,
    StreamNotFoundError,
    astream,
    stream,
)

pytestmark = pytest.mark.anyio


class PostCounter:
    """An httpx event hook counting the POSTs a client sends."""

    def __init__(self) -> None:
        self.posts = 0

    def __call__(self, request: httpx2.Request) -> None:
        if request.method == "POST":
            self.posts += 1

    async def hook(self, request: httpx2.Request) -> None:
        self(request)


class GatedTransport(httpx2.AsyncBaseTransport):
    """The real HTTP transport, except that POSTs wait until ``gate`` is set."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.gate = anyio.Event()
        self.post_started = anyio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            self.post_started.set()
            await self.gate.wait()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def gated_handle(url: str) -> AsyncIterator[tuple[AsyncDurableStream, GatedTransport]]:
    """A new text/plain stream's handle whose POSTs wait for ``transport.gate``."""
    transport = GatedTransport()
    async with httpx2.AsyncClient(transport=transport) as client:
        handle = await AsyncDurableStream.create(url, content_type="text/plain", client=client)
        yield handle, transport


async def read_json(url: str) -> list[Any]:
    async with astream(url, live=False) as res:
        items: list[Any] = await res.read_json()
        return items


async def test_concurrent_appends_are_coalesced(stream_url: str) -> None:
    counter = PostCounter()
    with anyio.fail_after(20):
        async with httpx2.AsyncClient(event_hooks={"request": [counter.hook]}) as client:
            handle = await AsyncDurableStream.create(
                stream_url, content_type="application/json", client=client
            )
            offsets: list[str] = []

            async def writer(w: int) -> None:
                for i in range(10):
                    offsets.append((await handle.append({"w": w, "i": i})).next_offset)

            async with anyio.create_task_group() as tg:
                for w in range(8):
                    tg.start_soon(writer, w)
            items = await read_json(stream_url)
    assert sorted((m["w"], m["i"]) for m in items) == [(w, i) for w in range(8) for i in range(10)]
    for w in range(8):  # each writer's own appends stay in order
        assert [m["i"] for m in items if m["w"] == w] == list(range(10))
    # callers whose appends just finished queue before the next batch goes: about one POST
    # per round of the 8 writers (a loose bound: scheduling order varies)
    assert counter.posts <= 40
    assert all(offsets)


async def test_batching_off_sends_one_post_per_append(stream_url: str) -> None:
    counter = PostCounter()
    with anyio.fail_after(20):
        async with httpx2.AsyncClient(event_hooks={"request": [counter.hook]}) as client:
            handle = await AsyncDurableStream.create(
                stream_url, content_type="text/plain", client=client, batching=False
            )
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(handle.append, f"{i};")
            async with astream(stream_url, live=False) as res:
                text = await res.read_text()
    assert sorted(text.split(";")[:-1]) == [str(i) for i in range(6)]
    assert counter.posts == 6


async def test_seq_append_travels_alone_and_fails_alone(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with gated_handle(stream_url) as (handle, transport):
            results: dict[str, Any] = {}

            async def append(name: str, data: str, seq: str | None = None) -> None:
                try:
                    results[name] = await handle.append(data, seq=seq)
                except SeqConflictError as exc:
                    results[name] = exc

            async with anyio.create_task_group() as tg:
                tg.start_soon(append, "lead", "a", "5")
                await transport.post_started.wait()
                # queued behind the in-flight POST: b and c share a batch, the stale seq
                # goes alone and is the only one to fail
                for name, data, seq in [("b", "b", None), ("c", "c", None), ("stale", "x", "3")]:
                    tg.start_soon(append, name, data, seq)
                    await anyio.wait_all_tasks_blocked()
                transport.gate.set()
            async with astream(stream_url, live=False) as res:
                assert await res.read_text() == "abc"
    assert isinstance(results["stale"], SeqConflictError)
    assert results["b"].next_offset == results["c"].next_offset  # one batch, one tail


async def test_cancelled_queued_append_is_not_sent(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with gated_handle(stream_url) as (handle, transport):
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle.append, "kept;")
                await transport.post_started.wait()
                scope = anyio.CancelScope()

                async def doomed() -> None:
                    with scope:
                        await handle.append("cancelled;")

                tg.start_soon(doomed)  # queued first: it would have led the next batch
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(handle.append, "after;")
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                transport.gate.set()
            async with astream(stream_url, live=False) as res:
                assert await res.read_text() == "kept;after;"
            # the handle is idle again: a new append goes straight out
            await handle.append("more;")
            async with astream(stream_url, live=False) as res:
                assert await res.read_text() == "kept;after;more;"


async def test_a_failed_batch_fails_each_of_its_appends(stream_url: str) -> None:
    with anyio.fail_after(20):
        async with gated_handle(stream_url) as (handle, transport):
            errors: dict[str, StreamNotFoundError] = {}

            async def append(data: str) -> None:
                try:
                    await handle.append(data)
                except StreamNotFoundError as exc:
                    errors[data] = exc

            async with anyio.create_task_group() as tg:
                tg.start_soon(append, "a")
                await transport.post_started.wait()
                tg.start_soon(append, "b")
                tg.start_soon(append, "c")
                await anyio.wait_all_tasks_blocked()
                await handle.delete()  # DELETE is not gated: every append meets a 404
                transport.gate.set()
    assert sorted(errors) == ["a", "b", "c"]
    assert errors["b"] is errors["c"]  # b and c travelled in one POST


def test_sync_handle_coalesces_appends_from_threads(stream_url: str) -> None:
    counter = PostCounter()
    with httpx2.Client(event_hooks={"request": [counter]}) as client:
        handle = DurableStream.create(stream_url, content_type="application/json", client=client)
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(15):
                    handle.append(json.dumps({"w": w, "i": i}))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        with stream(stream_url, live=False) as res:
            items = res.read_json()
    assert len(items) == 90
    for w in range(6):
        assert [m["i"] for m in items if m["w"] == w] == list(range(15))
    assert counter.posts <= 90
