from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable_streams._protocol.sse import SSEDecoder, SSEEvent, encode_comment, encode_event

field_text = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"), max_size=20)


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(dec.receive_data(c))
    return out


def test_spec_example() -> None:
    raw = b"data: YHOO\ndata: +2\ndata: 10\n\n: comment\nevent: add\nid: 7\ndata:x\n\n"
    evs = decode_all([raw])
    assert evs == [
        SSEEvent(data="YHOO\n+2\n10"),
        SSEEvent(data="x", event="add", id="7", last_event_id="7"),
    ]


def test_crlf_cr_and_bom() -> None:
    raw = "\ufeffdata: a\r\n\r\ndata: b\r\rdata:c\n\n".encode()
    assert [e.data for e in decode_all([raw])] == ["a", "b", "c"]


def test_unterminated_event_is_dropped_and_retry_parsed() -> None:
    dec = SSEDecoder()
    assert dec.receive_data(b"retry: 1500\ndata: x\n\n")[0].retry == 1500
    assert dec.receive_data(b"data: half") == []
    assert dec.end_of_stream() == []


def test_encoder_rejects_line_breaks_in_fields() -> None:
    with pytest.raises(ValueError, match="event"):
        encode_event("x", event="a\nb")
    with pytest.raises(ValueError, match="NUL"):
        encode_event("x", id="a\0")
    assert encode_comment("hb") == b": hb\n\n"


@given(
    events=st.lists(
        st.tuples(st.text(max_size=40), st.none() | field_text, st.none() | field_text),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_round_trip_under_any_rechunking(
    events: list[tuple[str, str | None, str | None]], cuts: list[int]
) -> None:
    wire = b"".join(encode_event(d, event=e, id=i) for d, e, i in events)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    got = decode_all(chunks)
    expected = [
        (d.replace("\r\n", "\n").replace("\r", "\n"), e or "message", i) for d, e, i in events
    ]
    assert [(g.data, g.event, g.id) for g in got] == expected


@given(data=st.text(max_size=40))
def test_compact_form_decodes_identically(data: str) -> None:
    assert decode_all([encode_event(data, compact=True)]) == decode_all([encode_event(data)])
