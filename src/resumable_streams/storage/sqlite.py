"""Embedded durable storage: stdlib sqlite3, WAL, one writer thread with group commit.

Writes (create, append, delete, TTL touches, sweeps) are queued to a single writer thread.
It takes every job that is waiting, runs each in its own ``SAVEPOINT`` inside one
``BEGIN IMMEDIATE`` transaction, commits once (``synchronous=FULL``), and only then answers
the callers - so an append is acknowledged only after it is durable, and its data, the
stream's new tail and the producer's new ``(epoch, seq)`` are committed together or not at
all. A rejected job rolls back to its savepoint without disturbing its batch-mates.

Reads run on a small pool of read-only connections in worker threads; WAL lets them proceed
while the writer commits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._protocol.durable.model import (
    ProducerState,
    Record,
    StreamMeta,
    expiry_deadline,
    is_expired,
    meta_from_json,
    meta_to_json,
)
from .._protocol.durable.offsets import Offset
from .._protocol.durable.parsing import BadRequest
from .._protocol.durable.planning import (
    AppendPlan,
    AppendRequest,
    CreatePlan,
    CreateRequest,
    Rejected,
)
from ..errors import BackendError
from .base import (
    Notifier,
    ReadResult,
    StreamStorage,
    new_stream_id,
    txn_append,
    txn_create,
    txn_delete,
    txn_live_meta,
    txn_sweep,
    visible_streams,
)

__all__ = ["SqliteStorage"]

logger = logging.getLogger("resumable_streams.storage.sqlite")

T = TypeVar("T")

_DB_NAME: Final = "durable-streams.sqlite3"
_MAX_BATCH: Final = 512
_READ_POOL: Final = 4
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    deadline REAL
);
CREATE INDEX IF NOT EXISTS streams_deadline ON streams (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS records (
    name TEXT NOT NULL,
    end_pos INTEGER NOT NULL,
    start_pos INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (name, end_pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (
    name TEXT NOT NULL,
    producer_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (name, producer_id)
) WITHOUT ROWID;
"""


_CACHE_LIMIT: Final = 100_000
# A stored meta's tail may lag its records: an append that changes nothing else in the
# metadata writes only its record (one statement instead of two). Reads take the tail from
# the records' index (an O(log n) seek), so the tail is committed exactly with the data.
_SELECT_META: Final = (
    "SELECT meta, (SELECT max(end_pos) FROM records WHERE name = ?1) FROM streams WHERE name = ?1"
)
# StreamMeta's fields other than last_access and tail (the named tuple's slices are
# compared: cheaper than building tuples of 15 attributes).
_LAST_ACCESS: Final = StreamMeta._fields.index("last_access")
assert StreamMeta._fields.index("tail") == _LAST_ACCESS + 1
_STABLE_HEAD: Final = slice(0, _LAST_ACCESS)
_STABLE_REST: Final = slice(_LAST_ACCESS + 2, None)


def _stored_meta(text: str, max_end: int | None) -> StreamMeta:
    """A stored meta with its tail brought up to its last record's end."""
    meta = meta_from_json(text)
    if max_end is not None and max_end > meta.tail.position:
        meta = meta._replace(tail=Offset(meta.tail.segment, max_end))
    return meta


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


class _SqliteTxn:
    """:class:`SyncTxn` over one connection (used inside the writer's transaction).

    The writer's instance keeps the metadata it read or wrote in ``cache`` (the writer is
    the only connection of this process that writes): an append then skips a SELECT and a
    JSON decode. :meth:`SqliteStorage._run_batch` undoes the cache entries of a job rolled
    back to its savepoint, clears the cache when a batch fails, and clears it when another
    connection (another process on the same file) has committed since the last batch.
    """

    def __init__(self, conn: sqlite3.Connection, *, cache: bool = False) -> None:
        self.conn = conn
        self.cache: dict[str, StreamMeta | None] | None = {} if cache else None
        self.touched: set[str] = set()
        self.writes = 0  # statements that changed something, for _run_batch's checks

    def get_meta(self, name: str) -> StreamMeta | None:
        cache = self.cache
        if cache is not None and name in cache:
            return cache[name]
        row = self.conn.execute(_SELECT_META, (name,)).fetchone()
        meta = _stored_meta(row[0], row[1]) if row else None
        if cache is not None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[name] = meta
        return meta

    def put_meta(self, meta: StreamMeta) -> None:
        self.writes += 1
        if self.cache is not None:
            old = self.cache.get(meta.name)
            if (
                old is not None
                and meta.ttl is None
                and meta.tail >= old.tail
                and old[_STABLE_REST] == meta[_STABLE_REST]
                and old[_STABLE_HEAD] == meta[_STABLE_HEAD]
            ):
                # Only the tail (recovered from the records, see _stored_meta) and the
                # access time (which matters only for a sliding TTL) moved: no write.
                self.touched.add(meta.name)
                self.cache[meta.name] = meta
                return
        self.conn.execute(
            "INSERT INTO streams (name, meta, deadline) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET meta = excluded.meta, deadline = excluded.deadline",
            (meta.name, meta_to_json(meta), expiry_deadline(meta)),
        )
        if self.cache is not None:
            self.touched.add(meta.name)
            self.cache[meta.name] = meta

    def drop(self, name: str) -> None:
        self.writes += 1
        for table in ("streams", "records", "producers"):
            self.conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
        if self.cache is not None:
            self.touched.add(name)
            self.cache[name] = None

    def forget(self, names: set[str] | None = None) -> None:
        """Drop cached metadata: of ``names``, or all of it."""
        if self.cache is None:
            return
        if names is None:
            self.cache.clear()
        else:
            for name in names:
                self.cache.pop(name, None)

    def get_producer(self, name: str, producer_id: str) -> ProducerState | None:
        row = self.conn.execute(
            "SELECT epoch, seq FROM producers WHERE name = ? AND producer_id = ?",
            (name, producer_id),
        ).fetchone()
        return ProducerState(row[0], row[1]) if row else None

    def put_producer(self, name: str, producer_id: str, state: ProducerState) -> None:
        self.writes += 1
        self.conn.execute(
            "INSERT INTO producers (name, producer_id, epoch, seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name, producer_id) DO UPDATE SET epoch = excluded.epoch, "
            "seq = excluded.seq",
            (name, producer_id, state.epoch, state.seq),
        )

    def add_record(self, name: str, record: Record) -> None:
        self.writes += 1
        self.conn.execute(
            "INSERT INTO records (name, end_pos, start_pos, data) VALUES (?, ?, ?, ?)",
            (name, record.end.position, record.start.position, record.data),
        )

    def copy_records(self, source: str, target: str, upto: Offset) -> None:
        self.writes += 1
        self.conn.execute(
            "INSERT INTO records (name, end_pos, start_pos, data) "
            "SELECT ?, end_pos, start_pos, data FROM records WHERE name = ? AND end_pos <= ?",
            (target, source, upto.position),
        )

    def record_starting_at(self, name: str, offset: Offset) -> Record | None:
        row = self.conn.execute(
            "SELECT start_pos, end_pos, data FROM records WHERE name = ? AND end_pos > ? "
            "ORDER BY end_pos LIMIT 1",
            (name, offset.position),
        ).fetchone()
        if row is None or row[0] != offset.position:
            return None
        return Record(Offset(0, row[0]), Offset(0, row[1]), bytes(row[2]))


@dataclass(slots=True)
class _Job:
    fn: Callable[[_SqliteTxn], Any]
    done: anyio.Event | None = None
    """Set when the outcome is there, for a waiter that was cancelled on asyncio."""
    task: Any = None
    """On trio, the waiting task, rescheduled directly (no event, no cancel scope)."""
    future: asyncio.Future[None] | None = None
    """On asyncio, what the waiting task awaits (no event, no cancel scope)."""
    result: Any = None
    error: BaseException | None = None
    finished: bool = field(default=False)
    checks_first: bool = False
    """``fn`` usually raises :class:`Rejected`/:class:`BadRequest` before it writes: it runs
    without a ``SAVEPOINT`` of its own. If it fails after writing, the batch is redone with
    a savepoint per job."""


class _Redo(Exception):
    """A job without a savepoint failed unexpectedly: redo the batch with savepoints."""


_STOP: Final = object()


class SqliteStorage(StreamStorage):
    """Durable single-node storage in ``<data_dir>/durable-streams.sqlite3``.

    Use :meth:`open` (or :func:`open_storage` with ``"sqlite"``); it runs the writer thread
    for as long as the context is open.
    """

    def __init__(self, path: Path) -> None:
        self.notifier = Notifier()
        self.path = path
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(_READ_POOL)
        self._running = False
        self._call_soon: Callable[[Callable[[], object]], object] = _no_loop
        self._trio: Any = None  # trio.lowlevel when running on trio
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None  # when running on asyncio
        self._data_version: int | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, data_dir: str | Path) -> AsyncIterator[SqliteStorage]:
        """Open (creating if needed) the database in ``data_dir``; own the writer thread."""
        directory = Path(data_dir)
        storage = cls(directory / _DB_NAME)
        conn = await anyio.to_thread.run_sync(storage._init_db)
        storage._call_soon = _loop_call_soon()
        storage._trio = _trio_lowlevel()
        if storage._trio is None:
            storage._asyncio_loop = asyncio.get_running_loop()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(storage._run_writer, conn)
                storage._running = True
                try:
                    yield storage
                finally:
                    storage._running = False
                    storage._jobs.put(_STOP)
        finally:
            conn.close()
            for reader in storage._all_readers:
                reader.close()

    def _init_db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path, readonly=False)
        conn.executescript(_SCHEMA)
        return conn

    # ------------------------------------------------------------------ writer

    async def _run_writer(self, conn: sqlite3.Connection) -> None:
        await anyio.to_thread.run_sync(self._writer_loop, conn)

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        txn = _SqliteTxn(conn, cache=True)
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch: list[_Job] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._run_batch(conn, txn, batch)
            # Hand the outcomes to the event loop without waiting for it: the next batch's
            # commit overlaps with waking this batch's callers.
            self._call_soon(partial(_deliver, batch))
            if stop:
                return

    def _run_batch(
        self, conn: sqlite3.Connection, txn: _SqliteTxn, batch: list[_Job], *, safe: bool = False
    ) -> None:
        """Run ``batch`` in one transaction, each job in a ``SAVEPOINT`` unless it checks first.

        Appends (``checks_first``) skip the two statements of a savepoint: they reject before
        writing. Should one fail in another way (an SQL error between its writes), the whole
        transaction is rolled back and the batch redone with a savepoint per job (``safe``).
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection committed: trust nothing
                self._data_version = version
                txn.forget()
            for job in batch:
                txn.touched.clear()
                if job.checks_first and not safe:
                    writes = txn.writes
                    try:
                        job.result = job.fn(txn)
                    except (Rejected, BadRequest) as exc:
                        if txn.writes != writes:  # it wrote (an expiry), then refused
                            raise _Redo from exc
                        job.error = exc
                    except Exception as exc:
                        raise _Redo from exc
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(txn)
                except Exception as exc:  # a rejection: undo this job only
                    conn.execute("ROLLBACK TO job")
                    txn.forget(txn.touched)
                    job.error = exc
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except _Redo:
            txn.forget()
            conn.execute("ROLLBACK")
            for job in batch:
                job.result = job.error = None
            self._run_batch(conn, txn, batch, safe=True)
        except sqlite3.Error as exc:
            logger.exception("sqlite commit failed")
            txn.forget()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.result = None
                job.error = BackendError(f"sqlite write failed: {exc}")
                job.error.__cause__ = exc

    async def _write(self, fn: Callable[[_SqliteTxn], T], *, checks_first: bool = False) -> T:
        if not self._running:
            raise BackendError("sqlite storage is not open")
        trio = self._trio
        if trio is not None:
            # The cheapest wait trio has: park this task until _deliver reschedules it.
            # Cancellation cannot abort the wait (the write happens anyway: its outcome is
            # awaited, as a shielded wait would).
            job = _Job(fn, task=trio.current_task(), checks_first=checks_first)
            self._jobs.put(job)
            await trio.wait_task_rescheduled(_no_abort)
        else:
            assert self._asyncio_loop is not None
            job = _Job(fn, checks_first=checks_first)
            job.future = self._asyncio_loop.create_future()
            self._jobs.put(job)
            try:
                await job.future
            except asyncio.CancelledError:
                # The write happens anyway: wait for its outcome, shielded (a cancel scope
                # costs more than the plain future, so only when it is needed), then let
                # the cancellation through.
                if not job.finished:
                    job.done = anyio.Event()
                    with anyio.CancelScope(shield=True):
                        await job.done.wait()
                raise
        if job.error is not None:
            raise job.error
        result: T = job.result
        return result

    def _write_nowait(self, fn: Callable[[_SqliteTxn], object]) -> None:
        if self._running:
            self._jobs.put(_Job(fn))

    # ------------------------------------------------------------------ readers

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = _connect(self.path, readonly=True)
            with self._reader_lock:
                self._all_readers.append(conn)
        try:
            yield conn
        finally:
            self._readers.put(conn)

    async def _read_sync(self, fn: Callable[[_SqliteTxn], T]) -> T:
        def run() -> T:
            with self._reader() as conn:
                conn.execute("BEGIN")
                try:
                    return fn(_SqliteTxn(conn))
                finally:
                    conn.execute("COMMIT")

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    # ------------------------------------------------------------------ interface

    async def create(self, name: str, req: CreateRequest, *, now: float) -> CreatePlan:
        """Create a stream (see :meth:`StreamStorage.create`); durable on return."""
        new_id = new_stream_id()
        plan = await self._write(lambda txn: txn_create(txn, name, req, now=now, new_id=new_id))
        self.notifier.notify(name)
        return plan

    async def append(self, name: str, req: AppendRequest, *, now: float) -> AppendPlan:
        """Append and/or close (see :meth:`StreamStorage.append`); durable on return."""
        plan = await self._write(lambda txn: txn_append(txn, name, req, now=now), checks_first=True)
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

        def run(txn: _SqliteTxn) -> ReadResult:
            meta = _require_readonly(txn, name, now)
            if start == "now":
                return ReadResult(meta, ())
            records: list[Record] = []
            total = 0
            cursor = txn.conn.execute(
                "SELECT start_pos, end_pos, data FROM records WHERE name = ? AND end_pos > ? "
                "ORDER BY end_pos",
                (name, start.position),
            )
            for start_pos, end_pos, data in cursor:
                if records and total + len(data) > max_bytes:
                    break
                records.append(Record(Offset(0, start_pos), Offset(0, end_pos), bytes(data)))
                total += len(data)
            cursor.close()
            return ReadResult(meta, records)

        result = await self._read_sync(run)
        if touch and result.meta.ttl is not None:
            self._write_nowait(lambda txn: _touch(txn, name, now))
        return result

    async def head(self, name: str, *, now: float) -> StreamMeta:
        """Metadata without touching the TTL."""
        return await self._read_sync(lambda txn: _require_readonly(txn, name, now))

    async def delete(self, name: str, *, now: float) -> None:
        """Delete, soft while forks reference the stream; durable on return."""
        await self._write(lambda txn: txn_delete(txn, name, now=now))
        self.notifier.notify(name)

    async def sweep(self, *, now: float) -> int:
        """Remove expired streams (found through the indexed deadline column)."""

        def run(txn: _SqliteTxn) -> list[str]:
            rows = txn.conn.execute(
                "SELECT name FROM streams WHERE deadline IS NOT NULL AND deadline <= ?", (now,)
            ).fetchall()
            return txn_sweep(txn, [row[0] for row in rows], now=now)

        removed = await self._write(run)
        for name in removed:
            self.notifier.notify(name)
        return len(removed)

    async def list_streams(self, *, now: float, limit: int | None = None) -> list[StreamMeta]:
        """The live streams' metadata, sorted by name (see :meth:`StreamStorage.list_streams`)."""

        def run(txn: _SqliteTxn) -> list[StreamMeta]:
            rows = txn.conn.execute(
                "SELECT meta, (SELECT max(end_pos) FROM records WHERE records.name = "
                "streams.name) FROM streams ORDER BY name"
            )
            return [_stored_meta(row[0], row[1]) for row in rows]

        return visible_streams(await self._read_sync(run), now=now, limit=limit)


def _no_loop(_fn: Callable[[], object]) -> None:
    raise RuntimeError("sqlite storage is not open")


_trio: Any = None  # trio.lowlevel, once a storage has been opened on trio


def _trio_lowlevel() -> Any:
    """``trio.lowlevel`` when the current event loop is trio's, else None."""
    global _trio
    native: Any = anyio.lowlevel.current_token().native_token
    if getattr(native, "run_sync_soon", None) is None:
        return None
    import trio.lowlevel

    _trio = trio.lowlevel
    return _trio


def _no_abort(_raise_cancel: object) -> object:
    return _trio.Abort.FAILED


def _trio_reschedule(task: Any) -> None:
    _trio.reschedule(task)


def _loop_call_soon() -> Callable[[Callable[[], object]], object]:
    """A thread-safe, non-blocking "run this in the current event loop soon"."""
    native: Any = anyio.lowlevel.current_token().native_token
    run_sync_soon = getattr(native, "run_sync_soon", None)  # trio's TrioToken
    if run_sync_soon is not None:
        return run_sync_soon  # type: ignore[no-any-return]
    return native.call_soon_threadsafe  # type: ignore[no-any-return]  # an asyncio loop


def _deliver(batch: list[_Job]) -> None:
    for job in batch:
        job.finished = True
        if job.task is not None:
            _trio_reschedule(job.task)
            continue
        if job.future is not None and not job.future.done():  # cancelled: done instead
            job.future.set_result(None)
        if job.done is not None:
            job.done.set()


def _require_readonly(txn: _SqliteTxn, name: str, now: float) -> StreamMeta:
    meta = txn.get_meta(name)
    if meta is None:
        raise Rejected(404, "stream not found")
    if meta.soft_deleted:
        raise Rejected(410, "the stream has been deleted")
    if is_expired(meta, now):
        if meta.fork_count > 0:
            raise Rejected(410, "the stream has expired")
        raise Rejected(404, "stream not found")
    return meta


def _touch(txn: _SqliteTxn, name: str, now: float) -> None:
    meta = txn_live_meta(txn, name, now)
    if meta is not None and not meta.soft_deleted and meta.last_access < now:
        txn.put_meta(meta._replace(last_access=now))
