"""The sans-IO client core, driven by hand: no sockets, no clock."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable_streams._protocol.durable import client as core
from resumable_streams.errors import (
    BadRequestError,
    ContentTypeMismatchError,
    FetchError,
    SeqConflictError,
    SequenceGapError,
    StaleEpochError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
)

URL = "http://h/v1/stream/s"
NO_JITTER = core.RetryPolicy(random=lambda: 1.0)
NO_DEADLINE = settings(deadline=None)
"""Hypothesis without its per-example time limit: the test machines are shared and slow."""


def head(
    status: int, body: bytes | None = None, *, ct: str | None = None, **headers: str
) -> core.ResponseHead:
    hdrs = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    if ct is not None:
        hdrs["content-type"] = ct
    return core.ResponseHead(status, hdrs, body)


# -- requests ---------------------------------------------------------------------------------


@NO_DEADLINE
@given(st.dictionaries(st.text("abcxyz_-", min_size=1, max_size=5), st.text(max_size=5)))
def test_query_params_are_sorted_lexicographically(params: dict[str, str]) -> None:
    url = core.build_url("http://h/s?zz=1&aa=2", params)
    keys = [k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    assert keys == sorted(keys)
    assert dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)) == {
        "zz": "1",
        "aa": "2",
        **params,
    }


def test_read_request_order_and_callables() -> None:
    calls = iter(["t1", "t2"])
    opts = core.ReadOptions(
        URL, headers={"Authorization": lambda: next(calls)}, params={"tenant": "a", "x": None}
    )
    r1 = core.read_request(opts, "0_5", "c1", "long-poll")
    r2 = core.read_request(opts, "0_5", "c1", "long-poll")
    assert urlsplit(r1.url).query == "cursor=c1&live=long-poll&offset=0_5&tenant=a"
    assert r1.header("authorization") == "t1"
    assert r2.header("authorization") == "t2"


# -- JSON encoding ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@NO_DEADLINE
@given(json_values)
def test_json_append_is_one_message_never_double_encoded(value: Any) -> None:
    if not isinstance(value, str):  # a top-level str is pre-serialized JSON (see below)
        assert json.loads(core.encode_append_body(value, "application/json")) == [value]
    # the official client's convention: a str is pre-serialized JSON, not re-encoded
    assert json.loads(core.encode_append_body(json.dumps(value), "application/json")) == [value]


def test_json_append_rejects_invalid_preserialized_text() -> None:
    with pytest.raises(ValueError, match="pre-serialized JSON"):
        core.encode_append_body("hello", "application/json; charset=utf-8")


def test_binary_append_bodies() -> None:
    assert core.encode_append_body("é", "text/plain") == "é".encode()
    assert core.encode_append_body(b"\x00\x01", None) == b"\x00\x01"
    with pytest.raises(TypeError):
        core.encode_append_body({"a": 1}, "application/octet-stream")


# -- retry policy -----------------------------------------------------------------------------


@NO_DEADLINE
@given(st.integers(0, 30), st.floats(0, 1))
def test_backoff_is_capped_and_jittered(attempt: int, r: float) -> None:
    policy = core.RetryPolicy(max_retries=None, initial_delay=0.1, max_delay=5, random=lambda: r)
    delay = policy.delay(attempt)
    assert delay is not None
    assert 0 <= delay <= min(5, 0.1 * 2**attempt)


def test_retry_after_is_honoured_and_retries_end() -> None:
    policy = core.RetryPolicy(max_retries=2, random=lambda: 0.0)
    assert policy.delay(0, retry_after=3) == 3
    assert policy.delay(0, retry_after=1000) == policy.max_retry_after
    assert policy.delay(2) is None
    assert core.parse_retry_after("7") == 7
    assert core.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert core.parse_retry_after("soon") is None


def drive(flow: Generator[core.Action, Any, Any], outcomes: list[Any]) -> tuple[list[Any], Any]:
    """Run ``flow``, answering Send/Receive from ``outcomes``; return (actions, result)."""
    actions: list[Any] = []
    feed = iter(outcomes)
    try:
        action = next(flow)
        while True:
            actions.append(action)
            if isinstance(action, core.Send | core.Receive):
                action = flow.send(next(feed))
            else:
                action = flow.send(None)
    except StopIteration as stop:
        return actions, stop.value


def test_unary_retries_5xx_and_429_with_retry_after() -> None:
    request = core.Request("PUT", URL)
    flow = core.unary_flow(request, op="create", policy=NO_JITTER, idempotent=True, url=URL)
    actions, result = drive(flow, [head(503, retry_after="2"), head(429), head(201)])
    sleeps = [a.seconds for a in actions if isinstance(a, core.Sleep)]
    assert len(sleeps) == 2
    assert sleeps[0] == 2
    assert result.status == 201


def test_unary_non_idempotent_retries_only_unsent() -> None:
    request = core.Request("POST", URL)
    flow = core.unary_flow(request, op="append", policy=NO_JITTER, idempotent=False, url=URL)
    _, result = drive(flow, [core.Failure(OSError("refused"), sent=False), head(204)])
    assert result.status == 204
    flow = core.unary_flow(request, op="append", policy=NO_JITTER, idempotent=False, url=URL)
    with pytest.raises(FetchError) as info:
        drive(flow, [core.Failure(OSError("reset"), sent=True)])
    assert isinstance(info.value.__cause__, OSError)


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "response", "exc_type"),
    [
        ("append", head(404, b"Stream not found"), StreamNotFoundError),
        ("read", head(400, b"Invalid offset"), BadRequestError),
        ("create", head(409, b"exists"), StreamExistsError),
        ("append", head(409, b"Content-type mismatch"), ContentTypeMismatchError),
        ("append", head(409, b"Sequence conflict"), SeqConflictError),
        (
            "append",
            head(409, b"closed", stream_closed="true", stream_next_offset="9"),
            StreamClosedError,
        ),
        ("produce", head(403, b"stale", producer_epoch="4"), StaleEpochError),
        (
            "produce",
            head(409, b"gap", producer_expected_seq="2", producer_received_seq="5"),
            SequenceGapError,
        ),
        ("read", head(503, b"busy"), FetchError),
    ],
)
def test_error_mapping_carries_server_details(
    op: core.Operation, response: core.ResponseHead, exc_type: type[Exception]
) -> None:
    error = core.error_for_response(op, response, URL)
    assert type(error) is exc_type
    assert error.status == response.status
    assert error.details == (response.body or b"").decode()
    assert error.url == URL
    if isinstance(error, StreamClosedError):
        assert error.final_offset == "9"
    if isinstance(error, StaleEpochError):
        assert error.current_epoch == 4
    if isinstance(error, SequenceGapError):
        assert (error.expected_seq, error.received_seq) == (2, 5)


# -- the read loop ----------------------------------------------------------------------------


def read_actions(opts: core.ReadOptions, script: list[Any]) -> list[Any]:
    """Drive a read flow; ``script`` answers Send/Receive in order; return emitted events."""
    flow = core.read_flow(opts)
    events: list[Any] = []
    feed = iter(script)
    action = next(flow)
    try:
        while True:
            if isinstance(action, core.Emit):
                events.append(action.event)
                action = flow.send(None)
            elif isinstance(action, core.Send | core.Receive):
                action = flow.send(next(feed))
            else:
                action = flow.send(None)
    except StopIteration:
        return events


def test_catch_up_stops_when_up_to_date() -> None:
    opts = core.ReadOptions(URL, live=False)
    events = read_actions(
        opts,
        [
            head(200, stream_next_offset="1", ct="application/json"),
            b"[1]",
            b"",
            head(200, stream_next_offset="2", stream_up_to_date="true"),
            b"[2]",
            b"",
        ],
    )
    assert [(e.data, e.next_offset, e.up_to_date) for e in events] == [
        (b"[1]", "1", False),
        (b"[2]", "2", True),
    ]


def test_long_poll_stops_on_closed_instead_of_busy_looping() -> None:
    opts = core.ReadOptions(URL, live="long-poll")
    events = read_actions(
        opts,
        [
            head(200, stream_next_offset="1", stream_up_to_date="true"),
            b"x",
            b"",
            head(204, stream_next_offset="1", stream_cursor="c"),
            b"",
            head(204, stream_next_offset="1", stream_closed="true", stream_up_to_date="true"),
            b"",
        ],
    )
    assert events[-1].closed
    assert events[-1].data is None  # the flow returned: no further request


SSE_BODY = (
    b"event: data\ndata:[1]\n\n"
    b'event: control\ndata:{"streamNextOffset":"1","streamCursor":"c1"}\n\n'
    b"event: data\ndata: [2,\ndata: 3]\n\n"
    b'event: control\ndata:{"streamNextOffset":"2","upToDate":true}\n\n'
)
SSE_CLOSED = b'event: control\ndata:{"streamNextOffset":"2","streamClosed":true}\n\n'


def sse_head() -> core.ResponseHead:
    return head(200, ct="text/event-stream")


@NO_DEADLINE
@given(st.lists(st.integers(1, len(SSE_BODY) - 1), unique=True, max_size=6))
def test_sse_any_chunking_same_events_and_reconnect_from_last_offset(cuts: list[int]) -> None:
    cuts = sorted(cuts)
    chunks = [SSE_BODY[a:b] for a, b in zip([0, *cuts], [*cuts, len(SSE_BODY)], strict=True)]
    opts = core.ReadOptions(URL, live="sse", policy=NO_JITTER)
    flow = core.read_flow(opts)
    sent: list[core.Request] = []
    script = iter(
        [
            head(200, stream_next_offset="0", stream_up_to_date="true"),
            b"",
            sse_head(),
            *chunks,
            b"",  # the server ended the response: the client reconnects
            sse_head(),
            SSE_CLOSED,
            b"",
        ]
    )
    events = []
    action = next(flow)
    try:
        while True:
            if isinstance(action, core.Send):
                sent.append(action.request)
            if isinstance(action, core.Emit):
                events.append(action.event)
                action = flow.send(None)
            elif isinstance(action, core.Send | core.Receive):
                action = flow.send(next(script))
            else:
                action = flow.send(None)
    except StopIteration:
        pass
    data_events = [e for e in events if e.data is not None]
    assert [(e.data, e.next_offset) for e in data_events] == [(b"[1]", "1"), (b"[2,\n3]", "2")]
    assert events[-1].closed
    queries = [urlsplit(r.url).query for r in sent]
    assert queries == ["offset=-1", "live=sse&offset=0", "cursor=c1&live=sse&offset=2"]


def test_sse_base64_payloads() -> None:
    opts = core.ReadOptions(URL, live="sse", offset="now")
    body = (
        b"event: data\ndata:AAEC\ndata:/w==\n\n"
        b'event: control\ndata:{"streamNextOffset":"5","streamClosed":true}\n\n'
    )
    events = read_actions(
        opts,
        [
            head(200, stream_next_offset="now", stream_up_to_date="true"),
            b"",
            head(200, ct="text/event-stream", stream_sse_data_encoding="base64"),
            body,
        ],
    )
    assert events[-1].data == b"\x00\x01\x02\xff"
    assert events[-1].closed


def test_read_retries_then_raises_fetch_error() -> None:
    opts = core.ReadOptions(URL, live=False, policy=core.RetryPolicy(max_retries=2))
    with pytest.raises(FetchError):
        read_actions(opts, [core.Failure(OSError()), head(500), b"", core.Failure(OSError())])


def test_on_error_can_retry_with_new_headers() -> None:
    opts = core.ReadOptions(URL, live=False, has_on_error=True, policy=NO_JITTER)
    flow = core.read_flow(opts)
    action = flow.send(None)
    assert isinstance(action, core.Send)
    action = flow.send(head(401))
    action = flow.send(b"")
    assert isinstance(action, core.CallOnError)
    action = flow.send({"headers": {"Authorization": "new"}})
    assert isinstance(action, core.Sleep)
    action = flow.send(None)
    assert isinstance(action, core.Send)
    assert action.request.header("Authorization") == "new"


# -- the producer -----------------------------------------------------------------------------


def test_producer_auto_claim_and_gap_wait() -> None:
    state = core.ProducerState("p", 0, 1)
    batch = core.Batch(b"[1]", 0, 0)
    flow = core.produce_flow(
        batch,
        url=URL,
        state=state,
        headers=None,
        params=None,
        content_type="application/json",
        auto_claim=True,
        policy=NO_JITTER,
    )
    action = next(flow)
    assert isinstance(action, core.Send)
    action = flow.send(head(403, producer_epoch="3"))
    assert isinstance(action, core.Send)
    assert action.request.header("Producer-Epoch") == "4"
    assert action.request.header("Producer-Seq") == "0"
    action = flow.send(head(503))
    assert isinstance(action, core.Sleep)
    action = flow.send(None)
    with pytest.raises(StopIteration) as stop:
        flow.send(head(200, stream_next_offset="7", producer_epoch="4", producer_seq="0"))
    assert stop.value.value == core.BatchResult("7", False, 4, 0)
    assert (state.epoch, state.next_seq) == (4, 1)

    batch = core.Batch(b"[1]", 4, 3)
    flow = core.produce_flow(
        batch,
        url=URL,
        state=state,
        headers=None,
        params=None,
        content_type="application/json",
        auto_claim=False,
        policy=NO_JITTER,
    )
    next(flow)
    action = flow.send(head(409, producer_expected_seq="1", producer_received_seq="3"))
    assert action == core.WaitForSeqs(4, range(1, 3))
    action = flow.send(None)
    assert isinstance(action, core.Send)
    with pytest.raises(StopIteration) as stop:
        flow.send(head(204))
    assert stop.value.value.duplicate


def test_producer_state_round_trip() -> None:
    state = core.ProducerState("p", 2, 9)
    assert core.ProducerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    with pytest.raises(ValueError):
        core.ProducerState.from_dict({"producer_id": "", "epoch": 0, "next_seq": 0})


# -- large catch-up bodies in pieces ------------------------------------------------------------


def rechunk(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@NO_DEADLINE
@given(
    st.lists(json_values, max_size=30),
    st.integers(1, 64),
    st.lists(st.integers(0, 4000), max_size=12),
    st.sampled_from(["", " ", "\n  "]),
)
def test_json_body_is_cut_between_messages(
    messages: list[Any], max_bytes: int, cuts: list[int], ws: str
) -> None:
    sep = f"{ws},{ws}"
    body = f"{ws}[{ws}{sep.join(json.dumps(m) for m in messages)}{ws}]{ws}".encode()
    splitter = core._BodySplitter(max_bytes, json_mode=True)
    found = [p for c in rechunk(body, cuts) for p in splitter.feed(c)]
    pieces = [p for p, _ in found]
    rest = splitter.end()
    got = [m for p in [*pieces, rest] if p for m in core.decode_json_batch(p)]
    assert got == messages
    assert all(core.decode_json_batch(p) == ms for p, ms in found)  # decoded as sent
    assert all(core.decode_json_batch(p) for p in pieces)  # no empty piece before the end
    longest = max((len(json.dumps(m)) for m in messages), default=0)
    assert all(len(p) <= max_bytes + longest + 2 * len(sep) + 2 for p in pieces)


@NO_DEADLINE
@given(st.binary(max_size=300), st.integers(1, 50), st.lists(st.integers(0, 300), max_size=10))
def test_byte_body_is_cut_into_bounded_pieces(body: bytes, max_bytes: int, cuts: list[int]) -> None:
    splitter = core._BodySplitter(max_bytes, json_mode=False)
    chunks = rechunk(body, cuts)
    pieces = [p for c in chunks for p, _ in splitter.feed(c)]
    assert b"".join([*pieces, splitter.end()]) == body
    assert all(len(p) == max_bytes for p in pieces)


def test_a_long_json_message_is_not_reparsed_for_every_chunk() -> None:
    big = json.dumps(["x" * 100_000]).encode()
    splitter = core._BodySplitter(10, json_mode=True)
    for i in range(0, len(big), 100):
        assert splitter.feed(big[i : i + 100]) == []
    assert splitter._next_try > 10  # backed off: the next attempt waits for twice the text
    assert core.decode_json_batch(splitter.end()) == ["x" * 100_000]


def test_non_array_json_body_is_handed_on_whole() -> None:
    splitter = core._BodySplitter(4, json_mode=True)
    assert splitter.feed(b'{"a": 1, "b": [1, 2, 3]}') == []
    assert splitter.end() == b'{"a": 1, "b": [1, 2, 3]}'


@pytest.mark.parametrize("json_mode", [True, False])
def test_large_body_streams_and_a_broken_one_resumes_without_duplicates(json_mode: bool) -> None:
    messages = [{"i": i, "pad": "p" * 20} for i in range(40)]
    body = json.dumps(messages).encode() if json_mode else bytes(range(256)) * 4
    ct = "application/json" if json_mode else "application/octet-stream"
    opts = core.ReadOptions(URL, live=False, max_chunk_bytes=100, policy=NO_JITTER)
    chunks = rechunk(body, list(range(64, len(body), 64)))
    first_try = chunks[: len(chunks) // 2]  # the connection breaks halfway through
    events = read_actions(
        opts,
        [
            head(200, ct=ct, stream_next_offset="9", stream_up_to_date="true"),
            *first_try,
            core.Failure(OSError("reset")),
            head(200, ct=ct, stream_next_offset="9", stream_up_to_date="true"),
            *chunks,
            b"",
        ],
    )
    assert len(events) > 3
    assert all(e.next_offset == "-1" and not e.up_to_date for e in events[:-1])
    assert (events[-1].next_offset, events[-1].up_to_date) == ("9", True)
    if json_mode:
        assert [m for e in events for m in core.decode_json_batch(e.data)] == messages
    else:
        assert b"".join(e.data for e in events) == body


def test_if_none_match_first_request_only_and_304_ends_the_session() -> None:
    opts = core.ReadOptions(URL, live="long-poll", if_none_match='"e1"')
    flow = core.read_flow(opts)
    action = next(flow)
    assert isinstance(action, core.Send)
    assert action.request.header("If-None-Match") == '"e1"'
    action = flow.send(core.Failure(OSError("reset")))  # retried, still conditional
    assert isinstance(action, core.Sleep)
    action = flow.send(None)
    assert isinstance(action, core.Send)
    assert action.request.header("If-None-Match") == '"e1"'
    action = flow.send(head(304, etag='"e1"'))
    assert isinstance(action, core.CloseResponse)
    with pytest.raises(StopIteration):
        flow.send(None)
    # a 200 instead: the read goes on, unconditionally
    events = read_actions(
        opts,
        [
            head(200, stream_next_offset="1", ct="text/plain"),
            b"new",
            b"",
            head(204, stream_next_offset="1", stream_closed="true"),
            b"",
        ],
    )
    assert events[0].data == b"new"


# -- forks, handle batching ---------------------------------------------------------------------


def test_fork_request_headers() -> None:
    fork = core.ForkFrom("http://h/v1/stream/src", "0_5", 2)
    req = core.create_request(
        URL,
        headers={},
        params={},
        content_type=None,
        ttl_seconds=None,
        expires_at=None,
        body=None,
        closed=False,
        fork=fork,
    )
    assert req.header("Stream-Forked-From") == "/v1/stream/src"
    assert req.header("Stream-Fork-Offset") == "0_5"
    assert req.header("Stream-Fork-Sub-Offset") == "2"
    assert req.header("Content-Type") is None  # a fork inherits its source's type
    with pytest.raises(ValueError, match="-1"):
        core.ForkFrom("/v1/stream/src", sub_offset=-1).headers()


def test_take_append_batch() -> None:
    from collections import deque

    q = deque(
        [
            core.QueuedAppend(b"a", "text/plain"),
            core.QueuedAppend(b"bb", "text/plain"),
            core.QueuedAppend(b"c", "application/json"),
            core.QueuedAppend(b"d", "application/json", seq="1"),
            core.QueuedAppend(b"e", "application/json"),
            core.QueuedAppend(b"ffff", "application/json"),
        ]
    )
    batches = []
    while q:
        batches.append([x.message for x in core.take_append_batch(q, max_bytes=4)])
    assert batches == [[b"a", b"bb"], [b"c"], [b"d"], [b"e"], [b"ffff"]]


@NO_DEADLINE
@given(st.integers(1, 40), st.lists(st.integers(0, 60), max_size=8))
def test_non_array_json_with_multibyte_text_survives_any_chunking(
    max_bytes: int, cuts: list[int]
) -> None:
    body = json.dumps({"é": "日本語テキスト", "n": [1, 2]}, ensure_ascii=False).encode()
    splitter = core._BodySplitter(max_bytes, json_mode=True)
    assert [p for c in rechunk(body, cuts) for p in splitter.feed(c)] == []
    assert splitter.end() == body
