"""A FastAPI app that streams LLM-style tokens, which a client can resume (asyncio, uvicorn).

``GET /chat/{id}/stream`` answers over SSE (each event's ``id:`` is the resume position, so
a browser ``EventSource`` resumes by itself through ``Last-Event-ID``); ``/chat/{id}/ws`` is
the same stream over WebSocket. The first request for an id starts the answer; every later
one joins it, on any instance that shares the Redis::

    pip install -e ".[examples]"
    python examples/fastapi_tokens.py serve   # http://127.0.0.1:8000/ (REDIS_URL for Redis)
    python examples/fastapi_tokens.py demo    # serve on a free port, lose a client, resume it
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from functools import partial

import anyio
import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from resumable_streams import create_resumable_stream_context
from resumable_streams.transports import (
    ResumableSSEResponse,
    handle_resumable_websocket,
    open_resumable_sse,
    open_resumable_websocket,
)

ctx = create_resumable_stream_context(redis_url=os.environ.get("REDIS_URL", "memory://"))
app = FastAPI(lifespan=ctx.lifespan)

ANSWER = (
    "Resumable streams keep generating while the client is away. "
    "Reconnect with the last position you saw and the rest arrives: "
    "no duplicate, no gap \N{SPARKLES}, even across server instances."
)


async def answer() -> AsyncIterator[str]:
    """A stand-in for an LLM: one token every 20 ms."""
    for token in ANSWER.split(" "):
        await anyio.sleep(0.02)
        yield token + " "


@app.get("/chat/{chat_id}/stream")
async def chat_stream(chat_id: str) -> ResumableSSEResponse:
    """Start or join the answer for ``chat_id`` over SSE (resumes from ``Last-Event-ID``)."""
    return ResumableSSEResponse(ctx, chat_id, answer)


@app.websocket("/chat/{chat_id}/ws")
async def chat_ws(websocket: WebSocket, chat_id: str) -> None:
    """The same stream over WebSocket (the client's first message says where to start)."""
    await handle_resumable_websocket(websocket, ctx, chat_id, answer)


PAGE = """<!doctype html><meta charset="utf-8"><title>resumable tokens</title>
<p id="out"></p><script>
const source = new EventSource("/chat/" + crypto.randomUUID() + "/stream");
source.onmessage = (e) => { document.getElementById("out").textContent += JSON.parse(e.data); };
source.addEventListener("done", () => source.close());
</script>"""


@app.get("/")
async def page() -> HTMLResponse:
    """A page whose EventSource reads one answer (and resumes it after a lost connection)."""
    return HTMLResponse(PAGE)


async def demo() -> None:
    """Serve on a free port; a client reads part of an answer, loses it, and resumes."""
    listener = socket.create_server(("127.0.0.1", 0))  # connections wait in its backlog
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[listener]))
        url = f"http://127.0.0.1:{port}/chat/{uuid.uuid4().hex}"

        head = ""
        async with open_resumable_sse(f"{url}/stream") as stream:
            async for text in stream:
                head += text
                if len(head) > 40:
                    break  # leaving the block drops the connection
        print(f"client read {stream.position} characters, then lost its connection: {head!r}")

        tails: dict[str, str] = {}

        async def over_sse() -> None:
            async with open_resumable_sse(f"{url}/stream", position=stream.position) as resumed:
                tails["SSE"] = await resumed.read_all()

        async def over_websocket() -> None:
            ws_url = url.replace("http://", "ws://") + "/ws"
            async with open_resumable_websocket(ws_url, position=stream.position) as resumed:
                tails["WebSocket"] = await resumed.read_all()

        async with anyio.create_task_group() as clients:  # two clients resume side by side
            clients.start_soon(over_sse)
            clients.start_soon(over_websocket)
        for transport, tail in sorted(tails.items()):
            print(f"resumed over {transport} at {stream.position}: {tail!r}")
            assert head + tail == "".join(token + " " for token in ANSWER.split(" "))
        print("head + tail is exactly the answer, over both transports")
        server.should_exit = True


if __name__ == "__main__":
    if sys.argv[1:] == ["demo"]:
        anyio.run(demo, backend="asyncio")
    elif sys.argv[1:] in ([], ["serve"]):
        uvicorn.run(app, host="127.0.0.1", port=8000)
    else:
        sys.exit(f"usage: {sys.argv[0]} [serve|demo]")
