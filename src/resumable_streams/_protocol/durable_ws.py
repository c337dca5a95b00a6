"""Sans-IO messages of Durable Streams over WebSocket (JSON text frames).

One socket per stream, at the stream's HTTP URL (``ws://host/v1/stream/<path>``). The client
may read, append, or both::

    client  {"op": "read", "offset": "-1" | "now" | "<offset>"}
    server  {"op": "data", "offset": "<next>", "data": "...", "upToDate": true}
                                    ("encoding": "base64" for binary streams; JSON streams
                                     get the JSON array text, as over SSE)
    server  {"op": "control", "offset": "<tail>", "upToDate": true, "closed": true}
                                    once caught up with a closed stream: the read is over
    server  {"op": "heartbeat"}     a live read sent nothing for a while; clients skip it
                                    (it tells a quiet stream from a dead connection)

    client  {"op": "append", "id": 7, "data": "...", "encoding"?: "base64",
             "contentType"?: "...", "seq"?: "...", "close"?: true,
             "producerId"?: "...", "producerEpoch"?: 0, "producerSeq"?: 0}
    server  {"op": "ack", "id": 7, "offset": "<next>", "duplicate"?: true}
    server  {"op": "error", "id": 7, "status": 409, "message": "...", "headers": {...}}

Every ``data`` message carries the offset after it: a client that reconnects sends
``read`` with that offset and continues without duplicate or gap. Appends are answered in
the order they were sent; an ``error`` without ``id`` is about the read (or a message whose
``id`` could not be read: an append with a valid ``id`` and another bad field is answered
with its ``id``). Append validation is the HTTP POST's (:func:`parse_append_request`):
the same rules, the same reasons.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .durable import headers as h
from .durable.jsonmode import records_to_array
from .durable.offsets import InvalidOffsetError, Offset, parse_read_offset
from .durable.parsing import BadRequest, is_json, is_sse_text, media_type
from .durable.planning import AppendPlan, AppendRequest, parse_append_request

__all__ = [
    "AppendCommand",
    "BadAppend",
    "ReadCommand",
    "encode_ack",
    "encode_control",
    "encode_data",
    "encode_error",
    "encode_heartbeat",
    "parse_client_message",
]


@dataclass(frozen=True, slots=True)
class ReadCommand:
    """Start tailing the stream from ``offset``."""

    offset: Offset | Literal["now"]


@dataclass(frozen=True, slots=True)
class AppendCommand:
    """Append (and/or close), answered with an ack or an error carrying ``id``."""

    id: int | str | None
    request: AppendRequest


class BadAppend(BadRequest):
    """An ``append`` whose ``id`` could be read but whose other fields are invalid.

    The error answer carries :attr:`id`, so a client pipelining appends knows which failed.
    """

    def __init__(self, ident: int | str | None, reason: str) -> None:
        super().__init__(reason)
        self.id = ident


def _field(body: Mapping[str, Any], name: str, *kinds: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise BadRequest(f"{name!r} has the wrong type: {value!r}")
    return value


def parse_client_message(
    message: str | bytes, stream_content_type: str
) -> ReadCommand | AppendCommand:
    """Parse one client message; :class:`BadRequest` (with the reason) when it is invalid.

    ``stream_content_type`` is the default ``contentType`` of appends.
    """
    if isinstance(message, bytes):
        raise BadRequest("messages are JSON text frames, got a binary frame")
    try:
        body = json.loads(message)
    except ValueError:
        raise BadRequest(f"message is not JSON: {message[:80]!r}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"message must be a JSON object, got {message[:80]!r}")
    op = body.get("op")
    if op == "read":
        offset = _field(body, "offset", str)
        try:
            start = parse_read_offset([offset if offset is not None else h.OFFSET_BEGINNING])
        except InvalidOffsetError as exc:
            raise BadRequest(str(exc)) from None
        assert start is not None
        return ReadCommand(start)
    if op != "append":
        raise BadRequest(f'"op" must be "read" or "append", got {op!r}')
    ident = _field(body, "id", int, str)
    try:
        return AppendCommand(ident, _parse_append(body, stream_content_type))
    except BadRequest as exc:
        raise BadAppend(ident, str(exc)) from None


def _parse_append(body: Mapping[str, Any], stream_content_type: str) -> AppendRequest:
    data = _field(body, "data", str)
    encoding = _field(body, "encoding", str)
    if encoding not in (None, "base64"):
        raise BadRequest(f'"encoding" must be "base64" when given, got {encoding!r}')
    raw = b""
    if data is not None:
        if encoding == "base64":
            try:
                raw = base64.b64decode(data, validate=True)
            except binascii.Error:
                raise BadRequest("data is not valid base64") from None
        else:
            raw = data.encode("utf-8", "surrogatepass")
    headers = {"content-type": _field(body, "contentType", str) or stream_content_type}
    if _field(body, "close", bool):
        headers[h.STREAM_CLOSED.lower()] = "true"
    seq = _field(body, "seq", str)
    if seq is not None:
        headers[h.STREAM_SEQ.lower()] = seq
    for key, name in (
        ("producerId", h.PRODUCER_ID),
        ("producerEpoch", h.PRODUCER_EPOCH),
        ("producerSeq", h.PRODUCER_SEQ),
    ):
        value = _field(body, key, str, int)
        if value is not None:
            headers[name.lower()] = str(value)
    return parse_append_request(headers, raw)


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def payload(data: bytes, content_type: str) -> tuple[str, bool]:
    """Stored bytes as message text: JSON array, UTF-8 text, or base64 (``True``)."""
    mtype = media_type(content_type)
    if is_json(mtype):
        return records_to_array(data).decode("utf-8", "replace"), False
    if is_sse_text(mtype):
        return data.decode("utf-8", "replace"), False
    return base64.b64encode(data).decode("ascii"), True


def encode_data(data: bytes, content_type: str, next_offset: Offset, *, up_to_date: bool) -> str:
    """A ``data`` message for whole appends ending at ``next_offset``."""
    text, b64 = payload(data, content_type)
    body: dict[str, Any] = {"op": "data", "offset": str(next_offset), "data": text}
    if b64:
        body["encoding"] = "base64"
    if up_to_date:
        body["upToDate"] = True
    return _dumps(body)


def encode_control(offset: Offset, *, closed: bool) -> str:
    """The reader is caught up at ``offset`` (and the stream is closed, when ``closed``)."""
    body: dict[str, Any] = {"op": "control", "offset": str(offset), "upToDate": True}
    if closed:
        body["closed"] = True
    return _dumps(body)


HEARTBEAT = '{"op":"heartbeat"}'


def encode_heartbeat() -> str:
    """The heartbeat a waiting live read sends after a while without output."""
    return HEARTBEAT


def encode_ack(ident: int | str | None, plan: AppendPlan) -> str:
    """The answer to an accepted append (a producer's duplicate is acknowledged too).

    ``offset`` is the stream's tail after the append; for a duplicate (nothing stored, HTTP
    204 without ``Stream-Next-Offset``) it is the current tail and ``duplicate`` is set.
    """
    offset = plan.headers.get(h.STREAM_NEXT_OFFSET)
    body: dict[str, Any] = {"op": "ack", "id": ident, "offset": offset}
    if offset is None:
        body["duplicate"] = True
        body["offset"] = str(plan.meta.tail) if plan.meta is not None else None
    if plan.headers.get(h.STREAM_CLOSED) == "true":
        body["closed"] = True
    return _dumps(body)


def encode_error(
    ident: int | str | None, status: int, message: str, headers: Mapping[str, str] | None = None
) -> str:
    """An error answer: the HTTP status and reason the same request would get over HTTP."""
    body: dict[str, Any] = {"op": "error", "id": ident, "status": status, "message": message}
    if headers:
        body["headers"] = dict(headers)
    return _dumps(body)
