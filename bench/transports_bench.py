"""SSE and WebSocket transports: ours vs sse-starlette's ``EventSourceResponse``, one run.

Each scenario runs against a fresh server process (so that its RSS is its own): hypercorn's
trio worker ("trio") or uvicorn ("asyncio"), serving one Starlette app with three endpoints:

* ``ours-sse``: :class:`~resumable_streams.transports.ResumableSSEResponse` on an in-process
  (``memory://``) resumable-stream context;
* ``ours-ws``: :func:`~resumable_streams.transports.handle_resumable_websocket`, same context;
* ``sse-starlette``: ``EventSourceResponse`` over a generator yielding the same events from a
  list in memory (each event with an ``id``, as ours);
* ``bare`` (fan-out only): the floor - a minimal streaming ``Response`` that sends the same
  events with no heartbeat, no disconnect detection and no resumability.

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
    waiting = {"sse-starlette": 0, "bare": 0}
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

    return Starlette(
        routes=[
            Route("/ours-sse/{sid}", ours_sse),
            WebSocketRoute("/ours-ws/{sid}", ours_ws),
            Route("/sse-starlette/{sid}", sse_starlette),
            Route("/bare/{sid}", bare),
            Route("/create/{sid}", create, methods=["POST"]),
            Route("/go/{sid}", go, methods=["POST"]),
            Route("/stats", stats),
        ],
        lifespan=ctx.lifespan,
    )


def serve(backend: str, port: int) -> None:
    """Run the app on 127.0.0.1:port: hypercorn-trio or uvicorn (asyncio)."""
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
    def __init__(self, backend: str) -> None:
        from resumable_streams.testing import free_port

        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", backend, str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
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


def sid() -> str:
    return f"s{time.monotonic_ns()}"


async def one_stream(backend: str, impl: str, n: int) -> Result:
    server = Server(backend)
    try:
        await server.wait_ready()
        kind = "ws" if impl == "ours-ws" else "sse"
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
        kind = "ws" if impl == "ours-ws" else "sse"
        marker = WS_MARKER if kind == "ws" else SSE_MARKER
        counter = impl if impl in ("sse-starlette", "bare") else "ours"
        await asyncio.sleep(0.5)
        baseline = server.rss_kib()
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
        t0 = time.perf_counter()
        await server.request("POST", f"/go/{stream}")
        await asyncio.gather(*(read_to_end(r, marker) for r, _ in conns))
        elapsed = time.perf_counter() - t0
        for _, w in conns:
            w.close()
        total = n * clients
        return Result(
            backend, impl, f"{clients} subscribers", clients, n, elapsed, total / elapsed, idle
        )
    finally:
        server.stop()


async def run_all(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    backends = args.only.split(",") if args.only else ["trio", "asyncio"]
    for backend in backends:
        for impl in ("ours-sse", "sse-starlette", "ours-ws"):
            result = await one_stream(backend, impl, args.events)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
        for impl in ("ours-sse", "sse-starlette", "ours-ws", "bare"):
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
    args = parser.parse_args()
    if args.quick:
        args.events, args.subscribers, args.fanout_events = 2000, 100, 20
    results = asyncio.run(run_all(args))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
