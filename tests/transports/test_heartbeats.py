"""Heartbeats over WebSocket, and what one write carries, on both backends and servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from resumable_streams import ResumableStreamContext
from resumable_streams._protocol.transport import (
    encode_ws_heartbeat,
    encode_ws_hello,
    is_ws_heartbeat,
)
from resumable_streams.durable.server import create_app
from resumable_streams.storage.open import open_storage
from resumable_streams.transports import (
    add_durable_websocket,
    handle_resumable_websocket,
    open_durable_websocket,
    open_resumable_websocket,
)
from resumable_streams.transports._net import Closed, WebSocketClient, parse_url

from .support import run_asgi
from .test_clients import FAST_RETRY

pytestmark = pytest.mark.anyio

QUIET = 1.0  # the producer's pause: twice the clients' idle_timeout below
HEARTBEAT = 0.1


@pytest.fixture
def anyio_backend(backend_and_server: tuple[str, str]) -> str:
    return backend_and_server[0]


def test_heartbeat_message() -> None:
    assert is_ws_heartbeat(encode_ws_heartbeat())
    assert is_ws_heartbeat('{ "heartbeat": true }')
    assert not is_ws_heartbeat('{"position": 1, "text": "heartbeat"}')
    assert not is_ws_heartbeat(b'{"heartbeat":true}')
    assert not is_ws_heartbeat('{"heartbeat"')


async def quiet_source() -> AsyncIterator[str]:
    yield "before "
    await anyio.sleep(QUIET)
    yield "after"


def ws_app(ctx: ResumableStreamContext) -> Starlette:
    async def ws(websocket: WebSocket) -> None:
        await handle_resumable_websocket(websocket, ctx, "s", quiet_source, heartbeat=HEARTBEAT)

    return Starlette(routes=[WebSocketRoute("/ws", ws)])


async def test_resumable_websocket_heartbeats_keep_a_quiet_stream_connected(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    # The producer is silent for twice the client's idle_timeout: only the server's
    # heartbeats keep the client from taking the connection for dead and reconnecting.
    with anyio.fail_after(30):
        async with make_ctx() as ctx, run_asgi(ws_app(ctx), asgi_server) as host:
            reader = open_resumable_websocket(
                f"ws://{host}/ws", retry=FAST_RETRY, idle_timeout=QUIET / 2
            )
            async with reader:
                assert await reader.read_all() == "before after"
            assert reader.reconnects == 0


async def test_resumable_websocket_sends_heartbeats_while_idle(
    make_ctx: Callable[..., ResumableStreamContext], asgi_server: str
) -> None:
    with anyio.fail_after(30):
        async with make_ctx() as ctx, run_asgi(ws_app(ctx), asgi_server) as host:
            ws = await WebSocketClient.connect(parse_url(f"ws://{host}/ws", websocket=True))
            assert isinstance(ws, WebSocketClient)
            try:
                await ws.send(encode_ws_hello(0))
                messages: list[str] = []
                while True:
                    message = await ws.receive()
                    if isinstance(message, Closed):
                        assert message.code == 1000
                        break
                    assert isinstance(message, str)
                    messages.append(message)
            finally:
                await ws.aclose()
    beats = [m for m in messages if is_ws_heartbeat(m)]
    chunks = [json.loads(m) for m in messages if not is_ws_heartbeat(m)]
    assert len(beats) >= 2
    assert "".join(c["text"] for c in chunks) == "before after"
    assert chunks[-1]["position"] == len("before after")


async def test_durable_websocket_heartbeats_keep_a_quiet_read_connected(
    asgi_server: str,
) -> None:
    with anyio.fail_after(30):
        async with open_storage(kind="memory") as storage:
            app = add_durable_websocket(create_app(storage), heartbeat=HEARTBEAT)
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as http:
                url = f"http://{host}/v1/stream/quiet"
                await http.put(url, headers={"Content-Type": "text/plain"}, content="one ")
                reader = open_durable_websocket(
                    f"ws://{host}/v1/stream/quiet",
                    offset="-1",
                    retry=FAST_RETRY,
                    idle_timeout=QUIET / 2,
                )
                received: list[str] = []
                async with reader:
                    async for message in reader:
                        assert isinstance(message.data, str)
                        received.append(message.data)
                        if len(received) == 1:
                            await anyio.sleep(QUIET)  # the server's read waits meanwhile
                            await http.post(
                                url, headers={"Content-Type": "text/plain"}, content="two"
                            )
                        if "".join(received) == "one two":
                            break
                assert reader.reconnects == 0


async def test_durable_websocket_sends_heartbeats_while_waiting(asgi_server: str) -> None:
    with anyio.fail_after(30):
        async with open_storage(kind="memory") as storage:
            app = add_durable_websocket(create_app(storage), heartbeat=HEARTBEAT)
            async with run_asgi(app, asgi_server) as host, httpx2.AsyncClient() as http:
                url = f"http://{host}/v1/stream/beats"
                await http.put(url, headers={"Content-Type": "text/plain"})
                ws = await WebSocketClient.connect(
                    parse_url(f"ws://{host}/v1/stream/beats", websocket=True)
                )
                assert isinstance(ws, WebSocketClient)
                try:
                    await ws.send(json.dumps({"op": "read", "offset": "-1"}))
                    ops: list[str] = []
                    while ops.count("heartbeat") < 2:
                        message = await ws.receive()
                        assert isinstance(message, str)
                        ops.append(json.loads(message)["op"])
                finally:
                    await ws.aclose()
    assert ops[0] == "control"
    assert set(ops[1:]) == {"heartbeat"}
