"""The built-in HTTP/1.1 client: a keep-alive connection pool on anyio sockets.

The Durable Streams client uses it whenever it owns its HTTP connections (no ``client=``) and
the URL is plain ``http://`` with no proxy from the environment applying to it (see
:func:`use_builtin_http`); otherwise it uses httpx2. Parsing and serialising are the sans-IO
:mod:`resumable_streams._protocol.http11`; this module only moves bytes.

This file is the source of truth: ``_sync_http.py`` is generated from it by
``scripts/unasync.py``. Errors are raised as httpx2's exception types (``ConnectError`` /
``ConnectTimeout`` when nothing was sent; ``ReadTimeout``, ``ReadError``, ``WriteError``,
``RemoteProtocolError``... otherwise), so the flow runner treats both HTTP paths alike.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

# unasync: begin-async-only
import anyio
import anyio.abc

# unasync: end-async-only
import httpx2

from resumable_streams._protocol import http11

__all__ = ["AsyncConnectionPool", "AsyncHTTPResponse", "use_builtin_http"]

RECEIVE_BYTES = 262144
MAX_IDLE_PER_ORIGIN = 20

_NEEDS_QUOTING = re.compile(r'[^\x21-\x7e]|["<>`{}]')
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>`{}')
"""Characters left alone when a request target is percent-encoded (as httpx does)."""


def use_builtin_http(url: str) -> bool:
    """Whether the built-in HTTP/1.1 client serves ``url`` (else httpx2 does).

    It does for ``http://`` URLs without credentials for which no proxy environment variable
    (``HTTP_PROXY`` / ``ALL_PROXY``, minus ``NO_PROXY``) applies; ``https://`` and proxied URLs
    go through httpx2, as they would with a caller's client.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        return False
    if (
        parts.scheme != "http"
        or not parts.hostname
        or not parts.hostname.isascii()  # IDNA: httpx2's job
        or parts.username is not None
    ):
        return False
    proxies = urllib.request.getproxies_environment()
    if "http" not in proxies and "all" not in proxies:
        return True
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(parts.hostname, proxies))


def _timeouts(timeout: Any) -> tuple[float | None, float | None, float | None]:
    """(connect, read, write) seconds from a number, ``None`` or an ``httpx2.Timeout``."""
    if isinstance(timeout, httpx2.Timeout):
        return timeout.connect, timeout.read, timeout.write
    if timeout is None or isinstance(timeout, int | float):
        return timeout, timeout, timeout
    raise TypeError(f"timeout must be a number, None or an httpx2.Timeout, got {timeout!r}")


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read (then it must not be reused).

    That is EOF (the server closed it), a reset, or stray bytes; httpcore checks the same.
    """
    if sock.fileno() < 0:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


# --- the socket primitives: the only code that differs between async and sync -------------
# unasync: begin-async-only
_Stream = anyio.abc.SocketStream
_IO_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


async def _connect(host: str, port: int, timeout: float | None) -> _Stream:  # noqa: ASYNC109
    with anyio.fail_after(timeout):
        return await anyio.connect_tcp(host, port)


# (a bare CancelScope costs less than anyio.fail_after, which these two run on every request)
async def _send_all(stream: _Stream, data: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
    if timeout is None:
        await stream.send(data)
        return
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
        await stream.send(data)
    if scope.cancelled_caught:
        raise TimeoutError


async def _receive(stream: _Stream, timeout: float | None) -> bytes:  # noqa: ASYNC109
    try:
        if timeout is None:
            return await stream.receive(RECEIVE_BYTES)
        with anyio.CancelScope(deadline=anyio.current_time() + timeout):
            return await stream.receive(RECEIVE_BYTES)
        raise TimeoutError  # the scope's deadline cancelled the receive
    except anyio.EndOfStream:
        return b""


async def _close(stream: _Stream) -> None:
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(*_IO_ERRORS):
            await stream.aclose()


def _raw_socket(stream: _Stream) -> socket.socket:
    sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    return sock


# unasync: end-async-only
# unasync: _Stream = socket.socket
# unasync: _IO_ERRORS: tuple[type[BaseException], ...] = (OSError,)
# unasync:
# unasync:
# unasync: def _connect(host: str, port: int, timeout: float | None) -> _Stream:
# unasync:     sock = socket.create_connection((host, port), timeout)
# unasync:     sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
# unasync:     return sock
# unasync:
# unasync:
# unasync: def _send_all(stream: _Stream, data: bytes, timeout: float | None) -> None:
# unasync:     stream.settimeout(timeout)
# unasync:     stream.sendall(data)
# unasync:
# unasync:
# unasync: def _receive(stream: _Stream, timeout: float | None) -> bytes:
# unasync:     stream.settimeout(timeout)
# unasync:     return stream.recv(RECEIVE_BYTES)
# unasync:
# unasync:
# unasync: def _close(stream: _Stream) -> None:
# unasync:     with contextlib.suppress(OSError):
# unasync:         stream.close()
# unasync:
# unasync:
# unasync: def _raw_socket(stream: _Stream) -> socket.socket:
# unasync:     return stream


# -------------------------------------------------------------------------------------------


def _encode_request(
    method: str,
    url: str,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    content: bytes | None,
) -> tuple[str, int, bytes]:
    """The origin host and port of ``url``, and the bytes of the request."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the built-in HTTP client serves http:// URLs only, not {url!r}")
    host, port = parts.hostname, parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if _NEEDS_QUOTING.search(target):
        target = quote(target, safe=_TARGET_SAFE)  # UTF-8, as httpx2 would send it
    data = http11.serialize_request(method, target, parts.netloc, headers, content)
    return host, port, data


class AsyncConnectionPool:
    """Keep-alive HTTP/1.1 connections, reused across requests (one request at a time each).

    ``timeout``: a number, ``None`` or an ``httpx2.Timeout`` (connect, read and write timeouts;
    a read timeout bounds each wait for bytes, as in httpx). Safe to share between tasks (and,
    for the sync twin, threads). Close it with :meth:`aclose`.
    """

    def __init__(self, timeout: Any = None) -> None:
        self._connect_timeout, self._read_timeout, self._write_timeout = _timeouts(timeout)
        self._idle: dict[tuple[str, int], list[tuple[_Stream, socket.socket]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when their response ends."""
        self._closed = True
        with self._lock:
            idle = [stream for streams in self._idle.values() for stream, _ in streams]
            self._idle.clear()
        for stream in idle:
            await _close(stream)

    async def _checkout(self, origin: tuple[str, int]) -> tuple[_Stream, socket.socket] | None:
        """An idle connection to ``origin`` that the server has not closed, if any."""
        while True:
            with self._lock:
                streams = self._idle.get(origin)
                if not streams:
                    return None
                conn = streams.pop()
            if not _readable(conn[1]):
                return conn
            await _close(conn[0])

    async def _checkin(self, origin: tuple[str, int], conn: tuple[_Stream, socket.socket]) -> None:
        with self._lock:
            streams = self._idle.setdefault(origin, [])
            keep = not self._closed and len(streams) < MAX_IDLE_PER_ORIGIN
            if keep:
                streams.append(conn)
        if not keep:
            await _close(conn[0])

    async def send(
        self,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        content: bytes | None = None,
    ) -> AsyncHTTPResponse:
        """Send a request; return the response once its head has arrived.

        Read its body with :meth:`AsyncHTTPResponse.receive` / ``aread()``; close it
        (``aclose()``) if you stop before the end.
        """
        if self._closed:
            raise RuntimeError("the connection pool was closed")
        host, port, data = _encode_request(method, url, headers, content)
        origin = (host, port)
        conn = await self._checkout(origin)
        if conn is None:
            try:
                stream = await _connect(host, port, self._connect_timeout)
            except TimeoutError as exc:
                raise httpx2.ConnectTimeout(f"connecting to {host}:{port}: timed out") from exc
            except _IO_ERRORS as exc:
                raise httpx2.ConnectError(f"connecting to {host}:{port}: {exc!r}") from exc
            conn = (stream, _raw_socket(stream))
        try:
            await self._write(conn[0], data)
        except BaseException:
            await _close(conn[0])
            raise
        return await self._read_head(origin, conn, http11.ResponseParser(method))

    async def _read_head(
        self,
        origin: tuple[str, int],
        conn: tuple[_Stream, socket.socket],
        parser: http11.ResponseParser,
    ) -> AsyncHTTPResponse:
        stream = conn[0]
        try:
            while True:
                event = parser.next_event()
                if isinstance(event, http11.ResponseHead):
                    break
                parser.receive_data(await self._read(stream))
        except http11.ProtocolError as exc:
            await _close(stream)
            raise httpx2.RemoteProtocolError(str(exc)) from exc
        except BaseException:
            await _close(stream)
            raise
        response = AsyncHTTPResponse(self, origin, conn, parser, event)
        if parser.complete:
            await response._finish()
        return response

    async def _write(self, stream: _Stream, data: bytes) -> None:
        try:
            await _send_all(stream, data, self._write_timeout)
        except TimeoutError as exc:
            raise httpx2.WriteTimeout("timed out sending the request") from exc
        except _IO_ERRORS as exc:
            raise httpx2.WriteError(f"sending the request: {exc!r}") from exc

    async def _read(self, stream: _Stream) -> bytes:
        try:
            return await _receive(stream, self._read_timeout)
        except TimeoutError as exc:
            raise httpx2.ReadTimeout("timed out waiting for the response") from exc
        except _IO_ERRORS as exc:
            raise httpx2.ReadError(f"reading the response: {exc!r}") from exc


class AsyncHTTPResponse:
    """A response of :class:`AsyncConnectionPool`: status and headers, then the body."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        origin: tuple[str, int],
        conn: tuple[_Stream, socket.socket],
        parser: http11.ResponseParser,
        head: http11.ResponseHead,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self._stream: _Stream | None = conn[0]
        self._parser = parser
        self._next_method: str | None = None  # the method of a request pipelined behind this one
        self._piped: _Stream | None = None  # the connection, once this body ended, for that one
        self._keep_alive = head.keep_alive
        self.status_code = head.status
        self.reason_phrase = head.reason
        self.headers = head.headers
        """Header names lower-cased; repeated headers joined by ``", "``."""

    async def receive(self) -> bytes:
        """The next piece of the body; ``b""`` at its end (the connection is then released)."""
        stream = self._stream
        if stream is None:
            return b""
        parser = self._parser
        try:
            while True:
                event = parser.next_event()
                if isinstance(event, bytes):
                    return event
                if event is http11.END:
                    await self._finish()
                    return b""
                parser.receive_data(await self._pool._read(stream))
        except http11.ProtocolError as exc:
            await self.aclose()
            raise httpx2.RemoteProtocolError(str(exc)) from exc
        except BaseException:
            await self.aclose()
            raise

    async def aread(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := await self.receive():
            parts.append(chunk)
        return b"".join(parts)

    async def pipeline(
        self,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        content: bytes | None = None,
    ) -> bool:
        """Send the next request on this connection now, before this body is read (pipelining).

        The server answers it after this response, so it can prepare that answer while this
        body is still being read. Returns whether it was sent; then take its response with
        :meth:`next_response` once this body has ended. Only for idempotent requests: if this
        response turns out to be the connection's last, that request was never answered.
        """
        stream = self._stream
        if stream is None or not self._keep_alive or self._next_method is not None:
            return False
        host, port, data = _encode_request(method, url, headers, content)
        if (host, port) != self._origin:
            return False
        try:
            await self._pool._write(stream, data)
        except httpx2.TransportError:
            self._keep_alive = False  # never reuse it; reading this body reports the failure
            return False
        except BaseException:
            await self.aclose()
            raise
        self._next_method = method
        return True

    async def next_response(self) -> AsyncHTTPResponse | None:
        """The response to the request sent with :meth:`pipeline`, once this body has ended.

        ``None`` when there is none to read (nothing was pipelined, this body was not read to
        its end, or the server closed the connection after this response): send the request
        again.
        """
        stream, self._piped = self._piped, None
        method, self._next_method = self._next_method, None
        if stream is None or method is None:
            return None
        parser = http11.ResponseParser(method)
        leftover = self._parser.take_leftover()
        if leftover:
            parser.receive_data(leftover)
        return await self._pool._read_head(self._origin, self._conn, parser)

    async def _finish(self) -> None:
        """The response is complete: return its connection to the pool, or close it."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._next_method is not None and self._keep_alive:
            self._piped = stream  # carries the pipelined request's response next
            return
        if self._keep_alive and not self._parser.leftover and self._next_method is None:
            await self._pool._checkin(self._origin, self._conn)
        else:
            await _close(stream)

    async def aclose(self) -> None:
        """Stop reading: a connection with an unread body (or pipelined request) is closed."""
        stream, self._stream = self._stream, None
        piped, self._piped = self._piped, None
        if stream is not None:
            await _close(stream)
        if piped is not None:
            await _close(piped)
