"""Durable Streams over WebSocket: live reads from an offset, appends with acknowledgements.

The messages are in :mod:`resumable_streams._protocol.durable_ws`. The endpoint works on any
:class:`~resumable_streams.storage.base.StreamStorage` - the same engines and the same append
rules as the HTTP server, which it runs next to::

    app = create_app("sqlite", data_dir="data")   # the HTTP server
    add_durable_websocket(app)                     # + ws://host/v1/stream/<path>

Appends are applied in the order they arrive and answered in that order. A reader that falls
behind is never buffered for: each ``data`` message is read from storage when the previous
one was sent (at most ``max_read_bytes``, 64 KiB by default, of whole appends), so a slow
client only slows its own socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import suppress

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .._protocol.durable.offsets import Offset
from .._protocol.durable.parsing import BadRequest, parse_stream_path
from .._protocol.durable.planning import Rejected
from .._protocol.durable_ws import (
    AppendCommand,
    BadAppend,
    ReadCommand,
    encode_ack,
    encode_control,
    encode_data,
    encode_error,
    encode_heartbeat,
    parse_client_message,
)
from .._protocol.transport import CloseCode, truncate_reason
from ..storage.base import StreamStorage
from ._serving import check_heartbeat

__all__ = ["DurableWebSocketSession", "add_durable_websocket", "handle_durable_websocket"]

logger = logging.getLogger("resumable_streams.transports")

DEFAULT_PREFIX = "/v1/stream/"
#: Data messages carry at most this many bytes of whole appends (one larger append goes
#: alone): a reader catching up through a connection that keeps dropping still advances,
#: instead of losing the same huge message on every reconnect.
DEFAULT_MAX_READ_BYTES = 64 * 1024
DEFAULT_HEARTBEAT = 15.0
_CLOSE_FOR_STATUS = {404: CloseCode.NOT_FOUND, 410: CloseCode.GONE}


class DurableWebSocketSession:
    """One client's socket on one stream: a command loop plus at most one live reader."""

    def __init__(
        self,
        websocket: WebSocket,
        storage: StreamStorage,
        name: str,
        *,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        check_heartbeat(heartbeat)
        self.heartbeat = heartbeat
        self._last_output = anyio.current_time()
        self.ws = websocket
        self.storage = storage
        self.name = name
        self.max_read_bytes = max_read_bytes
        self._lock = anyio.Lock(fast_acquire=True)
        self._reading = False
        self._scope = anyio.CancelScope()

    async def _send(self, text: str) -> None:
        try:
            async with self._lock:
                await self.ws.send({"type": "websocket.send", "text": text})
            self._last_output = anyio.current_time()
        except Exception:  # the peer is gone (each server says it differently): end the session
            self._scope.cancel()
            await anyio.lowlevel.checkpoint()

    async def _close(self, code: int, reason: str) -> None:
        with suppress(Exception):  # the peer may be gone already
            await self.ws.close(code, truncate_reason(reason))

    async def run(self) -> None:
        """Serve the socket until the client leaves (or the read ends with the stream)."""
        try:
            meta = await self.storage.head(self.name, now=time.time())
        except Rejected as exc:
            await self._close(_CLOSE_FOR_STATUS.get(exc.status, CloseCode.BAD_REQUEST), exc.reason)
            return
        content_type = meta.content_type
        with self._scope:
            await self._serve(content_type)

    async def _serve(self, content_type: str) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                data: str | bytes = text if text is not None else message.get("bytes") or b""
                try:
                    command = parse_client_message(data, content_type)
                except BadAppend as exc:  # the answer names the append
                    await self._send(encode_error(exc.id, 400, str(exc)))
                    continue
                except BadRequest as exc:
                    await self._send(encode_error(None, 400, str(exc)))
                    continue
                if isinstance(command, ReadCommand):
                    if self._reading:
                        await self._send(encode_error(None, 400, "a read is already running"))
                        continue
                    self._reading = True
                    tg.start_soon(self._tail, command.offset, content_type)
                else:
                    await self._append(command)
            tg.cancel_scope.cancel()

    async def _append(self, command: AppendCommand) -> None:
        try:
            plan = await self.storage.append(self.name, command.request, now=time.time())
        except Rejected as exc:
            await self._send(encode_error(command.id, exc.status, exc.reason, exc.headers))
            return
        except BadRequest as exc:
            await self._send(encode_error(command.id, 400, str(exc)))
            return
        await self._send(encode_ack(command.id, plan))

    async def _tail(self, start: Offset | str, content_type: str) -> None:
        position = start if isinstance(start, Offset) else None  # None: "now"
        idle_sent = False
        try:
            while True:
                event = self.storage.notifier.event(self.name)
                result = await self.storage.read(
                    self.name,
                    position if position is not None else "now",
                    now=time.time(),
                    max_bytes=self.max_read_bytes,
                )
                meta = result.meta
                if position is None:
                    position = meta.tail
                elif position > meta.tail:
                    await self._fail(400, "offset is beyond the stream's tail", {})
                    return
                if result.records:
                    data = b"".join(record.data for record in result.records)
                    position = result.next_offset
                    idle_sent = result.up_to_date
                    await self._send(
                        encode_data(data, content_type, position, up_to_date=idle_sent)
                    )
                    if not idle_sent:
                        continue
                if meta.closed and position >= meta.tail:
                    await self._send(encode_control(position, closed=True))
                    await self._close(CloseCode.DONE, "the stream is closed")
                    self._scope.cancel()
                    return
                if not idle_sent:
                    await self._send(encode_control(position, closed=False))
                    idle_sent = True
                await self._wait_or_heartbeat(event)
        except Rejected as exc:  # deleted or expired while reading
            await self._fail(exc.status, exc.reason, exc.headers)

    async def _wait_or_heartbeat(self, event: anyio.Event) -> None:
        """Wait for ``event``; a heartbeat whenever ``heartbeat`` seconds passed silent."""
        while True:
            with anyio.move_on_after(self._last_output + self.heartbeat - anyio.current_time()):
                await event.wait()
                return
            await self._send(encode_heartbeat())

    async def _fail(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        await self._send(encode_error(None, status, reason, headers))
        await self._close(_CLOSE_FOR_STATUS.get(status, CloseCode.BAD_REQUEST), reason)
        self._scope.cancel()


async def handle_durable_websocket(
    websocket: WebSocket,
    storage: StreamStorage,
    name: str,
    *,
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> None:
    """Accept ``websocket`` and serve Durable Stream ``name`` of ``storage`` on it.

    A live read that has nothing to send for ``heartbeat`` seconds sends
    ``{"op": "heartbeat"}`` (a client's ``idle_timeout`` then tells a quiet stream from a
    dead connection).
    """
    check_heartbeat(heartbeat)
    await websocket.accept()
    session = DurableWebSocketSession(
        websocket, storage, name, max_read_bytes=max_read_bytes, heartbeat=heartbeat
    )
    await session.run()


def add_durable_websocket(
    app: Starlette,
    *,
    storage: StreamStorage | None = None,
    prefix: str = DEFAULT_PREFIX,
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> Starlette:
    """Serve WebSocket connections at ``<prefix><stream path>`` of ``app``; return ``app``.

    ``heartbeat``: seconds a waiting live read stays silent before ``{"op": "heartbeat"}``.

    For an app from :func:`~resumable_streams.durable.server.create_app`, the storage is the
    one its lifespan opened (``app.state.storage``); pass ``storage`` otherwise. Stream paths
    are validated as over HTTP (no encoded slashes, dot segments or control characters).
    """
    check_heartbeat(heartbeat)
    raw_prefix = prefix.encode()

    async def endpoint(websocket: WebSocket) -> None:
        engine = storage if storage is not None else app.state.storage
        raw: bytes = websocket.scope.get("raw_path") or websocket.scope["path"].encode()
        root = websocket.scope.get("root_path", "").encode()
        if root and raw.startswith(root):
            raw = raw[len(root) :]
        await websocket.accept()
        try:
            name = parse_stream_path(raw.split(b"?", 1)[0][len(raw_prefix) :])
        except BadRequest as exc:
            await websocket.close(CloseCode.BAD_REQUEST, truncate_reason(str(exc)))
            return
        session = DurableWebSocketSession(
            websocket, engine, name, max_read_bytes=max_read_bytes, heartbeat=heartbeat
        )
        await session.run()

    app.router.routes.insert(0, WebSocketRoute(prefix + "{path:path}", endpoint))
    return app
