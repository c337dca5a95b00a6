"""The Durable Streams ASGI application.

:class:`DurableStreamsApp` is a plain ASGI app over a :class:`StreamStorage` the caller opened
(mount it anywhere: Starlette ``Mount``, FastAPI ``app.mount``). :func:`create_app` wraps it in
a Starlette app whose lifespan opens the storage and owns its background tasks - what
``resumable-streams serve`` runs.

Every response, errors included, carries ``X-Content-Type-Options: nosniff``,
``Cross-Origin-Resource-Policy: cross-origin`` and the CORS headers.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.routing import Mount

from ..._core.groups import unwrap_single
from ..._protocol.durable import headers as h
from ..._protocol.durable.cursor import next_cursor
from ..._protocol.durable.jsonmode import records_to_array
from ..._protocol.durable.model import StreamMeta
from ..._protocol.durable.offsets import ZERO, InvalidOffsetError, Offset, parse_read_offset
from ..._protocol.durable.parsing import (
    BadRequest,
    is_json,
    is_sse_text,
    media_type,
    parse_stream_path,
)
from ..._protocol.durable.planning import (
    Rejected,
    default_resolve_stream,
    make_etag,
    parse_append_request,
    parse_create_request,
)
from ..._protocol.sse import encode_comment, encode_event
from ...storage.base import ReadResult, StreamStorage, Waker
from ...storage.open import StorageKind, open_storage
from .exchange import (
    BodyTooLarge,
    ClientGone,
    Exchange,
    FixedHeaders,
    Handler,
    asgi_header_name,
    merge_headers,
)

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "DEFAULT_MAX_BODY_SIZE",
    "DurableStreamsApp",
    "check_cache_control",
    "create_app",
]

logger = logging.getLogger("resumable_streams.durable.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024 * 1024
_PREFIX: Final = "/v1/stream/"
DEFAULT_CACHE_CONTROL: Final = "public, max-age=60, stale-while-revalidate=300"
_EXPOSE: Final = ", ".join(
    [
        h.STREAM_NEXT_OFFSET,
        h.STREAM_CURSOR,
        h.STREAM_UP_TO_DATE,
        h.STREAM_CLOSED,
        h.STREAM_TTL,
        h.STREAM_EXPIRES_AT,
        h.PRODUCER_EPOCH,
        h.PRODUCER_SEQ,
        h.PRODUCER_EXPECTED_SEQ,
        h.PRODUCER_RECEIVED_SEQ,
        h.SSE_DATA_ENCODING,
        "ETag",
        "Location",
        "Content-Type",
    ]
)
_ALLOW_HEADERS: Final = ", ".join(
    [
        "Content-Type",
        "Authorization",
        "If-None-Match",
        h.STREAM_TTL,
        h.STREAM_EXPIRES_AT,
        h.STREAM_CLOSED,
        h.STREAM_SEQ,
        h.STREAM_FORKED_FROM,
        h.STREAM_FORK_OFFSET,
        h.STREAM_FORK_SUB_OFFSET,
        h.PRODUCER_ID,
        h.PRODUCER_EPOCH,
        h.PRODUCER_SEQ,
    ]
)
_METHODS: Final = "GET, HEAD, PUT, POST, DELETE, OPTIONS"
_FIXED: Final = FixedHeaders(
    {
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": _EXPOSE,
    }
)
_NO_HEADERS: Final[dict[str, str]] = {}
_UNKNOWN: Final = "\0"  # not a stream name: names never hold NUL
_NAMES_CACHED: Final = 4096
_SSE_KEEPALIVE: Final = 15.0
_ANSWER_READERS_FIRST: Final = 16  # at most this many waiting readers answer before a POST
_PREFIX_BYTES: Final = _PREFIX.encode()


def check_cache_control(value: str) -> str:
    """Return ``value`` if it can be sent as a ``Cache-Control`` header, else raise.

    Raises :class:`ValueError` naming the value when it is empty or holds anything but
    printable ASCII (a CR/LF would split the header).
    """
    if not value.strip() or not all(" " <= char <= "~" for char in value):
        raise ValueError(
            f"invalid Cache-Control value {value!r}: it must be non-empty printable ASCII"
        )
    return value.strip()


def _sse_event(data: str, event: str) -> bytes:
    """One SSE event in the compact ``data:<line>`` form the conformance suite matches."""
    return encode_event(data, event=event, compact=True)


class _AsgiExchange(Exchange):
    """An :class:`Exchange` over an ASGI ``scope``, ``receive`` and ``send``."""

    __slots__ = ("_receive", "_send", "path")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        super().__init__(
            scope["method"].upper(),
            raw.split(b"?", 1)[0],
            scope.get("query_string", b""),
            merge_headers(
                [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope.get("headers", ())]
            ),
            root_path=scope.get("root_path", ""),
            scheme=scope.get("scheme", "http"),
            server=scope.get("server"),
        )
        self.path: str = scope.get("path", "")
        self._receive = receive
        self._send = send

    async def _message(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:  # ASGI: a send on a connection the client closed
            raise ClientGone from None

    async def read_body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise BodyTooLarge
            except ValueError:
                raise BadRequest("malformed Content-Length") from None
        message = await self._receive()
        if message["type"] != "http.disconnect" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the usual case: the whole body at once
            if len(body) > limit:
                raise BodyTooLarge
            return body
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await self._receive()

    async def respond(
        self, status: int, headers: Mapping[str, str], body: bytes, fixed: FixedHeaders
    ) -> None:
        raw = self._head(headers, fixed)
        if status != 204 and status != 304:
            raw.append((b"content-length", b"%d" % len(body)))
        else:
            body = b""
        await self._start(status, raw)
        await self._message(
            {"type": "http.response.body", "body": b"" if self.method == "HEAD" else body}
        )

    async def start(self, status: int, headers: Mapping[str, str], fixed: FixedHeaders) -> None:
        await self._start(status, self._head(headers, fixed))

    @staticmethod
    def _head(headers: Mapping[str, str], fixed: FixedHeaders) -> list[tuple[bytes, bytes]]:
        raw = list(fixed.pairs)
        raw += [(asgi_header_name(k), v.encode("latin-1")) for k, v in headers.items()]
        return raw

    async def _start(self, status: int, raw: list[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        await self._message({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, chunk: bytes) -> None:
        await self._message({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        await self._message({"type": "http.response.body", "body": b""})

    async def wait_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


class DurableStreamsApp:
    """ASGI app serving Durable Streams under ``/v1/stream/<path>`` from ``storage``.

    The caller owns ``storage`` (open it with :func:`open_storage`). ``long_poll_timeout``
    and ``sse_reconnect_interval`` are seconds; ``max_body_size`` bounds PUT/POST bodies
    (413 beyond it, detected without buffering the excess); ``max_read_bytes`` bounds one
    catch-up response (a read returns at least one whole append).

    ``cache_control`` is the ``Cache-Control`` of cacheable responses: catch-up reads and
    long-poll responses with data (200 and 304). The protocol's default is
    :data:`DEFAULT_CACHE_CONTROL`; use ``"private, max-age=60, stale-while-revalidate=300"``
    for user-specific streams, or e.g. a longer ``s-maxage`` for a CDN. The other responses
    keep the values the protocol fixes: ``no-store`` on HEAD, ``offset=now``, long-poll 204
    and errors, ``no-cache`` on SSE.
    """

    def __init__(
        self,
        storage: StreamStorage,
        *,
        long_poll_timeout: float = 30.0,
        sse_reconnect_interval: float = 60.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_read_bytes: int = 1024 * 1024,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        self.storage = storage
        self.long_poll_timeout = long_poll_timeout
        self.sse_reconnect_interval = sse_reconnect_interval
        self.max_body_size = max_body_size
        self.max_read_bytes = max_read_bytes
        self.cache_control = check_cache_control(cache_control)
        self._names: dict[bytes, str | None] = {}  # raw path -> stream name (see _stream_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope (``http`` only)."""
        if scope["type"] != "http":
            return
        await self.handle(_AsgiExchange(scope, receive, send))

    def native_route(self, raw_path: bytes) -> Handler | None:
        """Every request goes to :meth:`handle` (see :class:`~.exchange.NativeApp`)."""
        return self.handle

    async def handle(self, req: Exchange) -> None:
        """Handle one request (what ``__call__`` does, without ASGI: see :class:`NativeApp`)."""
        try:
            try:
                await self._dispatch(req)
            except BodyTooLarge:
                await self._error(req, 413, "request body too large")
            except BadRequest as exc:
                await self._error(req, 400, str(exc))
            except Rejected as exc:
                await self._error(req, exc.status, exc.reason, exc.headers)
        except ClientGone:
            return
        except Exception:
            logger.exception("internal error on %s %r", req.method, req.raw_path)
            if not req.started:
                await self._error(req, 500, "internal server error")

    # ------------------------------------------------------------------ plumbing

    async def _respond(
        self,
        req: Exchange,
        status: int,
        headers: dict[str, str] = _NO_HEADERS,
        body: bytes = b"",
    ) -> None:
        await req.respond(status, headers, body, _FIXED)

    async def _error(
        self, req: Exchange, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        if req.started:  # too late for an error response: the started one just ends
            logger.debug("%d %s after the response started", status, reason)
            return
        out = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
        out.update(headers or {})
        await self._respond(req, status, out, reason.encode())

    def _stream_name(self, req: Exchange) -> str | None:
        raw = req.raw_path
        root = req.root_path
        if root:
            root_bytes = root.encode()
            if raw.startswith(root_bytes):
                raw = raw[len(root_bytes) :]
        name = self._names.get(raw, _UNKNOWN)
        if name is _UNKNOWN:  # a path not seen lately: parse it (BadRequest if malformed)
            name = None
            if raw.startswith(_PREFIX_BYTES):
                name = parse_stream_path(raw[len(_PREFIX_BYTES) :])
            if len(self._names) >= _NAMES_CACHED:
                self._names.clear()
            self._names[raw] = name
        return name

    def _resolve_source(self, req: Exchange) -> Callable[[str], str]:
        root = req.root_path

        def resolve(value: str) -> str:
            if root and value.startswith(root + _PREFIX):
                value = value[len(root) :]
            return default_resolve_stream(value)

        return resolve

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, req: Exchange) -> None:
        name = self._stream_name(req)
        if name is None:
            await self._error(req, 404, "not found")
            return
        method = req.method
        if method == "POST":  # the hot path first
            await self._post(req, name)
        elif method == "GET":
            await self._get(req, name)
        elif method == "OPTIONS":
            await self._respond(
                req,
                204,
                {
                    "Access-Control-Allow-Methods": _METHODS,
                    "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                    "Access-Control-Max-Age": "86400",
                },
            )
        elif method == "PUT":
            await self._put(req, name)
        elif method == "HEAD":
            await self._head(req, name)
        elif method == "DELETE":
            await self.storage.delete(name, now=time.time())
            await self._respond(req, 204)
        else:
            await self._error(req, 405, "method not allowed", {"Allow": _METHODS})

    def _location(self, req: Exchange) -> str:
        host = req.headers.get("host")
        if host is None:
            server = req.server or ("localhost", None)
            host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
        return f"{req.scheme}://{host}{req.raw_path.decode('latin-1')}"

    async def _put(self, req: Exchange, name: str) -> None:
        body = await req.read_body(self.max_body_size)
        create = parse_create_request(req.headers, body, self._resolve_source(req))
        plan = await self.storage.create(name, create, now=time.time())
        meta = plan.meta
        out = {"Content-Type": meta.content_type, h.STREAM_NEXT_OFFSET: str(meta.tail)}
        if meta.closed:
            out[h.STREAM_CLOSED] = "true"
        if plan.created:
            out["Location"] = self._location(req)
        await self._respond(req, 201 if plan.created else 200, out)

    async def _post(self, req: Exchange, name: str) -> None:
        body = await req.read_body(self.max_body_size)
        append = parse_append_request(req.headers, body)
        waiting = self.storage.notifier.waiting(name)
        plan = await self.storage.append(name, append, now=time.time())
        if 0 < waiting <= _ANSWER_READERS_FIRST and plan.appended:
            # Let the few live readers this append woke answer before its own response
            # goes out (a woken reader runs within the next scheduling pass, which trio may
            # order either way: two passes): the data reaches them one response sooner.
            # Not for a crowd of readers: the writer's acknowledgement would wait for all.
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
        await req.respond(plan.status, plan.headers, b"", _FIXED)

    async def _head(self, req: Exchange, name: str) -> None:
        meta = await self.storage.head(name, now=time.time())
        out = {
            "Content-Type": meta.content_type,
            h.STREAM_NEXT_OFFSET: str(meta.tail),
            "Cache-Control": "no-store",
        }
        if meta.closed:
            out[h.STREAM_CLOSED] = "true"
        if meta.ttl is not None:
            out[h.STREAM_TTL] = str(meta.ttl)
        if meta.expires_at is not None:
            out[h.STREAM_EXPIRES_AT] = meta.expires_at
        await self._respond(req, 200, out)

    # ------------------------------------------------------------------ reads

    async def _get(self, req: Exchange, name: str) -> None:
        mode = req.param(h.LIVE_PARAM)
        if mode not in (None, h.LIVE_LONG_POLL, h.LIVE_SSE):
            raise BadRequest(f"unknown live mode {mode!r}")
        try:
            start = parse_read_offset(req.params(h.OFFSET_PARAM))
        except InvalidOffsetError as exc:
            raise BadRequest(str(exc)) from None
        if mode is not None and start is None:
            raise BadRequest(f"live={mode} needs an offset parameter")
        if mode == h.LIVE_SSE:
            await self._sse(req, name, start or ZERO)
            return
        result = await self._read(name, start or ZERO)
        if start == "now" and mode is None:
            await self._respond_now(req, result.meta)
            return
        if mode is None:
            assert start != "now"
            await self._respond_data(req, result, start or ZERO, live=False)
            return
        await self._long_poll(req, name, result, start or ZERO)

    async def _read(self, name: str, start: Offset | str) -> ReadResult:
        result = await self.storage.read(
            name,
            "now" if start == "now" else start,  # type: ignore[arg-type]
            now=time.time(),
            max_bytes=self.max_read_bytes,
        )
        if isinstance(start, Offset):
            if start > result.meta.tail:
                raise BadRequest("offset is beyond the stream's tail")
            if result.records and result.records[0].start < start:
                # Every offset this server hands out is at a message boundary: one inside an
                # append was never minted (PROTOCOL.md: offsets are opaque tokens).
                raise BadRequest("offset is not at a message boundary of this stream")
        return result

    async def _respond_now(self, req: Exchange, meta: StreamMeta) -> None:
        out = {
            "Content-Type": meta.content_type,
            h.STREAM_NEXT_OFFSET: str(meta.tail),
            h.STREAM_UP_TO_DATE: "true",
            "Cache-Control": "no-store",
        }
        if meta.closed:
            out[h.STREAM_CLOSED] = "true"
        body = b"[]" if is_json(media_type(meta.content_type)) else b""
        await self._respond(req, 200, out, body)

    def _cursor(self, req: Exchange) -> str:
        return next_cursor(time.time(), req.param(h.CURSOR_PARAM))

    async def _respond_data(
        self, req: Exchange, result: ReadResult, start: Offset, *, live: bool
    ) -> None:
        meta = result.meta
        data = b"".join(record.data for record in result.records)
        if is_json(media_type(meta.content_type)):
            data = records_to_array(data)
        end = result.next_offset
        at_eof = meta.closed and result.up_to_date
        etag = make_etag(meta, start, end, closed=at_eof)
        out = {
            "Content-Type": meta.content_type,
            h.STREAM_NEXT_OFFSET: str(end),
            "ETag": etag,
            "Cache-Control": self.cache_control,
        }
        if result.up_to_date:
            out[h.STREAM_UP_TO_DATE] = "true"
        if at_eof:
            out[h.STREAM_CLOSED] = "true"
        if live and not at_eof:
            out[h.STREAM_CURSOR] = self._cursor(req)
        inm = req.headers.get("if-none-match")
        if inm is not None and etag in [tag.strip() for tag in inm.split(",")]:
            await self._respond(req, 304, out)
            return
        await self._respond(req, 200, out, data)

    async def _long_poll(
        self, req: Exchange, name: str, result: ReadResult, start: Offset | str
    ) -> None:
        position = result.meta.tail if start == "now" else start
        assert isinstance(position, Offset)
        if start != "now" and result.records:
            await self._respond_data(req, result, position, live=True)
            return
        meta = result.meta
        deadline = anyio.current_time() + self.long_poll_timeout
        while not meta.closed:
            event = self.storage.notifier.event(name)
            result = await self._read(name, position)
            meta = result.meta
            if result.records:
                await self._respond_data(req, result, position, live=True)
                return
            remaining = deadline - anyio.current_time()
            if meta.closed or remaining <= 0:
                break
            with anyio.move_on_after(remaining):
                await event.wait()
        out = {
            h.STREAM_NEXT_OFFSET: str(meta.tail),
            h.STREAM_UP_TO_DATE: "true",
            "Cache-Control": "no-store",
        }
        if meta.closed:
            out[h.STREAM_CLOSED] = "true"
        else:
            out[h.STREAM_CURSOR] = self._cursor(req)
        await self._respond(req, 204, out)

    async def _sse(self, req: Exchange, name: str, start: Offset | str) -> None:
        clock = _SSEClock(anyio.current_time(), self.sse_reconnect_interval)
        notifier = self.storage.notifier
        notifier.subscribe(name, clock.waker)  # before the first read: no change goes unseen
        try:
            first = await self._read(name, start)
            meta = first.meta
            binary = not is_sse_text(media_type(meta.content_type))
            out = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            if binary:
                out[h.SSE_DATA_ENCODING] = "base64"
            await req.start(200, out, _FIXED)
            with unwrap_single():  # a vanished client: ClientGone, not a group of it
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_sse, req, tg.cancel_scope, clock)
                    try:
                        await self._sse_body(req, name, start, first, binary, clock)
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            notifier.unsubscribe(name, clock.waker)
        with anyio.CancelScope(shield=True), anyio.move_on_after(1), suppress(Exception):
            await req.end()

    async def _watch_sse(self, req: Exchange, scope: anyio.CancelScope, clock: _SSEClock) -> None:
        """Beside an SSE body: end it when the client goes; keep its time.

        Wakes the body (``clock.waker``) once ``_SSE_KEEPALIVE`` seconds passed without a
        write, for a keepalive comment, and at the reconnect deadline, to end. The body's
        own waits are bare: a timed cancel scope per wait cost more than the rest of a
        delivery (1,000 readers on one stream each wait once per append).
        """
        while True:
            now = anyio.current_time()
            if now >= clock.deadline:
                clock.expired = True
                clock.waker.wake()
                return
            if now >= clock.last_write + _SSE_KEEPALIVE:
                clock.keepalive_due = True
                clock.last_write = now  # the body writes the comment at once
                clock.waker.wake()
            with anyio.CancelScope(deadline=min(clock.deadline, clock.last_write + _SSE_KEEPALIVE)):
                await req.wait_disconnect()
                scope.cancel()
                return

    def _control(self, req: Exchange, offset: Offset, *, up_to_date: bool, closed: bool) -> bytes:
        # Offsets and cursors are digits and '_': the JSON is written directly (hot path).
        if closed:
            text = f'{{"streamNextOffset":"{offset}","streamClosed":true,"upToDate":true}}'
        elif up_to_date:
            text = (
                f'{{"streamNextOffset":"{offset}","streamCursor":"{self._cursor(req)}",'
                '"upToDate":true}'
            )
        else:
            text = f'{{"streamNextOffset":"{offset}","streamCursor":"{self._cursor(req)}"}}'
        return _sse_event(text, h.SSE_EVENT_CONTROL)

    async def _sse_body(
        self,
        req: Exchange,
        name: str,
        start: Offset | str,
        first: ReadResult,
        binary: bool,
        clock: _SSEClock,
    ) -> None:
        json_mode = is_json(media_type(first.meta.content_type))
        position = first.meta.tail if start == "now" else start
        assert isinstance(position, Offset)
        result: ReadResult | None = None if start == "now" else first
        idle_control_sent = False
        waker = clock.waker
        while True:
            if result is None:
                waker.pending = False  # what this read sees covers every earlier change
                try:
                    result = await self._read(name, position)
                except (Rejected, BadRequest):
                    return  # deleted, expired or re-created (shorter) while streaming
            meta = result.meta
            if result.records:
                data = b"".join(record.data for record in result.records)
                if json_mode:
                    text = records_to_array(data).decode("utf-8", "replace")
                elif binary:
                    text = base64.b64encode(data).decode("ascii")
                else:
                    text = data.decode("utf-8", "replace")
                position = result.next_offset
                closed = meta.closed and result.up_to_date
                chunk = _sse_event(text, h.SSE_EVENT_DATA) + self._control(
                    req, position, up_to_date=result.up_to_date, closed=closed
                )
                await req.write(chunk)
                clock.wrote()
                idle_control_sent = result.up_to_date
                if closed:
                    return
                result = None
                continue
            if meta.closed:
                await req.write(self._control(req, position, up_to_date=True, closed=True))
                return
            if not idle_control_sent:
                await req.write(self._control(req, position, up_to_date=True, closed=False))
                clock.wrote()
                idle_control_sent = True
            if clock.expired:
                return
            if clock.keepalive_due:
                clock.keepalive_due = False
                await req.write(encode_comment())
            await waker.wait()
            result = None


class _SSEClock:
    """The timing of one SSE response, shared by its body and its watcher task."""

    __slots__ = ("deadline", "expired", "keepalive_due", "last_write", "waker")

    def __init__(self, now: float, reconnect_interval: float) -> None:
        self.deadline = now + reconnect_interval  # then the response ends (clients reconnect)
        self.last_write = now
        self.expired = False
        self.keepalive_due = False
        self.waker = Waker()  # new data (the storage's notifier) or the watcher's time

    def wrote(self) -> None:
        self.last_write = anyio.current_time()


def create_app(
    storage: StreamStorage | StorageKind = "memory",
    *,
    data_dir: str | Path | None = None,
    redis_url: str | None = None,
    long_poll_timeout: float = 30.0,
    sse_reconnect_interval: float = 60.0,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_read_bytes: int = 1024 * 1024,
    sweep_interval: float = 1.0,
    cache_control: str = DEFAULT_CACHE_CONTROL,
) -> Starlette:
    """A Starlette app serving Durable Streams at ``/v1/stream/<path>``.

    ``storage`` is an engine name (opened in the app's lifespan, which also runs the TTL
    sweeper) or an engine you opened yourself (its lifetime stays yours). Mounting this app
    inside another Starlette/FastAPI app skips its lifespan; there, open the storage in your
    own lifespan and mount :class:`DurableStreamsApp` instead. ``cache_control`` overrides
    the ``Cache-Control`` of cacheable catch-up responses (see :class:`DurableStreamsApp`);
    a bad value raises :class:`ValueError` here, not at the first request.
    """
    options: dict[str, Any] = {
        "long_poll_timeout": long_poll_timeout,
        "sse_reconnect_interval": sse_reconnect_interval,
        "max_body_size": max_body_size,
        "max_read_bytes": max_read_bytes,
        "cache_control": check_cache_control(cache_control),
    }
    if isinstance(storage, StreamStorage):
        handler = DurableStreamsApp(storage, **options)
        app = _DurableStarlette(routes=[Mount("/", app=handler)])
        app.durable = handler
        app.state.storage = storage  # for add-ons such as the inspector page
        return app

    kind = storage

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if served.durable is None:
            raise RuntimeError("the storage is not open: the app's lifespan has not started")
        await served.durable(scope, receive, send)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with open_storage(
            kind, data_dir=data_dir, redis_url=redis_url, sweep_interval=sweep_interval
        ) as opened:
            served.durable = DurableStreamsApp(opened, **options)
            _app.state.storage = opened  # for add-ons such as the inspector page
            try:
                yield
            finally:
                served.durable = None

    served = _DurableStarlette(routes=[Mount("/", app=dispatch)], lifespan=lifespan)
    return served


class _DurableStarlette(Starlette):
    """Starlette, with stream requests handed straight to the Durable Streams app.

    Requests under ``/v1/stream/`` skip Starlette's error middleware and router (the app
    answers every error itself) - unless middleware was added, which then sees every request.
    """

    durable: DurableStreamsApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        durable = self.durable
        if (
            durable is not None
            and scope["type"] == "http"
            and not self.user_middleware
            and _is_stream_path(scope)
        ):
            await durable(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def native_route(self, raw_path: bytes) -> Handler | None:
        """Stream requests go straight to the Durable Streams app (see :class:`NativeApp`).

        Anything else, and every request once middleware was added, takes the ASGI path.
        """
        durable = self.durable
        if durable is not None and not self.user_middleware and raw_path.startswith(_PREFIX_BYTES):
            return durable.handle
        return None


def _is_stream_path(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith(_PREFIX)
