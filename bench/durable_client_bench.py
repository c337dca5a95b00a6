"""Durable Streams clients, side by side: this library and the official Python client.

One server for every measurement: this project's own (``resumable-streams serve --storage
memory``, the built-in HTTP/1.1 server on trio) in a subprocess on a free loopback port; the
clients run in this process, one after the other, so they compete with the server for the same
two cores alike.

Workload (defaults; ``--quick`` for a small smoke run):

* catch-up read: a JSON stream of 100,000 messages of 100 bytes (10 MB of JSON), read from
  the start to the tail (``live=False``) and iterated message by message (``iter_json``);
  and a binary stream of the same size, iterated chunk by chunk (``for chunk in res``: the
  official 0.1.0's ``read_bytes()`` stops after the first response). Messages/s and MB/s;
  5 reads per client per round, interleaved; the byte / message counts are checked. Each
  read once as a one-off ``stream(url)`` (the session makes its own connections: ours with
  its built-in HTTP/1.1 client, the official one with a new httpx client) and once with a
  caller's client passed in (``+client``: an ``httpx2`` client for ours, an ``httpx`` one for
  the official; steady-state throughput of the two httpx stacks).
* append: 3,000 JSON messages of 100 bytes with ``append()`` - one writer awaiting each
  append, and 32 concurrent writers (the handle's ``batching`` coalesces concurrent appends
  into one POST in both clients). Messages/s; the stream's content is checked afterwards.
  Handles are created without ``client=`` (ours: built-in HTTP/1.1; official: httpx), as
  are the producer's and the tail readers'.
* producer (ours only: the official 0.1.0 has none): 200,000 messages of 100 bytes through
  ``IdempotentProducer.append_nowait`` + ``flush()``, on a JSON and on a binary stream.
* tail latency: a reader tails a JSON stream (``live="sse"`` / ``"long-poll"``); a writer
  appends one message, waits until the reader has it, and so on, 200 times; time from
  the start of the append to the reader receiving the item; p50 / p99.

Implementations: ``ours`` (``resumable_streams.durable``) under trio, under asyncio and sync;
``official`` (PyPI ``durable-streams`` 0.1.0, httpx) async under asyncio and sync. Usage::

    .venv/bin/python bench/durable_client_bench.py [--quick] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import httpx2

from resumable_streams.durable import (
    AsyncDurableStream,
    DurableStream,
    IdempotentProducer,
    astream,
    stream,
)
from resumable_streams.testing import free_port

MSG_BYTES = 100


_PAD = MSG_BYTES - len('{"i":,"p":""}')


def message(i: int) -> dict[str, Any]:
    """Message ``i``: a JSON object of exactly 100 bytes when serialized compactly."""
    return {"i": i, "p": "x" * (_PAD - len(str(i)))}


def raw_message(i: int) -> bytes:
    """Binary message ``i``: 100 bytes, its index first."""
    return (f"{i:010d}" + "y" * (MSG_BYTES - 10)).encode()


# ----------------------------------------------------------------------------- the server


@contextmanager
def run_server() -> Iterator[tuple[str, int]]:
    """``resumable-streams serve --storage memory`` on a free port: (base URL, its pid)."""
    exe = shutil.which("resumable-streams", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("resumable-streams is not installed in this venv (pip install -e .)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "serve", "--storage", "memory", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "DEBUG"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"the server exited with {proc.returncode}:\n{err}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start listening") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1/stream", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def new_url(base: str, what: str) -> str:
    return f"{base}/{what}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- workloads


async def fill(url: str, count: int, *, json_mode: bool) -> None:
    """Create a stream holding ``count`` messages (written by our producer)."""
    ctype = "application/json" if json_mode else "application/octet-stream"
    async with (
        await AsyncDurableStream.create(url, content_type=ctype) as handle,
        IdempotentProducer(handle, producer_id="fill", linger_ms=1) as producer,
    ):
        for i in range(count):
            producer.append_nowait(message(i) if json_mode else raw_message(i))
            if i % 1000 == 999:
                await anyio.lowlevel.checkpoint()  # a real source yields now and then


def check_json(items: list[Any], count: int) -> None:
    if len(items) != count or any(item["i"] != i for i, item in enumerate(items)):
        raise RuntimeError(f"read {len(items)} messages, wrong content (expected {count})")


def official_httpx() -> Any:
    """httpx, the official client's HTTP library (installed with it; untyped here so that
    type-checking this file does not need the bench extra)."""
    return importlib.import_module("httpx")


# reads --------------------------------------------------------------------------------------
# Each returns (seconds, messages or bytes read). ``shared``: the caller's HTTP client is
# passed in (created before the clock starts); otherwise the session creates its own, as a
# one-off ``stream(url)`` does.


@dataclass
class Read:
    """One timed read: seconds, messages or bytes read, CPU seconds of client and server."""

    seconds: float
    count: int
    client_cpu: float
    server_cpu: float


@contextmanager
def measure(server_pid: int) -> Iterator[list[float]]:
    """Wall and CPU time of the block: yields a list that gets [wall, client CPU, server]."""
    out: list[float] = []
    cpu, srv, start = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
    yield out
    out += [time.perf_counter() - start, cpu_seconds() - cpu, cpu_seconds(server_pid) - srv]


async def read_async(impl: str, url: str, json_mode: bool, shared: bool, pid: int) -> Read:
    import durable_streams

    httpx = official_httpx()

    client: Any = None
    if shared:
        client = httpx2.AsyncClient() if impl == "ours" else httpx.AsyncClient()
    try:
        opener: Any = astream if impl == "ours" else durable_streams.astream
        with measure(pid) as m:
            async with opener(url, live=False, client=client) as res:
                if json_mode:
                    n = sum([1 async for _ in res.iter_json()])
                else:
                    n = sum([len(chunk) async for chunk in res])
        return Read(m[0], n, m[1], m[2])
    finally:
        if client is not None:
            await client.aclose()


def read_sync(impl: str, url: str, json_mode: bool, shared: bool, pid: int) -> Read:
    import durable_streams

    httpx = official_httpx()

    client: Any = None
    if shared:
        client = httpx2.Client() if impl == "ours" else httpx.Client()
    try:
        opener: Any = stream if impl == "ours" else durable_streams.stream
        with measure(pid) as m, opener(url, live=False, client=client) as res:
            items = res.iter_json() if json_mode else (len(chunk) for chunk in res)
            n = sum(1 for _ in items) if json_mode else sum(items)
        return Read(m[0], n, m[1], m[2])
    finally:
        if client is not None:
            client.close()


# appends ------------------------------------------------------------------------------------


async def append_async(
    open_handle: Callable[[str], Awaitable[Any]], url: str, count: int, writers: int
) -> None:
    handle = await open_handle(url)
    try:
        per = count // writers

        async def writer(w: int) -> None:
            for i in range(w * per, (w + 1) * per):
                await handle.append(message(i))

        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)
    finally:
        await handle.aclose()


async def open_ours_async(url: str) -> Any:
    return await AsyncDurableStream.create(url, content_type="application/json")


async def open_official_async(url: str) -> Any:
    import durable_streams

    return await durable_streams.AsyncDurableStream.create(url, content_type="application/json")


def append_sync(open_handle: Callable[[str], Any], url: str, count: int) -> None:
    handle = open_handle(url)
    try:
        for i in range(count):
            handle.append(message(i))
    finally:
        handle.close()


def open_ours_sync(url: str) -> Any:
    return DurableStream.create(url, content_type="application/json")


def open_official_sync(url: str) -> Any:
    import durable_streams

    return durable_streams.DurableStream.create(url, content_type="application/json")


async def count_json(url: str) -> list[Any]:
    async with astream(url, live=False) as res:
        items: list[Any] = await res.read_json()
        return items


# tail latency -------------------------------------------------------------------------------


async def tail_latency(impl: str, base: str, live: str, rounds: int) -> list[float]:
    """Seconds from the start of each append until the tailing reader has the message."""
    url = new_url(base, f"tail-{impl}-{live}")
    sent_at: dict[int, float] = {}
    got: list[float] = []
    arrived = anyio.Event()
    async with await AsyncDurableStream.create(url, content_type="application/json") as writer:
        tail = (await writer.head()).offset
        ready = anyio.Event()

        async def read() -> None:
            nonlocal arrived
            if impl == "official":
                import durable_streams

                session: Any = durable_streams.astream(url, offset=tail, live=cast(Any, live))
            else:
                session = astream(url, offset=tail, live=cast(Any, live))
            async with session as res:
                ready.set()
                async for item in res.iter_json():
                    got.append(time.perf_counter() - sent_at[item["i"]])
                    arrived.set()
                    if len(got) == rounds:
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await ready.wait()
            await anyio.sleep(0.2)  # let the reader's first live request reach the server
            for i in range(rounds):
                arrived = anyio.Event()
                sent_at[i] = time.perf_counter()
                await writer.append(message(i))
                with anyio.fail_after(30):
                    await arrived.wait()
    return got


# ----------------------------------------------------------------------------- the runner


def timed_async(backend: str, fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    async def main() -> tuple[float, Any]:
        start = time.perf_counter()
        result = await fn()
        return time.perf_counter() - start, result

    out: tuple[float, Any] = anyio.run(main, backend=backend)
    return out


def timed_sync(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Results:
    """Per (metric, implementation): the values of every round."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, list[float]]] = {}

    def add(self, metric: str, impl: str, value: float) -> None:
        self.data.setdefault(metric, {}).setdefault(impl, []).append(value)
        print(f"  {metric:<32} {impl:<18} {value:>14,.2f}", flush=True)

    def median(self, metric: str, impl: str) -> float | None:
        values = self.data.get(metric, {}).get(impl)
        return statistics.median(values) if values else None


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time of process ``pid`` (Linux ``/proc/PID/schedstat``, ns), or of this one."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def run_round(base: str, server_pid: int, cfg: dict[str, int], res: Results) -> None:
    n_read = cfg["read"]
    json_url = new_url(base, "read-json")
    bin_url = new_url(base, "read-bin")
    anyio.run(partial(fill, json_url, n_read, json_mode=True), backend="trio")
    anyio.run(partial(fill, bin_url, n_read, json_mode=False), backend="trio")
    mb = n_read * MSG_BYTES / 1e6

    readers = [
        (impl, mode, shared)
        for shared in (False, True)
        for impl, mode in (
            ("ours", "trio"),
            ("ours", "asyncio"),
            ("official", "asyncio"),
            ("ours", "sync"),
            ("official", "sync"),
        )
    ]
    for json_mode, url in ((True, json_url), (False, bin_url)):
        expect = n_read if json_mode else n_read * MSG_BYTES
        for impl, mode, shared in readers * cfg["read_reps"]:  # interleaved: noise hits all
            label = f"{impl}-{mode}{'+client' if shared else ''}"
            if mode == "sync":
                r = read_sync(impl, url, json_mode, shared, server_pid)
            else:
                r = anyio.run(read_async, impl, url, json_mode, shared, server_pid, backend=mode)
            if r.count != expect:
                raise RuntimeError(f"{label} read {r.count}, expected {expect}")
            kind = "json" if json_mode else "bytes"
            if json_mode:
                res.add("read json msg/s", label, n_read / r.seconds)
            else:
                res.add("read bytes MB/s", label, mb / r.seconds)
            if shared:  # where a read's time goes: this process vs the server process
                res.add(f"read {kind}: wall ms", label, 1000 * r.seconds)
                res.add(f"read {kind}: client CPU ms", label, 1000 * r.client_cpu)
                res.add(f"read {kind}: server CPU ms", label, 1000 * r.server_cpu)

    n_app = cfg["append"]
    openers = {"ours": open_ours_async, "official": open_official_async}
    for writers in (1, 32):
        metric = f"append msg/s ({writers} writer{'s' if writers > 1 else ''})"
        for name, opener in openers.items():
            for backend in ("trio", "asyncio") if name == "ours" else ("asyncio",):
                url = new_url(base, f"append-{name}")
                dt, _ = timed_async(backend, partial(append_async, opener, url, n_app, writers))
                items = anyio.run(count_json, url)
                if sorted(item["i"] for item in items) != list(range(n_app)):
                    raise RuntimeError(f"{name}-{backend}: appended content is wrong")
                res.add(metric, f"{name}-{backend}", n_app / dt)
    for name, sync_opener in (("ours", open_ours_sync), ("official", open_official_sync)):
        url = new_url(base, f"append-sync-{name}")
        dt, _ = timed_sync(partial(append_sync, sync_opener, url, n_app))
        check_json(anyio.run(count_json, url), n_app)
        res.add("append msg/s (1 writer)", f"{name}-sync", n_app / dt)

    n_prod = cfg["produce"]
    for json_mode in (True, False):
        metric = f"producer msg/s ({'json' if json_mode else 'binary'})"
        for backend in ("trio", "asyncio"):
            url = new_url(base, "produce")
            dt, _ = timed_async(backend, partial(fill, url, n_prod, json_mode=json_mode))
            if json_mode:
                check_json(anyio.run(count_json, url), n_prod)
            res.add(metric, f"ours-{backend}", n_prod / dt)

    for live in ("sse", "long-poll"):
        for impl, backend in (("ours", "trio"), ("ours", "asyncio"), ("official", "asyncio")):
            lat = anyio.run(tail_latency, impl, base, live, cfg["tail"], backend=backend)
            res.add(f"tail {live} p50 ms", f"{impl}-{backend}", 1000 * pct(lat, 0.5))
            res.add(f"tail {live} p99 ms", f"{impl}-{backend}", 1000 * pct(lat, 0.99))


RATIOS = [
    (metric, f"ours-{mode}{suffix}", f"official-{theirs}{suffix}")
    for metric in ("read json msg/s", "read bytes MB/s")
    for suffix in ("", "+client")
    for mode, theirs in (("asyncio", "asyncio"), ("trio", "asyncio"), ("sync", "sync"))
] + [
    ("append msg/s (1 writer)", "ours-asyncio", "official-asyncio"),
    ("append msg/s (1 writer)", "ours-trio", "official-asyncio"),
    ("append msg/s (1 writer)", "ours-sync", "official-sync"),
    ("append msg/s (32 writers)", "ours-asyncio", "official-asyncio"),
    ("append msg/s (32 writers)", "ours-trio", "official-asyncio"),
    ("tail sse p50 ms", "ours-asyncio", "official-asyncio"),
    ("tail sse p99 ms", "ours-asyncio", "official-asyncio"),
    ("tail long-poll p50 ms", "ours-asyncio", "official-asyncio"),
    ("tail long-poll p99 ms", "ours-asyncio", "official-asyncio"),
]


def report(res: Results) -> None:
    print("\nmedians:")
    for metric, impls in res.data.items():
        for impl in impls:
            value = res.median(metric, impl)
            print(f"  {metric:<32} {impl:<18} {value:>14,.2f}")
    print("\nratios, ours / official (throughput: higher is better; latency: lower is better):")
    for metric, ours, theirs in RATIOS:
        a, b = res.median(metric, ours), res.median(metric, theirs)
        if a is not None and b:
            print(f"  {metric:<32} {ours} / {theirs}: {a / b:.2f}x")
    for metric in ("producer msg/s (json)", "producer msg/s (binary)"):
        for impl in res.data.get(metric, {}):
            value = res.median(metric, impl)
            target = "meets" if value is not None and value >= 50_000 else "MISSES"
            print(f"  {metric} {impl}: {value:,.0f} ({target} the 50,000 msg/s target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, help="also write every value here")
    args = parser.parse_args()
    if args.quick:
        cfg = {"read": 5_000, "read_reps": 1, "append": 320, "produce": 20_000, "tail": 20}
    else:
        cfg = {"read": 100_000, "read_reps": 5, "append": 3_200, "produce": 200_000, "tail": 200}
    res = Results()
    with run_server() as (base, server_pid):
        for r in range(args.repeat):
            print(f"round {r + 1}/{args.repeat} {cfg}", flush=True)
            run_round(base, server_pid, cfg, res)
    report(res)
    if args.json:
        args.json.write_text(json.dumps(res.data, indent=2))


if __name__ == "__main__":
    main()
