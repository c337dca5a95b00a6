"""Run an ASGI app on a real server (hypercorn trio/asyncio, uvicorn) in the test's event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import sniffio

from resumable_streams.resumable.context import ResumableStreamContext

#: Server kinds per anyio backend: every ASGI test runs on each.
SERVERS = {"trio": ["hypercorn"], "asyncio": ["hypercorn", "uvicorn"]}


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


@asynccontextmanager
async def run_asgi(app: Any, server: str) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (port 0) with ``server``; yield ``host:port``."""
    backend = sniffio.current_async_library()
    sock = _listening_socket()
    port = sock.getsockname()[1]
    try:
        async with anyio.create_task_group() as tg:
            if server == "hypercorn":
                from hypercorn.config import Config, Sockets
                from hypercorn.utils import wrap_app

                config = Config()
                config.accesslog = None
                config.errorlog = None
                config.graceful_timeout = 0.5
                stop = anyio.Event()
                worker_serve: Callable[..., Any]
                if backend == "trio":
                    from hypercorn.trio.run import worker_serve
                else:
                    from hypercorn.asyncio.run import worker_serve
                sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
                wrapped = wrap_app(app, config.wsgi_max_body_size, None)
                tg.start_soon(
                    lambda: worker_serve(
                        wrapped, config, sockets=sockets, shutdown_trigger=stop.wait
                    )
                )
                await _wait_listening(port)
                try:
                    yield f"127.0.0.1:{port}"
                finally:
                    stop.set()
            elif server == "uvicorn":
                import uvicorn

                assert backend == "asyncio"
                uconfig = uvicorn.Config(
                    app,
                    lifespan="off",
                    log_level="warning",
                    ws="wsproto",
                    timeout_graceful_shutdown=1,
                )
                userver = uvicorn.Server(uconfig)
                tg.start_soon(lambda: userver.serve(sockets=[sock]))
                await _wait_listening(port)
                try:
                    yield f"127.0.0.1:{port}"
                finally:
                    userver.should_exit = True
            else:
                raise ValueError(f"unknown server {server!r}")
    finally:
        sock.close()


async def _wait_listening(port: int) -> None:
    with anyio.fail_after(10):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.01)
                continue
            await stream.aclose()
            return


def chunk_subscriptions(ctx: ResumableStreamContext) -> int:
    """How many resumers' chunk channels this context is subscribed to right now."""
    prefix = ctx.keys.chunk("")
    return sum(1 for name in ctx.mux._channels if name.startswith(prefix))


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (no timing assertion: the timeout only stops a hang)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
