"""The built-in HTTP/1.1 server (``serve --http builtin``) over real loopback sockets."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import pytest

from resumable_streams._protocol.durable.planning import CreateRequest
from resumable_streams.durable.server import http1
from resumable_streams.durable.server.app import DurableStreamsApp
from resumable_streams.durable.server.http1 import HTTP1Limits, serve_http1
from resumable_streams.storage import MemoryStorage

pytestmark = pytest.mark.anyio


class EchoApp:
    """Echoes method, path, query and body; a few paths do something special."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.disconnected = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/wait-disconnect":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"waiting", "more_body": True})
            assert (await receive())["type"] == "http.disconnect"
            self.disconnected.set()
            return
        out = f"{scope['method']} {path} {scope['query_string'].decode()} ".encode() + body
        headers = [(b"content-length", str(len(out)).encode()), (b"x-test", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})


@pytest.fixture(autouse=True, params=["direct", "polled"])
def trio_wait_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """On trio, run every test with connections waiting on trio's own wait_readable and
    with all of them in the server's edge-triggered epoll (both paths serve in production:
    a lone connection waits directly, a crowd shares the epoll)."""
    mode: str = request.param
    monkeypatch.setattr(http1, "_DIRECT_WAITS", 10**9 if mode == "direct" else 0)
    return mode


@asynccontextmanager
async def running(app: Any, **limits: float) -> AsyncIterator[int]:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        bound = await tg.start(
            lambda task_status: serve_http1(
                app,
                "127.0.0.1",
                0,
                shutdown_trigger=stop.wait,
                limits=HTTP1Limits(**limits),  # type: ignore[arg-type]
                task_status=task_status,
            )
        )
        try:
            yield bound[0][1]
        finally:
            stop.set()


async def read_response(stream: anyio.abc.ByteStream, buf: bytearray) -> tuple[bytes, bytes]:
    """One response with a Content-Length (head, body); leftovers stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive()
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end])
    del buf[: end + 4]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        buf += await stream.receive()
    body = bytes(buf[:length])
    del buf[:length]
    return head, body


async def read_all(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


async def test_keep_alive_and_pipelining() -> None:
    app = EchoApp()
    with anyio.fail_after(10):
        async with running(app) as port, await anyio.connect_tcp("127.0.0.1", port) as s:
            buf = bytearray()
            await s.send(b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            head, body = await read_response(s, buf)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"\r\ndate: " in head
            assert body == b"GET /a x=1 "
            # two pipelined requests in one packet, answered in order
            await s.send(
                b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /c%20d HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            assert (await read_response(s, buf))[1] == b"POST /b  abc"
            assert (await read_response(s, buf))[1] == b"GET /c d  "
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


async def test_chunked_request_and_100_continue() -> None:
    with anyio.fail_after(10):
        async with running(EchoApp()) as port, await anyio.connect_tcp("127.0.0.1", port) as s:
            buf = bytearray()
            await s.send(
                b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            while b"\r\n\r\n" not in buf:
                buf += await s.receive()
            assert buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            del buf[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
            await s.send(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
            assert (await read_response(s, buf))[1] == b"POST /e  abcde"


async def test_streamed_response_is_chunked_and_http10_is_closed() -> None:
    with anyio.fail_after(10):
        async with running(EchoApp()) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                raw = await read_all(s)
            assert b"transfer-encoding: chunked" in raw
            assert raw.endswith(b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n")
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET /stream HTTP/1.0\r\n\r\n")
                raw = await read_all(s)
            assert b"chunked" not in raw
            assert raw.endswith(b"\r\n\r\none,two,three")


async def test_head_and_app_errors() -> None:
    with anyio.fail_after(10):
        async with running(EchoApp()) as port, await anyio.connect_tcp("127.0.0.1", port) as s:
            buf = bytearray()
            await s.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /boom HTTP/1.1\r\n\r\n")
            while b"\r\n\r\n" not in buf:
                buf += await s.receive()
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            assert b"content-length: 9" in head  # HEAD: the length, no body
            rest += await read_all(s)
            assert rest.startswith(b"HTTP/1.1 500 ")
            assert b"connection: close" in rest


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET /\r\n\r\n", b"400", b"malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", b"400", b"unsupported HTTP version"),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", b"400", b"malformed request target"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"400", b"malformed header line"),
        (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", b"400", b"malformed header line"),
        (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", b"400", b"control character"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"400",
            b"both Content-Length and Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"400",
            b"conflicting Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", b"400", b"malformed Content-Length"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"400", b"Transfer-Encoding"),
        (b"POST / HTTP/1.1\r\nExpect: magic\r\n\r\n", b"417", b"Expect"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"400",
            b"malformed chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"400",
            b"control character in a chunk extension",
        ),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431", b"too large"),
    ],
)
async def test_bad_requests_are_refused_and_closed(
    request_bytes: bytes, status: bytes, reason: bytes
) -> None:
    with anyio.fail_after(10):
        async with running(EchoApp()) as port, await anyio.connect_tcp("127.0.0.1", port) as s:
            await s.send(request_bytes)
            raw = await read_all(s)
            assert raw.startswith(b"HTTP/1.1 " + status), raw[:200]
            assert reason in raw
            assert b"connection: close" in raw


async def test_disconnect_reaches_a_streaming_app() -> None:
    app = EchoApp()
    with anyio.fail_after(10):
        async with running(app) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET /wait-disconnect HTTP/1.1\r\nHost: t\r\n\r\n")
                buf = b""
                while b"waiting" not in buf:
                    buf += await s.receive()
            await app.disconnected.wait()


async def test_idle_and_slow_head_timeouts() -> None:
    with anyio.fail_after(10):
        async with running(EchoApp(), keep_alive_timeout=0.1, head_timeout=0.1) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                assert await read_all(s) == b""  # idle: closed without a word
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET / HTTP/1.1\r\n")  # and never the rest
                assert (await read_all(s)).startswith(b"HTTP/1.1 408 ")


async def test_shutdown_waits_for_a_busy_request_then_cancels() -> None:
    app = EchoApp()
    with anyio.fail_after(10):
        async with running(app, shutdown_timeout=0.2) as port:
            s = await anyio.connect_tcp("127.0.0.1", port)
            await s.send(b"GET /wait-disconnect HTTP/1.1\r\nHost: t\r\n\r\n")
            buf = b""
            while b"waiting" not in buf:
                buf += await s.receive()
        # the server stopped: its streaming request was cancelled after the grace period
        # and the connection closed (read_all returns at EOF)
        await read_all(s)
        await s.aclose()
        assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_pipelining_flood_does_not_starve_other_connections() -> None:
    served: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    flood = 3000
    with anyio.fail_after(20):
        async with running(app) as port:
            a = await anyio.connect_tcp("127.0.0.1", port)
            b = await anyio.connect_tcp("127.0.0.1", port)
            async with a, b:
                await a.send(b"GET /flood HTTP/1.1\r\nHost: t\r\n\r\n" * flood)
                await b.send(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
                assert (await b.receive()).startswith(b"HTTP/1.1 204 ")
                got = b""
                while got.count(b"HTTP/1.1 204 ") < flood:
                    got += await a.receive()
    assert served.count("/flood") == flood
    assert served.index("/other") < flood  # served while the flood was still being answered


async def test_a_huge_chunk_reaches_the_app_as_it_arrives() -> None:
    """A chunk is not collected whole: the app can refuse a too-large body (413) early."""
    received: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            received.append(size)
            if size > 1000 or not message.get("more_body"):
                break
        status = 413 if size > 1000 else 200
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with anyio.fail_after(10):
        async with running(app) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                # a 256 MiB chunk is announced; 64 KiB of it is enough for the answer
                await s.send(
                    b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"10000000\r\n" + b"x" * 65536
                )
                raw = await read_all(s)
            assert raw.startswith(b"HTTP/1.1 413 ")
            assert b"connection: close" in raw
            # pieces of one chunk, sent apart, still make the exact body
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                for piece in (b"5\r\nab", b"c", b"de", b"\r", b"\n3\r\nfg", b"h\r\n0\r\n\r\n"):
                    await s.send(piece)
                    await anyio.sleep(0.01)
                buf = bytearray()
                head, body = await read_response(s, buf)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert body == b"8"


async def test_a_stalled_request_body_is_answered_408_and_the_app_sees_a_disconnect() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if seen[-1] == "http.disconnect":
            return  # nothing to answer: the request never completed
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with anyio.fail_after(10):
        async with running(app, body_timeout=0.2) as port:
            for request in (
                b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
                b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            ):
                seen.clear()
                async with await anyio.connect_tcp("127.0.0.1", port) as s:
                    await s.send(request)  # and never the rest, without closing
                    raw = await read_all(s)
                assert raw.startswith(b"HTTP/1.1 408 "), raw
                assert b"request body timed out" in raw
                assert seen[-1] == "http.disconnect"


async def test_a_client_gone_before_its_long_poll_answer_is_not_an_app_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A send on a closed connection raises an OSError (ASGI); the app takes it as "gone"."""
    app = DurableStreamsApp(MemoryStorage(), long_poll_timeout=0.2)
    with anyio.fail_after(10):
        async with running(app) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"PUT /v1/stream/a HTTP/1.1\r\nHost: t\r\n\r\n")
                assert (await read_response(s, bytearray()))[0].startswith(b"HTTP/1.1 201 ")
            for _ in range(3):
                s = await anyio.connect_tcp("127.0.0.1", port)
                raw = s.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await s.send(b"GET /v1/stream/a?offset=-1&live=long-poll HTTP/1.1\r\n\r\n")
                await anyio.sleep(0.05)
                await s.aclose()  # a reset: the 204 that comes later cannot be sent
        # leaving `running` waits for the long-polls: they time out and try to answer
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_sse_on_a_stream_recreated_shorter_ends_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reader's offset is past the new tail: its SSE response ends, not errors out."""
    storage = MemoryStorage()
    app = DurableStreamsApp(storage)
    with anyio.fail_after(10):
        async with running(app) as port:
            await storage.create("a", CreateRequest("text/plain", body=b"hello"), now=time.time())
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(
                    b"GET /v1/stream/a?offset=0000000000000000_0000000000000005&live=sse "
                    b"HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                raw = b""
                while b"upToDate" not in raw:  # the reader waits at the tail
                    raw += await s.receive()
                await storage.delete("a", now=time.time())
                await storage.create("a", CreateRequest("text/plain"), now=time.time())
                raw += await read_all(s)
            assert raw.endswith(b"\r\n0\r\n\r\n")  # the chunked response was ended properly
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_connections_over_the_cap_get_503_and_are_closed() -> None:
    """``max_connections``: the open connections keep working; one more is refused."""
    with anyio.fail_after(10):
        async with running(EchoApp(), max_connections=2) as port:
            first = await anyio.connect_tcp("127.0.0.1", port)
            second = await anyio.connect_tcp("127.0.0.1", port)
            async with first, second:
                for conn in (first, second):  # both are served (and so counted)
                    await conn.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert (await conn.receive()).startswith(b"HTTP/1.1 200 ")
                async with await anyio.connect_tcp("127.0.0.1", port) as third:
                    await third.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
                    answer = await read_all(third)  # the server closes it after answering
                    assert answer.startswith(b"HTTP/1.1 503 ")
                    assert b"connection: close" in answer
                    assert answer.endswith(b"too many open connections")
                await first.send(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")  # still served
                assert (await first.receive()).startswith(b"HTTP/1.1 200 ")
            # once one closes, a new connection is accepted again
            for _ in range(100):
                async with await anyio.connect_tcp("127.0.0.1", port) as fourth:
                    await fourth.send(b"GET /d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    if (await read_all(fourth)).startswith(b"HTTP/1.1 200 "):
                        break
                await anyio.sleep(0.01)  # the server may not have seen the close yet
            else:
                raise AssertionError("a connection under the cap was refused")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HTTP1Limits(max_connections=0)
    with pytest.raises(ValueError, match="keep_alive_timeout"):
        HTTP1Limits(keep_alive_timeout=0)
    with pytest.raises(ValueError, match="lingering_timeout"):
        HTTP1Limits(lingering_timeout=-1)


async def test_no_100_continue_once_the_response_has_begun() -> None:
    """``Expect: 100-continue``: a 1xx after the final response's head would corrupt it.

    An SSE reader's disconnect watcher drains the (odd) body of its GET after the response
    began; so does an ASGI app that reads the body only after starting its response.
    """

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        await receive()
        await send({"type": "http.response.body", "body": b""})

    storage = MemoryStorage()
    await storage.create("a", CreateRequest("text/plain"), now=time.time())
    sse = (
        b"GET /v1/stream/a?offset=-1&live=sse HTTP/1.1\r\nHost: t\r\n"
        b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"upToDate",
    )
    asgi = (
        b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"",
    )
    with anyio.fail_after(10):
        for app, (request, until) in ((DurableStreamsApp(storage), sse), (asgi_app, asgi)):
            async with (
                running(app, body_timeout=0.5, shutdown_timeout=0.1) as port,
                await anyio.connect_tcp("127.0.0.1", port) as s,
            ):
                await s.send(request)
                raw = b""
                while b"started" not in raw and until not in raw:
                    raw += await s.receive()
                # what a late 100 Continue would add (the body never comes: the request
                # ends at the body timeout)
                with anyio.move_on_after(0.2), suppress(anyio.EndOfStream):
                    while True:
                        raw += await s.receive()
                assert b"100 Continue" not in raw, raw


async def test_a_read_left_waiting_by_the_app_does_not_break_the_next_connection() -> None:
    """An app that leaves a ``receive()`` waiting past its request (in a task of its own).

    The connection's socket closes under it; its file descriptor, reused by the next
    connection, must not stay claimed by that waiting read.
    """
    leaked: list[str] = []

    async def leak(receive: Any) -> None:
        with suppress(Exception):
            leaked.append((await receive())["type"])

    async with anyio.create_task_group() as leak_group:

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await receive()  # the (empty) body
            if scope["path"] == "/leak":
                leak_group.start_soon(leak, receive)
                await anyio.sleep(0.05)  # the leaked read is waiting now
            headers = [(b"content-length", b"2"), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})

        with anyio.fail_after(10):
            async with running(app) as port:
                async with await anyio.connect_tcp("127.0.0.1", port) as s:
                    await s.send(b"GET /leak HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert (await read_all(s)).endswith(b"ok")
                for _ in range(3):  # the next connections (the first reuses the fd)
                    async with await anyio.connect_tcp("127.0.0.1", port) as s:
                        await s.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
                        with anyio.fail_after(2):
                            assert (await read_all(s)).endswith(b"ok")
        leak_group.cancel_scope.cancel()


async def test_a_response_cut_short_by_a_cancelled_send_closes_the_connection() -> None:
    """The app's last ``send`` is cancelled mid-write (a slow client, the app's timeout).

    The response is truncated, so the connection cannot carry another one: it is closed,
    instead of being kept alive for a client that waits for the rest.
    """
    body = b"x" * (16 * 1024 * 1024)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with anyio.move_on_after(0.2):
            await send({"type": "http.response.body", "body": body})

    with anyio.fail_after(10):
        async with running(app, shutdown_timeout=0.1) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                await anyio.sleep(0.5)  # not reading: the send blocks, then is cancelled
                with anyio.fail_after(3):
                    raw = await read_all(s)  # returns at the close
            assert raw.startswith(b"HTTP/1.1 200 ")


def _upload_then_read(port: int, head: bytes, body: bytes) -> tuple[bytes, OSError | None]:
    """A blocking client: sends ``head`` and all of ``body``, then reads up to the EOF.

    Returns what it read and the error its send or receive got (None: a clean EOF).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        try:
            sock.sendall(head)
            sock.sendall(body)
            while data := sock.recv(65536):
                received += data
        except OSError as exc:  # ECONNRESET / EPIPE: the server reset the connection
            return received, exc
        return received, None


async def test_a_refused_upload_reads_its_413_then_a_clean_eof() -> None:
    """A body far over the limit is refused (413) unread; the client still sends all of it.

    The server must not close with the body unread in its socket buffer (the kernel would
    reset the connection, losing the 413 and failing the client's send): it half-closes
    after the answer and discards what still comes until the client closes (lingering close).
    """
    storage = MemoryStorage()
    await storage.create("a", CreateRequest("text/plain"), now=time.time())
    body = b"x" * (16 * 1024 * 1024)  # far more than the socket buffers hold
    post = b"POST /v1/stream/a HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
    cases = [
        (post + b"Content-Length: %d\r\n\r\n" % len(body), b"413", b"request body too large"),
        # a malformed chunk: the rest of the upload is never read either
        (post + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"400", b"malformed chunk size"),
    ]
    with anyio.fail_after(20):
        async with running(DurableStreamsApp(storage, max_body_size=1024)) as port:
            for head, status, reason in cases * 2:
                raw, error = await anyio.to_thread.run_sync(_upload_then_read, port, head, body)
                assert error is None, (error, raw[:200])
                assert raw.startswith(b"HTTP/1.1 " + status + b" "), raw[:200]
                assert b"connection: close" in raw
                assert raw.endswith(reason)


async def _refused_then_lingering(port: int) -> anyio.abc.SocketStream:
    """A connection whose upload was refused (413): answer and EOF read, left open."""
    s = await anyio.connect_tcp("127.0.0.1", port)
    await s.send(
        b"POST /v1/stream/a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300_000
    )
    raw = b""
    with suppress(anyio.EndOfStream):  # the server half-closed: EOF while it lingers
        while True:
            raw += await s.receive()
    assert raw.startswith(b"HTTP/1.1 413 ")
    return s


async def _wait_closed(s: anyio.abc.SocketStream) -> None:
    """Return once the server has closed ``s`` (bytes sent after its close are refused)."""
    with suppress(anyio.BrokenResourceError, OSError):
        while True:
            await s.send(b"x" * 1000)  # discarded while the server lingers
            await anyio.sleep(0.02)


async def test_a_lingering_close_is_bounded_in_time_and_by_a_shutdown() -> None:
    """A client that never closes: the lingering server closes after ``lingering_timeout``.

    And a graceful shutdown does not wait for a lingering connection: it is not busy.
    """
    storage = MemoryStorage()
    await storage.create("a", CreateRequest("text/plain"), now=time.time())
    app = DurableStreamsApp(storage, max_body_size=1024)
    with anyio.fail_after(10):
        async with running(app, lingering_timeout=0.5) as port:
            s = await _refused_then_lingering(port)
            started = time.monotonic()
            async with s:
                await _wait_closed(s)
            assert 0.2 < time.monotonic() - started < 3

        async with running(app, lingering_timeout=60, shutdown_timeout=5) as port:
            s = await _refused_then_lingering(port)
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 2  # neither the 60 s nor the 5 s grace period
        async with s:
            with anyio.fail_after(2):
                await _wait_closed(s)
