"""JSON mode (PROTOCOL.md §7.1): validation, one-level array flattening and framing.

A JSON stream stores each message as its original bytes (surrounding whitespace trimmed)
followed by a comma, so a read of any range of whole appends is ``[`` + bytes minus the
final comma + ``]``, with no re-encoding. Flattening splits a top-level array into its
elements' exact source text, so numbers such as ``1e400`` or ``1.0`` survive untouched.
"""

from __future__ import annotations

import json
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


def _validate(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None


def _top_level_elements(text: str) -> list[str]:
    """Exact source text of each element of a (valid) top-level JSON array."""
    start = 0
    while text[start] in _WS:
        start += 1
    assert text[start] == "["
    elements: list[str] = []
    depth = 0
    in_string = False
    escaped = False
    element_start = start + 1
    for index in range(start, len(text)):
        ch = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                piece = text[element_start:index].strip(_WS)
                if piece:
                    elements.append(piece)
                break
        elif ch == "," and depth == 1:
            elements.append(text[element_start:index].strip(_WS))
            element_start = index + 1
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
    value = _validate(text)
    if isinstance(value, list):
        return [piece.encode() for piece in _top_level_elements(text)]
    return [text.strip(_WS).encode()]


def frame_messages(messages: list[bytes]) -> bytes:
    """The stored form of a JSON append: every message followed by a comma."""
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
    return [piece.encode() for piece in _top_level_elements(records_to_array(framed).decode())]
