"""``stream()`` and ``astream()``: read a stream without a handle (the official client's API)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from resumable_streams._protocol.durable.client import DEFAULT_MAX_CHUNK_BYTES, RetryPolicy
from resumable_streams.durable._async_client import AsyncStreamSession, open_async_response
from resumable_streams.durable._sync_client import StreamResponse, open_sync_response
from resumable_streams.durable._types import LiveMode

__all__ = ["astream", "stream"]


def stream(
    url: str,
    *,
    offset: str | None = None,
    live: LiveMode = True,
    cursor: str | None = None,
    headers: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    on_error: Callable[[Exception], Any] | None = None,
    client: httpx2.Client | None = None,
    timeout: Any = None,
    retry: RetryPolicy | None = None,
    if_none_match: str | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> StreamResponse:
    """Open a read session on the stream at ``url`` and make its first request.

    ``offset``: where to start (``None`` / ``"-1"`` = the beginning, ``"now"`` = the tail).
    ``live``: ``False`` reads what is there and stops; ``True`` / ``"long-poll"`` then tails by
    long-poll; ``"sse"`` tails over Server-Sent Events. Every mode stops once a closed stream has
    been read to its end. ``headers`` / ``params`` values may be callables, called before each
    request. ``on_error(exc)`` may return ``{"headers": ..., "params": ...}`` to retry a failed
    read with those merged in (``None`` re-raises). Network errors, 5xx and 429 are retried
    with ``retry`` (exponential backoff with jitter, honouring ``Retry-After``).

    A catch-up body larger than ``max_chunk_bytes`` (default 4 MiB) is not read whole into
    memory: it comes as pieces of about that size as it arrives (on a JSON stream, cut between
    messages; each piece's offset is the one its response started at, the last piece's the
    response's next offset). ``if_none_match=etag`` (from ``res.etag`` of an earlier read at
    the same ``offset``) makes the first request conditional: if nothing changed the session
    ends at once with ``res.not_modified`` true.

    Use it as a context manager: ``with stream(url) as res: for item in res.iter_json(): ...``.
    The session closes the HTTP client it created; a ``client`` you pass stays open.
    """
    return open_sync_response(
        url,
        offset=offset,
        live=live,
        cursor=cursor,
        headers=headers,
        params=params,
        on_error=on_error,
        client=client,
        timeout=timeout,
        retry=retry,
        if_none_match=if_none_match,
        max_chunk_bytes=max_chunk_bytes,
    )


def astream(
    url: str,
    *,
    offset: str | None = None,
    live: LiveMode = True,
    cursor: str | None = None,
    headers: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    on_error: Callable[[Exception], Any] | None = None,
    client: httpx2.AsyncClient | None = None,
    timeout: Any = None,
    retry: RetryPolicy | None = None,
    if_none_match: str | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> AsyncStreamSession:
    """Open an async read session (see :func:`stream`).

    Use ``async with astream(url) as res``, or ``res = await astream(url)``.

    ``on_error`` may be a coroutine function. Runs under trio and asyncio alike.
    """
    return AsyncStreamSession(
        lambda: open_async_response(
            url,
            offset=offset,
            live=live,
            cursor=cursor,
            headers=headers,
            params=params,
            on_error=on_error,
            client=client,
            timeout=timeout,
            retry=retry,
            if_none_match=if_none_match,
            max_chunk_bytes=max_chunk_bytes,
        )
    )
