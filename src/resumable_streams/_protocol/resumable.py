"""The resumable-stream Redis wire protocol of npm ``resumable-stream`` 2.x, sans I/O.

Everything a process needs to agree on with a Node.js peer lives here: key and channel names,
the DONE marker, the JSON resume request, and ``skipCharacters`` arithmetic in UTF-16 code
units (JavaScript's ``String.prototype.slice``). :class:`ReplayBuffer` is the producer's
memory of what it has produced so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TTL",
    "DONE_MESSAGE",
    "DONE_VALUE",
    "Keys",
    "ReplayBuffer",
    "RequestError",
    "ResumeRequest",
    "encode_request",
    "is_not_integer_error",
    "parse_request",
    "utf16_len",
    "utf16_slice",
]

DONE_MESSAGE: Final = "\n\n\nDONE_SENTINEL_hasdfasudfyge374%$%^$EDSATRTYFtydryrte\n"
"""Published on a listener's chunk channel when the stream is finished (byte-exact)."""
DONE_VALUE: Final = "DONE"
"""Sentinel value of a finished stream."""
DEFAULT_KEY_PREFIX: Final = "resumable-stream"
DEFAULT_TTL: Final = 24 * 60 * 60
DEFAULT_ACK_TIMEOUT: Final = 1.0
MAX_LISTENER_ID_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key and channel names for one key prefix (``{prefix}:rs:...``)."""

    prefix: str

    @classmethod
    def for_prefix(cls, key_prefix: str | None) -> Keys:
        """Build the names the Node library uses for ``keyPrefix`` (empty means default)."""
        return cls(f"{key_prefix or DEFAULT_KEY_PREFIX}:rs")

    def sentinel(self, stream_id: str) -> str:
        """The string key holding ``"1"``/a count while active and ``"DONE"`` when finished."""
        return f"{self.prefix}:sentinel:{stream_id}"

    def request(self, stream_id: str) -> str:
        """The channel resumers publish their JSON resume requests on."""
        return f"{self.prefix}:request:{stream_id}"

    def chunk(self, listener_id: str) -> str:
        """The channel one resumer receives its replay, live chunks and DONE on."""
        return f"{self.prefix}:chunk:{listener_id}"

    def cancel(self, stream_id: str) -> str:
        """The channel that stops a stream from any process (upstream ``cancelStream``)."""
        return f"{self.prefix}:cancel:{stream_id}"


class RequestError(ValueError):
    """A resume request on the wire is malformed; the message says why."""


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """A parsed resume request: who listens, and how many UTF-16 units to skip."""

    listener_id: str
    skip_characters: int


def encode_request(listener_id: str, skip_characters: int | None) -> str:
    """Encode a request exactly as Node does (``skipCharacters`` omitted when ``None``)."""
    if skip_characters is None:
        return json.dumps({"listenerId": listener_id}, separators=(",", ":"))
    return json.dumps(
        {"listenerId": listener_id, "skipCharacters": skip_characters}, separators=(",", ":")
    )


def _coerce_skip(value: object) -> int:
    """Coerce ``skipCharacters`` the way JavaScript's ``slice`` would, refusing nonsense.

    Missing/``null`` is 0; integral floats and numeric strings are truncated like JS
    ``ToIntegerOrInfinity``. Negative values (JS: "the last n units") are refused: a resumer
    never means them, and honouring them would silently drop the start of the replay.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise RequestError(f"skipCharacters must be a number, got {value!r}")
    if isinstance(value, int):
        skip = value
    elif isinstance(value, float):
        if math.isnan(value):
            return 0
        if math.isinf(value):
            if value > 0:
                return 2**63
            raise RequestError(f"skipCharacters must not be negative, got {value!r}")
        skip = math.trunc(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip() or "0")
        except ValueError:
            raise RequestError(f"skipCharacters is not a number: {value!r:.80}") from None
        return _coerce_skip(number)
    else:
        raise RequestError(f"skipCharacters must be a number, got {type(value).__name__}")
    if skip < 0:
        raise RequestError(f"skipCharacters must not be negative, got {skip}")
    return skip


def parse_request(message: str) -> ResumeRequest:
    """Parse a resume request from the wire, raising :class:`RequestError` with the reason."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise RequestError(f"resume request is not JSON: {message!r:.120}") from None
    if not isinstance(data, dict):
        raise RequestError(f"resume request is not a JSON object: {message!r:.120}")
    listener_id = data.get("listenerId")
    if not isinstance(listener_id, str) or not listener_id:
        raise RequestError(f"resume request has no string listenerId: {message!r:.120}")
    if len(listener_id) > MAX_LISTENER_ID_LENGTH or any(c in listener_id for c in "\r\n\0"):
        raise RequestError(f"resume request has an invalid listenerId: {listener_id!r:.120}")
    return ResumeRequest(listener_id, _coerce_skip(data.get("skipCharacters")))


def is_not_integer_error(error: BaseException) -> bool:
    """Whether an ``INCR`` failure means "the sentinel holds DONE".

    Drivers differ: node-redis keeps the ``ERR`` prefix, redis-py and coredis strip it.
    """
    return "not an integer" in str(error).lower()


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (JavaScript ``length``)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def utf16_slice(text: str, start: int) -> str:
    """``text.slice(start)`` in JavaScript terms, for ``start >= 0``.

    When ``start`` falls between the two halves of a surrogate pair, JavaScript yields a lone
    low surrogate, which node-redis sends as U+FFFD (UTF-8 ``EF BF BD``); so does this.
    """
    if start <= 0:
        return text
    if text.isascii():
        return text[start:]
    units = 0
    for index, char in enumerate(text):
        if units >= start:
            return text[index:] if units == start else "\ufffd" + text[index:]
        units += 2 if ord(char) > 0xFFFF else 1
    if units > start:  # the cut fell inside the last character
        return "\ufffd"
    return ""


class ReplayBuffer:
    """What a producer has produced so far, for replays to late joiners.

    ``max_size`` (UTF-16 units, ``None`` = unbounded, as Node) bounds memory: the oldest whole
    chunks are dropped once the total exceeds it, and a request whose skip points into the
    dropped part can no longer be served exactly (:meth:`replay` returns ``None``).
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        self.max_size = max_size
        self._chunks: list[str] = []
        self._sizes: list[int] = []
        self._head = 0  # index of the first retained chunk in _chunks
        self.dropped_units = 0
        """UTF-16 units dropped from the front (0 unless ``max_size`` was exceeded)."""
        self.dropped_chunks = 0
        """Whole chunks dropped from the front."""
        self.total_units = 0
        """UTF-16 units produced so far, dropped ones included."""
        self._retained_units = 0

    def __len__(self) -> int:
        """Number of chunks produced so far (dropped ones included)."""
        return self.dropped_chunks + len(self._chunks) - self._head

    def append(self, chunk: str) -> None:
        """Add a produced chunk."""
        size = utf16_len(chunk)
        self._chunks.append(chunk)
        self._sizes.append(size)
        self.total_units += size
        self._retained_units += size
        if self.max_size is not None:
            while self._retained_units > self.max_size and self._head < len(self._chunks) - 1:
                dropped = self._sizes[self._head]
                self._chunks[self._head] = ""
                self._head += 1
                self.dropped_chunks += 1
                self.dropped_units += dropped
                self._retained_units -= dropped
            if self._head > 1024 and self._head * 2 > len(self._chunks):
                del self._chunks[: self._head]
                del self._sizes[: self._head]
                self._head = 0

    def chunk(self, index: int) -> str | None:
        """The chunk at absolute ``index``, or ``None`` when it was dropped."""
        if index < self.dropped_chunks:
            return None
        return self._chunks[self._head + index - self.dropped_chunks]

    def replay(self, skip: int) -> str | None:
        """Everything after ``skip`` UTF-16 units (``""`` past the end), ``None`` if dropped."""
        if skip < self.dropped_units:
            return None
        if skip >= self.total_units:
            return ""
        joined = "".join(self._chunks[self._head :])
        return utf16_slice(joined, skip - self.dropped_units)
