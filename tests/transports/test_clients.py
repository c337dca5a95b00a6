"""The resuming SSE and WebSocket clients against real servers, through a proxy that cuts."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from resumable_streams import ResumableStreamContext
from resumable_streams._protocol.resumable import utf16_len
from resumable_streams.errors import (
    ConfigurationError,
    ReconnectFailedError,
    RemoteStreamFailedError,
    RemoteStreamNotFoundError,
    RequestRejectedError,
    StreamGoneError,
)
from resumable_streams.resumable.producer import MakeStream
from resumable_streams.testing import TCPProxy
from resumable_streams.transports import (
    ResumableSSEResponse,
    ResumingReader,
    RetryPolicy,
    handle_resumable_websocket,
    open_resumable_sse,
    open_resumable_websocket,
)
from resumable_streams.transports._net import Closed, WebSocketClient, parse_url

from .support import run_asgi

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_retries=20, initial_delay=0.005, max_delay=0.05)
PIECES = ["token ", "😀", "\r\n", "wörld ", "𝄞", "\n\n", "data: x\n", "中文 ", "🎉🎉"]
PRODUCED_CHUNKS = [f"{i}:{PIECES[i % len(PIECES)]}" for i in range(240)]
PRODUCED = "".join(PRODUCED_CHUNKS)


@pytest.fixture
def anyio_backend(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[0]


def make_app(ctx: ResumableStreamContext, sources: dict[str, MakeStream]) -> Starlette:
    async def sse(request: Request) -> ResumableSSEResponse:
        sid = request.path_params["sid"]
        return ResumableSSEResponse(ctx, sid, sources.get(sid))

    async def ws(websocket: WebSocket) -> None:
        sid = websocket.path_params["sid"]
        await handle_resumable_websocket(websocket, ctx, sid, sources.get(sid))

    return Starlette(routes=[Route("/sse/{sid}", sse), WebSocketRoute("/ws/{sid}", ws)])


class Source:
    """Produces PRODUCED_CHUNKS, then holds the end until the test lets it finish.

    Holding the end keeps the stream alive while connections are being cut: a resumable
    stream that finished while its client was away cannot be resumed (by design; that case
    has its own test), and a cut can always land between the last chunk and the end.
    """

    def __init__(self, chunks: list[str] = PRODUCED_CHUNKS) -> None:
        self.chunks = chunks
        self.finish = anyio.Event()

    async def __call__(self) -> AsyncIterator[str]:
        for i, chunk in enumerate(self.chunks):
            if i % 8 == 0:
                await anyio.sleep(0.001)
            yield chunk
        await self.finish.wait()


async def read_until_complete(reader: ResumingReader) -> str:
    """Read everything the source produced (the end is held back; see :class:`Source`)."""
    received: list[str] = []
    async with reader:
        async for text in reader:
            received.append(text)
            if reader.position == utf16_len(PRODUCED):
                break
    return "".join(received)


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_client_resumes_through_cuts_byte_for_byte(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    source = Source()
    with anyio.fail_after(60):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"s": source})
            async with run_asgi(app, asgi_server) as host:
                port = int(host.rsplit(":", 1)[1])
                async with TCPProxy("127.0.0.1", port) as proxy:
                    # Connection i dies after 600 + 230*i bytes, mid-event; from the 12th on, never.
                    proxy.budget = lambda i: 600 + 230 * i if i < 12 else None
                    if kind == "sse":
                        reader = open_resumable_sse(
                            f"http://127.0.0.1:{proxy.port}/sse/s", retry=FAST_RETRY
                        )
                    else:
                        reader = open_resumable_websocket(
                            f"ws://127.0.0.1:{proxy.port}/ws/s", retry=FAST_RETRY
                        )
                    assert await read_until_complete(reader) == PRODUCED
                    assert reader.position == utf16_len(PRODUCED)
                    source.finish.set()
                    assert proxy.cuts >= 1
                    assert reader.reconnects >= 1


#: ~300 KB of text in 1,000-character chunks: a resume replays most of it at once.
BIG_CHUNKS = ["".join(PIECES[(i + j) % len(PIECES)] for j in range(200))[:1000] for i in range(300)]


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_replay_larger_than_a_connection_still_progresses(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    # Every connection dies after 48 KB; a reconnect's replay is far larger. The server
    # cuts the replay into several messages, so each connection advances the client.
    source = Source(BIG_CHUNKS)
    produced = "".join(BIG_CHUNKS)
    with anyio.fail_after(60):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"s": source})
            async with run_asgi(app, asgi_server) as host:
                port = int(host.rsplit(":", 1)[1])
                async with TCPProxy("127.0.0.1", port) as proxy:
                    proxy.cut_after(48_000)
                    scheme = "http" if kind == "sse" else "ws"
                    opener = open_resumable_sse if kind == "sse" else open_resumable_websocket
                    reader = opener(f"{scheme}://127.0.0.1:{proxy.port}/{kind}/s", retry=FAST_RETRY)
                    received: list[str] = []
                    async with reader:
                        async for text in reader:
                            received.append(text)
                            if reader.position == utf16_len(produced):
                                break
                    source.finish.set()
                    assert "".join(received) == produced
                    assert reader.reconnects >= 2


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_idle_timeout_reopens_a_silently_dead_connection(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    # The first connection goes silent mid-stream without closing (a dead network path):
    # without idle_timeout the client would wait forever; with it, it re-opens and resumes.
    source = Source()
    with anyio.fail_after(60):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"s": source})
            async with run_asgi(app, asgi_server) as host:
                port = int(host.rsplit(":", 1)[1])
                async with TCPProxy("127.0.0.1", port) as proxy:
                    proxy.stall = True
                    proxy.budget = lambda i: 900 if i == 0 else None
                    scheme = "http" if kind == "sse" else "ws"
                    opener = open_resumable_sse if kind == "sse" else open_resumable_websocket
                    reader = opener(
                        f"{scheme}://127.0.0.1:{proxy.port}/{kind}/s",
                        retry=FAST_RETRY,
                        idle_timeout=0.5,
                    )
                    assert await read_until_complete(reader) == PRODUCED
                    source.finish.set()
                    assert reader.reconnects >= 1
                    assert proxy.cuts >= 1


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_client_end_states(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    async def failing() -> AsyncIterator[str]:
        yield "partial 🚀"
        raise RuntimeError("boom")

    async def short() -> AsyncIterator[str]:
        yield "all of it"

    def url(host: str, sid: str) -> str:
        return f"http://{host}/sse/{sid}" if kind == "sse" else f"ws://{host}/ws/{sid}"

    opener = open_resumable_sse if kind == "sse" else open_resumable_websocket
    with anyio.fail_after(30):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"fail": failing, "short": short})
            async with run_asgi(app, asgi_server) as host:
                # Unknown stream, resume only: not found, at once.
                # (SSE knows at connect; a WebSocket on the first read.)
                with pytest.raises(RemoteStreamNotFoundError, match="nope"):
                    async with opener(url(host, "nope"), retry=FAST_RETRY) as missing:
                        await missing.read_all()
                # The creator sees the producer fail after its text.
                got: list[str] = []

                async def read_failing() -> None:
                    async with opener(url(host, "fail"), retry=FAST_RETRY) as stream:
                        async for text in stream:
                            got.append(text)

                with pytest.raises(RemoteStreamFailedError, match="producer failed"):
                    await read_failing()
                assert got == ["partial 🚀"]
                # A complete read, then a client resuming after the end: gone.
                stream = opener(url(host, "short"), retry=FAST_RETRY)
                assert await stream.read_all() == "all of it"
                with pytest.raises(StreamGoneError) as gone:
                    async with opener(url(host, "short"), position=3, retry=FAST_RETRY) as late:
                        await late.read_all()
                assert gone.value.position == 3


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_a_reader_that_reached_the_end_needs_no_aclose(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    # The end (done, or a final error) closes the connection: no ResourceWarning for a
    # reader iterated without `async with` (warnings are errors here).
    async def short() -> AsyncIterator[str]:
        yield "all 😀"

    scheme = "http" if kind == "sse" else "ws"
    opener = open_resumable_sse if kind == "sse" else open_resumable_websocket
    with anyio.fail_after(30):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"short": short})
            async with run_asgi(app, asgi_server) as host:
                reader = opener(f"{scheme}://{host}/{kind}/short", retry=FAST_RETRY)
                assert [text async for text in reader] == ["all 😀"]
                missing = opener(f"{scheme}://{host}/{kind}/nope", retry=FAST_RETRY)
                with pytest.raises(RemoteStreamNotFoundError):
                    await missing.__anext__()
                del reader, missing
                gc.collect()


async def test_bad_hello_and_reconnect_exhaustion(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    with anyio.fail_after(30):
        async with make_ctx() as ctx:
            app = make_app(ctx, {})
            async with run_asgi(app, asgi_server) as host:
                ws = await WebSocketClient.connect(parse_url(f"ws://{host}/ws/x", websocket=True))
                assert isinstance(ws, WebSocketClient)
                await ws.send('{"position": "soon"}')
                closed = await ws.receive()
                await ws.aclose()
                assert closed == Closed(4400, "position must be a non-negative integer, got 'soon'")
    # Nothing listens there any more: the policy gives up with the last error as the cause.
    policy = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)
    with anyio.fail_after(30):
        with pytest.raises(ReconnectFailedError) as failed:
            async with open_resumable_websocket(f"ws://{host}/ws/x", retry=policy) as reader:
                await reader.read_all()
        assert failed.value.__cause__ is not None


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="ftp://x"):
        open_resumable_sse("ftp://x")
    with pytest.raises(ConfigurationError, match="http://x"):
        open_resumable_websocket("http://x")
    with pytest.raises(ConfigurationError, match="-5"):
        open_resumable_sse("http://x", position=-5)
    with pytest.raises(ConfigurationError, match="0"):
        open_resumable_sse("http://x", connect_timeout=0)
    with pytest.raises(ConfigurationError, match="-1"):
        open_resumable_websocket("ws://x", idle_timeout=-1)
    assert issubclass(RequestRejectedError, Exception)


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_cancelled_read_loses_nothing(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str, kind: str
) -> None:
    gate = anyio.Event()
    chunks = ["first 😀", "second", "third 𝄞"]

    async def gated() -> AsyncIterator[str]:
        yield chunks[0]
        await gate.wait()
        for chunk in chunks[1:]:
            yield chunk

    with anyio.fail_after(30):
        async with make_ctx() as ctx:
            app = make_app(ctx, {"g": gated})
            async with run_asgi(app, asgi_server) as host:
                opener = open_resumable_sse if kind == "sse" else open_resumable_websocket
                scheme = "http" if kind == "sse" else "ws"
                async with opener(f"{scheme}://{host}/{kind}/g", retry=FAST_RETRY) as reader:
                    received = [await reader.__anext__()]
                    # A read cancelled while waiting for the next chunk costs nothing...
                    with anyio.move_on_after(0.05) as scope:
                        await reader.__anext__()
                    assert scope.cancelled_caught
                    assert reader.position == utf16_len(chunks[0])
                    gate.set()
                    # ...the next read continues on the same connection, exactly there.
                    received.extend([text async for text in reader])
                assert "".join(received) == "".join(chunks)
                assert reader.reconnects == 0
