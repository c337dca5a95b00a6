"""The Redis engine across processes: two ``resumable-streams serve`` processes, one Redis.

Each scenario runs against one redis-server and against a real 3-node Redis Cluster started
on loopback (``redis+cluster://`` URL). The servers' long-poll timeout is far longer than
the tests' ``fail_after``: a long-poll answered with data proves a wakeup through Redis
pub/sub, never a timeout.
"""

from __future__ import annotations

import gc
import json
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2
import pytest

from resumable_streams._protocol.durable.offsets import ZERO, Offset
from resumable_streams._protocol.durable.parsing import ProducerHeaders
from resumable_streams._protocol.durable.planning import AppendRequest, CreateRequest, Rejected
from resumable_streams._protocol.sse import SSEDecoder
from resumable_streams.durable._async_client import _abandon_body
from resumable_streams.errors import BackendUnavailableError, ConfigurationError
from resumable_streams.storage import open_storage
from resumable_streams.storage.redis import (
    RedisStorage,
    _close_cluster_layout,
    _cluster_client,
    redact_url,
)
from resumable_streams.testing import RedisCluster, RedisServer, free_port

from .conftest import ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """A real 3-node Redis Cluster for this module."""
    with RedisCluster(3) as started:
        yield started


@pytest.fixture(params=["single", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A Redis URL: the session's redis-server, or the module's cluster."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    started: RedisCluster = request.getfixturevalue("cluster")
    return started.url


@pytest.fixture
def two_servers(
    shared_url: str, server_factory: type[ServerProcess]
) -> tuple[ServerProcess, ServerProcess]:
    """Two server processes sharing one Redis."""
    servers = []
    for _ in range(2):
        server = server_factory(
            "--storage", "redis", "--redis-url", shared_url, "--long-poll-timeout", "120"
        )
        server.start()
        servers.append(server)
    return servers[0], servers[1]


def _stream_url(server: ServerProcess, name: str) -> str:
    return f"{server.url}/v1/stream/{name}"


def _name() -> str:
    return f"redis-engine/{uuid.uuid4().hex[:12]}"


async def test_long_poll_on_one_server_wakes_on_append_to_the_other(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    name = _name()
    with anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=60) as client:
            r = await client.put(_stream_url(a, name), headers={"Content-Type": "text/plain"})
            assert r.status_code == 201
            tail = r.headers["stream-next-offset"]
            got: list[httpx2.Response] = []

            async def long_poll() -> None:
                got.append(
                    await client.get(
                        _stream_url(b, name), params={"offset": tail, "live": "long-poll"}
                    )
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_poll)
                await anyio.sleep(0.3)  # let the reader park (the test passes either way)
                r = await client.post(
                    _stream_url(a, name), content=b"hello", headers={"Content-Type": "text/plain"}
                )
                assert r.status_code == 204
            (answer,) = got
            assert answer.status_code == 200
            assert answer.content == b"hello"
            assert answer.headers["stream-next-offset"] == r.headers["stream-next-offset"]


async def test_sse_on_one_server_receives_appends_to_the_other(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    name = _name()
    with anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=60) as client:
            headers = {"Content-Type": "application/json"}
            r = await client.put(_stream_url(a, name), headers=headers)
            assert r.status_code == 201
            params = {"offset": "-1", "live": "sse"}
            async with client.stream("GET", _stream_url(b, name), params=params) as sse:
                assert sse.status_code == 200
                chunks = sse.aiter_bytes()
                try:
                    received = await _append_while_reading(client, _stream_url(a, name), chunks)
                finally:
                    await _abandon_body(chunks)
                assert received == [{"n": 0}, {"n": 1}, {"n": 2}]


async def _append_while_reading(
    client: httpx2.AsyncClient, url: str, chunks: AsyncIterator[bytes]
) -> list[object]:
    """Each time the SSE reader is up to date (waiting), append the next of 3 messages."""
    decoder = SSEDecoder()
    sent = 0
    received: list[object] = []
    async for chunk in chunks:
        for event in decoder.receive_data(chunk):
            if event.event == "data":
                received.extend(json.loads(event.data))
            elif event.event == "control" and json.loads(event.data).get("upToDate"):
                if sent == 3:
                    return received
                r = await client.post(
                    url,
                    content=json.dumps({"n": sent}),
                    headers={"Content-Type": "application/json"},
                )
                assert r.status_code == 204
                sent += 1
    return received


async def test_idempotent_producer_state_is_shared(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    name = _name()

    def producer(seq: int) -> dict[str, str]:
        return {
            "Content-Type": "text/plain",
            "Producer-Id": "p",
            "Producer-Epoch": "0",
            "Producer-Seq": str(seq),
        }

    with anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=30) as client:
            await client.put(_stream_url(a, name), headers={"Content-Type": "text/plain"})
            first = await client.post(_stream_url(a, name), content=b"a", headers=producer(0))
            assert first.status_code == 200
            retry = await client.post(_stream_url(b, name), content=b"a", headers=producer(0))
            assert retry.status_code == 204  # a duplicate, though sent to the other process
            gap = await client.post(_stream_url(b, name), content=b"c", headers=producer(2))
            assert gap.status_code == 409
            assert gap.headers["producer-expected-seq"] == "1"
            second = await client.post(_stream_url(b, name), content=b"b", headers=producer(1))
            assert second.status_code == 200
            read = await client.get(_stream_url(a, name), params={"offset": "-1"})
            assert read.content == b"ab"


TOKEN = re.compile(rb"<(\d+):(\d+)>")


async def test_concurrent_appends_through_both_servers_never_interleave(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    servers = two_servers
    name = _name()
    writers, appends = 8, 15
    with anyio.fail_after(60):
        async with httpx2.AsyncClient(timeout=30) as client:
            r = await client.put(
                _stream_url(servers[0], name), headers={"Content-Type": "text/plain"}
            )
            assert r.status_code == 201

            async def writer(w: int) -> None:
                url = _stream_url(servers[w % 2], name)
                for i in range(appends):
                    body = f"<{w}:{i}>".encode()
                    r = await client.post(url, content=body, headers={"Content-Type": "text/plain"})
                    assert r.status_code == 204, r.text

            async with anyio.create_task_group() as tg:
                for w in range(writers):
                    tg.start_soon(writer, w)
            data = (
                await client.get(_stream_url(servers[1], name), params={"offset": "-1"})
            ).content
    tokens = [(int(m.group(1)), int(m.group(2))) for m in TOKEN.finditer(data)]
    assert b"".join(b"<%d:%d>" % t for t in tokens) == data, "torn or foreign bytes"
    assert sorted(tokens) == [(w, i) for w in range(writers) for i in range(appends)]
    for w in range(writers):
        assert [i for ww, i in tokens if ww == w] == list(range(appends))


async def test_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    # coredis 6.9 leaves the memory streams of a connection that never connected unclosed
    # (a ResourceWarning when collected): expected here, so collected here, once the
    # exception's traceback (which holds them) is gone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with anyio.fail_after(30), pytest.raises(BackendUnavailableError) as info:
            async with open_storage("redis", redis_url=url):
                pass
        message = str(info.value)
        del info
        gc.collect()
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "redis+cluster://nohost", "redis://h:notaport/0"]
)
async def test_bad_redis_url_is_a_configuration_error(url: str) -> None:
    with anyio.fail_after(10), pytest.raises(ConfigurationError) as info:
        async with open_storage("redis", redis_url=url):
            pass
    assert url in str(info.value) or "nohost" in str(info.value)


@pytest.mark.parametrize("prefix", ["", "a{b}", "ds*"])
async def test_bad_key_prefix_is_a_configuration_error(prefix: str, redis_url: str) -> None:
    with anyio.fail_after(10), pytest.raises(ConfigurationError, match="prefix"):
        async with RedisStorage.open(redis_url, prefix=prefix):
            pass


def test_serve_exits_naming_the_unreachable_redis(server_factory: type[ServerProcess]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = server_factory("--storage", "redis", "--redis-url", url)
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert f"cannot reach Redis at {url}" in str(info.value)


NOW = 1_000_000.0


def _text(body: bytes, producer: tuple[str, int, int] | None = None) -> AppendRequest:
    headers = ProducerHeaders(*producer) if producer is not None else None
    return AppendRequest("text/plain", body, producer=headers)


async def _read_all(storage: RedisStorage, name: str, now: float = NOW) -> bytes:
    result = await storage.read(name, ZERO, now=now, max_bytes=1 << 30, touch=False)
    return b"".join(r.data for r in result.records)


async def test_two_engines_on_one_redis_see_each_others_writes(redis_url: str) -> None:
    """Each engine remembers its own last commit; the other's writes must still win."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    with anyio.fail_after(20):
        async with (
            RedisStorage.open(redis_url, prefix=prefix) as a,
            RedisStorage.open(redis_url, prefix=prefix) as b,
        ):
            await a.create("s", CreateRequest("text/plain"), now=NOW)
            await a.append("s", _text(b"1", ("p", 0, 0)), now=NOW)
            await b.append("s", _text(b"2", ("p", 0, 1)), now=NOW)
            dup = await a.append("s", _text(b"2", ("p", 0, 1)), now=NOW)
            assert dup.status == 204  # a's remembered producer state was stale
            await a.append("s", _text(b"3"), now=NOW)
            assert await _read_all(b, "s") == b"123"

            # deleted and re-created elsewhere: a appends to the new incarnation
            await b.delete("s", now=NOW)
            await b.create("s", CreateRequest("text/plain", body=b"new"), now=NOW)
            out = await a.append("s", _text(b"!"), now=NOW)
            assert out.headers["Stream-Next-Offset"] == str(Offset(0, 4))
            assert await _read_all(a, "s") == b"new!"

            # a sliding TTL extended by the other engine's read is honoured
            await a.create("ttl", CreateRequest("text/plain", ttl=10), now=NOW)
            await a.append("ttl", _text(b"x"), now=NOW)
            await b.read("ttl", ZERO, now=NOW + 8, max_bytes=100)
            await a.append("ttl", _text(b"y"), now=NOW + 15)
            assert await _read_all(b, "ttl", now=NOW + 15) == b"xy"

            # a wakes b's live readers through pub/sub
            event = b.notifier.event("s")
            await a.append("s", _text(b"?"), now=NOW)
            await event.wait()


async def test_lost_subscription_wakes_every_waiting_reader(private_redis: RedisServer) -> None:
    """Wakeups published while the subscription was down are lost: waiters re-check."""
    with anyio.fail_after(30):
        async with RedisStorage.open(private_redis.url) as storage:
            first, second = storage.notifier.event("a"), storage.notifier.event("b")
            killed = await anyio.run_process(
                ["redis-cli", "-p", str(private_redis.port), "client", "kill", "type", "pubsub"]
            )
            assert killed.stdout.strip() == b"1"
            await first.wait()  # no append happened: the re-subscription woke them
            await second.wait()


def test_redact_url_and_cluster_nodes() -> None:
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    client = _cluster_client("redis+cluster://u:p%40ss@a:7000,[::1]:7001", "shown")
    pool = client.connection_pool
    assert [(n.host, n.port) for n in pool.startup_nodes] == [("a", 7000), ("::1", 7001)]
    assert pool.connection_kwargs["password"] == "p@ss"
    _close_cluster_layout(client)  # never opened: release what coredis made eagerly
    with pytest.raises(ConfigurationError, match="nohost"):
        _cluster_client("redis+cluster://nohost", "redis+cluster://nohost")


@pytest.mark.parametrize("mode", ["single", "cluster"])
async def test_forks_under_concurrent_appends_keep_the_fork_count(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """Fork and delete while another engine appends to the source: counts stay exact."""
    fixture = "redis_server" if mode == "single" else "cluster"
    url: str = request.getfixturevalue(fixture).url
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    with anyio.fail_after(60):
        async with (
            RedisStorage.open(url, prefix=prefix) as a,
            RedisStorage.open(url, prefix=prefix) as b,
        ):
            await a.create("src", CreateRequest("text/plain", body=b"0"), now=NOW)
            done = anyio.Event()

            async def keep_appending() -> None:
                while not done.is_set():
                    await b.append("src", _text(b"+"), now=NOW)

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_appending)
                for i in range(10):
                    fork = await a.create(
                        f"fork{i}", CreateRequest(None, forked_from="src"), now=NOW
                    )
                    assert fork.created
                    await a.append(f"fork{i}", _text(b"!"), now=NOW)
                for i in range(0, 10, 2):
                    await a.delete(f"fork{i}", now=NOW)
                done.set()
            assert (await a.head("src", now=NOW)).fork_count == 5
            await a.delete("src", now=NOW)  # soft: five forks remain
            for i in range(1, 10, 2):
                data = await _read_all(b, f"fork{i}")
                assert data.startswith(b"0")
                assert data.endswith(b"!")
                await b.delete(f"fork{i}", now=NOW)
            with pytest.raises(Rejected) as info:
                await a.head("src", now=NOW)
            assert info.value.status == 404  # collected with its last fork


@pytest.mark.parametrize("mode", ["single", "cluster"])
async def test_names_with_braces_and_percent_stay_distinct(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """Hash-tag escaping is injective: ``a{b}`` and ``a%7Bb%7D`` are different streams."""
    fixture = "redis_server" if mode == "single" else "cluster"
    url: str = request.getfixturevalue(fixture).url
    names = ["a{b}", "a%7Bb%7D", "a%257Bb", "{}", "}{", "ü/ß/{x}"]
    with anyio.fail_after(20):
        async with RedisStorage.open(url, prefix=f"test-{uuid.uuid4().hex[:12]}") as storage:
            for name in names:
                await storage.create(name, CreateRequest("text/plain", body=name.encode()), now=NOW)
            for name in names:
                assert await _read_all(storage, name) == name.encode()
            listed = [meta.name for meta in await storage.list_streams(now=NOW)]
            assert listed == sorted(names)


async def test_redis_restart_loses_data_but_not_the_engine(private_redis: RedisServer) -> None:
    """After Redis restarts empty, nothing this process remembers is trusted."""
    with anyio.fail_after(30):
        async with RedisStorage.open(private_redis.url) as storage:
            await storage.create("s", CreateRequest("text/plain"), now=NOW)
            await storage.append("s", _text(b"x", ("p", 0, 0)), now=NOW)
            waiting = storage.notifier.event("s")
            await anyio.to_thread.run_sync(private_redis.restart)
            await waiting.wait()  # re-subscribed: live readers re-check
            again = await storage.create("s", CreateRequest("text/plain"), now=NOW)
            assert again.created  # not an "idempotent match" with the lost stream
            out = await storage.append("s", _text(b"y", ("p", 0, 0)), now=NOW)
            assert out.status == 200  # the producer starts afresh too
            assert await _read_all(storage, "s") == b"y"
