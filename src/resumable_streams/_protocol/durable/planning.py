"""Request -> decision planning for Durable Streams writes (pure, stdlib only).

Storage engines call these functions inside their atomic section (a lock, a database
transaction, a Redis ``WATCH``/``MULTI``): the planner sees the stream's current state and
returns what to write and what to answer, or raises :class:`Rejected`. The protocol's rules
therefore exist exactly once, and every engine applies them identically.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from . import headers as h
from .jsonmode import frame_messages, split_framed, split_json_body
from .model import ProducerState, Record, StreamMeta, evolve_meta, touch_meta
from .offsets import ZERO, InvalidOffsetError, Offset, parse_offset
from .parsing import (
    BadRequest,
    ExpiresAt,
    ProducerHeaders,
    is_json,
    media_type,
    parse_closed,
    parse_expires_at,
    parse_nonneg_int,
    parse_producer,
    parse_stream_seq,
    parse_ttl,
)

__all__ = [
    "AppendPlan",
    "AppendRequest",
    "CreatePlan",
    "CreateRequest",
    "Rejected",
    "cascade_delete",
    "make_etag",
    "parse_append_request",
    "parse_create_request",
    "plan_append",
    "plan_create",
    "plan_delete",
]

_STREAM_PREFIX: Final = "/v1/stream/"


class Rejected(Exception):
    """The request is refused: ``status`` (4xx), a ``reason`` and extra response headers."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


# --------------------------------------------------------------------------- create


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated ``PUT``."""

    content_type: str | None
    ttl: int | None = None
    expires_at: ExpiresAt | None = None
    closed: bool = False
    body: bytes = b""
    forked_from: str | None = None
    fork_offset: Offset | None = None
    fork_sub_offset: int = 0


def parse_create_request(
    headers: Mapping[str, str],
    body: bytes,
    resolve_stream: Callable[[str], str] | None = None,
) -> CreateRequest:
    """Validate a PUT's headers (lower-cased names) and body; raise :class:`BadRequest`.

    ``resolve_stream`` maps a ``Stream-Forked-From`` value to a stream name (default: strip
    a leading ``/v1/stream/``).
    """
    raw_ttl = headers.get(h.STREAM_TTL.lower())
    raw_expires = headers.get(h.STREAM_EXPIRES_AT.lower())
    if raw_ttl is not None and raw_expires is not None:
        raise BadRequest("Stream-TTL and Stream-Expires-At must not both be given")
    ttl = parse_ttl(raw_ttl) if raw_ttl is not None else None
    expires = parse_expires_at(raw_expires) if raw_expires is not None else None
    content_type = headers.get("content-type")
    if content_type is not None:
        media_type(content_type)  # validates
    raw_from = headers.get(h.STREAM_FORKED_FROM.lower())
    raw_offset = headers.get(h.STREAM_FORK_OFFSET.lower())
    raw_sub = headers.get(h.STREAM_FORK_SUB_OFFSET.lower())
    forked_from: str | None = None
    fork_offset: Offset | None = None
    sub = 0
    if raw_from is None:
        if raw_offset is not None or raw_sub is not None:
            raise BadRequest("Stream-Fork-Offset/-Sub-Offset need Stream-Forked-From")
    else:
        resolve = resolve_stream or default_resolve_stream
        forked_from = resolve(raw_from.strip())
        if raw_offset is not None:
            try:
                fork_offset = parse_offset(raw_offset.strip())
            except InvalidOffsetError as exc:
                raise BadRequest(f"Stream-Fork-Offset: {exc}") from None
        if raw_sub is not None:
            sub = parse_nonneg_int(h.STREAM_FORK_SUB_OFFSET, raw_sub.strip())
            if sub > 0 and fork_offset is None:
                raise BadRequest("Stream-Fork-Sub-Offset > 0 needs Stream-Fork-Offset")
    return CreateRequest(
        content_type=content_type,
        ttl=ttl,
        expires_at=expires,
        closed=parse_closed(headers.get(h.STREAM_CLOSED.lower())),
        body=body,
        forked_from=forked_from,
        fork_offset=fork_offset,
        fork_sub_offset=sub,
    )


def default_resolve_stream(value: str) -> str:
    """Map a ``Stream-Forked-From`` path (``/v1/stream/<name>`` or ``<name>``) to a name."""
    from .parsing import parse_stream_path

    path = value.split("?", 1)[0]
    if "://" in path:  # an absolute URL: keep its path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    if path.startswith(_STREAM_PREFIX):
        path = path[len(_STREAM_PREFIX) :]
    return parse_stream_path(path.lstrip("/").encode())


@dataclass(frozen=True, slots=True)
class CreatePlan:
    """What a PUT does: ``created`` (201) or an idempotent match (200, nothing written)."""

    created: bool
    meta: StreamMeta
    records: tuple[Record, ...] = ()
    """The stream's own initial records (a fork's sub-offset prefix, then the body)."""
    copy_from: str | None = None
    """A fork copies the source's records that end at or before ``meta.tail``-of-prefix."""
    copy_upto: Offset | None = None


def _body_records(mtype: str, body: bytes, start: Offset, *, allow_empty_array: bool) -> bytes:
    if not body:
        return b""
    if is_json(mtype):
        messages = split_json_body(body)
        if not messages and not allow_empty_array:
            raise BadRequest("an append must not be an empty JSON array")
        return frame_messages(messages)
    return body


def _same_config(meta: StreamMeta, req: CreateRequest, requested_mtype: str) -> bool:
    if media_type(meta.content_type) != requested_mtype:
        return False
    inherits_expiry = req.forked_from is not None and req.ttl is None and req.expires_at is None
    if not inherits_expiry:
        if meta.ttl != req.ttl:
            return False
        req_expiry = req.expires_at.timestamp if req.expires_at else None
        if meta.expires_at_ts != req_expiry:
            return False
    if meta.closed != req.closed:
        return False
    if meta.forked_from != req.forked_from:
        return False
    if req.forked_from is not None:
        requested_offset = str(req.fork_offset) if req.fork_offset is not None else None
        if requested_offset != meta.fork_offset or meta.fork_sub_offset != req.fork_sub_offset:
            return False
    return True


def plan_create(
    existing: StreamMeta | None,
    req: CreateRequest,
    *,
    name: str,
    now: float,
    new_id: str,
    source: StreamMeta | None = None,
    anchor: Record | None = None,
) -> CreatePlan:
    """Plan a PUT.

    ``existing`` is the live stream at the path (expired streams count as absent).
    For a fork, ``source`` is the live source stream and ``anchor`` its record that starts at
    the fork offset (needed only for a sub-offset).
    """
    if existing is not None:
        if existing.soft_deleted:
            raise Rejected(409, "the stream was deleted but is still referenced by forks")
        requested = media_type(req.content_type) if req.content_type else None
        if requested is None:
            requested = media_type(existing.content_type)
        if _same_config(existing, req, requested):
            return CreatePlan(created=False, meta=existing)
        raise Rejected(409, "the stream exists with a different configuration")

    ttl, expires = req.ttl, req.expires_at
    content_type = req.content_type
    own: list[Record] = []
    tail = ZERO
    copy_upto: Offset | None = None
    if req.forked_from is not None:
        if source is None:
            raise Rejected(404, f"fork source {req.forked_from!r} does not exist")
        if source.soft_deleted:
            raise Rejected(409, "the fork source has been deleted")
        if content_type is None:
            content_type = source.content_type
        elif media_type(content_type) != media_type(source.content_type):
            raise Rejected(409, "a fork's Content-Type must match its source")
        fork_at = req.fork_offset if req.fork_offset is not None else source.tail
        if fork_at > source.tail:
            raise BadRequest("Stream-Fork-Offset is beyond the source's tail")
        copy_upto = fork_at
        tail = fork_at
        if req.fork_sub_offset > 0:
            if anchor is None or anchor.start != fork_at:
                raise BadRequest("Stream-Fork-Sub-Offset: no append starts at the fork offset")
            if is_json(media_type(source.content_type)):
                messages = split_framed(anchor.data)
                if req.fork_sub_offset > len(messages):
                    raise BadRequest("Stream-Fork-Sub-Offset exceeds the append's messages")
                prefix = frame_messages(messages[: req.fork_sub_offset])
            else:
                if req.fork_sub_offset > len(anchor.data):
                    raise BadRequest("Stream-Fork-Sub-Offset exceeds the append's length")
                prefix = anchor.data[: req.fork_sub_offset]
            own.append(Record(tail, tail.advance(len(prefix)), prefix))
            tail = tail.advance(len(prefix))
        if ttl is None and expires is None:
            ttl = source.ttl
            if source.expires_at is not None and source.expires_at_ts is not None:
                expires = ExpiresAt(source.expires_at, source.expires_at_ts)
    final_type = content_type if content_type else h.DEFAULT_CONTENT_TYPE
    data = _body_records(media_type(final_type), req.body, tail, allow_empty_array=True)
    if data:
        own.append(Record(tail, tail.advance(len(data)), data))
        tail = tail.advance(len(data))
    meta = StreamMeta(
        name=name,
        stream_id=new_id,
        content_type=final_type,
        created_at=now,
        last_access=now,
        tail=tail,
        ttl=ttl,
        expires_at=expires.text if expires else None,
        expires_at_ts=expires.timestamp if expires else None,
        closed=req.closed,
        forked_from=req.forked_from,
        fork_offset=str(req.fork_offset) if req.fork_offset is not None else None,
        fork_sub_offset=req.fork_sub_offset,
    )
    return CreatePlan(
        created=True,
        meta=meta,
        records=tuple(own),
        copy_from=req.forked_from,
        copy_upto=copy_upto,
    )


# --------------------------------------------------------------------------- append


class AppendRequest(NamedTuple):
    """A validated ``POST``."""

    content_type: str | None
    body: bytes = b""
    close: bool = False
    seq: str | None = None
    producer: ProducerHeaders | None = None


_PRODUCER_ID: Final = h.PRODUCER_ID.lower()
_PRODUCER_EPOCH: Final = h.PRODUCER_EPOCH.lower()
_PRODUCER_SEQ: Final = h.PRODUCER_SEQ.lower()
_STREAM_CLOSED: Final = h.STREAM_CLOSED.lower()
_STREAM_SEQ: Final = h.STREAM_SEQ.lower()


def parse_append_request(headers: Mapping[str, str], body: bytes) -> AppendRequest:
    """Validate a POST's headers (lower-cased names) and body; raise :class:`BadRequest`."""
    producer_id = headers.get(_PRODUCER_ID)
    epoch = headers.get(_PRODUCER_EPOCH)
    seq = headers.get(_PRODUCER_SEQ)
    producer = (
        None
        if producer_id is None and epoch is None and seq is None
        else parse_producer(producer_id, epoch, seq)
    )
    raw_closed = headers.get(_STREAM_CLOSED)
    close = raw_closed is not None and parse_closed(raw_closed)
    content_type = headers.get("content-type")
    if not body and not close:
        raise BadRequest("an append needs a non-empty body (or Stream-Closed: true)")
    if body:
        if content_type is None or not content_type.strip():
            raise BadRequest("an append with a body needs a Content-Type")
        media_type(content_type)
    seq = headers.get(_STREAM_SEQ)
    if seq is not None:
        seq = parse_stream_seq(seq)
    # positional: a named tuple's keyword call costs twice as much (once per request)
    return AppendRequest(content_type, body, close, seq, producer)


class AppendPlan(NamedTuple):
    """What a POST does: the answer, and what to store (``None`` = nothing)."""

    status: int
    headers: dict[str, str]
    meta: StreamMeta | None = None
    record: Record | None = None
    producer_state: ProducerState | None = None
    appended: bool = False
    """True when data or closure changed, i.e. live readers must be woken."""


def _closed_rejection(meta: StreamMeta) -> Rejected:
    return Rejected(
        409,
        "the stream is closed",
        {h.STREAM_CLOSED: "true", h.STREAM_NEXT_OFFSET: str(meta.tail)},
    )


def plan_append(
    meta: StreamMeta,
    producer_state: ProducerState | None,
    req: AppendRequest,
    *,
    now: float,
) -> AppendPlan:
    """Plan a POST against the stream's current ``meta`` and this producer's state."""
    if meta.soft_deleted:
        raise Rejected(410, "the stream has been deleted")
    new_state: ProducerState | None = None
    producer = req.producer
    if producer is not None:
        state = producer_state
        if state is None:
            if producer.seq != 0:
                raise Rejected(
                    409,
                    "producer sequence gap",
                    {h.PRODUCER_EXPECTED_SEQ: "0", h.PRODUCER_RECEIVED_SEQ: str(producer.seq)},
                )
        elif producer.epoch < state.epoch:
            raise Rejected(403, "stale producer epoch", {h.PRODUCER_EPOCH: str(state.epoch)})
        elif producer.epoch > state.epoch:
            if producer.seq != 0:
                raise BadRequest("a new producer epoch must start at Producer-Seq 0")
        elif producer.seq <= state.seq:
            dup_headers = {h.PRODUCER_EPOCH: str(state.epoch), h.PRODUCER_SEQ: str(state.seq)}
            if meta.closed:
                dup_headers[h.STREAM_CLOSED] = "true"
            return AppendPlan(204, dup_headers, meta=touch_meta(meta, now))
        elif producer.seq != state.seq + 1:
            raise Rejected(
                409,
                "producer sequence gap",
                {
                    h.PRODUCER_EXPECTED_SEQ: str(state.seq + 1),
                    h.PRODUCER_RECEIVED_SEQ: str(producer.seq),
                },
            )
        new_state = ProducerState(producer.epoch, producer.seq)

    if meta.closed:
        if req.body:
            raise _closed_rejection(meta)
        # closing a closed stream is idempotent
        return AppendPlan(
            204,
            {h.STREAM_CLOSED: "true", h.STREAM_NEXT_OFFSET: str(meta.tail)},
            meta=touch_meta(meta, now),
        )
    mtype = media_type(meta.content_type)
    if req.body and media_type(req.content_type) != mtype:
        raise Rejected(409, "Content-Type does not match the stream's")
    if (
        req.seq is not None
        and meta.last_seq is not None
        and req.seq.encode() <= meta.last_seq.encode()
    ):
        raise Rejected(409, "Stream-Seq must be greater than the previous one")
    data = _body_records(mtype, req.body, meta.tail, allow_empty_array=False)
    tail = meta.tail
    record: Record | None = None
    if data:
        record = Record(tail, tail.advance(len(data)), data)
        tail = record.end
    new_meta = evolve_meta(
        meta,
        last_access=now,
        tail=tail,
        closed=req.close,
        closed_by=(
            (producer.producer_id, producer.epoch, producer.seq)
            if req.close and producer is not None
            else None
        ),
        last_seq=req.seq if req.seq is not None else meta.last_seq,
    )
    out = {h.STREAM_NEXT_OFFSET: str(tail)}
    if req.close:
        out[h.STREAM_CLOSED] = "true"
    status = 204
    if producer is not None:
        out[h.PRODUCER_EPOCH] = str(producer.epoch)
        out[h.PRODUCER_SEQ] = str(producer.seq)
        status = 200 if record is not None else 204
    return AppendPlan(status, out, new_meta, record, new_state, record is not None or req.close)


# --------------------------------------------------------------------------- delete


def plan_delete(meta: StreamMeta) -> bool:
    """Check a DELETE; return True for a soft delete (forks still reference the stream)."""
    if meta.soft_deleted:
        raise Rejected(410, "the stream has been deleted")
    return meta.fork_count > 0


def cascade_delete(
    meta: StreamMeta, load: Callable[[str], StreamMeta | None]
) -> tuple[list[str], list[StreamMeta]]:
    """Hard-delete ``meta`` and release its fork source, transitively.

    Returns the names to drop and the metas to rewrite (sources with a smaller
    ``fork_count``). A soft-deleted source whose last fork goes is dropped too.
    """
    drop = [meta.name]
    rewrite: dict[str, StreamMeta] = {}
    current = meta
    while current.forked_from is not None:
        source = rewrite.get(current.forked_from) or load(current.forked_from)
        if source is None or source.stream_id == current.stream_id:
            break
        source = source._replace(fork_count=max(0, source.fork_count - 1))
        if source.soft_deleted and source.fork_count == 0:
            drop.append(source.name)
            rewrite.pop(source.name, None)
            current = source
            continue
        rewrite[source.name] = source
        break
    return drop, list(rewrite.values())


# --------------------------------------------------------------------------- reads


def make_etag(meta: StreamMeta, start: Offset, end: Offset, *, closed: bool) -> str:
    """A strong ETag for the byte range ``[start, end)`` of this incarnation of the stream."""
    ident = base64.urlsafe_b64encode(meta.stream_id.encode()).decode().rstrip("=")
    suffix = ":c" if closed else ""
    return f'"{ident}:{start}:{end}{suffix}"'
