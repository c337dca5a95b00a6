"""Thin client drivers on anyio byte streams: one HTTP/1.1 GET (h11) and a WebSocket (wsproto).

Only what the resuming clients need. Both parse with sans-IO libraries and do I/O here; both
are cancel-safe in the sense that matters to the clients above: a cancelled read loses no
bytes (anyio's ``receive`` is atomic), and a half-open connection is closed by its owner.
"""

from __future__ import annotations

import ssl
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
import wsproto
import wsproto.connection
import wsproto.events as ws_events
from wsproto.utilities import LocalProtocolError as WSLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from ..errors import ConfigurationError

__all__ = ["DROPPED", "HTTPResponse", "Target", "WebSocketClient", "http_get", "parse_url"]

READ_SIZE = 65536

#: Exceptions that mean "the connection is gone or broken": the client reconnects.
DROPPED: tuple[type[BaseException], ...] = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    h11.RemoteProtocolError,
    WSRemoteProtocolError,
    WSLocalProtocolError,
    ssl.SSLError,
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: parsed from a ``http(s)://`` or ``ws(s)://`` URL."""

    url: str
    host: str
    port: int
    tls: bool
    path: str  # path and query, what goes on the request line

    @property
    def host_header(self) -> str:
        """The ``Host`` header value."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str, *, websocket: bool) -> Target:
    """Parse ``url``; :class:`ConfigurationError` naming it when it is not usable."""
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a str, got {url!r}")
    parts = urlsplit(url)
    schemes = {"ws": False, "wss": True} if websocket else {"http": False, "https": True}
    if parts.scheme not in schemes:
        raise ConfigurationError(f"url must start with {' or '.join(schemes)}://, got {url!r}")
    tls = schemes[parts.scheme]
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ConfigurationError(f"url has a bad port: {url!r}") from None
    if not parts.hostname:
        raise ConfigurationError(f"url has no host: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(url, parts.hostname, port, tls, path)


async def _connect(target: Target, ssl_context: ssl.SSLContext | None) -> anyio.abc.ByteStream:
    if target.tls:
        return await anyio.connect_tcp(
            target.host,
            target.port,
            tls=True,
            ssl_context=ssl_context or ssl.create_default_context(),
            tls_hostname=target.host,
        )
    return await anyio.connect_tcp(target.host, target.port)


class HTTPResponse:
    """A response whose body is read incrementally with :meth:`receive_body`."""

    def __init__(
        self, stream: anyio.abc.ByteStream, conn: h11.Connection, response: h11.Response
    ) -> None:
        self._stream = stream
        self._conn = conn
        self.status: int = response.status_code
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
        }

    async def receive_body(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. Raises a :data:`DROPPED` error."""
        while True:
            event = self._conn.next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b""
            if event is h11.NEED_DATA:
                try:
                    data = await self._stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    data = b""
                self._conn.receive_data(data)
                continue
            raise h11.RemoteProtocolError(f"unexpected HTTP event {event!r}")

    async def read_text(self, limit: int = 4096) -> str:
        """Up to ``limit`` bytes of the (short) body as text, for error messages."""
        out = b""
        while len(out) < limit:
            piece = await self.receive_body()
            if not piece:
                break
            out += piece
        return out[:limit].decode("utf-8", "replace")

    async def aclose(self) -> None:
        """Close the connection at once."""
        await anyio.aclose_forcefully(self._stream)


async def http_get(
    target: Target, headers: dict[str, str], *, ssl_context: ssl.SSLContext | None = None
) -> HTTPResponse:
    """Send ``GET`` and return once the response head arrived."""
    stream = await _connect(target, ssl_context)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target.path,
            headers=[("Host", target.host_header), *headers.items()],
        )
        await stream.send(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                return HTTPResponse(stream, conn, event)
            _unexpected(event)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


def _unexpected(event: object) -> NoReturn:
    raise h11.RemoteProtocolError(f"unexpected HTTP event {event!r}")


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server refused the WebSocket handshake with an HTTP status."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The server closed the WebSocket (``code`` 1006 when the connection just dropped)."""

    code: int
    reason: str


class WebSocketClient:
    """A client WebSocket on an anyio byte stream (text and binary messages, ping/pong)."""

    def __init__(self, stream: anyio.abc.ByteStream, conn: wsproto.WSConnection) -> None:
        self._stream = stream
        self._conn = conn
        self._events: deque[ws_events.Event] = deque()
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self.closed: Closed | None = None

    @classmethod
    async def connect(
        cls,
        target: Target,
        *,
        subprotocols: list[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WebSocketClient | Rejected:
        """Open the connection and do the handshake."""
        stream = await _connect(target, ssl_context)
        try:
            conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            request = ws_events.Request(
                host=target.host_header, target=target.path, subprotocols=subprotocols or []
            )
            await stream.send(conn.send(request))
            client = cls(stream, conn)
            body = b""
            status = 0
            while True:
                event = await client._next_event()
                if isinstance(event, ws_events.AcceptConnection):
                    return client
                if isinstance(event, ws_events.RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        break
                elif isinstance(event, ws_events.RejectData):
                    body += event.data
                    if event.body_finished:
                        break
            await anyio.aclose_forcefully(stream)
            return Rejected(status, body[:4096].decode("utf-8", "replace"))
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def _next_event(self) -> ws_events.Event:
        while not self._events:
            try:
                data: bytes | None = await self._stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                data = None
            self._conn.receive_data(data)
            self._events.extend(self._conn.events())
            if data is None and not self._events:
                raise anyio.EndOfStream
        return self._events.popleft()

    async def receive(self) -> str | bytes | Closed:
        """The next whole message, or :class:`Closed` (after answering the close)."""
        if self.closed is not None:
            return self.closed
        while True:
            try:
                event = await self._next_event()
            except DROPPED:
                self.closed = Closed(1006, "connection lost")
                return self.closed
            if isinstance(event, ws_events.TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text = "".join(self._text)
                    self._text.clear()
                    return text
            elif isinstance(event, ws_events.BytesMessage):
                self._bytes.append(bytes(event.data))
                if event.message_finished:
                    data = b"".join(self._bytes)
                    self._bytes.clear()
                    return data
            elif isinstance(event, ws_events.Ping):
                await self._send_raw(self._conn.send(event.response()))
            elif isinstance(event, ws_events.CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                if self._conn.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    await self._send_raw(self._conn.send(event.response()))
                await anyio.aclose_forcefully(self._stream)
                return self.closed

    async def _send_raw(self, data: bytes) -> None:
        with suppress(*DROPPED):  # reported by the next receive
            await self._stream.send(data)

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message.

        Once the peer has started closing, the message is dropped: the next :meth:`receive`
        reports the close (with the peer's code and reason).
        """
        if self._conn.state is not wsproto.connection.ConnectionState.OPEN:
            return
        if isinstance(message, str):
            data = self._conn.send(ws_events.TextMessage(data=message))
        else:
            data = self._conn.send(ws_events.BytesMessage(data=message))
        await self._stream.send(data)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if still possible) and drop the connection."""
        if self.closed is None and self._conn.state is wsproto.connection.ConnectionState.OPEN:
            self.closed = Closed(code, reason)
            with anyio.move_on_after(1, shield=True):
                with suppress(*DROPPED):
                    await self._stream.send(
                        self._conn.send(ws_events.CloseConnection(code=code, reason=reason))
                    )
        await anyio.aclose_forcefully(self._stream)
