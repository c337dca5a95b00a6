"""Redis storage: several server processes share their streams through one Redis (or Cluster).

Layout (``P`` is the key prefix, default ``ds``; ``T`` is the stream name with ``%``, ``{``
and ``}`` percent-escaped, so that ``{T}`` is the Redis Cluster hash tag of the stream and
every key of one stream lives in one slot)::

    P:{T}:m   hash    m = the metadata (JSON), v = version token, a = last access (sliding
                      TTL), t = TTL seconds (if any), f = fork count, i = stream id
                      (incarnation), s = soft-deleted ("1"/"0"); a and f override the JSON
    P:{T}:d   stream  one entry per append: id ``<end position>-0``, fields s = start, d = data
    P:{T}:p   hash    producer id -> ``<epoch>:<seq>`` (idempotent producers)
    P:expiry  zset    stream name -> earliest possible expiry (a hint for the sweeper only)
    P:notify  channel a message with the stream's name after every change readers must see

Writes are optimistic transactions that reuse the engine-independent ``txn_*`` operations of
:mod:`.base` (so the protocol's rules exist once, in the pure planner): the stream's state is
loaded by a small Lua script, the operation runs in Python against that snapshot with its
writes buffered, and one Lua commit script checks that every stream it read still has the
version it was read at and applies all writes - data, metadata and producer state - at once,
then publishes the wakeup. A conflict re-runs the operation on fresh state.

Live readers are woken through one pub/sub subscription per process (``P:notify``), fanned
out to the local :class:`~.base.Notifier`: no polling, no task per waiting reader. After the
subscription was lost and re-established every waiting reader is woken once to re-check.

A stream that an operation changes only by its fork count (a fork's source gains a fork;
a source loses one, and is collected if it was soft-deleted and that was its last) is not
version-checked: the commit script applies the change as an increment, checking only that it
is the same incarnation. Forking a stream while it is being appended to therefore does not
conflict with those appends.

Redis Cluster: use a ``redis+cluster://host:port`` (or ``rediss+cluster://``) URL naming any
node. Operations on one stream are atomic as above. An operation that spans streams (creating
or deleting a fork) cannot be one script across slots: it is committed stream by stream - the
requested stream first, with its version check, then the other stream's fork-count change. A
crash (or the source being deleted and re-created) between the two steps leaves that
source's fork count off by one; data is never lost or duplicated. On a single Redis it is one
atomic script.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import anyio.abc
import coredis
import coredis.exceptions
from coredis.connection import TCPLocation
from coredis.tokens import PureToken

from .._core.groups import unwrap_single
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
from .._protocol.durable.planning import (
    AppendPlan,
    AppendRequest,
    CreatePlan,
    CreateRequest,
    Rejected,
)
from ..errors import BackendError, BackendUnavailableError, ConfigurationError
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

__all__ = ["RedisStorage", "redact_url"]

logger = logging.getLogger("resumable_streams.storage.redis")

T = TypeVar("T")

_MAX_ATTEMPTS: Final = 100
_SWEEP_BATCH: Final = 500
_CACHE_SIZE: Final = 4096
_CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")

# Load one stream's snapshot: metadata, version, last access, the asked-for producer states
# and the records starting at the asked-for positions.
# KEYS: meta, data, producers. ARGV: n producer ids, the ids, then anchor positions.
_LOAD_LUA: Final = """
local meta = redis.call('HMGET', KEYS[1], 'm', 'v', 'a', 'f')
local out = {meta[1], meta[2], meta[3], meta[4]}
local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i])
end
for i = n + 2, #ARGV do
  local pos = ARGV[i]
  local e = redis.call('XRANGE', KEYS[2], '(' .. pos .. '-0', '+', 'COUNT', 1)[1]
  if e and e[2][2] == pos then
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][4]
  else
    out[#out + 1] = false
    out[#out + 1] = false
  end
end
return out
"""

# Read: metadata and whole records ending after a position, up to a byte budget (at least
# one record), sliding the TTL of a stream that has one and has not expired.
# KEYS: meta, data. ARGV: first id ('' = metadata only), byte budget, now ('' = no touch).
_READ_LUA: Final = """
local meta = redis.call('HMGET', KEYS[1], 'm', 'a', 't', 'f')
if not meta[1] then return {} end
local out = {meta[1], meta[2], meta[4]}
local now = ARGV[3]
if now ~= '' and meta[3] then
  local a = tonumber(meta[2])
  local t = tonumber(now)
  if t > a and t < a + tonumber(meta[3]) then
    redis.call('HSET', KEYS[1], 'a', now)
    out[2] = now
  end
end
if ARGV[1] == '' then return out end
local budget = tonumber(ARGV[2])
local total = 0
local from = ARGV[1]
while true do
  local entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 64)
  for _, e in ipairs(entries) do
    local data = e[2][4]
    if #out > 3 and total + #data > budget then return out end
    out[#out + 1] = e[2][2]
    out[#out + 1] = e[1]
    out[#out + 1] = data
    total = total + #data
    from = '(' .. e[1]
  end
  if #entries < 64 then return out end
end
"""

# Commit: check every stream, then apply the buffered writes. Returns 1, or 0 on a conflict
# (nothing written).
# KEYS: meta, data, producers per stream. ARGV: n, then per stream what to check: its version
# ('' = absent), '#<stream id>' (the same incarnation, for fork-count changes) or '*'
# (nothing); then the new version, the notify channel, then ops:
# M i json last_access ttl fork_count stream_id soft_deleted | D i | R i start end data |
# P i producer value | F i delta stream_id (fork count += delta in that incarnation; a
# soft-deleted stream whose count reaches 0 is collected) | N i name.
_COMMIT_LUA: Final = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local want = ARGV[1 + i]
  if want ~= '*' then
    local mk = KEYS[3 * i - 2]
    if string.sub(want, 1, 1) == '#' then
      if redis.call('HGET', mk, 'i') ~= string.sub(want, 2) then return 0 end
    elseif (redis.call('HGET', mk, 'v') or '') ~= want then
      return 0
    end
  end
end
local token = ARGV[n + 2]
local channel = ARGV[n + 3]
local p = n + 4
while p <= #ARGV do
  local op = ARGV[p]
  local i = tonumber(ARGV[p + 1])
  local mk = KEYS[3 * i - 2]
  if op == 'M' then
    local a = redis.call('HGET', mk, 'a')
    redis.call('HSET', mk, 'm', ARGV[p + 2], 'v', token, 'f', ARGV[p + 5], 'i', ARGV[p + 6],
      's', ARGV[p + 7])
    if (not a) or tonumber(a) < tonumber(ARGV[p + 3]) then
      redis.call('HSET', mk, 'a', ARGV[p + 3])
    end
    if ARGV[p + 4] == '' then
      redis.call('HDEL', mk, 't')
    else
      redis.call('HSET', mk, 't', ARGV[p + 4])
    end
    p = p + 8
  elseif op == 'D' then
    redis.call('DEL', mk, KEYS[3 * i - 1], KEYS[3 * i])
    p = p + 2
  elseif op == 'R' then
    redis.call('XADD', KEYS[3 * i - 1], ARGV[p + 3] .. '-0', 's', ARGV[p + 2], 'd', ARGV[p + 4])
    p = p + 5
  elseif op == 'P' then
    redis.call('HSET', KEYS[3 * i], ARGV[p + 2], ARGV[p + 3])
    p = p + 4
  elseif op == 'F' then
    if redis.call('HGET', mk, 'i') == ARGV[p + 3] then
      local f = redis.call('HINCRBY', mk, 'f', ARGV[p + 2])
      if f < 0 then
        f = 0
        redis.call('HSET', mk, 'f', 0)
      end
      redis.call('HSET', mk, 'v', token)
      if f == 0 and redis.call('HGET', mk, 's') == '1' then
        redis.call('DEL', mk, KEYS[3 * i - 1], KEYS[3 * i])
      end
    end
    p = p + 4
  elseif op == 'N' then
    redis.call('PUBLISH', channel, ARGV[p + 2])
    p = p + 3
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
return 1
"""


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def _cluster_client(url: str, shown: str) -> Any:
    """A cluster client for ``redis+cluster://[user:password@]host:port[,host:port...]``."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    nodes: list[TCPLocation] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"bad cluster node {item!r} in Redis URL {shown!r}")
        nodes.append(TCPLocation(host.strip("[]"), int(port)))
    return coredis.RedisCluster(
        startup_nodes=nodes,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme.lower() == "rediss+cluster",
        decode_responses=False,
        connect_timeout=5,
        stream_timeout=30,
    )


def _close_cluster_layout(client: Any) -> None:
    """Close the error stream coredis 6.9's cluster layout never closes (a ResourceWarning)."""
    layout = getattr(getattr(client, "connection_pool", None), "cluster_layout", None)
    for stream in getattr(layout, "_error_stream", ()):
        stream.close()


def _hash_tag(name: str) -> str:
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _encode_producer(state: ProducerState) -> bytes:
    return f"{state.epoch}:{state.seq}".encode()


def _decode_producer(raw: bytes) -> ProducerState:
    epoch, _, seq = raw.partition(b":")
    return ProducerState(int(epoch), int(seq))


def _decode_meta(raw: bytes, last_access: bytes | None, forks: bytes | None) -> StreamMeta:
    meta = meta_from_json(raw.decode())
    return meta._replace(
        last_access=float(last_access) if last_access is not None else meta.last_access,
        fork_count=int(forks) if forks is not None else meta.fork_count,
    )


def _record(start: bytes, entry_id: bytes, data: bytes) -> Record:
    end = int(entry_id.partition(b"-")[0])
    return Record(Offset(0, int(start)), Offset(0, end), data)


class _Miss(Exception):
    """The operation needs state that is not in the snapshot yet."""

    def __init__(self, name: str, producer: str | None = None, anchor: int | None = None):
        super().__init__(name)
        self.name = name
        self.producer = producer
        self.anchor = anchor


@dataclass(slots=True)
class _Loaded:
    """One stream's state as read at one moment (``version`` b"" = absent)."""

    meta: StreamMeta | None
    version: bytes
    producers: dict[str, ProducerState | None] = field(default_factory=dict)
    anchors: dict[int, Record | None] = field(default_factory=dict)
    remembered: bool = False
    """From this process's memory of its last commit, not read from Redis: unverified."""


@dataclass(slots=True)
class _Copy:
    source: str
    upto: Offset


_Op = tuple[str, Any]


class _BufferedTxn:
    """A :class:`~.base.SyncTxn` over loaded snapshots; writes are buffered per stream."""

    def __init__(self, loaded: dict[str, _Loaded]) -> None:
        self.loaded = loaded
        self.metas: dict[str, StreamMeta | None] = {}
        self.producers: dict[tuple[str, str], ProducerState] = {}
        self.dropped: set[str] = set()
        self.ops: dict[str, list[_Op]] = {}
        self.notify: list[str] = []

    def _snap(self, name: str) -> _Loaded:
        snap = self.loaded.get(name)
        if snap is None:
            raise _Miss(name)
        return snap

    def _op(self, name: str, op: _Op) -> None:
        self.ops.setdefault(name, []).append(op)

    def get_meta(self, name: str) -> StreamMeta | None:
        if name in self.metas:
            return self.metas[name]
        return self._snap(name).meta

    def put_meta(self, meta: StreamMeta) -> None:
        self._snap(meta.name)  # written streams are always read first (their version)
        self.metas[meta.name] = meta
        self._op(meta.name, ("M", meta))

    def drop(self, name: str) -> None:
        self._snap(name)
        self.metas[name] = None
        self.dropped.add(name)
        self._op(name, ("D", None))

    def get_producer(self, name: str, producer_id: str) -> ProducerState | None:
        if (name, producer_id) in self.producers:
            return self.producers[name, producer_id]
        if name in self.dropped:
            return None
        snap = self._snap(name)
        if producer_id not in snap.producers:
            raise _Miss(name, producer=producer_id)
        return snap.producers[producer_id]

    def put_producer(self, name: str, producer_id: str, state: ProducerState) -> None:
        self._snap(name)
        self.producers[name, producer_id] = state
        self._op(name, ("P", (producer_id, state)))

    def add_record(self, name: str, record: Record) -> None:
        self._snap(name)
        self._op(name, ("R", record))

    def copy_records(self, source: str, target: str, upto: Offset) -> None:
        self._snap(source)
        self._snap(target)
        self._op(target, ("C", _Copy(source, upto)))

    def record_starting_at(self, name: str, offset: Offset) -> Record | None:
        snap = self._snap(name)
        if offset.position not in snap.anchors:
            raise _Miss(name, anchor=offset.position)
        return snap.anchors[offset.position]


class _KeyedLocks:
    """One :class:`anyio.Lock` per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RedisStorage(StreamStorage):
    """Durable Streams storage in Redis (or a Redis Cluster), shared by many processes.

    Open it with :meth:`open` (or :func:`~.open.open_storage` with ``"redis"``): the context
    owns the client and the pub/sub listener that wakes this process's live readers.
    """

    def __init__(self, client: Any, *, prefix: str = "ds", cluster: bool = False) -> None:
        self.notifier = Notifier()
        self._locks = _KeyedLocks()
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self.client = client
        self.prefix = prefix
        self.cluster = cluster
        self.channel = f"{prefix}:notify"
        self._expiry_key = f"{prefix}:expiry"
        self._load_script = client.register_script(_LOAD_LUA)
        self._read_script = client.register_script(_READ_LUA)
        self._commit_script = client.register_script(_COMMIT_LUA)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, prefix: str = "ds") -> AsyncIterator[RedisStorage]:
        """Connect to ``url`` and listen for wakeups while the context is open.

        ``url`` is ``redis://``, ``rediss://`` or ``unix://`` for one Redis, or
        ``redis+cluster://host:port`` / ``rediss+cluster://`` for a Redis Cluster (any node).
        An unreachable Redis raises :class:`~resumable_streams.errors.BackendUnavailableError`
        naming the URL (password redacted).
        """
        if not prefix or any(ch in prefix for ch in "{}*?[]"):
            raise ConfigurationError(
                f"bad Redis key prefix {prefix!r}: must be non-empty, without {{ }} * ? [ ]"
            )
        scheme = url.partition("://")[0].lower()
        shown = redact_url(url)
        if scheme not in (*_CLUSTER_SCHEMES, "redis", "rediss", "unix"):
            raise ConfigurationError(
                f"unsupported Redis URL {shown!r}: expected redis://, rediss://, unix://, "
                "redis+cluster:// or rediss+cluster://"
            )
        cluster = scheme in _CLUSTER_SCHEMES
        try:
            client: Any = (
                _cluster_client(url, shown)
                if cluster
                else coredis.Redis.from_url(
                    url, decode_responses=False, connect_timeout=5, stream_timeout=30
                )
            )
        except ValueError as exc:  # coredis's URL parsing
            raise ConfigurationError(f"bad Redis URL {shown!r}: {exc}") from exc
        storage = cls(client, prefix=prefix, cluster=cluster)
        try:
            async with storage._run(client, shown) as running:
                yield running
        finally:
            if cluster:
                _close_cluster_layout(client)

    @asynccontextmanager
    async def _run(self, client: Any, shown: str) -> AsyncIterator[RedisStorage]:
        failure: BaseException | None = None
        with unwrap_single():
            async with client:
                try:
                    with anyio.fail_after(15):
                        await client.ping()
                except (coredis.exceptions.RedisError, OSError, TimeoutError) as exc:
                    failure = exc
                if failure is None:
                    async with anyio.create_task_group() as tg:
                        await tg.start(self._listen)
                        try:
                            yield self
                        finally:
                            tg.cancel_scope.cancel()
        if failure is not None:  # raised here, outside every task group: not wrapped
            raise BackendUnavailableError(f"cannot reach Redis at {shown}: {failure}") from failure

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        pubsub = self.client.pubsub(channels=[self.channel])
        async with pubsub:
            task_status.started()
            subscribed_once = False
            while True:
                message = await pubsub.get_message()
                if not message:
                    continue
                kind = message["type"]
                if kind == "message":
                    data = message["data"]
                    name = data.decode() if isinstance(data, bytes) else str(data)
                    self.notifier.notify(name)
                elif kind == "subscribe":
                    if subscribed_once:  # re-subscribed: wakeups may have been missed
                        logger.info("Redis pub/sub re-subscribed; waking all live readers")
                        self.notifier.notify_all()
                    subscribed_once = True

    # ------------------------------------------------------------------ keys

    def _keys(self, name: str) -> list[str]:
        base = f"{self.prefix}:{{{_hash_tag(name)}}}:"
        return [base + "m", base + "d", base + "p"]

    # ------------------------------------------------------------------ transactions

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except coredis.exceptions.ConnectionError as exc:
            raise BackendUnavailableError(f"Redis connection failed during {what}: {exc}") from exc
        except coredis.exceptions.RedisError as exc:
            raise BackendError(f"Redis {what} failed: {exc}") from exc

    async def _load(
        self, name: str, producers: Sequence[str] = (), anchors: Sequence[int] = ()
    ) -> _Loaded:
        args: list[str | bytes | int] = [len(producers), *producers, *map(str, anchors)]
        raw = await self._call("load", self._load_script(keys=self._keys(name), args=args))
        meta_raw, version, last_access, forks = raw[0], raw[1], raw[2], raw[3]
        meta = _decode_meta(meta_raw, last_access, forks) if meta_raw else None
        loaded = _Loaded(meta, version or b"")
        index = 4
        for producer in producers:
            value = raw[index]
            loaded.producers[producer] = _decode_producer(value) if value else None
            index += 1
        for anchor in anchors:
            entry_id, data = raw[index], raw[index + 1]
            index += 2
            start = str(anchor).encode()
            loaded.anchors[anchor] = _record(start, entry_id, data) if entry_id else None
        return loaded

    async def _reload(self, loaded: dict[str, _Loaded], miss: _Miss) -> None:
        old = loaded.get(miss.name)
        producers = set(old.producers) if old else set()
        anchors = set(old.anchors) if old else set()
        if miss.producer is not None:
            producers.add(miss.producer)
        if miss.anchor is not None:
            anchors.add(miss.anchor)
        loaded[miss.name] = await self._load(miss.name, sorted(producers), sorted(anchors))

    async def _transact(
        self,
        fn: Callable[[_BufferedTxn], T],
        name: str,
        *,
        now: float,
        producer: str | None = None,
    ) -> tuple[T, _BufferedTxn]:
        """Run ``fn`` on a snapshot and commit its writes if nothing it read has changed.

        Operations on one stream are serialized within this process (so its own requests
        never conflict); conflicts with other processes retry on fresh state.
        """
        async with self._locks.hold(name):
            return await self._transact_locked(fn, name, now=now, producer=producer)

    async def _transact_locked(
        self,
        fn: Callable[[_BufferedTxn], T],
        name: str,
        *,
        now: float,
        producer: str | None,
    ) -> tuple[T, _BufferedTxn]:
        cached = self._cached(name, producer, now)
        if cached is None:
            cached = await self._load(name, [producer] if producer is not None else [])
        loaded = {name: cached}
        for attempt in range(_MAX_ATTEMPTS):
            if attempt >= 3:  # other processes keep winning: back off a little, randomly
                await anyio.sleep(random.uniform(0, 0.001 * attempt))
            txn = _BufferedTxn(loaded)
            error: Rejected | None = None
            try:
                result = fn(txn)
            except _Miss as miss:
                await self._reload(loaded, miss)
                continue
            except Rejected as exc:
                error = exc
            version = await self._commit(txn, name)
            if version is not None:
                self._remember(name, txn, version)
                if error is not None:
                    raise error
                self._after_commit(txn)
                return result, txn
            for stale_name in loaded:
                self._cache.pop(stale_name, None)
            stale = list(loaded.items())
            loaded = {}
            for stale_name, snap in stale:
                loaded[stale_name] = await self._load(
                    stale_name, sorted(snap.producers), sorted(snap.anchors)
                )
        raise BackendError(f"too much contention on stream {name!r}: gave up after retries")

    def _cached(self, name: str, producer: str | None, now: float) -> _Loaded | None:
        """The state of ``name`` as this process last committed it, if usable at ``now``.

        Operations on a stream are serialized in-process, so after our own commit we know its
        state; the commit's version check catches any other process's write in between. A
        stream that looks expired is decided on fresh state (another process's reads may
        have slid its TTL, which does not change its version).
        """
        snap = self._cache.get(name)
        if snap is None or snap.meta is None or snap.meta.soft_deleted:
            return None
        if is_expired(snap.meta, now) or (producer is not None and producer not in snap.producers):
            return None
        self._cache.move_to_end(name)
        return snap

    def _remember(self, name: str, txn: _BufferedTxn, version: bytes) -> None:
        if len(txn.loaded) > 1 or name in txn.dropped or any(n != name for n in txn.ops):
            for other in txn.loaded:
                self._cache.pop(other, None)
            return
        snap = txn.loaded[name]
        meta = txn.metas.get(name, snap.meta)
        if meta is None:
            self._cache.pop(name, None)
            return
        producers = dict(snap.producers)
        producers.update({pid: state for (n, pid), state in txn.producers.items() if n == name})
        self._cache[name] = _Loaded(meta, version, producers, remembered=True)
        self._cache.move_to_end(name)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _commit(self, txn: _BufferedTxn, primary: str) -> bytes | None:
        """Commit; return the version the stream(s) now have, or ``None`` on a conflict.

        ``primary`` (the requested stream) and every stream written in other ways are checked
        against the version they were read at. Another stream whose only change is its fork
        count (a fork's source) is checked for its incarnation only and gets the change as a
        delta, so that forking a stream that is being appended to does not conflict forever.
        """
        names = list(txn.ops)
        names += [n for n in txn.notify if n not in txn.ops]
        names += [n for n in txn.loaded if n not in names]
        checks: dict[str, bytes] = {}
        ops: dict[str, list[_Op]] = {}
        deltas: set[str] = set()
        for n in names:
            snap = txn.loaded[n]
            delta = None if n == primary else _fork_delta(txn, n)
            if delta is not None and snap.meta is not None:
                deltas.add(n)
                ops[n] = [("F", (delta, snap.meta.stream_id))]
                checks[n] = b"#" + snap.meta.stream_id.encode() if delta > 0 else b"*"
            elif n != primary and n not in txn.ops and snap.meta is not None:
                checks[n] = b"#" + snap.meta.stream_id.encode()  # read only: same incarnation
                ops[n] = []
            else:
                checks[n] = snap.version
                ops[n] = await self._resolve_ops(txn.ops.get(n, []))
        for n in txn.notify:
            ops[n].append(("N", n))
        if not any(ops.values()) and len(names) == 1 and not txn.loaded[names[0]].remembered:
            return txn.loaded[names[0]].version  # read one consistent snapshot, wrote nothing
        token = uuid.uuid4().hex[:16].encode()
        if not self.cluster:
            return token if await self._commit_group(names, checks, ops, token) else None
        # A cluster cannot run one script across slots: check the unwritten streams, commit
        # the version-checked writes (the requested stream first), then the fork-count deltas.
        order = [n for n in names if not ops[n]]
        order += sorted(
            (n for n in names if ops[n] and n not in deltas), key=lambda n: n != primary
        )
        order += [n for n in names if ops[n] and n in deltas]
        written = False
        for group in order:
            if not await self._commit_group([group], checks, ops, token):
                if written:
                    logger.warning("cluster commit conflicted after a partial write at %r", group)
                return None
            written = written or bool(ops[group])
        return token

    async def _resolve_ops(self, ops: list[_Op]) -> list[_Op]:
        out: list[_Op] = []
        for op in ops:
            if op[0] == "C":
                copy: _Copy = op[1]
                source_data = self._keys(copy.source)[1]
                entries = await self._call(
                    "XRANGE (fork copy)",
                    self.client.xrange(source_data, "-", f"{copy.upto.position}-0"),
                )
                for entry in entries:
                    fields = entry.field_values
                    out.append(("R", _record(fields[b"s"], entry.identifier, fields[b"d"])))
            else:
                out.append(op)
        return out

    async def _commit_group(
        self, names: list[str], checks: dict[str, bytes], ops: dict[str, list[_Op]], token: bytes
    ) -> bool:
        keys: list[str] = []
        args: list[str | bytes | int] = [len(names)]
        args += [checks[n] for n in names]
        args += [token, self.channel]
        for index, n in enumerate(names, start=1):
            keys += self._keys(n)
            for kind, value in ops[n]:
                args += [kind, index]
                if kind == "M":
                    meta: StreamMeta = value
                    ttl = "" if meta.ttl is None else str(meta.ttl)
                    args += [meta_to_json(meta), repr(meta.last_access), ttl]
                    args += [meta.fork_count, meta.stream_id, "1" if meta.soft_deleted else "0"]
                elif kind == "R":
                    record: Record = value
                    args += [record.start.position, record.end.position, record.data]
                elif kind == "P":
                    producer_id, state = value
                    args += [producer_id, _encode_producer(state)]
                elif kind == "F":
                    delta, stream_id = value
                    args += [delta, stream_id]
                elif kind == "N":
                    args.append(value)
        result = await self._call("commit", self._commit_script(keys=keys, args=args))
        return bool(result == 1)

    def _after_commit(self, txn: _BufferedTxn) -> None:
        for name in txn.notify:
            self.notifier.notify(name)

    async def _index_expiry(self, txn: _BufferedTxn) -> None:
        """Record new streams' deadlines in the sweeper's index (a hint, not the truth)."""
        entries: dict[str, float] = {}
        for name, meta in txn.metas.items():
            if meta is None or meta.soft_deleted:
                continue
            old = txn.loaded[name].meta
            deadline = expiry_deadline(meta)
            if deadline is not None and (old is None or old.stream_id != meta.stream_id):
                entries[name] = deadline
        if entries:
            await self._call("ZADD", self.client.zadd(self._expiry_key, entries))

    # ------------------------------------------------------------------ interface

    async def create(self, name: str, req: CreateRequest, *, now: float) -> CreatePlan:
        """Create a stream (see :meth:`StreamStorage.create`)."""
        new_id = new_stream_id()

        def run(txn: _BufferedTxn) -> CreatePlan:
            plan = txn_create(txn, name, req, now=now, new_id=new_id)
            if plan.created:
                txn.notify.append(name)
            return plan

        plan, txn = await self._transact(run, name, now=now)
        await self._index_expiry(txn)
        return plan

    async def append(self, name: str, req: AppendRequest, *, now: float) -> AppendPlan:
        """Append and/or close, atomically with the producer's state."""
        producer = req.producer.producer_id if req.producer is not None else None

        def run(txn: _BufferedTxn) -> AppendPlan:
            plan = txn_append(txn, name, req, now=now)
            if plan.appended:
                txn.notify.append(name)
            return plan

        plan, _ = await self._transact(run, name, now=now, producer=producer)
        return plan

    async def _fetch(
        self, name: str, start: Offset | None, *, now: float, max_bytes: int, touch: bool
    ) -> ReadResult:
        first = f"({start.position}-0" if start is not None else ""
        args = [first, max_bytes, repr(now) if touch else ""]
        keys = self._keys(name)[:2]
        while True:
            raw = await self._call("read", self._read_script(keys=keys, args=args))
            if not raw:
                raise Rejected(404, "stream not found")
            meta = _decode_meta(raw[0], raw[1], raw[2])
            if meta.soft_deleted:
                raise Rejected(410, "the stream has been deleted")
            if not is_expired(meta, now):
                records = [_record(raw[i], raw[i + 1], raw[i + 2]) for i in range(3, len(raw), 3)]
                return ReadResult(meta, records)
            # expired: clean it up as every engine does (raises 404/410 unless re-created)
            await self._transact(lambda txn: txn_require(txn, name, now), name, now=now)

    async def read(
        self,
        name: str,
        start: Offset | Literal["now"],
        *,
        now: float,
        max_bytes: int,
        touch: bool = True,
    ) -> ReadResult:
        """Read whole appends (see :meth:`StreamStorage.read`); slides the stream's TTL."""
        if start == "now":
            result = await self._fetch(name, None, now=now, max_bytes=0, touch=touch)
            return ReadResult(result.meta, ())
        return await self._fetch(name, start, now=now, max_bytes=max_bytes, touch=touch)

    async def head(self, name: str, *, now: float) -> StreamMeta:
        """Metadata without touching the TTL."""
        return (await self._fetch(name, None, now=now, max_bytes=0, touch=False)).meta

    async def delete(self, name: str, *, now: float) -> None:
        """Delete, soft while forks reference the stream."""

        def run(txn: _BufferedTxn) -> None:
            txn_delete(txn, name, now=now)
            txn.notify.append(name)

        await self._transact(run, name, now=now)

    async def sweep(self, *, now: float) -> int:
        """Remove expired streams found through the expiry index."""
        raw = await self._call(
            "ZRANGEBYSCORE",
            self.client.zrange(
                self._expiry_key,
                "-inf",
                repr(now),
                sortby=PureToken.BYSCORE,
                offset=0,
                count=_SWEEP_BATCH,
            ),
        )
        removed = 0
        done: list[str] = []
        later: dict[str, float] = {}
        for item in raw:
            name = item.decode() if isinstance(item, bytes) else str(item)
            count, txn = await self._transact(
                partial(_sweep_one, name=name, now=now), name, now=now
            )
            removed += count
            meta = txn.get_meta(name)
            deadline = expiry_deadline(meta) if meta is not None else None
            if meta is None or meta.soft_deleted or deadline is None:
                done.append(name)
            else:
                later[name] = deadline  # touched since: look again at its new deadline
        if done:
            await self._call("ZREM", self.client.zrem(self._expiry_key, done))
        if later:
            await self._call("ZADD", self.client.zadd(self._expiry_key, later))
        return removed

    async def list_streams(self, *, now: float, limit: int | None = None) -> list[StreamMeta]:
        """The live streams' metadata, sorted by name (a ``SCAN`` over every node)."""
        metas: list[StreamMeta] = []
        pattern = f"{self.prefix}:{{*}}:m"
        async for key in self.client.scan_iter(match=pattern, count=1000):
            raw = await self._call("HMGET", self.client.hmget(key, ["m", "a", "f"]))
            if raw[0]:
                metas.append(_decode_meta(raw[0], raw[1], raw[2]))
        return visible_streams(metas, now=now, limit=limit)


def _fork_delta(txn: _BufferedTxn, name: str) -> int | None:
    """The change to ``name`` as a fork-count delta, if that is all that changed.

    That is a fork's source gaining a fork (``+1``), or losing one, including a soft-deleted
    source that is collected with its last fork (``-1``; the commit script collects it).
    """
    ops = txn.ops.get(name)
    old = txn.loaded[name].meta
    if not ops or old is None or any(kind not in ("M", "D") for kind, _ in ops):
        return None
    final = txn.metas.get(name, old)
    if final is None:
        return -1 if old.soft_deleted and old.fork_count <= 1 else None
    if old._replace(fork_count=final.fork_count) != final:
        return None
    return final.fork_count - old.fork_count


def _sweep_one(txn: _BufferedTxn, *, name: str, now: float) -> int:
    removed = txn_sweep(txn, [name], now=now)
    if removed:
        txn.notify.append(name)
    return len(removed)
