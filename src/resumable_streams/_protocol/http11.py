"""A minimal sans-IO HTTP/1.1 client connection: request bytes out, response events in.

Used by the Durable Streams client when it owns its HTTP connections (``durable/_async_http.py``
drives it over sockets). It is small on purpose: one request at a time per connection
(no pipelining), ``Content-Length``, chunked and read-until-close bodies, ``HEAD`` / 1xx / 204 /
304 without a body, keep-alive unless either side says ``Connection: close`` (or HTTP/1.0), and
``gzip`` / ``deflate`` decoding should a server compress although the request asks for
``identity``. It does per request a few string operations instead of h11's per-event state
machine, which is what makes the built-in path cheaper than httpx2 on small requests.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

__all__ = [
    "END",
    "NEED_DATA",
    "ProtocolError",
    "ResponseHead",
    "ResponseParser",
    "serialize_request",
]

MAX_HEAD_BYTES = 64 * 1024
"""A response head (status line and headers) longer than this is refused."""


class ProtocolError(Exception):
    """The server sent something that is not a valid HTTP/1.1 response (or ended too early)."""


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""``next_event()``: feed more bytes (or the end of the connection) first."""
END = _Sentinel("END")
"""``next_event()``: the response is complete."""


def _check(value: str, what: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"invalid HTTP {what} (contains CR, LF or NUL): {value!r}")
    return value


def serialize_request(
    method: str,
    target: str,
    host: str,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The bytes of one request (head and body).

    ``target`` is the path and query; ``host`` the ``Host`` header value. ``Host``,
    ``Content-Length``, ``Accept-Encoding: identity`` and ``Connection`` (keep-alive is the
    HTTP/1.1 default) are added unless ``headers`` carry them. A body is sent with
    ``Content-Length``; ``POST`` / ``PUT`` / ``PATCH`` without one send ``Content-Length: 0``.
    """
    lines = [f"{_check(method, 'method')} {_check(target, 'target')} HTTP/1.1"]
    seen: set[str] = set()
    for name, value in headers:
        low = name.lower()
        if low in ("content-length", "transfer-encoding"):
            continue  # framing is ours
        seen.add(low)
        lines.append(f"{_check(name, 'header name')}: {_check(str(value), 'header value')}")
    if "host" not in seen:
        lines.append(f"Host: {_check(host, 'host')}")
    if "accept-encoding" not in seen:
        lines.append("Accept-Encoding: identity")
    if body is not None and (body or method not in ("GET", "HEAD", "DELETE", "OPTIONS")):
        lines.append(f"Content-Length: {len(body)}")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


@dataclass(slots=True)
class ResponseHead:
    """A response's status line and headers (names lower-cased; repeats joined by ``, ``)."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True
    """Whether the connection may carry another request once this response is complete."""


class ResponseParser:
    """Parses one response on a connection.

    Feed bytes with :meth:`receive_data`; call :meth:`next_event` until it returns
    :data:`NEED_DATA` (feed more) or :data:`END`. Events: one :class:`ResponseHead`,
    then body chunks (``bytes``, never empty), then :data:`END`. Interim 1xx responses are
    skipped. ``receive_data(b"")`` means the server closed the connection: that ends a
    read-until-close body, and is a :class:`ProtocolError` anywhere else.
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._buf = b""
        self._eof = False
        self._head: ResponseHead | None = None
        self._mode = ""  # "", "length", "chunked", "close", "done"
        self._remaining = 0  # length mode: body bytes left; chunked: bytes left in this chunk
        self._chunk_state = "size"  # "size", "data", "crlf", "trailer"
        self._decoder: zlib._Decompress | None = None

    @property
    def head(self) -> ResponseHead | None:
        """The response head once parsed."""
        return self._head

    @property
    def complete(self) -> bool:
        """Whether the whole response has been parsed."""
        return self._mode == "done"

    @property
    def leftover(self) -> bool:
        """Whether bytes past the end of the response were received (then not reusable)."""
        return bool(self._buf)

    def take_leftover(self) -> bytes:
        """Remove and return the bytes received past the end of the response.

        With HTTP pipelining they are the start of the next response on the connection.
        """
        data, self._buf = self._buf, b""
        return data

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the connection (``b""``: the connection was closed)."""
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_event(self) -> ResponseHead | bytes | _Sentinel:
        """The next event (see the class docstring)."""
        while True:
            if self._head is None:
                head = self._parse_head()
                if head is None:
                    return NEED_DATA
                if head.status < 200 and head.status != 101:
                    continue  # interim response (100 Continue, 103 Early Hints)
                self._head = head
                self._start_body(head)
                return head
            data = self._body_event()
            if data is None:
                continue
            if isinstance(data, bytes) and self._decoder is not None:
                data = self._decoder.decompress(data)
                if not data:
                    continue
            elif data is END and self._decoder is not None:
                tail = self._decoder.flush()
                self._decoder = None
                if tail:
                    return tail  # END follows (the mode is "done")
            return data

    # -- head -----------------------------------------------------------------------------

    def _parse_head(self) -> ResponseHead | None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too long")
            if self._eof:
                raise ProtocolError(
                    "server closed the connection without a response"
                    if not self._buf
                    else "server closed the connection in the middle of a response head"
                )
            return None
        raw, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4 :]
        lines = raw.split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"invalid status line: {status_line[:100]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t":
                raise ProtocolError(f"invalid header line: {line[:100]!r}")
            name = name.lower()
            value = value.strip(" \t")
            if name in headers:
                headers[name] += ", " + value
            else:
                headers[name] = value
        connection = headers.get("connection", "").lower()
        keep_alive = parts[0] != "HTTP/1.0" and "close" not in connection
        if parts[0] == "HTTP/1.0" and "keep-alive" in connection:
            keep_alive = True
        reason = parts[2] if len(parts) > 2 else ""
        return ResponseHead(int(parts[1]), reason, headers, keep_alive)

    def _start_body(self, head: ResponseHead) -> None:
        status = head.status
        if self._method == "HEAD" or status in (204, 304) or status == 101:
            self._mode = "done"
            return
        hdrs = head.headers
        encoding = hdrs.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            raise ProtocolError(f"unsupported Content-Encoding: {encoding!r}")
        te = hdrs.get("transfer-encoding")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding: {te!r}")
            self._mode = "chunked"
            return
        cl = hdrs.get("content-length")
        if cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1 or not (value := values.pop()).isdigit():
                raise ProtocolError(f"invalid Content-Length: {cl!r}")
            self._remaining = int(value)
            self._mode = "length"
            if not self._remaining:
                self._mode = "done"
            return
        self._mode = "close"
        head.keep_alive = False

    # -- body -----------------------------------------------------------------------------

    def _body_event(self) -> bytes | _Sentinel | None:
        """A body event, or ``None`` to loop (state changed without an event)."""
        mode = self._mode
        if mode == "done":
            return END
        if mode == "length":
            buf = self._buf
            if not buf:
                if self._eof:
                    raise ProtocolError(
                        f"server closed the connection with {self._remaining} body bytes unsent"
                    )
                return NEED_DATA
            data = self._take()
            if not self._remaining:
                self._mode = "done"
            return data
        if mode == "close":
            buf = self._buf
            if buf:
                self._buf = b""
                return buf
            if self._eof:
                self._mode = "done"
                return END
            return NEED_DATA
        return self._chunked_event()

    def _take(self) -> bytes:
        """Up to ``_remaining`` bytes off the (non-empty) buffer; counts them off."""
        buf = self._buf
        if len(buf) <= self._remaining:
            self._buf = b""
            data = buf
        else:
            data, self._buf = buf[: self._remaining], buf[self._remaining :]
        self._remaining -= len(data)
        return data

    def _chunked_event(self) -> bytes | _Sentinel | None:
        state = self._chunk_state
        buf = self._buf
        if state == "data":
            if not buf:
                return self._need_more()
            data = self._take()
            if not self._remaining:
                self._chunk_state = "crlf"
            return data
        if state == "crlf":
            if len(buf) < 2:
                return self._need_more()
            if buf[:2] != b"\r\n":
                raise ProtocolError("missing CRLF after a chunk")
            self._buf = buf[2:]
            self._chunk_state = "size"
            return None
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise ProtocolError("chunk size line too long")
            return self._need_more()
        line, self._buf = buf[:end], buf[end + 2 :]
        if state == "trailer":
            if not line:
                self._mode = "done"
            return None  # trailer fields are ignored
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"invalid chunk size: {line[:100]!r}") from None
        if size < 0:
            raise ProtocolError(f"invalid chunk size: {line[:100]!r}")
        if size == 0:
            self._chunk_state = "trailer"
        else:
            self._remaining = size
            self._chunk_state = "data"
        return None

    def _need_more(self) -> _Sentinel:
        if self._eof:
            raise ProtocolError("server closed the connection in the middle of a chunked body")
        return NEED_DATA
