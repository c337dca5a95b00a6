"""``resumable-streams delete URL``: delete a stream."""

from __future__ import annotations

import argparse
import sys

from ..durable import AsyncDurableStream
from ._common import (
    EXIT_OK,
    add_common_arguments,
    http_timeout,
    parse_headers,
    retry_policy,
    run_async,
)

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``delete``."""
    parser = sub.add_parser(
        "delete", help="delete a stream", description="Delete a stream (404 if there is none)."
    )
    add_common_arguments(parser, retries=3)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Delete the stream; report it on stderr."""

    async def main() -> int:
        headers = parse_headers(args.header)
        async with AsyncDurableStream(
            args.url, headers=headers, timeout=http_timeout(args), retry=retry_policy(args)
        ) as handle:
            await handle.delete()
        print(f"deleted {args.url}", file=sys.stderr)
        return EXIT_OK

    return run_async(main)
