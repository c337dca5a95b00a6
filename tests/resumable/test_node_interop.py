"""Cross-language interop: our resumable streams against npm ``resumable-stream`` 2.2.13.

A Node.js process (``tests/node/resumable/*.mjs``, node-redis v4 entry) and this process share
one real redis-server. Both directions are covered - Node produces and Python resumes, Python
produces and Node resumes - and, as the reference every expectation is checked against, Node
produces and Node resumes; Python/Python runs through the same matrix for free.

Expectations follow the wire protocol (shared/specs/resumable-stream-protocol.md):

- the replay is ``joined[skip:]`` in UTF-16 code units, applied to the replay only (live chunks
  after it arrive whole); a cut inside a surrogate pair leaves a lone surrogate, which node-redis
  encodes as U+FFFD, so every reader sees ``"\\ufffd"`` there;
- a resume after DONE gives ``null`` (Node) / ``None`` (Python); a missing stream ``undefined`` /
  ``"NOT_FOUND"``; a dead producer an ack timeout after ~1 s.

Received text is compared byte for byte (UTF-8 with surrogates kept) with the expected text.
Producers are gated: a chunk is only produced when the test releases it, so "before the first
chunk", "mid-stream" and "all chunks buffered but not done" are exact, not timing guesses.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import coredis
import pytest

from resumable_streams import (
    ResumableStream,
    ResumableStreamContext,
    open_resumable_stream_context,
)
from resumable_streams.errors import AckTimeoutError

from .node_support import NodeProcess, ensure_node_modules, open_node, run_node

pytestmark = [pytest.mark.anyio, pytest.mark.node]

Side = Literal["node", "python"]
Api = Literal["explicit", "idempotent"]

SIDES: tuple[Side, ...] = ("node", "python")
PAIRS = [
    pytest.param(producer, resumer, id=f"{producer}-to-{resumer}")
    for producer in SIDES
    for resumer in SIDES
]

DONE_MESSAGE = "\n\n\nDONE_SENTINEL_hasdfasudfyge374%$%^$EDSATRTYFtydryrte\n"

# UTF-16 lengths 2, 4, 2, 3, 3 (14 units): "😀" occupies units 3-4, "🎉" units 8-9.
CHUNKS = ["ab", "c😀d", "éf", "🎉\n", "日本語"]
FULL = "".join(CHUNKS)
TIMEOUT = 30.0


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The npm packages are installed (``npm ci``); missing node/npm fails the run."""
    return ensure_node_modules()


@pytest.fixture(autouse=True)
def _needs_node(node_modules: Path) -> None:
    """Every test here runs Node."""


# --------------------------------------------------------------------------------- expectations


def js_slice(text: str, start: Any) -> str:
    """``text.slice(start)`` as a Node producer computes it, then UTF-8 encoded by node-redis.

    JS coerces ``start`` to an integer (``"3"`` -> 3, ``2.7`` -> 2, ``null``/``undefined`` -> 0),
    counts UTF-16 code units, treats a negative start as "from the end", and node-redis turns a
    lone surrogate into U+FFFD.
    """
    units = text.encode("utf-16-le", "surrogatepass")
    n = len(units) // 2
    begin = int(float(start)) if start is not None else 0
    if begin < 0:
        begin = max(n + begin, 0)
    return units[2 * min(begin, n) :].decode("utf-16-le", "replace")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def expected_text(released: int, skip: int | None) -> str:
    """What a resumer joining after ``released`` chunks with ``skip`` receives in total."""
    return js_slice("".join(CHUNKS[:released]), skip) + "".join(CHUNKS[released:])


def assert_same_text(got: str, expected: str) -> None:
    """Byte-for-byte comparison (surrogates kept, so a lone one would show up)."""
    got_bytes = got.encode("utf-8", "surrogatepass")
    expected_bytes = expected.encode("utf-8", "surrogatepass")
    assert got_bytes == expected_bytes, f"got {got!r}, expected {expected!r}"


# ------------------------------------------------------------------------------------ producers


class Gate:
    """Lets a source produce chunk ``i`` only once ``i`` chunks were released before it.

    Turn ``len(chunks)`` is the end of the stream, so releasing exactly ``len(chunks)`` leaves
    the stream open with everything buffered.
    """

    def __init__(self) -> None:
        self.allowed = 0
        self._changed = anyio.Event()

    def release(self, count: int) -> None:
        self.allowed += count
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_turn(self, index: int) -> None:
        while index >= self.allowed:
            await self._changed.wait()


def gated_source(chunks: Sequence[str], gate: Gate) -> Callable[[], AsyncIterator[str]]:
    async def source() -> AsyncIterator[str]:
        for index, chunk in enumerate(chunks):
            await gate.wait_turn(index)
            yield chunk
        await gate.wait_turn(len(chunks))

    return source


def wrong_source() -> AsyncIterator[str]:
    """The source of a caller that must NOT become the producer."""

    async def source() -> AsyncIterator[str]:
        yield "WRONG: a second producer ran"

    return source()


class Producer(Protocol):
    async def release(self, count: int) -> None:
        """Let ``count`` more chunks through and wait until the producer has buffered them."""

    async def finish(self) -> str:
        """Release the rest and the end; wait until DONE is stored; return the producer's text."""


class NodeProducer:
    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.released = 0

    async def release(self, count: int) -> None:
        if count == 0:
            return
        await self.node.send_line(str(count))
        self.released += count
        await self.node.wait_for("chunk", index=self.released - 1)

    async def finish(self) -> str:
        await self.node.send_line("all")
        text = (await self.node.wait_for("end"))["text"]
        await self.node.finish()  # "closed": the library's done-cleanup (SET DONE) has run
        assert isinstance(text, str)
        return text


class PythonProducer:
    def __init__(
        self,
        ctx: ResumableStreamContext,
        stream_id: str,
        it: AsyncIterator[str],
        gate: Gate,
        chunks: Sequence[str],
    ) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.it = it
        self.gate = gate
        self.chunks = chunks
        self.received: list[str] = []

    async def release(self, count: int) -> None:
        start = self.gate.allowed
        self.gate.release(count)
        # The producer's own reader sees a chunk only after the producer buffered it. It
        # never sees an empty chunk (Node's does; they add nothing to the text).
        for chunk in self.chunks[start : start + count]:
            if chunk:
                self.received.append(await self.it.__anext__())

    async def finish(self) -> str:
        self.gate.release(10**9)
        self.received.extend([chunk async for chunk in self.it])
        await wait_done(self.ctx, self.stream_id)
        return "".join(self.received)


async def wait_done(ctx: ResumableStreamContext, stream_id: str) -> None:
    """Wait until the sentinel says DONE (a producer's iterator may end before it SETs it)."""
    with anyio.fail_after(10):
        while True:
            if await ctx.has_existing_stream(stream_id) == "DONE":
                return
            await anyio.sleep(0.01)


@dataclass
class Env:
    """Where a test's streams live: the Python context, the Redis URL, the prefix, the id."""

    ctx: ResumableStreamContext
    redis_url: str
    prefix: str
    stream_id: str


@asynccontextmanager
async def start_producer(
    side: Side, api: Api, env: Env, chunks: Sequence[str] = CHUNKS
) -> AsyncIterator[Producer]:
    """A gated producer of ``chunks`` on ``side``, started (sentinel set) with nothing released."""
    ctx, stream_id = env.ctx, env.stream_id
    if side == "node":
        config = {
            "prefix": env.prefix,
            "streamId": stream_id,
            "api": api,
            "chunks": list(chunks),
            "gated": True,
        }
        async with open_node("produce.mjs", config, env.redis_url) as node:
            await node.wait_for("started", result="stream")
            yield NodeProducer(node)
    else:
        gate = Gate()
        source = gated_source(chunks, gate)
        if api == "explicit":
            it = await ctx.create_new_resumable_stream(stream_id, source)
        else:
            it = await ctx.resumable_stream(stream_id, source)
        assert it is not None, "a fresh stream id must make this call the producer"
        try:
            yield PythonProducer(ctx, stream_id, it, gate, chunks)
        finally:
            gate.release(10**9)
            await aclose(it)


async def aclose(it: object) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await close()


# ------------------------------------------------------------------------------------- resumers

# What a resume call gave, in one vocabulary for both sides: "stream", "null" (done; Python
# None), "undefined" (no such stream; Python "NOT_FOUND") or "error: <message>".


class Resumer(Protocol):
    result: str

    async def text(self) -> str:
        """The whole text received (empty acks included, which add nothing)."""


@dataclass
class NodeResumer:
    node: NodeProcess
    result: str = ""

    async def start(self) -> None:
        event = await self.node.wait_for("result")
        kind = event["kind"]
        self.result = f"error: {event['message']}" if kind == "error" else str(kind)
        if kind == "stream":
            # The first message (the replay, possibly "") is the ack: the producer has
            # registered this listener and taken its snapshot.
            await self.node.wait_for("chunk", index=0)

    async def text(self) -> str:
        text = (await self.node.wait_for("end"))["text"]
        await self.node.finish()
        assert isinstance(text, str)
        return text


@dataclass
class PythonResumer:
    it: ResumableStream | None
    result: str
    chunks: list[str] = field(default_factory=list)

    async def text(self) -> str:
        assert self.it is not None
        self.chunks.extend([chunk async for chunk in self.it])
        return "".join(self.chunks)

    @property
    def position(self) -> int:
        assert self.it is not None
        return self.it.position


def describe_result(value: object) -> str:
    if value is None:
        return "null"
    if value == "NOT_FOUND":
        return "undefined"
    return "stream"


@asynccontextmanager
async def start_resumer(
    side: Side, api: Api, env: Env, skip: int | None = None
) -> AsyncIterator[Resumer]:
    """Resume the stream on ``side``; returns once the resume call answered (and was acked)."""
    ctx, stream_id = env.ctx, env.stream_id
    if side == "node":
        config: dict[str, Any] = {
            "prefix": env.prefix,
            "streamId": stream_id,
            "api": "existing" if api == "explicit" else "idempotent",
            "chunks": ["WRONG: a second producer ran"],
        }
        if skip is not None:
            config["skip"] = skip
        async with open_node("resume.mjs", config, env.redis_url) as node:
            resumer = NodeResumer(node)
            await resumer.start()
            yield resumer
        return
    it: ResumableStream | None = None
    try:
        if api == "explicit":
            value: object = await ctx.resume_existing_stream(stream_id, skip_characters=skip)
        else:
            value = await ctx.resumable_stream(stream_id, wrong_source, skip_characters=skip)
    except AckTimeoutError as exc:
        yield PythonResumer(None, f"error: {exc}")
        return
    if isinstance(value, ResumableStream):
        it = value
    try:
        yield PythonResumer(it, describe_result(value))
    finally:
        await aclose(it)


@asynccontextmanager
async def open_env(redis_url: str, prefix: str, **options: Any) -> AsyncIterator[Env]:
    """A running Python context on the test's prefix, and a fresh stream id."""
    async with open_resumable_stream_context(
        redis_url=redis_url, key_prefix=prefix, **options
    ) as ctx:
        yield Env(ctx, redis_url, prefix, f"s-{uuid.uuid4()}")


@asynccontextmanager
async def raw_redis(redis_url: str) -> AsyncIterator[coredis.Redis[str]]:
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        yield client


# ----------------------------------------------------------------------------- the resume matrix

POSITIONS = {"before-first-chunk": 0, "mid-stream": 2, "all-buffered": len(CHUNKS)}


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
@pytest.mark.parametrize("api", ["explicit", "idempotent"])
@pytest.mark.parametrize("position", [*POSITIONS, "after-done"])
async def test_resume(
    producer_side: Side,
    resumer_side: Side,
    api: Api,
    position: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    """Resume before the first chunk, mid-stream, with everything buffered, and after DONE."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, api, env) as producer,
        ):
            if position == "after-done":
                assert_same_text(await producer.finish(), FULL)
                async with start_resumer(resumer_side, api, env) as resumer:
                    assert resumer.result == "null"
                return
            released = POSITIONS[position]
            await producer.release(released)
            async with start_resumer(resumer_side, api, env) as resumer:
                assert resumer.result == "stream"
                assert_same_text(await producer.finish(), FULL)
                assert_same_text(await resumer.text(), expected_text(released, None))


SKIP_CASES = [
    # (chunks released before the resume, skipCharacters)
    pytest.param(len(CHUNKS), 0, id="all-buffered-skip-0"),
    pytest.param(len(CHUNKS), 3, id="all-buffered-skip-mid-chunk"),
    pytest.param(len(CHUNKS), 4, id="all-buffered-skip-cuts-emoji"),
    pytest.param(len(CHUNKS), 9, id="all-buffered-skip-cuts-2nd-emoji"),
    pytest.param(len(CHUNKS), 14, id="all-buffered-skip-exact-length"),
    pytest.param(len(CHUNKS), 20, id="all-buffered-skip-past-end"),
    pytest.param(2, 3, id="mid-stream-skip-mid-chunk"),
    pytest.param(2, 4, id="mid-stream-skip-cuts-emoji"),
    pytest.param(2, 20, id="mid-stream-skip-past-buffer"),
    pytest.param(0, 5, id="before-first-chunk-skip-ignored-for-live"),
]


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
@pytest.mark.parametrize(("released", "skip"), SKIP_CASES)
async def test_skip_characters(
    producer_side: Side,
    resumer_side: Side,
    released: int,
    skip: int,
    redis_url: str,
    key_prefix: str,
) -> None:
    """``skipCharacters`` counts UTF-16 units of the replay; a cut pair arrives as U+FFFD."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
        ):
            await producer.release(released)
            async with start_resumer(resumer_side, "explicit", env, skip=skip) as resumer:
                assert resumer.result == "stream"
                await producer.finish()
                assert_same_text(await resumer.text(), expected_text(released, skip))
                if isinstance(resumer, PythonResumer) and skip <= utf16_len(
                    "".join(CHUNKS[:released])
                ):
                    # Read to the end, a Python resumer is at the end of the whole stream:
                    # that is the skip_characters to pass to continue after a lost connection.
                    # (A skip past the buffer: test_position_after_skip_past_the_buffer.)
                    assert resumer.position == utf16_len(FULL)


@pytest.mark.parametrize("producer_side", SIDES)
@pytest.mark.parametrize(("released", "skip"), [(0, 5), (2, 20), (len(CHUNKS), 20)])
async def test_position_after_skip_past_the_buffer(
    producer_side: Side, released: int, skip: int, redis_url: str, key_prefix: str
) -> None:
    """``position`` after a skip beyond what the producer had buffered (a caller error).

    Node sends an empty replay and then every later chunk whole; the resumer cannot tell how
    much the producer had, so (as documented in docs/resumable-streams.md) ``position`` is
    the skip plus what was read: the text is gap-free, the position overstates by the excess.
    """
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
        ):
            await producer.release(released)
            async with start_resumer("python", "explicit", env, skip=skip) as resumer:
                assert isinstance(resumer, PythonResumer)
                await producer.finish()
                text = await resumer.text()
                assert_same_text(text, expected_text(released, skip))
                assert resumer.position == skip + utf16_len(text)
                assert resumer.position - utf16_len(FULL) == skip - utf16_len(
                    "".join(CHUNKS[:released])
                )


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
async def test_idempotent_resume_with_skip_through_emoji(
    producer_side: Side, resumer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """The idempotent API passes ``skipCharacters`` through to the resume (INCR > 1)."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "idempotent", env) as producer,
        ):
            await producer.release(len(CHUNKS))
            async with start_resumer(resumer_side, "idempotent", env, skip=4) as resumer:
                assert resumer.result == "stream"
                await producer.finish()
                assert_same_text(await resumer.text(), expected_text(len(CHUNKS), 4))


@pytest.mark.parametrize("resumer_side", SIDES)
async def test_missing_stream(resumer_side: Side, redis_url: str, key_prefix: str) -> None:
    """Explicit resume of an unknown id: ``undefined`` / ``"NOT_FOUND"`` on both sides."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_resumer(resumer_side, "explicit", env) as resumer,
        ):
            assert resumer.result == "undefined"


# --------------------------------------------------------------------------- the wire, by hand

RAW_REQUESTS = [
    # (extra fields of the request besides listenerId, the expected replay of FULL)
    pytest.param({}, FULL, id="skip-omitted"),
    pytest.param({"skipCharacters": None}, FULL, id="skip-null-as-the-pypi-port-sends"),
    pytest.param({"skipCharacters": 0}, FULL, id="skip-0"),
    pytest.param({"skipCharacters": 4}, js_slice(FULL, 4), id="skip-cuts-emoji"),
    pytest.param({"skipCharacters": "3"}, js_slice(FULL, 3), id="skip-numeric-string"),
    pytest.param({"skipCharacters": 2.7}, js_slice(FULL, 2), id="skip-float-truncated"),
    pytest.param({"skipCharacters": 100}, "", id="skip-past-end-empty-ack"),
    pytest.param({"skipCharacters": 1, "extra": [1]}, js_slice(FULL, 1), id="unknown-field"),
]


@pytest.mark.parametrize("producer_side", SIDES)
@pytest.mark.parametrize(("extra", "expected"), RAW_REQUESTS)
async def test_hand_written_request(
    producer_side: Side,
    extra: dict[str, Any],
    expected: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    """A producer answers a request JSON as Node's does: one replay message, later DONE."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
            raw_redis(redis_url) as client,
        ):
            await producer.release(len(CHUNKS))
            payload = {"listenerId": str(uuid.uuid4()), **extra}
            async with raw_listener(client, env, payload["listenerId"]) as pubsub:
                request_channel = f"{env.prefix}:rs:request:{env.stream_id}"
                await client.publish(request_channel, json.dumps(payload))
                assert_same_text(await next_message(pubsub), expected)
                await producer.finish()
                assert await next_message(pubsub) == DONE_MESSAGE


@asynccontextmanager
async def raw_listener(
    client: coredis.Redis[str], env: Env, listener_id: str
) -> AsyncIterator[Any]:
    """SUBSCRIBE to a listener's chunk channel and wait for the confirmation."""
    async with client.pubsub(channels=[f"{env.prefix}:rs:chunk:{listener_id}"]) as pubsub:
        await wait_subscribed(pubsub)
        yield pubsub


async def wait_subscribed(pubsub: Any) -> None:
    """Wait for the SUBSCRIBE confirmation (coredis sends the command without waiting)."""
    confirmation = await pubsub.get_message(timeout=5)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"


async def next_message(pubsub: Any, timeout: float = 5) -> str:
    with anyio.fail_after(timeout):
        while True:
            message = await pubsub.get_message(timeout=timeout)
            if message is not None and message["type"] == "message":
                data = message["data"]
                assert isinstance(data, str)
                return data


@pytest.mark.parametrize("skip", [None, 0, 3])
async def test_request_json_matches_node(skip: int | None, redis_url: str, key_prefix: str) -> None:
    """A Python resumer's request JSON has the shape a Node resumer's has (seen on the wire)."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer("node", "explicit", env) as producer,
            raw_redis(redis_url) as client,
            client.pubsub(channels=[f"{env.prefix}:rs:request:{env.stream_id}"]) as spy,
        ):
            await wait_subscribed(spy)
            await producer.release(len(CHUNKS))
            requests: dict[Side, str] = {}
            for side in SIDES:
                async with start_resumer(side, "explicit", env, skip=skip) as resumer:
                    assert resumer.result == "stream"
                    requests[side] = await next_message(spy)
            await producer.finish()
    node, python = (json.loads(requests[side]) for side in SIDES)
    assert isinstance(python, dict)
    assert sorted(python) == sorted(node), requests
    assert str(uuid.UUID(python["listenerId"])) == python["listenerId"]
    if skip is None:
        assert "skipCharacters" not in python
    else:
        assert type(python["skipCharacters"]) is int
        assert python["skipCharacters"] == node["skipCharacters"] == skip


# ---------------------------------------------------------------------------- failure modes


@pytest.mark.parametrize("resumer_side", SIDES)
async def test_dead_node_producer_times_out(
    resumer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """A SIGKILLed producer leaves an active sentinel: resumers give up after the 1 s ack."""
    with anyio.fail_after(TIMEOUT):
        async with open_env(redis_url, key_prefix) as env:
            async with start_producer("node", "explicit", env) as producer:
                assert isinstance(producer, NodeProducer)
                await producer.release(2)
                producer.node.kill()
                await producer.node.process.wait()
            async with raw_redis(redis_url) as client:
                assert await client.get(f"{env.prefix}:rs:sentinel:{env.stream_id}") == "1"
            started = time.monotonic()
            async with start_resumer(resumer_side, "explicit", env) as resumer:
                assert resumer.result.startswith("error: ")
                assert "Timeout waiting for ack" in resumer.result
            if resumer_side == "python":  # Node's includes its process start-up
                assert time.monotonic() - started >= 0.9


@pytest.mark.parametrize("resumer_side", SIDES)
@pytest.mark.parametrize("api", ["explicit", "idempotent"])
async def test_finished_while_waiting_for_ack_gives_null(
    resumer_side: Side, api: Api, redis_url: str, key_prefix: str
) -> None:
    """No ack, but the sentinel turned DONE meanwhile: ``null`` / ``None``, not an error."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            raw_redis(redis_url) as client,
            client.pubsub(channels=[f"{env.prefix}:rs:request:{env.stream_id}"]) as spy,
            anyio.create_task_group() as tg,
        ):
            await wait_subscribed(spy)
            sentinel = f"{env.prefix}:rs:sentinel:{env.stream_id}"
            await client.set(sentinel, "1")

            async def finish_once_asked() -> None:
                await next_message(spy, timeout=20)  # the resumer is past its GET/INCR now
                await client.set(sentinel, "DONE")

            tg.start_soon(finish_once_asked)
            async with start_resumer(resumer_side, api, env) as resumer:
                assert resumer.result == "null"


# ----------------------------------------------------------------- exactly once, in order, fast

FAST_CHUNKS = [f"{i:04d}:é😀;" for i in range(1500)]
FAST_FULL = "".join(FAST_CHUNKS)


async def test_python_resumers_of_a_fast_node_stream(redis_url: str, key_prefix: str) -> None:
    """Python resumers joining a running Node stream get every chunk once, in order."""
    texts: list[str] = []

    async def collect(it: ResumableStream) -> None:
        async with it:
            texts.append("".join([chunk async for chunk in it]))

    with anyio.fail_after(60):
        async with open_env(redis_url, key_prefix) as env:
            config = {
                "prefix": env.prefix,
                "streamId": env.stream_id,
                "api": "explicit",
                "chunks": FAST_CHUNKS,
                "gated": True,
                "delayMs": 1,
            }
            async with (
                open_node("produce.mjs", config, redis_url) as node,
                anyio.create_task_group() as tg,
            ):
                await node.wait_for("started", result="stream")
                await node.send_line(str(len(FAST_CHUNKS)))  # all chunks, but not the end
                for join_at in (100, 700, len(FAST_CHUNKS) - 1):
                    await node.wait_for("chunk", index=join_at)
                    it = await env.ctx.resume_existing_stream(env.stream_id)
                    assert isinstance(it, ResumableStream)
                    tg.start_soon(collect, it)
                await node.send_line("all")
                assert (await node.wait_for("end"))["text"] == FAST_FULL
                await node.finish()
    assert len(texts) == 3
    for text in texts:
        assert_same_text(text, FAST_FULL)


async def test_node_resumers_of_a_fast_python_stream(redis_url: str, key_prefix: str) -> None:
    """Node resumers joining a running Python stream get every chunk once, in order."""
    end = anyio.Event()
    reached = {100: anyio.Event(), 700: anyio.Event()}
    texts: list[str] = []

    async def source() -> AsyncIterator[str]:
        for chunk in FAST_CHUNKS:
            await anyio.sleep(0.001)
            yield chunk
        await end.wait()

    own: list[str] = []

    async def read_own(it: ResumableStream) -> None:
        async with it:
            async for chunk in it:
                own.append(chunk)
                if len(own) in reached:
                    reached[len(own)].set()

    async def node_resume(ready: anyio.Event) -> None:
        config = {"prefix": env.prefix, "streamId": env.stream_id, "api": "existing"}
        async with open_node("resume.mjs", config, redis_url) as node:
            resumer = NodeResumer(node)
            await resumer.start()
            assert resumer.result == "stream"
            ready.set()
            texts.append(await resumer.text())

    with anyio.fail_after(60):
        async with open_env(redis_url, key_prefix) as env:
            it = await env.ctx.create_new_resumable_stream(env.stream_id, source)
            assert isinstance(it, ResumableStream)
            acked = [anyio.Event(), anyio.Event()]
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_own, it)
                for event, ready in zip(reached.values(), acked, strict=True):
                    await event.wait()
                    tg.start_soon(node_resume, ready)
                for ready in acked:
                    await ready.wait()
                end.set()
    assert_same_text("".join(own), FAST_FULL)
    assert len(texts) == 2
    for text in texts:
        assert_same_text(text, FAST_FULL)


# --------------------------------------------------------------------------- cancel and state


@pytest.mark.parametrize("api", ["explicit", "idempotent"])
async def test_cancel_python_stream_with_node_resumer(
    api: Api, redis_url: str, key_prefix: str
) -> None:
    """``cancel_stream`` ends a Python stream as done: a Node resumer gets DONE and exits."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer("python", api, env) as producer,
        ):
            assert isinstance(producer, PythonProducer)
            await producer.release(2)
            async with start_resumer("node", api, env) as resumer:
                assert resumer.result == "stream"
                await env.ctx.cancel_stream(env.stream_id)
                assert_same_text(await resumer.text(), "".join(CHUNKS[:2]))
            # The creator's own iterator ends there too (nothing after the cancel point).
            assert [chunk async for chunk in producer.it] == []
            await wait_done(env.ctx, env.stream_id)
            assert await node_has(env) == "DONE"


async def node_has(env: Env) -> object:
    events = await run_node(
        "resume.mjs", {"prefix": env.prefix, "streamId": env.stream_id, "api": "has"}, env.redis_url
    )
    (result,) = [event for event in events if event["event"] == "result"]
    return result["value"]


@pytest.mark.parametrize("producer_side", SIDES)
@pytest.mark.parametrize("api", ["explicit", "idempotent"])
async def test_sentinel_lifecycle(
    producer_side: Side, api: Api, redis_url: str, key_prefix: str
) -> None:
    """Both languages see the same sentinel states, values and TTLs (2.2.13: EX 86400 always)."""
    with anyio.fail_after(TIMEOUT):
        async with open_env(redis_url, key_prefix) as env, raw_redis(redis_url) as client:
            sentinel = f"{env.prefix}:rs:sentinel:{env.stream_id}"
            assert await env.ctx.has_existing_stream(env.stream_id) is None
            assert await node_has(env) is None
            async with start_producer(producer_side, api, env) as producer:
                assert await client.get(sentinel) == "1"
                assert 0 < await client.ttl(sentinel) <= 86400
                assert await env.ctx.has_existing_stream(env.stream_id) is True
                assert await node_has(env) is True
                await producer.release(1)
                await producer.finish()
            assert await client.get(sentinel) == "DONE"
            assert 86400 - 60 < await client.ttl(sentinel) <= 86400
            assert await env.ctx.has_existing_stream(env.stream_id) == "DONE"
            assert await node_has(env) == "DONE"


@pytest.mark.parametrize("api", ["explicit", "idempotent"])
async def test_python_source_error_ends_node_resumer(
    api: Api, redis_url: str, key_prefix: str
) -> None:
    """A Python source that raises still finishes the stream: DONE reaches a Node resumer.

    (Node 2.2.13 itself has no ``.catch`` there: its resumers would hang.)
    """
    gate = Gate()

    async def source() -> AsyncIterator[str]:
        for index, chunk in enumerate(CHUNKS[:2]):
            await gate.wait_turn(index)
            yield chunk
        await gate.wait_turn(2)
        raise RuntimeError("the model crashed")

    with anyio.fail_after(TIMEOUT):
        async with open_env(redis_url, key_prefix) as env:
            if api == "explicit":
                it = await env.ctx.create_new_resumable_stream(env.stream_id, source)
            else:
                it = await env.ctx.resumable_stream(env.stream_id, source)
            assert isinstance(it, ResumableStream)
            async with it, start_resumer("node", api, env) as resumer:
                assert resumer.result == "stream"
                gate.release(10)
                assert_same_text(await resumer.text(), "".join(CHUNKS[:2]))
            await wait_done(env.ctx, env.stream_id)
            assert await node_has(env) == "DONE"


@pytest.mark.parametrize("resumer_side", SIDES)
async def test_lost_done_message_closes_by_watchdog(
    resumer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """DONE lost on pub/sub (#47): both resumers close after two DONE reads of the sentinel.

    The producer here is hand-written: it answers the request, SETs DONE and never publishes
    the DONE message.
    """
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix, done_watchdog_interval=0.2) as env,
            raw_redis(redis_url) as client,
            client.pubsub(channels=[f"{env.prefix}:rs:request:{env.stream_id}"]) as requests,
            anyio.create_task_group() as tg,
        ):
            await wait_subscribed(requests)
            sentinel = f"{env.prefix}:rs:sentinel:{env.stream_id}"
            await client.set(sentinel, "1", ex=86400)

            async def fake_producer() -> None:
                request = json.loads(await next_message(requests, timeout=20))
                chunk_channel = f"{env.prefix}:rs:chunk:{request['listenerId']}"
                await client.publish(chunk_channel, "ab")
                await client.publish(chunk_channel, "c😀d")
                await client.set(sentinel, "DONE", ex=86400)

            tg.start_soon(fake_producer)
            if resumer_side == "python":
                async with start_resumer("python", "explicit", env) as resumer:
                    assert resumer.result == "stream"
                    assert_same_text(await resumer.text(), "abc😀d")
                return
            config = {
                "prefix": env.prefix,
                "streamId": env.stream_id,
                "api": "existing",
                "doneWatchdogIntervalMs": 200,
            }
            async with open_node("resume.mjs", config, redis_url) as node:
                node_resumer = NodeResumer(node)
                await node_resumer.start()
                assert node_resumer.result == "stream"
                assert_same_text(await node_resumer.text(), "abc😀d")


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
@pytest.mark.parametrize(
    ("producer_api", "resumer_api"), [("explicit", "idempotent"), ("idempotent", "explicit")]
)
async def test_mixed_apis(
    producer_side: Side,
    resumer_side: Side,
    producer_api: Api,
    resumer_api: Api,
    redis_url: str,
    key_prefix: str,
) -> None:
    """A stream made by one API is resumed through the other (SET "1" vs INCR sentinels)."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, producer_api, env) as producer,
        ):
            await producer.release(2)
            async with start_resumer(resumer_side, resumer_api, env) as resumer:
                assert resumer.result == "stream"
                assert_same_text(await producer.finish(), FULL)
                assert_same_text(await resumer.text(), expected_text(2, None))


@pytest.mark.parametrize("producer_side", SIDES)
async def test_resumer_leaving_early(producer_side: Side, redis_url: str, key_prefix: str) -> None:
    """A resumer of the other language that stops reading does not disturb the stream."""
    leaver_side: Side = "python" if producer_side == "node" else "node"
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
        ):
            await producer.release(2)
            if leaver_side == "node":
                config = {
                    "prefix": env.prefix,
                    "streamId": env.stream_id,
                    "api": "existing",
                    "cancelAfter": 1,
                }
                events = await run_node("resume.mjs", config, redis_url)
                (cancelled,) = [e for e in events if e["event"] == "cancelled"]
                assert_same_text(cancelled["text"], "".join(CHUNKS[:2]))
            else:
                it = await env.ctx.resume_existing_stream(env.stream_id)
                assert isinstance(it, ResumableStream)
                async with it:
                    assert_same_text(await it.__anext__(), "".join(CHUNKS[:2]))
            await producer.release(1)
            async with start_resumer(leaver_side, "explicit", env) as resumer:
                assert resumer.result == "stream"
                assert_same_text(await producer.finish(), FULL)
                assert_same_text(await resumer.text(), FULL)


async def test_python_max_listeners_refusal_is_an_ack_timeout_for_node(
    redis_url: str, key_prefix: str
) -> None:
    """A Python producer refuses listeners past ``max_listeners`` by not answering."""
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix, max_listeners=1) as env,
            start_producer("python", "explicit", env) as producer,
        ):
            await producer.release(2)
            async with start_resumer("node", "explicit", env) as first:
                assert first.result == "stream"
                async with start_resumer("node", "explicit", env) as second:
                    assert second.result == "error: Timeout waiting for ack"
                await producer.finish()
                assert_same_text(await first.text(), FULL)


@pytest.mark.parametrize("producer_side", SIDES)
async def test_negative_skip(producer_side: Side, redis_url: str, key_prefix: str) -> None:
    """A negative ``skipCharacters`` from a Node resumer: a deliberate difference.

    Node's producer computes ``slice(-3)``, the last 3 units; a Python producer refuses such a
    request (``_coerce_skip``: no resumer means it, honouring it would drop the start), so the
    Node resumer gets its ack timeout instead of a wrong replay.
    """
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
        ):
            await producer.release(len(CHUNKS))
            async with start_resumer("node", "explicit", env, skip=-3) as resumer:
                if producer_side == "node":
                    assert resumer.result == "stream"
                    await producer.finish()
                    assert_same_text(await resumer.text(), "日本語")
                else:
                    assert resumer.result == "error: Timeout waiting for ack"
                    await producer.finish()


# An emoji split into its two UTF-16 halves across chunks, as a source decoding JSON string
# events ("\ud83d" then "\ude00") produces. Node joins the replay first (the halves pair up
# again) and node-redis turns each half published on its own into U+FFFD.
SPLIT_CHUNKS = ["ab\ud83d", "\ude00cd", "e"]


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        pytest.param(None, "ab😀cde", id="replay-pairs-the-halves"),
        pytest.param(2, "😀cde", id="replay-skip-2"),
        pytest.param(3, "\ufffdcde", id="replay-skip-cuts-the-pair"),
    ],
)
async def test_surrogate_halves_in_separate_chunks_replay(
    producer_side: Side,
    resumer_side: Side,
    skip: int | None,
    expected: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    """A replay of chunks holding lone surrogate halves is joined, then encoded, as Node does."""
    with anyio.fail_after(TIMEOUT):
        async with (
            # A short publish_timeout: a message that cannot be encoded fails fast.
            open_env(redis_url, key_prefix, publish_timeout=1.0) as env,
            start_producer(producer_side, "explicit", env, chunks=SPLIT_CHUNKS) as producer,
        ):
            await producer.release(len(SPLIT_CHUNKS))
            async with start_resumer(resumer_side, "explicit", env, skip=skip) as resumer:
                assert resumer.result == "stream"
                await producer.finish()
                assert_same_text(await resumer.text(), expected)


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
async def test_surrogate_halves_in_separate_chunks_live(
    producer_side: Side, resumer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """Published one by one, each lone half reaches every reader as U+FFFD."""
    with anyio.fail_after(TIMEOUT):
        async with (
            # A short publish_timeout: a message that cannot be encoded fails fast.
            open_env(redis_url, key_prefix, publish_timeout=1.0) as env,
            start_producer(producer_side, "explicit", env, chunks=SPLIT_CHUNKS) as producer,
            start_resumer(resumer_side, "explicit", env) as resumer,
        ):
            assert resumer.result == "stream"
            received = []
            for index in range(len(SPLIT_CHUNKS)):
                await producer.release(1)
                # Wait until the resumer has this chunk, so that each goes out on its own.
                if isinstance(resumer, NodeResumer):
                    event = await resumer.node.wait_for("chunk", index=index + 1)
                    received.append(event["data"])
                else:
                    assert isinstance(resumer, PythonResumer)
                    assert resumer.it is not None
                    received.append(await resumer.it.__anext__())
            await producer.finish()
            rest = await resumer.text()
            if isinstance(resumer, PythonResumer):
                rest = "".join(received) + rest
            assert_same_text(rest, "ab\ufffd\ufffdcde")


async def test_python_context_shutdown_finishes_stream_for_node_resumer(
    redis_url: str, key_prefix: str
) -> None:
    """Leaving the Python context cancels a stuck producer, which still ends the stream.

    The Node resumer gets DONE after the chunks produced so far; the sentinel says DONE.
    """
    gate = Gate()
    with anyio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(raw_redis(redis_url))
            async with open_env(redis_url, key_prefix, shutdown_timeout=0.2) as env:
                it = await env.ctx.create_new_resumable_stream(
                    env.stream_id, gated_source(CHUNKS, gate)
                )
                assert isinstance(it, ResumableStream)
                gate.release(2)
                async with it:
                    assert await it.__anext__() == CHUNKS[0]
                    assert await it.__anext__() == CHUNKS[1]
                config = {"prefix": env.prefix, "streamId": env.stream_id, "api": "existing"}
                node = await stack.enter_async_context(open_node("resume.mjs", config, redis_url))
                resumer = NodeResumer(node)
                await resumer.start()
                assert resumer.result == "stream"
            # The context is closed: its producer was cancelled and finished the stream.
            assert_same_text(await resumer.text(), "".join(CHUNKS[:2]))
            assert await client.get(f"{env.prefix}:rs:sentinel:{env.stream_id}") == "DONE"


EXOTIC_CHUNKS = [
    "\x00nul",
    "",
    "\r\n",
    "\u2028\u2029",
    DONE_MESSAGE[:-1],
    "\ufeffbom",
    "\ud7ff\ue000\uffff",
    "𝄞" * 3,
    "x" * 70_000,
]


@pytest.mark.parametrize(("producer_side", "resumer_side"), PAIRS)
async def test_exotic_text(
    producer_side: Side, resumer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """NUL, CR LF, line separators, a near-DONE marker, an empty and a 70,000-character chunk."""
    full = "".join(EXOTIC_CHUNKS)
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env, chunks=EXOTIC_CHUNKS) as producer,
        ):
            await producer.release(4)
            async with start_resumer(resumer_side, "explicit", env, skip=1) as resumer:
                assert resumer.result == "stream"
                assert_same_text(await producer.finish(), full)
                assert_same_text(await resumer.text(), js_slice(full, 1))


async def test_cancelled_python_context_still_finishes_stream_for_node_resumer(
    redis_url: str, key_prefix: str
) -> None:
    """The context's block is cancelled from outside (a timeout, a server shutting down).

    Its producers are cancelled too, and must still end their streams: SET DONE and a DONE
    message to listeners. Otherwise the sentinel stays active for its 24 h TTL - a Node
    resumer already listening waits forever (its watchdog only closes on DONE or a missing
    key) and every later resume gets "Timeout waiting for ack". And the cancellation must
    stay a cancellation: nothing but it may escape the block.
    """
    gate = Gate()
    problems: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(raw_redis(redis_url))
            sentinel_key = ""
            node: NodeProcess | None = None
            try:
                with anyio.CancelScope() as outer:
                    async with open_env(redis_url, key_prefix) as env:
                        sentinel_key = f"{env.prefix}:rs:sentinel:{env.stream_id}"
                        it = await env.ctx.create_new_resumable_stream(
                            env.stream_id, gated_source(CHUNKS, gate)
                        )
                        assert isinstance(it, ResumableStream)
                        gate.release(2)
                        async with it:
                            assert await it.__anext__() == CHUNKS[0]
                            assert await it.__anext__() == CHUNKS[1]
                        config = {
                            "prefix": env.prefix,
                            "streamId": env.stream_id,
                            "api": "existing",
                        }
                        node = await stack.enter_async_context(
                            open_node("resume.mjs", config, redis_url)
                        )
                        resumer = NodeResumer(node)
                        await resumer.start()
                        assert resumer.result == "stream"
                        outer.cancel()
                        await anyio.sleep_forever()
            except Exception as exc:  # reported below, after the wire checks
                problems.append(f"leaving the cancelled block raised {exc!r}")
            sentinel = await client.get(sentinel_key)
            if sentinel != "DONE":
                problems.append(f"the sentinel is {sentinel!r}, not 'DONE'")
            assert node is not None
            try:
                end = await node.wait_for("end", timeout=3)
            except AssertionError:
                problems.append("the Node resumer got no DONE within 3 s")
            else:
                assert_same_text(end["text"], "".join(CHUNKS[:2]))
    assert not problems, problems


@pytest.mark.parametrize("producer_side", SIDES)
async def test_cancel_stream_reaches_only_python_producers(
    producer_side: Side, redis_url: str, key_prefix: str
) -> None:
    """npm 2.2.13 has no cancel channel (upstream main added it later): nobody hears a cancel.

    ``cancel_stream`` returns how many producers heard it, so a caller can tell.
    """
    with anyio.fail_after(TIMEOUT):
        async with (
            open_env(redis_url, key_prefix) as env,
            start_producer(producer_side, "explicit", env) as producer,
        ):
            await producer.release(2)
            heard = await env.ctx.cancel_stream(env.stream_id)
            if producer_side == "node":
                assert heard == 0
                assert_same_text(await producer.finish(), FULL)  # runs on, unaffected
            else:
                assert heard == 1
                await wait_done(env.ctx, env.stream_id)
