"""Durable Streams: HTTP offset-addressed, append-only streams (client here; ``.server``).

The client is a drop-in for the official Python client (``durable_streams``), on httpx2 and
anyio (trio and asyncio)::

    from resumable_streams.durable import stream, astream, DurableStream, IdempotentProducer

    with stream("http://127.0.0.1:4437/v1/stream/my-stream", live=False) as res:
        for item in res.iter_json():
            print(item)

All protocol decisions live in the sans-IO core
(:mod:`resumable_streams._protocol.durable.client`); the sync client is generated from the async
one (``scripts/unasync.py``).
"""

from __future__ import annotations

from resumable_streams.durable._async_client import AsyncDurableStream as AsyncDurableStream
from resumable_streams.durable._async_client import AsyncStreamResponse as AsyncStreamResponse
from resumable_streams.durable._async_client import AsyncStreamSession as AsyncStreamSession
from resumable_streams.durable._entry import astream as astream
from resumable_streams.durable._entry import stream as stream
from resumable_streams.durable._producer import IdempotentProducer as IdempotentProducer
from resumable_streams.durable._producer import SyncIdempotentProducer as SyncIdempotentProducer
from resumable_streams.durable._sync_client import DurableStream as DurableStream
from resumable_streams.durable._sync_client import StreamResponse as StreamResponse
from resumable_streams.durable._types import AppendResult as AppendResult
from resumable_streams.durable._types import CloseResult as CloseResult
from resumable_streams.durable._types import HeadersLike as HeadersLike
from resumable_streams.durable._types import HeadResult as HeadResult
from resumable_streams.durable._types import IdempotentAppendResult as IdempotentAppendResult
from resumable_streams.durable._types import LiveMode as LiveMode
from resumable_streams.durable._types import Offset as Offset
from resumable_streams.durable._types import ParamsLike as ParamsLike
from resumable_streams.durable._types import ProducerState as ProducerState
from resumable_streams.durable._types import RetryPolicy as RetryPolicy
from resumable_streams.durable._types import StreamEvent as StreamEvent
from resumable_streams.errors import BadRequestError as BadRequestError
from resumable_streams.errors import ContentTypeMismatchError as ContentTypeMismatchError
from resumable_streams.errors import DurableStreamClientError as DurableStreamClientError
from resumable_streams.errors import DurableStreamError as DurableStreamError
from resumable_streams.errors import FetchError as FetchError
from resumable_streams.errors import ProducerClosedError as ProducerClosedError
from resumable_streams.errors import RetentionGoneError as RetentionGoneError
from resumable_streams.errors import SeqConflictError as SeqConflictError
from resumable_streams.errors import SequenceGapError as SequenceGapError
from resumable_streams.errors import SSEBytesIterationError as SSEBytesIterationError
from resumable_streams.errors import SSENotSupportedError as SSENotSupportedError
from resumable_streams.errors import SSEReadAllError as SSEReadAllError
from resumable_streams.errors import StaleEpochError as StaleEpochError
from resumable_streams.errors import StreamClosedError as StreamClosedError
from resumable_streams.errors import StreamConflictError as StreamConflictError
from resumable_streams.errors import StreamConsumedError as StreamConsumedError
from resumable_streams.errors import StreamExistsError as StreamExistsError
from resumable_streams.errors import StreamNotFoundError as StreamNotFoundError

__all__ = [
    "AppendResult",
    "AsyncDurableStream",
    "AsyncStreamResponse",
    "AsyncStreamSession",
    "BadRequestError",
    "CloseResult",
    "ContentTypeMismatchError",
    "DurableStream",
    "DurableStreamClientError",
    "DurableStreamError",
    "FetchError",
    "HeadResult",
    "HeadersLike",
    "IdempotentAppendResult",
    "IdempotentProducer",
    "LiveMode",
    "Offset",
    "ParamsLike",
    "ProducerClosedError",
    "ProducerState",
    "RetentionGoneError",
    "RetryPolicy",
    "SSEBytesIterationError",
    "SSENotSupportedError",
    "SSEReadAllError",
    "SeqConflictError",
    "SequenceGapError",
    "StaleEpochError",
    "StreamClosedError",
    "StreamConflictError",
    "StreamConsumedError",
    "StreamEvent",
    "StreamExistsError",
    "StreamNotFoundError",
    "StreamResponse",
    "SyncIdempotentProducer",
    "astream",
    "stream",
]
