"""In-memory storage: the reference engine. Nothing survives the process.

Atomicity comes from the event loop: every operation runs its whole plan-and-apply step
synchronously, without a checkpoint, so two appends (or a producer's retries) can never
interleave.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

from .._protocol.durable.model import ProducerState, Record, StreamMeta
from .._protocol.durable.offsets import Offset
from .._protocol.durable.planning import AppendPlan, AppendRequest, CreatePlan, CreateRequest
from .base import (
    Notifier,
    ReadResult,
    StreamStorage,
    new_stream_id,
    txn_append,
    txn_create,
    txn_delete,
    txn_require,
    txn_sweep,
    visible_streams,
)

__all__ = ["MemoryStorage"]


@dataclass(slots=True)
class _Stream:
    meta: StreamMeta
    records: list[Record] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    producers: dict[str, ProducerState] = field(default_factory=dict)


def slice_records(
    records: list[Record], ends: list[int], start: Offset, max_bytes: int
) -> list[Record]:
    """Whole records ending after ``start``, at least one, up to ``max_bytes`` in total."""
    index = bisect.bisect_right(ends, start.position)
    out: list[Record] = []
    total = 0
    for record in records[index:]:
        if out and total + len(record.data) > max_bytes:
            break
        out.append(record)
        total += len(record.data)
    return out


class _MemoryTxn:
    def __init__(self, streams: dict[str, _Stream]) -> None:
        self.streams = streams

    def get_meta(self, name: str) -> StreamMeta | None:
        stream = self.streams.get(name)
        return stream.meta if stream is not None else None

    def put_meta(self, meta: StreamMeta) -> None:
        stream = self.streams.get(meta.name)
        if stream is None:
            self.streams[meta.name] = _Stream(meta)
        else:
            stream.meta = meta

    def drop(self, name: str) -> None:
        self.streams.pop(name, None)

    def _stream(self, name: str) -> _Stream:
        stream = self.streams.get(name)
        if stream is None:  # records are added before the meta of a new stream
            stream = self.streams[name] = _Stream(StreamMeta(name, "", "", 0.0, 0.0, Offset(0, 0)))
        return stream

    def get_producer(self, name: str, producer_id: str) -> ProducerState | None:
        stream = self.streams.get(name)
        return stream.producers.get(producer_id) if stream is not None else None

    def put_producer(self, name: str, producer_id: str, state: ProducerState) -> None:
        self._stream(name).producers[producer_id] = state

    def add_record(self, name: str, record: Record) -> None:
        stream = self._stream(name)
        stream.records.append(record)
        stream.ends.append(record.end.position)

    def copy_records(self, source: str, target: str, upto: Offset) -> None:
        src = self.streams[source]
        count = bisect.bisect_right(src.ends, upto.position)
        dst = self._stream(target)
        dst.records[:0] = src.records[:count]
        dst.ends[:0] = src.ends[:count]

    def record_starting_at(self, name: str, offset: Offset) -> Record | None:
        stream = self.streams.get(name)
        if stream is None:
            return None
        index = bisect.bisect_right(stream.ends, offset.position)
        if index < len(stream.records) and stream.records[index].start == offset:
            return stream.records[index]
        return None


class MemoryStorage(StreamStorage):
    """Keeps every stream in a dict. Construct it directly; it needs no opening."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self._streams: dict[str, _Stream] = {}
        self._txn = _MemoryTxn(self._streams)

    async def create(self, name: str, req: CreateRequest, *, now: float) -> CreatePlan:
        """Create a stream (see :meth:`StreamStorage.create`)."""
        plan = txn_create(self._txn, name, req, now=now, new_id=new_stream_id())
        self.notifier.notify(name)
        return plan

    async def append(self, name: str, req: AppendRequest, *, now: float) -> AppendPlan:
        """Append and/or close (see :meth:`StreamStorage.append`)."""
        plan = txn_append(self._txn, name, req, now=now)
        if plan.appended:
            self.notifier.notify(name)
        return plan

    async def read(
        self,
        name: str,
        start: Offset | Literal["now"],
        *,
        now: float,
        max_bytes: int,
        touch: bool = True,
    ) -> ReadResult:
        """Read whole appends (see :meth:`StreamStorage.read`)."""
        meta = txn_require(self._txn, name, now)
        if touch and meta.ttl is not None and meta.last_access < now:
            # only a sliding TTL needs the access time (as in the sqlite engine)
            meta = meta._replace(last_access=now)
            self._txn.put_meta(meta)
        if start == "now":
            return ReadResult(meta, ())
        stream = self._streams[name]
        return ReadResult(meta, slice_records(stream.records, stream.ends, start, max_bytes))

    async def head(self, name: str, *, now: float) -> StreamMeta:
        """Metadata without touching the TTL."""
        return txn_require(self._txn, name, now)

    async def delete(self, name: str, *, now: float) -> None:
        """Delete, soft while forks reference the stream."""
        txn_delete(self._txn, name, now=now)
        self.notifier.notify(name)

    async def sweep(self, *, now: float) -> int:
        """Remove expired streams."""
        removed = txn_sweep(self._txn, list(self._streams), now=now)
        for name in removed:
            self.notifier.notify(name)
        return len(removed)

    async def list_streams(self, *, now: float, limit: int | None = None) -> list[StreamMeta]:
        """The live streams' metadata, sorted by name (see :meth:`StreamStorage.list_streams`)."""
        return visible_streams((s.meta for s in self._streams.values()), now=now, limit=limit)
