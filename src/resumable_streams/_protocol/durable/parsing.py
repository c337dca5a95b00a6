"""Validation of Durable Streams request headers and stream paths (pure, stdlib only).

Every parser raises :class:`BadRequest` with a human-readable reason; the server turns it into
``400 Bad Request``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from .headers import DEFAULT_CONTENT_TYPE, JSON_CONTENT_TYPE

__all__ = [
    "MAX_SAFE_INTEGER",
    "BadRequest",
    "ExpiresAt",
    "ProducerHeaders",
    "is_json",
    "is_sse_text",
    "media_type",
    "parse_closed",
    "parse_expires_at",
    "parse_nonneg_int",
    "parse_producer",
    "parse_stream_path",
    "parse_stream_seq",
    "parse_ttl",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_CANONICAL_INT_RE: Final = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
_DIGITS_RE: Final = re.compile(r"\A[0-9]+\Z")
_RFC3339_RE: Final = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
_MAX_PATH_BYTES: Final = 1024
_BAD_NAME_CHAR: Final = re.compile(r"[\x00-\x1f\x7f\\]")
_TOKEN_RE: Final = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class BadRequest(ValueError):
    """A request header, parameter or body is malformed (HTTP 400); ``str()`` is the reason."""


def parse_nonneg_int(name: str, value: str, *, canonical: bool = True) -> int:
    """Parse a non-negative decimal integer header up to 2**53-1.

    With ``canonical`` (the default) leading zeros, signs, fractions and exponents are
    rejected; otherwise only non-digits are.
    """
    pattern = _CANONICAL_INT_RE if canonical else _DIGITS_RE
    if not pattern.match(value):
        raise BadRequest(f"{name} must be a non-negative decimal integer, got {value!r}")
    number = int(value)
    if number > MAX_SAFE_INTEGER:
        raise BadRequest(f"{name} is too large: {value!r}")
    return number


def parse_ttl(value: str) -> int:
    """Parse ``Stream-TTL``: seconds, canonical decimal (``03600``, ``+1``, ``1.0`` -> 400)."""
    return parse_nonneg_int("Stream-TTL", value.strip())


@dataclass(frozen=True, slots=True)
class ExpiresAt:
    """A parsed ``Stream-Expires-At``: the text as given and the instant as a Unix time."""

    text: str
    timestamp: float


def parse_expires_at(value: str) -> ExpiresAt:
    """Parse ``Stream-Expires-At`` (RFC 3339 with ``Z`` or a ``±hh:mm`` offset)."""
    text = value.strip()
    if not _RFC3339_RE.match(text):
        raise BadRequest(f"Stream-Expires-At must be an RFC 3339 timestamp, got {value!r}")
    iso = text.replace("z", "Z").replace("t", "T")
    if iso.endswith("Z"):
        iso = iso[:-1] + "+00:00"
    head, dot, rest = iso.partition(".")
    if dot:  # fromisoformat wants at most 6 fractional digits
        digits = rest[: len(rest) - 6]
        iso = f"{head}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise BadRequest(f"Stream-Expires-At is not a valid date/time: {value!r}") from None
    return ExpiresAt(text, moment.timestamp())


def parse_closed(value: str | None) -> bool:
    """``Stream-Closed``: true only for ``true`` in any case; anything else means absent."""
    return value is not None and value.strip().lower() == "true"


def parse_stream_seq(value: str | None) -> str | None:
    """``Stream-Seq``: an opaque, non-empty string compared byte-wise."""
    if value is None:
        return None
    if not value:
        raise BadRequest("Stream-Seq must not be empty")
    return value


class ProducerHeaders(NamedTuple):
    """The idempotent-producer triple of an append."""

    producer_id: str
    epoch: int
    seq: int


def parse_producer(
    producer_id: str | None, epoch: str | None, seq: str | None
) -> ProducerHeaders | None:
    """Parse ``Producer-Id``/``-Epoch``/``-Seq``: all three or none, else 400."""
    given = (producer_id is not None, epoch is not None, seq is not None)
    if not any(given):
        return None
    if not all(given):
        raise BadRequest("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    if producer_id is None or epoch is None or seq is None:  # pragma: no cover - for mypy
        raise AssertionError
    if not producer_id.strip():
        raise BadRequest("Producer-Id must not be empty")
    return ProducerHeaders(
        producer_id,
        parse_nonneg_int("Producer-Epoch", epoch.strip(), canonical=False),
        parse_nonneg_int("Producer-Seq", seq.strip(), canonical=False),
    )


@functools.lru_cache(maxsize=256)
def media_type(content_type: str | None) -> str:
    """The lower-cased ``type/subtype`` of a Content-Type (parameters dropped).

    ``None`` or blank gives the default ``application/octet-stream``; a value that is not a
    ``type/subtype`` token raises :class:`BadRequest`.
    """
    if content_type is None or not content_type.strip():
        return DEFAULT_CONTENT_TYPE
    mtype = content_type.split(";", 1)[0].strip().lower()
    if not _TOKEN_RE.match(mtype):
        raise BadRequest(f"malformed Content-Type {content_type!r}")
    return mtype


def is_json(mtype: str) -> bool:
    """Whether a stream of this media type is in JSON mode."""
    return mtype == JSON_CONTENT_TYPE


def is_sse_text(mtype: str) -> bool:
    """Whether SSE carries this media type as text (else base64)."""
    return mtype.startswith("text/") or is_json(mtype)


@functools.lru_cache(maxsize=4096)
def parse_stream_path(raw: bytes) -> str:
    """Decode and validate the raw (percent-encoded) stream path after the route prefix.

    The name may contain ``/`` as a literal separator, but not encoded slashes or
    backslashes, NUL or other control characters, empty, ``.`` or ``..`` segments, or
    invalid UTF-8: such paths raise :class:`BadRequest`, so a stream name can never be used
    to reach anything outside its own stream. (Cached: a server sees the same few paths
    again and again; refused paths raise, so they are not cached.)
    """
    if not raw:
        raise BadRequest("missing stream path")
    if len(raw) > _MAX_PATH_BYTES:
        raise BadRequest("stream path too long")
    lowered = raw.lower()
    if b"%2f" in lowered or b"%5c" in lowered:
        raise BadRequest("stream path must not contain encoded slashes")
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    try:
        name = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("stream path is not valid UTF-8") from None
    if _BAD_NAME_CHAR.search(name):
        raise BadRequest("stream path contains control characters or backslashes")
    segments = name.split("/")
    if "" in segments or "." in segments or ".." in segments:
        raise BadRequest("stream path has an empty, '.' or '..' segment")
    return name
