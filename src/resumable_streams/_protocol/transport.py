"""Sans-IO wire formats of the resumable-stream transports (SSE and WebSocket).

Positions are counts of UTF-16 code units (the unit of ``skip_characters``). Every chunk a
server sends carries the position *after* it: the value a client passes back to resume.

SSE (``text/event-stream``)::

    retry: 1000                      (optional, once)
    id: 42                           the position after this chunk
    data: "the chunk as a JSON string"

    : heartbeat                      (comments, ignored by clients)

    event: done                      the stream is finished; data: {"position": N}
    event: failed                    the producer failed; data: {"position": N, "error": "..."}

WebSocket (text frames, JSON)::

    client -> server   {"position": N}                 once, first: where to start (0 = start)
    server -> client   {"position": P, "text": "..."}  one per chunk, P = position after it
    server -> client   {"heartbeat": true}             after a while without output; ignore
    server closes      1000 done | 4400 bad request | 4404 not found | 4410 finished before
                       this connection | 4500 producer failed | 4503 try again later (resume)
                       | 1011 server error (resume)

:class:`ChunkTracker` is the client half: it checks that every chunk starts exactly where
the previous one ended and remembers where to resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from ..errors import TransportProtocolError
from .resumable import utf16_len
from .sse import encode_event

__all__ = [
    "DONE_EVENT",
    "FAILED_EVENT",
    "MAX_POSITION",
    "Chunk",
    "ChunkTracker",
    "CloseCode",
    "End",
    "TransportProtocolError",
    "decode_sse_chunk",
    "decode_sse_end",
    "decode_ws_chunk",
    "encode_sse_chunk",
    "encode_sse_end",
    "encode_sse_retry",
    "encode_ws_chunk",
    "encode_ws_heartbeat",
    "encode_ws_hello",
    "is_retryable_close",
    "is_ws_heartbeat",
    "parse_position",
    "parse_ws_hello",
    "split_chunk",
    "truncate_reason",
]

DONE_EVENT: Final = "done"
FAILED_EVENT: Final = "failed"
#: Positions above this are rejected (JavaScript's ``Number.MAX_SAFE_INTEGER``).
MAX_POSITION: Final = 2**53 - 1
#: Close reasons are limited to 123 bytes by RFC 6455.
MAX_CLOSE_REASON: Final = 123
#: Servers cut chunks longer than this many code points (<= 2x as many UTF-16 units) into
#: several messages, so that a large replay reaches a client as many messages: a connection
#: that keeps dropping still advances the client's position instead of cutting the same
#: whole-replay message on every reconnect.
MAX_MESSAGE_CHARS: Final = 16384


class CloseCode(IntEnum):
    """WebSocket close codes of the resumable-stream protocol."""

    DONE = 1000
    """The stream is finished; everything was sent."""
    GOING_AWAY = 1001
    """The server is shutting down; resume elsewhere or later."""
    BAD_REQUEST = 4400
    """The client's request was invalid (the reason says why); do not retry."""
    NOT_FOUND = 4404
    """No such stream (never created, or expired); do not retry."""
    GONE = 4410
    """The stream had finished before this connection: the tail past the client's position
    may be lost (finished streams are not kept); do not retry."""
    INTERNAL_ERROR = 1011
    """The server failed while serving this connection (logged there); resume."""
    FAILED = 4500
    """The producer failed; the reason carries its error; do not retry."""
    RETRY = 4503
    """Temporarily unable to serve (no producer answered, consumer too slow): resume."""


_FINAL_CLOSES: Final = frozenset(
    {
        CloseCode.DONE,
        CloseCode.BAD_REQUEST,
        CloseCode.NOT_FOUND,
        CloseCode.GONE,
        CloseCode.FAILED,
    }
)


def is_retryable_close(code: int) -> bool:
    """Whether a client should reconnect (and resume) after a close with ``code``.

    Only the protocol's final codes (1000, 4400, 4404, 4410, 4500) and the other 4xxx policy
    codes stop a client; abnormal closures (1006), 1001, 1011-1014 and 4503 are retried.
    """
    if code in _FINAL_CLOSES:
        return False
    return code == CloseCode.RETRY or not (4000 <= code <= 4999 or code in (1002, 1003, 1007))


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to fit a close frame (123 UTF-8 bytes) without splitting a character."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[: MAX_CLOSE_REASON - 3].decode("utf-8", "ignore") + "..."


def parse_position(value: str | int | None, *, what: str = "position") -> int | None:
    """A resume position from a header, query parameter or message; ``None`` when absent.

    Raises :class:`TransportProtocolError` naming the value when it is not an integer in
    ``0 .. 2**53-1``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TransportProtocolError(f"{what} must be a non-negative integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        number = int(value)
    else:
        raise TransportProtocolError(f"{what} must be a non-negative integer, got {value!r}")
    if not 0 <= number <= MAX_POSITION:
        raise TransportProtocolError(f"{what} must be in 0..{MAX_POSITION}, got {value!r}")
    return number


_dumps = json.dumps


def _json_text(text: str) -> str:
    dumped = json.dumps(text, ensure_ascii=False)
    try:
        dumped.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it, as JavaScript would, escaped
        dumped = json.dumps(text)
    return dumped


def split_chunk(text: str, end: int, max_chars: int = MAX_MESSAGE_CHARS) -> list[tuple[str, int]]:
    """``text`` (ending at position ``end``) as pieces of at most ``max_chars`` code points.

    Each piece comes with the position after it; the last one ends at ``end``. Cutting at
    code points never splits a surrogate pair (an astral character is one code point), so
    the pieces joined are ``text`` exactly, in Python as in JavaScript.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if len(text) <= max_chars:
        return [(text, end)]
    position = end - utf16_len(text)
    pieces: list[tuple[str, int]] = []
    for start in range(0, len(text), max_chars):
        piece = text[start : start + max_chars]
        position += utf16_len(piece)
        pieces.append((piece, position))
    return pieces


# -- SSE ---------------------------------------------------------------------------------


def encode_sse_chunk(text: str, position: int) -> bytes:
    """One chunk as an SSE ``message`` event: ``id`` = position after it, data = JSON string."""
    try:
        return f"id: {position}\ndata: {_dumps(text, ensure_ascii=False)}\n\n".encode()
    except UnicodeEncodeError:  # a lone surrogate: keep it, as JavaScript would, escaped
        return f"id: {position}\ndata: {_dumps(text)}\n\n".encode()


def encode_sse_retry(milliseconds: int) -> bytes:
    """A lone ``retry:`` field: how long ``EventSource`` waits before reconnecting."""
    if milliseconds < 0:
        raise ValueError(f"SSE retry must be >= 0, got {milliseconds}")
    return f"retry: {milliseconds}\n\n".encode()


def encode_sse_end(position: int, error: str | None = None) -> bytes:
    """The final event: ``done``, or ``failed`` with the producer's error message."""
    body: dict[str, object] = {"position": position}
    if error is None:
        return encode_event(json.dumps(body), event=DONE_EVENT)
    body["error"] = error
    return encode_event(json.dumps(body), event=FAILED_EVENT)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One received chunk: its text and the position after it."""

    text: str
    position: int


@dataclass(frozen=True, slots=True)
class End:
    """The end of a stream as a server announced it; ``error`` set when the producer failed."""

    position: int
    error: str | None = None


def decode_sse_chunk(data: str, event_id: str | None) -> Chunk:
    """Decode a ``message`` event of a resumable SSE response."""
    position = parse_position(event_id, what="SSE event id")
    if position is None:
        raise TransportProtocolError(f"SSE chunk event without an id: {data[:80]!r}")
    try:
        text = json.loads(data)
    except ValueError:
        raise TransportProtocolError(f"SSE chunk data is not JSON: {data[:80]!r}") from None
    if not isinstance(text, str):
        raise TransportProtocolError(f"SSE chunk data is not a JSON string: {data[:80]!r}")
    return Chunk(text, position)


def decode_sse_end(event: str, data: str) -> End:
    """Decode a ``done`` / ``failed`` event."""
    try:
        body = json.loads(data)
        position = parse_position(body["position"], what="end position")
    except (ValueError, TypeError, KeyError):
        raise TransportProtocolError(f"malformed SSE {event!r} event: {data[:80]!r}") from None
    assert position is not None
    if event == FAILED_EVENT:
        return End(position, str(body.get("error", "the producer failed")))
    return End(position)


# -- WebSocket ---------------------------------------------------------------------------


def encode_ws_hello(position: int) -> str:
    """The client's first message: where to start."""
    return json.dumps({"position": position})


def parse_ws_hello(message: str | bytes) -> int:
    """The position in a client's first message; :class:`TransportProtocolError` if bad."""
    if isinstance(message, bytes):
        raise TransportProtocolError("the first message must be a text frame, got binary")
    try:
        body = json.loads(message)
    except ValueError:
        raise TransportProtocolError(f"the first message is not JSON: {message[:80]!r}") from None
    if not isinstance(body, dict) or "position" not in body:
        raise TransportProtocolError(
            f'the first message must be {{"position": N}}, got {message[:80]!r}'
        )
    position = parse_position(body["position"])
    assert position is not None
    return position


def encode_ws_chunk(text: str, position: int) -> str:
    """One chunk message: the text and the position after it."""
    return f'{{"position":{position},"text":{_json_text(text)}}}'


WS_HEARTBEAT: Final = '{"heartbeat":true}'


def encode_ws_heartbeat() -> str:
    """The server's heartbeat message (sent after a while without output)."""
    return WS_HEARTBEAT


def is_ws_heartbeat(message: str | bytes) -> bool:
    """Whether ``message`` is a heartbeat (which a client skips, resetting its idle timer)."""
    if message == WS_HEARTBEAT:
        return True
    if not isinstance(message, str) or '"heartbeat"' not in message:
        return False
    try:
        return bool(json.loads(message) == {"heartbeat": True})
    except ValueError:
        return False


def decode_ws_chunk(message: str | bytes) -> Chunk:
    """Decode a server's chunk message."""
    if isinstance(message, bytes):
        raise TransportProtocolError("chunk messages are text frames, got binary")
    try:
        body = json.loads(message)
        text = body["text"]
        position = parse_position(body["position"])
    except (ValueError, TypeError, KeyError):
        raise TransportProtocolError(f"malformed chunk message: {message[:80]!r}") from None
    if not isinstance(text, str) or position is None:
        raise TransportProtocolError(f"malformed chunk message: {message[:80]!r}")
    return Chunk(text, position)


# -- client bookkeeping --------------------------------------------------------------------


class ChunkTracker:
    """Where a resuming client stands; rejects chunks that would leave a gap or a duplicate."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        """UTF-16 units received so far: where the next connection resumes."""

    def accept(self, chunk: Chunk) -> str:
        """Check ``chunk`` continues exactly at :attr:`position`; advance; return its text."""
        start = chunk.position - utf16_len(chunk.text)
        if start != self.position:
            raise TransportProtocolError(
                f"chunk covers {start}..{chunk.position} but the client is at {self.position}"
            )
        self.position = chunk.position
        return chunk.text
