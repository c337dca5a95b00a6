"""Durable Streams servers, side by side: ours (memory, sqlite) against the Node reference.

Every server runs as its own subprocess on a free loopback port; all of them are started
first and stay up for the whole run. Each gets a short unmeasured warm-up; then, round after
round, every figure group (single, concurrent, JSON, catch-up, long-poll, SSE, fan-out) is
measured on every server in turn, in an order that rotates, so that the machine's drift
during a run (a shared host's CPU comes and goes) weighs on every server alike. Each figure
is the median over the rounds:

* ``ours-memory`` / ``ours-sqlite`` - ``resumable-streams serve --storage memory|sqlite``
  (the built-in HTTP/1.1 server on trio, the default); ``ours-*-asyncio`` the same with
  ``--backend asyncio``. sqlite commits with ``synchronous=FULL`` in WAL mode: an append is
  acknowledged after its fsync'ed commit, with group commit across concurrent appends.
* ``node-memory`` / ``node-file`` - npm ``@durable-streams/server`` 0.3.7
  (``DurableStreamTestServer``; ``bench/node/ds_server.mjs``), in memory and file-backed
  (``dataDir``: LMDB metadata and one log file per stream, fdatasync before each ack).

One load generator drives them all: this process, on anyio (trio by default), with a
minimal keep-alive HTTP/1.1 client (a pool of raw connections) for requests and h11 for SSE
readers. It shares the machine's two cores with the server it measures, so the cheaper it
is, the more of each server's capacity shows: httpx2 cost ~0.7 ms of client CPU per request
(every server capped at the same ~1,500 requests/s); the raw client costs ~50 us per request
on anyio's asyncio backend and ~25 us on trio (``--client-backend``; measured with 32
clients). Every request sends ``Accept-Encoding: identity`` so that no server compresses
(the Node server gzips bodies >= 1 KiB otherwise).

Figures (``--quick`` shrinks every count):

* single client: sequential 100-byte appends to one stream; latency p50 / p99, appends/s.
* concurrent: 32 clients (connections) appending 100 bytes over 64 streams for 4 s;
  appends/s.
* JSON: the same with ``application/json`` streams and ~100-byte JSON objects; appends/s.
* server CPU per append (``concurrent_cpu_us``, ``json_cpu_us``): the server process's
  utime + stime (every thread, from ``/proc``) over the two figures above, per append. It
  depends far less on what else the machine runs than the rates do.
* catch-up: one stream of 64 MiB written in 64 KiB appends, read from ``-1`` to the tail
  following ``Stream-Next-Offset``; MB/s (median of 3 reads).
* delivery latency: a long-poll (resp. SSE) reader waits at the tail; a writer appends, then
  waits until the reader has the data before the next append; time from sending the POST
  until the reader has the bytes, p50 / p99.
* fan-out: 1,000 SSE readers on one stream, all waiting at the tail; a writer appends 200
  times as fast as it can; seconds from the first POST until every reader has all 200.

Every run checks what it reads (counts and contents). Usage::

    .venv/bin/python bench/durable_server_bench.py [--quick] [--repeat N]
        [--only ours-memory,node-memory] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11

from resumable_streams._protocol.sse import SSEDecoder
from resumable_streams.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node" / "durable"
NODE_SCRIPT = ROOT / "bench" / "node" / "ds_server.mjs"
SERVERS = (
    "ours-memory",
    "ours-sqlite",
    "ours-memory-asyncio",
    "ours-sqlite-asyncio",
    "node-memory",
    "node-file",
)
PAIRS = (
    ("ours-memory", "node-memory"),
    ("ours-memory-asyncio", "node-memory"),
    ("ours-sqlite", "node-file"),
    ("ours-sqlite-asyncio", "node-file"),
)
TEXT = {"Content-Type": "text/plain"}
JSON_CT = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Workload:
    single: int
    concurrent_s: float
    clients: int
    streams: int
    catchup_bytes: int
    catchup_chunk: int
    latency_samples: int
    fan_readers: int
    fan_appends: int


FULL = Workload(
    single=2000,
    concurrent_s=4.0,
    clients=32,
    streams=64,
    catchup_bytes=64 * 1024 * 1024,
    catchup_chunk=64 * 1024,
    latency_samples=200,
    fan_readers=1000,
    fan_appends=200,
)
QUICK = Workload(
    single=200,
    concurrent_s=0.5,
    clients=32,
    streams=64,
    catchup_bytes=4 * 1024 * 1024,
    catchup_chunk=64 * 1024,
    latency_samples=30,
    fan_readers=100,
    fan_appends=20,
)

# Each server's unmeasured warm-up (the QUICK workload): a cold machine and a cold JIT ran
# the first measurements ~40% slow.
WARMUP = ("single", "concurrent", "json")

# name, unit, higher is better
FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("append_p50_ms", "ms", False),
    ("append_p99_ms", "ms", False),
    ("single_appends_per_s", "/s", True),
    ("concurrent_appends_per_s", "/s", True),
    ("json_appends_per_s", "/s", True),
    ("concurrent_cpu_us", "us", False),
    ("json_cpu_us", "us", False),
    ("catchup_mb_per_s", "MB/s", True),
    ("long_poll_p50_ms", "ms", False),
    ("long_poll_p99_ms", "ms", False),
    ("sse_p50_ms", "ms", False),
    ("sse_p99_ms", "ms", False),
    ("fanout_s", "s", False),
)


class BenchError(RuntimeError):
    pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# ----------------------------------------------------------------------------- servers


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "(not installed)"
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


def npm_install() -> None:
    """``npm ci`` in tests/node/durable when node_modules is missing or older than the lock."""
    lock = NODE_DIR / "package-lock.json"
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is not on PATH (the Node reference server needs Node.js >= 18)")
    try:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    except subprocess.CalledProcessError:
        # npm >= 11 refuses a lock file without every platform's optional packages
        # (msgpackr-extract): install the pinned version from package.json, lock untouched.
        subprocess.run(
            [npm, "install", "--no-package-lock", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
        )
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()  # installed: don't try again until the lock changes


class Server:
    """One server subprocess on a free loopback port."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        engine = name.split("-")[1]
        if name.startswith("ours"):
            backend = "asyncio" if name.endswith("-asyncio") else "trio"
            argv = [sys.executable, "-m", "resumable_streams.cli", "serve", "--port"]
            argv += [str(self.port), "--storage", engine, "--data-dir", str(data_dir)]
            argv += ["--backend", backend]
        else:
            node = shutil.which("node")
            if node is None:
                raise BenchError("node is not on PATH")
            argv = [node, str(NODE_SCRIPT), str(NODE_DIR), str(self.port)]
            if engine == "file":
                argv.append(str(data_dir))
        env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"{self.name} did not listen within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stderr):
            if pipe is not None:
                pipe.close()


# ----------------------------------------------------------------------------- load generator


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    content: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection: a small, fast client (no TLS, no redirects)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.reusable = True
        self.received = 0

    async def _fill(self) -> None:
        chunk = await self.stream.receive(262144)  # EndOfStream when the server closed
        self.received += len(chunk)
        self.buf += chunk

    async def _take(self, size: int) -> bytes:
        while len(self.buf) < size:
            await self._fill()
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        return await self._take(end + 2)

    async def request(self, head: bytes, body: bytes, method: str) -> Response:
        await self.stream.send(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            await self.stream.send(body)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        content = b""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "content-length" in headers:
            content = await self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while size := int((await self._line()).split(b";")[0], 16):
                parts.append(await self._take(size))
                await self._take(2)
            while await self._line() != b"\r\n":  # trailers
                pass
            content = b"".join(parts)
        else:
            raise BenchError(f"response without a length ({status})")
        if headers.get("connection", "").lower() == "close":
            self.reusable = False
        return Response(status, headers, content)


class Client:
    """A pool of keep-alive connections to one server; used the same way for every server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Connection] = []
        self.common = f"Host: {host}:{port}\r\nAccept-Encoding: identity\r\n"

    async def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
        head = f"{method} {target} HTTP/1.1\r\n{self.common}{length}{extra}\r\n".encode()
        while True:
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else None
            if conn is None:
                conn = Connection(await anyio.connect_tcp(self.host, self.port))
            received_before = conn.received
            try:
                response = await conn.request(head, body, method)
            except (anyio.EndOfStream, anyio.BrokenResourceError, BenchError):
                await conn.stream.aclose()
                if reused and conn.received == received_before:
                    # the server closed this idle keep-alive connection (Node does after
                    # 5 s) before reading the request: send it again on a fresh one
                    continue
                raise
            except BaseException:
                await conn.stream.aclose()
                raise
            break
        if conn.reusable:
            self.idle.append(conn)
        else:
            await conn.stream.aclose()
        return response

    async def aclose(self) -> None:
        while self.idle:
            await self.idle.pop().stream.aclose()


def expect(response: Response, *codes: int, what: str = "") -> Response:
    if response.status not in codes:
        raise BenchError(f"{what}: HTTP {response.status}: {response.content[:200]!r}")
    return response


async def open_sse(
    host: str, port: int, target: str
) -> tuple[anyio.abc.ByteStream, h11.Connection]:
    """Send an SSE GET; the caller reads the response with :func:`sse_chunks`."""
    stream = await anyio.connect_tcp(host, port)
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("Host", f"{host}:{port}"),
            ("Accept", "text/event-stream"),
            ("Accept-Encoding", "identity"),
        ],
    )
    await stream.send(conn.send(request) + conn.send(h11.EndOfMessage()))
    return stream, conn


async def next_sse_chunk(stream: anyio.abc.ByteStream, conn: h11.Connection) -> bytes:
    """The next piece of the SSE body (de-chunked)."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive(65536))
        elif isinstance(event, h11.Response):
            if event.status_code != 200:
                raise BenchError(f"SSE reader got HTTP {event.status_code}")
        elif isinstance(event, h11.Data):
            return bytes(event.data)
        else:
            raise BenchError(f"SSE response ended ({type(event).__name__})")


# ----------------------------------------------------------------------------- measurements


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of process ``pid`` (all its threads), from /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, client: Client, work: Workload, server_pid: int | None = None) -> None:
        self.client = client
        self.work = work
        self.created: list[str] = []
        self.server_pid = server_pid
        self.last_cpu_us: float | None = None
        """Server CPU (utime+stime, all threads) per append of the last concurrent run."""

    async def create(self, kind: str, headers: dict[str, str] = TEXT) -> tuple[str, str]:
        path = f"/v1/stream/bench-{kind}-{uuid.uuid4().hex[:10]}"
        r = expect(await self.client.request("PUT", path, headers), 201, what=f"PUT {path}")
        self.created.append(path)
        return path, r.headers["stream-next-offset"]

    async def cleanup(self) -> None:
        # Node's file store answers 404 to appends once it holds more than ~100 streams
        # (0.3.7, file-handle pool); deleting each figure's streams keeps every server small.
        while self.created:
            path = self.created.pop()
            expect(await self.client.request("DELETE", path), 204, what=f"DELETE {path}")

    async def append(self, path: str, body: bytes, headers: dict[str, str] = TEXT) -> None:
        r = await self.client.request("POST", path, headers, body)
        expect(r, 204, what=f"POST {path}")

    async def read_all(self, path: str) -> bytes:
        """Catch-up read from the beginning to the tail."""
        parts: list[bytes] = []
        offset = "-1"
        while True:
            r = await self.client.request("GET", f"{path}?offset={offset}")
            expect(r, 200, what=f"GET {path}")
            parts.append(r.content)
            offset = r.headers["stream-next-offset"]
            if r.headers.get("stream-up-to-date") == "true":
                return b"".join(parts)

    async def single(self) -> dict[str, float]:
        path, _ = await self.create("single")
        body = b"s" * 100
        for _ in range(50):  # warm-up
            await self.append(path, body)
        seconds: list[float] = []
        started = time.perf_counter()
        for _ in range(self.work.single):
            t0 = time.perf_counter()
            await self.append(path, body)
            seconds.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        if len(await self.read_all(path)) != 100 * (self.work.single + 50):
            raise BenchError("single: wrong stream length")
        return {
            "append_p50_ms": statistics.median(seconds) * 1000,
            "append_p99_ms": percentile(seconds, 0.99) * 1000,
            "single_appends_per_s": self.work.single / elapsed,
        }

    async def concurrent(self, *, json_mode: bool) -> float:
        """``clients`` connections append for ``concurrent_s`` seconds; appends/s.

        Time-bound rather than count-bound: every server is measured for as long, however
        fast (a fixed count took the fastest under a second, within the machine's jitter).
        """
        work = self.work
        headers = JSON_CT if json_mode else TEXT
        kind = "json" if json_mode else "conc"
        paths = [(await self.create(kind, headers))[0] for _ in range(work.streams)]
        acked = [0] * work.clients

        def body(c: int, k: int) -> bytes:
            if json_mode:
                return json.dumps({"client": c, "seq": k, "text": "j" * 64}).encode()
            return f"{c:04d}:{k:06d}:".encode().ljust(100, b"c")

        async def worker(c: int) -> None:
            k = 0
            while time.perf_counter() < deadline:
                await self.append(paths[(c + k * work.clients) % work.streams], body(c, k), headers)
                k += 1
            acked[c] = k

        cpu_before = process_cpu_seconds(self.server_pid) if self.server_pid else None
        started = time.perf_counter()
        deadline = started + work.concurrent_s
        async with anyio.create_task_group() as tg:
            for c in range(work.clients):
                tg.start_soon(worker, c)
        elapsed = time.perf_counter() - started
        cpu_after = process_cpu_seconds(self.server_pid) if self.server_pid else None
        sent = sum(acked)
        self.last_cpu_us = None
        if cpu_before is not None and cpu_after is not None:
            self.last_cpu_us = (cpu_after - cpu_before) / sent * 1e6
        total = 0
        for path in paths:
            data = await self.read_all(path)
            total += len(json.loads(data)) if json_mode else len(data) // 100
        if total != sent:
            raise BenchError(f"{kind}: {total} messages read, {sent} acknowledged")
        return sent / elapsed

    async def catch_up(self) -> float:
        work = self.work
        headers = {"Content-Type": "application/octet-stream"}
        path, _ = await self.create("catchup", headers)
        count = work.catchup_bytes // work.catchup_chunk
        chunk = os.urandom(work.catchup_chunk)
        for _ in range(count):
            await self.append(path, chunk, headers)
        rates: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            data = await self.read_all(path)
            elapsed = time.perf_counter() - started
            if len(data) != count * len(chunk) or data[: len(chunk)] != chunk:
                raise BenchError(f"catch-up: read {len(data)} bytes, wrote {count * len(chunk)}")
            rates.append(len(data) / elapsed / 1e6)
        return statistics.median(rates)

    async def delivery(
        self, read_loop: Callable[[str, str, Callable[[bytes], None]], Coroutine[Any, Any, None]]
    ) -> tuple[float, float]:
        """Append-to-delivery latency: one append at a time, the reader waiting at the tail."""
        path, tail = await self.create("live")
        samples = self.work.latency_samples
        sent: dict[int, float] = {}
        seconds: list[float] = []
        arrived = anyio.Event()

        def on_data(data: bytes) -> None:
            now = time.perf_counter()
            for token in data.decode().split(";"):
                if token:
                    seconds.append(now - sent[int(token)])
            arrived.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_loop, path, tail, on_data)
            await anyio.sleep(0.2)  # the reader's first request reaches the server
            for i in range(samples):
                await anyio.sleep(0.005)  # the reader re-arms after the previous delivery
                arrived = anyio.Event()
                sent[i] = time.perf_counter()
                await self.append(path, f"{i};".encode())
                with anyio.fail_after(30):
                    await arrived.wait()
            tg.cancel_scope.cancel()
        if len(seconds) != samples:
            raise BenchError(f"delivery: {len(seconds)} of {samples} appends arrived")
        return statistics.median(seconds) * 1000, percentile(seconds, 0.99) * 1000

    async def long_poll_loop(
        self, path: str, offset: str, on_data: Callable[[bytes], None]
    ) -> None:
        cursor = ""
        while True:
            target = f"{path}?{cursor}live=long-poll&offset={offset}"
            r = expect(await self.client.request("GET", target), 200, 204, what="long-poll")
            offset = r.headers["stream-next-offset"]
            if "stream-cursor" in r.headers:
                cursor = f"cursor={r.headers['stream-cursor']}&"
            if r.status == 200 and r.content:
                on_data(r.content)

    async def sse_loop(self, path: str, offset: str, on_data: Callable[[bytes], None]) -> None:
        stream, conn = await open_sse(
            self.client.host, self.client.port, f"{path}?live=sse&offset={offset}"
        )
        async with stream:
            decoder = SSEDecoder()
            while True:
                for event in decoder.receive_data(await next_sse_chunk(stream, conn)):
                    if event.event == "data":
                        on_data(event.data.encode())

    async def fan_out(self) -> float:
        work = self.work
        path, tail = await self.create("fan")
        target = f"{path}?live=sse&offset={tail}"
        ready = anyio.Semaphore(0)
        done = anyio.Semaphore(0)
        body = b"f" * 63 + b"~"  # one '~' per append: readers count them

        async def reader() -> None:
            stream, conn = await open_sse(self.client.host, self.client.port, target)
            async with stream:
                seen = 0
                head = b""
                while b"control" not in head:  # the server's first control event
                    head += await next_sse_chunk(stream, conn)
                seen += head.count(b"~")
                ready.release()
                while seen < work.fan_appends:
                    seen += (await next_sse_chunk(stream, conn)).count(b"~")
                if seen != work.fan_appends:
                    raise BenchError(f"fan-out reader saw {seen} appends")
                done.release()

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                gate = anyio.Semaphore(64)  # don't overflow the servers' listen backlogs

                async def start_reader() -> None:
                    async with gate:
                        tg.start_soon(reader)
                        await ready.acquire()

                async with anyio.create_task_group() as starters:
                    for _ in range(work.fan_readers):
                        starters.start_soon(start_reader)
                started = time.perf_counter()
                for _ in range(work.fan_appends):
                    await self.append(path, body)
                for _ in range(work.fan_readers):
                    await done.acquire()
                elapsed = time.perf_counter() - started
        return elapsed


async def _concurrent(bench: Bench, *, json_mode: bool) -> dict[str, float]:
    prefix = "json" if json_mode else "concurrent"
    out = {f"{prefix}_appends_per_s": await bench.concurrent(json_mode=json_mode)}
    if bench.last_cpu_us is not None:
        out[f"{prefix}_cpu_us"] = bench.last_cpu_us
    return out


async def _delivery(bench: Bench, kind: str) -> dict[str, float]:
    loop = bench.long_poll_loop if kind == "long_poll" else bench.sse_loop
    p50, p99 = await bench.delivery(loop)
    return {f"{kind}_p50_ms": p50, f"{kind}_p99_ms": p99}


# Measured one group at a time, every server in turn (see main()).
GROUPS: dict[str, Callable[[Bench], Coroutine[Any, Any, dict[str, float]]]] = {
    "single": Bench.single,
    "concurrent": partial(_concurrent, json_mode=False),
    "json": partial(_concurrent, json_mode=True),
    "catchup": lambda bench: _one("catchup_mb_per_s", bench.catch_up()),
    "long_poll": partial(_delivery, kind="long_poll"),
    "sse": partial(_delivery, kind="sse"),
    "fanout": lambda bench: _one("fanout_s", bench.fan_out()),
}


async def _one(figure: str, value: Coroutine[Any, Any, float]) -> dict[str, float]:
    return {figure: await value}


async def measure(server: Server, work: Workload, group: str) -> dict[str, float]:
    """One figure group against one server; its streams are deleted afterwards."""
    client = Client("127.0.0.1", server.port)
    try:
        bench = Bench(client, work, server.proc.pid)
        out = await GROUPS[group](bench)
        await bench.cleanup()
        return out
    finally:
        await client.aclose()


def first_error(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return first_error(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]


def run_group(server: Server, work: Workload, group: str, client_backend: str) -> dict[str, Any]:
    """:func:`measure` in its own event loop; a failure becomes ``{"error": ...}``."""
    if server.proc.poll() is not None:
        return {"error": f"{server.name} exited with {server.proc.returncode}"}
    try:
        result: dict[str, Any] = anyio.run(measure, server, work, group, backend=client_backend)
        return result
    except (
        BenchError,
        OSError,
        ExceptionGroup,
        anyio.EndOfStream,
        anyio.BrokenResourceError,
    ) as exc:
        return {"error": first_error(exc)}


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit in ("MB/s", "us"):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def better_ratio(ours: float | None, theirs: float | None, higher: bool) -> float | None:
    """How many times better ours is (> 1: ours better)."""
    if ours is None or theirs is None or ours == 0 or theirs == 0:
        return None
    return ours / theirs if higher else theirs / ours


def print_report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    width = 26
    print(f"{'figure':<{width}}" + "".join(f"{n:>14}" for n in names))
    print("-" * (width + 14 * len(names)))
    for figure, unit, _ in FIGURES:
        row = f"{figure + ' (' + unit + ')':<{width}}"
        for name in names:
            row += f"{fmt(results[name].get(figure), unit):>14}"
        print(row)
    for name in names:
        if "error" in results[name]:
            print(f"{name}: ERROR {results[name]['error']}")
    for ours, theirs in PAIRS:
        if ours not in results or theirs not in results:
            continue
        print(f"\n{ours} vs {theirs} (x times better; >= 1.00 means ours is at least as good):")
        wins = 0
        for figure, _, higher in FIGURES:
            r = better_ratio(results[ours].get(figure), results[theirs].get(figure), higher)
            wins += r is not None and r >= 1
            print(f"  {figure:<26} {'-' if r is None else f'{r:.2f}x'}")
        print(f"  at least as good on {wins} of {len(FIGURES)} figures")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated servers")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians")
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the short unmeasured warm-up of every server",
    )
    parser.add_argument("--client-backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {SERVERS}")
    work = QUICK if args.quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * work.fan_readers + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the servers
    if any(n.startswith("node") for n in names):
        npm_install()
    print(f"workload: {work}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, Node {node_version()}, load generator on "
        f"{args.client_backend}\n",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {n: [{} for _ in range(args.repeat)] for n in names}
    with ExitStack() as stack:
        servers = {}
        for name in names:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"ds-bench-{name}-"))
            servers[name] = Server(name, Path(data_dir))
            stack.callback(servers[name].stop)
        for server in servers.values():
            server.wait_ready()
        if args.warmup:
            for name, server in servers.items():
                warm = [run_group(server, QUICK, g, args.client_backend) for g in WARMUP]
                errors = [w["error"] for w in warm if "error" in w]
                print(f"warm-up {name}: {errors[0] if errors else 'ok'}", flush=True)
        for round_index in range(args.repeat):
            for group_index, group in enumerate(GROUPS):
                # Every server in turn, in an order that rotates: the machine's drift over
                # a run (other load, a host's CPU sharing) lands on all of them alike.
                shift = (round_index + group_index) % len(names)
                for name in names[shift:] + names[:shift]:
                    result = run_group(servers[name], work, group, args.client_backend)
                    if "error" in runs[name][round_index]:
                        result.pop("error", None)  # keep the round's first error
                    runs[name][round_index] |= result
            for name in names:
                result = runs[name][round_index]
                summary = result.get("error") or ", ".join(
                    f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float)
                )
                print(f"round {round_index + 1} {name}: {summary}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        merged: dict[str, Any] = {}
        for figure, _, _ in FIGURES:
            values = [r[figure] for r in runs[name] if figure in r]
            if values:
                merged[figure] = statistics.median(values)
        errors = [r["error"] for r in runs[name] if "error" in r]
        if errors:
            merged["error"] = f"{len(errors)}/{len(runs[name])} rounds failed: {errors[0]}"
        results[name] = merged
    print()
    print_report(results)
    if args.json:
        payload = {"workload": work.__dict__, "runs": runs, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
