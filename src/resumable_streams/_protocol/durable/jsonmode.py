"""JSON mode (PROTOCOL.md §7.1): validation, one-level array flattening and framing.

A JSON stream stores each message as its original bytes (surrounding whitespace trimmed)
followed by a comma, so a read of any range of whole appends is ``[`` + bytes minus the
final comma + ``]``, with no re-encoding. Flattening splits a top-level array into its
elements' exact source text, so numbers such as ``1e400`` or ``1.0`` survive untouched.
"""

from __future__ import annotations

import json
import re
from json.scanner import make_scanner
from typing import Any, Final

from .parsing import BadRequest

__all__ = [
    "frame_messages",
    "records_to_array",
    "split_framed",
    "split_json_body",
]

_WS: Final = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


# The C scanner: one JSON value at an index (typeshed types its argument as a scanner).
_SCAN: Final = make_scanner(_DECODER)  # type: ignore[arg-type]


def _validate(text: str) -> None:
    """Check that ``text`` (no surrounding whitespace) is exactly one JSON value.

    Calls the scanner directly: ``json.loads`` adds two regex scans and two Python frames
    around it, a third of the cost of a ~100-byte object.
    """
    try:
        end = _SCAN(text, 0)[1]
    except StopIteration:
        raise BadRequest("invalid JSON body: Expecting value: char 0") from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if end != len(text):
        raise BadRequest(f"invalid JSON body: Extra data: char {end}")


_WS_RUN: Final = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, index: int = 0) -> int:
    """The index of the first non-whitespace character at or after ``index``."""
    match = _WS_RUN.match(text, index)
    return match.end() if match is not None else index


def _array_elements(text: str, start: int) -> list[str]:
    """Validate the JSON array at ``text[start]`` (``[``), the whole of ``text`` but whitespace.

    Returns the exact source text of each element, found by the C scanner element by element
    (``raw_decode``), so validating and splitting are one pass. Raises ``ValueError`` (a
    ``JSONDecodeError``) for invalid JSON.
    """
    decode = _DECODER.raw_decode
    elements: list[str] = []
    index = _skip_ws(text, start + 1)
    if text.startswith("]", index):
        end = index + 1
    else:
        while True:
            _, element_end = decode(text, index)
            elements.append(text[index:element_end])
            index = _skip_ws(text, element_end)
            if text.startswith(",", index):
                index = _skip_ws(text, index + 1)
            elif text.startswith("]", index):
                end = index + 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
    if _skip_ws(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return elements


def split_json_body(body: bytes) -> list[bytes]:
    """Validate a JSON body and return its messages (a top-level array flattened one level).

    ``[]`` gives an empty list (a POST must reject that, a PUT accepts it). Bodies that are
    not UTF-8 JSON, or use ``NaN``/``Infinity``, raise :class:`BadRequest`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("JSON body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    stripped = text.strip(_WS)
    if stripped.startswith("["):
        try:
            pieces = _array_elements(stripped, 0)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        return [piece.encode() for piece in pieces]
    _validate(stripped)
    # the body itself when nothing was trimmed (the usual case): no re-encoding
    return [body if len(stripped) == len(body) else stripped.encode()]


def frame_messages(messages: list[bytes]) -> bytes:
    """The stored form of a JSON append: every message followed by a comma."""
    if len(messages) == 1:
        return messages[0] + b","
    return b"".join(message + b"," for message in messages)


def records_to_array(framed: bytes) -> bytes:
    """Turn concatenated stored JSON appends into the JSON array a GET returns."""
    if not framed:
        return b"[]"
    return b"[" + framed[:-1] + b"]"


def split_framed(framed: bytes) -> list[bytes]:
    """Split stored JSON appends back into their messages (used by fork sub-offsets)."""
    if not framed:
        return []
    return [piece.encode() for piece in _array_elements(records_to_array(framed).decode(), 0)]
