"""``resumable-streams tail URL``: print a stream and follow it, like ``tail -f``.

The client reconnects by itself after a lost connection (server restart, network cut),
from the offset after the last data it printed, so nothing is printed twice or skipped. It
stops when the stream is closed and fully printed; with ``--live off`` it stops at the tail.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from .._protocol.durable.client import is_json_type
from .._protocol.durable.parsing import media_type
from ..durable import LiveMode, StreamEvent, astream
from ._common import (
    EXIT_OK,
    Progress,
    add_common_arguments,
    http_timeout,
    json_dumps,
    parse_headers,
    retry_policy,
    run_async,
)

__all__ = ["add_parser"]

_LIVE: dict[str, LiveMode] = {"long-poll": "long-poll", "sse": "sse", "off": False}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tail``."""
    parser = sub.add_parser(
        "tail",
        help="print a stream and follow it (tail -f), resuming after lost connections",
        description=(
            "Print the stream from --offset, then follow it live until it is closed. Lost "
            "connections are retried with backoff (forever by default) and resumed from the "
            "last offset printed. Raw bytes on stdout; a JSON stream prints one message per "
            "line; --json prints one JSON object per batch with its offset."
        ),
    )
    add_common_arguments(parser, retries=None, progress=True)
    parser.add_argument(
        "--offset",
        default="-1",
        help="where to start: an offset from an earlier run, -1 = the beginning (default), "
        "now = only what is appended from now on",
    )
    parser.add_argument(
        "--live",
        choices=list(_LIVE),
        default="long-poll",
        help="how to follow: long-poll (default), sse, or off (stop at the tail)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per batch: {"next_offset": ..., "data": ...} (data: the list of '
        "messages on a JSON stream, text on a text/* stream, else base64)",
    )
    parser.set_defaults(handler=run)


class _ConnectionNotes(httpx2.AsyncBaseTransport):
    """Says on stderr when a connection is lost, and when a response arrives again.

    Lost means a transport error while connecting or sending, or while reading a response's
    body (a long-poll or SSE response cut mid-way), so a drop resumed by the very first retry
    is reported as well as one that takes many.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner
        self.down = False

    def lost(self, request: httpx2.Request, exc: httpx2.TransportError) -> None:
        """Note a lost connection (once until the next response)."""
        if not self.down:
            self.down = True
            where = f"{request.url.host}:{request.url.port}"
            print(f"tail: lost {where} ({exc or type(exc).__name__}); retrying", file=sys.stderr)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            self.lost(request, exc)
            raise
        if self.down:
            self.down = False
            print("tail: reconnected", file=sys.stderr)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _NotedBody(response.stream, self, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _NotedBody(httpx2.AsyncByteStream):
    """A response body that reports a transport error to :class:`_ConnectionNotes`."""

    def __init__(
        self, inner: httpx2.AsyncByteStream, notes: _ConnectionNotes, request: httpx2.Request
    ) -> None:
        self._inner = inner
        self._notes = notes
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            self._notes.lost(self._request, exc)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Position:
    """The offset after the last batch printed (shown when interrupted)."""

    def __init__(self, offset: str) -> None:
        self.offset = offset

    def hint(self) -> str:
        return f"resume with --offset {self.offset}"


def _format(event: StreamEvent[Any], kind: str) -> bytes:
    """One ``--json`` line for ``event`` (``kind``: json, text or binary)."""
    record: dict[str, Any] = {"next_offset": event.next_offset}
    if kind == "binary":
        record["data"] = base64.b64encode(event.data or b"").decode("ascii")
        record["encoding"] = "base64"
    else:
        record["data"] = event.data
    if event.up_to_date:
        record["up_to_date"] = True
    if event.stream_closed:
        record["closed"] = True
    return (json_dumps(record) + "\n").encode("utf-8")


def run(args: argparse.Namespace) -> int:
    """Print and follow; exit 0 once a closed stream has been printed to its end."""
    position = _Position(args.offset)
    progress = Progress("received", enabled=Progress.wanted(args.progress, stdout_is_data=True))

    async def main() -> int:
        headers = parse_headers(args.header)
        timeout = http_timeout(args)
        if args.live != "off":
            # Reads wait for data: allow a long-poll / SSE keep-alive gap on top of --timeout.
            timeout = httpx2.Timeout(args.timeout + 60.0, connect=timeout.connect)
        transport = _ConnectionNotes(httpx2.AsyncHTTPTransport())
        out = sys.stdout.buffer
        async with (
            httpx2.AsyncClient(transport=transport, timeout=timeout) as client,
            astream(
                args.url,
                offset=args.offset,
                live=_LIVE[args.live],
                headers=headers,
                client=client,
                retry=retry_policy(args, max_delay=2.0),
            ) as response,
        ):
            ctype = media_type(response.content_type or "")
            if is_json_type(ctype):
                kind = "json"
            elif ctype.startswith("text/"):
                kind = "text"
            else:
                kind = "binary"
            mode = "json" if kind == "json" else "text" if kind == "text" and args.json else "bytes"
            async for event in response.iter_events(mode):  # type: ignore[arg-type]
                position.offset = event.next_offset
                if event.data is None or (kind == "json" and not event.data):
                    continue
                if args.json:
                    chunk = _format(event, kind)
                elif kind == "json":
                    chunk = "".join(json_dumps(m) + "\n" for m in event.data).encode("utf-8")
                else:
                    chunk = event.data
                out.write(chunk)
                out.flush()
                count = len(event.data) if kind == "json" else 1
                progress.note = f"at {event.next_offset}"
                progress.add(count, len(chunk))
        progress.finish()
        return EXIT_OK

    return run_async(main, on_interrupt=position.hint)
