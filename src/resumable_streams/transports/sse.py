"""Serve a resumable stream as Server-Sent Events (Starlette / FastAPI, or any ASGI server).

::

    @app.get("/chat/{chat_id}/stream")
    async def stream(chat_id: str) -> ResumableSSEResponse:
        return ResumableSSEResponse(ctx, chat_id, make_stream)

Every chunk is an SSE ``message`` event whose ``id`` is the resume position (UTF-16 units
after the chunk) and whose ``data`` is the chunk as a JSON string. A browser ``EventSource``
that loses the connection reconnects with ``Last-Event-ID`` and continues exactly there.
The wire format is in :mod:`resumable_streams._protocol.transport`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import ClassVar, Literal

import anyio
from starlette.datastructures import Headers, QueryParams
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from .._protocol.sse import encode_comment
from .._protocol.transport import (
    TransportProtocolError,
    encode_sse_chunk,
    encode_sse_end,
    encode_sse_retry,
    parse_position,
)
from ..errors import AckTimeoutError, ConfigurationError
from ..resumable.context import ResumableStreamContext
from ..resumable.producer import MakeStream
from ..resumable.streams import ResumableStream
from ._serving import ClientGone, ConnectionWatch, check_heartbeat, open_at, relay

__all__ = ["ResumableSSEResponse"]

logger = logging.getLogger("resumable_streams.transports")

POSITION_PARAM = "position"


class ResumableSSEResponse(Response):
    """An ASGI response streaming ``stream_id`` of ``ctx`` as resumable SSE.

    Where to start: the ``Last-Event-ID`` request header (what ``EventSource`` sends on
    reconnect), else the ``?position=N`` query parameter, else the start. At the start with
    a ``make_stream``, the stream is created or joined (``ctx.resumable_stream``); at a
    position past 0, or when ``make_stream`` is ``None``, it is only resumed.

    Status codes: ``200`` streaming; ``204`` the stream is finished (``EventSource`` stops
    reconnecting on 204); ``404`` no such stream (resume-only); ``400`` bad position or
    stream id; ``503`` with ``Retry-After`` when no producer answered in time.

    While streaming: a ``: heartbeat`` comment after ``heartbeat`` seconds without output;
    at the end one ``done`` event (or ``failed`` when the producer raised). A client that
    disconnects frees its subscription at once; the producer keeps running. A client too slow
    for ``consumer_buffer_limit`` is disconnected without ``done`` and resumes by reconnecting.
    ``retry`` (milliseconds) is sent first when given: how long ``EventSource`` waits before
    reconnecting.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        ctx: ResumableStreamContext,
        stream_id: str,
        make_stream: MakeStream | None = None,
        *,
        heartbeat: float = 15.0,
        retry: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        check_heartbeat(heartbeat)
        if retry is not None and (
            isinstance(retry, bool) or not isinstance(retry, int) or retry < 0
        ):
            raise ConfigurationError(f"retry must be an int >= 0 (milliseconds), got {retry!r}")
        if make_stream is not None and not callable(make_stream):
            raise ConfigurationError(f"make_stream must be callable or None, got {make_stream!r}")
        self.ctx = ctx
        self.stream_id = stream_id
        self.make_stream = make_stream
        self.heartbeat = heartbeat
        self.retry = retry
        self.status_code = 200
        self.background = None
        self.body = b""
        if headers is None and type(self) is ResumableSSEResponse:
            # The same for every response: built once (one list less per subscriber).
            if ResumableSSEResponse._default_headers is None:
                ResumableSSEResponse._default_headers = self._build_headers(None)
            self.raw_headers = list(ResumableSSEResponse._default_headers)
        else:
            self.raw_headers = self._build_headers(headers)

    _default_headers: ClassVar[list[tuple[bytes, bytes]] | None] = None

    def _build_headers(self, headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
        extra = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        extra.update(headers or {})
        self.init_headers(extra)
        # init_headers added a content-length of 0 for the empty body: not for a stream.
        return [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open the stream at the client's position and stream it (or answer 204/4xx/503)."""
        try:
            opened = await self._open(scope)
        except (TransportProtocolError, ConfigurationError) as exc:
            await self._plain(400, str(exc), scope, receive, send)
            return
        except AckTimeoutError as exc:
            await self._plain(503, str(exc), scope, receive, send, {"Retry-After": "1"})
            return
        if opened == "DONE":
            await Response(status_code=204, headers={"Cache-Control": "no-store"})(
                scope, receive, send
            )
            return
        if opened == "NOT_FOUND":
            reason = f"no stream {self.stream_id!r}"
            await self._plain(404, reason, scope, receive, send)
            return
        # Streaming, in this one task (no helper coroutine: one frame less per idler).
        async with opened:
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
            except OSError:  # the client left before the stream was open
                return
            conn = _Connection(receive, send, self.heartbeat)
            opened.waiter = conn
            try:
                if self.retry is not None:
                    await conn.write(encode_sse_retry(self.retry))
                outcome = await relay(opened, conn.emit)
                if outcome is None:
                    return
                if outcome.kind != "retry":
                    error = "the producer failed" if outcome.kind == "failed" else None
                    await conn.write(encode_sse_end(outcome.position, error))
            except ClientGone:
                return
        with anyio.CancelScope(shield=True), anyio.move_on_after(1), suppress(OSError):
            await send({"type": "http.response.body", "body": b""})

    async def _open(self, scope: Scope) -> ResumableStream | Literal["DONE", "NOT_FOUND"]:
        # A response is sent once: its make_stream is not kept alive by a connection that
        # only joined or resumed the stream (often a per-request closure: freed at once).
        make_stream, self.make_stream = self.make_stream, None
        return await open_at(self.ctx, self.stream_id, make_stream, _requested_position(scope))

    @staticmethod
    async def _plain(
        status: int,
        reason: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str] | None = None,
    ) -> None:
        out = {"Cache-Control": "no-store", **(headers or {})}
        await PlainTextResponse(reason, status, out)(scope, receive, send)


def _requested_position(scope: Scope) -> int | None:
    """Where the client starts: ``Last-Event-ID``, else ``?position=``, else ``None``."""
    headers = Headers(scope=scope)
    if "last-event-id" in headers:
        return parse_position(headers["last-event-id"], what="Last-Event-ID")
    query = QueryParams(scope.get("query_string", b""))
    return parse_position(query.get(POSITION_PARAM), what=f"{POSITION_PARAM!r} query parameter")


_HEARTBEAT = encode_comment("heartbeat")


class _Connection(ConnectionWatch):
    """One streaming response's I/O, and the only task it needs.

    While the stream has nothing to send, the response's task waits in ``receive()`` for
    ``http.disconnect`` (a client that leaves frees its subscription at once) and writes a
    ``: heartbeat`` comment whenever ``heartbeat`` seconds passed without output; new data
    wakes it (see :class:`ConnectionWatch`).
    """

    __slots__ = ("send",)

    def __init__(self, receive: Receive, send: Send, heartbeat: float) -> None:
        super().__init__(heartbeat, receive)
        self.send = send

    async def write(self, data: bytes) -> None:
        try:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        except OSError as exc:  # the server noticed the client left while we were writing
            raise ClientGone from exc
        self.wrote()

    async def emit(self, text: str, position: int) -> None:
        await self.write(encode_sse_chunk(text, position))

    def is_gone(self, message: Message) -> bool:
        return bool(message["type"] == "http.disconnect")

    async def send_heartbeat(self) -> None:
        await self.write(_HEARTBEAT)
