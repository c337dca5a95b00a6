"""The storage interface, live-read wakeups, and the engine-independent operations.

Every engine implements :class:`StreamStorage`. Engines whose atomic section is synchronous
(memory: the event loop; sqlite: a transaction on the writer thread) implement the tiny
:class:`SyncTxn` and reuse the ``txn_*`` functions here, which apply the pure planner of
:mod:`resumable_streams._protocol.durable.planning` - so the protocol's rules live once.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio

from .._protocol.durable.model import ProducerState, Record, StreamMeta, is_expired
from .._protocol.durable.offsets import Offset
from .._protocol.durable.planning import (
    AppendPlan,
    AppendRequest,
    CreatePlan,
    CreateRequest,
    Rejected,
    cascade_delete,
    plan_append,
    plan_create,
    plan_delete,
)

__all__ = [
    "Notifier",
    "ReadResult",
    "StreamStorage",
    "SyncTxn",
    "Waker",
    "txn_append",
    "txn_create",
    "txn_delete",
    "txn_live_meta",
    "txn_sweep",
    "visible_streams",
]


class Notifier:
    """Per-stream wakeups for live readers: no polling, no task per waiter.

    A reader takes :meth:`event` *before* checking for data, then waits on it; a writer
    calls :meth:`notify` after its data is visible. Events are created lazily and dropped
    when fired, so idle streams cost nothing.
    """

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}
        self._wakers: dict[str, set[Waker]] = {}

    def subscribe(self, name: str, waker: Waker) -> None:
        """Wake ``waker`` on every change to stream ``name`` until :meth:`unsubscribe`.

        For a reader that waits again and again (an SSE response): one registration for its
        whole life instead of an event per wait.
        """
        self._wakers.setdefault(name, set()).add(waker)

    def unsubscribe(self, name: str, waker: Waker) -> None:
        """Undo :meth:`subscribe`."""
        wakers = self._wakers.get(name)
        if wakers is not None:
            wakers.discard(waker)
            if not wakers:
                del self._wakers[name]

    def event(self, name: str) -> anyio.Event:
        """The event that the next change to stream ``name`` will set."""
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = anyio.Event()
        return event

    def waiting(self, name: str) -> int:
        """How many readers wait on stream ``name`` right now."""
        event = self._events.get(name)
        waiting = 0 if event is None else event.statistics().tasks_waiting
        return waiting + len(self._wakers.get(name, ()))

    def notify(self, name: str) -> None:
        """Wake every reader waiting on stream ``name``."""
        event = self._events.pop(name, None)
        if event is not None:
            event.set()
        wakers = self._wakers.get(name)
        if wakers:
            for waker in wakers:
                waker.wake()

    def notify_all(self) -> None:
        """Wake every waiting reader of every stream (e.g. after wakeups may have been lost)."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()
        for wakers in self._wakers.values():
            for waker in wakers:
                waker.wake()


class Waker:
    """A reader's standing wake-up (see :meth:`Notifier.subscribe`).

    :meth:`wake` marks it woken and releases a pending :meth:`wait`; a wait after a wake
    returns at once. The reader clears :attr:`pending` just before it reads, so a change
    made visible after that read always wakes the next wait (no lost wake-ups).
    """

    __slots__ = ("_event", "pending")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self.pending = False

    def wake(self) -> None:
        """Mark woken; release the waiting reader, if any."""
        self.pending = True
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self) -> None:
        """Return once woken since :attr:`pending` was last cleared."""
        if not self.pending:
            event = self._event = anyio.Event()
            await event.wait()
        self.pending = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A catch-up read: the stream's state and the whole appends from the start offset."""

    meta: StreamMeta
    records: Sequence[Record]

    @property
    def next_offset(self) -> Offset:
        """Where the next read continues."""
        return self.records[-1].end if self.records else self.meta.tail

    @property
    def up_to_date(self) -> bool:
        """Whether this read reached the tail."""
        return self.next_offset >= self.meta.tail


class StreamStorage(abc.ABC):
    """What the server needs from an engine. All methods raise :class:`Rejected` for 4xx.

    ``now`` is Unix time, passed in so TTL logic is testable. Reads and writes of a stream
    reset its sliding TTL; :meth:`head` does not.
    """

    notifier: Notifier

    @abc.abstractmethod
    async def create(self, name: str, req: CreateRequest, *, now: float) -> CreatePlan:
        """Create (or idempotently re-create) a stream; durable when this returns."""

    @abc.abstractmethod
    async def append(self, name: str, req: AppendRequest, *, now: float) -> AppendPlan:
        """Append and/or close, with producer and ``Stream-Seq`` checks, atomically."""

    @abc.abstractmethod
    async def read(
        self,
        name: str,
        start: Offset | Literal["now"],
        *,
        now: float,
        max_bytes: int,
        touch: bool = True,
    ) -> ReadResult:
        """Whole appends ending after ``start`` (at least one if any), up to ``max_bytes``."""

    @abc.abstractmethod
    async def head(self, name: str, *, now: float) -> StreamMeta:
        """The stream's metadata (404/410 as :class:`Rejected`); does not touch the TTL."""

    @abc.abstractmethod
    async def delete(self, name: str, *, now: float) -> None:
        """Delete a stream: soft while forks still reference it, cascading otherwise."""

    @abc.abstractmethod
    async def sweep(self, *, now: float) -> int:
        """Remove expired streams; return how many were removed."""

    async def list_streams(self, *, now: float, limit: int | None = None) -> list[StreamMeta]:
        """The live streams' metadata, sorted by name, at most ``limit`` of them.

        Not part of the protocol (the inspector page uses it); an engine that cannot enumerate
        its streams raises :class:`NotImplementedError`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its streams")


def new_stream_id() -> str:
    """A fresh, unique incarnation id for a created stream."""
    return uuid.uuid4().hex


class SyncTxn(Protocol):
    """Synchronous primitives an engine offers inside its atomic section."""

    def get_meta(self, name: str) -> StreamMeta | None:
        """The stored metadata of ``name`` (expired or not), or ``None``."""
        ...

    def put_meta(self, meta: StreamMeta) -> None:
        """Insert or replace the metadata of ``meta.name``."""
        ...

    def drop(self, name: str) -> None:
        """Remove a stream with its records and producer states."""
        ...

    def get_producer(self, name: str, producer_id: str) -> ProducerState | None:
        """The producer's state on this stream, if any."""
        ...

    def put_producer(self, name: str, producer_id: str, state: ProducerState) -> None:
        """Store the producer's state (in the same atomic step as its data)."""
        ...

    def add_record(self, name: str, record: Record) -> None:
        """Append one record at the stream's end."""
        ...

    def copy_records(self, source: str, target: str, upto: Offset) -> None:
        """Copy ``source``'s records ending at or before ``upto`` to the new ``target``."""
        ...

    def record_starting_at(self, name: str, offset: Offset) -> Record | None:
        """The record that begins exactly at ``offset``, if any."""
        ...


def _expire(txn: SyncTxn, meta: StreamMeta) -> None:
    if meta.fork_count > 0:
        if not meta.soft_deleted:
            txn.put_meta(meta._replace(soft_deleted=True))
        return
    drop, rewrite = cascade_delete(meta, txn.get_meta)
    for name in drop:
        txn.drop(name)
    for source in rewrite:
        txn.put_meta(source)


def txn_live_meta(txn: SyncTxn, name: str, now: float) -> StreamMeta | None:
    """The stream's metadata, treating (and cleaning up) an expired stream as absent."""
    meta = txn.get_meta(name)
    if (
        meta is not None
        and (meta.ttl is not None or meta.expires_at_ts is not None)  # most never expire
        and not meta.soft_deleted
        and is_expired(meta, now)
    ):
        _expire(txn, meta)
        return None
    return meta


def txn_require(txn: SyncTxn, name: str, now: float) -> StreamMeta:
    """The live stream's metadata, or :class:`Rejected` 404 / 410."""
    meta = txn_live_meta(txn, name, now)
    if meta is None:
        raise Rejected(404, "stream not found")
    if meta.soft_deleted:
        raise Rejected(410, "the stream has been deleted")
    return meta


def txn_create(
    txn: SyncTxn, name: str, req: CreateRequest, *, now: float, new_id: str
) -> CreatePlan:
    """Apply :func:`plan_create` and write its result."""
    existing = txn_live_meta(txn, name, now)
    source: StreamMeta | None = None
    anchor: Record | None = None
    if existing is None and req.forked_from is not None:
        source = txn_live_meta(txn, req.forked_from, now)
        if source is not None and req.fork_sub_offset > 0 and req.fork_offset is not None:
            anchor = txn.record_starting_at(req.forked_from, req.fork_offset)
    plan = plan_create(
        existing, req, name=name, now=now, new_id=new_id, source=source, anchor=anchor
    )
    if not plan.created:
        return plan
    if existing is None and txn.get_meta(name) is not None:
        txn.drop(name)  # leftovers of an expired incarnation
    if plan.copy_from is not None and plan.copy_upto is not None and source is not None:
        txn.copy_records(plan.copy_from, name, plan.copy_upto)
        txn.put_meta(source._replace(fork_count=source.fork_count + 1))
    for record in plan.records:
        txn.add_record(name, record)
    txn.put_meta(plan.meta)
    return plan


def txn_append(txn: SyncTxn, name: str, req: AppendRequest, *, now: float) -> AppendPlan:
    """Apply :func:`plan_append` (producer check, data, producer state) in one step."""
    meta = txn_require(txn, name, now)
    state = None
    if req.producer is not None:
        state = txn.get_producer(name, req.producer.producer_id)
    plan = plan_append(meta, state, req, now=now)
    if plan.record is not None:
        txn.add_record(name, plan.record)
    if plan.producer_state is not None and req.producer is not None:
        txn.put_producer(name, req.producer.producer_id, plan.producer_state)
    if plan.meta is not None:
        txn.put_meta(plan.meta)
    return plan


def txn_delete(txn: SyncTxn, name: str, *, now: float) -> None:
    """Apply :func:`plan_delete`: soft-delete or cascade."""
    meta = txn_live_meta(txn, name, now)
    if meta is None:
        raise Rejected(404, "stream not found")
    if plan_delete(meta):
        txn.put_meta(meta._replace(soft_deleted=True))
        return
    drop, rewrite = cascade_delete(meta, txn.get_meta)
    for dropped in drop:
        txn.drop(dropped)
    for source in rewrite:
        txn.put_meta(source)


def txn_sweep(txn: SyncTxn, names: Sequence[str], *, now: float) -> list[str]:
    """Expire every stream in ``names`` whose deadline has passed; return the expired names.

    The engine wakes their live readers (:meth:`Notifier.notify`) once this is committed, so
    a reader waiting on an expired stream learns of it at once, as after a DELETE.
    """
    removed: list[str] = []
    for name in names:
        meta = txn.get_meta(name)
        if meta is not None and not meta.soft_deleted and is_expired(meta, now):
            _expire(txn, meta)
            removed.append(name)
    return removed


def visible_streams(
    metas: Iterable[StreamMeta], *, now: float, limit: int | None = None
) -> list[StreamMeta]:
    """The ``metas`` not soft-deleted nor expired at ``now``, sorted by name, up to ``limit``."""
    live = sorted(
        (m for m in metas if not m.soft_deleted and not is_expired(m, now)), key=lambda m: m.name
    )
    return live if limit is None else live[:limit]
