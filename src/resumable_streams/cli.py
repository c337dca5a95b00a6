"""The ``resumable-streams`` command line: a small subcommand dispatcher.

Each subcommand registers itself with :func:`_add_serve`-style helpers that add a parser and
set ``handler``; :func:`main` parses and calls it. ``serve`` lives here; the client commands
(``create``, ``append``, ``tail``, ``head``, ``delete``) live in :mod:`resumable_streams._cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli import add_client_commands
from ._cli._common import port_number, positive_float, positive_int, run_reporting

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "resumable-streams")


def _durable_websocket(app: Starlette) -> None:
    from .transports import add_durable_websocket

    add_durable_websocket(app)


def _run_serve(args: argparse.Namespace) -> int:
    from .durable.server.app import DEFAULT_CACHE_CONTROL
    from .durable.server.serve import serve

    if args.storage == "redis" and not args.redis_url:
        print("error: --storage redis needs --redis-url", file=sys.stderr)
        return 2

    def run() -> int:
        serve(
            host=args.host,
            port=args.port,
            storage=args.storage,
            data_dir=args.data_dir,
            redis_url=args.redis_url,
            long_poll_timeout=args.long_poll_timeout,
            sse_reconnect_interval=args.sse_reconnect_interval,
            max_body_size=args.max_body_size,
            backend=args.backend,
            cache_control=args.cache_control or DEFAULT_CACHE_CONTROL,
            http=args.http,
            max_connections=args.max_connections,
            keep_alive_timeout=args.keep_alive_timeout,
            head_timeout=args.head_timeout,
            body_timeout=args.body_timeout,
            # hypercorn speaks WebSocket (the built-in HTTP/1.1 server does not): serve
            # Durable Streams over WebSocket at the same /v1/stream/<path> URLs there.
            extend_app=_durable_websocket if args.http == "hypercorn" else None,
        )
        return 0

    return run_reporting(run, os_error_context=f"cannot listen on {args.host}:{args.port}")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def cache_control(text: str) -> str:
        from .durable.server.app import check_cache_control

        try:
            return check_cache_control(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = sub.add_parser(
        "serve",
        help="run the Durable Streams server",
        description="Serve Durable Streams at http://HOST:PORT/v1/stream/<path>.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, default=4437, help="TCP port (default 4437; 0 = any free)"
    )
    parser.add_argument(
        "--storage",
        choices=["memory", "sqlite", "redis"],
        default="sqlite",
        help="storage engine (default sqlite: durable, in --data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        default=_default_data_dir(),
        help="directory for sqlite storage (default $XDG_DATA_HOME/resumable-streams)",
    )
    parser.add_argument("--redis-url", default=None, help="redis:// URL for --storage redis")
    parser.add_argument(
        "--long-poll-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a long-poll waits before 204 (default 30)",
    )
    parser.add_argument(
        "--sse-reconnect-interval",
        type=positive_float,
        default=60.0,
        help="seconds after which an SSE response is closed for the client to reconnect",
    )
    parser.add_argument(
        "--max-body-size",
        type=positive_int,
        default=64 * 1024 * 1024,
        help="largest PUT/POST body in bytes (default 64 MiB; larger gets 413)",
    )
    parser.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="event loop (default trio)",
    )
    parser.add_argument(
        "--http",
        choices=["builtin", "hypercorn"],
        default="builtin",
        help="HTTP server: the built-in HTTP/1.1 one (default, fastest) or hypercorn",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=10_000,
        help="open connections at most (built-in server; default 10000): one more gets 503",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=positive_float,
        default=75.0,
        help="seconds an idle keep-alive connection stays open (default 75)",
    )
    parser.add_argument(
        "--head-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a request head may take to arrive once begun (built-in; default 30; "
        "then 408)",
    )
    parser.add_argument(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a request body may stall without a byte (built-in; default 30; then 408)",
    )
    parser.add_argument(
        "--cache-control",
        type=cache_control,
        default=None,
        metavar="VALUE",
        help="Cache-Control of cacheable catch-up reads, e.g. for a CDN (default 'public, "
        "max-age=60, stale-while-revalidate=300'; HEAD, offset=now and 204 stay no-store)",
    )
    parser.set_defaults(handler=_run_serve)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="resumable-streams")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``resumable-streams``; returns the process exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot give DATA after an option to ``append URL --opt DATA`` (bpo-15112).
    if extra and (not hasattr(args, "data") or any(e.startswith("--") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.data = [*args.data, *extra]
    debug = args.verbose or bool(os.environ.get("DEBUG"))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        for noisy in ("httpx2", "coredis"):  # per-request / per-retry INFO lines
            logging.getLogger(noisy).setLevel(logging.WARNING)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
