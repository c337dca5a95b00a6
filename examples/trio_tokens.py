"""LLM-style tokens under trio: nursery-scoped producers, hypercorn's trio worker.

``POST /chat/{id}`` starts an answer in the *server's* nursery (a nursery-scoped producer:
it belongs to the server, not to the request, and the server waits for it on shutdown);
``GET /chat/{id}/stream`` follows it over SSE and resumes through ``Last-Event-ID``::

    python examples/trio_tokens.py serve   # http://127.0.0.1:8000 (REDIS_URL for Redis)
    python examples/trio_tokens.py demo    # serve on a free port, lose a client, resume it
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator

import httpx2
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resumable_streams import ResumableStreamContext, open_resumable_stream_context
from resumable_streams.transports import ResumableSSEResponse, open_resumable_sse

SENTENCE = "Trio nurseries own every producer: none outlives the server that started it."
WORDS = SENTENCE.split(" ")


async def answer() -> AsyncIterator[str]:
    """A stand-in for an LLM: one token every 20 ms."""
    for word in WORDS:
        await trio.sleep(0.02)
        yield word + " "


def build_app(ctx: ResumableStreamContext, nursery: trio.Nursery) -> Starlette:
    """The routes, closing over the context and the nursery that owns the producers."""

    async def start(request: Request) -> Response:
        chat_id = request.path_params["chat_id"]
        stream = await ctx.resumable_stream(chat_id, answer, task_group=nursery)
        if stream is None:
            return JSONResponse({"chat": chat_id, "state": "done"})
        await stream.aclose()  # we only start it here; the producer runs on in the nursery
        return JSONResponse({"chat": chat_id, "state": "started"}, status_code=202)

    async def follow(request: Request) -> Response:
        return ResumableSSEResponse(ctx, request.path_params["chat_id"])  # resume only

    return Starlette(
        routes=[
            Route("/chat/{chat_id}", start, methods=["POST"]),
            Route("/chat/{chat_id}/stream", follow),
        ]
    )


async def run_server(
    bind: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; report the bound URL."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    url = os.environ.get("REDIS_URL", "memory://")
    async with open_resumable_stream_context(redis_url=url) as ctx, trio.open_nursery() as nursery:
        binds = await nursery.start(serve, build_app(ctx, nursery), config)
        task_status.started(binds[0])


async def demo() -> None:
    """Start an answer, read part of it, lose the connection, resume the rest."""
    async with trio.open_nursery() as nursery:
        base = await nursery.start(run_server, "127.0.0.1:0")
        chat = f"{base}/chat/{uuid.uuid4().hex}"
        async with httpx2.AsyncClient() as http:
            started = await http.post(chat)
        print(f"POST {started.status_code}: {started.json()}")
        head = ""
        async with open_resumable_sse(f"{chat}/stream") as stream:
            async for text in stream:
                head += text
                if len(head) > 30:
                    break  # leaving the block drops the connection
        print(f"client read {stream.position} characters, then lost its connection: {head!r}")
        async with open_resumable_sse(f"{chat}/stream", position=stream.position) as resumed:
            tail = await resumed.read_all()
        print(f"resumed at {stream.position}: {tail!r}")
        assert head + tail == "".join(word + " " for word in WORDS)
        print("head + tail is exactly the answer")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if sys.argv[1:] == ["demo"]:
        trio.run(demo)
    elif sys.argv[1:] in ([], ["serve"]):
        trio.run(run_server, "127.0.0.1:8000")
    else:
        sys.exit(f"usage: {sys.argv[0]} [serve|demo]")
