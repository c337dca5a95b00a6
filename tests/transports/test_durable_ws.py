"""Durable Streams over WebSocket next to the HTTP server, on memory, sqlite and Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from resumable_streams.durable.server import create_app
from resumable_streams.errors import RemoteStreamNotFoundError
from resumable_streams.storage.open import open_storage
from resumable_streams.testing import TCPProxy
from resumable_streams.transports import (
    DurableMessage,
    DurableWebSocketReader,
    RetryPolicy,
    add_durable_websocket,
    open_durable_websocket,
)
from resumable_streams.transports._net import Closed, WebSocketClient, parse_url

from .support import run_asgi

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[0]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"kind": "sqlite", "data_dir": tmp_path}
    if request.param == "redis":
        return {"kind": "redis", "redis_url": request.getfixturevalue("redis_url")}
    return {"kind": "memory"}


@asynccontextmanager
async def serve(engine: dict[str, Any], server: str) -> AsyncIterator[str]:
    async with open_storage(**engine) as storage:
        app = add_durable_websocket(create_app(storage))
        async with run_asgi(app, server) as host:
            yield host


class Peer:
    """A raw protocol client: JSON in, JSON out."""

    def __init__(self, ws: WebSocketClient) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Peer]:
        ws = await WebSocketClient.connect(parse_url(url, websocket=True))
        assert isinstance(ws, WebSocketClient)
        try:
            yield cls(ws)
        finally:
            await ws.aclose()

    async def send(self, **body: Any) -> None:
        await self.ws.send(json.dumps(body))

    async def recv(self) -> dict[str, Any] | Closed:
        message = await self.ws.receive()
        if isinstance(message, Closed):
            return message
        assert isinstance(message, str)
        body: dict[str, Any] = json.loads(message)
        return body


async def read_one(reader: DurableWebSocketReader) -> DurableMessage:
    async with reader:
        return await reader.__anext__()


def unique(name: str) -> str:
    import uuid

    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_live_read_and_acked_appends(engine: dict[str, Any], asgi_server: str) -> None:
    name = unique("text")
    with anyio.fail_after(30):
        async with serve(engine, asgi_server) as host, httpx2.AsyncClient() as http:
            url = f"http://{host}/v1/stream/{name}"
            created = await http.put(url, headers={"Content-Type": "text/plain"}, content="héllo ")
            assert created.status_code == 201
            async with Peer.connect(f"ws://{host}/v1/stream/{name}") as peer:
                await peer.send(op="read", offset="-1")
                first = await peer.recv()
                assert isinstance(first, dict)
                assert first["op"] == "data"
                assert first["data"] == "héllo "
                assert first["upToDate"] is True
                await peer.send(op="append", id=1, data="wörld 😀")
                await peer.send(op="append", id="two", data=" and more")
                # Acks and live data interleave in any order; data may be coalesced.
                acks: list[dict[str, Any]] = []
                data: list[dict[str, Any]] = []
                while len(acks) < 2 or not data or data[-1]["offset"] != acks[-1]["offset"]:
                    message = await peer.recv()
                    assert isinstance(message, dict)
                    (acks if message["op"] == "ack" else data).append(message)
                assert [a["id"] for a in acks] == [1, "two"]
                # Every ack's offset is where the data it acknowledged ends.
                assert acks[-1]["offset"] == data[-1]["offset"]
                assert "".join(d["data"] for d in data) == "wörld 😀 and more"
                # An HTTP append reaches the WebSocket reader live.
                posted = await http.post(url, headers={"Content-Type": "text/plain"}, content="!")
                assert posted.status_code in (200, 204)
                live = await peer.recv()
                assert isinstance(live, dict)
                assert live["data"] == "!"
                assert live["offset"] == posted.headers["Stream-Next-Offset"]
                resume_at = live["offset"]
                await peer.send(op="append", id=3, close=True)
                closing = [await peer.recv(), await peer.recv(), await peer.recv()]
            ops = [m["op"] if isinstance(m, dict) else m for m in closing]
            assert ops[0] == "ack"
            assert closing[0]["closed"] is True  # type: ignore[index]
            assert ops[1] == "control"
            assert closing[1] == {
                "op": "control",
                "offset": resume_at,
                "upToDate": True,
                "closed": True,
            }
            assert ops[2] == Closed(1000, "the stream is closed")
            # Resuming from an offset gets only what follows it (here: nothing but the end).
            async with Peer.connect(f"ws://{host}/v1/stream/{name}") as peer:
                await peer.send(op="read", offset=first["offset"])
                rest = await peer.recv()
                assert isinstance(rest, dict)
                assert rest["data"] == "wörld 😀 and more!"


async def test_errors_json_binary_and_producers(engine: dict[str, Any], asgi_server: str) -> None:
    with anyio.fail_after(30):
        async with serve(engine, asgi_server) as host, httpx2.AsyncClient() as http:
            base = f"http://{host}/v1/stream"
            jname, bname = unique("json"), unique("bin")
            await http.put(f"{base}/{jname}", headers={"Content-Type": "application/json"})
            await http.put(f"{base}/{bname}", headers={"Content-Type": "application/octet-stream"})
            async with Peer.connect(f"ws://{host}/v1/stream/{jname}") as peer:
                await peer.send(op="dance")
                assert await peer.recv() == {
                    "op": "error",
                    "id": None,
                    "status": 400,
                    "message": '"op" must be "read" or "append", got \'dance\'',
                }
                await peer.send(op="append", id=1, data="{not json")
                bad = await peer.recv()
                assert isinstance(bad, dict)
                assert (bad["op"], bad["id"], bad["status"]) == ("error", 1, 400)
                # A field that fails to parse still names the append it belongs to.
                await peer.send(op="append", id=9, data="!!", encoding="base64")
                await peer.send(op="append", id="ten", data=3)
                await peer.send(op="append", id=[11], data="1")
                for ident, reason in [(9, "base64"), ("ten", "'data'"), (None, "'id'")]:
                    answer = await peer.recv()
                    assert isinstance(answer, dict)
                    assert (answer["op"], answer["id"], answer["status"]) == ("error", ident, 400)
                    assert reason in answer["message"]
                producer = {"producerId": "p1", "producerEpoch": 0, "producerSeq": 0}
                await peer.send(op="append", id=2, data='{"a": 1}', **producer)
                await peer.send(op="append", id=3, data='{"a": 1}', **producer)
                ok, dup = await peer.recv(), await peer.recv()
                assert isinstance(ok, dict)
                assert isinstance(dup, dict)
                assert ok["op"] == "ack"
                assert "duplicate" not in ok
                assert dup["duplicate"] is True
                await peer.send(op="append", id=4, data="[2, 3]", seq="b")
                await peer.send(op="append", id=5, data="4", seq="a")
                assert (await peer.recv())["op"] == "ack"  # type: ignore[index]
                conflict = await peer.recv()
                assert isinstance(conflict, dict)
                assert (conflict["id"], conflict["status"]) == (5, 409)
                await peer.send(op="read", offset="-1")
                data = await peer.recv()
                assert isinstance(data, dict)
                assert json.loads(data["data"]) == [{"a": 1}, 2, 3]
            async with Peer.connect(f"ws://{host}/v1/stream/{bname}") as peer:
                blob = bytes(range(256))
                await peer.send(
                    op="append", id=1, data=base64.b64encode(blob).decode(), encoding="base64"
                )
                assert (await peer.recv())["op"] == "ack"  # type: ignore[index]
                await peer.send(op="read", offset="-1")
                data = await peer.recv()
                assert isinstance(data, dict)
                assert data["encoding"] == "base64"
                assert base64.b64decode(data["data"]) == blob
                await peer.send(op="read", offset="-1")
                assert (await peer.recv())["message"] == "a read is already running"  # type: ignore[index]
            async with Peer.connect(f"ws://{host}/v1/stream/{bname}") as peer:
                await peer.send(op="read", offset="9999999999999999_9999999999999999")
                beyond = await peer.recv()
                assert isinstance(beyond, dict)
                assert beyond["status"] == 400
                assert await peer.recv() == Closed(4400, "offset is beyond the stream's tail")
            async with Peer.connect(f"ws://{host}/v1/stream/{unique('missing')}") as peer:
                assert await peer.recv() == Closed(4404, "stream not found")
            async with Peer.connect(f"ws://{host}/v1/stream/a/../b") as peer:
                closed = await peer.recv()
                assert isinstance(closed, Closed)
                assert closed.code == 4400


async def test_reader_resumes_from_its_offset_through_cuts(
    engine: dict[str, Any], asgi_server: str
) -> None:
    name = unique("cut")
    pieces = [f"{i}:{'😀' if i % 7 == 0 else 'wörld'}\n" for i in range(200)]
    policy = RetryPolicy(max_retries=30, initial_delay=0.002, max_delay=0.02)
    with anyio.fail_after(60):
        async with serve(engine, asgi_server) as host, httpx2.AsyncClient() as http:
            url = f"http://{host}/v1/stream/{name}"
            await http.put(url, headers={"Content-Type": "text/plain"})
            port = int(host.rsplit(":", 1)[1])
            async with TCPProxy("127.0.0.1", port) as proxy:
                proxy.budget = lambda i: 300 + 150 * i if i < 15 else None
                reader = open_durable_websocket(
                    f"ws://127.0.0.1:{proxy.port}/v1/stream/{name}", retry=policy
                )
                received: list[str] = []

                async def append_all() -> None:
                    for i, piece in enumerate(pieces):
                        headers = {"Content-Type": "text/plain"}
                        if i == len(pieces) - 1:
                            headers["Stream-Closed"] = "true"
                        response = await http.post(url, headers=headers, content=piece.encode())
                        assert response.status_code in (200, 204)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(append_all)
                    async with reader:
                        async for message in reader:
                            assert isinstance(message.data, str)
                            received.append(message.data)
                assert "".join(received) == "".join(pieces)
                assert reader.closed
                assert reader.reconnects >= 1
                assert proxy.cuts >= 1
            # Catch-up only: live=False ends at the tail; a missing stream is an error.
            tail = open_durable_websocket(f"ws://{host}/v1/stream/{name}", live=False)
            assert "".join([m.data async for m in tail]) == "".join(pieces)  # type: ignore[misc]
            await tail.aclose()
            missing = open_durable_websocket(f"ws://{host}/v1/stream/{unique('none')}")
            with pytest.raises(RemoteStreamNotFoundError, match="stream not found"):
                await read_one(missing)


async def test_catch_up_larger_than_a_connection_still_progresses(
    engine: dict[str, Any], asgi_server: str
) -> None:
    # Every connection dies after 300 KB; the backlog is 2 MB of 50 KB appends. Data
    # messages are kept small, so each connection advances the reader's offset.
    name = unique("big")
    pieces = [f"{i:04d}{'wörld 😀 ' * 5000}"[:50_000] for i in range(40)]
    policy = RetryPolicy(max_retries=10, initial_delay=0.002, max_delay=0.02)
    with anyio.fail_after(60):
        async with serve(engine, asgi_server) as host, httpx2.AsyncClient() as http:
            url = f"http://{host}/v1/stream/{name}"
            await http.put(url, headers={"Content-Type": "text/plain"})
            for i, piece in enumerate(pieces):
                headers = {"Content-Type": "text/plain"}
                if i == len(pieces) - 1:
                    headers["Stream-Closed"] = "true"
                response = await http.post(url, headers=headers, content=piece.encode())
                assert response.status_code in (200, 204)
            port = int(host.rsplit(":", 1)[1])
            async with TCPProxy("127.0.0.1", port) as proxy:
                proxy.cut_after(300_000)
                reader = open_durable_websocket(
                    f"ws://127.0.0.1:{proxy.port}/v1/stream/{name}", retry=policy
                )
                async with reader:
                    received = [m.data async for m in reader]
                assert "".join(received) == "".join(pieces)  # type: ignore[arg-type]
                assert reader.closed
                assert reader.reconnects >= 2
