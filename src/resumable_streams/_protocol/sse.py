r"""Server-Sent Events: a sans-IO encoder and an incremental decoder (WHATWG HTML, 9.2).

The decoder follows the h11 shape: feed bytes with :meth:`SSEDecoder.receive_data`, get whole
events back. Any re-chunking of the same byte stream yields the same events. Line endings
``\\r\\n``, ``\\n`` and ``\\r`` are all accepted; one leading space after the colon is stripped;
a UTF-8 BOM at the very start is ignored; undecodable bytes become U+FFFD.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "encode_comment", "encode_event"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``event`` defaults to ``"message"`` as in browsers.

    ``id`` is the event's own ``id:`` field (``None`` when it had none); ``last_event_id`` is
    the decoder's last-event-ID buffer at dispatch time, as a browser would send it back.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    last_event_id: str = ""


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name} must not contain a line break: {value!r}")


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    compact: bool = False,
) -> bytes:
    r"""Encode one event. Multi-line ``data`` becomes several ``data:`` lines.

    ``compact`` drops the optional space after ``data:`` where that is lossless (the line does
    not itself start with a space); the Durable Streams conformance suite expects that form.

    ``\\r\\n`` and ``\\r`` in ``data`` are normalised to line breaks (the decoder would split
    on them anyway). ``event`` and ``id`` must not contain line breaks, and ``id`` must not
    contain NUL (browsers ignore such ids).
    """
    parts: list[str] = []
    if event is not None:
        _check_field("event", event)
        parts.append(f"event: {event}\n")
    if id is not None:
        _check_field("id", id)
        if "\0" in id:
            raise ValueError(f"SSE id must not contain NUL: {id!r}")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if retry < 0:
            raise ValueError(f"SSE retry must be >= 0, got {retry}")
        parts.append(f"retry: {retry}\n")
    if "\n" not in data and "\r" not in data:  # one line (a fan-out writes these per reader)
        parts.append(f"data:{data}\n\n" if compact and data[:1] != " " else f"data: {data}\n\n")
        return "".join(parts).encode()
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    parts.extend(
        f"data:{line}\n" if compact and not line.startswith(" ") else f"data: {line}\n"
        for line in data.split("\n")
    )
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line (``: text``), e.g. a heartbeat. Clients ignore it."""
    _check_field("comment", text)
    return f": {text}\n\n".encode() if text else b":\n\n"


class SSEDecoder:
    """Incremental SSE parser: :meth:`receive_data` in, :class:`SSEEvent` objects out."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # text not yet terminated by a line break
        self._last_cr = False  # previous chunk ended with \r: a following \n belongs to it
        self._started = False
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id = ""
        """The last-event-ID buffer (what a browser sends as ``Last-Event-ID``)."""

    def receive_data(self, data: bytes) -> list[SSEEvent]:
        """Feed bytes; return the events completed by them (possibly none)."""
        text = self._utf8.decode(data)
        return self._feed(text)

    def end_of_stream(self) -> list[SSEEvent]:
        """Signal EOF. An unterminated last event is discarded, as browsers do."""
        self._feed(self._utf8.decode(b"", final=True))
        self._pending = ""
        self._reset_event()
        return []

    def _feed(self, text: str) -> list[SSEEvent]:
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._last_cr and text.startswith("\n"):
            text = text[1:]
        self._last_cr = False
        buf = self._pending + text
        events: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            i_n = buf.find("\n", start)
            i_r = buf.find("\r", start, i_n if i_n >= 0 else n)
            if i_r >= 0:
                end, nxt = i_r, i_r + 1
                if nxt < n and buf[nxt] == "\n":
                    nxt += 1
                elif nxt == n:
                    self._last_cr = True
            elif i_n >= 0:
                end, nxt = i_n, i_n + 1
            else:
                break
            ev = self._line(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        self._pending = buf[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._reset_event()
            return None
        ev = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry=self._retry,
            last_event_id=self.last_event_id,
        )
        self._reset_event()
        return ev

    def _reset_event(self) -> None:
        self._data = []
        self._has_data = False
        self._event = ""
        self._id = None
        self._retry = None
