"""A WebSocket client that resumes by itself, against a connection that keeps dropping.

Serves resumable streams with the trio-websocket server (no ASGI) behind a loopback proxy
that cuts the first three connections after 1,200 bytes each, then reads a stream through
the proxy with ``open_resumable_websocket``. The client reconnects with backoff and resumes
from its last position each time; the text it returns is exactly the produced text. Pass a
``ws://`` URL to read one of your own streams instead::

    python examples/websocket_client.py
    python examples/websocket_client.py ws://127.0.0.1:8000/chat/42/ws
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from functools import partial

import trio

from resumable_streams import open_resumable_stream_context
from resumable_streams.testing import TCPProxy
from resumable_streams.transports import open_resumable_websocket, serve_resumable_websockets

LINES = [f"line {n:03} \N{OPEN BOOK} of a long job's log\n" for n in range(80)]


async def job_log() -> AsyncIterator[str]:
    """A producer: a long job writing its log, a line every 20 ms."""
    for line in LINES:
        await trio.sleep(0.02)
        yield line


async def read(url: str) -> str:
    """Read the whole stream at ``url``, however often the connection drops."""
    async with open_resumable_websocket(url) as stream:
        text = await stream.read_all()
    print(f"read {stream.position} UTF-16 units with {stream.reconnects} reconnects")
    return text


async def main() -> None:
    if len(sys.argv) > 1:
        print(await read(sys.argv[1]), end="")
        return
    async with (
        open_resumable_stream_context(redis_url="memory://") as ctx,
        trio.open_nursery() as nursery,
    ):
        server = await nursery.start(
            partial(serve_resumable_websockets, ctx, "127.0.0.1", 0, make_stream=lambda _: job_log)
        )
        async with TCPProxy("127.0.0.1", server.port) as proxy:
            # The first three connections die mid-message after 1,200 bytes each.
            proxy.budget = lambda index: 1200 if index < 3 else None
            text = await read(f"ws://127.0.0.1:{proxy.port}/logs/{uuid.uuid4().hex}")
            print(f"the proxy cut {proxy.cuts} connections")
        assert text == "".join(LINES)
        print("the text is exactly what the producer wrote")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
