"""``resumable-streams create URL``: create a stream (PUT)."""

from __future__ import annotations

import argparse
import sys

from ..durable import AsyncDurableStream
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_common_arguments,
    http_timeout,
    parse_headers,
    positive_int,
    retry_policy,
    run_async,
)

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``create``."""
    parser = sub.add_parser(
        "create",
        help="create a stream",
        description="Create a stream (idempotent: succeeds if it exists with the same settings).",
    )
    add_common_arguments(parser, retries=3)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--content-type",
        default=None,
        help="the stream's content type (default application/octet-stream)",
    )
    kind.add_argument(
        "--json", action="store_true", help="a JSON stream (content type application/json)"
    )
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument(
        "--ttl",
        type=positive_int,
        default=None,
        help="seconds without reads or writes before it expires",
    )
    expiry.add_argument(
        "--expires-at",
        default=None,
        metavar="RFC3339",
        help="absolute expiry time, e.g. 2030-01-01T00:00:00Z",
    )
    parser.add_argument(
        "--closed", action="store_true", help="create it already closed (with --data, final)"
    )
    parser.add_argument(
        "--data", default=None, help="initial content (a JSON value on a JSON stream)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Create the stream; report it on stderr."""
    content_type = "application/json" if args.json else args.content_type

    async def main() -> int:
        headers = parse_headers(args.header)
        async with AsyncDurableStream(
            args.url, headers=headers, timeout=http_timeout(args), retry=retry_policy(args)
        ) as handle:
            try:
                await handle.create_stream(
                    content_type=content_type,
                    ttl_seconds=args.ttl,
                    expires_at=args.expires_at,
                    body=args.data,
                    closed=args.closed,
                )
            except ValueError as exc:  # e.g. --data that is not JSON on a JSON stream
                raise CommandError(f"--data: {exc}", EXIT_USAGE) from None
            print(f"created {args.url} ({handle.content_type})", file=sys.stderr)
        return EXIT_OK

    return run_async(main)
