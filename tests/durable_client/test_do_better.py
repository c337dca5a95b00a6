"""Where this client does better than the official Python client, each with a test.

(Stopping on ``Stream-Closed`` in long-poll mode: ``test_interop.py::
test_long_poll_on_closed_stream_ends`` and ``test_live_tail_then_stop_on_close``.)
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from resumable_streams.durable import (
    AsyncDurableStream,
    DurableStream,
    FetchError,
    IdempotentProducer,
    ProducerClosedError,
    RetryPolicy,
    SyncIdempotentProducer,
    astream,
    stream,
)

from .conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05)


def inject(server: ServerProcess, url: str, **fault: object) -> None:
    """Arm the Node reference server's fault injection for the stream at ``url``."""
    body = {"path": urlsplit(url).path, **fault}
    httpx2.post(f"{server.base_url}/_test/inject-error", json=body).raise_for_status()


# -- retries with backoff, honouring Retry-After (Node fault injection) -------------------------


def test_read_retries_5xx_with_retry_after(node_server: ServerProcess) -> None:
    url = node_server.stream_url()
    with DurableStream.create(url, content_type="text/plain", body="data", retry=FAST) as s:
        inject(node_server, url, status=503, retryAfter=1, count=2, method="GET")
        with s.stream(live=False) as res:
            assert res.read_text() == "data"


def test_read_retries_dropped_connection(node_server: ServerProcess) -> None:
    url = node_server.stream_url()
    DurableStream.create(url, content_type="text/plain", body="x").close()
    inject(node_server, url, dropConnection=True, count=2, method="GET")
    with stream(url, live=False, retry=FAST) as res:
        assert res.read_text() == "x"


def test_plain_append_retries_429_but_not_ambiguous_5xx(node_server: ServerProcess) -> None:
    url = node_server.stream_url()
    with DurableStream.create(url, content_type="text/plain", retry=FAST) as s:
        inject(node_server, url, status=429, count=1, method="POST")
        s.append("once")
        inject(node_server, url, status=503, count=1, method="POST")
        with pytest.raises(FetchError) as info:
            s.append("maybe")  # not idempotent: the caller decides (or uses a producer)
        assert info.value.status == 503
        with s.stream(live=False) as res:
            assert res.read_text() == "once"


@pytest.mark.anyio
async def test_producer_writes_retry_5xx_and_drops(node_server: ServerProcess) -> None:
    url = node_server.stream_url()
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(
            url, content_type="application/json", retry=FAST
        ) as s:
            async with IdempotentProducer(s, producer_id="r", linger_ms=1) as producer:
                inject(node_server, url, status=500, count=2, method="POST")
                await producer.append({"a": 1})
                inject(node_server, url, dropConnection=True, count=1, method="POST")
                await producer.append({"b": 2})
            async with s.stream(live=False) as res:
                assert await res.read_json() == [{"a": 1}, {"b": 2}]


# -- SSE reconnects from the last offset when the server ends the response ----------------------


@pytest.mark.anyio
async def test_sse_reconnects_when_server_closes_response(py_server: ServerProcess) -> None:
    """Our server ends SSE responses every second here; the reader must not stop."""
    url = py_server.stream_url()
    got: list[object] = []
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(url, content_type="application/json") as s:

            async def write() -> None:
                for i in range(5):
                    await s.append({"i": i})
                    await anyio.sleep(0.6)  # 3 s in all: spans several SSE responses
                await s.close_stream()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                async with astream(url, live="sse") as res:
                    got.extend([item async for item in res.iter_json()])
    assert got == [{"i": i} for i in range(5)]


@pytest.mark.anyio
async def test_sse_reconnects_after_dropped_connection(node_server: ServerProcess) -> None:
    url = node_server.stream_url()
    with anyio.fail_after(20):
        async with await AsyncDurableStream.create(
            url, content_type="text/plain", body="a", retry=FAST
        ) as s:
            inject(node_server, url, dropConnection=True, count=2, method="GET")
            async with s.stream(live="sse", offset="-1") as res:
                texts = []
                async for chunk in res.iter_text():
                    texts.append(chunk)
                    if chunk == "a":
                        await s.append("b")
                    else:
                        break
            assert "".join(texts) == "ab"


# -- the wire: sorted query params, JSON never double-encoded -----------------------------------


def test_wire_format_sorted_params_and_single_json_encoding() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        hdrs = {"Stream-Next-Offset": "1", "Stream-Up-To-Date": "true"}
        if request.method == "GET":
            return httpx2.Response(
                200, headers={**hdrs, "Content-Type": "application/json"}, content=b"[]"
            )
        return httpx2.Response(204, headers=hdrs)

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as client:
        s = DurableStream(
            "http://x/v1/stream/s?z=1",
            content_type="application/json",
            client=client,
            params={"b": "2", "a": "1"},
        )
        s.append({"k": "v"})
        s.append(json.dumps({"k": "v"}))
        with s.stream(live=False, offset="-1", params={"tenant": "t"}) as res:
            assert res.read_json() == []
        assert not client.is_closed  # a caller's client stays open
    posts = [r for r in seen if r.method == "POST"]
    assert [json.loads(r.content) for r in posts] == [[{"k": "v"}], [{"k": "v"}]]
    queries = [r.url.query.decode() for r in seen]
    assert queries[-1] == "a=1&b=2&offset=-1&tenant=t&z=1"
    for q in queries:
        keys = [kv.split("=")[0] for kv in q.split("&")]
        assert keys == sorted(keys)


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), [1, float("-inf")], "NaN", b"[Infinity]"]
)
def test_nan_and_infinity_are_refused_before_sending(bad: object) -> None:
    """Not JSON (servers answer 400, which used to wedge a producer's sequence)."""
    with httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(500))) as client:
        s = DurableStream("http://x/v1/stream/s", content_type="application/json", client=client)
        with pytest.raises(ValueError, match="not valid JSON"):
            s.append(bad)
    producer = IdempotentProducer("http://x/v1/stream/s", "p", content_type="application/json")
    with pytest.raises(ValueError, match="not valid JSON"):
        producer.append_nowait(bad)
    assert producer.pending_count == 0
    anyio.run(producer.close)


def test_closed_sync_producer_raises_producer_closed_error() -> None:
    """Not anyio's "This portal is not running" RuntimeError."""
    producer = SyncIdempotentProducer("http://127.0.0.1:9/v1/stream/never", "p")
    producer.close()
    with pytest.raises(ProducerClosedError, match="'p' is closed"):
        producer.append_nowait(b"x")
    with pytest.raises(ProducerClosedError):
        producer.append(b"x")
    with pytest.raises(ProducerClosedError):
        producer.restart()
    with pytest.raises(ProducerClosedError):
        producer.close_stream()
    producer.flush()  # nothing left to flush
    producer.close()  # idempotent


# -- resources ----------------------------------------------------------------------------------


def test_owned_clients_are_closed_and_unclosed_handles_warn() -> None:
    s = DurableStream("http://127.0.0.1:9/v1/stream/never")
    client = s.client
    s.close()
    assert client.is_closed
    with pytest.warns(ResourceWarning, match="unclosed stream handle"):
        _leak_a_handle()


def _leak_a_handle() -> None:
    DurableStream("http://127.0.0.1:9/v1/stream/leaked")
    gc.collect()


def test_no_asyncio_anywhere_in_the_client() -> None:
    files = [
        *sorted((ROOT / "src/resumable_streams/durable").glob("_*.py")),
        ROOT / "src/resumable_streams/durable/__init__.py",
        ROOT / "src/resumable_streams/_protocol/durable/client.py",
    ]
    for path in files:
        text = path.read_text()
        assert "import asyncio" not in text, path
        assert "asyncio." not in text, path


def test_generated_sync_client_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_own_http_clients_share_one_tls_context(stream_url: str) -> None:
    """Loading the CA bundle costs ~15 ms; clients the library creates build it once.

    Plain ``http://`` reads use the built-in HTTP/1.1 client and need no TLS context at all;
    ``https://`` goes through httpx2 clients, which share one.
    """
    from resumable_streams.durable._ssl import default_ssl_context

    DurableStream.create(stream_url, content_type="text/plain", body="x").close()
    before = default_ssl_context.cache_info()
    for _ in range(3):
        with stream(stream_url, live=False) as res:
            assert res.read_text() == "x"
    assert default_ssl_context.cache_info() == before
    with socket.socket() as sock:  # a port that refuses connections
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for _ in range(3):
        with pytest.raises(FetchError):
            stream(
                f"https://127.0.0.1:{port}/v1/stream/x",
                live=False,
                retry=RetryPolicy(max_retries=0),
            )
    after = default_ssl_context.cache_info()
    assert after.hits >= before.hits + 2
    assert after.misses <= 1
