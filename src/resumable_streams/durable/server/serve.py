"""Run the Durable Streams server standalone (trio by default, asyncio on request).

Two HTTP/1.1 front ends serve the same ASGI app: the built-in one
(:mod:`~resumable_streams.durable.server.http1`, the default: several times less CPU per
request) and hypercorn (``http="hypercorn"``: HTTP/2 via h2c and its battle-tested h11
parser, at the cost of speed).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, Literal

import anyio

from ...storage.open import StorageKind
from .app import DEFAULT_CACHE_CONTROL, DEFAULT_MAX_BODY_SIZE, create_app
from .http1 import serve_http1
from .inspector import add_inspector

__all__ = ["serve"]

logger = logging.getLogger("resumable_streams.durable.server")


async def _watch_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _serve_builtin(app: Any, host: str, port: int) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop)
        await serve_http1(app, host, port, shutdown_trigger=stop.wait)
        tg.cancel_scope.cancel()


async def _serve_async(app: Any, config: Any, backend: str) -> None:
    if backend == "trio":
        from hypercorn.trio import serve as trio_serve

        hypercorn_serve: Any = trio_serve
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        hypercorn_serve = asyncio_serve

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
        tg.cancel_scope.cancel()


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 4437,
    storage: StorageKind = "sqlite",
    data_dir: str | Path | None = None,
    redis_url: str | None = None,
    long_poll_timeout: float = 30.0,
    sse_reconnect_interval: float = 60.0,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    backend: Literal["trio", "asyncio"] = "trio",
    cache_control: str = DEFAULT_CACHE_CONTROL,
    http: Literal["builtin", "hypercorn"] = "builtin",
) -> None:
    """Serve Durable Streams on ``host:port`` until SIGINT/SIGTERM (blocks).

    ``cache_control`` is the ``Cache-Control`` of cacheable catch-up responses (see
    :class:`~resumable_streams.durable.server.DurableStreamsApp`). ``http`` picks the
    HTTP server: the built-in HTTP/1.1 one, or hypercorn.
    """
    if http not in ("builtin", "hypercorn"):
        raise ValueError(f"unknown HTTP server {http!r}: choose 'builtin' or 'hypercorn'")

    app = create_app(
        storage,
        data_dir=data_dir,
        redis_url=redis_url,
        long_poll_timeout=long_poll_timeout,
        sse_reconnect_interval=sse_reconnect_interval,
        max_body_size=max_body_size,
        cache_control=cache_control,
    )
    add_inspector(app)  # the inspector page at /
    logger.info(
        "Durable Streams server on http://%s:%d (storage: %s, %s on %s)",
        host,
        port,
        storage,
        http,
        backend,
    )
    if http == "builtin":
        anyio.run(_serve_builtin, app, host, port, backend=backend)
        return
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 75.0
    anyio.run(_serve_async, app, config, backend, backend=backend)
