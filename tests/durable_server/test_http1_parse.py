"""The built-in server's request-head parser against a line-by-line reference (Hypothesis).

``_Connection._parse`` validates a head with one regular expression and builds the header
dict in one comprehension; the reference below follows RFC 9112 one line at a time. Both
must accept the same heads and agree on every field.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from resumable_streams.durable.server.http1 import HTTP1Limits, _BadRequest, _Connection

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _connection(max_headers: int = 100) -> _Connection:
    conn = _Connection.__new__(_Connection)  # parsing needs only the limits and the address
    conn.limits = HTTP1Limits(max_headers=max_headers)
    conn.server = ("127.0.0.1", 4437)
    conn.client = None
    conn.state = {}
    return conn


def _reference(head: bytes, max_headers: int) -> dict[str, Any] | None:
    """What RFC 9112 makes of ``head``: its parts, or None if the server must refuse it."""
    request_line, _, fields = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not _TOKEN.fullmatch(method):
        return None
    if not target.startswith(b"/") or any(not 0x21 <= c <= 0x7E for c in target):
        return None
    pairs: list[tuple[str, str]] = []
    lines = fields.split(b"\r\n") if b"\r\n" in head else []
    if len(lines) > max_headers:
        return None
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return None
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            return None
        pairs.append((name.decode("latin-1"), value.decode("latin-1").strip(" \t")))
    merged: dict[str, str] = {}
    for text_name, text_value in pairs:
        key = text_name.lower()
        merged[key] = f"{merged[key]}, {text_value}" if key in merged else text_value
    return {
        "method": method.decode(),
        "target": target,
        "http11": version == b"HTTP/1.1",
        "headers": merged,
        "asgi": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in pairs],
    }


_VALID_NAMES = ["Host", "Content-Type", "X-A", "x-a", "Stream-Seq", "Producer-Id"]
_names = st.one_of(
    *[st.sampled_from(_VALID_NAMES), st.text(_TOKEN_CHARS, min_size=1, max_size=12)] * 3,
    st.text(" :\x00\x7f(),\xe9" + _TOKEN_CHARS, max_size=6),  # often not a token
)
_values = st.one_of(
    *[st.text("ab \t:,;=/\xe9\xff", max_size=12)] * 6,
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=8),  # controls too
)
# mostly valid heads, with one part or another wrong now and then
_heads = st.builds(
    lambda method, target, version, fields: b"\r\n".join(
        [b" ".join([method, target, version])]
        + [f"{name}:{value}".encode("latin-1") for name, value in fields]
    ),
    st.sampled_from([b"GET", b"POST", b"PURGE"] * 8 + [b"G(T", b""]),
    st.sampled_from(
        [b"/v1/stream/a", b"/a?b=c%20d", b"/"] * 8 + [b"http://x/", b"/a\x7f", b"/\xe9"]
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"] * 8 + [b"HTTP/2.0", b"http/1.1"]),
    st.lists(st.tuples(_names, _values), max_size=6),
)


@settings(max_examples=1000)
@given(head=_heads, max_headers=st.sampled_from([3, 100, 100, 100]))
@example(head=b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\nB:\t x \t", max_headers=100)
@example(head=b"GET / HTTP/1.1\r\nA: b\nc", max_headers=100)  # a bare LF in a value
@example(head=b"GET / HTTP/1.1\r\nA b: c", max_headers=100)
@example(head=b"GET / HTTP/1.1\r\n: c", max_headers=100)
def test_the_parser_agrees_with_the_reference(head: bytes, max_headers: int) -> None:
    expected = _reference(head, max_headers)
    event("accepted" if expected is not None else "refused")
    conn = _connection(max_headers)
    # no framing headers in the generated heads except by chance: those are tested below
    if expected is not None and {"content-length", "transfer-encoding", "expect"} & set(
        expected["headers"]
    ):
        return
    for form in (head, bytearray(head)):  # the server hands it a bytearray
        if expected is None:
            with pytest.raises(_BadRequest):
                conn._parse(form)
            continue
        exchange = conn._parse(form)
        assert exchange.method == expected["method"]
        path, _, query = expected["target"].partition(b"?")
        assert (exchange.raw_path, exchange.query_string) == (path, query)
        assert exchange.http11 == expected["http11"]
        assert exchange.headers == expected["headers"]
        assert exchange.scope()["headers"] == expected["asgi"]


@pytest.mark.parametrize(
    ("fields", "length", "keep_alive"),
    [
        (b"Content-Length: 5", 5, True),
        (b"Content-Length: 5\r\ncontent-length: 5", 5, True),  # repeats that agree
        (b"Content-Length: 5, 5", 5, True),
        (b"Transfer-Encoding: chunked", None, True),
        (b"Connection: close", 0, False),
        (b"Connection: Upgrade, CLOSE", 0, False),
        (b"Connection: keep-alive", 0, True),
        (b"Expect: 100-continue\r\nContent-Length: 1", 1, True),
    ],
)
def test_framing_headers(fields: bytes, length: int | None, keep_alive: bool) -> None:
    exchange = _connection()._parse(b"POST /a HTTP/1.1\r\n" + fields)
    assert exchange.remaining == length
    assert exchange.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (b"Content-Length: 5\r\nContent-Length: 6", "conflicting Content-Length"),
        (b"Content-Length: 5, 6", "conflicting Content-Length"),
        (b"Content-Length: \xb2", "malformed Content-Length"),  # a digit to str.isdigit
        (b"Content-Length: 1e3", "malformed Content-Length"),
        (b"Content-Length: " + b"9" * 19, "malformed Content-Length"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "Transfer-Encoding"),
        (b"Transfer-Encoding: gzip, chunked", "Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 1", "both Content-Length"),
        (b"Expect: 200-ok", "Expect"),
    ],
)
def test_framing_errors(fields: bytes, reason: str) -> None:
    with pytest.raises(_BadRequest, match=reason):
        _connection()._parse(b"POST /a HTTP/1.1\r\n" + fields)


def test_http10_keep_alive_is_opt_in() -> None:
    conn = _connection()
    assert not conn._parse(b"GET / HTTP/1.0").keep_alive
    assert conn._parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
