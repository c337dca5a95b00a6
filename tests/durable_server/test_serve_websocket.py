"""``serve --http hypercorn`` also serves Durable Streams over WebSocket, on its storage."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest

from resumable_streams.transports import open_durable_websocket

from .conftest import ServerProcess

pytestmark = pytest.mark.anyio


async def test_hypercorn_serve_has_durable_websocket(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory("--http", "hypercorn", "--data-dir", str(tmp_path))
    await anyio.to_thread.run_sync(server.start)
    url = f"{server.url}/v1/stream/ws-test"
    with anyio.fail_after(30):
        async with httpx2.AsyncClient() as http:
            created = await http.put(url, content=b"hello ", headers={"Content-Type": "text/plain"})
            assert created.status_code == 201
            closed = await http.post(
                url,
                content=b"world",
                headers={"Content-Type": "text/plain", "Stream-Closed": "true"},
            )
            assert closed.status_code in (200, 204)
        ws_url = url.replace("http://", "ws://")
        async with open_durable_websocket(ws_url, offset="-1") as stream:
            text = "".join([str(message.data) async for message in stream])
        assert text == "hello world"
        assert stream.closed
