"""``resumable-streams append URL [DATA ...]``: append through the idempotent producer.

Messages come from the arguments (one message each) or, without any, from stdin, read as it
arrives (never all in memory): a JSON stream takes one JSON value per line (JSON Lines); any
other stream takes one message per line (newline included, so the stream holds exactly the
bytes read), or with ``--chunk-size N`` up to N bytes per message as they arrive. Messages go
through :class:`~resumable_streams.durable.IdempotentProducer`: batched, pipelined, retried
without duplicates. At most ``--window`` unacknowledged bytes are in flight or buffered
(then the command waits for the server), so memory stays bounded however big the input.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

import anyio
import anyio.to_thread

from .._protocol.durable.client import is_json_type
from ..durable import AsyncDurableStream, IdempotentProducer
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Progress,
    add_common_arguments,
    http_timeout,
    non_negative_float,
    non_negative_int,
    parse_headers,
    positive_int,
    retry_policy,
    run_async,
)

__all__ = ["LineSplitter", "add_parser"]

_READ_SIZE = 64 * 1024


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``append``."""
    parser = sub.add_parser(
        "append",
        help="append messages (arguments or stdin) exactly once",
        description=(
            "Append each DATA argument as one message, or, without DATA (or with '-'), stream "
            "stdin: one message per line (a JSON value per line on a JSON stream), or with "
            "--chunk-size up to N bytes per message. Uses the idempotent producer: retried "
            "batches are never stored twice. Once everything is acknowledged, prints the "
            "stream's tail offset on stdout."
        ),
    )
    add_common_arguments(parser, retries=5, progress=True)
    parser.add_argument("data", nargs="*", metavar="DATA", help="messages ('-' = read stdin)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="the input is JSON (fails unless the stream is a JSON stream; implied on one)",
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="non-JSON stdin: messages of up to N bytes as they arrive, instead of lines",
    )
    parser.add_argument(
        "--close", action="store_true", help="close the stream after the last message"
    )
    parser.add_argument(
        "--producer-id",
        default=None,
        help="producer id (default: a random cli-... id); reuse it with --epoch/--auto-claim",
    )
    parser.add_argument(
        "--epoch", type=non_negative_int, default=0, help="producer epoch (default 0)"
    )
    parser.add_argument(
        "--auto-claim",
        action="store_true",
        help="take over from an older instance of the same producer id (bumps the epoch)",
    )
    parser.add_argument(
        "--linger-ms",
        type=non_negative_float,
        default=5.0,
        help="wait this long to fill a batch (default 5)",
    )
    parser.add_argument(
        "--max-batch-bytes",
        type=positive_int,
        default=1024 * 1024,
        help="largest batch, and largest line (default 1 MiB)",
    )
    parser.add_argument(
        "--window",
        type=positive_int,
        default=8 * 1024 * 1024,
        help="bytes appended but not yet acknowledged before waiting (default 8 MiB)",
    )
    parser.set_defaults(handler=run)


class LineSplitter:
    """Splits a byte stream into lines (newlines kept), holding at most ``max_line`` bytes.

    A line longer than ``max_line`` is cut into ``max_line`` pieces when ``split_long``, else
    :class:`CommandError` is raised naming the line number.
    """

    def __init__(self, max_line: int, *, split_long: bool) -> None:
        self._buffer = bytearray()
        self._max = max_line
        self._split_long = split_long
        self.line_number = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the lines (or ``max_line`` pieces of lines) it completed."""
        self._buffer += data
        out: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            start = self._take(out, start, end + 1)
            self.line_number += 1
        if len(self._buffer) - start > self._max:  # a long line without its newline yet
            start = self._take(out, start, len(self._buffer), complete=False)
        del self._buffer[:start]
        return out

    def _take(self, out: list[bytes], start: int, end: int, *, complete: bool = True) -> int:
        """Move ``buffer[start:end]`` to ``out`` in ``max_line`` pieces; return the new start.

        An incomplete line keeps its last piece (at most ``max_line`` bytes) in the buffer.
        """
        self._check(end - start)
        while end - start > self._max or (complete and start < end):
            piece = self._buffer[start : min(end, start + self._max)]
            out.append(bytes(piece))
            start += len(piece)
        return start

    def _check(self, length: int) -> None:
        if length > self._max and not self._split_long:
            raise CommandError(
                f"stdin line {self.line_number + 1} is longer than {self._max} bytes "
                "(raise --max-batch-bytes)",
                EXIT_USAGE,
            )

    def end(self) -> list[bytes]:
        """The last line, if the input did not end with a newline."""
        if not self._buffer:
            return []
        self.line_number += 1
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest]


async def _read_stdin(size: int) -> AsyncIterator[bytes]:
    """The bytes of stdin as they arrive (a worker thread does the blocking reads)."""
    fd = sys.stdin.fileno()
    while True:
        chunk = await anyio.to_thread.run_sync(os.read, fd, size, abandon_on_cancel=True)
        if not chunk:
            return
        yield chunk


async def _stdin_messages(
    *, json_mode: bool, chunk_size: int | None, max_line: int
) -> AsyncIterator[tuple[int, bytes]]:
    """``(line number, message)`` from stdin (line number 0 in chunk mode)."""
    if chunk_size is not None and not json_mode:
        async for chunk in _read_stdin(chunk_size):
            yield 0, chunk
        return
    splitter = LineSplitter(max_line, split_long=not json_mode)
    async for chunk in _read_stdin(_READ_SIZE):
        for line in splitter.feed(chunk):
            yield splitter.line_number, line
    for line in splitter.end():
        yield splitter.line_number, line


async def _arg_messages(data: Iterable[str]) -> AsyncIterator[tuple[int, bytes]]:
    for index, item in enumerate(data, 1):
        yield index, item.encode("utf-8", "surrogateescape")


def run(args: argparse.Namespace) -> int:
    """Append, print the tail offset after the last message on stdout."""
    if args.data == ["-"]:
        args.data = []
    if "-" in args.data:
        print("error: '-' (stdin) cannot be mixed with DATA arguments", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress("appended", enabled=Progress.wanted(args.progress))

    async def main() -> int:
        headers = parse_headers(args.header)
        async with await AsyncDurableStream.connect(
            args.url, headers=headers, timeout=http_timeout(args), retry=retry_policy(args)
        ) as handle:
            json_mode = is_json_type(handle.content_type)
            if args.json and not json_mode:
                raise CommandError(
                    f"--json: {args.url} is not a JSON stream (content type "
                    f"{handle.content_type!r})",
                    EXIT_USAGE,
                )
            if args.chunk_size is not None and json_mode:
                raise CommandError(
                    "--chunk-size: a JSON stream takes one JSON value per line", EXIT_USAGE
                )
            if args.data:
                messages = _arg_messages(args.data)
                where = "argument"
            else:
                messages = _stdin_messages(
                    json_mode=json_mode, chunk_size=args.chunk_size, max_line=args.max_batch_bytes
                )
                where = "stdin line"
            offset = await _produce(handle, args, messages, json_mode, where, progress)
            if offset is None:  # the producer does not report offsets: ask, once acknowledged
                offset = (await handle.head()).offset
        progress.finish()
        print(offset)
        return EXIT_OK

    return run_async(main)


@contextmanager
def _invalid_input(label: str) -> Iterator[None]:
    """Turn the producer's ``ValueError`` for invalid JSON into a usage error naming ``label``."""
    try:
        yield
    except ValueError as exc:
        raise CommandError(f"{label}: {exc}", EXIT_USAGE) from None


async def _produce(
    handle: AsyncDurableStream,
    args: argparse.Namespace,
    messages: AsyncIterator[tuple[int, bytes]],
    json_mode: bool,
    where: str,
    progress: Progress,
) -> str | None:
    """Send every message; with ``--close`` return the final offset (else ``None``)."""
    producer_id = args.producer_id or f"cli-{uuid.uuid4().hex[:12]}"
    offset: str | None = None
    async with IdempotentProducer(
        handle,
        producer_id,
        epoch=args.epoch,
        auto_claim=args.auto_claim,
        linger_ms=args.linger_ms,
        max_batch_bytes=args.max_batch_bytes,
    ) as producer:
        unacked = 0
        async for number, message in messages:
            if json_mode:
                message = message.strip()
                if not message:
                    continue
            with _invalid_input(f"{where} {number}" if number else where):
                producer.append_nowait(message)
            progress.add(1, len(message))
            unacked += len(message)
            if unacked >= args.window:
                await producer.flush()
                unacked = 0
        if args.close:
            offset = (await producer.close_stream()).final_offset
    return offset
