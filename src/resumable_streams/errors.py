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
    │   ├── ContextNotRunningError               the context's task group is not open
    │   └── StreamCancelledError                 the stream was stopped with cancel_stream()
    └── DurableStreamError                       Durable Streams (server storage and client)

Third-party exceptions (coredis, redis-py, httpx) are translated at the layer boundary, and
no one-element ``ExceptionGroup`` escapes a public call.
"""

from __future__ import annotations

__all__ = [
    "AckTimeoutError",
    "BackendError",
    "BackendUnavailableError",
    "ConfigurationError",
    "ContextNotRunningError",
    "DurableStreamError",
    "InvalidChunkError",
    "ResumableStreamError",
    "ResumableStreamsError",
    "SlowConsumerError",
    "StreamCancelledError",
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


class ContextNotRunningError(ResumableStreamError, RuntimeError):
    """The resumable-stream context was used outside its running block."""


class StreamCancelledError(ResumableStreamError):
    """The stream was stopped through ``cancel_stream()`` (from this or another process)."""


class DurableStreamError(ResumableStreamsError):
    """Base class for errors of the Durable Streams face (server storage and client)."""
