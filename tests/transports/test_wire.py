"""The sans-IO wire formats of the transports (no sockets)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable_streams._protocol.resumable import utf16_len
from resumable_streams._protocol.sse import SSEDecoder
from resumable_streams._protocol.transport import (
    MAX_CLOSE_REASON,
    MAX_POSITION,
    Chunk,
    ChunkTracker,
    CloseCode,
    End,
    decode_sse_chunk,
    decode_sse_end,
    decode_ws_chunk,
    encode_sse_chunk,
    encode_sse_end,
    encode_ws_chunk,
    encode_ws_hello,
    is_retryable_close,
    parse_position,
    parse_ws_hello,
    split_chunk,
    truncate_reason,
)
from resumable_streams.errors import TransportProtocolError

chunks = st.lists(st.text(min_size=1, max_size=30), max_size=20)


@given(chunks, st.data())
def test_sse_round_trip_under_any_rechunking(texts: list[str], data: st.DataObject) -> None:
    position = 0
    wire = b""
    for text in texts:
        position += utf16_len(text)
        wire += encode_sse_chunk(text, position)
    wire += encode_sse_end(position)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = SSEDecoder()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        events.extend(decoder.receive_data(wire[start:end]))
    tracker = ChunkTracker()
    received = [tracker.accept(decode_sse_chunk(e.data, e.id)) for e in events[:-1]]
    assert received == texts
    assert decode_sse_end(events[-1].event, events[-1].data) == End(position)


@given(chunks)
def test_ws_round_trip(texts: list[str]) -> None:
    tracker = ChunkTracker(7)
    position = 7
    for text in texts:
        position += utf16_len(text)
        assert tracker.accept(decode_ws_chunk(encode_ws_chunk(text, position))) == text
    assert tracker.position == position


def test_lone_surrogates_survive_as_in_javascript() -> None:
    text = "a\ud83d"
    assert decode_ws_chunk(encode_ws_chunk(text, 2)) == Chunk(text, 2)
    event = SSEDecoder().receive_data(encode_sse_chunk(text, 2))[0]
    assert decode_sse_chunk(event.data, event.id) == Chunk(text, 2)


def test_tracker_rejects_gaps_and_duplicates() -> None:
    tracker = ChunkTracker()
    assert tracker.accept(Chunk("😀", 2)) == "😀"
    with pytest.raises(TransportProtocolError, match=r"covers 0\.\.2 but the client is at 2"):
        tracker.accept(Chunk("😀", 2))
    with pytest.raises(TransportProtocolError, match=r"covers 3\.\.4"):
        tracker.accept(Chunk("x", 4))


def test_failed_end_event() -> None:
    event = SSEDecoder().receive_data(encode_sse_end(5, "boom"))[0]
    assert event.event == "failed"
    assert decode_sse_end(event.event, event.data) == End(5, "boom")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("0", 0), ("42", 42), (7, 7), (str(MAX_POSITION), MAX_POSITION)],
)
def test_parse_position(value: str | int | None, expected: int | None) -> None:
    assert parse_position(value) == expected


@pytest.mark.parametrize(
    "value", ["", "-1", "1.5", " 1", "\uff11", "1e3", True, -3, MAX_POSITION + 1]
)
def test_parse_position_rejects(value: object) -> None:
    with pytest.raises(TransportProtocolError, match=re.escape(repr(value))):
        parse_position(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message", [b'{"position": 0}', "nope", "[]", '{"from": 1}', '{"position": -1}']
)
def test_bad_hellos(message: str | bytes) -> None:
    with pytest.raises(TransportProtocolError):
        parse_ws_hello(message)


def test_hello_round_trip() -> None:
    assert parse_ws_hello(encode_ws_hello(12)) == 12


@pytest.mark.parametrize(
    "message", [b"x", "not json", '{"position": 1}', '{"position": "a", "text": "b"}', "[1]"]
)
def test_bad_chunks(message: str | bytes) -> None:
    with pytest.raises(TransportProtocolError):
        decode_ws_chunk(message)


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (CloseCode.DONE, False),
        (CloseCode.BAD_REQUEST, False),
        (CloseCode.NOT_FOUND, False),
        (CloseCode.GONE, False),
        (CloseCode.FAILED, False),
        (CloseCode.RETRY, True),
        (CloseCode.GOING_AWAY, True),
        (1006, True),
        (1011, True),
        (1002, False),
        (4001, False),
    ],
)
def test_retryable_close_codes(code: int, retry: bool) -> None:
    assert is_retryable_close(code) is retry


@given(st.text(max_size=300))
def test_truncate_reason_fits_a_close_frame(reason: str) -> None:
    out = truncate_reason(reason)
    assert len(out.encode()) <= MAX_CLOSE_REASON
    if len(reason.encode()) <= MAX_CLOSE_REASON:
        assert out == reason


@given(st.text(max_size=200), st.integers(0, 1000), st.integers(1, 40))
def test_split_chunk_pieces_continue_each_other(text: str, before: int, size: int) -> None:
    end = before + utf16_len(text)
    pieces = split_chunk(text, end, size)
    tracker = ChunkTracker(before)
    assert "".join(tracker.accept(Chunk(piece, at)) for piece, at in pieces) == text
    assert tracker.position == end
    assert all(len(piece) <= size for piece, _ in pieces)


def test_split_chunk_keeps_pairs_and_lone_surrogates() -> None:
    text = "a😀\r\n\ud83d𝄞b"
    pieces = split_chunk(text, 100, 1)
    assert [piece for piece, _ in pieces] == ["a", "😀", "\r", "\n", "\ud83d", "𝄞", "b"]
    assert [at for _, at in pieces] == [92, 94, 95, 96, 97, 99, 100]
    with pytest.raises(ValueError, match="0"):
        split_chunk("x", 1, 0)
