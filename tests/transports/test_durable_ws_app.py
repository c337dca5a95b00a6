"""add_durable_websocket on an app whose lifespan opens the storage (create_app by name)."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from resumable_streams.durable.server import create_app
from resumable_streams.transports import add_durable_websocket, open_durable_websocket

from .support import run_asgi

pytestmark = pytest.mark.anyio


async def test_websocket_uses_the_storage_the_lifespan_opened() -> None:
    # hypercorn runs the app's lifespan (the test helper runs uvicorn without one).
    app = add_durable_websocket(create_app("memory"))
    with anyio.fail_after(30):
        async with run_asgi(app, "hypercorn") as host, httpx2.AsyncClient() as http:
            url = f"http://{host}/v1/stream/a/b"
            headers = {"Content-Type": "application/json"}
            assert (await http.put(url, headers=headers)).status_code == 201
            await http.post(url, headers=headers, content=b'[{"n": 1}, {"n": 2}]')
            await http.post(url, headers={**headers, "Stream-Closed": "true"}, content=b"3")
            reader = open_durable_websocket(f"ws://{host}/v1/stream/a/b")
            async with reader:
                messages = [m async for m in reader]
            assert "".join(str(m.data) for m in messages) == '[{"n": 1},{"n": 2},3]'
            assert reader.closed
