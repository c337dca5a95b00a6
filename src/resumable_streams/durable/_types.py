"""Result and event types of the Durable Streams client (names as in the official client)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from resumable_streams._protocol.durable.client import LiveMode, ProducerState, RetryPolicy

__all__ = [
    "AppendResult",
    "CloseResult",
    "HeadResult",
    "HeadersLike",
    "IdempotentAppendResult",
    "LiveMode",
    "Offset",
    "ParamsLike",
    "ProducerState",
    "RetryPolicy",
    "StreamEvent",
]

T = TypeVar("T")

Offset: TypeAlias = str
"""An opaque, lexicographically sortable stream position (``"-1"`` = start, ``"now"`` = tail)."""

HeadersLike: TypeAlias = "dict[str, str | Callable[[], str]]"
"""Request headers; a callable value is called before every request (token refresh)."""

ParamsLike: TypeAlias = "dict[str, str | Callable[[], str] | None]"
"""Query parameters; callables are called per request, ``None`` values are left out."""

OnError: TypeAlias = "Callable[[Exception], Any]"
"""``on_error(error)`` for reads: return ``{"headers": ..., "params": ...}`` to retry, or
``None`` to let the error propagate. May be async in the async client."""


@dataclass(frozen=True, slots=True)
class StreamEvent(Generic[T]):
    """One batch read from a stream, with the stream's position after it.

    ``data`` is ``None`` for a state-only event (the first up-to-date signal with no new data,
    or the end of a closed stream). Resume later with ``offset=event.next_offset``.
    """

    data: T | None
    next_offset: Offset
    up_to_date: bool
    cursor: str | None = None
    stream_closed: bool = False


@dataclass(frozen=True, slots=True)
class HeadResult:
    """Metadata of a stream (``HEAD``), including TTL and expiry when configured."""

    exists: Literal[True]
    content_type: str | None = None
    offset: Offset | None = None
    etag: str | None = None
    cache_control: str | None = None
    stream_closed: bool = False
    ttl_seconds: int | None = None
    expires_at: str | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Result of an append: the stream's new tail offset."""

    next_offset: Offset


@dataclass(frozen=True, slots=True)
class CloseResult:
    """Result of closing a stream: its final offset."""

    final_offset: Offset


@dataclass(frozen=True, slots=True)
class IdempotentAppendResult:
    """Result of :meth:`IdempotentProducer.append`.

    ``offset`` is the tail after its batch (``None`` when the server only reported a
    duplicate); ``duplicate`` says whether the server had already stored it.
    """

    offset: Offset | None
    duplicate: bool
