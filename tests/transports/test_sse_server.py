from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from resumable_streams import ResumableStreamContext
from resumable_streams._protocol.resumable import utf16_len
from resumable_streams._protocol.sse import SSEDecoder, SSEEvent
from resumable_streams.durable._async_client import _abandon_body
from resumable_streams.errors import ConfigurationError
from resumable_streams.resumable.producer import MakeStream
from resumable_streams.transports import ResumableSSEResponse

from .support import chunk_subscriptions, run_asgi, wait_until

pytestmark = pytest.mark.anyio

TEXT_CHUNKS = ["Hello", ", wörld ", "😀", "\r\n", "line\rtwo\n", "𝄞 clef", "", " end 🎉"]


@pytest.fixture
def anyio_backend(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[0]


def make_app(
    ctx: ResumableStreamContext, sources: dict[str, MakeStream], **options: object
) -> Starlette:
    async def create_or_join(request: Request) -> ResumableSSEResponse:
        sid = request.path_params["sid"]
        return ResumableSSEResponse(ctx, sid, sources[sid], **options)  # type: ignore[arg-type]

    async def resume_only(request: Request) -> ResumableSSEResponse:
        return ResumableSSEResponse(ctx, request.path_params["sid"], **options)  # type: ignore[arg-type]

    return Starlette(routes=[Route("/s/{sid}", create_or_join), Route("/r/{sid}", resume_only)])


def gated(chunks: list[str], gate: anyio.Event, at: int) -> Callable[[], AsyncIterator[str]]:
    async def gen() -> AsyncIterator[str]:
        for i, chunk in enumerate(chunks):
            if i == at:
                await gate.wait()
            yield chunk

    return gen


async def read_events(
    client: httpx2.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
    raw: list[bytes] | None = None,
) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    decoder = SSEDecoder()
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.aiter_bytes()
        try:
            async for data in body:
                if raw is not None:
                    raw.append(data)
                for event in decoder.receive_data(data):
                    events.append(event)
                    if stop_after is not None and len(events) >= stop_after:
                        return events
        finally:
            await _abandon_body(body)
    return events


def texts(events: list[SSEEvent]) -> str:
    return "".join(json.loads(e.data) for e in events if e.event == "message")


def check_ids(events: list[SSEEvent], start: int = 0) -> None:
    position = start
    for e in events:
        if e.event == "message":
            position += utf16_len(json.loads(e.data))
            assert e.id == str(position)


async def test_full_stream_is_exact(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    produced = "".join(TEXT_CHUNKS)
    with anyio.fail_after(20):
        async with make_ctx() as ctx:
            gen = gated(TEXT_CHUNKS, anyio.Event(), len(TEXT_CHUNKS) + 1)
            app = make_app(ctx, {"a": gen})
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as client:
                events = await read_events(client, f"http://{host}/s/a")
                assert texts(events) == produced
                check_ids(events)
                assert events[-1].event == "done"
                assert json.loads(events[-1].data) == {"position": utf16_len(produced)}
                # The stream is finished: a reconnect gets 204, so EventSource stops.
                last = events[-2].id
                assert last is not None
                response = await client.get(f"http://{host}/s/a", headers={"Last-Event-ID": last})
                assert response.status_code == 204


async def test_resume_with_last_event_id_after_disconnect(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    gate = anyio.Event()
    produced = "".join(TEXT_CHUNKS)
    with anyio.fail_after(20):
        async with make_ctx() as ctx:
            app = make_app(ctx, {})
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as client:
                # The producer runs in the context; the SSE clients are resumers (they
                # subscribe). A resumer gets the replay as one chunk, then live chunks.
                stream = await ctx.resumable_stream("b", gated(TEXT_CHUNKS, gate, 4))
                assert stream is not None
                first = await read_events(client, f"http://{host}/r/b", stop_after=1)
                assert texts(first) == "".join(TEXT_CHUNKS[:4])
                # The client went away: its subscription is freed at once, the producer runs on.
                await wait_until(lambda: chunk_subscriptions(ctx) == 0)
                last = first[-1].id
                assert last is not None
                rest: list[SSEEvent] = []

                async def reconnect() -> None:
                    rest.extend(
                        await read_events(
                            client, f"http://{host}/r/b", headers={"Last-Event-ID": last}
                        )
                    )

                async with anyio.create_task_group() as tg:
                    tg.start_soon(reconnect)
                    await wait_until(lambda: chunk_subscriptions(ctx) == 1)
                    gate.set()
                assert await stream.read_all() == produced
                assert texts(first) + texts(rest) == produced
                check_ids(rest, int(last))
                assert rest[-1].event == "done"


async def test_query_position_and_resume_only(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    gate = anyio.Event()
    produced = "".join(TEXT_CHUNKS)
    with anyio.fail_after(20):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"c": gated(TEXT_CHUNKS, gate, 3)})
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as client:
                # Not created yet: resume-only answers 404 with a reason.
                response = await client.get(f"http://{host}/r/c")
                assert response.status_code == 404
                assert "'c'" in response.text
                stream = await ctx.resumable_stream("c", gated(TEXT_CHUNKS, gate, 3))
                assert stream is not None
                cut = utf16_len("".join(TEXT_CHUNKS[:3]))
                events: list[SSEEvent] = []

                async def read() -> None:
                    url = f"http://{host}/s/c?position={cut}"
                    events.extend(await read_events(client, url))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    await wait_until(lambda: chunk_subscriptions(ctx) == 1)
                    gate.set()
                assert texts(events) == produced[len("".join(TEXT_CHUNKS[:3])) :]
                check_ids(events, cut)
                await stream.aclose()


@pytest.mark.parametrize(
    ("headers", "query", "needle"),
    [
        ({"Last-Event-ID": "abc"}, "", "Last-Event-ID"),
        ({"Last-Event-ID": "-1"}, "", "'-1'"),
        ({}, "?position=1.5", "'1.5'"),
        ({}, "?position=99999999999999999", "position"),
    ],
)
async def test_bad_position_is_400(
    make_ctx: Callable[..., ResumableStreamContext],
    asgi_server: str,
    headers: dict[str, str],
    query: str,
    needle: str,
) -> None:
    with anyio.fail_after(20):
        async with make_ctx() as ctx:
            app = make_app(ctx, {})
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as client:
                response = await client.get(f"http://{host}/r/x{query}", headers=headers)
                assert response.status_code == 400
                assert needle in response.text


async def test_heartbeat_retry_and_failure(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    gate = anyio.Event()

    async def failing() -> AsyncIterator[str]:
        yield "before 🚀"
        await gate.wait()
        raise RuntimeError("model crashed")

    with anyio.fail_after(20):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"f": failing}, heartbeat=0.01, retry=250)
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as client:
                raw: list[bytes] = []
                events: list[SSEEvent] = []
                decoder = SSEDecoder()
                async with client.stream("GET", f"http://{host}/s/f") as response:
                    body = response.aiter_bytes()
                    try:
                        async for data in body:
                            raw.append(data)
                            events.extend(decoder.receive_data(data))
                            if b": heartbeat" in b"".join(raw):
                                gate.set()
                    finally:
                        await _abandon_body(body)
                whole = b"".join(raw)
                assert whole.startswith(b"retry: 250\n\n")
                assert b": heartbeat\n\n" in whole
                assert texts(events) == "before 🚀"
                assert events[-1].event == "failed"
                end = json.loads(events[-1].data)
                assert end["position"] == utf16_len("before 🚀")
                assert "error" in end


def test_bad_options_name_the_value() -> None:
    ctx = ResumableStreamContext(redis_url="memory://")
    with pytest.raises(ConfigurationError, match="-1"):
        ResumableSSEResponse(ctx, "x", heartbeat=-1)
    with pytest.raises(ConfigurationError, match="'soon'"):
        ResumableSSEResponse(ctx, "x", retry="soon")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="42"):
        ResumableSSEResponse(ctx, "x", 42)  # type: ignore[arg-type]
