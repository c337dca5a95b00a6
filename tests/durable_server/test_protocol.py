"""The sans-IO Durable Streams core: offsets, headers, JSON mode, cursors, producers, planning."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable_streams._protocol.durable.cursor import CURSOR_EPOCH, next_cursor
from resumable_streams._protocol.durable.jsonmode import (
    frame_messages,
    records_to_array,
    split_framed,
    split_json_body,
)
from resumable_streams._protocol.durable.model import ProducerState, StreamMeta, evolve_meta
from resumable_streams._protocol.durable.offsets import (
    ZERO,
    InvalidOffsetError,
    Offset,
    parse_offset,
    parse_read_offset,
)
from resumable_streams._protocol.durable.parsing import (
    BadRequest,
    ProducerHeaders,
    parse_closed,
    parse_expires_at,
    parse_producer,
    parse_stream_path,
    parse_ttl,
)
from resumable_streams._protocol.durable.planning import (
    AppendRequest,
    CreateRequest,
    Rejected,
    parse_append_request,
    parse_create_request,
    plan_append,
    plan_create,
)

positions = st.integers(min_value=0, max_value=10**16 - 1)

# --------------------------------------------------------------------------- offsets


@given(positions, positions)
def test_offset_text_round_trips(segment: int, position: int) -> None:
    offset = Offset(segment, position)
    assert parse_offset(str(offset)) == offset


@given(positions, positions, positions, positions)
def test_offset_text_sorts_like_offsets(a: int, b: int, c: int, d: int) -> None:
    x, y = Offset(a, b), Offset(c, d)
    assert (str(x) < str(y)) == (x < y)


@given(st.text(max_size=40))
def test_parse_offset_accepts_only_minted_form(text: str) -> None:
    try:
        offset = parse_offset(text)
    except InvalidOffsetError:
        return
    assert str(offset) == text


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "abc",
        "0_0",
        "../x",
        "0000000000000000_000000000000000\n",
        "a,b",
        "0000000000000000/0000000000000000",
        "0000000000000000_0000000000000000\0",
        "-2",
        "NOW",
        "0000000000000000_00000000000000001",
    ],
)
def test_parse_read_offset_rejects(bad: str) -> None:
    with pytest.raises(InvalidOffsetError):
        parse_read_offset([bad])


def test_parse_read_offset_sentinels() -> None:
    assert parse_read_offset([]) is None
    assert parse_read_offset(["-1"]) == ZERO
    assert parse_read_offset(["now"]) == "now"
    with pytest.raises(InvalidOffsetError):
        parse_read_offset(["-1", "-1"])


# --------------------------------------------------------------------------- headers


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_ttl_accepts_canonical_integers(n: int) -> None:
    assert parse_ttl(str(n)) == n


@pytest.mark.parametrize("bad", ["03600", "+3600", "3600.0", "3.6e3", "-1", "", "abc", " 1 2"])
def test_ttl_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_ttl(bad)


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01T01:00:00+01:00", 1893456000.0),
        ("2030-01-01T00:00:00.5z", 1893456000.5),
        ("2030-01-01T00:00:00.123456789Z", 1893456000.123457),
    ],
)
def test_expires_at(text: str, ts: float) -> None:
    assert parse_expires_at(text).timestamp == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize("bad", ["tomorrow", "2030-01-01", "2030-13-01T00:00:00Z", "1893456000"])
def test_expires_at_rejects(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_expires_at(bad)


@given(st.text(max_size=8))
def test_stream_closed_is_true_only_for_true(value: str) -> None:
    assert parse_closed(value) == (value.strip().lower() == "true")


def test_producer_headers_all_or_none() -> None:
    assert parse_producer(None, None, None) is None
    assert parse_producer("p", "1", "2") == ProducerHeaders("p", 1, 2)
    for partial in [("p", None, None), (None, "0", "0"), ("p", "0", None)]:
        with pytest.raises(BadRequest):
            parse_producer(*partial)
    for bad in [
        ("", "0", "0"),
        ("p", "1e3", "0"),
        ("p", "0", "1abc"),
        ("p", "-1", "0"),
        ("p", "0", str(2**53)),
    ]:
        with pytest.raises(BadRequest):
            parse_producer(*bad)


# --------------------------------------------------------------------------- stream paths


@pytest.mark.parametrize(
    "raw",
    [
        b"..",
        b"a/../b",
        b"a/./b",
        b"%2e%2e",
        b"a%2Fb",
        b"a%2fb",
        b"a%5cb",
        b"a\\b",
        b"a%00b",
        b"a/",
        b"/a",
        b"a//b",
        b"%ff",
        b"a%0ab",
        b"",
    ],
)
def test_stream_path_rejects_escapes(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_stream_path(raw)


@given(st.binary(max_size=64))
def test_stream_path_never_yields_escaping_names(raw: bytes) -> None:
    try:
        name = parse_stream_path(raw)
    except BadRequest:
        return
    segments = name.split("/")
    assert all(seg not in ("", ".", "..") for seg in segments)
    assert "\0" not in name
    assert "\\" not in name


def test_stream_path_decodes() -> None:
    assert parse_stream_path(b"chat/room%201") == "chat/room 1"


# --------------------------------------------------------------------------- JSON mode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


@given(json_values, st.sampled_from([None, 0, 2]))
def test_json_flattens_exactly_one_level(value: object, indent: int | None) -> None:
    body = json.dumps(value, indent=indent).encode()
    messages = split_json_body(body)
    expected = value if isinstance(value, list) else [value]
    assert [json.loads(m) for m in messages] == expected


@given(st.lists(json_values, max_size=5), st.lists(json_values, max_size=5))
def test_framed_records_read_back_as_one_array(a: list[object], b: list[object]) -> None:
    framed = frame_messages([json.dumps(v).encode() for v in a]) + frame_messages(
        [json.dumps(v).encode() for v in b]
    )
    assert json.loads(records_to_array(framed)) == a + b
    assert [json.loads(m) for m in split_framed(framed)] == a + b


def test_json_keeps_source_text() -> None:
    assert split_json_body(b' [1e400, 1.0, {"a" : [1,2]}] ') == [b"1e400", b"1.0", b'{"a" : [1,2]}']
    assert split_json_body(b"[[[1,2,3]]]") == [b"[[1,2,3]]"]
    assert split_json_body(b"[]") == []


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{",
        b"NaN",
        b"[1,]",
        b"\xff",
        b"[Infinity]",
        b"1 2",
        b"[",
        b"[1",
        b"[1 2]",
        b"[1]x",
        b"[1] [2]",
        b"[,1]",
        b"[1,,2]",
        b'[{"a":1}}]',
        b"[-]",
    ],
)
def test_json_rejects_invalid(bad: bytes) -> None:
    with pytest.raises(BadRequest):
        split_json_body(bad)


@given(st.text(alphabet='[]{},:"0123456789 e.-tnrufalse\\', max_size=30))
def test_json_split_agrees_with_the_json_module(text: str) -> None:
    """Any text: rejected exactly when ``json`` rejects it; else the messages it flattens to."""
    try:
        value = json.loads(text)
    except ValueError:
        with pytest.raises(BadRequest):
            split_json_body(text.encode())
        return
    messages = split_json_body(text.encode())
    assert [json.loads(m) for m in messages] == (value if isinstance(value, list) else [value])


# --------------------------------------------------------------------------- cursor


@given(st.floats(min_value=CURSOR_EPOCH, max_value=CURSOR_EPOCH + 1e9), st.integers(0, 10**9))
def test_cursor_is_strictly_greater_than_a_current_client_cursor(now: float, ahead: int) -> None:
    current = int(next_cursor(now))
    client = current + ahead
    assert int(next_cursor(now, str(client))) > client


def test_cursor_ignores_stale_or_garbage_cursor() -> None:
    now = CURSOR_EPOCH + 1000
    assert next_cursor(now, "1") == next_cursor(now)
    assert next_cursor(now, "x") == next_cursor(now)


# --------------------------------------------------------------------------- planning


def _meta(**kw: object) -> StreamMeta:
    base = StreamMeta("s", "id", "text/plain", 0.0, 0.0, ZERO)
    return base._replace(**kw)  # type: ignore[arg-type]


def _append(body: bytes = b"x", **kw: object) -> AppendRequest:
    return AppendRequest(content_type="text/plain", body=body, **kw)  # type: ignore[arg-type]


@given(
    st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 5))),
    st.integers(0, 5),
    st.integers(0, 6),
)
def test_producer_state_machine(state: tuple[int, int] | None, epoch: int, seq: int) -> None:
    current = ProducerState(*state) if state else None
    req = _append(producer=ProducerHeaders("p", epoch, seq))
    # the reference model (PROTOCOL.md 5.2.1)
    if current is None:
        expected = 200 if seq == 0 else 409
    elif epoch < current.epoch:
        expected = 403
    elif epoch > current.epoch:
        expected = 200 if seq == 0 else 400
    elif seq <= current.seq:
        expected = 204
    else:
        expected = 200 if seq == current.seq + 1 else 409
    if expected == 400:
        with pytest.raises(BadRequest):
            plan_append(_meta(), current, req, now=1.0)
    elif expected in (403, 409):
        with pytest.raises(Rejected) as info:
            plan_append(_meta(), current, req, now=1.0)
        assert info.value.status == expected
        if expected == 403:
            assert current is not None
            assert info.value.headers["Producer-Epoch"] == str(current.epoch)
        else:
            assert info.value.headers["Producer-Received-Seq"] == str(seq)
    else:
        plan = plan_append(_meta(), current, req, now=1.0)
        assert plan.status == expected
        if expected == 204:  # duplicate: nothing written, highest accepted seq echoed
            assert current is not None
            assert plan.record is None
            assert plan.headers["Producer-Seq"] == str(current.seq)
        else:
            assert plan.producer_state == ProducerState(epoch, seq)
            assert plan.record is not None


def test_append_error_precedence() -> None:
    closed = _meta(closed=True, tail=Offset(0, 3))
    with pytest.raises(Rejected) as info:
        plan_append(closed, None, AppendRequest("application/json", b"{}", seq="1"), now=0)
    assert info.value.status == 409
    assert info.value.headers["Stream-Closed"] == "true"
    assert info.value.headers["Stream-Next-Offset"] == str(Offset(0, 3))
    with pytest.raises(Rejected, match="Content-Type"):
        plan_append(
            _meta(last_seq="9"), None, AppendRequest("application/json", b"{}", seq="1"), now=0
        )
    with pytest.raises(Rejected, match="Stream-Seq"):
        plan_append(_meta(last_seq="2"), None, _append(seq="10"), now=0)
    ok = plan_append(_meta(last_seq="09"), None, _append(seq="10"), now=0)
    assert ok.meta is not None
    assert ok.meta.last_seq == "10"


def test_append_request_validation() -> None:
    with pytest.raises(BadRequest):
        parse_append_request({}, b"")
    with pytest.raises(BadRequest):
        parse_append_request({}, b"data")  # no Content-Type
    close = parse_append_request({"stream-closed": "TRUE"}, b"")
    assert close.close
    assert close.content_type is None


def test_create_request_validation() -> None:
    with pytest.raises(BadRequest):
        parse_create_request({"stream-ttl": "1", "stream-expires-at": "2030-01-01T00:00:00Z"}, b"")
    with pytest.raises(BadRequest):
        parse_create_request({"stream-fork-sub-offset": "0"}, b"")
    with pytest.raises(BadRequest):
        parse_create_request(
            {"stream-forked-from": "/v1/stream/a", "stream-fork-sub-offset": "1"}, b""
        )
    req = parse_create_request({"stream-forked-from": "/v1/stream/a/b"}, b"")
    assert req.forked_from == "a/b"


def test_create_idempotency_compares_config() -> None:
    plan = plan_create(None, CreateRequest("text/plain", ttl=5), name="s", now=0, new_id="i")
    meta = plan.meta
    again = plan_create(
        meta, CreateRequest("TEXT/plain; charset=utf-8", ttl=5), name="s", now=1, new_id="j"
    )
    assert not again.created
    for different in [
        CreateRequest("text/plain"),
        CreateRequest("text/html", ttl=5),
        CreateRequest("text/plain", ttl=5, closed=True),
    ]:
        with pytest.raises(Rejected):
            plan_create(meta, different, name="s", now=1, new_id="j")


def test_evolve_meta_is_replace_of_the_append_fields() -> None:
    meta = StreamMeta(
        "a", "id", "text/plain", 1.0, 2.0, Offset(0, 5), 60, None, None, False, None, "s1",
        "src", None, 3, 2, False,
    )  # fmt: skip
    evolved = evolve_meta(
        meta, last_access=9.0, tail=Offset(0, 7), closed=True, closed_by=("p", 1, 2), last_seq="s2"
    )
    assert type(evolved) is StreamMeta
    assert evolved == meta._replace(
        last_access=9.0, tail=Offset(0, 7), closed=True, closed_by=("p", 1, 2), last_seq="s2"
    )
    advanced = Offset(0, 5).advance(2)
    assert type(advanced) is Offset
    assert advanced == Offset(0, 7)
