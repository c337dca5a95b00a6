"""The built-in HTTP/1.1 client (``_protocol/http11.py`` + ``durable/_async_http.py``).

The Durable Streams client uses it when it owns its connections and the URL is plain
``http://`` with no proxy. Here: the sans-IO parser on its own, then the client against a
scripted HTTP server (real sockets, in a thread) that misbehaves on purpose: keep-alive reuse,
a server closing an idle connection, a reset in the middle of a body, chunked bodies, timeouts,
cancellation; async (trio and asyncio) and sync. Interop with the real servers is covered by
the rest of ``tests/durable_client/``, which runs on this path by default.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import httpx2
import pytest

from resumable_streams._protocol import http11
from resumable_streams.durable import (
    AsyncDurableStream,
    DurableStream,
    FetchError,
    RetryPolicy,
    StreamNotFoundError,
    astream,
    stream,
)
from resumable_streams.durable._async_http import AsyncConnectionPool, use_builtin_http
from resumable_streams.durable._sync_http import ConnectionPool

pytestmark = pytest.mark.anyio

# --------------------------------------------------------------------------------------------
# the sans-IO parser


def _events(parser: http11.ResponseParser) -> list[object]:
    out: list[object] = []
    while True:
        event = parser.next_event()
        if event is http11.NEED_DATA:
            return out
        out.append(event)
        if event is http11.END:
            return out


def _parse(raw: bytes, method: str = "GET", *, step: int = 0) -> tuple[http11.ResponseHead, bytes]:
    """Feed ``raw`` (in ``step``-byte pieces if given, then EOF); the head and the body."""
    parser = http11.ResponseParser(method)
    events: list[object] = []
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)] if step else [raw]
    for piece in pieces:
        parser.receive_data(piece)
        events += _events(parser)
    if http11.END not in events:
        parser.receive_data(b"")
        events += _events(parser)
    assert events[-1] is http11.END
    head = events[0]
    assert isinstance(head, http11.ResponseHead)
    body = b"".join(e for e in events[1:-1] if isinstance(e, bytes))
    return head, body


@pytest.mark.parametrize("step", [0, 1, 7])
def test_parser_content_length(step: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"
    head, body = _parse(raw, step=step)
    assert (head.status, head.reason, body, head.keep_alive) == (200, "OK", b"hello", True)
    assert head.headers["x-a"] == "1, 2"


@pytest.mark.parametrize("step", [0, 1, 5])
def test_parser_chunked_with_extensions_and_trailers(step: int) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
    )
    head, body = _parse(raw, step=step)
    assert body == b"hello world"
    assert head.keep_alive


def test_parser_read_until_close_is_not_keep_alive() -> None:
    head, body = _parse(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert body == b"all of it"
    assert not head.keep_alive


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304), ("POST", 204)]
)
def test_parser_responses_without_body(method: str, status: int) -> None:
    parser = http11.ResponseParser(method)
    parser.receive_data(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    events = _events(parser)
    assert isinstance(events[0], http11.ResponseHead)
    assert events[1:] == [http11.END]
    assert not parser.leftover


def test_parser_skips_interim_responses_and_sees_connection_close() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    head, body = _parse(raw)
    assert (head.status, body, head.keep_alive) == (200, b"ok", False)
    head, _ = _parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not head.keep_alive


def test_parser_decodes_gzip() -> None:
    payload = gzip.compress(b"x" * 1000)
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload)
    _, body = _parse(raw + payload, step=10)
    assert body == b"x" * 1000


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed before a response
        b"HTTP/1.1 200 OK\r\nContent-Le",  # closed in the head
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed in the body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n",
    ],
)
def test_parser_rejects_broken_responses(raw: bytes) -> None:
    parser = http11.ResponseParser("GET")
    parser.receive_data(raw)

    def parse_all() -> None:
        _events(parser)
        parser.receive_data(b"")
        _events(parser)

    with pytest.raises(http11.ProtocolError):
        parse_all()


def test_serialize_request() -> None:
    hdrs = [("Content-Type", "text/plain"), ("Content-Length", "9")]
    data = http11.serialize_request("POST", "/s?offset=1", "h:1", hdrs, b"a")
    assert data == (
        b"POST /s?offset=1 HTTP/1.1\r\nContent-Type: text/plain\r\nHost: h:1\r\n"
        b"Accept-Encoding: identity\r\nContent-Length: 1\r\n\r\na"
    )
    assert b"Content-Length: 0\r\n" in http11.serialize_request("POST", "/", "h", [], None)
    assert b"Content-Length" not in http11.serialize_request("GET", "/", "h", [], None)
    with pytest.raises(ValueError, match="CR, LF"):
        http11.serialize_request("GET", "/", "h", [("X-A", "1\r\nX-Injected: 1")], None)


# --------------------------------------------------------------------------------------------
# which path is used


def test_builtin_path_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert use_builtin_http("http://127.0.0.1:8080/v1/stream/x")
    assert not use_builtin_http("https://example.com/v1/stream/x")
    assert not use_builtin_http("http://user:pw@example.com/x")
    assert not use_builtin_http("http://bücher.example/x")  # IDNA: httpx2's job
    assert use_builtin_http("http://127.0.0.1:1/v1/stream/bücher")
    assert not use_builtin_http("http://example.com:notaport/x")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert use_builtin_http("http://example.com/x")  # an https proxy does not apply
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert not use_builtin_http("http://example.com/x")
    monkeypatch.setenv("NO_PROXY", "example.com,localhost")
    assert use_builtin_http("http://example.com/x")
    assert not use_builtin_http("http://other.example.org/x")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    assert not use_builtin_http("http://other.example.org/x")


async def test_handles_pick_their_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with AsyncDurableStream("http://127.0.0.1:1/v1/stream/x") as plain:
        assert isinstance(plain._client, AsyncConnectionPool)
        lazy = plain.client  # an httpx2 client, made on first access, closed with the handle
        assert isinstance(lazy, httpx2.AsyncClient)
        assert plain.client is lazy
    assert lazy.is_closed
    async with AsyncDurableStream("https://127.0.0.1:1/v1/stream/x") as tls:
        assert isinstance(tls._client, httpx2.AsyncClient)
        assert tls.client is tls._client
    async with httpx2.AsyncClient() as mine:
        async with AsyncDurableStream("http://127.0.0.1:1/v1/stream/x", client=mine) as given:
            assert given._client is mine
            assert given.client is mine
        assert not mine.is_closed
    with DurableStream("http://127.0.0.1:1/v1/stream/x") as sync_plain:
        assert isinstance(sync_plain._client, ConnectionPool)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    async with AsyncDurableStream("http://example.com/v1/stream/x") as proxied:
        assert isinstance(proxied._client, httpx2.AsyncClient)
    with DurableStream("http://example.com/v1/stream/x") as sync_proxied:
        assert isinstance(sync_proxied._client, httpx2.Client)


# --------------------------------------------------------------------------------------------
# a scripted HTTP server


@dataclass
class Seen:
    """A request the scripted server received."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[[socket.socket, Seen], bool]
"""Writes a response to the socket; returns whether to keep reading requests on it."""


@dataclass
class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 whose replies a test scripts (one thread per
    connection). ``script(seen, n)`` returns the reply for the ``n``-th request (0-based)."""

    script: Callable[[Seen, int], Reply]
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    _socks: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "/v1/stream/s") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self.connections += 1
                number = self.connections
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                seen = Seen(number, method, target, headers, body)
                with self._lock:
                    self.requests.append(seen)
                    n = len(self.requests) - 1
                if not self.script(seen, n)(sock, seen):
                    return
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def posts(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST"]


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[Seen, int], Reply]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(script: Callable[[Seen, int], Reply]) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def respond(
    status: int = 200,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    chunked: bool = False,
    close: bool = False,
    truncate: int | None = None,
    reset: bool = False,
    stall: threading.Event | None = None,
) -> Reply:
    """A reply: ``close`` closes the connection after it (without saying so), ``truncate``
    sends only that many body bytes and then ``reset`` the connection (RST) or closes it,
    ``stall`` sends the head (and ``truncate`` bytes) and waits for the event."""

    def reply(sock: socket.socket, seen: Seen) -> bool:
        hdrs = dict(headers or {})
        payload = body
        if chunked:
            hdrs["Transfer-Encoding"] = "chunked"
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
                for i in range(0, len(body), 1000)
            )
            payload += b"0\r\n\r\n"
        else:
            hdrs["Content-Length"] = str(len(body))
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        data = head.encode() + b"\r\n" + payload
        if truncate is not None or stall is not None:
            cut = len(head) + 2 + (truncate or 0)
            sock.sendall(data[:cut])
            if stall is not None:
                stall.wait(10)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        sock.sendall(data)
        return not close

    return reply


def appended(offset: str = "0_1") -> Reply:
    return respond(204, {"Stream-Next-Offset": offset})


def catch_up(body: bytes, offset: str = "0_9", **kwargs: object) -> Reply:
    hdrs = {
        "Content-Type": "application/octet-stream",
        "Stream-Next-Offset": offset,
        "Stream-Up-To-Date": "true",
    }
    return respond(200, hdrs, body, **kwargs)  # type: ignore[arg-type]


BINARY = "application/octet-stream"
FAST_RETRY = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.02)


# --------------------------------------------------------------------------------------------
# async (trio and asyncio)


async def test_keep_alive_reuses_one_connection(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(
        lambda seen, n: appended(f"0_{n}") if seen.method == "POST" else catch_up(b"data")
    )
    with anyio.fail_after(10):
        async with AsyncDurableStream(server.url(), content_type=BINARY) as handle:
            for i in range(10):
                result = await handle.append(b"m%d" % i)
                assert result.next_offset == f"0_{i}"
            async with handle.stream(live=False) as res:
                assert await res.read_bytes() == b"data"
    assert len(server.requests) == 11
    assert server.connections == 1
    assert [p.body for p in server.posts()] == [b"m%d" % i for i in range(10)]
    assert server.requests[0].headers["accept-encoding"] == "identity"


async def test_server_closing_idle_connections(scripted: Callable[..., ScriptedServer]) -> None:
    """The server closes each connection after its response (no ``Connection: close``): the
    next append sees that the idle connection is gone and opens a new one — no error, and no
    POST sent twice."""
    server = scripted(lambda seen, n: respond(204, {"Stream-Next-Offset": f"0_{n}"}, close=True))
    with anyio.fail_after(10):
        async with AsyncDurableStream(
            server.url(), content_type=BINARY, retry=RetryPolicy(max_retries=0)
        ) as handle:
            for i in range(5):
                await handle.append(b"m%d" % i)
                await anyio.sleep(0.05)  # the server's FIN arrives while the connection idles
    assert [p.body for p in server.posts()] == [b"m%d" % i for i in range(5)]
    assert server.connections == 5


async def test_connection_close_header_is_honoured(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(lambda seen, n: appended() if n else respond(204, {"Connection": "close"}))
    with anyio.fail_after(10):
        async with AsyncDurableStream(server.url(), content_type=BINARY) as handle:
            await handle.append(b"a")
            await handle.append(b"b")
    assert server.connections == 2


async def test_reset_mid_body_resumes_the_read(scripted: Callable[..., ScriptedServer]) -> None:
    body = bytes(range(256)) * 400  # 102,400 bytes
    server = scripted(
        lambda seen, n: catch_up(body, truncate=50_000, reset=True) if n == 0 else catch_up(body)
    )
    with anyio.fail_after(10):
        async with astream(server.url(), live=False, retry=FAST_RETRY) as res:
            got = await res.read_bytes()
    assert got == body
    assert len(server.requests) == 2
    assert server.requests[1].target == server.requests[0].target


async def test_reset_mid_body_large_chunks_not_repeated(
    scripted: Callable[..., ScriptedServer],
) -> None:
    """With pieces smaller than the body, what was handed on before the reset is skipped."""
    body = bytes(range(256)) * 4000  # 1,024,000 bytes
    server = scripted(
        lambda seen, n: catch_up(body, truncate=700_000) if n == 0 else catch_up(body)
    )
    with anyio.fail_after(10):
        async with astream(
            server.url(), live=False, retry=FAST_RETRY, max_chunk_bytes=100_000
        ) as res:
            got = b"".join([chunk async for chunk in res])
    assert got == body


@pytest.mark.parametrize("chunked", [False, True])
async def test_large_bodies(scripted: Callable[..., ScriptedServer], chunked: bool) -> None:
    body = bytes(range(256)) * 20_000  # 5,120,000 bytes
    server = scripted(lambda seen, n: catch_up(body, chunked=chunked))
    with anyio.fail_after(20):
        async with astream(server.url(), live=False) as res:
            got = b"".join([chunk async for chunk in res])
            assert res.offset == "0_9"
    assert got == body


async def test_read_timeout(scripted: Callable[..., ScriptedServer]) -> None:
    never = threading.Event()
    server = scripted(lambda seen, n: lambda sock, seen: never.wait(10) and False)
    try:
        with anyio.fail_after(10), pytest.raises(FetchError) as info:
            await astream(server.url(), live=False, timeout=0.2, retry=RetryPolicy(max_retries=0))
        assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    finally:
        never.set()


async def test_connect_refused_is_not_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with anyio.fail_after(10):
        async with AsyncDurableStream(
            f"http://127.0.0.1:{port}/v1/stream/s",
            content_type=BINARY,
            retry=RetryPolicy(max_retries=0),
        ) as handle:
            with pytest.raises(FetchError) as info:
                await handle.append(b"x")
    assert isinstance(info.value.__cause__, httpx2.ConnectError)


async def test_cancelled_read_closes_its_connection(
    scripted: Callable[..., ScriptedServer],
) -> None:
    """A read cancelled in the middle of a body closes that connection (never pooled)."""
    release = threading.Event()
    server = scripted(
        lambda seen, n: catch_up(b"x" * 1000, truncate=10, stall=release) if n == 0 else appended()
    )
    try:
        with anyio.fail_after(10):
            async with AsyncDurableStream(server.url(), content_type=BINARY) as handle:
                with anyio.move_on_after(0.3):
                    async with handle.stream(live=False) as res:
                        await res.read_bytes()
                    pytest.fail("the read should have stalled")
                await handle.append(b"after")
    finally:
        release.set()
    assert server.connections == 2
    assert server.posts()[0].body == b"after"


async def test_http_error_bodies_are_read_and_connection_reused(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(
        lambda seen, n: (
            respond(404, {"Content-Type": "text/plain"}, b"no such stream")
            if n == 0
            else appended()
        )
    )
    with anyio.fail_after(10):
        async with AsyncDurableStream(server.url(), content_type=BINARY) as handle:
            with pytest.raises(StreamNotFoundError, match="no such stream"):
                await handle.append(b"a")
            await handle.append(b"b")
    assert server.connections == 1


async def test_request_target_is_percent_encoded_like_httpx(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(lambda seen, n: appended())
    pool = AsyncConnectionPool(5.0)
    try:
        for path in ["/v1/stream/café x", "/v1/stream/a%20b", '/p/[x]{y}|^`"<>']:
            url = server.url(path) + "?offset=-1&a=%C3%A9"
            response = await pool.send("POST", url, (), b"x")
            await response.aread()
            assert server.requests[-1].target.encode() == httpx2.URL(url).raw_path
    finally:
        await pool.aclose()


async def test_pool_direct_use_and_close(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(lambda seen, n: catch_up(b"abc", chunked=True))
    pool = AsyncConnectionPool(5.0)
    response = await pool.send("GET", server.url() + "?offset=-1")
    assert (response.status_code, response.headers["stream-up-to-date"]) == (200, "true")
    assert await response.aread() == b"abc"
    await pool.aclose()
    assert pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        await pool.send("GET", server.url())
    with pytest.raises(ValueError, match="http:// URLs only"):
        await AsyncConnectionPool().send("GET", "https://127.0.0.1/x")


# --------------------------------------------------------------------------------------------
# pipelined catch-up reads


PIECES = [bytes([65 + i]) * 50_000 for i in range(4)]


def paged(seen: Seen, n: int, *, close_after_first: str = "") -> Reply:
    """Catch-up pages: offset ``0_k`` answers piece ``k``, up to date at the last one.

    The first page sends its head and half its body, then waits (up to 5 s) until the next
    request has arrived on the connection before sending the rest: it records whether the
    client pipelined it. ``close_after_first``: ``"silent"`` closes the connection after the
    first page without saying so, ``"header"`` says ``Connection: close``.
    """
    k = 0 if "offset=-1" in seen.target else int(seen.target.rsplit("0_", 1)[1])
    last = k == len(PIECES) - 1
    hdrs = {"Content-Type": BINARY, "Stream-Next-Offset": f"0_{k + 1}"}
    if last:
        hdrs["Stream-Up-To-Date"] = "true"
    if k == 0 and close_after_first == "header":
        hdrs["Connection"] = "close"
    body = PIECES[k]

    def reply(sock: socket.socket, seen: Seen) -> bool:
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{a}: {b}\r\n" for a, b in hdrs.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body[:25_000])
        if k == 0:
            sock.settimeout(5)
            try:
                seen.headers["x-next-arrived"] = str(bool(sock.recv(1, socket.MSG_PEEK)))
            except TimeoutError:
                seen.headers["x-next-arrived"] = "False"
            sock.settimeout(None)
        sock.sendall(body[25_000:])
        return not (k == 0 and close_after_first)

    return reply


async def test_catch_up_pipelines_the_next_request(
    scripted: Callable[..., ScriptedServer],
) -> None:
    """While a catch-up body that is not the tail is read, the next request is already on the
    connection (the server prepares it meanwhile); every byte arrives once, on one connection."""
    server = scripted(paged)
    with anyio.fail_after(10):
        async with astream(server.url(), live=False) as res:
            got = await res.read_bytes()
    assert got == b"".join(PIECES)
    assert [r.target.rsplit("=", 1)[1] for r in server.requests] == ["-1", "0_1", "0_2", "0_3"]
    assert server.requests[0].headers["x-next-arrived"] == "True"
    assert server.connections == 1


@pytest.mark.parametrize("how", ["silent", "header"])
async def test_pipelined_request_lost_with_the_connection_is_sent_again(
    scripted: Callable[..., ScriptedServer], how: str
) -> None:
    """A server that closes the connection after a response drops the request pipelined
    behind it: the client sends it again on a new connection, at once (no retry delay)."""
    server = scripted(lambda seen, n: paged(seen, n, close_after_first=how))
    slow = RetryPolicy(max_retries=3, initial_delay=30, max_delay=30)
    with anyio.fail_after(10):
        async with astream(server.url(), live=False, retry=slow) as res:
            got = await res.read_bytes()
    assert got == b"".join(PIECES)
    assert [r.target.rsplit("=", 1)[1] for r in server.requests][-3:] == ["0_1", "0_2", "0_3"]
    assert server.connections == 2


# --------------------------------------------------------------------------------------------
# sync (the generated twin)


def test_sync_keep_alive_and_idle_close(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(
        lambda seen, n: (
            respond(204, {"Stream-Next-Offset": f"0_{n}"}, close=n >= 3)
            if seen.method == "POST"
            else catch_up(b"data", chunked=True)
        )
    )
    with DurableStream(server.url(), content_type=BINARY) as handle:
        for i in range(3):
            handle.append(b"k%d" % i)
        assert server.connections == 1
        for i in range(3):
            handle.append(b"c%d" % i)
            threading.Event().wait(0.05)  # let the server's FIN arrive
        with handle.stream(live=False) as res:
            assert res.read_bytes() == b"data"
    assert [p.body for p in server.posts()] == [b"k0", b"k1", b"k2", b"c0", b"c1", b"c2"]
    assert server.connections == 4


def test_sync_reset_mid_body_and_timeout(scripted: Callable[..., ScriptedServer]) -> None:
    body = bytes(range(256)) * 400
    server = scripted(
        lambda seen, n: catch_up(body, truncate=50_000, reset=True) if n == 0 else catch_up(body)
    )
    with stream(server.url(), live=False, retry=FAST_RETRY) as res:
        assert res.read_bytes() == body
    never = threading.Event()
    silent = scripted(lambda seen, n: lambda sock, seen: never.wait(10) and False)
    try:
        with pytest.raises(FetchError) as info:
            stream(silent.url(), live=False, timeout=0.2, retry=RetryPolicy(max_retries=0))
        assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    finally:
        never.set()


def test_sync_catch_up_pipelines_the_next_request(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(paged)
    with stream(server.url(), live=False) as res:
        assert res.read_bytes() == b"".join(PIECES)
    assert len(server.requests) == len(PIECES)
    assert server.requests[0].headers["x-next-arrived"] == "True"
    assert server.connections == 1
