"""What every client subcommand shares: arguments, running, errors -> exit codes, progress.

Exit codes (documented in ``docs/cli.md``):

====  ==========================================================================
0     success
1     any other failure (400 bad request, 5xx after retries, ...)
2     bad command line (argparse) or bad input (invalid JSON, bad header, ...)
3     no such stream (404), or it was deleted / expired (410)
4     conflict: exists with another configuration, closed, content-type mismatch,
      producer fenced by a newer epoch (409 / 403)
5     the server could not be reached (connection refused, DNS, timeout)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from typing import IO, Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2

from .._protocol.durable.client import RetryPolicy
from ..errors import (
    BackendUnavailableError,
    DurableStreamClientError,
    FetchError,
    RetentionGoneError,
    StaleEpochError,
    StreamConflictError,
    StreamNotFoundError,
)

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandError",
    "Progress",
    "add_common_arguments",
    "non_negative_float",
    "non_negative_int",
    "parse_headers",
    "port_number",
    "positive_float",
    "positive_int",
    "retry_policy",
    "run_async",
    "run_reporting",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_CONFLICT: Final = 4
EXIT_UNREACHABLE: Final = 5
EXIT_INTERRUPTED: Final = 130


class CommandError(Exception):
    """A failure the command has already phrased for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def stream_url(text: str) -> str:
    """Parse a stream URL: an ``http(s)://host/...`` URL, or a usage error naming the value."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a stream URL (expected http://HOST:PORT/v1/stream/NAME)"
        )
    return text


def _number(
    text: str, convert: Callable[[str], float], ok: Callable[[float], bool], want: str
) -> Any:
    try:
        value = convert(text)
    except ValueError:
        value = math.nan
    if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """For argparse: an integer >= 0 (else a usage error naming the value)."""
    result: int = _number(text, int, lambda v: v >= 0, "an integer >= 0")
    return result


def positive_int(text: str) -> int:
    """For argparse: an integer > 0 (else a usage error naming the value)."""
    result: int = _number(text, int, lambda v: v > 0, "an integer > 0")
    return result


def positive_float(text: str) -> float:
    """For argparse: a finite number > 0 (``nan``/``inf`` are usage errors too)."""
    result: float = _number(text, float, lambda v: v > 0, "a finite number > 0")
    return result


def non_negative_float(text: str) -> float:
    """For argparse: a finite number >= 0 (``nan``/``inf`` are usage errors too)."""
    result: float = _number(text, float, lambda v: v >= 0, "a finite number >= 0")
    return result


def port_number(text: str) -> int:
    """For argparse: a TCP port, 0-65535 (0 = any free port)."""
    result: int = _number(text, int, lambda v: 0 <= v <= 65535, "a TCP port 0-65535")
    return result


def add_common_arguments(
    parser: argparse.ArgumentParser, *, retries: int | None, progress: bool = False
) -> None:
    """URL, ``-H``, ``--timeout``, ``--retries`` (default ``retries``; ``None`` = forever)."""
    parser.add_argument("url", type=stream_url, metavar="URL", help="the stream's URL")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable), e.g. -H 'Authorization: Bearer TOKEN'",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        help="seconds to wait for the server on each request (default 30)",
    )
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        default=retries,
        help="retries of network errors, 5xx and 429 with backoff "
        + ("(default: forever)" if retries is None else f"(default {retries})"),
    )
    if progress:
        parser.add_argument(
            "--progress",
            choices=["auto", "on", "off"],
            default="auto",
            help="show progress and rates on stderr (auto: when stderr is a terminal)",
        )


def parse_headers(values: list[str]) -> dict[str, str]:
    """``["Name: value", ...]`` -> dict, or :class:`CommandError` naming the bad one."""
    headers: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip() or any(c in value for c in "\r\n"):
            raise CommandError(f"bad header {value!r}: expected 'Name: value'", EXIT_USAGE)
        headers[name.strip()] = rest.strip()
    return headers


def retry_policy(args: argparse.Namespace, *, max_delay: float = 10.0) -> RetryPolicy:
    """The client's backoff policy from ``--retries``."""
    retries: int | None = args.retries
    return RetryPolicy(max_retries=retries, max_delay=max_delay)


def http_timeout(args: argparse.Namespace) -> httpx2.Timeout:
    """The HTTP client's timeout from ``--timeout`` (connect: at most 10 s)."""
    seconds: float = args.timeout
    return httpx2.Timeout(seconds, connect=min(seconds, 10.0))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def describe(exc: DurableStreamClientError) -> tuple[str, int]:
    """A message for the user and the exit code for a client error."""
    url = exc.url or "the stream"
    details = f": {exc.details.strip()}" if exc.details and exc.details.strip() else ""
    if isinstance(exc, StreamNotFoundError):
        return f"no stream at {url} (HTTP 404)", EXIT_NOT_FOUND
    if isinstance(exc, RetentionGoneError):
        return f"{url} is gone (HTTP 410){details}", EXIT_NOT_FOUND
    if isinstance(exc, StaleEpochError):
        return f"producer fenced by a newer epoch on {url} (HTTP 403){details}", EXIT_CONFLICT
    if isinstance(exc, StreamConflictError):
        return f"conflict on {url} (HTTP 409, {exc.code}){details}", EXIT_CONFLICT
    if isinstance(exc, FetchError):
        cause = exc.__cause__
        if isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout):
            where = urlsplit(url).netloc or url
            return (
                f"cannot connect to {where} ({cause}); is the server running? "
                "(start one with: resumable-streams serve)",
                EXIT_UNREACHABLE,
            )
        if isinstance(cause, httpx2.TimeoutException):
            return f"timed out talking to {url} ({type(cause).__name__})", EXIT_UNREACHABLE
        if isinstance(cause, httpx2.TransportError):
            return f"network error talking to {url}: {cause}", EXIT_UNREACHABLE
        return str(exc), EXIT_ERROR
    if exc.status is not None:
        return f"the server refused: HTTP {exc.status} from {url}{details}", EXIT_ERROR
    return str(exc), EXIT_ERROR


def run_async(
    main: Callable[[], Awaitable[int]],
    *,
    on_interrupt: Callable[[], str | None] | None = None,
) -> int:
    """Run ``main`` under trio; turn every failure into a message on stderr and an exit code.

    ``on_interrupt()`` may return a hint printed after Ctrl-C (e.g. the offset to resume at).
    Ctrl-C (SIGINT) cancels ``main`` at its next checkpoint: a ``KeyboardInterrupt`` raised
    wherever the signal happens to land could be swallowed (in a weakref callback or a
    ``__del__``, Python only prints it) and leave the command running.
    """

    async def until_interrupted() -> int | None:
        code: list[int] = []
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            code.append(await main())
            tg.cancel_scope.cancel()
        return code[0] if code else None  # None: cancelled by SIGINT

    def run() -> int:
        code = anyio.run(until_interrupted, backend="trio")
        if code is None:
            raise KeyboardInterrupt
        return code

    return run_reporting(run, on_interrupt=on_interrupt)


def run_reporting(
    run: Callable[[], int],
    *,
    on_interrupt: Callable[[], str | None] | None = None,
    os_error_context: str | None = None,
) -> int:
    """Call ``run()``; turn known failures (also inside exception groups) into exit codes.

    Each becomes one ``error: ...`` line on stderr: :class:`CommandError`, client errors (see
    :func:`describe`), an unreachable backend (exit 5) and ``OSError`` (exit 1; one without a
    file name is prefixed with ``os_error_context``, e.g. ``cannot listen on HOST:PORT``).
    Anything else is a bug and keeps its traceback.
    """
    try:
        return run()
    except KeyboardInterrupt:
        return _interrupted(on_interrupt)
    except BaseException as exc:
        for leaf in _leaves(exc):
            if isinstance(leaf, KeyboardInterrupt):
                return _interrupted(on_interrupt)
            if isinstance(leaf, BrokenPipeError):
                return _broken_pipe()
            found = _explain(leaf, os_error_context)
            if found is not None:
                message, code = found
                print(f"error: {message}", file=sys.stderr)
                return code
        raise


def _interrupted(on_interrupt: Callable[[], str | None] | None) -> int:
    hint = on_interrupt() if on_interrupt is not None else None
    print(f"\ninterrupted{'; ' + hint if hint else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _explain(leaf: BaseException, os_error_context: str | None) -> tuple[str, int] | None:
    if isinstance(leaf, CommandError):
        return str(leaf), leaf.code
    if isinstance(leaf, DurableStreamClientError):
        return describe(leaf)
    if isinstance(leaf, BackendUnavailableError):
        return str(leaf), EXIT_UNREACHABLE
    if isinstance(leaf, OSError):
        if leaf.filename is None and os_error_context:
            return f"{os_error_context}: {leaf}", EXIT_ERROR
        return str(leaf), EXIT_ERROR
    return None


def _broken_pipe() -> int:
    """The reader of stdout went away (``... | head``): exit quietly, like coreutils."""
    # Python would complain again when flushing the dead stdout at exit.
    with suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class Progress:
    """One status line on stderr, rewritten at most every ``interval`` seconds.

    ``enabled=False`` makes every method a no-op, so callers need no ``if``.
    """

    def __init__(
        self, verb: str, *, enabled: bool, out: IO[str] | None = None, interval: float = 0.5
    ) -> None:
        self.verb = verb
        self.enabled = enabled
        self._out = out if out is not None else sys.stderr
        self._interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self.messages = 0
        self.nbytes = 0
        self.note = ""
        self._width = 0

    @staticmethod
    def wanted(mode: str, *, stdout_is_data: bool = False) -> bool:
        """Whether ``--progress mode`` shows progress here (auto: stderr is a terminal).

        With ``stdout_is_data`` (``tail``), auto also needs stdout not to be that terminal, so
        the status line never interleaves with the data.
        """
        if mode != "auto":
            return mode == "on"
        if not sys.stderr.isatty():
            return False
        return not (stdout_is_data and sys.stdout.isatty())

    def add(self, messages: int, nbytes: int) -> None:
        """Count ``messages`` / ``nbytes`` more; redraw if the interval has passed."""
        self.messages += messages
        self.nbytes += nbytes
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The status text: totals and average rates."""
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        text = (
            f"{self.verb} {self.messages:,} messages, {_human_bytes(self.nbytes)} "
            f"({_human_bytes(self.nbytes / elapsed)}/s, {self.messages / elapsed:,.0f} msg/s)"
        )
        return f"{text} {self.note}" if self.note else text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self._out.write("\r" + text + " " * pad)
        self._out.flush()

    def finish(self) -> None:
        """Draw the final totals and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self._out.write("\n")
            self._out.flush()


def json_dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept (what ``tail`` prints per message)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
