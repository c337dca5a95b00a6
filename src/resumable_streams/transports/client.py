"""Clients that resume by themselves: SSE and WebSocket readers of a resumable stream.

::

    async with open_resumable_websocket("ws://host/chat/42/ws") as stream:
        async for text in stream:
            print(text, end="")

    async with open_resumable_sse("http://host/chat/42/stream") as stream:
        print(await stream.read_all())

A dropped connection (reset, EOF before the end, a server restart, close code 1006/1001/4503,
HTTP 5xx/429) is retried with exponential backoff and full jitter, resuming from the last
position received; every chunk is checked to start exactly where the previous one ended, so
the text is delivered with no duplicate and no gap. The caller only sees the end: iteration
stops after the server's ``done``, or raises a
:class:`~resumable_streams.errors.TransportError` subclass (not found, rejected, producer
failed, finished while away, or :class:`~resumable_streams.errors.ReconnectFailedError` when
``retry.max_retries`` consecutive attempts made no progress).

Both run on trio and asyncio and hold no background task: each ``__anext__`` reads from the
current connection itself, so cancelling it loses nothing (the next call continues).
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar

import anyio

from .._protocol.durable.client import RetryPolicy, parse_retry_after
from .._protocol.sse import SSEDecoder
from .._protocol.transport import (
    DONE_EVENT,
    FAILED_EVENT,
    Chunk,
    ChunkTracker,
    CloseCode,
    End,
    decode_sse_chunk,
    decode_sse_end,
    decode_ws_chunk,
    encode_ws_hello,
    is_retryable_close,
    is_ws_heartbeat,
    parse_position,
)
from ..errors import (
    ConfigurationError,
    ReconnectFailedError,
    RemoteStreamFailedError,
    RemoteStreamNotFoundError,
    RequestRejectedError,
    StreamGoneError,
    TransportError,
    TransportProtocolError,
)
from ._net import DROPPED, Closed, HTTPResponse, Rejected, WebSocketClient, http_get, parse_url

__all__ = [
    "Reconnecting",
    "ResumingReader",
    "RetryPolicy",
    "open_resumable_sse",
    "open_resumable_websocket",
]

logger = logging.getLogger("resumable_streams.transports")

T = TypeVar("T")

DEFAULT_RETRY: Final = RetryPolicy(max_retries=10, initial_delay=0.1, max_delay=5.0)


class _Drop(Exception):
    """The connection is lost but the stream is not over: reconnect (internal)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Reconnecting(Generic[T]):
    """The reconnect loop both kinds of resuming readers share (an async iterator of ``T``).

    Subclasses connect (saying where to resume), turn what a connection receives into items
    - :class:`End` ends the iteration - and accept each item (advance their position).
    :attr:`reconnects` counts the connections re-opened. Use it as an async context manager
    (or call :meth:`aclose`).
    """

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        connect_timeout: float = 10.0,
        idle_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        websocket: bool,
    ) -> None:
        self._open = False
        self._target = parse_url(url, websocket=websocket)
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {retry!r}")
        if isinstance(connect_timeout, bool) or not connect_timeout > 0:
            raise ConfigurationError(f"connect_timeout must be > 0, got {connect_timeout!r}")
        if idle_timeout is not None and (isinstance(idle_timeout, bool) or not idle_timeout > 0):
            raise ConfigurationError(f"idle_timeout must be > 0 or None, got {idle_timeout!r}")
        self.url = url
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        """Seconds without any byte (SSE: heartbeats count) or message (WebSocket) after
        which the connection is taken for dead and re-opened; ``None``: wait forever."""
        self.ssl_context = ssl_context
        self._pending: deque[Any] = deque()
        self._failures = 0
        self._connected_once = False
        self._finished = False
        self.reconnects = 0
        """How many times a lost connection was re-opened."""

    @property
    def finished(self) -> bool:
        """Whether the server said the stream is done (or the reader was closed)."""
        return self._finished

    def _where(self) -> tuple[str, int]:
        """Where the reader stands, for error messages, and its position (0 if none)."""
        return "", 0

    def _idle(self) -> AbstractContextManager[object]:
        """Wrap one read from the connection: :class:`TimeoutError` after ``idle_timeout``."""
        if self.idle_timeout is None:
            return nullcontext()
        return anyio.fail_after(self.idle_timeout)

    def _silent(self) -> _Drop:
        return _Drop(f"nothing received for {self.idle_timeout}s")

    # -- subclass hooks ---------------------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _receive(self) -> list[Any]:
        """At least one item from the current connection; raises :class:`_Drop` when lost."""
        raise NotImplementedError

    def _accept(self, item: Any) -> T:
        """Advance past ``item`` (checking it continues the stream) and return its value."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------

    def _error(self, cls: type[TransportError], message: str) -> TransportError:
        where, position = self._where()
        return cls(f"{message} ({self.url}{where})", url=self.url, position=position)

    async def _reconnect(self, reason: _Drop | None) -> None:
        """Connect, retrying with backoff while the failures are transient."""
        while True:
            if reason is not None:
                delay = self.retry.delay(self._failures, reason.retry_after)
                if delay is None:
                    raise self._error(
                        ReconnectFailedError, f"gave up after {self._failures} attempts: {reason}"
                    ) from reason
                self._failures += 1
                logger.debug("%s: %s; reconnecting in %.3fs", self.url, reason, delay)
                await anyio.sleep(delay)
            try:
                with anyio.fail_after(self.connect_timeout):
                    await self._connect()
            except TimeoutError:
                reason = _Drop(f"no connection within {self.connect_timeout}s")
            except _Drop as drop:
                reason = drop
            except DROPPED as exc:
                reason = _Drop(f"connection failed: {exc!r}")
                reason.__cause__ = exc
            else:
                if self._connected_once:
                    self.reconnects += 1
                self._connected_once = True
                return

    async def _ensure_open(self) -> None:
        if not self._open:
            await self._reconnect(None)
            self._open = True

    def __aiter__(self) -> Reconnecting[T]:
        return self

    async def __anext__(self) -> T:
        while not self._finished:
            if not self._pending:
                await self._ensure_open()
                try:
                    self._pending.extend(await self._receive())
                except _Drop as drop:
                    await self._disconnect()
                    self._open = False
                    await self._reconnect(drop)
                    self._open = True
                except TransportError:  # the stream ended badly, or the server broke protocol
                    self._open = False
                    await self._disconnect()
                    raise
                continue
            item = self._pending.popleft()
            if isinstance(item, End):
                self._finished = True
                self._open = False  # nothing left to close: no ResourceWarning without aclose()
                await self._disconnect()
                if item.error is not None:
                    raise self._error(RemoteStreamFailedError, f"the producer failed: {item.error}")
                break
            value = self._accept(item)
            self._failures = 0  # progress: the backoff starts over
            return value
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the connection; iteration ends (idempotent)."""
        self._finished = True
        self._pending.clear()
        if self._open:
            self._open = False
            await self._disconnect()

    async def __aenter__(self) -> Self:
        try:
            await self._ensure_open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(
                f"resuming reader of {self.url!r} was not closed: use `async with` or aclose()",
                ResourceWarning,
                stacklevel=1,
            )


class ResumingReader(Reconnecting[str]):
    """An async iterator of a resumable stream's text that reconnects and resumes by itself.

    :attr:`position` is how far it has read (UTF-16 units): a new reader given
    ``position=reader.position`` continues there.
    """

    def __init__(self, url: str, *, position: int = 0, **options: Any) -> None:
        super().__init__(url, **options)
        try:
            start = parse_position(position)
        except TransportProtocolError as exc:
            raise ConfigurationError(str(exc)) from None
        self._tracker = ChunkTracker(start or 0)

    @property
    def position(self) -> int:
        """UTF-16 units received so far: where to resume."""
        return self._tracker.position

    def _where(self) -> tuple[str, int]:
        return f", position {self.position}", self.position

    def _accept(self, item: Chunk) -> str:
        return self._tracker.accept(item)

    async def read_all(self) -> str:
        """Read to the end of the stream and return the text."""
        async with self:
            return "".join([chunk async for chunk in self])


class _SSEReader(ResumingReader):
    def __init__(self, url: str, headers: dict[str, str] | None, **options: Any) -> None:
        super().__init__(url, websocket=False, **options)
        self._headers = dict(headers or {})
        self._response: HTTPResponse | None = None
        self._decoder = SSEDecoder()

    async def _connect(self) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self._headers}
        if self.position or self._connected_once:
            headers["Last-Event-ID"] = str(self.position)
        response = await http_get(self._target, headers, ssl_context=self.ssl_context)
        status = response.status
        if status == 200 and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            self._response = response
            self._decoder = SSEDecoder()
            return
        try:
            text = "" if status == 204 else await response.read_text()
        except DROPPED:
            text = ""
        finally:
            await response.aclose()
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Drop(f"HTTP {status}: {text.strip()}", retry_after)
        self._finished = True
        if status == 204:
            raise self._error(StreamGoneError, "the stream finished while this client was away")
        if status == 404:
            raise self._error(RemoteStreamNotFoundError, f"no such stream: {text.strip()}")
        if status == 200:
            kind = response.headers.get("content-type")
            raise self._error(TransportProtocolError, f"not an event stream: {kind!r}")
        raise self._error(RequestRejectedError, f"HTTP {status}: {text.strip()}")

    async def _receive(self) -> list[Chunk | End]:
        assert self._response is not None
        while True:
            try:
                with self._idle():
                    data = await self._response.receive_body()
            except DROPPED as exc:
                raise _Drop(f"connection lost: {exc!r}") from exc
            except TimeoutError:
                raise self._silent() from None
            if not data:
                raise _Drop("the response ended without a done event")
            items: list[Chunk | End] = []
            for event in self._decoder.receive_data(data):
                if event.event == "message":
                    items.append(decode_sse_chunk(event.data, event.id))
                elif event.event in (DONE_EVENT, FAILED_EVENT):
                    items.append(decode_sse_end(event.event, event.data))
            if items:
                return items

    async def _disconnect(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()


class _WebSocketReader(ResumingReader):
    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, websocket=True, **options)
        self._ws: WebSocketClient | None = None

    async def _connect(self) -> None:
        ws = await WebSocketClient.connect(self._target, ssl_context=self.ssl_context)
        if isinstance(ws, Rejected):
            if ws.status == 429 or ws.status >= 500:
                raise _Drop(f"handshake refused with HTTP {ws.status}")
            self._finished = True
            cls = RemoteStreamNotFoundError if ws.status == 404 else RequestRejectedError
            raise self._error(cls, f"handshake refused with HTTP {ws.status}: {ws.body.strip()}")
        try:
            await ws.send(encode_ws_hello(self.position))
        except DROPPED as exc:
            await ws.aclose()
            raise _Drop(f"connection lost: {exc!r}") from exc
        except BaseException:  # cancelled (or a timeout) before the socket was handed over
            await ws.aclose()
            raise
        self._ws = ws

    async def _receive(self) -> list[Chunk | End]:
        assert self._ws is not None
        while True:  # heartbeats only prove the connection alive: each restarts the timer
            try:
                with self._idle():
                    message = await self._ws.receive()
            except TimeoutError:
                raise self._silent() from None
            if isinstance(message, Closed):
                break
            if not is_ws_heartbeat(message):
                return [decode_ws_chunk(message)]
        code, reason = message.code, message.reason
        if code == CloseCode.DONE:
            return [End(self.position)]
        if is_retryable_close(code):
            raise _Drop(f"closed with {code} {reason}".strip())
        self._finished = True
        errors: dict[int, type[TransportError]] = {
            CloseCode.NOT_FOUND: RemoteStreamNotFoundError,
            CloseCode.GONE: StreamGoneError,
            CloseCode.FAILED: RemoteStreamFailedError,
        }
        raise self._error(errors.get(code, RequestRejectedError), f"closed with {code}: {reason}")

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.aclose()


def open_resumable_sse(
    url: str,
    *,
    position: int = 0,
    headers: dict[str, str] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    connect_timeout: float = 10.0,
    idle_timeout: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ResumingReader:
    """Read a :class:`~resumable_streams.transports.ResumableSSEResponse` endpoint, resuming.

    ``async with open_resumable_sse(url) as stream: async for text in stream: ...`` - entering
    connects (raising at once for 404 / 400 / a finished stream). ``position`` starts past 0
    (sent as ``Last-Event-ID``); ``headers`` go on every request (e.g. ``Authorization``).
    ``idle_timeout`` re-opens a connection silent for that long (heartbeats count: a few
    times the server's ``heartbeat`` detects a dead network path); ``None`` waits forever.
    """
    return _SSEReader(
        url,
        headers,
        position=position,
        retry=retry,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        ssl_context=ssl_context,
    )


def open_resumable_websocket(
    url: str,
    *,
    position: int = 0,
    retry: RetryPolicy = DEFAULT_RETRY,
    connect_timeout: float = 10.0,
    idle_timeout: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ResumingReader:
    """Read a resumable-stream WebSocket endpoint (``ws://`` / ``wss://``), resuming.

    ``async with open_resumable_websocket(url) as stream: async for text in stream: ...`` -
    entering connects and says where to start (``position``, default 0). ``idle_timeout``
    re-opens a connection that brought no message for that long (the server sends none
    between chunks: only set it above the stream's longest pause); ``None`` waits forever.
    """
    return _WebSocketReader(
        url,
        position=position,
        retry=retry,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        ssl_context=ssl_context,
    )
