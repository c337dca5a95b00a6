"""Sans-IO core of the Durable Streams client: every protocol decision, no I/O.

The sync and async clients (``resumable_streams.durable``) are thin drivers over this module.
Each operation is a *flow*: a generator that yields actions and receives their outcomes, in the
shape of httpx's ``Auth.auth_flow``::

    flow = read_flow(options)
    action = next(flow)
    while True:
        if isinstance(action, Send): outcome = <send it>      # -> ResponseHead | Failure
        elif isinstance(action, Receive): outcome = <next body chunk, b"" at end> | Failure
        elif isinstance(action, Sleep): outcome = <sleep action.seconds> -> None
        elif isinstance(action, CallOnError): outcome = <user callback's result>
        elif isinstance(action, Emit): outcome = <hand action.event to the consumer> -> None
        elif isinstance(action, WaitForSeqs): outcome = <wait until those batches finished>
        action = flow.send(outcome)                        # StopIteration.value = result

The drivers own the sockets and the clock; the flows own retries, backoff, the read loop
(catch-up, long-poll, SSE with control events, reconnect from the last offset, stop on
``Stream-Closed``), error mapping, JSON append encoding and idempotent-producer sequencing.
Everything here is deterministic given its inputs (randomness for jitter is injected), so it is
tested without sockets.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import json
import json.scanner
import random
import re
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from resumable_streams._protocol import sse
from resumable_streams._protocol.durable import headers as h
from resumable_streams.errors import (
    BadRequestError,
    ContentTypeMismatchError,
    DurableStreamClientError,
    FetchError,
    RetentionGoneError,
    SeqConflictError,
    SequenceGapError,
    StaleEpochError,
    StreamClosedError,
    StreamConflictError,
    StreamExistsError,
    StreamNotFoundError,
)

__all__ = [
    "CallOnError",
    "Emit",
    "Failure",
    "LiveMode",
    "Prefetch",
    "ProducerState",
    "ReadEvent",
    "ReadOptions",
    "Receive",
    "Request",
    "ResponseHead",
    "RetryPolicy",
    "Send",
    "Sleep",
    "StreamInfo",
    "WaitForSeqs",
]

LiveMode: TypeAlias = bool | Literal["long-poll", "sse"]
"""``False``: catch up and stop; ``True`` / ``"long-poll"``: tail by long-poll; ``"sse"``."""

Q = TypeVar("Q", bound="QueuedAppend")

HeaderValue: TypeAlias = "str | Callable[[], str]"
ParamValue: TypeAlias = "str | Callable[[], str] | None"

SSE_DATA_ENCODING_HEADER = h.SSE_DATA_ENCODING
MAX_ERROR_BODY = 64 * 1024
DEFAULT_MAX_CHUNK_BYTES = 4 * 1024 * 1024

# --------------------------------------------------------------------------------------------
# Actions and outcomes


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to send. ``url`` already carries the (sorted) query string."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None
    stream: bool = False
    """The driver must not read the body eagerly (reads stream; it answers ``Receive``)."""

    def header(self, name: str) -> str | None:
        """Return header ``name`` (case-insensitive), or ``None``."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Status and headers of a response (header names lower-cased), and its body if read."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None = None
    """The whole body for non-streaming requests; ``None`` when the driver streams it."""
    reason: str = ""
    """The HTTP reason phrase (``"OK"``), if the server sent one."""

    def get(self, name: str) -> str | None:
        """Header ``name`` (case-insensitive), or ``None``."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Failure:
    """The request or the body read failed in the transport (connect error, reset, timeout).

    ``sent`` is ``False`` when the request certainly never reached the server (a connect
    error): even non-idempotent requests may then be retried.
    """

    error: BaseException
    sent: bool = True


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; answer with :class:`ResponseHead` or :class:`Failure`."""

    request: Request


@dataclass(frozen=True, slots=True)
class Receive:
    """Read the next chunk of the current response body; answer ``b""`` at its end."""


@dataclass(frozen=True, slots=True)
class CloseResponse:
    """Release the current streamed response (the flow no longer needs its body)."""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Send ``request`` now if the driver can overlap it with the current response; answer ``None``.

    A hint: a driver that pipelines (the built-in HTTP/1.1 client writes the request on the
    connection of the current response, whose body is still being read) answers the flow's
    next ``Send`` of this very request object from it; others ignore it, and that ``Send``
    goes out as usual. Only for idempotent requests (catch-up ``GET``).
    """

    request: Request


@dataclass(frozen=True, slots=True)
class Sleep:
    """Sleep ``seconds``; answer ``None``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class CallOnError:
    """Call the user's ``on_error(error)``; answer its result (``None`` = give up)."""

    error: DurableStreamClientError


@dataclass(frozen=True, slots=True)
class Emit:
    """Hand ``event`` to the consumer; answer ``None``."""

    event: ReadEvent


@dataclass(frozen=True, slots=True)
class WaitForSeqs:
    """Wait until the producer's batches ``(epoch, seq)`` for seq in ``seqs`` have finished.

    Answer ``None``, or raise the first of their errors into the flow.
    """

    epoch: int
    seqs: range


Action: TypeAlias = (
    "Send | Receive | CloseResponse | Prefetch | Sleep | CallOnError | Emit | WaitForSeqs"
)

# --------------------------------------------------------------------------------------------
# Small pure helpers


def resolve_values(values: Mapping[str, Any] | None) -> dict[str, str]:
    """Evaluate header / param values: callables are called (per request), ``None`` dropped."""
    out: dict[str, str] = {}
    if not values:
        return out
    for k, v in values.items():
        val = v() if callable(v) else v
        if val is not None:
            out[k] = str(val)
    return out


def build_url(url: str, params: Mapping[str, str]) -> str:
    """Merge ``params`` into ``url``'s query string, every parameter sorted by name.

    Lexicographic order keeps CDN cache keys stable (PROTOCOL.md §10.1). A parameter in
    ``params`` replaces one of the same name already in ``url``.
    """
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    pairs.extend(params.items())
    pairs.sort(key=lambda kv: kv[0])
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def media_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str | None) -> bool:
    """Tell whether this is the JSON-mode content type (``application/json``, any params)."""
    return media_type(content_type) == h.JSON_CONTENT_TYPE


def is_true(value: str | None) -> bool:
    """Tell whether a protocol boolean header is set: exactly ``true``, any case."""
    return value is not None and value.strip().lower() == "true"


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Response interpretation


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the protocol headers of one response say about the stream."""

    next_offset: str | None = None
    cursor: str | None = None
    up_to_date: bool = False
    closed: bool = False
    content_type: str | None = None
    etag: str | None = None
    cache_control: str | None = None
    ttl_seconds: int | None = None
    expires_at: str | None = None

    @classmethod
    def from_response(cls, head: ResponseHead) -> StreamInfo:
        """Read the ``Stream-*`` headers of ``head``."""
        closed = is_true(head.get(h.STREAM_CLOSED))
        return cls(
            next_offset=head.get(h.STREAM_NEXT_OFFSET),
            cursor=head.get(h.STREAM_CURSOR),
            up_to_date=closed or is_true(head.get(h.STREAM_UP_TO_DATE)),
            closed=closed,
            content_type=head.get("content-type"),
            etag=head.get("etag"),
            cache_control=head.get("cache-control"),
            ttl_seconds=_int_header(head.get(h.STREAM_TTL)),
            expires_at=head.get(h.STREAM_EXPIRES_AT),
        )


Operation: TypeAlias = Literal["create", "append", "close", "head", "delete", "read", "produce"]


def error_for_response(
    op: Operation, head: ResponseHead, url: str, request: Request | None = None
) -> DurableStreamClientError:
    """Map an error response to the exception the caller sees, with the server's details."""
    status = head.status
    body = head.body or b""
    details = body[:MAX_ERROR_BODY].decode("utf-8", "replace").strip() or None
    hdrs = dict(head.headers)
    kw: dict[str, Any] = {"status": status, "details": details, "url": url, "headers": hdrs}
    what = f"{op} {url}"
    if status == 400:
        return BadRequestError(f"bad request: {what}", **kw)
    if status == 404:
        return StreamNotFoundError(f"stream not found: {url}", **kw)
    if status == 410:
        return RetentionGoneError(f"gone: {what}", **kw)
    if status == 403 and head.get(h.PRODUCER_EPOCH) is not None:
        epoch = _int_header(head.get(h.PRODUCER_EPOCH)) or 0
        return StaleEpochError(
            f"producer epoch is stale: the server is at epoch {epoch} ({what}); "
            "call restart() or use auto_claim=True",
            current_epoch=epoch,
            **kw,
        )
    if status == 409:
        if is_true(head.get(h.STREAM_CLOSED)):
            return StreamClosedError(
                f"stream is closed: {url}", final_offset=head.get(h.STREAM_NEXT_OFFSET), **kw
            )
        expected = _int_header(head.get(h.PRODUCER_EXPECTED_SEQ))
        received = _int_header(head.get(h.PRODUCER_RECEIVED_SEQ))
        if expected is not None and received is not None:
            return SequenceGapError(
                f"producer sequence gap: expected {expected}, received {received} ({url})",
                expected_seq=expected,
                received_seq=received,
                **kw,
            )
        if op == "create":
            return StreamExistsError(
                f"stream already exists with a different configuration: {url}", **kw
            )
        low = (details or "").lower()
        if "content-type" in low or "content type" in low:
            return ContentTypeMismatchError(
                f"content type does not match the stream's: {what}", **kw
            )
        if "seq" in low or (request is not None and request.header(h.STREAM_SEQ)):
            seq = request.header(h.STREAM_SEQ) if request is not None else None
            return SeqConflictError(
                f"Stream-Seq {seq!r} is not above the stream's last one: {url}", **kw
            )
        return StreamConflictError(f"conflict: {what}", **kw)
    if status == 429:
        return FetchError(f"rate limited: {what}", code="RATE_LIMITED", **kw)
    if status >= 500:
        return FetchError(f"server error {status}: {what}", code="SERVER_ERROR", **kw)
    return DurableStreamClientError(f"HTTP {status}: {what}", **kw)


def failure_error(failure: Failure, url: str) -> FetchError:
    """Build the :class:`FetchError` for a transport failure (the raiser sets the cause)."""
    return FetchError(f"network error talking to {url}: {failure.error!r}", url=url)


# --------------------------------------------------------------------------------------------
# Retry policy


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if now is None:
        import time

        now = time.time()
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After``.

    Attempt ``n`` (0-based) waits ``uniform(0, min(max_delay, initial_delay * multiplier**n))``
    — or the server's ``Retry-After`` when it is longer (capped at ``max_retry_after``).
    ``max_retries`` consecutive failures without progress give up (``None`` = never).
    """

    max_retries: int | None = 10
    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    max_retry_after: float = 60.0
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based); ``None`` = give up."""
        if self.max_retries is not None and attempt >= self.max_retries:
            return None
        cap = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        d = cap * self.random()
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_retry_after))
        return d


NO_RETRY = RetryPolicy(max_retries=0)


def is_retryable_status(status: int) -> bool:
    """5xx and 429 are transient."""
    return status == 429 or status >= 500


def unary_flow(
    request: Request,
    *,
    op: Operation,
    policy: RetryPolicy,
    idempotent: bool,
    url: str,
) -> Generator[Action, Any, ResponseHead]:
    """Send ``request``, retrying transient failures; return the final :class:`ResponseHead`.

    Transport failures, 5xx and 429 are retried with backoff when the request is idempotent;
    a non-idempotent request is retried only when it certainly never reached the server
    (connect failure) or was refused with 429. Error statuses are raised as exceptions.
    """
    attempt = 0
    while True:
        outcome = yield Send(request)
        if isinstance(outcome, Failure):
            delay = policy.delay(attempt) if (idempotent or not outcome.sent) else None
            if delay is None:
                raise failure_error(outcome, url) from outcome.error
        else:
            head: ResponseHead = outcome
            if head.status < 400:
                return head
            if is_retryable_status(head.status) and (idempotent or head.status == 429):
                delay = policy.delay(attempt, parse_retry_after(head.get("retry-after")))
                if delay is None:
                    raise error_for_response(op, head, url, request)
            else:
                raise error_for_response(op, head, url, request)
        attempt += 1
        yield Sleep(delay)


# --------------------------------------------------------------------------------------------
# Requests for each operation


def _headers(
    base: Mapping[str, str], extra: Iterable[tuple[str, str | None]] = ()
) -> tuple[tuple[str, str], ...]:
    out = dict(base)
    out.update({k: v for k, v in extra if v is not None})
    return tuple(out.items())


@dataclass(frozen=True, slots=True)
class ForkFrom:
    """Create a stream as a fork of ``source`` (PROTOCOL.md §4.2).

    ``source`` is the source stream's URL or path (only the path is sent). ``offset``: the
    fork point (default: the source's tail); ``sub_offset``: that many more JSON messages (or
    bytes) past ``offset``.
    """

    source: str
    offset: str | None = None
    sub_offset: int | None = None

    def headers(self) -> list[tuple[str, str | None]]:
        """The ``Stream-Forked-From`` / ``Stream-Fork-*`` request headers."""
        if self.sub_offset is not None and (
            isinstance(self.sub_offset, bool)
            or not isinstance(self.sub_offset, int)
            or self.sub_offset < 0
        ):
            raise ValueError(f"fork sub_offset must be a non-negative int, got {self.sub_offset!r}")
        path = urlsplit(self.source).path if "://" in self.source else self.source
        if not path:
            raise ValueError(f"fork source must be a stream URL or path, got {self.source!r}")
        return [
            (h.STREAM_FORKED_FROM, path),
            (h.STREAM_FORK_OFFSET, self.offset),
            (h.STREAM_FORK_SUB_OFFSET, None if self.sub_offset is None else str(self.sub_offset)),
        ]


def create_request(
    url: str,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str],
    content_type: str | None,
    ttl_seconds: int | None,
    expires_at: str | None,
    body: bytes | None,
    closed: bool,
    fork: ForkFrom | None = None,
) -> Request:
    """``PUT`` creating a stream (idempotent when the configuration matches).

    Without ``content_type`` a fork inherits its source's; a plain stream gets
    ``application/octet-stream``.
    """
    if ttl_seconds is not None and expires_at is not None:
        raise ValueError("give ttl_seconds or expires_at, not both")
    if ttl_seconds is not None and (
        isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 0
    ):
        raise ValueError(f"ttl_seconds must be a non-negative int, got {ttl_seconds!r}")
    if content_type is None and fork is None:
        content_type = h.DEFAULT_CONTENT_TYPE
    return Request(
        "PUT",
        build_url(url, params),
        _headers(
            headers,
            [
                ("Content-Type", content_type),
                (h.STREAM_TTL, str(ttl_seconds) if ttl_seconds is not None else None),
                (h.STREAM_EXPIRES_AT, expires_at),
                (h.STREAM_CLOSED, "true" if closed else None),
                *(fork.headers() if fork is not None else []),
            ],
        ),
        body or None,
    )


def simple_request(
    method: str, url: str, *, headers: Mapping[str, str], params: Mapping[str, str]
) -> Request:
    """``HEAD`` / ``DELETE``."""
    return Request(method, build_url(url, params), tuple(headers.items()))


def append_request(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str],
    content_type: str | None,
    seq: str | None = None,
    close: bool = False,
    producer: tuple[str, int, int] | None = None,
) -> Request:
    """``POST`` appending ``body`` (already encoded), optionally closing the stream."""
    extra: list[tuple[str, str | None]] = [
        ("Content-Type", content_type if body else None),
        (h.STREAM_SEQ, seq),
        (h.STREAM_CLOSED, "true" if close else None),
    ]
    if producer is not None:
        pid, epoch, pseq = producer
        extra += [
            (h.PRODUCER_ID, pid),
            (h.PRODUCER_EPOCH, str(epoch)),
            (h.PRODUCER_SEQ, str(pseq)),
        ]
    return Request("POST", build_url(url, params), _headers(headers, extra), body or None)


# --------------------------------------------------------------------------------------------
# JSON-mode encoding


def encode_json_value(data: Any) -> bytes:
    """One JSON message's text. ``str``/``bytes`` are taken as already-serialized JSON.

    That is the official client's convention (``append(json.dumps(obj))``); any other value
    (dict, list, number, bool, ``None``) is serialized here. Never both: a ``str`` is never
    encoded a second time. Invalid pre-serialized JSON raises ``ValueError`` before sending.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(
                f"on a JSON stream, bytes/str are pre-serialized JSON; {raw[:80]!r} is not "
                "valid JSON (pass the value itself to have it serialized)"
            ) from exc
        return raw
    if isinstance(data, str):
        return encode_json_value(data.encode("utf-8"))
    try:
        return _JSON_ENCODER.encode(data).encode("utf-8")
    except ValueError as exc:  # NaN / Infinity: not JSON, servers answer 400
        raise ValueError(f"{data!r} is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Compact UTF-8 JSON; one shared encoder (``json.dumps`` builds one per call: ~1.5x slower).

``allow_nan=False``: ``NaN`` / ``Infinity`` are not JSON (RFC 8259) and servers refuse them.
"""


def json_batch_body(messages: Sequence[bytes]) -> bytes:
    """Join ``messages`` (JSON texts) into one POST body array: one message each."""
    return b"[" + b",".join(messages) + b"]"


def encode_message(data: Any, content_type: str | None) -> bytes:
    """Encode one message for a stream of ``content_type`` (not yet framed as a POST body).

    JSON streams: the message's JSON text (see :func:`encode_json_value`). Other streams:
    ``bytes`` as is, ``str`` as UTF-8.
    """
    if is_json_type(content_type):
        return encode_json_value(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(
        f"a {media_type(content_type) or 'non-JSON'} stream takes bytes or str, "
        f"not {type(data).__name__}"
    )


def batch_body(messages: Sequence[bytes], json_mode: bool) -> bytes:
    """One POST body carrying ``messages`` (from :func:`encode_message`), one message each.

    JSON streams: an array (servers flatten one level, so an array message stays one
    message). Other streams: the bytes concatenated.
    """
    return json_batch_body(messages) if json_mode else b"".join(messages)


def encode_append_body(data: Any, content_type: str | None) -> bytes:
    """Encode the POST body for one ``append(data)`` on a stream of ``content_type``."""
    return batch_body([encode_message(data, content_type)], is_json_type(content_type))


@dataclass(eq=False)
class QueuedAppend:
    """One ``append()`` waiting in a handle's batching queue (drivers add their own fields)."""

    message: bytes
    content_type: str
    seq: str | None = None


def take_append_batch(queue: deque[Q], max_bytes: int) -> list[Q]:
    """Pop the appends that go into the next POST from the head of ``queue``.

    Consecutive appends of one content type, up to ``max_bytes`` (at least one). An append
    with a ``Stream-Seq`` always travels alone, so that the server checks every ``seq`` and a
    rejected one fails only its own append.
    """
    first = queue.popleft()
    batch = [first]
    if first.seq is not None:
        return batch
    size = len(first.message)
    while queue:
        nxt = queue[0]
        if nxt.seq is not None or nxt.content_type != first.content_type:
            break
        size += len(nxt.message)
        if size > max_bytes:
            break
        batch.append(queue.popleft())
    return batch


# --------------------------------------------------------------------------------------------
# Reads


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """One batch of data read from the stream and the stream's state right after it.

    ``data`` is the raw bytes (for a JSON stream: the JSON array text), or ``None`` for a
    state-only event (the first up-to-date signal with nothing new, or the final closed one).
    """

    data: bytes | None
    next_offset: str
    cursor: str | None
    up_to_date: bool
    closed: bool
    messages: list[Any] | None = None
    """The JSON messages in ``data``, when the core has decoded them already (see
    :func:`event_messages`)."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What to read and how (see :func:`read_flow`)."""

    url: str
    offset: str | None = None
    live: LiveMode = True
    cursor: str | None = None
    headers: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    policy: RetryPolicy = RetryPolicy()
    has_on_error: bool = False
    if_none_match: str | None = None
    """An ``ETag`` from an earlier read of ``offset``: a ``304`` then ends the session."""
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    """Larger catch-up bodies are handed on in pieces of about this size, not read whole."""


def read_request(
    opts: ReadOptions,
    offset: str,
    cursor: str | None,
    live: str | None,
    extra_headers: Mapping[str, str] | None = None,
    extra_params: Mapping[str, str] | None = None,
) -> Request:
    """``GET`` for one read: catch-up (``live=None``), long-poll or SSE."""
    params = resolve_values(opts.params)
    params.update(extra_params or {})
    params[h.OFFSET_PARAM] = offset
    if live is not None:
        params[h.LIVE_PARAM] = live
    if cursor is not None and live is not None:
        params[h.CURSOR_PARAM] = cursor
    hdrs = resolve_values(opts.headers)
    hdrs.update(extra_headers or {})
    if live == h.LIVE_SSE:
        hdrs.setdefault("Accept", "text/event-stream")
    return Request("GET", build_url(opts.url, params), tuple(hdrs.items()), stream=True)


def _live_param(live: LiveMode) -> str | None:
    if live is False:
        return None
    if live is True or live == h.LIVE_LONG_POLL:
        return h.LIVE_LONG_POLL
    if live == h.LIVE_SSE:
        return h.LIVE_SSE
    raise ValueError(f"live must be False, True, 'long-poll' or 'sse', not {live!r}")


class _SSEState:
    """Turns SSE ``data`` / ``control`` events into :class:`ReadEvent` objects."""

    def __init__(self, base64_data: bool) -> None:
        self.decoder = sse.SSEDecoder()
        self.base64 = base64_data
        self.pending: list[bytes] = []

    def feed(self, chunk: bytes, state: _ReadState) -> list[ReadEvent]:
        out: list[ReadEvent] = []
        for ev in self.decoder.receive_data(chunk):
            if ev.event == h.SSE_EVENT_DATA:
                self.pending.append(self._payload(ev.data))
            elif ev.event == h.SSE_EVENT_CONTROL:
                out.extend(self._control(ev.data, state))
        return out

    def _payload(self, data: str) -> bytes:
        if not self.base64:
            return data.encode("utf-8")
        text = data.replace("\r", "").replace("\n", "")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DurableStreamClientError(
                f"invalid base64 in an SSE data event: {text[:80]!r}", code="SSE_ENCODING_ERROR"
            ) from exc

    def _control(self, data: str, state: _ReadState) -> list[ReadEvent]:
        try:
            ctl = json.loads(data)
            if not isinstance(ctl, dict):
                raise TypeError("control event is not an object")  # noqa: TRY301
        except (ValueError, TypeError) as exc:
            raise DurableStreamClientError(
                f"malformed SSE control event: {data[:200]!r}", code="PARSE_ERROR"
            ) from exc
        offset = ctl.get("streamNextOffset")
        if isinstance(offset, str):
            state.offset = offset
        cursor = ctl.get("streamCursor")
        if isinstance(cursor, str):
            state.cursor = cursor
        closed = ctl.get("streamClosed") is True
        up_to_date = closed or ctl.get("upToDate") is True
        pending, self.pending = self.pending, []
        state.closed = closed
        if not pending:
            ev = state.state_event(up_to_date=up_to_date, closed=closed)
            return [] if ev is None else [ev]
        state.was_up_to_date = up_to_date
        # several data events before one control: only the last carries the final state
        events = [state.event(p, up_to_date=False, closed=False) for p in pending[:-1]]
        events.append(state.event(pending[-1], up_to_date=up_to_date, closed=closed))
        return events


class _ReadState:
    def __init__(self, offset: str, cursor: str | None) -> None:
        self.offset = offset
        self.cursor = cursor
        self.closed = False
        self.was_up_to_date = False

    def event(
        self,
        data: bytes | None,
        *,
        up_to_date: bool,
        closed: bool,
        messages: list[Any] | None = None,
    ) -> ReadEvent:
        return ReadEvent(data, self.offset, self.cursor, up_to_date, closed, messages)

    def piece_event(self, piece: _Piece) -> ReadEvent:
        """A piece of a response before its last: at the offset the response started at."""
        return self.event(piece[0], up_to_date=False, closed=False, messages=piece[1])

    def state_event(self, *, up_to_date: bool, closed: bool) -> ReadEvent | None:
        """Return a data-less event if the state changed: first up-to-date, or closed."""
        first = up_to_date and not self.was_up_to_date
        self.was_up_to_date = up_to_date
        if closed or first:
            return self.event(None, up_to_date=up_to_date, closed=closed)
        return None


def _is_empty_body(data: bytes, json_mode: bool) -> bool:
    if not data:
        return True
    return json_mode and data.strip() == b"[]"


def _retry_later(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException,
    cause: BaseException | None = None,
    retry_after: float | None = None,
) -> Generator[Action, Any, int]:
    """Sleep before retry number ``attempt``; raise ``error`` when the policy gives up."""
    delay = policy.delay(attempt, retry_after)
    if delay is None:
        if cause is not None:
            raise error from cause
        raise error
    yield Sleep(delay)
    return attempt + 1


def read_flow(opts: ReadOptions) -> Generator[Action, Any, None]:
    """Run the read loop, yielding :class:`Emit` for every batch of data, in order.

    Catch-up reads (plain ``GET``, cacheable) come first, until the server says
    ``Stream-Up-To-Date``; then, if ``live``, long-poll or SSE from the last offset. It stops
    after ``Stream-Closed`` in every mode. An SSE response that ends (servers close them every
    minute or so) or breaks is reopened from the last ``streamNextOffset``. Network errors,
    5xx and 429 are retried with the backoff policy; other errors go to ``on_error`` (when the
    caller gave one: a dict with ``headers`` / ``params`` retries with them merged in) or are
    raised. A catch-up body larger than ``max_chunk_bytes`` is handed on in pieces as it
    arrives (on JSON streams cut between messages); a piece before the last carries the
    offset the response started at, the last one the response's next offset. With
    ``if_none_match``, the first request is conditional and a ``304`` ends the session.
    """
    live = _live_param(opts.live)
    state = _ReadState(opts.offset if opts.offset is not None else h.OFFSET_BEGINNING, opts.cursor)
    phase: str | None = None  # None = catch-up, else the live mode in use
    attempt = 0
    extra_headers: dict[str, str] = {}
    extra_params: dict[str, str] = {}
    json_mode: bool | None = None
    delivered = 0  # body bytes of a broken response already handed on (skipped on its retry)
    conditional = opts.if_none_match is not None
    prefetched: Request | None = None  # the next catch-up request, already sent (pipelined)
    while True:
        hdrs = extra_headers
        if conditional:  # until the first response arrives
            hdrs = {**extra_headers, "If-None-Match": cast(str, opts.if_none_match)}
        if prefetched is not None:
            request, prefetched = prefetched, None
        else:
            request = read_request(opts, state.offset, state.cursor, phase, hdrs, extra_params)
        outcome = yield Send(request)
        error: DurableStreamClientError
        if isinstance(outcome, Failure):
            error = failure_error(outcome, opts.url)
            attempt = yield from _retry_later(opts.policy, attempt, error, outcome.error)
            continue
        head: ResponseHead = outcome
        conditional = False
        if head.status >= 400:
            body = yield from _read_all(MAX_ERROR_BODY)
            head = replace(head, body=body if isinstance(body, bytes) else b"")
            error = error_for_response("read", head, opts.url, request)
            if is_retryable_status(head.status) and opts.policy.delay(attempt) is not None:
                retry_after = parse_retry_after(head.get("retry-after"))
                attempt = yield from _retry_later(opts.policy, attempt, error, None, retry_after)
                continue
            if not opts.has_on_error:
                raise error
            retry_with = yield CallOnError(error)
            if retry_with is None:
                raise error
            extra_headers.update(resolve_values(retry_with.get("headers")))
            extra_params.update(resolve_values(retry_with.get("params")))
            attempt = yield from _retry_later(opts.policy, attempt, error)
            continue
        if head.status == 304:
            # the caller's cached copy (from the ETag's read) is current
            yield CloseResponse()
            return
        if json_mode is None:
            json_mode = is_json_type(head.get("content-type"))
        if media_type(head.get("content-type")) == "text/event-stream":
            # ---- SSE: events until the server ends the response or the stream closes
            sse_state = _SSEState(is_true_base64(head.get(SSE_DATA_ENCODING_HEADER)))
            progressed = False
            failed: Failure | None = None
            while True:
                chunk = yield Receive()
                if isinstance(chunk, Failure):
                    failed = chunk
                    break
                if not chunk:
                    break
                for ev in sse_state.feed(chunk, state):
                    progressed = True
                    yield Emit(ev)
                if state.closed:
                    yield CloseResponse()
                    return
            if progressed:
                attempt = 0
            if failed is not None:
                error = failure_error(failed, opts.url)
                attempt = yield from _retry_later(opts.policy, attempt, error, failed.error)
            elif not progressed:
                error = FetchError(
                    f"SSE response from {opts.url} kept ending without events", url=opts.url
                )
                attempt = yield from _retry_later(opts.policy, attempt, error)
            continue
        # ---- catch-up 200, long-poll 200 / 204: the body, in pieces if it is large
        info = StreamInfo.from_response(head)
        if (
            phase is None
            and head.status == 200
            and not info.up_to_date
            and not info.closed
            and info.next_offset is not None
        ):
            # more to catch up on: ask for it now, so the server prepares the next response
            # while this body is read and decoded
            cursor = info.cursor if info.cursor is not None else state.cursor
            next_request = read_request(
                opts, info.next_offset, cursor, phase, extra_headers, extra_params
            )
            yield Prefetch(next_request)
            prefetched = next_request
        splitter = _BodySplitter(opts.max_chunk_bytes, json_mode, skip=delivered)
        held: _Piece | None = None
        broken: Failure | None = None
        while True:
            chunk = yield Receive()
            if isinstance(chunk, Failure):
                broken = chunk
                break
            if not chunk:
                break
            for piece in splitter.feed(chunk):
                if held is not None:
                    yield Emit(state.piece_event(held))
                held = piece
        if broken is not None:
            prefetched = None
            # resume this response from its start, skipping what was handed on already
            delivered = splitter.delivered_before_last if held is not None else splitter.delivered
            error = failure_error(broken, opts.url)
            attempt = yield from _retry_later(opts.policy, attempt, error, broken.error)
            continue
        rest: _Piece = (splitter.end(), None)
        if held is not None and rest[0]:
            yield Emit(state.piece_event(held))
            held = None
        last, messages = held if held is not None else rest
        delivered = 0
        attempt = 0
        if info.next_offset is not None:
            state.offset = info.next_offset
        if info.cursor is not None:
            state.cursor = info.cursor
        up_to_date = info.up_to_date or head.status == 204
        if head.status == 204 or _is_empty_body(last, json_mode):
            state_ev = state.state_event(up_to_date=up_to_date, closed=info.closed)
            if state_ev is not None:
                yield Emit(state_ev)
        else:
            state.was_up_to_date = up_to_date
            event = state.event(last, up_to_date=up_to_date, closed=info.closed, messages=messages)
            yield Emit(event)
        if info.closed:
            return
        if up_to_date:
            if live is None:
                return
            phase = live
        # not up to date: keep reading in the same phase (a server chunk limit was hit)


_Piece: TypeAlias = "tuple[bytes, list[Any] | None]"
"""A piece of a body, and its JSON messages when the splitter decoded them."""


class _BodySplitter:
    """Cuts a response body into pieces of about ``max_bytes``, and the rest at the end.

    Byte streams are cut into pieces of exactly ``max_bytes``. JSON streams (a JSON array) are
    cut between messages, each piece an array of its own of at least ``max_bytes`` (but one
    message). ``skip`` drops that many body bytes first (what an earlier, broken attempt at
    the same response already handed on: data at an offset never changes, so the retried body
    starts with the same bytes). ``delivered`` counts the body bytes covered by the pieces
    returned so far, ``delivered_before_last`` the same without the latest piece.
    """

    def __init__(self, max_bytes: int, json_mode: bool, *, skip: int = 0) -> None:
        self.max_bytes = max_bytes
        self.json_mode = json_mode
        self.skip = skip
        self.delivered = skip
        self.delivered_before_last = skip
        self._parts: list[bytes] = []
        self._size = 0
        # JSON: the text after the last cut (starts at "[" before the first cut)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._cut_once = skip > 0
        self._opaque = False
        self._next_try = max_bytes

    def feed(self, chunk: bytes) -> list[_Piece]:
        """Take the next chunk; return the pieces that are complete."""
        if self.skip:
            dropped = len(chunk[: self.skip])
            self.skip -= dropped
            chunk = chunk[dropped:]
            if not chunk:
                return []
        if not self.json_mode:
            self._parts.append(chunk)
            self._size += len(chunk)
            if self._size < self.max_bytes:
                return []
            data = b"".join(self._parts)
            cut = len(data) - len(data) % self.max_bytes
            self._parts = [data[cut:]] if cut < len(data) else []
            self._size = len(data) - cut
            pieces: list[_Piece] = []
            for i in range(0, cut, self.max_bytes):
                pieces.append((data[i : i + self.max_bytes], None))
                self._count(self.max_bytes)
            return pieces
        if not self._text:
            # raw bytes until there is enough to cut: a small body passes through untouched
            self._parts.append(chunk)
            self._size += len(chunk)
            if self._opaque or self._size < self._next_try:
                return []
            chunk = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
        self._text += self._decoder.decode(chunk)
        pieces = []
        pos = 0
        while not self._opaque and len(self._text) - pos >= self._next_try:
            found = self._cut(pos)
            if found is None:
                break
            data, messages, pos = found
            pieces.append((data, messages))
        if pos:
            self._text = self._text[pos:]
        return pieces

    def end(self) -> bytes:
        """The rest of the body (``b""`` if nothing remains)."""
        if self.skip:
            raise FetchError(
                f"a retried read returned {self.skip} bytes fewer than the broken attempt did"
            )
        if not self.json_mode:
            remainder = b"".join(self._parts)
            self._parts.clear()
            return remainder
        raw = b"".join(self._parts)
        self._parts.clear()
        if not self._text and not self._cut_once:
            return raw  # small body: never decoded
        text = self._text + self._decoder.decode(raw, final=True)
        self._text = ""
        if not self._cut_once:
            return text.encode("utf-8")
        rest = text.lstrip()
        if rest.startswith(","):
            return ("[" + rest[1:]).encode("utf-8")
        return b"" if rest.rstrip() == "]" else rest.encode("utf-8")

    def _count(self, size: int) -> None:
        self.delivered_before_last = self.delivered
        self.delivered += size

    def _cut(self, pos: int) -> tuple[bytes, list[Any], int] | None:
        """The piece of complete messages from ``pos`` on (of ``max_bytes`` or the last).

        Returns its bytes, its decoded messages (parsed anyway to find their ends) and the
        position after it.
        """
        text = self._text
        n = len(text)
        i = _skip_ws(text, pos)
        if not self._cut_once:
            if i >= n:
                return None
            if text[i] != "[":
                self._opaque = True  # not an array: hand it on whole at the end
                return None
            i += 1
        need_comma = self._cut_once
        first = last = -1
        messages: list[Any] = []
        scan = _JSON_SCAN
        limit = self.max_bytes
        while True:
            # compact JSON ("[a,b]") takes the fast path; whitespace the slow one
            if need_comma:
                if text.startswith(",", i):
                    j = i + 1
                else:
                    j = _skip_ws(text, i)
                    if not text.startswith(",", j):
                        break
                    j += 1
                if text.startswith(_WS_CHARS, j):
                    j = _skip_ws(text, j)
            else:
                j = _skip_ws(text, i)
            try:
                message, end = scan(text, j)
            except (StopIteration, ValueError):
                break
            if end >= n:
                break  # a number may go on in the next chunk
            if first < 0:
                first = j
            messages.append(message)
            last = i = end
            need_comma = True
            if last - first >= limit:
                break
        if last < 0:
            self._next_try = 2 * (n - pos)  # a long message: retry once twice the text is here
            return None
        self._next_try = self.max_bytes
        self._cut_once = True
        self._count(len(text[pos:last].encode("utf-8")))
        return ("[" + text[first:last] + "]").encode("utf-8"), messages, last


_JSON_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # typeshed's stub wants a scanner context, which this is
)
"""Decodes one JSON value at an index (the C scanner behind ``json.loads``)."""
_WS_CHARS = (" ", "\t", "\r", "\n")
_WS = frozenset(_WS_CHARS)


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def is_true_base64(value: str | None) -> bool:
    """Tell whether ``Stream-SSE-Data-Encoding`` says base64."""
    return value is not None and value.strip().lower() == "base64"


def _read_all(limit: int | None) -> Generator[Action, Any, bytes | Failure]:
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = yield Receive()
        if isinstance(chunk, Failure):
            return chunk
        if not chunk:
            return b"".join(parts)
        if limit is None or size < limit:
            parts.append(chunk)
            size += len(chunk)


def event_messages(event: ReadEvent) -> list[Any]:
    """The JSON messages of a read event (decoded here unless the core already did)."""
    if event.messages is not None:
        return event.messages
    return decode_json_batch(event.data or b"")


def decode_json_batch(data: bytes) -> list[Any]:
    """Decode the messages of one JSON-mode read (an array; a lone value is one message)."""
    if not data.strip():
        return []
    value = json.loads(data)
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------
# Idempotent producer


@dataclass(slots=True)
class ProducerState:
    """What an idempotent producer must remember to continue exactly-once after a restart.

    Save it (``to_dict()``, e.g. as JSON next to your own checkpoint) after ``flush()``, and
    restore it with ``IdempotentProducer(..., state=ProducerState.from_dict(saved))``.
    """

    producer_id: str
    epoch: int = 0
    next_seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        return {"producer_id": self.producer_id, "epoch": self.epoch, "next_seq": self.next_seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProducerState:
        """Inverse of :meth:`to_dict`; validates the values."""
        state = cls(str(data["producer_id"]), int(data["epoch"]), int(data["next_seq"]))
        state.validate()
        return state

    def validate(self) -> None:
        """Raise ``ValueError`` for an empty id or a negative epoch / seq."""
        if not self.producer_id:
            raise ValueError("producer_id must be a non-empty string")
        if self.epoch < 0 or self.next_seq < 0:
            raise ValueError(f"epoch and next_seq must be >= 0, got {self.epoch}, {self.next_seq}")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How a producer batch ended: its offset (``None`` for a duplicate) and ``duplicate``."""

    offset: str | None
    duplicate: bool
    epoch: int
    seq: int


@dataclass(slots=True)
class Batch:
    """A producer batch being sent: its body and its current ``(epoch, seq)``."""

    body: bytes
    epoch: int
    seq: int
    close: bool = False


def produce_flow(
    batch: Batch,
    *,
    url: str,
    state: ProducerState,
    headers: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
    content_type: str | None,
    auto_claim: bool,
    policy: RetryPolicy,
) -> Generator[Action, Any, BatchResult]:
    """Send one producer batch until it is durable (or definitely failed).

    Idempotent by ``(Producer-Id, Producer-Epoch, Producer-Seq)``, so transport errors, 5xx and
    429 are retried with backoff (a replay of a batch that did land answers ``204`` duplicate).
    ``403`` with ``auto_claim``: take epoch ``server + 1`` and renumber from the producer's
    state. ``409`` gap whose expected seq is below ours: wait for the earlier batches of this
    epoch (pipelining reordered them) and resend. Mutates ``state`` (epoch, next_seq) and
    ``batch`` (epoch, seq) on a claim.
    """
    attempt = 0
    waited = False
    while True:
        request = append_request(
            url,
            batch.body,
            headers=resolve_values(headers),
            params=resolve_values(params),
            content_type=content_type,
            close=batch.close,
            producer=(state.producer_id, batch.epoch, batch.seq),
        )
        outcome = yield Send(request)
        if isinstance(outcome, Failure):
            delay = policy.delay(attempt)
            if delay is None:
                raise failure_error(outcome, url) from outcome.error
            attempt += 1
            yield Sleep(delay)
            continue
        head: ResponseHead = outcome
        if head.status < 300:
            return BatchResult(
                head.get(h.STREAM_NEXT_OFFSET),
                head.status == 204 and not batch.close,
                batch.epoch,
                batch.seq,
            )
        if is_retryable_status(head.status):
            delay = policy.delay(attempt, parse_retry_after(head.get("retry-after")))
            if delay is None:
                raise error_for_response("produce", head, url, request)
            attempt += 1
            yield Sleep(delay)
            continue
        error = error_for_response("produce", head, url, request)
        if isinstance(error, StaleEpochError) and auto_claim:
            if state.epoch <= error.current_epoch:
                state.epoch = error.current_epoch + 1
                state.next_seq = 0
            batch.epoch = state.epoch
            batch.seq = state.next_seq
            state.next_seq += 1
            attempt = 0
            waited = False
            continue
        if isinstance(error, SequenceGapError) and error.expected_seq < batch.seq and not waited:
            # pipelined batches arrived out of order: wait for the earlier ones, once
            waited = True
            yield WaitForSeqs(batch.epoch, range(error.expected_seq, batch.seq))
            continue
        raise error
