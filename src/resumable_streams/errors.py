"""Every exception this library raises on purpose derives from :class:`ResumableStreamsError`.

The tree::

    ResumableStreamsError
    ├── ConfigurationError (also ValueError)     a bad argument or setting, names the value
    ├── BackendError                             Redis (or another backend) failed; __cause__ is
    │   │                                        the driver's own exception
    │   └── BackendUnavailableError              could not connect / connection lost
    ├── ResumableStreamError                     resumable streams (Node-compatible protocol)
    │   ├── AckTimeoutError (also TimeoutError)  no producer answered a resume request in time
    │   ├── InvalidChunkError (also TypeError)   a producer yielded something that is not a str
    │   ├── SlowConsumerError                    a resumer fell too far behind; resume from
    │   │                                        ``.position`` (UTF-16 units)
    │   ├── ReadCancelledError                   a resumed iterator's read was cancelled: it
    │   │                                        was released; resume from ``.position``
    │   ├── StreamInterruptedError               the connection to Redis was lost and no
    │   │                                        producer answered since: text after
    │   │                                        ``.position`` may be missing
    │   ├── ContextNotRunningError (also RuntimeError)  the context is not running
    │   └── ContextAlreadyRunningError (also RuntimeError)  entered while already running
    ├── TransportError                           SSE / WebSocket transports and their clients
    │   │                                        (``url``, ``position``: where to resume)
    │   ├── TransportProtocolError (also ValueError)  the peer broke the wire protocol
    │   ├── RequestRejectedError                 the server refused the request (400 / 4400)
    │   ├── RemoteStreamNotFoundError            no such stream (404 / 4404)
    │   ├── RemoteStreamFailedError              its producer failed (``failed`` / 4500)
    │   ├── StreamGoneError                      it finished while this client was away
    │   │                                        (204 / 4410): the tail may be missing
    │   └── ReconnectFailedError (also ConnectionError)  reconnects exhausted the policy
    └── DurableStreamError                       Durable Streams (server storage and client)
        └── DurableStreamClientError             the Durable Streams client; carries ``message``,
            │                                    ``status``, ``code``, ``details`` (the server's
            │                                    body), ``url`` and ``headers``
            ├── FetchError                       network failure, or retries exhausted on 5xx/429
            ├── BadRequestError                  400: the server rejected the request
            ├── StreamNotFoundError              404
            ├── RetentionGoneError               410: offset dropped, or stream soft-deleted
            ├── StreamConflictError              409
            │   ├── StreamExistsError            create with a different configuration
            │   ├── StreamClosedError            append to a closed stream (``final_offset``)
            │   ├── SeqConflictError             ``Stream-Seq`` not above the last one
            │   ├── ContentTypeMismatchError     body type differs from the stream's
            │   └── SequenceGapError             producer seq gap (``expected_seq``,
            │                                    ``received_seq``)
            ├── StaleEpochError                  403: a newer producer epoch fenced this one
            │                                    (``current_epoch``)
            ├── StreamConsumedError              a one-shot response was consumed twice
            ├── SSEBytesIterationError           raw bytes asked of an SSE session
            ├── SSENotSupportedError, SSEReadAllError  never raised (see their docstrings):
            │                                    importable for code written for the official client
            └── ProducerClosedError              append to a closed IdempotentProducer

Third-party exceptions (coredis, redis-py, httpx) are translated at the layer boundary, and
no one-element ``ExceptionGroup`` escapes a public call.
"""

from __future__ import annotations

__all__ = [
    "AckTimeoutError",
    "BackendError",
    "BackendUnavailableError",
    "BadRequestError",
    "ConfigurationError",
    "ContentTypeMismatchError",
    "ContextAlreadyRunningError",
    "ContextNotRunningError",
    "DurableStreamClientError",
    "DurableStreamError",
    "FetchError",
    "InvalidChunkError",
    "ProducerClosedError",
    "ReadCancelledError",
    "ReconnectFailedError",
    "RemoteStreamFailedError",
    "RemoteStreamNotFoundError",
    "RequestRejectedError",
    "ResumableStreamError",
    "ResumableStreamsError",
    "RetentionGoneError",
    "SSEBytesIterationError",
    "SSENotSupportedError",
    "SSEReadAllError",
    "SeqConflictError",
    "SequenceGapError",
    "SlowConsumerError",
    "StaleEpochError",
    "StreamClosedError",
    "StreamConflictError",
    "StreamConsumedError",
    "StreamExistsError",
    "StreamGoneError",
    "StreamInterruptedError",
    "StreamNotFoundError",
    "TransportError",
    "TransportProtocolError",
]


class ResumableStreamsError(Exception):
    """Base class of every exception raised by ``resumable_streams``."""


class ConfigurationError(ResumableStreamsError, ValueError):
    """A bad argument or setting; the message names the offending value."""


class BackendError(ResumableStreamsError):
    """A backend (Redis or another store) failed. ``__cause__`` holds the driver's error."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached, or the connection was lost."""


class ResumableStreamError(ResumableStreamsError):
    """Base class for errors of the resumable-stream face."""


class AckTimeoutError(ResumableStreamError, TimeoutError):
    """No producer answered a resume request within the ack timeout.

    The stream's sentinel says it is still active, so its producer is presumably gone
    (crashed, or refused the request because of ``max_listeners`` / ``max_replay_size``).
    """

    def __init__(self, stream_id: str, timeout: float) -> None:
        super().__init__(
            f"no producer acknowledged the resume of stream {stream_id!r} within {timeout}s "
            "(Timeout waiting for ack)"
        )
        self.stream_id = stream_id
        self.timeout = timeout


class InvalidChunkError(ResumableStreamError, TypeError):
    """The producer's source yielded a value that is not a ``str``."""


class SlowConsumerError(ResumableStreamError):
    """A resumer's buffer overflowed because it read too slowly.

    Nothing was lost: resume again with ``skip_characters=error.position`` while the producer
    is still running.
    """

    def __init__(self, stream_id: str, position: int, limit: int) -> None:
        super().__init__(
            f"consumer of stream {stream_id!r} fell more than {limit} characters behind; "
            f"resume with skip_characters={position}"
        )
        self.stream_id = stream_id
        self.position = position
        self.limit = limit


class ReadCancelledError(ResumableStreamError):
    """A read of a resumed stream was cancelled, so the iterator released its subscription.

    Nothing was lost: resume with ``skip_characters=error.position`` (what was read so far).
    """

    def __init__(self, stream_id: str, position: int) -> None:
        super().__init__(
            f"a read of stream {stream_id!r} was cancelled and the iterator released its "
            f"subscription; resume with skip_characters={position}"
        )
        self.stream_id = stream_id
        self.position = position


class StreamInterruptedError(ResumableStreamError):
    """The connection to Redis was lost and restored, and no producer answered since.

    Messages published while the connection was down are lost to pub/sub, so the text after
    ``position`` may be incomplete; the stream is finished or its producer is gone.
    """

    def __init__(self, stream_id: str, position: int, reason: str) -> None:
        super().__init__(
            f"stream {stream_id!r} was interrupted at position {position}: {reason}; "
            "the text after that position may be missing"
        )
        self.stream_id = stream_id
        self.position = position


class ContextNotRunningError(ResumableStreamError, RuntimeError):
    """The resumable-stream context was used outside its running block."""


class ContextAlreadyRunningError(ResumableStreamError, RuntimeError):
    """The resumable-stream context was entered while it was already running."""


class TransportError(ResumableStreamsError):
    """An error of the SSE / WebSocket transports or their resuming clients.

    ``url`` is the endpoint, ``position`` how far the client got (UTF-16 units): where a new
    client would resume.
    """

    def __init__(self, message: str, *, url: str | None = None, position: int = 0) -> None:
        super().__init__(message)
        self.url = url
        self.position = position


class TransportProtocolError(TransportError, ValueError):
    """The peer sent something the transport protocol does not allow (the message says what)."""


class RequestRejectedError(TransportError):
    """The server rejected the request as invalid (HTTP 400, close code 4400)."""


class RemoteStreamNotFoundError(TransportError):
    """The server has no such stream (HTTP 404, close code 4404)."""


class RemoteStreamFailedError(TransportError):
    """The stream's producer failed (SSE ``failed`` event, close code 4500)."""


class StreamGoneError(TransportError):
    """The stream finished while the client was disconnected (HTTP 204, close code 4410).

    Finished resumable streams are not kept, so whatever came after ``position`` may be lost
    (or there may have been nothing left).
    """


class ReconnectFailedError(TransportError, ConnectionError):
    """Reconnecting failed as often as the retry policy allows; ``__cause__`` is the last error."""


class DurableStreamError(ResumableStreamsError):
    """Base class for errors of the Durable Streams face (server storage and client)."""


# --- Durable Streams client -------------------------------------------------------------------


class DurableStreamClientError(DurableStreamError):
    """An error of the Durable Streams client.

    The attributes match the official Python client's ``DurableStreamError``: ``message``,
    ``status`` (HTTP status, ``None`` for network errors), ``code`` (a stable string such as
    ``"NOT_FOUND"``), ``details`` (the server's response body, decoded as text), plus ``url`` and
    the response ``headers``.
    """

    default_code: str = "HTTP_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: str | None = None,
        url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.default_code
        self.details = details
        self.url = url
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(status={self.status})")
        if self.details and self.details not in self.message:
            parts.append(f"- server said: {self.details!r}")
        return " ".join(parts)


class FetchError(DurableStreamClientError):
    """The request failed on the network, or 5xx/429 answers outlasted the retry policy.

    ``__cause__`` is the HTTP client's own exception for network failures.
    """

    default_code = "FETCH_ERROR"


class BadRequestError(DurableStreamClientError):
    """400: the server rejected the request (bad header, bad offset, invalid JSON, ...)."""

    default_code = "BAD_REQUEST"


class StreamNotFoundError(DurableStreamClientError):
    """404: there is no stream at this URL."""

    default_code = "NOT_FOUND"


class RetentionGoneError(DurableStreamClientError):
    """410: the offset was dropped by retention, or the stream is soft-deleted."""

    default_code = "RETENTION_GONE"


class StreamConflictError(DurableStreamClientError):
    """409: the request conflicts with the stream's state."""

    default_code = "CONFLICT"


class StreamExistsError(StreamConflictError):
    """409 on create: a stream exists at this URL with a different configuration."""

    default_code = "CONFLICT_EXISTS"


class StreamClosedError(StreamConflictError):
    """409 with ``Stream-Closed: true``: the stream is closed; ``final_offset`` is its tail."""

    default_code = "STREAM_CLOSED"

    def __init__(self, message: str, *, final_offset: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.final_offset = final_offset


class SeqConflictError(StreamConflictError):
    """409: the ``Stream-Seq`` sent is not above the last one the stream accepted."""

    default_code = "CONFLICT_SEQ"


class ContentTypeMismatchError(StreamConflictError):
    """409: the append's content type differs from the stream's."""

    default_code = "CONTENT_TYPE_MISMATCH"


class SequenceGapError(StreamConflictError):
    """409: an idempotent producer's ``Producer-Seq`` skipped ahead of ``expected_seq``."""

    default_code = "SEQUENCE_GAP"

    def __init__(
        self, message: str, *, expected_seq: int, received_seq: int, **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.expected_seq = expected_seq
        self.received_seq = received_seq


class StaleEpochError(DurableStreamClientError):
    """403: a producer with a newer epoch took over; ``current_epoch`` is the server's."""

    default_code = "STALE_EPOCH"

    def __init__(self, message: str, *, current_epoch: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.current_epoch = current_epoch


class StreamConsumedError(DurableStreamClientError):
    """A one-shot stream response was consumed a second time."""

    default_code = "ALREADY_CONSUMED"


class SSEBytesIterationError(DurableStreamClientError):
    """Raw bytes were asked of an SSE session; use ``iter_text()`` or ``iter_json()``."""

    default_code = "SSE_BYTES_NOT_SUPPORTED"


class SSENotSupportedError(DurableStreamClientError):
    """The official client's error for SSE on a stream that is not text or JSON.

    Never raised here: binary streams are read over SSE as base64 (``Stream-SSE-Data-Encoding``)
    and decoded. Exported so that code written against the official client, which catches it,
    imports unchanged.
    """

    default_code = "SSE_NOT_SUPPORTED"


class SSEReadAllError(DurableStreamClientError):
    """The official client's error for ``read_text()`` / ``read_json()`` in SSE mode.

    Never raised here: the ``read_*`` helpers return everything up to the tail as of the call
    in every live mode. Exported so that code written against the official client, which
    catches it, imports unchanged.
    """

    default_code = "SSE_READ_ALL"


class ProducerClosedError(DurableStreamClientError):
    """``append`` was called on an :class:`IdempotentProducer` after ``close()``."""

    default_code = "ALREADY_CLOSED"
