"""A small, fast HTTP/1.1 server for ASGI apps, on anyio (trio or asyncio).

``resumable-streams serve`` uses it by default (``--http hypercorn`` picks hypercorn instead).
It exists for speed: per request it does one socket read, a handful of ``bytes`` operations
and one socket write (status line, headers and a small body leave in one ``send``), where
hypercorn's h11 state machine, event objects and per-message task hops cost several times
more CPU - the Durable Streams benchmark (``bench/durable_server_bench.py``) measured it.

What it implements, and nothing more:

* HTTP/1.1 and 1.0, keep-alive, pipelining (requests answered in order), ``Expect:
  100-continue``; request bodies framed by ``Content-Length`` or ``Transfer-Encoding:
  chunked``, streamed to the app as they arrive; responses framed by the app's
  ``Content-Length``, else chunked (HTTP/1.1) or by closing the connection (HTTP/1.0).
* Strict parsing, answered with 400 and a reason (431 for oversized heads) and a closed
  connection: malformed request lines and header lines, obsolete line folding, control
  characters, both ``Content-Length`` and ``Transfer-Encoding``, conflicting lengths,
  transfer codings other than ``chunked``, malformed chunks - the usual request-smuggling
  vectors are refused rather than interpreted.
* Timeouts: a request head must arrive within ``head_timeout`` seconds of its first byte; a
  request body that stalls (no byte for ``body_timeout`` seconds) is answered 408 and the
  app sees ``http.disconnect``; an idle keep-alive connection is closed after
  ``keep_alive_timeout``. Head and keep-alive timeouts are enforced by one reaper task per
  server (a connection records a deadline per request; the reaper, waking every
  ``min(timeouts) / 5`` seconds up to 1 s, closes the ones past it), so a request costs no
  cancel-scope operations.
* At most ``max_connections`` open connections: one more is answered 503 and closed.
* Lingering close (as nginx and Apache do): a connection closed while request bytes may
  still be coming (a body refused unread, a malformed request, a 503) is half-closed after
  the answer, then what the client still sends is read and discarded until it closes, for at
  most ``lingering_timeout`` seconds. Closing with unread bytes would make the kernel reset
  the connection, and the client could lose the answer (the reason of a 413) unread.
* ``http.disconnect``: once a request's body is consumed, the app's next ``receive()`` waits
  for the client to go away (what an SSE handler watches).
* ASGI lifespan (startup / shutdown), run for the whole life of :func:`serve_http1`.

I/O: on trio, the connection's raw non-blocking socket is read and written directly,
waiting only when a read would block - on Linux, once two connections are open, through
one edge-triggered epoll for all later ones (:class:`_EdgePoller`: no ``epoll_ctl`` per
wait), else with ``trio.lowlevel.wait_readable`` (a lone client skips the poller's task
hop); on asyncio, each connection is an ``asyncio.Protocol`` (:class:`_AsyncioIO`) on the
loop's own server over the bound sockets: reading stays on and a write is
``transport.write``. Both drive the same parser and ASGI bridge (:class:`_Connection`).

Not implemented: HTTP/2, TLS, WebSocket upgrades (answered 400/426 by the app), trailers
sent to the app. Put a TLS-terminating proxy in front for production traffic.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import select
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import suppress
from email.utils import formatdate
from functools import partial
from typing import Any, Final, NoReturn
from urllib.parse import unquote

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import TaskStatus

from .exchange import (
    BodyTooLarge,
    ClientGone,
    Exchange,
    FixedHeaders,
    Handler,
    NativeApp,
    merge_headers,
)

__all__ = ["HTTP1Limits", "serve_http1"]

logger = logging.getLogger("resumable_streams.durable.server.http1")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET: Final = re.compile(rb"/[\x21-\x7e]*")
# A header line: a token name, a colon, a value of visible octets, SP and HTAB (no control
# characters: a bare CR or LF never passes), optional whitespace around the value.
_FIELDS: Final = re.compile(
    rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\t\x20-\x7e\x80-\xff]*+(?:\r\n(?!\Z)|\Z))*+"
)
# A whole request head: method, target, minor version and header lines (_head_error names
# what is wrong with one that does not match).
_HEAD: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]++) (/[\x21-\x7e]*+) HTTP/1\.([01])(?:\r\n("
    + _FIELDS.pattern
    + rb"))?"
)
_COLONS: Final = itertools.repeat(":")
_METHOD_TEXT: Final = {
    method: method.decode() for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS")
}
_REASONS: Final = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HTTP1Limits:
    """Limits and timeouts of :func:`serve_http1` (seconds and bytes).

    ``max_connections`` caps the open connections: one more is answered ``503`` and closed.
    ``lingering_timeout`` bounds a lingering close (a connection closed while request bytes
    may still be coming is half-closed and drained until the client closes, at most this
    long; ``0`` closes at once). A graceful shutdown does not wait for lingering connections.
    """

    def __init__(
        self,
        *,
        max_head_size: int = 64 * 1024,
        max_headers: int = 100,
        head_timeout: float = 30.0,
        body_timeout: float = 30.0,
        keep_alive_timeout: float = 75.0,
        shutdown_timeout: float = 2.0,
        max_connections: int = 10_000,
        lingering_timeout: float = 2.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        for name, value in (
            ("head_timeout", head_timeout),
            ("body_timeout", body_timeout),
            ("keep_alive_timeout", keep_alive_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if not lingering_timeout >= 0:
            raise ValueError(f"lingering_timeout must not be negative, got {lingering_timeout}")
        self.max_head_size = max_head_size
        self.max_headers = max_headers
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_connections = max_connections
        self.lingering_timeout = lingering_timeout


class _BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class _Closed(ClientGone):
    """The peer closed the connection (or it broke).

    A :class:`~.exchange.ClientGone`, hence an :class:`OSError`, as ASGI asks of a ``send()``
    on a closed connection, so an app can tell a vanished client from its own failure.
    """


_FRAMING: Final = frozenset((b"content-length", b"connection", b"transfer-encoding"))
_status_lines: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n".encode()
        if 100 <= status <= 999:
            _status_lines[status] = line
    return line


_date_cache: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    value: bytes = _date_cache[1]
    return value


class _Connection:
    """One client connection: reads requests, runs the app for each, writes responses."""

    def __init__(
        self,
        app: ASGIApp,
        limits: HTTP1Limits,
        state: dict[str, Any],
        server: tuple[str, int],
        tracker: _Tracker,
        *,
        stream: anyio.abc.SocketStream | None = None,
        aio: _AsyncioIO | None = None,
    ) -> None:
        self.app = app
        self.native_route: Callable[[bytes], Handler | None] | None = None
        offers: object = app
        if isinstance(offers, NativeApp):  # takes some requests without ASGI
            self.native_route = offers.native_route
        self.limits = limits
        self.state = state
        self.server = server
        self.tracker = tracker
        # trio: an anyio stream, whose raw non-blocking socket is used directly - socket
        # calls then skip two scheduling round trips per call that trio's socket wrappers
        # spend on checkpoints; fairness comes from an explicit checkpoint every few
        # requests that did not have to wait. asyncio: the transport's own protocol
        # (_AsyncioIO), without anyio's pause/resume of reading around every read.
        self.stream = stream
        self.aio = aio
        self.sock: socket.socket | None = None
        self.wait_readable = tracker.wait_readable
        # In the tracker's edge-triggered epoll (else waits use trio's own wait_readable).
        self.polled = False
        remote: Any = None
        if stream is not None:
            self.sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            if tracker.poller is not None and len(tracker.connections) >= _DIRECT_WAITS:
                tracker.poller.register(self.sock)
                self.wait_readable = tracker.poller.wait_readable
                self.polled = True
            with suppress(anyio.TypedAttributeLookupError):
                remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        elif aio is not None and aio.transport is not None:
            remote = aio.transport.get_extra_info("peername")
        try:
            self.client: tuple[str, int] | None = (str(remote[0]), int(remote[1]))
        except (TypeError, IndexError, ValueError):
            self.client = None
        self.buf = bytearray()
        self.eof = False
        self.timer = anyio.CancelScope()
        self.reaped = False  # the reaper cancelled self.timer (cheaper to read than the scope)
        self.in_head = False
        self.unyielded = 0
        self.chunk_left = 0  # bytes of the current request-body chunk not yet read
        self.drained = True  # the last recv emptied the socket's receive buffer
        # Request bytes may be left unread (a refused or malformed request, a response sent
        # before its request body was read): the close lingers (see _linger).
        self.unread = False
        # When waiting for a request head: the time.monotonic() after which _Tracker.reap
        # cancels self.timer. A float store per request instead of moving a cancel scope's
        # deadline (which costs a heap operation in the event loop) twice per request.
        self.expires = math.inf

    # ------------------------------------------------------------------ reading

    async def _fill(self, wait_first: bool = False) -> None:
        """Read more bytes into ``self.buf``.

        ``wait_first``: wait for readability before the first ``recv`` (after a response,
        the next request has usually not arrived yet: a ``recv`` would only fail) - if the
        last ``recv`` drained the socket. (With the edge-triggered :class:`_EdgePoller`,
        bytes left in the socket would never signal again.)
        """
        sock = self.sock
        if sock is None:
            aio = self.aio
            assert aio is not None
            if not aio.incoming:
                self.unyielded = 0
            chunk = await aio.recv()
            if not chunk:
                self.eof = True
                raise _Closed
            self.buf += chunk
            return
        if wait_first and self.drained:
            self.unyielded = 0
            await self.wait_readable(sock)
        while True:  # trio: the non-blocking socket directly, waiting only when needed
            try:
                data = sock.recv(_RECV_SIZE)
            except BlockingIOError:
                self.unyielded = 0
                await self.wait_readable(sock)
                continue
            except OSError:
                self.eof = True
                raise _Closed from None
            if not data:
                self.eof = True
                raise _Closed
            self.drained = len(data) < _RECV_SIZE  # a short read took all there was
            self.buf += data
            return

    async def _read_head(self) -> bytearray | None:
        """The next request head (without the blank line), or None on a clean close.

        Timeouts: ``self.expires`` is set here and lifted while the app runs; the tracker's
        reaper cancels ``self.timer``, the connection's one cancel scope, once it passes.
        """
        if not self.buf:
            self.expires = time.monotonic() + self.limits.keep_alive_timeout
            try:
                await self._fill(wait_first=True)
            except _Closed:
                return None
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            self.in_head = True
            self.expires = time.monotonic() + self.limits.head_timeout
            while end < 0:
                if len(self.buf) > self.limits.max_head_size:
                    raise _BadRequest("request head too large", 431)
                await self._fill()
                end = self.buf.find(b"\r\n\r\n")
            self.in_head = False
        self.expires = math.inf
        if self.reaped:  # timed out just as the head arrived: don't start it
            return None
        if end > self.limits.max_head_size:
            raise _BadRequest("request head too large", 431)
        head = self.buf[:end]  # the regex in _parse takes a bytearray as well
        del self.buf[: end + 4]
        return head

    async def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 4096:
                raise _BadRequest("chunk header too long")
            await self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _read_chunk(self) -> bytes:
        """The next piece of a chunked body, as it arrives; b"" after the last chunk.

        A chunk is handed out in pieces of whatever is buffered (never collected whole), so a
        client announcing a huge chunk cannot make the server buffer it: the app sees the
        bytes as they come and can refuse them (413) early. Trailers are skipped, bounded by
        ``max_head_size``.
        """
        if self.chunk_left == 0:
            line = await self._read_line()
            size_text, _, extensions = line.partition(b";")
            size_text = size_text.strip(b" \t")
            if not size_text or len(size_text) > 16 or not _is_hex(size_text):
                raise _BadRequest("malformed chunk size")
            if _BAD_VALUE.search(extensions):  # a bare CR or LF: framing others may read apart
                raise _BadRequest("control character in a chunk extension")
            size = int(size_text, 16)
            if size == 0:
                trailers = 0
                while trailer := await self._read_line():  # trailers: ignored
                    trailers += len(trailer) + 2
                    if trailers > self.limits.max_head_size:
                        raise _BadRequest("chunked trailers too large", 431)
                return b""
            self.chunk_left = size
        if not self.buf:
            await self._fill()
        take = min(self.chunk_left, len(self.buf))
        data = bytes(self.buf[:take])
        del self.buf[:take]
        self.chunk_left -= take
        if self.chunk_left == 0:
            while len(self.buf) < 2:
                await self._fill()
            if self.buf[:2] != b"\r\n":
                raise _BadRequest("malformed chunk")
            del self.buf[:2]
        return data

    # ------------------------------------------------------------------ one request

    def _parse(self, head: bytes | bytearray) -> _Exchange:
        """The request this head starts (its framing checked; :class:`_BadRequest` if bad)."""
        match = _HEAD.fullmatch(head)  # one pass validates the request line and every field
        if match is None:
            _head_error(head, self.limits.max_headers)
        method, target, minor, fields = match.groups()
        http11 = minor == b"1"
        if fields:
            if fields.count(b"\r\n") >= self.limits.max_headers:
                raise _BadRequest("too many header fields", 431)
            text = fields.decode("latin-1")
            lines = text.split("\r\n")
            headers = {
                name.lower(): value.strip(" \t")
                for name, _, value in map(str.partition, lines, _COLONS)
            }
            if len(headers) < len(lines):  # a name repeats: join the values
                headers = merge_headers([line.split(":", 1) for line in lines])
        else:
            text = ""
            headers = {}
        length: int | None = 0
        content_length = headers.get("content-length")  # repeats: joined with ", "
        if headers.get("transfer-encoding") is not None:
            if headers["transfer-encoding"].lower() != "chunked":  # a repeat fails too
                raise _BadRequest("unsupported Transfer-Encoding")
            if content_length is not None:
                raise _BadRequest("both Content-Length and Transfer-Encoding")
            length = None
        elif content_length is not None:
            if "," in content_length:  # repeated (or a list): every value must agree
                lengths = {value.strip(" \t") for value in content_length.split(",")}
                if len(lengths) != 1:
                    raise _BadRequest("conflicting Content-Length values")
                (content_length,) = lengths
            if not (content_length.isascii() and content_length.isdigit()) or (
                len(content_length) > 18
            ):
                raise _BadRequest("malformed Content-Length")
            length = int(content_length)
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise _BadRequest("unsupported Expect value", 417)
        connection = headers.get("connection")
        if connection is not None:
            tokens = {token.strip(" \t") for token in connection.lower().split(",")}
            keep_alive = ("close" not in tokens) if http11 else ("keep-alive" in tokens)
        else:
            keep_alive = http11
        raw_path, _, query = target.partition(b"?")
        text_method = _METHOD_TEXT.get(method) or method.decode("ascii")  # a token: ASCII
        return _Exchange(
            self,
            text_method,
            raw_path,
            query,
            headers,
            text,
            length,
            keep_alive,
            expect is not None,
            http11,
        )

    async def run(self) -> None:
        if len(self.tracker.connections) >= self.limits.max_connections:
            await self._refuse()
            return
        self.tracker.connections.add(self)
        try:
            with self.timer:
                await self._serve_requests()
            if self.timer.cancelled_caught and self.in_head:
                await self._reject(408, "request head timed out")
        except _Closed:
            return
        except Exception:
            logger.exception("HTTP/1.1 connection failed")
        finally:
            try:
                if (self.unread or self.buf) and not self.eof:
                    await self._linger()
            finally:
                self.tracker.connections.discard(self)
                await self._close()

    async def _linger(self) -> None:
        """Half-close, then discard what the client still sends until it closes (bounded).

        Closing a socket with unread bytes in its receive buffer makes the kernel send a reset
        instead of a FIN: the client's ``send`` fails and its ``recv`` may fail before it has
        read the answer. So, after the answer (already handed to the kernel), the write side
        is shut down (the client reads the answer, then EOF) and incoming bytes are read and
        dropped until the client closes or ``lingering_timeout`` seconds have passed - a bound
        in time only, as nginx's ``lingering_time``: a byte cap would cut the linger short
        exactly while the client is still sending, i.e. reset it. Not a busy connection: a
        graceful shutdown cancels it with the idle ones.
        """
        timeout = self.limits.lingering_timeout
        if timeout <= 0:
            return
        if self.aio is not None:
            self.aio.write_eof()
        elif self.sock is not None:
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        # BusyResourceError: a read the app left waiting on this socket (trio) takes its bytes
        with anyio.move_on_after(timeout), suppress(_Closed, anyio.BusyResourceError):
            while True:
                self.buf.clear()
                await self._fill()
                await anyio.lowlevel.checkpoint()  # a fast sender: _fill may never wait

    async def _close(self) -> None:
        if self.aio is not None:
            self.aio.close()
        elif self.stream is not None:
            if self.polled and self.tracker.poller is not None and self.sock is not None:
                self.tracker.poller.unregister(self.sock)
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _refuse(self) -> None:
        """Answer 503 on a connection over ``max_connections`` and close it.

        The close lingers (the request is still coming, or unread): closing at once would
        reset the connection before the client has read the answer.
        """
        try:
            await self._reject(503, "too many open connections")
            await self._linger()
        finally:
            await self._close()

    async def _serve_requests(self) -> None:
        while True:
            try:
                head = await self._read_head()
                if head is None:
                    return
                exchange = self._parse(head)
            except _BadRequest as exc:
                self.unread = True
                await self._reject(exc.status, str(exc))
                return
            self.tracker.busy += 1
            try:
                if not await self._handle(exchange):
                    if not exchange.body_done:  # answered before its body was read
                        self.unread = True
                    return
            finally:
                self.tracker.done_one()
            if self.tracker.stopping:
                return
            self.unyielded += 1
            if self.unyielded >= 8:  # served from the buffer without waiting: let others run
                self.unyielded = 0
                await anyio.lowlevel.checkpoint()

    async def _reject(self, status: int, reason: str) -> None:
        body = reason.encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n"
        ).encode()
        with anyio.move_on_after(1), _suppress_closed():
            await self._send_raw(head + _date_header() + b"\r\n" + body)

    async def _handle(self, exchange: _Exchange) -> bool:
        """Run the app for one request; True if the connection can carry another."""
        handler = self.native_route(exchange.raw_path) if self.native_route else None
        try:
            if handler is not None:
                await handler(exchange)
            else:
                await self.app(exchange.scope(), exchange.receive, exchange.send)
        except _Closed:
            return False
        except Exception:
            logger.exception("app raised on %s %r", exchange.method, exchange.raw_path)
            if not exchange.started:
                await self._reject(500, "internal server error")
            return False
        if not exchange.started:
            await self._reject(500, "the app sent no response")
            return False
        if not exchange.finished:
            if exchange.pending_head:
                await self._send_raw(exchange.pending_head)
            return False  # the app ended mid-body: the response can only be ended by closing
        return (
            exchange.keep_alive
            and exchange.body_done
            and not exchange.gone
            and not exchange.close_delimited
        )

    async def _send_raw(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            assert self.aio is not None
            await self.aio.send(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise _Closed from None
        if sent == len(data):  # the usual case: all of it at once
            return
        view = memoryview(data)[sent:]
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                self.unyielded = 0
                await self.tracker.wait_writable(sock)
            except OSError:
                raise _Closed from None


class _Exchange(Exchange):
    """One request on a connection: its body and its response.

    Serves an ASGI app (:meth:`scope`, :meth:`receive`, :meth:`send`) and a
    :class:`~.exchange.NativeApp` handler (the :class:`~.exchange.Exchange` methods) with the
    same framing code.
    """

    __slots__ = (
        "body_done",
        "chunked_out",
        "close_delimited",
        "conn",
        "continue_pending",
        "fields",
        "finished",
        "gone",
        "http11",
        "keep_alive",
        "no_body",
        "pending_head",
        "remaining",
        "request_ended",
    )

    def __init__(
        self,
        conn: _Connection,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: dict[str, str],
        fields: str,
        length: int | None,
        keep_alive: bool,
        expect: bool,
        http11: bool,
    ) -> None:
        super().__init__(method, raw_path, query, headers, "", "http", conn.server)
        self.fields = fields  # the header lines as received (for ASGI)
        self.conn = conn
        self.remaining = length  # body bytes left (None: chunked, not finished)
        self.body_done = length == 0
        self.request_ended = False  # the app was told the request body is complete
        self.continue_pending = expect and http11
        self.keep_alive = keep_alive
        self.http11 = http11
        self.finished = False
        self.chunked_out = False
        self.close_delimited = False
        self.no_body = False
        self.pending_head = b""
        self.gone = False

    # ------------------------------------------------------------------ request body

    async def _body_piece(self) -> bytes:
        """The next piece of the request body (sets ``body_done`` after the last).

        A malformed or stalled body is answered 400 / 408 here (unless a response began)
        and raises :class:`_Closed`, as a vanished client does; the connection is dropped
        and whatever the app sends afterwards is discarded.
        """
        conn = self.conn
        if self.continue_pending:
            self.continue_pending = False
            if not self.started:  # never after (or inside) the final response
                await conn._send_raw(b"HTTP/1.1 100 Continue\r\n\r\n")
        remaining = self.remaining
        if remaining is not None and len(conn.buf) >= remaining:
            return self._take_buffered(remaining)  # no timeout scope needed
        try:
            with anyio.move_on_after(conn.limits.body_timeout):
                if remaining is not None:  # Content-Length
                    if not conn.buf:
                        await conn._fill()
                    take = min(remaining, len(conn.buf))
                    data = bytes(conn.buf[:take])
                    del conn.buf[:take]
                    self.remaining = remaining - take
                    self.body_done = self.remaining == 0
                else:
                    data = await conn._read_chunk()
                    self.body_done = not data
                return data
            failure = _BadRequest("request body timed out", 408)
        except _Closed:
            self.gone = self.body_done = True
            raise
        except _BadRequest as exc:
            failure = exc
        self.gone = self.body_done = True
        conn.unread = True  # the rest of the malformed or stalled body may still come
        if not self.started:
            self.started = self.finished = True
            await conn._reject(failure.status, str(failure))
        raise _Closed

    def _take_buffered(self, remaining: int) -> bytes:
        """The rest of a ``Content-Length`` body, all of it already in the buffer."""
        buf = self.conn.buf
        if len(buf) == remaining:  # the usual case: nothing pipelined behind it
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:remaining])
            del buf[:remaining]
        self.remaining = 0
        self.body_done = True
        return data

    async def read_body(self, limit: int) -> bytes:
        """The whole body (see :meth:`Exchange.read_body`)."""
        remaining = self.remaining
        if remaining is not None:
            if remaining > limit:
                raise BodyTooLarge
            if not self.continue_pending and len(self.conn.buf) >= remaining:
                self.request_ended = True
                return self._take_buffered(remaining)  # the usual case: no waiting
        self.request_ended = True
        chunks: list[bytes] = []
        size = 0
        while not self.body_done:
            data = await self._body_piece()
            size += len(data)
            if size > limit:
                raise BodyTooLarge
            chunks.append(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def wait_disconnect(self) -> None:
        """Return once the client has gone; keep pipelined bytes for the next request."""
        conn = self.conn
        try:
            while not self.body_done:
                await self._body_piece()
            while not self.gone and len(conn.buf) <= conn.limits.max_head_size:
                await conn._fill()
        except _Closed:
            self.gone = True
            return
        if not self.gone:
            await anyio.sleep_forever()

    # ------------------------------------------------------------------ response

    def _begin(self, status: int, fields: bytes, has_length: bool) -> None:
        """Set the response head: status line, date, header lines ``fields``, framing."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        self.no_body = no_body = self.method == "HEAD" or status in (204, 304) or status < 200
        tail = b"\r\n"
        if not no_body and not has_length:
            if self.http11:
                self.chunked_out = True
                tail = b"transfer-encoding: chunked\r\n" + tail
            else:
                self.close_delimited = True
                self.keep_alive = False
        if not self.body_done:
            self.keep_alive = False  # unread request body: don't guess where it ends
        if not self.keep_alive:
            tail = b"connection: close\r\n" + tail
        elif not self.http11:
            tail = b"connection: keep-alive\r\n" + tail
        self.pending_head = b"".join((_status_line(status), _date_header(), fields, tail))

    async def _write(self, body: bytes, more: bool) -> None:
        """Send a piece of the response body, with the head if it is still pending."""
        if self.finished:
            return
        if self.no_body:
            payload = b""
        elif self.chunked_out:
            payload = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                payload += b"0\r\n\r\n"
        else:
            payload = body
        if not more:
            self.finished = True
        data = self.pending_head + payload if self.pending_head else payload
        self.pending_head = b""
        if data:
            try:
                await self.conn._send_raw(data)
            except BaseException:  # cut short (e.g. cancelled): no response can follow it
                self.keep_alive = False
                raise

    async def respond(
        self, status: int, headers: Mapping[str, str], body: bytes, fixed: FixedHeaders
    ) -> None:
        """A whole response in one ``send`` (see :meth:`Exchange.respond`)."""
        lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
        if status != 204 and status != 304:
            lines.append(f"content-length: {len(body)}\r\n")
        self._begin(status, fixed.block + "".join(lines).encode("latin-1"), True)
        await self._write(body, False)

    async def start(self, status: int, headers: Mapping[str, str], fixed: FixedHeaders) -> None:
        """Begin a streamed (chunked) response; the head leaves with the first piece."""
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        self._begin(status, fixed.block + lines.encode("latin-1"), False)

    async def write(self, chunk: bytes) -> None:
        """Send a piece of a streamed response."""
        if chunk:
            await self._write(chunk, True)

    async def end(self) -> None:
        """End a streamed response."""
        await self._write(b"", False)

    # ------------------------------------------------------------------ ASGI

    def scope(self) -> Scope:
        """The ASGI ``http`` scope of this request."""
        text_path = self.raw_path.decode("ascii")  # checked by _parse
        path = unquote(text_path, errors="surrogateescape") if "%" in text_path else text_path
        conn = self.conn
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1" if self.http11 else "1.0",
            "method": self.method,
            "scheme": "http",
            "path": path,
            "raw_path": self.raw_path,
            "query_string": self.query_string,
            "root_path": "",
            "headers": [
                (name.lower().encode("latin-1"), value.strip(" \t").encode("latin-1"))
                for name, _, value in map(str.partition, self.fields.split("\r\n"), _COLONS)
            ]
            if self.fields
            else [],
            "client": conn.client,
            "server": conn.server,
            "state": dict(conn.state),
        }

    async def receive(self) -> Message:
        """ASGI ``receive``: the body in pieces, then ``http.disconnect`` once the client goes."""
        if self.body_done:
            if not self.request_ended and not self.gone:
                self.request_ended = True  # a body-less request: one empty message
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.wait_disconnect()
            return {"type": "http.disconnect"}
        try:
            data = await self._body_piece()
        except _Closed:
            return {"type": "http.disconnect"}
        self.request_ended = self.body_done
        return {"type": "http.request", "body": data, "more_body": not self.body_done}

    async def send(self, message: Message) -> None:
        """ASGI ``send``."""
        kind = message["type"]
        if self.gone and self.finished:
            return  # the connection is being dropped (a malformed body was answered)
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            fields: list[bytes] = []
            has_length = False
            for name, value in message.get("headers", ()):
                lname = name.lower()
                if lname in _FRAMING:
                    if lname == b"content-length":
                        has_length = True
                    else:
                        if lname == b"connection" and b"close" in value.lower():
                            self.keep_alive = False
                        continue
                fields += (name, b": ", value, b"\r\n")
            self._begin(int(message["status"]), b"".join(fields), has_length)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        await self._write(bytes(message.get("body", b"")), bool(message.get("more_body", False)))


_READ_HIGH_WATER: Final = 256 * 1024
# trio: a connection opened while fewer than this many are open waits with trio's own
# wait_readable (one task wake-up per request); the others share the edge-triggered epoll
# (:class:`_EdgePoller`: no epoll_ctl per wait, but its task's wake-up comes first). A lone
# client saves a task hop and a system call per request; a crowd saves an epoll_ctl each.
_DIRECT_WAITS: Final = 2
_RECV_SIZE: Final = 65536


class _AsyncioIO(asyncio.Protocol):
    """asyncio: one connection's bytes straight from its transport.

    Reading stays on (paused only while more than ``_READ_HIGH_WATER`` bytes wait); a read
    that finds bytes waiting does not touch the event loop, a write is ``transport.write``.
    """

    def __init__(self, on_connect: Callable[[_AsyncioIO], object]) -> None:
        self.on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        self.incoming = bytearray()
        self.eof = False
        self.lost = False
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a socket transport
        self.on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.incoming += data
        if len(self.incoming) > _READ_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        _wake(self.waiter)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.waiter)
        return True  # keep the connection open to answer what was sent before the EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        _wake(self.waiter)
        _wake(self.drained)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.drained)

    async def recv(self) -> bytearray:
        """What has arrived (waiting for something); empty at the end of the stream."""
        while not self.incoming:
            if self.eof:
                return bytearray()
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data, self.incoming = self.incoming, bytearray()
        if self.reading_paused and not self.lost:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    async def send(self, data: bytes) -> None:
        """Write ``data``; wait while the transport's buffer is over its high-water mark."""
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            raise _Closed
        transport.write(data)
        while self.writing_paused and not self.lost:
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self.drained
            finally:
                self.drained = None
        if self.lost:
            raise _Closed

    def write_eof(self) -> None:
        """Half-close: a FIN once the buffered bytes are sent (reading goes on)."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            with suppress(OSError, RuntimeError):
                transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _EdgePoller:
    """trio on Linux: readiness of the server's connections from one edge-triggered epoll.

    trio's own ``wait_readable`` re-arms a one-shot epoll registration per wait (an
    ``epoll_ctl`` system call and its bookkeeping on every request). Here each connection
    is registered once (``EPOLLIN | EPOLLET``); one task waits for this epoll's own file
    descriptor to become readable, collects the ready connections and reschedules the tasks
    waiting on them. An edge that arrives while nobody waits is kept in ``ready``, so a
    later wait returns at once (the caller then reads until ``EAGAIN`` as usual).
    """

    def __init__(self) -> None:
        import trio

        self._trio = trio.lowlevel
        self._epoll = select.epoll()
        self._flags = select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP
        self._waiters: dict[int, Any] = {}
        self._ready: set[int] = set()

    def register(self, sock: socket.socket) -> None:
        self._epoll.register(sock.fileno(), self._flags)

    def unregister(self, sock: socket.socket) -> None:
        """Before ``sock`` closes; a read still waiting on it (an app's) gets :class:`_Closed`.

        (Its file descriptor may be reused at once by the next connection.)
        """
        fd = sock.fileno()
        if fd >= 0:
            with suppress(OSError, ValueError):  # ValueError: the poller has stopped
                self._epoll.unregister(fd)
            self._ready.discard(fd)
            task = self._waiters.pop(fd, None)
            if task is not None:
                import outcome  # trio's own dependency

                self._trio.reschedule(task, outcome.Error(_Closed()))

    async def wait_readable(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._ready:
            self._ready.discard(fd)
            try:
                await self._trio.checkpoint()
            except BaseException:  # cancelled: keep the edge for the next wait
                self._ready.add(fd)
                raise
            return
        waiters = self._waiters
        if fd in waiters:
            raise anyio.BusyResourceError("reading")
        waiters[fd] = self._trio.current_task()

        def abort(_: object) -> Any:
            waiters.pop(fd, None)
            return self._trio.Abort.SUCCEEDED

        await self._trio.wait_task_rescheduled(abort)

    async def run(self) -> None:
        """Forever: wake the tasks whose connections became readable."""
        trio = self._trio
        poll = self._epoll.poll
        waiters = self._waiters
        ready = self._ready
        try:
            while True:
                await trio.wait_readable(self._epoll.fileno())
                for fd, _ in poll(0, 256):
                    task = waiters.pop(fd, None)
                    if task is None:
                        ready.add(fd)
                    else:
                        trio.reschedule(task)
        finally:
            self._epoll.close()


class _Tracker:
    """The open connections: how many are busy (for a graceful shutdown), their timeouts."""

    def __init__(self, limits: HTTP1Limits, raw_io: bool) -> None:
        self.busy = 0
        self.stopping = False
        self.idle = anyio.Event()
        self.connections: set[_Connection] = set()
        self.wait_readable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_readable
        self.wait_writable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_writable
        self.poller: _EdgePoller | None = None
        if raw_io:  # trio's own functions: anyio's wrappers look the backend up per call
            import trio

            self.wait_readable = trio.lowlevel.wait_readable
            self.wait_writable = trio.lowlevel.wait_writable
            if hasattr(select, "epoll"):
                self.poller = _EdgePoller()
        # The reaper's period: a timeout fires at most this late.
        self.period = min(1.0, max(0.01, min(limits.head_timeout, limits.keep_alive_timeout) / 5))

    async def reap(self) -> None:
        """Forever: close connections whose head or keep-alive timeout has passed."""
        while True:
            await anyio.sleep(self.period)
            now = time.monotonic()
            for conn in self.connections:
                if conn.expires <= now:
                    conn.reaped = True
                    conn.timer.cancel()

    def done_one(self) -> None:
        self.busy -= 1
        if self.busy == 0 and self.stopping:
            self.idle.set()

    async def wait_idle(self) -> None:
        self.stopping = True
        if self.busy == 0:
            return
        await self.idle.wait()


class _suppress_closed:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        return exc_type is not None and issubclass(
            exc_type, (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
        )


def _head_error(head: bytes | bytearray, max_headers: int) -> NoReturn:
    """Raise the 400 (or 431) that names what is wrong with a head that failed ``_HEAD``."""
    request_line, _, fields = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise _BadRequest("malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _BadRequest("unsupported HTTP version")
    if not _TOKEN.fullmatch(method):
        raise _BadRequest("malformed method")
    if not _TARGET.fullmatch(target):
        raise _BadRequest("malformed request target")
    lines = fields.split(b"\r\n")
    if len(lines) > max_headers:
        raise _BadRequest("too many header fields", 431)
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _BadRequest("malformed header line")
        if _BAD_VALUE.search(value.strip(b" \t")):
            raise _BadRequest("control character in a header value")
    raise _BadRequest("malformed header line")


def _is_hex(text: bytes) -> bool:
    return all(c in b"0123456789abcdefABCDEF" for c in text)


async def _lifespan(
    app: ASGIApp,
    state: dict[str, Any],
    started: anyio.Event,
    stop: anyio.Event,
    failure: list[str | Exception],
) -> None:
    """Drive the ASGI lifespan protocol: startup, wait for ``stop``, shutdown.

    A failed startup leaves its message in ``failure``, then the app's own exception if it
    raised one (``started`` is set once the app has returned or raised).
    """
    queue: list[Message] = [{"type": "lifespan.startup"}]
    wake = anyio.Event()

    async def receive() -> Message:
        nonlocal wake
        while not queue:
            await wake.wait()
            wake = anyio.Event()
        return queue.pop(0)

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            failure.append(str(message.get("message") or "startup failed"))
        if kind == "lifespan.startup.complete":
            started.set()

    async def shutdown_when_stopped() -> None:
        await stop.wait()
        queue.append({"type": "lifespan.shutdown"})
        wake.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    async with anyio.create_task_group() as tg:
        tg.start_soon(shutdown_when_stopped)
        try:
            await app(scope, receive, send)
        except Exception as exc:
            if failure and not started.is_set():  # startup failed: serve_http1 raises exc
                failure.append(exc)
            elif not started.is_set():  # an app without lifespan support: serve it anyway
                logger.debug("ASGI app does not support lifespan", exc_info=True)
            elif not failure:
                logger.exception("ASGI lifespan shutdown failed")
        finally:
            started.set()
            tg.cancel_scope.cancel()


async def serve_http1(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    limits: HTTP1Limits | None = None,
    task_status: TaskStatus[list[tuple[str, int]]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger()`` returns.

    Runs the app's lifespan around the whole service; reports the bound addresses through
    ``task_status`` (``port=0`` picks a free port). On shutdown it stops accepting, then
    gives open connections ``limits.shutdown_timeout`` seconds before cancelling them.
    """
    limits = limits or HTTP1Limits()
    state: dict[str, Any] = {}
    started = anyio.Event()
    stop_lifespan = anyio.Event()
    failure: list[str | Exception] = []
    async with anyio.create_task_group() as outer:
        outer.start_soon(_lifespan, app, state, started, stop_lifespan, failure)
        await started.wait()
        if failure:
            stop_lifespan.set()
            if isinstance(failure[-1], Exception):
                raise failure[-1]  # the app's own error, e.g. its storage cannot be opened
            raise RuntimeError(f"ASGI lifespan startup failed: {failure[0]}")
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        bound = [
            (
                str(one.extra(anyio.abc.SocketAttribute.local_address)[0]),
                int(one.extra(anyio.abc.SocketAttribute.local_port)),
            )
            for one in listener.listeners
        ]
        server = bound[0]
        raw_io = hasattr(anyio.lowlevel.current_token().native_token, "run_sync_soon")  # trio
        tracker = _Tracker(limits, raw_io)
        async with anyio.create_task_group() as conns:
            conns.start_soon(tracker.reap)
            if tracker.poller is not None:
                conns.start_soon(tracker.poller.run)

            async def handle(stream: anyio.abc.SocketStream) -> None:
                await _Connection(app, limits, state, server, tracker, stream=stream).run()

            def connected(aio: _AsyncioIO) -> None:
                if tracker.stopping:
                    aio.close()
                    return
                conns.start_soon(_Connection(app, limits, state, server, tracker, aio=aio).run)

            async def accept() -> None:
                async with listener:
                    if raw_io:
                        await listener.serve(handle, task_group=conns)
                        return
                    # asyncio: the loop's own server on the sockets bound above
                    loop = asyncio.get_running_loop()
                    servers = [
                        await loop.create_server(
                            partial(_AsyncioIO, connected),
                            sock=one.extra(anyio.abc.SocketAttribute.raw_socket),
                        )
                        for one in listener.listeners
                    ]
                    try:
                        await anyio.sleep_forever()
                    finally:
                        for one_server in servers:
                            one_server.close()

            async with anyio.create_task_group() as accepting:
                accepting.start_soon(accept)
                task_status.started(bound)
                await shutdown_trigger()
                tracker.stopping = True
                accepting.cancel_scope.cancel()
            with anyio.move_on_after(limits.shutdown_timeout):
                await tracker.wait_idle()
            conns.cancel_scope.cancel()
        stop_lifespan.set()
