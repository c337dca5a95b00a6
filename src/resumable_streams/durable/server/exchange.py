"""One HTTP request and its response, as the Durable Streams handlers see them.

The handlers of :class:`~.app.DurableStreamsApp` are written against :class:`Exchange`, not
against ASGI messages. Two implementations exist:

* ``app._AsgiExchange`` - over an ASGI scope, ``receive`` and ``send`` (any ASGI server:
  hypercorn, uvicorn, a Starlette mount);
* ``http1._Exchange`` - the built-in HTTP/1.1 server's own request object, used directly
  when the app offers a :class:`NativeApp` route for the request: no scope dict, no message
  dicts, the response head and body leave in one ``send``. The same object also serves
  plain ASGI apps (its ``receive`` / ``send`` methods).

Both share this base: the request's parts, its merged header dict and its query parameters
(both parsed on first use).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Final, Protocol, runtime_checkable
from urllib.parse import parse_qs

__all__ = [
    "BodyTooLarge",
    "ClientGone",
    "Exchange",
    "Handler",
    "NativeApp",
    "merge_headers",
]


class ClientGone(OSError):
    """The client closed the connection (or it broke) before the exchange ended.

    An :class:`OSError`, as ASGI asks of a ``send()`` on a closed connection.
    """


class BodyTooLarge(Exception):
    """The request body is larger than the limit given to :meth:`Exchange.read_body`."""


_REQUEST_NAMES: Final = {  # common request header names, decoded once
    raw: raw.decode()
    for raw in (
        b"host",
        b"accept",
        b"accept-encoding",
        b"content-length",
        b"content-type",
        b"connection",
        b"user-agent",
        b"if-none-match",
        b"producer-id",
        b"producer-epoch",
        b"producer-seq",
        b"stream-seq",
        b"stream-closed",
        b"stream-ttl",
        b"stream-expires-at",
    )
}
_NO_QUERY: Final[dict[str, list[str]]] = {}


def merge_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields as ``{lower-case name: value}``; repeated names joined with ``", "``."""
    merged: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = _REQUEST_NAMES.get(raw_name)
        if name is None:
            name = raw_name.decode("latin-1").lower()
        if name in merged:
            merged[name] = f"{merged[name]}, {raw_value.decode('latin-1')}"
        else:
            merged[name] = raw_value.decode("latin-1")
    return merged


class Exchange(ABC):
    """One request and its response.

    Attributes: ``method`` (upper case), ``raw_path`` (the percent-encoded path, without
    the query and, under a mount, still with ``root_path``), ``query_string``,
    ``raw_headers`` (lower-case names), ``root_path``, ``scheme``, ``server`` (host and
    port, if known) and ``started`` (whether the response has begun).

    The methods raise :class:`ClientGone` once the client has gone.
    """

    __slots__ = (
        "_headers",
        "_query",
        "method",
        "query_string",
        "raw_headers",
        "raw_path",
        "root_path",
        "scheme",
        "server",
        "started",
    )

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        root_path: str = "",
        scheme: str = "http",
        server: tuple[str, int | None] | None = None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query_string = query_string
        self.raw_headers = raw_headers
        self.root_path = root_path
        self.scheme = scheme
        self.server = server
        self.started = False
        self._headers: dict[str, str] | None = None
        self._query: dict[str, list[str]] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The request's header fields (see :func:`merge_headers`)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = merge_headers(self.raw_headers)
        return headers

    def params(self, name: str) -> list[str]:
        """Every value of query parameter ``name`` (``[]`` if absent)."""
        query = self._query
        if query is None:
            query = _NO_QUERY
            if self.query_string:
                with suppress(ValueError):  # too many fields
                    query = parse_qs(
                        self.query_string.decode("latin-1"),
                        keep_blank_values=True,
                        strict_parsing=False,
                    )
            self._query = query
        return query.get(name, [])

    def param(self, name: str) -> str | None:
        """The last value of query parameter ``name``, or None."""
        values = self.params(name)
        return values[-1] if values else None

    @abstractmethod
    async def read_body(self, limit: int) -> bytes:
        """The whole request body; :class:`BodyTooLarge` once it passes ``limit`` bytes.

        A declared ``Content-Length`` over the limit fails before any of the body is read.
        """

    @abstractmethod
    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response; ``Content-Length`` is added (not on 204 / 304).

        ``headers`` (lower-case names) must not hold framing headers; a ``HEAD`` request,
        204 and 304 get no body.
        """

    @abstractmethod
    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin a streamed response of unknown length (continued by :meth:`write`)."""

    @abstractmethod
    async def write(self, chunk: bytes) -> None:
        """Send the next piece of a streamed response."""

    @abstractmethod
    async def end(self) -> None:
        """End a streamed response."""

    @abstractmethod
    async def wait_disconnect(self) -> None:
        """Return once the client has gone (the rest of any request body is discarded)."""


Handler = Callable[[Exchange], Awaitable[None]]


@runtime_checkable
class NativeApp(Protocol):
    """An ASGI app that can also take some requests as an :class:`Exchange` directly."""

    def native_route(self, raw_path: bytes) -> Handler | None:
        """The handler for a request to ``raw_path``, or None to use ASGI for it."""
