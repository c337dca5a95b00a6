"""Run the Durable Streams server standalone (trio by default, asyncio on request).

Two HTTP/1.1 front ends serve the same ASGI app: the built-in one
(:mod:`~resumable_streams.durable.server.http1`, the default: several times less CPU per
request) and hypercorn (``http="hypercorn"``: HTTP/2 via h2c and its battle-tested h11
parser, at the cost of speed).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
from starlette.applications import Starlette

from ...storage.open import StorageKind
from .app import DEFAULT_CACHE_CONTROL, DEFAULT_MAX_BODY_SIZE, create_app
from .http1 import HTTP1Limits, serve_http1
from .inspector import add_inspector

__all__ = ["serve"]

logger = logging.getLogger("resumable_streams.durable.server")


async def _watch_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _serve_builtin(app: Any, host: str, port: int, about: str, limits: HTTP1Limits) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop)
        bound = await tg.start(
            partial(serve_http1, app, host, port, shutdown_trigger=stop.wait, limits=limits)
        )
        _log_bound(bound, about)
    # serve_http1 returns once `stop` is set, and the signal watcher returns after setting it.


def _log_bound(bound: list[tuple[str, int]], about: str) -> None:
    """Log the addresses actually bound: the real port for port 0, every address of a name."""
    urls = ", ".join(f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}" for h, p in bound)
    logger.info("Durable Streams server on %s (%s)", urls, about)


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
    extend_app: Callable[[Starlette], object] | None = None,
    max_connections: int = 10_000,
    keep_alive_timeout: float = 75.0,
    head_timeout: float = 30.0,
    body_timeout: float = 30.0,
) -> None:
    """Serve Durable Streams on ``host:port`` until SIGINT/SIGTERM (blocks).

    ``cache_control`` is the ``Cache-Control`` of cacheable catch-up responses (see
    :class:`~resumable_streams.durable.server.DurableStreamsApp`). ``http`` picks the
    HTTP server: the built-in HTTP/1.1 one, or hypercorn. ``extend_app(app)`` may add
    routes before serving (the CLI adds Durable Streams over WebSocket with hypercorn).

    ``max_connections``, ``head_timeout`` and ``body_timeout`` are limits of the built-in
    server (:class:`~resumable_streams.durable.server.http1.HTTP1Limits`);
    ``keep_alive_timeout`` applies to both servers.
    """
    if http not in ("builtin", "hypercorn"):
        raise ValueError(f"unknown HTTP server {http!r}: choose 'builtin' or 'hypercorn'")
    limits = HTTP1Limits(
        max_connections=max_connections,
        keep_alive_timeout=keep_alive_timeout,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
    )  # validated before anything starts

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
    if extend_app is not None:
        extend_app(app)
    about = f"storage: {storage}, {http} on {backend}"
    if http == "builtin":
        anyio.run(_serve_builtin, app, host, port, about, limits, backend=backend)
        return
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # Bind and listen with hypercorn's own code, but here: a busy port fails before any event
    # loop runs (hypercorn on asyncio leaves its lifespan task behind otherwise), and the log
    # below names the real address, already accepting. hypercorn takes them over as fd://.
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        sock.listen(config.backlog)
    bound = [(str(sock.getsockname()[0]), int(sock.getsockname()[1])) for sock in sockets]
    config.bind = [f"fd://{sock.detach()}" for sock in sockets]
    _log_bound(bound, about)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging config, once
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = keep_alive_timeout
    anyio.run(_serve_async, app, config, backend, backend=backend)
