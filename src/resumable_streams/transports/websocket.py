"""Serve resumable streams over WebSocket: Starlette (ASGI) and trio-websocket, one driver.

The protocol (sans-IO in :mod:`resumable_streams._protocol.transport`): the client's first
text message is ``{"position": N}`` (0 = from the start); the server answers with one text
message ``{"position": P, "text": "..."}`` per chunk (``P`` = position after it), a
``{"heartbeat": true}`` message after ``heartbeat`` seconds without output, and closes
with a code that says how it ended:

====== ===================================================================
1000   done: everything was sent
4400   bad request (the reason says why); do not retry
4404   no such stream; do not retry
4410   the stream had finished before this connection; do not retry
4500   the producer failed; do not retry
4503   try again: resume from your position (no producer answered, or you
       fell too far behind)
1001   the server is going away: resume (elsewhere)
1011   the server failed serving this connection (logged there): resume
====== ===================================================================

Both servers run the same :func:`run_session` on a tiny connection interface, so the protocol
behaves identically on ASGI (hypercorn, uvicorn) and on trio-websocket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from .._protocol.transport import (
    CloseCode,
    encode_ws_chunk,
    encode_ws_heartbeat,
    parse_ws_hello,
    truncate_reason,
)
from ..errors import AckTimeoutError, ConfigurationError, TransportProtocolError
from ..resumable.context import ResumableStreamContext
from ..resumable.producer import MakeStream
from ._serving import ClientGone, ConnectionWatch, check_heartbeat, open_at, relay

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

__all__ = [
    "ClientGone",
    "WebSocketConnection",
    "handle_resumable_websocket",
    "run_session",
    "serve_resumable_websockets",
]

logger = logging.getLogger("resumable_streams.transports")

DEFAULT_HELLO_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 15.0


class WebSocketConnection(Protocol):
    """What :func:`run_session` needs of an accepted WebSocket."""

    async def receive(self) -> str | bytes | None:
        """The next message, or ``None`` once the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send a text message; raise :class:`ClientGone` if the peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` / ``reason`` (never raises for a peer already gone)."""
        ...


async def run_session(
    conn: WebSocketConnection,
    ctx: ResumableStreamContext,
    stream_id: str,
    make_stream: MakeStream | None,
    *,
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> None:
    """Serve one resumable-stream WebSocket session on an accepted connection.

    Creates or joins the stream at position 0 when ``make_stream`` is given; otherwise (or
    past 0) resumes only. Returns when the stream ended, the peer left, or the session was
    refused; a peer that leaves frees its subscription at once and the producer runs on.
    A ``{"heartbeat": true}`` message goes out after ``heartbeat`` seconds without output.
    One task serves the session: while idle it waits for the peer's messages (see
    :class:`~resumable_streams.transports._serving.ConnectionWatch`).
    """
    check_heartbeat(heartbeat)
    hello: str | bytes | None = None
    with anyio.move_on_after(hello_timeout):
        hello = await conn.receive()
    if hello is None:
        await conn.close(CloseCode.BAD_REQUEST, f"no start message within {hello_timeout}s")
        return
    try:
        position = parse_ws_hello(hello)
        opened = await open_at(ctx, stream_id, make_stream, position)
        del make_stream  # not kept alive by a session that only joined or resumed
    except (TransportProtocolError, ConfigurationError) as exc:
        await conn.close(CloseCode.BAD_REQUEST, truncate_reason(str(exc)))
        return
    except AckTimeoutError:
        await conn.close(CloseCode.RETRY, "no producer answered; resume later")
        return
    if opened == "DONE":
        await conn.close(CloseCode.GONE, "the stream had finished before this connection")
        return
    if opened == "NOT_FOUND":
        await conn.close(CloseCode.NOT_FOUND, truncate_reason(f"no stream {stream_id!r}"))
        return

    watch = _SessionWatch(conn, heartbeat)
    async with opened:
        opened.waiter = watch
        outcome = await relay(opened, watch.emit)
    if outcome is None:  # the peer left
        return
    if outcome.kind == "done":
        await conn.close(CloseCode.DONE, "done")
    elif outcome.kind == "failed":
        await conn.close(CloseCode.FAILED, "the producer failed")
    else:
        await conn.close(CloseCode.RETRY, f"too slow; resume from {outcome.position}")


class _SessionWatch(ConnectionWatch):
    """The session's only task while idle: waits for the peer's messages, sends heartbeats.

    What a client says after its first message is ignored (the protocol has nothing more
    for it to say); data wakes the wait.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: WebSocketConnection, heartbeat: float) -> None:
        super().__init__(heartbeat, conn.receive)
        self.conn = conn

    def is_gone(self, message: str | bytes | None) -> bool:
        return message is None

    async def send_heartbeat(self) -> None:
        await self.conn.send(encode_ws_heartbeat())

    async def emit(self, text: str, end: int) -> None:
        await self.conn.send(encode_ws_chunk(text, end))
        self.wrote()


# -- Starlette / ASGI --------------------------------------------------------------------


class _StarletteConnection:
    __slots__ = ("gone", "ws")

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.gone = False

    async def receive(self) -> str | bytes | None:
        if self.gone:
            return None
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            self.gone = True
            return None
        data: str | bytes | None = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        return data

    async def send(self, text: str) -> None:
        try:
            await self.ws.send({"type": "websocket.send", "text": text})
        except Exception as exc:  # disconnected: each server says it differently
            self.gone = True
            raise ClientGone from exc

    async def close(self, code: int, reason: str) -> None:
        if self.gone:
            return
        self.gone = True
        with suppress(Exception):  # already gone: nothing to tell
            await self.ws.close(code, reason)


async def handle_resumable_websocket(
    websocket: WebSocket,
    ctx: ResumableStreamContext,
    stream_id: str,
    make_stream: MakeStream | None = None,
    *,
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> None:
    """Accept ``websocket`` (a Starlette ``WebSocket``) and serve ``stream_id`` on it.

    ``heartbeat``: seconds without output after which a ``{"heartbeat": true}`` message
    is sent (so a client's ``idle_timeout`` tells a silent stream from a dead connection).

    ::

        @app.websocket("/chat/{chat_id}/ws")
        async def chat_ws(websocket: WebSocket, chat_id: str) -> None:
            await handle_resumable_websocket(websocket, ctx, chat_id, make_stream)
    """
    check_heartbeat(heartbeat)
    await websocket.accept()
    await run_session(
        _StarletteConnection(websocket),
        ctx,
        stream_id,
        make_stream,
        hello_timeout=hello_timeout,
        heartbeat=heartbeat,
    )


# -- trio-websocket ----------------------------------------------------------------------


class _TrioWebSocketConnection:
    __slots__ = ("_closed_error", "ws")

    def __init__(self, ws: Any) -> None:
        from trio_websocket import ConnectionClosed

        self.ws = ws
        self._closed_error = ConnectionClosed

    async def receive(self) -> str | bytes | None:
        try:
            message: str | bytes = await self.ws.get_message()
        except self._closed_error:
            return None
        return message

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_message(text)
        except self._closed_error as exc:
            raise ClientGone from exc

    async def close(self, code: int, reason: str) -> None:
        await self.ws.aclose(code, reason)


def _last_segment(path: str) -> str | None:
    segment = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    from urllib.parse import unquote

    return unquote(segment) or None


async def serve_resumable_websockets(
    ctx: ResumableStreamContext,
    host: str | None,
    port: int,
    *,
    make_stream: Callable[[str], MakeStream | None] | None = None,
    stream_id_for_path: Callable[[str], str | None] = _last_segment,
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
    heartbeat: float = DEFAULT_HEARTBEAT,
    handler_nursery: Any = None,
    task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve resumable streams over trio-websocket (trio only; no ASGI server needed).

    ``stream_id_for_path`` maps the request path to a stream id (default: its last segment,
    URL-decoded; ``None`` rejects the handshake with 404). ``make_stream(stream_id)`` returns
    the source for a new stream, or ``None`` to resume only; without it every session is
    resume-only. Runs until cancelled; ``await nursery.start(serve_resumable_websockets, ...)``
    reports the ``trio_websocket.WebSocketServer`` (its ``.port`` is the bound port).
    ``heartbeat``: seconds without output before a ``{"heartbeat": true}`` message.
    """
    check_heartbeat(heartbeat)
    from trio_websocket import serve_websocket

    async def handler(request: Any) -> None:
        # trio-websocket lets a handler's exception crash the whole server: one failing
        # session (a user callback, a storage error) is logged and closed with 1011 instead,
        # as an ASGI server would.
        conn: _TrioWebSocketConnection | None = None
        try:
            stream_id = stream_id_for_path(request.path)
            if stream_id is None:
                await request.reject(404, body=b"no stream at this path")
                return
            conn = _TrioWebSocketConnection(await request.accept())
            source = make_stream(stream_id) if make_stream is not None else None
            await run_session(
                conn, ctx, stream_id, source, hello_timeout=hello_timeout, heartbeat=heartbeat
            )
        except Exception:
            logger.exception("WebSocket session at %r failed", request.path)
            if conn is None:
                with suppress(Exception):
                    await request.reject(500, body=b"internal server error")
            else:
                with suppress(Exception):
                    await conn.close(CloseCode.INTERNAL_ERROR, "internal server error")

    serve: Callable[..., Awaitable[None]] = serve_websocket
    await serve(
        handler,
        host,
        port,
        ssl_context=None,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
