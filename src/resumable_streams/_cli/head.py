"""``resumable-streams head URL``: a stream's metadata."""

from __future__ import annotations

import argparse
from typing import Any

from ..durable import AsyncDurableStream, HeadResult
from ._common import (
    EXIT_OK,
    add_common_arguments,
    http_timeout,
    json_dumps,
    parse_headers,
    retry_policy,
    run_async,
)

__all__ = ["add_parser", "head_fields"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``head``."""
    parser = sub.add_parser(
        "head",
        help="show a stream's metadata",
        description="Print a stream's content type, tail offset, state, TTL and expiry.",
    )
    add_common_arguments(parser, retries=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def head_fields(url: str, info: HeadResult) -> dict[str, Any]:
    """The fields ``head`` prints, in order (``None`` = not set)."""
    return {
        "url": url,
        "content_type": info.content_type,
        "next_offset": info.offset,
        "closed": info.stream_closed,
        "ttl_seconds": info.ttl_seconds,
        "expires_at": info.expires_at,
        "etag": info.etag,
    }


def run(args: argparse.Namespace) -> int:
    """Print the metadata on stdout (``name: value`` lines, or JSON)."""

    async def main() -> int:
        headers = parse_headers(args.header)
        async with AsyncDurableStream(
            args.url, headers=headers, timeout=http_timeout(args), retry=retry_policy(args)
        ) as handle:
            info = await handle.head()
        fields = head_fields(args.url, info)
        if args.json:
            print(json_dumps(fields))
        else:
            for name, value in fields.items():
                if value is not None:
                    text = str(value).lower() if isinstance(value, bool) else str(value)
                    print(f"{name.replace('_', '-')}: {text}")
        return EXIT_OK

    return run_async(main)
