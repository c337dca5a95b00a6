"""The async Durable Streams client: a thin driver over the sans-IO core.

This file is the source of truth: ``_sync_client.py`` is generated from it by
``scripts/unasync.py`` (a test fails when the generated file is stale). All protocol logic lives
in :mod:`resumable_streams._protocol.durable.client`; this module only moves bytes.
"""

from __future__ import annotations

import codecs
import inspect
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, cast

import anyio
import anyio.lowlevel
import httpx2

from resumable_streams._protocol.durable import client as core
from resumable_streams._protocol.durable import headers as h
from resumable_streams.durable._async_http import (
    AsyncConnectionPool,
    AsyncHTTPResponse,
    use_builtin_http,
)
from resumable_streams.durable._ssl import default_ssl_context
from resumable_streams.durable._types import (
    AppendResult,
    CloseResult,
    HeadResult,
    LiveMode,
    StreamEvent,
)
from resumable_streams.errors import (
    DurableStreamClientError,
    FetchError,
    StreamConsumedError,
)

__all__ = ["AsyncDurableStream", "AsyncStreamResponse", "open_async_response"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
"""Reads wait up to 60 s for bytes: longer than a server's long-poll (30 s) / SSE keep-alive."""


_Http = httpx2.AsyncClient | AsyncConnectionPool
"""What a flow runner sends requests with: a caller's (or our) httpx2 client, or the built-in
HTTP/1.1 connection pool."""


def _make_client(client: _Http | None, timeout: Any, url: str) -> tuple[_Http, bool]:
    """The HTTP client to use, and whether it is ours to close.

    A caller's client is used as it is. Otherwise the built-in HTTP/1.1 client serves plain
    ``http://`` URLs that no proxy applies to, and httpx2 the rest (``https://``, proxies).
    """
    if client is not None:
        return client, False
    timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
    if use_builtin_http(url):
        return AsyncConnectionPool(timeout), True
    return httpx2.AsyncClient(timeout=timeout, verify=default_ssl_context()), True


class _OwnsHttpClient:
    """Closes the HTTP client it created itself (never one it was given).

    As a context manager, on exit. Warns (``ResourceWarning``) when collected unclosed.
    """

    _client: _Http
    _owns_client: bool
    _closed: bool
    _kind = "object"

    def _describe(self) -> str:
        return ""

    async def _release(self) -> None:
        """Release what the object holds besides its client (a hook)."""

    async def aclose(self) -> None:
        """Release the connection, and the HTTP client if this object created it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._release()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_owns_client", False):
            warnings.warn(
                f"unclosed {self._kind} {self._describe()!r}: use it as a context manager or "
                "call close()",
                ResourceWarning,
                stacklevel=1,
            )


# unasync: begin-async-only
async def _abandon_body(body: Any) -> None:
    """Stop an httpx body iterator so that each of its nested async generators finishes.

    Closing only the outer generator leaves the inner ones (httpx, httpcore) suspended, and trio
    warns when it collects them. Cancelling a pending read instead unwinds them all.
    """
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            async for _ in body:
                pass
        except httpx2.TransportError:
            pass
    await body.aclose()


# unasync: end-async-only
class AsyncFlowRunner(Generic[R]):
    """Drives one sans-IO flow over an HTTP client (see the core module's docstring)."""

    def __init__(
        self,
        client: _Http,
        flow: Generator[core.Action, Any, R],
        *,
        on_error: Callable[[Exception], Any] | None = None,
        wait_for_seqs: Callable[[int, range], Any] | None = None,
    ) -> None:
        self._client = client
        self._flow = flow
        self._on_error = on_error
        self._wait_for_seqs = wait_for_seqs
        self._response: httpx2.Response | None = None
        self._body: Any = None
        self._builtin: AsyncHTTPResponse | None = None
        self._prefetched: core.Request | None = None  # pipelined behind ``_builtin``
        self._outcome: Any = None
        self._throw: BaseException | None = None
        self.done = False
        self.result: R | None = None
        self.last_head: core.ResponseHead | None = None

    async def run(self) -> R:
        """Run the flow to its end (it must not emit); return its result."""
        event = await self.next_event()
        if event is not None:  # pragma: no cover - unary flows never emit
            raise RuntimeError("unexpected Emit from a unary flow")
        return cast("R", self.result)

    async def next_event(self) -> core.ReadEvent | None:
        """Advance to the next :class:`~core.Emit`; ``None`` once the flow has finished."""
        if self.done:
            return None
        try:
            while True:
                try:
                    if self._throw is not None:
                        exc, self._throw = self._throw, None
                        action = self._flow.throw(exc)
                    else:
                        action = self._flow.send(self._outcome)
                except StopIteration as stop:
                    self.done = True
                    self.result = stop.value
                    await self._release()
                    return None
                if isinstance(action, core.Emit):
                    self._outcome = None
                    return action.event
                self._outcome = await self._perform(action)
        except BaseException:
            self.done = True
            self._flow.close()
            with anyio.CancelScope(shield=True):
                await self._release()
            raise

    async def aclose(self) -> None:
        """Stop the flow and release its response."""
        if not self.done:
            self.done = True
            self._flow.close()
        await self._release()

    async def _release(self) -> None:
        self._prefetched = None
        builtin, self._builtin = self._builtin, None
        if builtin is not None:
            await builtin.aclose()
        response, self._response = self._response, None
        body, self._body = self._body, None
        try:
            if body is not None:
                # unasync: begin-async-only
                await _abandon_body(body)
                # unasync: end-async-only
                # unasync: body.close()
        finally:
            if response is not None:
                await response.aclose()

    async def _perform(self, action: core.Action) -> Any:
        if isinstance(action, core.Send):
            return await self._send(action.request)
        if isinstance(action, core.Receive):
            return await self._receive()
        if isinstance(action, core.Sleep):
            await anyio.sleep(action.seconds)
            return None
        if isinstance(action, core.CloseResponse):
            await self._release()
            return None
        if isinstance(action, core.Prefetch):
            await self._prefetch(action.request)
            return None
        if isinstance(action, core.CallOnError):
            if self._on_error is None:
                raise action.error
            result = self._on_error(action.error)
            if inspect.isawaitable(result):
                result = await result
            return result
        if isinstance(action, core.WaitForSeqs):
            if self._wait_for_seqs is not None:
                try:
                    await self._wait_for_seqs(action.epoch, action.seqs)
                except DurableStreamClientError as exc:
                    self._throw = exc
            return None
        raise TypeError(f"unknown action {action!r}")  # pragma: no cover

    async def _prefetch(self, request: core.Request) -> None:
        """Pipeline ``request`` behind the current built-in response (httpx2 cannot)."""
        builtin = self._builtin
        if builtin is None or self._prefetched is not None:
            return
        r = request
        if await builtin.pipeline(r.method, r.url, r.headers, r.content):
            self._prefetched = request

    async def _send(self, request: core.Request) -> core.ResponseHead | core.Failure:
        builtin = self._builtin
        if builtin is not None and self._prefetched is request:
            # its response follows the one just read, on the same connection
            self._builtin = self._prefetched = None
            try:
                piped = await builtin.next_response()
            except httpx2.TransportError:
                piped = None  # e.g. a server that drops pipelined requests: send it again
            finally:
                await builtin.aclose()
            if piped is not None:
                return await self._head(piped, piped.headers, request)
        await self._release()
        client = self._client
        response: httpx2.Response | AsyncHTTPResponse
        try:
            if isinstance(client, AsyncConnectionPool):
                response = await client.send(
                    request.method, request.url, request.headers, request.content
                )
                headers = response.headers
            else:
                req = client.build_request(
                    request.method,
                    request.url,
                    headers=list(request.headers),
                    content=request.content,
                )
                response = await client.send(req, stream=True)
                headers = {k.lower(): v for k, v in response.headers.items()}
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            return core.Failure(exc, sent=False)
        except httpx2.TransportError as exc:
            return core.Failure(exc, sent=True)
        return await self._head(response, headers, request)

    async def _head(
        self,
        response: httpx2.Response | AsyncHTTPResponse,
        headers: Mapping[str, str],
        request: core.Request,
    ) -> core.ResponseHead | core.Failure:
        """Read the body of a non-streaming request, or keep the response to stream it."""
        body = None
        if not request.stream:
            try:
                body = await response.aread()
            except httpx2.TransportError as exc:
                return core.Failure(exc, sent=True)
            finally:
                await response.aclose()
        elif isinstance(response, AsyncHTTPResponse):
            self._builtin = response
        else:
            self._response = response
            self._body = response.aiter_bytes()
        head = core.ResponseHead(response.status_code, headers, body, response.reason_phrase)
        self.last_head = head
        return head

    async def _receive(self) -> bytes | core.Failure:
        try:
            if self._builtin is not None:
                return await self._builtin.receive()
            if self._body is None:
                return b""
            chunk: bytes = await anext(self._body, b"")
        except httpx2.TransportError as exc:
            return core.Failure(exc, sent=True)
        return chunk


# ------------------------------------------------------------------------------------------------
# Reading


_IterMode = Literal["bytes", "text", "json", "json_batches"]


class _AsyncEventIterator(Generic[T]):
    """Iterates a response, converting each :class:`~core.ReadEvent` to zero or more items."""

    def __init__(
        self,
        response: AsyncStreamResponse,
        convert: Callable[[core.ReadEvent], Iterable[T]],
        *,
        until_up_to_date: bool = False,
    ) -> None:
        self._response = response
        self._convert = convert
        self._buffer: deque[T] = deque()
        self._until_up_to_date = until_up_to_date
        self._finished = False

    def __aiter__(self) -> _AsyncEventIterator[T]:
        return self

    async def __anext__(self) -> T:
        while not self._buffer:
            if self._finished:
                raise StopAsyncIteration
            event = await self._response._next_event()
            if event is None:
                raise StopAsyncIteration
            self._buffer.extend(self._convert(event))
            if self._until_up_to_date and (event.up_to_date or event.closed):
                self._finished = True
        return self._buffer.popleft()


class AsyncStreamResponse(_OwnsHttpClient):
    """A read session on a stream: iterate it once, as bytes, text, JSON or events.

    Properties follow the stream as you consume it: :attr:`offset` is where to resume after the
    last item you received. Use it as a context manager (or call :meth:`aclose`) to release the
    connection — and the HTTP client, when the session created its own.
    """

    def __init__(
        self,
        options: core.ReadOptions,
        *,
        client: httpx2.AsyncClient | AsyncConnectionPool | None = None,
        timeout: Any = None,
        on_error: Callable[[Exception], Any] | None = None,
    ) -> None:
        self._options = options
        self._client, self._owns_client = _make_client(client, timeout, options.url)
        self._runner: AsyncFlowRunner[None] = AsyncFlowRunner(
            self._client, core.read_flow(options), on_error=on_error
        )
        self._first: core.ReadEvent | None = None
        self._has_first = False
        self._consumed_by: str | None = None
        self._closed = False
        self._offset = options.offset if options.offset is not None else h.OFFSET_BEGINNING
        self._cursor = options.cursor
        self._up_to_date = False
        self._stream_closed = False

    async def _start(self) -> None:
        """Make the first request (errors such as 404 surface here)."""
        try:
            self._first = await self._runner.next_event()
            self._has_first = True
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def _next_event(self) -> core.ReadEvent | None:
        if self._has_first:
            event, self._first, self._has_first = self._first, None, False
        else:
            event = await self._runner.next_event()
        if event is not None:
            self._offset = event.next_offset
            self._cursor = event.cursor
            self._up_to_date = event.up_to_date
            self._stream_closed = event.closed
        return event

    # -- properties -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The stream's URL."""
        return self._options.url

    @property
    def offset(self) -> str:
        """The offset after the last item received: resume from here."""
        return self._offset

    @property
    def start_offset(self) -> str:
        """The offset this session started at."""
        return self._options.offset if self._options.offset is not None else h.OFFSET_BEGINNING

    @property
    def closed(self) -> bool:
        """Whether this session has been closed (its connection released)."""
        return self._closed

    @property
    def cursor(self) -> str | None:
        """The last ``Stream-Cursor`` seen (CDN collapsing)."""
        return self._cursor

    @property
    def up_to_date(self) -> bool:
        """Whether the last item received brought the reader up to the tail."""
        return self._up_to_date

    @property
    def stream_closed(self) -> bool:
        """Whether the stream was closed and everything has been read."""
        return self._stream_closed

    @property
    def live(self) -> LiveMode:
        """The live mode this session was opened with."""
        return self._options.live

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers of the latest response (names lower-cased)."""
        head = self._runner.last_head
        return dict(head.headers) if head is not None else {}

    @property
    def status(self) -> int | None:
        """Status of the latest response."""
        head = self._runner.last_head
        return head.status if head is not None else None

    @property
    def status_text(self) -> str:
        """Reason phrase of the latest response (``""`` if the server sent none)."""
        head = self._runner.last_head
        return head.reason if head is not None else ""

    @property
    def ok(self) -> bool:
        """Whether the latest response was a success."""
        return self.status is not None and self.status < 400

    @property
    def content_type(self) -> str | None:
        """The stream's content type, from the first response."""
        return self.headers.get("content-type")

    @property
    def etag(self) -> str | None:
        """``ETag`` of the latest response (for ``if_none_match=`` on a later read)."""
        return self.headers.get("etag")

    @property
    def not_modified(self) -> bool:
        """Whether the server answered ``304`` to ``if_none_match=``: your copy is current."""
        return self.status == 304

    # -- consumption ---------------------------------------------------------------------------

    def _consume(self, method: str) -> None:
        if self._consumed_by is not None:
            raise StreamConsumedError(
                f"cannot call {method}(): this response was already consumed by "
                f"{self._consumed_by}()",
                url=self.url,
            )
        self._consumed_by = method

    def _json_mode(self) -> bool:
        return core.is_json_type(self.content_type)

    def __aiter__(self) -> _AsyncEventIterator[bytes]:
        return self.iter_bytes()

    def iter_bytes(self) -> _AsyncEventIterator[bytes]:
        """Iterate raw byte chunks (one per server response or SSE data event)."""
        self._consume("iter_bytes")
        return _AsyncEventIterator(self, lambda ev: [ev.data] if ev.data else [])

    def iter_text(self) -> _AsyncEventIterator[str]:
        """Iterate text chunks (UTF-8, decoded incrementally)."""
        self._consume("iter_text")
        return _AsyncEventIterator(self, _text_converter())

    def iter_json(self, decode: Callable[[Any], T] | None = None) -> _AsyncEventIterator[Any]:
        """Iterate JSON messages one by one, each passed through ``decode`` if given."""
        self._consume("iter_json")
        return _AsyncEventIterator(self, _json_converter(decode, flatten=True))

    def iter_json_batches(
        self, decode: Callable[[Any], T] | None = None
    ) -> _AsyncEventIterator[list[Any]]:
        """Iterate lists of JSON messages, one list per server response / SSE data event."""
        self._consume("iter_json_batches")
        return _AsyncEventIterator(self, _json_converter(decode, flatten=False))

    def iter_events(
        self, mode: _IterMode = "bytes", decode: Callable[[Any], Any] | None = None
    ) -> _AsyncEventIterator[StreamEvent[Any]]:
        """Iterate :class:`StreamEvent` objects: data plus offset, cursor and flags."""
        self._consume("iter_events")
        return _AsyncEventIterator(self, _event_converter(mode, decode))

    async def read_bytes(self) -> bytes:
        """Everything up to the tail as of now (or to the end of a closed stream)."""
        self._consume("read_bytes")
        it = _AsyncEventIterator(
            self, lambda ev: [ev.data] if ev.data else [], until_up_to_date=True
        )
        return b"".join([chunk async for chunk in it])

    async def read_text(self) -> str:
        """Like :meth:`read_bytes`, decoded as UTF-8."""
        self._consume("read_text")
        it = _AsyncEventIterator(self, _text_converter(), until_up_to_date=True)
        return "".join([chunk async for chunk in it])

    async def read_json(self, decode: Callable[[Any], T] | None = None) -> list[Any]:
        """All JSON messages up to the tail as of now, as one list."""
        self._consume("read_json")
        it = _AsyncEventIterator(self, _json_converter(decode, flatten=True), until_up_to_date=True)
        return [item async for item in it]

    async def read_json_batches(self, decode: Callable[[Any], T] | None = None) -> list[list[Any]]:
        """All JSON batches up to the tail as of now."""
        self._consume("read_json_batches")
        it = _AsyncEventIterator(
            self, _json_converter(decode, flatten=False), until_up_to_date=True
        )
        return [batch async for batch in it]

    # -- lifecycle -----------------------------------------------------------------------------

    async def _release(self) -> None:
        await self._runner.aclose()

    _kind = "stream response"

    def _describe(self) -> str:
        return self._options.url


def _text_converter() -> Callable[[core.ReadEvent], list[str]]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")

    def convert(ev: core.ReadEvent) -> list[str]:
        text = decoder.decode(ev.data or b"", final=ev.closed)
        return [text] if text else []

    return convert


def _json_converter(
    decode: Callable[[Any], Any] | None, *, flatten: bool
) -> Callable[[core.ReadEvent], list[Any]]:
    def convert(ev: core.ReadEvent) -> list[Any]:
        if not ev.data:
            return []
        items = core.event_messages(ev)
        if decode is not None:
            items = [decode(i) for i in items]
        if flatten:
            return items
        return [items] if items else []

    return convert


def _event_converter(
    mode: _IterMode, decode: Callable[[Any], Any] | None
) -> Callable[[core.ReadEvent], list[StreamEvent[Any]]]:
    text = _text_converter()

    def convert(ev: core.ReadEvent) -> list[StreamEvent[Any]]:
        data: Any
        if ev.data is None:
            data = None
        elif mode == "bytes":
            data = ev.data
        elif mode == "text":
            data = "".join(text(ev))
        else:
            items = core.event_messages(ev)
            if decode is not None:
                items = [decode(i) for i in items]
            data = items
        return [StreamEvent(data, ev.next_offset, ev.up_to_date, ev.cursor, ev.closed)]

    return convert


async def open_async_response(
    url: str,
    *,
    offset: str | None = None,
    live: LiveMode = True,
    cursor: str | None = None,
    headers: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    on_error: Callable[[Exception], Any] | None = None,
    client: _Http | None = None,
    timeout: Any = None,  # noqa: ASYNC109 - the HTTP client's timeout, as in httpx
    retry: core.RetryPolicy | None = None,
    if_none_match: str | None = None,
    max_chunk_bytes: int = core.DEFAULT_MAX_CHUNK_BYTES,
) -> AsyncStreamResponse:
    """Open a read session and make its first request (so 404 and friends raise here)."""
    if isinstance(max_chunk_bytes, bool) or not isinstance(max_chunk_bytes, int):
        raise TypeError(f"max_chunk_bytes must be an int, got {max_chunk_bytes!r}")
    if max_chunk_bytes <= 0:
        raise ValueError(f"max_chunk_bytes must be > 0, got {max_chunk_bytes!r}")
    options = core.ReadOptions(
        url=url,
        offset=offset,
        live=live,
        cursor=cursor,
        headers=headers,
        params=params,
        policy=retry if retry is not None else core.RetryPolicy(),
        has_on_error=on_error is not None,
        if_none_match=if_none_match,
        max_chunk_bytes=max_chunk_bytes,
    )
    core.read_request(options, options.offset or h.OFFSET_BEGINNING, None, None)  # validate
    response = AsyncStreamResponse(options, client=client, timeout=timeout, on_error=on_error)
    await response._start()
    return response


# ------------------------------------------------------------------------------------------------
# Handles

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024


class _QueuedAppend(core.QueuedAppend):
    """An append waiting in a handle's batching queue, and how it ended."""

    def __init__(self, message: bytes, content_type: str, seq: str | None) -> None:
        super().__init__(message, content_type, seq)
        self.ready = anyio.Event()
        """Set when the append has finished, or when its caller must lead the next batch."""
        self.done = False
        self.leading = False
        """Whether its caller sends the next batch (the queue's head has a leader)."""
        self.result: AppendResult | None = None
        self.error: BaseException | None = None

    def finish(self, result: AppendResult | None, error: BaseException | None) -> None:
        self.result, self.error, self.done = result, error, True
        self.ready.set()

    def outcome(self) -> AppendResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class AsyncDurableStream(_OwnsHttpClient):
    """A handle on one stream: create, connect, head, append, close, delete and read it.

    The handle keeps its URL, headers, params and content type; it owns an HTTP client unless
    you pass one (``client=``), and closes what it owns in :meth:`aclose` / on exiting
    ``async with``.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: Any = 30.0,
        retry: core.RetryPolicy | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        batching: bool = True,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        if max_batch_bytes <= 0:
            raise ValueError(f"max_batch_bytes must be > 0, got {max_batch_bytes!r}")
        self.url = url
        self.headers: dict[str, Any] = dict(headers or {})
        self.params: dict[str, Any] = dict(params or {})
        self.content_type = content_type
        self.retry = retry if retry is not None else core.RetryPolicy()
        self.on_error = on_error
        self.batching = batching
        self.max_batch_bytes = max_batch_bytes
        self._batch_lock = threading.Lock()
        self._batch_queue: deque[_QueuedAppend] = deque()
        self._batch_busy = False
        self._batch_shared = False  # whether the last batch had company (concurrent callers)
        self._timeout = timeout
        self._client, self._owns_client = _make_client(client, timeout, url)
        self._httpx: httpx2.AsyncClient | None = None
        self._closed = False

    @property
    def client(self) -> httpx2.AsyncClient:
        """The httpx2 client of this handle: yours if you passed ``client=``.

        A handle that makes its own connections uses the built-in HTTP/1.1 client for plain
        ``http://`` URLs (see "HTTP" in docs/durable-client.md); for those, this property
        creates an httpx2 client on first access (with the handle's timeout; closed with
        the handle) for your own requests. The handle's requests do not use it.
        """
        if isinstance(self._client, httpx2.AsyncClient):
            return self._client
        if self._httpx is None:
            timeout = self._timeout if self._timeout is not None else DEFAULT_TIMEOUT
            self._httpx = httpx2.AsyncClient(timeout=timeout, verify=default_ssl_context())
        return self._httpx

    async def _release(self) -> None:
        httpx_client, self._httpx = self._httpx, None
        if httpx_client is not None:
            await httpx_client.aclose()

    async def _run(self, flow: Generator[core.Action, Any, R]) -> R:
        return await AsyncFlowRunner(self._client, flow).run()

    @classmethod
    async def _opened(
        cls, url: str, kwargs: dict[str, Any], first: Callable[[AsyncDurableStream], Any]
    ) -> AsyncDurableStream:
        """A new handle on which ``await first(handle)`` succeeded (else it is closed)."""
        handle = cls(url, **kwargs)
        try:
            await first(handle)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await handle.aclose()
            raise
        return handle

    @classmethod
    async def create(
        cls,
        url: str,
        *,
        content_type: str | None = None,
        ttl_seconds: int | None = None,
        expires_at: str | None = None,
        body: Any = None,
        closed: bool = False,
        forked_from: str | None = None,
        fork_offset: str | None = None,
        fork_sub_offset: int | None = None,
        **kwargs: Any,
    ) -> AsyncDurableStream:
        """Create the stream (idempotent if it exists with the same configuration).

        ``forked_from`` (a stream URL or path) creates it as a fork of that stream: its data up
        to ``fork_offset`` (default: the source's tail), plus ``fork_sub_offset`` messages /
        bytes, then its own appends. A fork inherits the source's content type. ``kwargs`` go
        to the constructor (``headers``, ``params``, ``client``, ``timeout``...).
        """
        return await cls._opened(
            url,
            {"content_type": content_type, **kwargs},
            lambda handle: handle.create_stream(
                content_type=content_type,
                ttl_seconds=ttl_seconds,
                expires_at=expires_at,
                body=body,
                closed=closed,
                forked_from=forked_from,
                fork_offset=fork_offset,
                fork_sub_offset=fork_sub_offset,
            ),
        )

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> AsyncDurableStream:
        """Open a handle on an existing stream (checked with ``HEAD``; learns its type)."""
        return await cls._opened(url, kwargs, lambda handle: handle.head())

    @classmethod
    async def head_static(cls, url: str, **kwargs: Any) -> HeadResult:
        """``HEAD`` a stream without keeping a handle (``kwargs`` as for the constructor)."""
        async with cls(url, **kwargs) as handle:
            return await handle.head()

    @classmethod
    async def delete_static(cls, url: str, **kwargs: Any) -> None:
        """``DELETE`` a stream without keeping a handle (``kwargs`` as for the constructor)."""
        async with cls(url, **kwargs) as handle:
            await handle.delete()

    async def fork(
        self,
        url: str,
        *,
        offset: str | None = None,
        sub_offset: int | None = None,
        ttl_seconds: int | None = None,
        expires_at: str | None = None,
        closed: bool = False,
        **kwargs: Any,
    ) -> AsyncDurableStream:
        """Create a fork of this stream at ``url`` and return a handle on it.

        The fork reads as this stream's data up to ``offset`` (default: the tail now; plus
        ``sub_offset`` JSON messages or bytes), followed by its own appends; appends to either
        stream do not show in the other. The new handle uses this one's HTTP client, headers,
        params and retry policy unless ``kwargs`` say otherwise. Deleting a stream that has
        forks makes it gone (410) for readers while its forks live on.
        """
        for name, value in (
            ("headers", self.headers),
            ("params", self.params),
            ("client", self._client),
            ("retry", self.retry),
            ("batching", self.batching),
        ):
            kwargs.setdefault(name, value)
        return await type(self).create(
            url,
            ttl_seconds=ttl_seconds,
            expires_at=expires_at,
            closed=closed,
            forked_from=self.url,
            fork_offset=offset,
            fork_sub_offset=sub_offset,
            **kwargs,
        )

    async def create_stream(
        self,
        *,
        content_type: str | None = None,
        ttl_seconds: int | None = None,
        expires_at: str | None = None,
        body: Any = None,
        closed: bool = False,
        forked_from: str | None = None,
        fork_offset: str | None = None,
        fork_sub_offset: int | None = None,
    ) -> None:
        """``PUT``: create this stream (see :meth:`create`)."""
        fork = None
        if forked_from is not None:
            fork = core.ForkFrom(forked_from, fork_offset, fork_sub_offset)
        elif fork_offset is not None or fork_sub_offset is not None:
            raise ValueError(
                f"fork_offset={fork_offset!r} / fork_sub_offset={fork_sub_offset!r} need "
                "forked_from= (the source stream)"
            )
        ctype = content_type or self.content_type
        if ctype is None and fork is None:
            ctype = h.DEFAULT_CONTENT_TYPE
        payload = None
        if body is not None:
            if ctype is None:
                raise ValueError("a fork created with body= needs content_type= to encode it")
            payload = core.encode_append_body(body, ctype)
        request = core.create_request(
            self.url,
            headers=core.resolve_values(self.headers),
            params=core.resolve_values(self.params),
            content_type=ctype,
            ttl_seconds=ttl_seconds,
            expires_at=expires_at,
            body=payload,
            closed=closed,
            fork=fork,
        )
        head = await self._run(
            core.unary_flow(request, op="create", policy=self.retry, idempotent=True, url=self.url)
        )
        self.content_type = head.get("content-type") or ctype

    async def head(self) -> HeadResult:
        """``HEAD``: the stream's metadata (tail offset, closed flag, TTL, expiry...)."""
        request = core.simple_request(
            "HEAD",
            self.url,
            headers=core.resolve_values(self.headers),
            params=core.resolve_values(self.params),
        )
        head = await self._run(
            core.unary_flow(request, op="head", policy=self.retry, idempotent=True, url=self.url)
        )
        info = core.StreamInfo.from_response(head)
        if info.content_type:
            self.content_type = info.content_type
        return HeadResult(
            exists=True,
            content_type=info.content_type,
            offset=info.next_offset,
            etag=info.etag,
            cache_control=info.cache_control,
            stream_closed=info.closed,
            ttl_seconds=info.ttl_seconds,
            expires_at=info.expires_at,
        )

    async def _ensure_content_type(self) -> str:
        if self.content_type is None:
            await self.head()
        return self.content_type or h.DEFAULT_CONTENT_TYPE

    async def append(
        self, data: Any, *, seq: str | None = None, content_type: str | None = None
    ) -> AppendResult:
        """``POST`` one message: bytes, str, or (on a JSON stream) any JSON value.

        On a JSON stream a ``str`` / ``bytes`` is taken as already-serialized JSON (the official
        client's convention) and any other value is serialized; nothing is encoded twice.
        ``seq`` is sent as ``Stream-Seq`` (the server rejects a value not above the last one).

        With ``batching`` (the default), appends made while another of this handle's appends
        is in flight are queued and sent together in the next POST (up to
        ``max_batch_bytes``); each call returns once its message is stored, with the tail
        offset after its batch. An append with ``seq`` always travels alone. A batch that
        fails fails every append in it. An append cancelled before its batch was sent is not
        sent.
        """
        ctype = content_type or await self._ensure_content_type()
        item = _QueuedAppend(core.encode_message(data, ctype), ctype, seq)
        if not item.message:
            raise ValueError("cannot append an empty body (use close_stream() to close)")
        if not self.batching:
            return await self._send_appends([item])
        with self._batch_lock:
            self._batch_queue.append(item)
            item.leading = not self._batch_busy
            self._batch_busy = True
        try:
            contended = not item.leading or self._batch_shared
            if not item.leading:
                await item.ready.wait()
                if item.done:
                    return item.outcome()
            if contended:
                # this caller leads. Let callers that are about to append (such as those
                # whose appends just finished) queue first, so that they share this batch.
                # (Twice: trio runs the tasks woken in one batch in random order.) A lone
                # sequential writer skips this.
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
        except BaseException:
            self._withdraw(item)
            raise
        # its append is at the head of the queue
        with self._batch_lock:
            batch = core.take_append_batch(self._batch_queue, self.max_batch_bytes)
            self._batch_shared = len(batch) > 1 or bool(self._batch_queue)
        try:
            result = await self._send_appends(batch)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, DurableStreamClientError)
                else FetchError(
                    f"the request carrying this append was interrupted ({exc!r}); it may or "
                    f"may not have been stored: {self.url}",
                    url=self.url,
                )
            )
            for other in batch:
                other.finish(None, error)
            raise
        else:
            for other in batch:
                other.finish(result, None)
        finally:
            self._hand_off()
        return item.outcome()

    def _hand_off(self) -> None:
        """Wake the next queued append to lead, or mark the handle idle."""
        with self._batch_lock:
            if self._batch_queue:
                self._batch_queue[0].leading = True
                self._batch_queue[0].ready.set()
            else:
                self._batch_busy = False

    def _withdraw(self, item: _QueuedAppend) -> None:
        """A queued append was interrupted while waiting: unqueue it unless already sent."""
        with self._batch_lock:
            if not self._batch_queue or item not in self._batch_queue:
                return  # in flight in another caller's batch, or finished
            was_leader = item.leading
            self._batch_queue.remove(item)
        if was_leader:
            self._hand_off()

    async def _send_appends(self, batch: list[_QueuedAppend]) -> AppendResult:
        first = batch[0]
        request = core.append_request(
            self.url,
            core.batch_body([q.message for q in batch], core.is_json_type(first.content_type)),
            headers=core.resolve_values(self.headers),
            params=core.resolve_values(self.params),
            content_type=first.content_type,
            seq=first.seq,
        )
        head = await self._run(
            core.unary_flow(request, op="append", policy=self.retry, idempotent=False, url=self.url)
        )
        return AppendResult(next_offset=head.get(h.STREAM_NEXT_OFFSET) or "")

    async def close_stream(self, data: Any = None) -> CloseResult:
        """Close the stream (idempotent), optionally appending ``data`` atomically first."""
        ctype = self.content_type
        body = b""
        if data is not None:
            ctype = await self._ensure_content_type()
            body = core.encode_append_body(data, ctype)
        request = core.append_request(
            self.url,
            body,
            headers=core.resolve_values(self.headers),
            params=core.resolve_values(self.params),
            content_type=ctype,
            close=True,
        )
        head = await self._run(
            core.unary_flow(
                request, op="close", policy=self.retry, idempotent=not body, url=self.url
            )
        )
        return CloseResult(final_offset=head.get(h.STREAM_NEXT_OFFSET) or "")

    async def delete(self) -> None:
        """``DELETE`` the stream."""
        request = core.simple_request(
            "DELETE",
            self.url,
            headers=core.resolve_values(self.headers),
            params=core.resolve_values(self.params),
        )
        await self._run(
            core.unary_flow(request, op="delete", policy=self.retry, idempotent=True, url=self.url)
        )

    # unasync: begin-async-only
    def stream(
        self,
        *,
        offset: str | None = None,
        live: LiveMode = True,
        cursor: str | None = None,
        headers: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        **options: Any,
    ) -> AsyncStreamSession:
        """Read the stream (see :func:`astream`); uses this handle's client and headers.

        ``options``: ``if_none_match``, ``max_chunk_bytes`` (as for :func:`astream`).
        """
        return AsyncStreamSession(
            lambda: self._open(offset, live, cursor, headers, params, on_error, options)
        )

    # unasync: end-async-only
    # unasync: def stream(
    # unasync:     self,
    # unasync:     *,
    # unasync:     offset: str | None = None,
    # unasync:     live: LiveMode = True,
    # unasync:     cursor: str | None = None,
    # unasync:     headers: Mapping[str, Any] | None = None,
    # unasync:     params: Mapping[str, Any] | None = None,
    # unasync:     on_error: Callable[[Exception], Any] | None = None,
    # unasync:     **options: Any,
    # unasync: ) -> StreamResponse:
    # unasync:     """Read the stream (see :func:`stream`), with this handle's client, headers.
    # unasync:
    # unasync:     ``options``: ``if_none_match``, ``max_chunk_bytes`` (as for :func:`stream`).
    # unasync:     """
    # unasync:     return self._open(offset, live, cursor, headers, params, on_error, options)

    async def _open(
        self,
        offset: str | None,
        live: LiveMode,
        cursor: str | None,
        headers: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        on_error: Callable[[Exception], Any] | None,
        options: dict[str, Any],
    ) -> AsyncStreamResponse:
        return await open_async_response(
            self.url,
            offset=offset,
            live=live,
            cursor=cursor,
            headers={**self.headers, **(headers or {})},
            params={**self.params, **(params or {})},
            on_error=on_error or self.on_error,
            client=self._client,
            retry=self.retry,
            **options,
        )

    _kind = "stream handle"

    def _describe(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, content_type={self.content_type!r})"


# unasync: begin-async-only
class AsyncStreamSession:
    """What :func:`astream` returns: an async context manager, and an awaitable.

    Use ``async with astream(url) as res``, or ``res = await astream(url)`` and close ``res``
    yourself.
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._response: AsyncStreamResponse | None = None

    def __await__(self) -> Generator[Any, None, AsyncStreamResponse]:
        return self._opener().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> AsyncStreamResponse:
        self._response = await self._opener()
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            await self._response.aclose()


# unasync: end-async-only
