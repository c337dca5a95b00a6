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
(both parsed on first use). Responses carry the app's :class:`FixedHeaders` (the same fields
on every response, rendered once in both forms) and a ``{name: value}`` dict of the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from typing import Final, Protocol, runtime_checkable
from urllib.parse import parse_qs

__all__ = [
    "BodyTooLarge",
    "ClientGone",
    "Exchange",
    "FixedHeaders",
    "Handler",
    "NativeApp",
    "asgi_header_name",
    "merge_headers",
]


class ClientGone(OSError):
    """The client closed the connection (or it broke) before the exchange ended.

    An :class:`OSError`, as ASGI asks of a ``send()`` on a closed connection.
    """


class BodyTooLarge(Exception):
    """The request body is larger than the limit given to :meth:`Exchange.read_body`."""


_NO_QUERY: Final[dict[str, list[str]]] = {}


def merge_headers(fields: Sequence[Sequence[str]]) -> dict[str, str]:
    """Header fields ``(name, value)`` as ``{lower-case name: value}``.

    Values lose surrounding spaces and tabs; repeated names are joined with ``", "``.
    """
    merged = {name.lower(): value.strip(" \t") for name, value in fields}
    if len(merged) == len(fields):  # the usual case: no name repeats
        return merged
    merged = {}
    for name, value in fields:
        key = name.lower()
        value = value.strip(" \t")
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


_asgi_names: dict[str, bytes] = {}  # response header name -> lower-cased bytes


def asgi_header_name(name: str) -> bytes:
    """A response header name as ASGI wants it: lower-cased bytes (cached)."""
    raw = _asgi_names.get(name)
    if raw is None:
        raw = name.lower().encode("latin-1")
        if len(_asgi_names) < 256:  # names come from the app and its planner
            _asgi_names[name] = raw
    return raw


class FixedHeaders:
    """Response header fields an app sends unchanged on every response.

    Rendered once, in the two forms an :class:`Exchange` needs: ``pairs`` (lower-cased
    ``bytes`` names and values, for ASGI) and ``block`` (the ``name: value`` lines of an
    HTTP/1.1 head, each ending in CRLF).
    """

    __slots__ = ("block", "pairs")

    def __init__(self, fields: Mapping[str, str]) -> None:
        for name, value in fields.items():
            if any(char in name + value for char in "\r\n\0"):
                raise ValueError(f"invalid header field {name!r}: {value!r}")
        self.pairs: tuple[tuple[bytes, bytes], ...] = tuple(
            (asgi_header_name(name), value.encode("latin-1")) for name, value in fields.items()
        )
        self.block: bytes = b"".join(b"%b: %b\r\n" % pair for pair in self.pairs)


class Exchange(ABC):
    """One request and its response.

    Attributes: ``method`` (upper case), ``raw_path`` (the percent-encoded path, without
    the query and, under a mount, still with ``root_path``), ``query_string``, ``headers``
    (``{lower-case name: value}``, see :func:`merge_headers`), ``root_path``, ``scheme``,
    ``server`` (host and port, if known) and ``started`` (whether the response has begun).

    The methods raise :class:`ClientGone` once the client has gone.
    """

    __slots__ = (
        "_query",
        "headers",
        "method",
        "query_string",
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
        headers: dict[str, str],
        root_path: str = "",
        scheme: str = "http",
        server: tuple[str, int | None] | None = None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query_string = query_string
        self.headers = headers
        self.root_path = root_path
        self.scheme = scheme
        self.server = server
        self.started = False
        self._query: dict[str, list[str]] | None = None

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
    async def respond(
        self, status: int, headers: Mapping[str, str], body: bytes, fixed: FixedHeaders
    ) -> None:
        """Send a whole response: ``fixed``, ``headers`` and ``body``.

        ``Content-Length`` is added (not on 204 / 304). ``headers`` must not hold framing
        headers nor CR / LF; a ``HEAD`` request, 204 and 304 get no body.
        """

    @abstractmethod
    async def start(self, status: int, headers: Mapping[str, str], fixed: FixedHeaders) -> None:
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
