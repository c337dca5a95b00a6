"""A Durable Streams WebSocket reader that reconnects and continues from its offset.

::

    async with open_durable_websocket("ws://host/v1/stream/logs", offset="-1") as stream:
        async for message in stream:
            print(message.offset, message.data)

It speaks the protocol of :mod:`resumable_streams._protocol.durable_ws` (served by
:func:`~resumable_streams.transports.add_durable_websocket`): it sends ``read`` with the
offset after the last ``data`` message it received, on every (re)connection, so nothing is
read twice or skipped. Iteration ends when the stream is closed and fully read (or, with
``live=False``, once caught up).
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any

from .._protocol.durable import headers as h
from .._protocol.transport import CloseCode, End, is_retryable_close
from ..errors import (
    ConfigurationError,
    RemoteStreamNotFoundError,
    RequestRejectedError,
    TransportError,
    TransportProtocolError,
)
from ._net import DROPPED, Closed, Rejected, WebSocketClient
from .client import DEFAULT_RETRY, Reconnecting, RetryPolicy, _Drop

__all__ = ["DurableMessage", "DurableWebSocketReader", "open_durable_websocket"]


@dataclass(frozen=True, slots=True)
class DurableMessage:
    """Data read from a Durable Stream: whole appends, and the offset after them.

    ``data`` is ``str`` for text and JSON streams (a JSON stream's data is the JSON array
    text of its messages) and ``bytes`` for binary ones.
    """

    data: str | bytes
    offset: str
    up_to_date: bool


class DurableWebSocketReader(Reconnecting[DurableMessage]):
    """Reads a Durable Stream over WebSocket from :attr:`offset`, reconnecting as needed."""

    def __init__(
        self, url: str, *, offset: str = h.OFFSET_BEGINNING, live: bool = True, **options: Any
    ) -> None:
        if not isinstance(offset, str) or not offset:
            raise ConfigurationError(f"offset must be a non-empty str, got {offset!r}")
        super().__init__(url, websocket=True, **options)
        self.offset = offset
        """Where the next read starts: the offset after the last message received."""
        self.live = live
        self.up_to_date = False
        """Whether the reader has caught up with the stream's tail."""
        self.closed = False
        """Whether the stream is closed and everything was read."""
        self._ws: WebSocketClient | None = None

    def _where(self) -> tuple[str, int]:
        return f", offset {self.offset}", 0

    async def _connect(self) -> None:
        ws = await WebSocketClient.connect(self._target, ssl_context=self.ssl_context)
        if isinstance(ws, Rejected):
            if ws.status == 429 or ws.status >= 500:
                raise _Drop(f"handshake refused with HTTP {ws.status}")
            self._finished = True
            cls = RemoteStreamNotFoundError if ws.status == 404 else RequestRejectedError
            raise self._error(cls, f"handshake refused with HTTP {ws.status}: {ws.body.strip()}")
        try:
            await ws.send(json.dumps({"op": "read", "offset": self.offset}))
        except DROPPED as exc:
            await ws.aclose()
            raise _Drop(f"connection lost: {exc!r}") from exc
        except BaseException:  # cancelled (or a timeout) before the socket was handed over
            await ws.aclose()
            raise
        self._ws = ws

    async def _receive(self) -> list[Any]:
        assert self._ws is not None
        while True:
            try:
                with self._idle():
                    message = await self._ws.receive()
            except TimeoutError:
                raise self._silent() from None
            if isinstance(message, Closed):
                return self._closed(message)
            try:
                body = json.loads(message)
                op = body["op"]
            except (ValueError, TypeError, KeyError):
                raise self._error(TransportProtocolError, f"bad message {message[:80]!r}") from None
            if op == "data":
                return [body]
            if op == "control":
                self.offset = str(body.get("offset", self.offset))
                self.up_to_date = True
                if body.get("closed"):
                    self.closed = True
                    return [End(0)]
                if not self.live:
                    return [End(0)]
            elif op == "heartbeat":
                continue  # the connection is alive (the idle timer restarts); nothing to do
            elif op == "error":
                status = body.get("status")
                cls = RemoteStreamNotFoundError if status in (404, 410) else RequestRejectedError
                self._finished = True
                raise self._error(cls, f"HTTP {status}: {body.get('message')}")

    def _closed(self, message: Closed) -> list[Any]:
        if message.code == CloseCode.DONE:
            if self.closed:
                return [End(0)]
            raise _Drop("closed before the end of the stream")
        if is_retryable_close(message.code):
            raise _Drop(f"closed with {message.code} {message.reason}".strip())
        self._finished = True
        errors: dict[int, type[TransportError]] = {
            CloseCode.NOT_FOUND: RemoteStreamNotFoundError,
            CloseCode.GONE: RemoteStreamNotFoundError,
        }
        cls = errors.get(message.code, RequestRejectedError)
        raise self._error(cls, f"closed with {message.code}: {message.reason}")

    def _accept(self, item: dict[str, Any]) -> DurableMessage:
        try:
            offset = str(item["offset"])
            data: str | bytes = item["data"]
            if item.get("encoding") == "base64":
                data = base64.b64decode(str(data), validate=True)
        except (KeyError, ValueError, TypeError):
            raise self._error(TransportProtocolError, f"bad data message {item!r:.80}") from None
        self.offset = offset
        self.up_to_date = bool(item.get("upToDate"))
        return DurableMessage(data, offset, self.up_to_date)

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.aclose()


def open_durable_websocket(
    url: str,
    *,
    offset: str = h.OFFSET_BEGINNING,
    live: bool = True,
    retry: RetryPolicy = DEFAULT_RETRY,
    connect_timeout: float = 10.0,
    idle_timeout: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> DurableWebSocketReader:
    """Read a Durable Stream over WebSocket (``ws://host/v1/stream/<path>``), resuming.

    ``async with open_durable_websocket(url, offset="-1") as stream: async for m in stream:``
    - ``offset`` is ``"-1"`` (the start), ``"now"`` or an offset from an earlier message;
    ``live=False`` stops once caught up. A lost connection is retried with backoff and the
    read continues at :attr:`~DurableWebSocketReader.offset`. ``idle_timeout`` re-opens a
    connection that brought no message for that long (``None``: wait forever).
    """
    return DurableWebSocketReader(
        url,
        offset=offset,
        live=live,
        retry=retry,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        ssl_context=ssl_context,
    )
