"""SSE and WebSocket transports: ours vs sse-starlette's ``EventSourceResponse``, one run.

Each scenario runs against a fresh server process (so that its RSS is its own): hypercorn's
trio worker ("trio") or uvicorn ("asyncio"), serving one Starlette app with three endpoints:

* ``ours-sse``: :class:`~resumable_streams.transports.ResumableSSEResponse` on an in-process
  (``memory://``) resumable-stream context;
* ``ours-ws``: :func:`~resumable_streams.transports.handle_resumable_websocket`, same context;
* ``sse-starlette``: ``EventSourceResponse`` over a generator yielding the same events from a
  list in memory (each event with an ``id``, as ours);
* ``bare`` (fan-out only): the floor - a minimal streaming ``Response`` that sends the same
  events with no heartbeat, no disconnect detection and no resumability; ``bare-ws`` the
  same over WebSocket (accept, wait, send, close).

Workloads (defaults; ``--quick`` for a smoke run):

* one stream: one client reads 20,000 events of 32 characters from the start; events/s.
* fan-out: 1,000 clients subscribe to one stream and wait (idle) - the server's RSS growth
  divided by 1,000 is the memory per idle subscriber - then the producer emits 200 events
  and every client reads to the end; events/s = events x clients / (time from the start
  signal until the last client saw the end). For ours the 1,000 clients are resumers of one
  producer (its fan-out), for sse-starlette 1,000 generators over one list.

The clients run in this process (asyncio, raw sockets; they count events and stop at the
end marker, without parsing), on the other core of a 2-core machine. Usage::

    .venv/bin/python bench/transports_bench.py [--quick] [--only trio,asyncio] [--json FILE]
    .venv/bin/python bench/transports_bench.py --memory [--impls ours-sse,bare] [--top 30]

``--memory`` runs only the idle part of the fan-out, twice per implementation: RSS growth per
idle subscriber (a plain server), then Python heap growth per idle subscriber (a server under
tracemalloc; with ``--top N`` the N source lines it grew at most).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FILL = "abcdefghijklmnopqrstuvw"
END = "end-of-stream"


def event_text(i: int) -> str:
    """Event ``i``: 32 characters, its index first."""
    return f"{i:08d} {FILL}"


# ------------------------------------------------------------------------------------------
# The server (a subprocess)


def build_app() -> Any:
    """The Starlette app every scenario runs against."""
    import anyio
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    from resumable_streams import create_resumable_stream_context
    from resumable_streams.transports import ResumableSSEResponse, handle_resumable_websocket

    ctx = create_resumable_stream_context(redis_url="memory://bench")
    gates: dict[str, anyio.Event] = {}
    waiting = {"sse-starlette": 0, "bare": 0, "bare-ws": 0}
    events = [event_text(i) for i in range(100_000)]

    def gate(sid: str) -> anyio.Event:
        return gates.setdefault(sid, anyio.Event())

    def source(sid: str, n: int, gated: bool) -> Callable[[], AsyncIterator[str]]:
        async def gen() -> AsyncIterator[str]:
            if gated:
                await gate(sid).wait()
            for i in range(n):
                yield events[i]

        return gen

    def params(query: Any) -> tuple[int, bool]:
        return int(query.get("n", "1000")), query.get("gate") == "1"

    async def ours_sse(request: Request) -> Response:
        sid = request.path_params["sid"]
        n, gated = params(request.query_params)
        return ResumableSSEResponse(ctx, sid, source(sid, n, gated))

    async def ours_ws(websocket: WebSocket) -> None:
        sid = websocket.path_params["sid"]
        n, gated = params(websocket.query_params)
        await handle_resumable_websocket(websocket, ctx, sid, source(sid, n, gated))

    async def sse_starlette(request: Request) -> Response:
        sid = request.path_params["sid"]
        n, gated = params(request.query_params)

        async def gen() -> AsyncIterator[dict[str, str]]:
            if gated:
                waiting["sse-starlette"] += 1
                await gate(sid).wait()
            for i in range(n):
                yield {"data": events[i], "id": str(i)}
            yield {"event": "done", "data": END}

        response: Response = EventSourceResponse(gen())  # Any where sse-starlette is absent
        return response

    class Bare(Response):
        """The floor: a minimal streaming response (no heartbeat, no disconnect watch)."""

        def __init__(self, sid: str, n: int, gated: bool) -> None:
            self.sid, self.n, self.gated = sid, n, gated
            self.background = None

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if self.gated:
                waiting["bare"] += 1
                await gate(self.sid).wait()
            for i in range(self.n):
                body = f"id: {i}\ndata: {events[i]}\n\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            done = f"event: done\ndata: {END}\n\n".encode()
            await send({"type": "http.response.body", "body": done, "more_body": False})

    async def bare_ws(websocket: WebSocket) -> None:
        """The WebSocket floor: accept, wait for the gate, send the events, close."""
        await websocket.accept()
        await websocket.receive()  # the hello
        sid = websocket.path_params["sid"]
        n, gated = params(websocket.query_params)
        if gated:
            waiting["bare-ws"] += 1
            await gate(sid).wait()
        for i in range(n):
            await websocket.send_text(f'{{"position":{i},"text":"{events[i]}"}}')
        await websocket.close(1000, "done")

    async def bare(request: Request) -> Response:
        n, gated = params(request.query_params)
        return Bare(request.path_params["sid"], n, gated)

    async def create(request: Request) -> Response:
        """Start ours' producer (it waits for the gate); the creator's view is dropped."""
        sid = request.path_params["sid"]
        n, gated = params(request.query_params)
        stream = await ctx.resumable_stream(sid, source(sid, n, gated))
        if stream is not None:
            await stream.aclose()
        return JSONResponse({"ok": True})

    async def go(request: Request) -> Response:
        gate(request.path_params["sid"]).set()
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> Response:
        prefix = ctx.keys.chunk("")
        ours = sum(1 for name in ctx.mux._channels if name.startswith(prefix))
        return JSONResponse({"ours": ours, **waiting})

    snapshots: list[Any] = []

    async def heap(request: Request) -> Response:
        """With tracemalloc on (``--memory``): the traced heap; ``?top=N`` the growth since
        the first call, grouped by source line."""
        import gc
        import tracemalloc

        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        if not snapshots:
            snapshots.append(snapshot)
        top = int(request.query_params.get("top", "0"))
        lines = [
            f"{stat.size_diff:>10} {stat.count_diff:>7} {stat.traceback}"
            for stat in snapshot.compare_to(snapshots[0], "lineno")[:top]
        ]
        return JSONResponse({"traced": tracemalloc.get_traced_memory()[0], "top": lines})

    return Starlette(
        routes=[
            Route("/ours-sse/{sid}", ours_sse),
            WebSocketRoute("/ours-ws/{sid}", ours_ws),
            Route("/sse-starlette/{sid}", sse_starlette),
            Route("/bare/{sid}", bare),
            WebSocketRoute("/bare-ws/{sid}", bare_ws),
            Route("/create/{sid}", create, methods=["POST"]),
            Route("/go/{sid}", go, methods=["POST"]),
            Route("/stats", stats),
            Route("/heap", heap),
        ],
        lifespan=ctx.lifespan,
    )


def serve(backend: str, port: int) -> None:
    """Run the app on 127.0.0.1:port: hypercorn-trio or uvicorn (asyncio)."""
    if os.environ.get("TRANSPORTS_BENCH_TRACEMALLOC"):
        import tracemalloc

        tracemalloc.start()
    app = build_app()
    if backend == "trio":
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve as trio_serve

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.backlog = 4096
        trio.run(trio_serve, app, config)
    else:
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", ws="wsproto", backlog=4096)


# ------------------------------------------------------------------------------------------
# The clients (raw asyncio sockets: cheap, identical for every server)


class Server:
    traced = False

    def __init__(self, backend: str) -> None:
        from resumable_streams.testing import free_port

        self.port = free_port()
        env = dict(os.environ)
        if self.traced:
            env["TRANSPORTS_BENCH_TRACEMALLOC"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", backend, str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env=env,
        )

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await self.request("GET", "/stats")
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    async def request(self, method: str, path: str) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = await reader.read()
        writer.close()
        body = data.split(b"\r\n\r\n", 1)[1]
        result: dict[str, Any] = json.loads(body)
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


TOP = 0
MEMORY_ONLY = False
SSE_MARKER = b"event: done"
WS_MARKER = b"\x03\xe8done"  # the close frame: code 1000, reason "done"


async def open_client(
    port: int, kind: str, path: str, *, wait_head: bool = False
) -> tuple[Any, Any]:
    """Connect; with ``wait_head``, return once the response head arrived (one by one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        hello = b'{"position":0}'
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(hello))
        writer.write(bytes([0x81, 0x80 | len(hello)]) + mask + masked)
    else:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        if wait_head:
            await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def read_to_end(reader: Any, marker: bytes) -> int:
    """Read until ``marker``; return the bytes received."""
    tail = b""
    total = 0
    while True:
        data = await reader.read(1 << 16)
        if not data:
            raise RuntimeError("connection closed before the end")
        total += len(data)
        if marker in tail + data:
            return total
        tail = data[-16:]


@dataclass
class Result:
    backend: str
    impl: str
    scenario: str
    clients: int
    events: int
    seconds: float
    events_per_s: float
    idle_kib_per_subscriber: float | None = None
    idle_heap_bytes_per_subscriber: float | None = None


def sid() -> str:
    return f"s{time.monotonic_ns()}"


async def one_stream(backend: str, impl: str, n: int) -> Result:
    server = Server(backend)
    try:
        await server.wait_ready()
        kind = "ws" if impl.endswith("-ws") else "sse"
        marker = WS_MARKER if kind == "ws" else SSE_MARKER
        t0 = time.perf_counter()
        reader, writer = await open_client(server.port, kind, f"/{impl}/{sid()}?n={n}")
        await read_to_end(reader, marker)
        elapsed = time.perf_counter() - t0
        writer.close()
        return Result(backend, impl, "one stream", 1, n, elapsed, n / elapsed)
    finally:
        server.stop()


async def fan_out(backend: str, impl: str, n: int, clients: int) -> Result:
    server = Server(backend)
    try:
        await server.wait_ready()
        stream = sid()
        kind = "ws" if impl.endswith("-ws") else "sse"
        marker = WS_MARKER if kind == "ws" else SSE_MARKER
        counter = impl if impl in ("sse-starlette", "bare", "bare-ws") else "ours"
        await asyncio.sleep(0.5)
        baseline = server.rss_kib()
        if server.traced:
            heap_baseline = (await server.request("GET", "/heap"))["traced"]
        if impl.startswith("ours"):
            await server.request("POST", f"/create/{stream}?n={n}&gate=1")
        conns = []
        for i in range(clients):
            path = f"/{impl}/{stream}?n={n}&gate=1"
            conns.append(await open_client(server.port, kind, path, wait_head=True))
            if i % 100 == 99:
                await asyncio.sleep(0)
        while (await server.request("GET", "/stats"))[counter] < clients:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        idle = (server.rss_kib() - baseline) / clients
        heap = None
        if server.traced:
            grown = await server.request("GET", f"/heap?top={TOP}")
            heap = (grown["traced"] - heap_baseline) / clients
            print(f"{backend} {impl}: heap growth by line, {clients} idle subscribers:")
            print("\n".join(grown["top"]), flush=True)
        if MEMORY_ONLY:
            server.stop()
            return Result(backend, impl, f"{clients} subscribers", clients, 0, 0, 0, idle, heap)
        t0 = time.perf_counter()
        await server.request("POST", f"/go/{stream}")
        await asyncio.gather(*(read_to_end(r, marker) for r, _ in conns))
        elapsed = time.perf_counter() - t0
        for _, w in conns:
            w.close()
        total = n * clients
        return Result(
            backend,
            impl,
            f"{clients} subscribers",
            clients,
            n,
            elapsed,
            total / elapsed,
            idle,
            heap,
        )
    finally:
        server.stop()


async def run_all(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    backends = args.only.split(",") if args.only else ["trio", "asyncio"]
    impls = (
        args.impls.split(",")
        if args.impls
        else ["ours-sse", "sse-starlette", "ours-ws", "bare", "bare-ws"]
    )
    for backend in backends:
        if args.memory:
            for impl in impls:
                # RSS from a server without tracemalloc (which costs memory of its own),
                # the Python heap from a second one under it.
                Server.traced = False
                result = await fan_out(backend, impl, args.fanout_events, args.subscribers)
                Server.traced = True
                traced = await fan_out(backend, impl, args.fanout_events, args.subscribers)
                result.idle_heap_bytes_per_subscriber = traced.idle_heap_bytes_per_subscriber
                print(json.dumps(asdict(result)), flush=True)
                results.append(result)
            continue
        for impl in ("ours-sse", "sse-starlette", "ours-ws"):
            result = await one_stream(backend, impl, args.events)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
        for impl in ("ours-sse", "sse-starlette", "ours-ws", "bare", "bare-ws"):
            result = await fan_out(backend, impl, args.fanout_events, args.subscribers)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| server | implementation | scenario | events/s | idle KiB/subscriber |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        server = "hypercorn (trio)" if r.backend == "trio" else "uvicorn (asyncio)"
        idle = "" if r.idle_kib_per_subscriber is None else f"{r.idle_kib_per_subscriber:.1f}"
        if r.idle_heap_bytes_per_subscriber is not None:
            idle += f" (heap {r.idle_heap_bytes_per_subscriber:,.0f} B)"
        lines.append(f"| {server} | {r.impl} | {r.scenario} | {r.events_per_s:,.0f} | {idle} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--only", help="comma-separated backends: trio,asyncio")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-events", type=int, default=200)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="idle subscribers only, server under tracemalloc: RSS and Python heap growth",
    )
    parser.add_argument("--impls", help="with --memory: comma-separated implementations")
    parser.add_argument("--top", type=int, default=0, help="with --memory: top N heap lines")
    args = parser.parse_args()
    global TOP, MEMORY_ONLY
    TOP, MEMORY_ONLY = args.top, args.memory
    if args.quick:
        args.events, args.subscribers, args.fanout_events = 2000, 100, 20
    results = asyncio.run(run_all(args))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
